"""Storage errors with VDSM's codes (reference/vdsm-wire.md §2).

Messages are VDSM's texts; the structured context (which domain, which volume) is
added by the base class. Every storage failure a caller can cause or see is one of
these; anything else raised in storage code is a bug and crashes its actor.
"""

from __future__ import annotations

from hostvisor.actors.errors import (
    AlreadyExists,
    CallerError,
    Conflict,
    HostvisorError,
    InvalidArgument,
    NotFound,
)


class StorageError(HostvisorError):
    """A storage operation failed on the host (disk full, I/O error, qemu-img failed)."""

    code = 200
    message = "Storage exception"


# -- volumes ---------------------------------------------------------------------------


class VolumeDoesNotExist(NotFound):
    """No volume with that id in the image."""

    code = 201
    message = "Volume does not exist"


class VolumeIsBusy(Conflict):
    """The volume is in use (prepared for a running VM, or being written)."""

    code = 203
    message = "Volume is busy"


class VolumeHasChildren(Conflict):
    """The volume is the parent of another volume and cannot be deleted."""

    code = 204
    message = "Cannot delete volume which has children (non-ethical)"


class VolumeCreationError(StorageError):
    """Creating the volume failed."""

    code = 205
    message = "Error creating a new volume"


class VolumeMetadataReadError(StorageError):
    """A volume's metadata cannot be read or parsed."""

    code = 207
    message = "Error while processing volume meta data"


class VolumeAlreadyExists(AlreadyExists):
    """A volume with that id already exists in the image."""

    code = 212
    message = "Volume already exists"


class VolumeCopyError(StorageError):
    """Copying the volume's data failed."""

    code = 225
    message = "Volume copy failed"


class IllegalVolumeSnapshot(CallerError):
    """A snapshot layer was asked for on top of an ILLEGAL volume."""

    code = 226
    message = "Cannot create snapshot from illegal volume"


# -- images ----------------------------------------------------------------------------


class ImagePathError(StorageError):
    """The image's directory cannot be made or reached."""

    code = 254
    message = "Image path does not exist or cannot be accessed/created"


class ImageDeleteError(StorageError):
    """Deleting the image failed."""

    code = 256
    message = "Could not remove all image's volumes"


class ImageIsNotLegalChain(CallerError):
    """A volume of the chain is ILLEGAL or missing."""

    code = 262
    message = "Image is not a legal chain"


class ImageDoesNotExistInSD(NotFound):
    """No image with that id in the domain."""

    code = 268
    message = "Image does not exist in domain"


# -- pools and domains -----------------------------------------------------------------


class StoragePoolActionError(StorageError):
    """A pool operation failed."""

    code = 300
    message = "Error storage pool action"


class StoragePoolCreationError(StorageError):
    """StoragePool.create failed."""

    code = 301
    message = "Error creating a storage pool"


class StoragePoolConnectionError(StorageError):
    """StoragePool.connect failed."""

    code = 302
    message = "Error storage pool connection"


class StoragePoolMasterNotFound(StorageError):
    """The pool's master domain is not there."""

    code = 304
    message = "Cannot find master domain"


class StoragePoolDestroyingError(StorageError):
    """StoragePool.destroy failed."""

    code = 308
    message = "Error destroying a storage pool"


class StoragePoolUnknown(NotFound):
    """No pool with that id is connected here."""

    code = 309
    message = "Unknown pool id, pool not connected"


class VMPathNotExists(StorageError):
    """The domain has no master/vms directory (not the master, nor an export domain)."""

    code = 322
    message = "Cannot find VMs directory"


class MissingOvfFileFromVM(StorageError):
    """A VM's directory in master/vms holds no OVF."""

    code = 320
    message = "Missing OVF file from VM"


class GetFileStatsError(StorageError):
    """StorageDomain.getFileStats on a domain that is not a file ISO domain."""

    code = 330
    message = "Cannot get file stats"


class StoragePoolNotConnected(CallerError):
    """The pool exists but this host is not connected to it."""

    code = 313
    message = "Storage pool not connected"


