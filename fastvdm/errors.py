"""The one error type for problems the user can fix (bad input, a refused output, a missing file).

``fastvdm`` commands print a :class:`UserError` (and an ``OSError`` such as a full or read-only disk) as one
line, ``fastvdm COMMAND: error: MESSAGE``, and exit with code 2; ``--debug`` (or ``FASTVDM_DEBUG=1``) shows the
traceback too. Any other exception is a bug and keeps its traceback.

The message names the file, field or argument and says what to do. ``UserError`` subclasses ``ValueError``,
so library code that catches ``ValueError`` keeps working; the library's specific errors derive from it
(``SceneFormatError``, ``CheckpointError``, ``CameraFormatError``, ``BackendUnavailableError``, ...).

This module imports nothing from fastvdm (every layer may use it).
"""

from __future__ import annotations

import errno
import os


class UserError(ValueError):
    """Bad input or a refused request: the message (one line) names the file or argument and what to do."""


class OutputError(UserError):
    """An output path is refused (it is an input, the working directory, a parent of either, not writable, ...)."""


def describe_os_error(e: OSError) -> str:
    """One line for an ``OSError``: what failed on which file, and what to do for the common causes."""
    what = e.strerror or str(e) or type(e).__name__
    files = [f for f in (e.filename, e.filename2) if f]
    where = " -> ".join(os.fspath(f) for f in files)
    hint = {
        errno.ENOSPC: "free some space or choose another output folder",
        errno.EDQUOT: "free some space or choose another output folder",
        errno.EROFS: "the file system is read-only: choose a writable output folder",
        errno.EACCES: "check the permissions, or choose another location",
        errno.EPERM: "check the permissions, or choose another location",
        errno.ENOENT: "check the path",
        errno.ENOTDIR: "a part of the path is a file, not a folder",
        errno.EISDIR: "the path is a folder, not a file",
        errno.EEXIST: "it already exists",
        errno.EBUSY: "it is in use (a mount point?): choose another output folder",
        errno.EXDEV: "it is on another file system (a mount point?): choose another output folder",
    }.get(e.errno)
    msg = f"{where}: {what}" if where else what
    return f"{msg} ({hint})" if hint else msg


__all__ = ["UserError", "OutputError", "describe_os_error"]
