"""Hibernation of a running VM (VM.hibernate) and its restore (VM.create with memory).

`Hibernator` is a part of `Snapshotter` (so of `VmActor`); its methods run on the
VM actor's turn and never block it: the prepares and libvirt's save and restore run
on the work facility.

As VDSM (`API.hibernate`, a "file mode" migration in virt/migration.py): the Engine
names two volumes it made, the memory dump and the memory configuration
(`hibernationVolHandle`: "sdUUID,spUUID,dumpImg,dumpVol,confImg,confVol"); the VM
says "Saving State", the configuration volume gets the VM's parameters (a pickled
dict, protocol 2, as VDSM writes it: `_srcDomXML`, `vmId`, `elapsedTimeOffset`),
libvirt saves the guest's memory and device state into the dump volume
(`virDomainSave`), and the VM goes Down with exit reason 5, "SaveState succeeded".
If the save fails, the guest runs on and the VM is Up again.

Restore: `VM.create` with the Engine's `memoryDumpVolume` and `memoryConfVolume`
(or the older `hiberVolHandle`) starts the VM's actor waiting for its guest (as a
migration's destination does), then `restore` has libvirt bring the guest back from
the dump (`virDomainRestoreFlags`, with the XML saved in it): it runs on from where
it stopped, its memory as it was. The VM says "Restoring state" meanwhile, then Up.
The dump of a memory snapshot (its configuration says `restoreFromSnapshot`: the
Engine previews the snapshot) is restored onto the disks of the Engine's XML — new
volumes over the snapshot's — paused, then resumed, as VDSM does.

**An agent killed mid-hibernation.** An embedded libvirt dies with the agent, and
with it the save: the next agent's libvirt cancels the save it finds and resumes the
guest (qemuProcessRecoverJob), so the VM is adopted Up — as VDSM leaves a failed
hibernation (its file-mode migration's `_recover` resumes the guest); the Engine
ends its HibernateVmCommand failed and removes the memory volumes. A system
libvirt goes on saving: the next agent adopts the guest paused for the save
(`VIR_DOMAIN_PAUSED_SAVE`) while libvirt's job runs and reports it "Saving State"
again (`_hibernation_recover`), so that libvirt's STOPPED (SAVED) then ends it Down
with reason 5 and the Engine marks it Suspended (VDSM reports it Paused, and the
Engine then loses the hibernation). A guest paused for a save that no job runs any
more is resumed.

While the actor waits for its guest it is, to the tree, a migration's destination:
it holds an incoming slot until the guest runs, and the destination hooks, not
VDSM's dehibernate ones, are what run around it.
"""

from __future__ import annotations

import io
import logging
import pickle
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import libvirt

from hostvisor.actors.actor import CallbackFuture
from hostvisor.actors.errors import Conflict, InvalidArgument
from hostvisor.actors.guest.status import Exit, ExitReason, VmStatus
from hostvisor.actors.vm.disks import DiskVolume, PreparedDisk
from hostvisor.actors.vm.migrating import MigrationInProgress
from hostvisor.actors.vm.snapshot_plan import with_disks_of

if TYPE_CHECKING:
    from hostvisor.actors.guest.model import GuestModel
    from hostvisor.actors.vm.domxml import DomainSpec
    from hostvisor.actors.vm.migrating import OutgoingMigration
    from hostvisor.actors.vm.migrator import MigrationSettings

log = logging.getLogger(__name__)

ALIGNMENT = 4096
"""The configuration is padded to whole blocks (VDSM: qemu-img and O_DIRECT readers)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MemoryVolumes:
    """The Engine's two hibernation volumes: the memory dump and its configuration."""

    dump: DiskVolume
    conf: DiskVolume

    @classmethod
    def of_handle(cls, handle: Any, param: str = "hibernationVolHandle") -> MemoryVolumes:
        """Read "sdUUID,spUUID,dumpImg,dumpVol,confImg,confVol" (VDSM's order).

        Raises:
            InvalidArgument: anything else.
        """
        parts = handle.split(",") if isinstance(handle, str) else []
        if len(parts) != 6 or not all(part.strip() for part in parts):  # noqa: PLR2004
            raise InvalidArgument(param=param, reason="expected sd,sp,img,vol,confImg,confVol")
        sd, sp, dump_img, dump_vol, conf_img, conf_vol = (part.strip() for part in parts)
        return cls(
            dump=DiskVolume(
                name="memory", pool_id=sp, domain_id=sd, image_id=dump_img, volume_id=dump_vol
            ),
            conf=DiskVolume(
                name="memory-conf", pool_id=sp, domain_id=sd, image_id=conf_img, volume_id=conf_vol
            ),
        )

    @classmethod
    def of_params(cls, params: Mapping[str, Any]) -> MemoryVolumes | None:
        """The volumes VM.create's vmParams name (4.2+: two PDIV dicts), or None.

        Raises:
            InvalidArgument: they are named but malformed.
        """
        if "hiberVolHandle" in params:
            return cls.of_handle(params["hiberVolHandle"], "vmParams.hiberVolHandle")
        if "memoryDumpVolume" not in params and "memoryConfVolume" not in params:
            return None
        dump = _pdiv(params.get("memoryDumpVolume"), "vmParams.memoryDumpVolume", "memory")
        conf = _pdiv(params.get("memoryConfVolume"), "vmParams.memoryConfVolume", "memory-conf")
        return cls(dump=dump, conf=conf)


