# The Hostvisor plugin for sos (Debian's `sosreport` 4.x): `sos report -o hostvisor`.
#
# sos finds plugins as modules of its package `sos.report.plugins` (it lists every
# *.py file in that package's directory and imports the classes that subclass the
# running policy's plugin classes), so this file is installed as
#     /usr/lib/python3/dist-packages/sos/report/plugins/hostvisor.py
# (see the Makefile's `install-sos-plugin`). It runs inside sos's own interpreter
# (/usr/bin/python3), which need not import hostvisor: it runs the `hostvisor`
# command instead, which writes the same tree `hostvisor collect-logs` archives
# (secrets already masked, MANIFEST.json saying which part failed) into the report,
# under sos_commands/hostvisor/collect-logs/.
#
# Options (-k hostvisor.NAME=VALUE): command (the hostvisor executable), config (the
# agent's vdsm.conf), state_dir (when not in the config), since (2h, 1d, or an ISO
# time: only log lines since then).
#
# SPDX-License-Identifier: GPL-2.0-or-later
# ruff: noqa: INP001 - a file dropped into sos's plugin package, not a package of ours
"""The `hostvisor` plugin of sos report."""

import shlex
from pathlib import Path
from typing import ClassVar

from sos.report.plugins import DebianPlugin, Plugin, RedHatPlugin, UbuntuPlugin


class Hostvisor(Plugin, RedHatPlugin, DebianPlugin, UbuntuPlugin):
    """Hostvisor, the VDSM-compatible host agent: logs, state, VMs, storage, networks."""

    short_desc = "Hostvisor virtualization host agent (VDSM-compatible)"
    plugin_name = "hostvisor"
    profiles = ("virt",)
    commands = ("hostvisor",)
    files = ("/etc/vdsm/vdsm.conf", "/var/lib/hostvisor")

    option_list: ClassVar[list[tuple[str, str, str, str]]] = [  # sos extends it
        ("command", "the hostvisor executable", "fast", "hostvisor"),
        ("config", "the agent's configuration file", "fast", "/etc/vdsm/vdsm.conf"),
        ("since", "only log lines since (2h, 1d, or an ISO time)", "fast", ""),
        ("state_dir", "the agent's state directory, when not in its config", "fast", ""),
    ]

    def setup(self) -> None:
        """Run `hostvisor collect-logs --directory` into the report (sos's thread)."""
        directory = str(Path(self.get_cmd_output_path(make=False)) / "collect-logs")
        argv = [
            self.get_option("command") or "hostvisor",
            "collect-logs",
            "--no-progress",
            "--directory",
            directory,
        ]
        config = self.get_option("config")
        if config and Path(config).exists():
            argv += ["--config", config]
        state_dir = self.get_option("state_dir")
        if state_dir:
            argv += ["--state-dir", str(state_dir)]
        since = self.get_option("since")
        if since:
            argv += ["--since", str(since)]
        self.add_cmd_output(
            " ".join(shlex.quote(arg) for arg in argv),
            suggest_filename="collect-logs.txt",
            timeout=600,
        )
        # libvirt's and the agent's own files, as sos's libvirt plugin would, never keys.
        self.add_forbidden_path(["/etc/pki/vdsm/keys", "/etc/pki/vdsm/*/*key*.pem"])
