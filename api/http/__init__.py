"""HTTP image upload and download on the API port, beside STOMP (as VDSM serves it)."""
