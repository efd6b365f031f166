"""The errors of copying, moving and updating volumes, with VDSM's codes and texts.

VDSM's `lib/vdsm/storage/exception.py` is the spec; each class names the VDSM
class it stands for when the names differ.
"""

from __future__ import annotations

from hostvisor.actors.errors import CallerError, Conflict
from hostvisor.actors.storage.errors import StorageError


class IncorrectFormat(CallerError):
    """A volume format that is neither COW (4) nor RAW (5)."""

    code = 202
    message = "Incorrect Volume format"


class IncorrectType(CallerError):
    """A preallocation that is neither PREALLOCATED (1) nor SPARSE (2)."""

    code = 231
    message = "Incorrect Volume Preallocate Type"


class InvalidVolumeUpdate(CallerError):
    """SDM.update_volume asked for a change the volume cannot take."""

    code = 235
    message = "Cannot update volume attributes"


class MoveTemplateImageError(CallerError):
    """Image.move of a template that images of its domain are based on."""

    code = 266
    message = "Cannot move template's image because it is used by a VM"


class DestImageActionError(StorageError):
    """The destination image does not match the source (Image.syncData)."""

    code = 260
    message = "Error during destination image manipulation"


class CopyImageError(StorageError):
    """qemu-img could not copy a volume's data."""

    code = 261
    message = "low level Image copy failed"


class GenerationMismatch(Conflict):
    """The caller's generation is not the volume's."""

    code = 911
    message = "The provided generation does not match the actual generation"


class MiscNotImplemented(CallerError):
    """A sync type VDSM does not know (VDSM's MiscNotImplementedException)."""

    code = 2000
    message = "Method not implemented"


class UnsupportedOperation(CallerError):
    """The operation cannot be done on this volume (amend, sparsify, measure)."""

    code = 2009
    message = "Unsupported operation"
