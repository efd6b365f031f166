"""Host administration verbs: MOM's policy and KSM, host devices, fencing, LLDP.

    Host.setMOMPolicyParameters  Host.setKsmTune          -> admin/memory
    Host.hostdevListByCaps       Host.hostdevChangeNumvfs  Host.getLldp  -> admin/devices
    Host.fenceNode                                         -> admin/fencer

Handlers run on the API loop and never block: params are checked here, then the
call goes to the owning actor and its future is awaited. Results are what VDSM's
JSON-RPC bridge returns for each verb (lib/vdsm/rpc/Bridge.py): `deviceList` of
hostdevListByCaps, `info` of getLldp, only `power`/`operationStatus` of
fenceNode, `true` for the setters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from hostvisor.actors.admin.addresses import DEVICES, FENCER, MEMORY
from hostvisor.actors.admin.errors import (
    FenceFailed,
    HostdevError,
    KsmUpdateFailed,
    MomPolicyUpdateFailed,
    UnsupportedFenceAgent,
)
from hostvisor.actors.admin.fence import AGENT_TIMEOUT
from hostvisor.actors.admin.fence import request as fence_request
from hostvisor.actors.admin.proxy import DevicesProxy, FencerProxy, MemoryProxy
from hostvisor.actors.errors import InvalidArgument, Unavailable
from hostvisor.api.rpc.bridge import settled
from hostvisor.api.rpc.declare import Arg, verb, verbs_of
from hostvisor.api.rpc.verbs import Verb
from hostvisor.supervision.registry import Registry


@dataclass(frozen=True, slots=True)
class AdminApi:
    """What the admin verbs reach: the registry, where the admin actors are found."""

    registry: Registry

    def _ref(self, path: str) -> Any:
        ref = self.registry.get(path)
        if ref is None:
            raise Unavailable(actor=path, reason="not running")
        return ref

    def memory(self) -> MemoryProxy:
        """The memory policy actor's client, or Unavailable (on the caller's thread)."""
        return MemoryProxy(self._ref(MEMORY))

    def devices(self) -> DevicesProxy:
        """The devices actor's client, or Unavailable."""
        return DevicesProxy(self._ref(DEVICES))

    def fencer(self) -> FencerProxy:
        """The fence actor's client, or Unavailable."""
        return FencerProxy(self._ref(FENCER))


def admin_verbs(api: AdminApi) -> list[Verb]:
    """Return the admin verbs served by `api`."""
    return verbs_of(AdminHandlers(api))