@dataclass(frozen=True, slots=True, kw_only=True)
class HibernateRequest:
    """VM.hibernate, checked: the volumes, and how to prepare them (blocking)."""

    volumes: MemoryVolumes
    prepare: Callable[[DiskVolume], PreparedDisk]


class Hibernator:
    """Hibernation for a VM actor (a part of Snapshotter; its turn only)."""

    # Provided by VmActor / GuestActor / Actor / Migrator:
    guest: GuestModel
    vm_id: str
    _connection: Callable[[], Any]
    _migration: OutgoingMigration | None
    _migration_settings: MigrationSettings
    _incoming: bool
    operation: Callable[..., CallbackFuture]
    run_off: Callable[..., Any]
    mark_started: Callable[[float], None]
    _set_xml: Callable[[str], None]
    _snapshotting: str | None
    spec: DomainSpec

    _saving: bool = False

    @property
    def clock(self) -> Any:
        """The actor's clock (Actor's)."""
        raise NotImplementedError

    def hibernate(self, request: HibernateRequest) -> CallbackFuture:
        """Save the guest's state onto the Engine's volumes (VM.hibernate); returns at once.

        The future settles once libvirt has saved it (the VM is then Down, reason 5)
        or failed (the VM is Up again; the future fails with the error).

        Raises:
            VmIsDown (6), Conflict (40: not launched, or a snapshot or a save runs),
            MigrationInProgress (51).
        """
        self.guest.require_running("hibernate")
        migration = self._migration
        if migration is not None and migration.active:
            raise MigrationInProgress(vmId=self.vm_id)
        if self._saving or self._snapshotting is not None:
            raise Conflict(vmId=self.vm_id, reason="a snapshot or a save of this VM runs")
        self._saving = True
        self.guest.set_status(VmStatus.SAVING_STATE)
        vm_id, connection = self.vm_id, self._connection
        started = self.guest.started
        age = 0.0 if started is None else max(0.0, self.guest.now() - started)

        def save() -> None:
            dump = request.prepare(request.volumes.dump)
            conf = request.prepare(request.volumes.conf)
            domain = connection().lookupByUUIDString(vm_id)
            live = domain.XMLDesc(0)
            write_conf(conf.path, {"vmId": vm_id, "_srcDomXML": live, "elapsedTimeOffset": age})
            try:
                domain.save(dump.path)
            except libvirt.libvirtError:
                _resume_quietly(domain)
                raise

        return self.operation("hibernate", save, then=self._saved, failed=self._not_saved)

    def restore(
        self, volumes: MemoryVolumes, dump: PreparedDisk, conf: PreparedDisk
    ) -> CallbackFuture:
        """Bring the guest back from its saved state (VM.create with memory volumes).

        This actor was started waiting for its guest (`incoming`); the future settles
        once libvirt has restored it. A failure leaves the VM Down (reason 3). When
        the configuration says the dump is a memory snapshot's (`restoreFromSnapshot`,
        the Engine previewing it), the guest comes back on the disks of this VM's XML,
        restored paused and then resumed, as VDSM does.

        Raises:
            Conflict: this actor does not wait for a guest.
        """
        if not self._incoming:
            raise Conflict(vmId=self.vm_id, reason="the VM is not waiting for its guest")
        self._migration_settings.slots.hold("incoming")  # given back when it arrives
        self.guest.set_status(VmStatus.RESTORING_STATE)
        vm_id, connection = self.vm_id, self._connection
        log.info("VM %s: restoring from %s", vm_id, volumes.dump.volume_id)

        engine_xml = self.spec.xml

        def restore() -> str:
            conn = connection()
            if read_conf(conf.path).get("restoreFromSnapshot"):
                saved = conn.saveImageGetXMLDesc(dump.path, 0)
                xml = with_disks_of(saved, engine_xml)
                conn.restoreFlags(dump.path, xml, libvirt.VIR_DOMAIN_SAVE_PAUSED)
                domain = conn.lookupByUUIDString(vm_id)
                domain.resume()
            else:
                conn.restoreFlags(dump.path, None, 0)
                domain = conn.lookupByUUIDString(vm_id)
            return str(domain.XMLDesc(0))

        return self.operation("restore", restore, then=self._restored, failed=self._not_restored)

    def _hibernation_recover(self) -> None:
        """On adoption: a guest paused by a save (see the module doc). Actor thread."""
        if self.guest.down or self.guest.status is not VmStatus.PAUSED:
            return
        vm_id, connection = self.vm_id, self._connection

        def look() -> str:
            return recover_save(connection().lookupByUUIDString(vm_id))

        def seen(outcome: Any) -> None:
            if isinstance(outcome, BaseException):
                log.warning("VM %s: its paused state not read: %s", vm_id, outcome)
            elif outcome == SAVING and not self.guest.down:
                log.info("VM %s: libvirt still saves it: Saving State", vm_id)
                self._saving = True
                self.guest.set_status(VmStatus.SAVING_STATE)
            elif outcome == RESUMED:
                log.info("VM %s: resumed: its save ended with the last agent", vm_id)

        self.run_off(look, seen, name="hibernate:recover")

    # -- outcomes (the actor's thread) ------------------------------------------------------

    def _saved(self, _outcome: Any) -> None:
        self._saving = False
        if not self.guest.down:  # libvirt's STOPPED (SAVED) may come after
            self.guest.go_down(Exit.of(ExitReason.SAVE_STATE_SUCCEEDED, "SaveState succeeded"))

    def _not_saved(self, error: BaseException) -> None:
        self._saving = False
        log.warning("VM %s: hibernation failed: %s", self.vm_id, error)
        if not self.guest.down:
            self.guest.set_status(VmStatus.UP)

    def _restored(self, live: str) -> None:
        if self.guest.down:
            return
        self._set_xml(live)
        if self._incoming:  # libvirt's RESUMED did not come first
            self._incoming = False
            self._migration_settings.slots.give_back("incoming")
        if self.guest.started is None:
            self.mark_started(self.clock.monotonic())
        self.guest.set_status(VmStatus.UP)

    def _not_restored(self, error: BaseException) -> None:
        log.warning("VM %s: restore failed: %s", self.vm_id, error)
        if self._incoming:
            self._incoming = False
            self._migration_settings.slots.give_back("incoming")
        if not self.guest.down:
            self.guest.go_down(Exit.of(ExitReason.LIBVIRT_START_FAILED, str(error)))


