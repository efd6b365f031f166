"""The host itself: its facts, capabilities and statistics."""
