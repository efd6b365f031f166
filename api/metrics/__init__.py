"""Prometheus metrics: host, VMs, containers, actors and the API."""
