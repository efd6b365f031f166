"""The API edge: transport, codec, front actor, CLIs and the embedded host."""
