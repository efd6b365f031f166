"""VDSM hooks: site scripts run at fixed points of a VM's, a device's or the network's life.

`Hooks` (runner.py) runs the executable scripts of `<hooks dir>/<point>/`, in lexical
order, each with a timeout, handing them the domain XML (or a JSON document) in a file
they may edit; `POINTS` (points.py) says what each point hands over and whether its
failure stops the operation (`HookError`, VDSM's code 1500; `HookFailed`, code 78,
for the verbs VDSM answers `hookError`). Everything here blocks:
callers run it on the work facility, never on an actor's thread.
"""

from hostvisor.actors.hooks.errors import HookError, HookFailed
from hostvisor.actors.hooks.points import POINTS, Point
from hostvisor.actors.hooks.runner import NO_HOOKS, Hooks, VmContext, VmHooks

__all__ = [
    "NO_HOOKS",
    "POINTS",
    "HookError",
    "HookFailed",
    "Hooks",
    "Point",
    "VmContext",
    "VmHooks",
]
