"""Container actors: docker containers run and reported as VMs."""
