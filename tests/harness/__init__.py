"""Test helpers shared by the test folders: probes, daemons, libvirt roots."""
