"""The hypervisor connection: libvirt, its event loop, and the actor that owns it."""
