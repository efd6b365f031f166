"""The local admin channel: a root-only unix socket for the console and scripts."""
