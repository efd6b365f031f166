"""STOMP 1.2 as VDSM and the Engine speak it: frames, the server, and subscriptions."""
