"""Network actors: one per network, and the setupNetworks transaction owner."""