class AdminHandlers:
    """The handlers of the admin verbs, over one `AdminApi`. Each runs on the API loop."""

    def __init__(self, api: AdminApi) -> None:
        """Serve through `api`."""
        self.api = api

    @verb("Host", "setMOMPolicyParameters", errors=(MomPolicyUpdateFailed,))
    async def set_mom_policy_parameters(
        self,
        *,
        key_value_store: Annotated[
            dict[str, Any], Arg("policy variables: balloonEnabled, ksmEnabled, ksmMergeAcrossNodes")
        ],
    ) -> bool:
        """Set variables for MOM policy fine tuning.

        Raises:
            MomPolicyUpdateFailed: an unknown variable or a value that is not a boolean;
                nothing changes.
        """
        return await settled(self.api.memory().set_parameters(key_value_store))

    @verb("Host", "setKsmTune", errors=(KsmUpdateFailed,))
    async def set_ksm_tune(
        self,
        *,
        tuning: Annotated[
            dict[str, Any],
            Arg("run, merge_across_nodes, sleep_millisecs, pages_to_scan", wire="tuningParams"),
        ],
    ) -> bool:
        """Set variables for controlling KSM mode and aggressiveness.

        Raises:
            KsmUpdateFailed: an unknown knob or a bad value (nothing is written), or
                the kernel refused a value.
        """
        return await settled(self.api.memory().set_ksm_tune(tuning))

    @verb("Host", "hostdevListByCaps", returns="HostDevices", timeout=60.0)
    async def hostdev_list_by_caps(
        self,
        *,
        caps: Annotated[
            list[str] | None,
            Arg("capabilities to list (pci, usb_device, scsi, net...); all if empty"),
        ] = None,
    ) -> dict[str, Any]:
        """Refresh and get information about devices available on the host.

        An unknown capability lists the `system` devices, as in VDSM.
        """
        return await settled(self.api.devices().list_by_caps(caps or ()))

    @verb("Host", "hostdevChangeNumvfs", errors=(HostdevError, InvalidArgument), timeout=60.0)
    async def hostdev_change_numvfs(
        self,
        *,
        device_name: Annotated[
            str, Arg("libvirt's name of the PF (pci_0000_05_00_0)", wire="deviceName")
        ],
        numvfs: Annotated[int, Arg("number of VFs, at most the PF's totalvfs")],
    ) -> bool:
        """Change the number of VFs of an SR-IOV physical function.

        Raises:
            InvalidArgument: a negative count.
            HostdevError: no such PCI device, no SR-IOV, or more VFs than it has.
        """
        if numvfs < 0:
            raise InvalidArgument(param="numvfs", expected="an unsigned integer")
        return await settled(self.api.devices().change_numvfs(device_name, numvfs))

    @verb("Host", "getLldp", returns="LldpMap", errors=(HostdevError, InvalidArgument))
    async def get_lldp(
        self,
        *,
        lldp_filter: Annotated[
            dict[str, list[Any]], Arg("{'devices': [NIC names]}; empty: every NIC", wire="filter")
        ],
    ) -> dict[str, Any]:
        """Get LLDP information of the host's NICs.

        Raises:
            InvalidArgument: a key other than `devices`, or a NIC name that is not a string.
            HostdevError: a named NIC does not exist.
        """
        if set(lldp_filter) - {"devices"}:
            raise InvalidArgument(param="filter", reason="only 'devices' may be given")
        devices = lldp_filter.get("devices") or []
        if not all(isinstance(device, str) for device in devices):
            raise InvalidArgument(param="filter", reason="devices are NIC names")
        return await settled(self.api.devices().lldp(devices or None))

    @verb(
        "Host",
        "fenceNode",
        returns="FenceNodeResult",
        errors=(UnsupportedFenceAgent, FenceFailed, InvalidArgument),
        timeout=AGENT_TIMEOUT + 10.0,
    )
    async def fence_node(  # noqa: PLR0913 - the Engine's params
        self,
        *,
        addr: Annotated[str, Arg("the fence device's address")],
        port: Annotated[str | int, Arg("the plug (port) on the device; '' for none")],
        agent: Annotated[str, Arg("the agent: ipmilan, ilo, drac5, virsh...")],
        username: Annotated[str, Arg("the login on the fence device")],
        password: Annotated[str, Arg("its password (sent to the agent on stdin only)")],
        action: Annotated[Literal["status", "on", "off", "reboot"], Arg("the operation")],
        secure: Annotated[Any, Arg("use SSL/SSH: a boolean, or the Engine's string")] = False,
        options: Annotated[str, Arg("more agent options, one key=value a line")] = "",
        policy: Annotated[dict[str, Any] | None, Arg("the fencing policy")] = None,
    ) -> dict[str, str]:
        """Send a fencing command to a remote host.

        Raises:
            InvalidArgument: a newline in a one-line param, a policy of the wrong shape.
            UnsupportedFenceAgent: no such agent.
            FenceFailed: the agent failed; its exit status is the code, its output the
                message (VDSM's answer).
        """
        checked = fence_request(
            addr=addr,
            port=port,
            agent=agent,
            username=username,
            password=password,
            action=action,
            secure=secure,
            options=options,
            policy=policy,
        )
        result = await settled(self.api.fencer().fence(checked))
        return result.wire()
