"""Operators' tools: `hostvisor collect-logs` and `vdsm-tool`, and the PKI they make."""
