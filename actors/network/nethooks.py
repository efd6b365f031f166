"""setupNetworks' VDSM hooks: before_network_setup, after_network_setup(_fail).

As VDSM's `network/api.py`: the scripts get `{"request": {"networks", "bondings",
"options"}}` as JSON (`_hook_json`); what before_network_setup's scripts leave is the
request that is applied (checked again), and a failing one fails setupNetworks with
code 78 before anything is touched. The after_ points only log their failures.

Blocking (the scripts run as child processes): called on the configurator's writer,
inside the managed namespace, so the scripts see the networks they are about.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from hostvisor.actors.hooks import HookError, HookFailed, Hooks
from hostvisor.actors.network.model import Request, parse_request

__all__ = ["after", "before", "hook_data"]

log = logging.getLogger(__name__)

BEFORE = "before_network_setup"


def hook_data(
    networks: Mapping[str, Any], bondings: Mapping[str, Any], options: Mapping[str, Any]
) -> dict[str, Any]:
    """The document the scripts get (VDSM's `_build_setup_hook_dict`). Pure."""
    return {
        "request": {
            "networks": dict(networks),
            "bondings": dict(bondings),
            "options": dict(options),
        }
    }


def before(hooks: Hooks, data: dict[str, Any]) -> tuple[Request, dict[str, Any]] | None:
    """Run before_network_setup on `data`; None when it has no scripts (blocking).

    Returns:
        The request the scripts left, checked, and the document they left.

    Raises:
        HookFailed: a script failed, or left no request.
        NetworkError: the request the scripts left is malformed.
    """
    if not hooks.scripts(BEFORE):
        return None
    try:
        left = hooks.run(BEFORE, data)
    except HookError as error:  # VDSM's setupNetworks answers hookError: 78
        raise HookFailed.of(error) from None
    try:
        request = left["request"]
        networks, bondings, options = request["networks"], request["bondings"], request["options"]
    except (KeyError, TypeError):
        raise HookFailed(hook=BEFORE, err="the scripts left no request") from None
    return parse_request(networks, bondings, options), left


def after(hooks: Hooks, name: str, data: dict[str, Any]) -> None:
    """Run after_network_setup or after_network_setup_fail; never raises (blocking)."""
    try:
        hooks.run(name, data)
    except OSError as error:
        log.warning("hook %s not run: %s", name, error)
