"""Supervision: the generic OTP-style supervisor, the registry, and the host tree."""