class StoragePoolAlreadyExists(AlreadyExists):
    """StoragePool.create for a pool this host already knows."""

    code = 316
    message = "Storage pool already exists"


class CannotConnectMultiplePools(Conflict):
    """A host connects to one pool at a time."""

    code = 323
    message = "Cannot connect pool, already connected to another pool"


class StoragePoolWrongMaster(CallerError):
    """The master domain or master version given does not match the pool."""

    code = 324
    message = "Wrong Master domain or its version"


class StorageDomainCreationError(StorageError):
    """StorageDomain.create failed."""

    code = 351
    message = "Error creating a storage domain"


class StorageDomainDoesNotExist(NotFound):
    """No storage domain with that id is visible to this host."""

    code = 358
    message = "Storage domain does not exist"


class StorageDomainFSNotMounted(StorageError):
    """The domain's file system is not mounted."""

    code = 360
    message = "Storage domain remote path not mounted"


class StorageDomainNotEmpty(CallerError):
    """The domain's directory already holds something."""

    code = 361
    message = "Storage domain is not empty - requires cleaning"


class StorageDomainAlreadyExists(AlreadyExists):
    """A storage domain with that id already exists."""

    code = 365
    message = "Storage domain already exists"


class StorageDomainNotActive(CallerError):
    """The domain must be active in the pool for this."""

    code = 369
    message = "Storage domain not active"


class StorageDomainTypeError(InvalidArgument):
    """The domain type is not one this host supports."""

    code = 372
    message = "Unsupported Storage Domain type"


class UnsupportedDomainVersion(InvalidArgument):
    """The domain version is not one this host creates or reads."""

    code = 394
    message = "Domain version is unsupported by this version of VDSM"


class StorageDomainAccessError(StorageError):
    """The domain's files cannot be read or written."""

    code = 379
    message = "Domain is either partially accessible or entirely inaccessible"


class StorageDomainAlreadyAttached(Conflict):
    """The domain is already attached to a pool."""

    code = 380
    message = "Storage domain already attached to pool"


class StorageDomainNotInPool(CallerError):
    """The domain is not attached to that pool."""

    code = 353
    message = "Storage domain not in pool"


class StorageDomainMetadataError(StorageError):
    """The domain's metadata is unreadable or its checksum is wrong."""

    code = 750
    message = "Storage domain metadata checksum error"


class StorageInvalidParameter(InvalidArgument):
    """A storage verb's parameter is out of range (VDSM's InvalidParameterException)."""

    code = 1000
    message = "Invalid parameter"


# -- tasks and connections -------------------------------------------------------------


class UnknownTask(NotFound):
    """No task with that id."""

    code = 401
    message = "Task id unknown"


class TaskNotFinished(Conflict):
    """The task still runs; it cannot be cleared."""

    code = 403
    message = "Task not finished"


class TaskStateError(Conflict):
    """The operation is not allowed in the task's state."""

    code = 410
    message = "Operation is not allowed in this task state"


class TaskAborted(StorageError):
    """The task was stopped before it finished."""

    code = 411
    message = "Task is aborted"


class StorageServerConnectionError(StorageError):
    """Connecting to the storage server failed."""

    code = 451
    message = "Error storage server connection"


class MountError(StorageError):
    """mount(8) failed."""

    code = 477
    message = "Problem while trying to mount target"


# -- SPM -------------------------------------------------------------------------------


class SpmStartError(StorageError):
    """This host could not become the SPM."""

    code = 650
    message = "Error starting SPM"


class AcquireLockFailure(Conflict):
    """The pool's SPM lock is held by another host or process."""

    code = 651
    message = "Could not obtain lock"


class NotSpm(CallerError):
    """Only the SPM may change the pool's metadata."""

    code = 654
    message = "Not SPM"


class IsSpm(Conflict):
    """The operation is refused while this host is the SPM."""

    code = 656
    message = "Operation not allowed while SPM is active"