SAVING, RESUMED, OTHER = "saving", "resumed", "other"


def save_action(state: int, reason: int, job: int) -> str:
    """What a recovery does with a guest in `state`/`reason` while libvirt runs `job`. Pure.

    SAVING: paused for a save libvirt still runs; RESUMED: paused for a save no job
    runs any more (resume it); OTHER: anything else (leave it).
    """
    if state != libvirt.VIR_DOMAIN_PAUSED or reason != libvirt.VIR_DOMAIN_PAUSED_SAVE:
        return OTHER
    if job in (libvirt.VIR_DOMAIN_JOB_NONE, libvirt.VIR_DOMAIN_JOB_COMPLETED):
        return RESUMED
    return SAVING


def recover_save(domain: Any) -> str:
    """Read a paused domain's state and job; resume it if a dead save left it paused.

    Blocks on libvirt (a worker). Returns `save_action`'s answer.
    """
    state, reason = domain.state()
    action = save_action(state, reason, domain.jobInfo()[0])
    if action == RESUMED:
        domain.resume()
    return action


def write_conf(path: str, params: Mapping[str, Any]) -> None:
    """Write VDSM's hibernation configuration: a pickled dict, padded (blocking)."""
    data = pickle.dumps(dict(params), protocol=2)
    data = data.ljust(-(-len(data) // ALIGNMENT) * ALIGNMENT, b"\0")
    with open(path, "r+b") as conf:  # noqa: PTH123 - r+: never truncate a volume
        conf.write(data)
        conf.flush()


def read_conf(path: str) -> dict[str, Any]:
    """Read a hibernation configuration (blocking); {} if unreadable.

    Only plain data is unpickled (dicts, lists, strings, numbers): a volume's
    content is never a reason to run code.
    """
    try:
        with open(path, "rb") as conf:  # noqa: PTH123
            loaded = _PlainUnpickler(io.BytesIO(conf.read())).load()
    except (OSError, pickle.UnpicklingError, EOFError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"{module}.{name} is not plain data")


def _resume_quietly(domain: Any) -> None:
    try:
        if domain.state()[0] == libvirt.VIR_DOMAIN_PAUSED:
            domain.resume()
    except libvirt.libvirtError as error:
        log.warning("the guest was not resumed after a failed save: %s", error)


def _pdiv(value: Any, param: str, name: str) -> DiskVolume:
    if not isinstance(value, dict):
        raise InvalidArgument(param=param, reason="expected {poolID, domainID, imageID, volumeID}")
    ids = [value.get(key) for key in ("poolID", "domainID", "imageID", "volumeID")]
    if not all(isinstance(one, str) and one for one in ids):
        raise InvalidArgument(param=param, reason="expected {poolID, domainID, imageID, volumeID}")
    pool, domain, image, volume = (str(one) for one in ids)
    return DiskVolume(name=name, pool_id=pool, domain_id=domain, image_id=image, volume_id=volume)


__all__ = [
    "HibernateRequest",
    "Hibernator",
    "MemoryVolumes",
    "read_conf",
    "recover_save",
    "save_action",
    "write_conf",
]
