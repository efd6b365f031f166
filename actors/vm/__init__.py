"""VM actors: one VmActor per guest, its messages and its libvirt adapter."""
