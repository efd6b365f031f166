"""Host administration: the memory policy (MOM's job), host devices, fencing, LLDP."""
