"""The VM board (`hostvisor.actors.guest.board`), re-exported where the tree finds it."""

from __future__ import annotations

from hostvisor.actors.guest.board import Forget, Post, PostMany, Rendered, VmBoard

__all__ = ["Forget", "Post", "PostMany", "Rendered", "VmBoard"]
