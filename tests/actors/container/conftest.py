"""Fixtures of the container tests: one private dockerd for the session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from harness.dockerd import PrivateDockerd


@pytest.fixture(scope="session")
def dockerd() -> Iterator[PrivateDockerd]:
    """A private docker engine with the busybox image and the `hvnet` network."""
    engine = PrivateDockerd()
    try:
        engine.start().prepare()
        yield engine
    finally:
        engine.close()
