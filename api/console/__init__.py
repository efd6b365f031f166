"""`hostvisor console`: a terminal UI on the admin channel."""
