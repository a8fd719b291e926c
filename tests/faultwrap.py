"""Run ``fastvdm`` with an injected fault (used by tests/test_faults.py; not a test module).

    python tests/faultwrap.py ARGS...      # = python -m fastvdm ARGS..., with the faults named in the environment

The real code runs unchanged; only the operating system's answers are replaced:

- ``FAULT_READONLY=DIR``: creating or writing anything under DIR fails with EROFS (a read-only file system).
- ``FAULT_NOSPACE=DIR``: opening a file for writing under DIR fails with ENOSPC (a full disk); folders can
  still be created.
- ``FAULT_PAUSE_AFTER=N`` with ``FAULT_PAUSE_FILE=F``: after the N-th image written (PIL ``Image.save``),
  create file F and sleep, so that a test can kill or interrupt the process while it is writing.
- ``FAULT_PAUSE_CHECKPOINT=F``: when a checkpoint's temp file has been written (before it is renamed),
  create file F and sleep.
- ``FAULT_MOUNTPOINT=DIR``: ``os.path.ismount(DIR)`` is True and renaming DIR fails with EBUSY, as for a
  mount point.
"""

from __future__ import annotations

import builtins
import errno
import os
import sys
import time


def _under(path, root: str) -> bool:
    try:
        p = os.path.realpath(os.path.abspath(os.fspath(path)))
    except TypeError:
        return False
    return p == root or p.startswith(root + os.sep)


def patches(env=os.environ) -> list:
    """[(object, attribute name, replacement)] that inject the faults named in ``env`` (see the docstring)."""
    out = []
    ro = env.get("FAULT_READONLY")
    nospace = env.get("FAULT_NOSPACE")
    if ro or nospace:
        ro = os.path.realpath(ro) if ro else None
        nospace = os.path.realpath(nospace) if nospace else None
        real_open, real_os_open, real_mkdir = builtins.open, os.open, os.mkdir
        real_rename, real_replace = os.rename, os.replace

        def deny(path, code):
            raise OSError(code, os.strerror(code), os.fspath(path))

        def writes(mode) -> bool:
            return any(c in str(mode) for c in "wax+")

        def fopen(file, mode="r", *args, **kwargs):
            if isinstance(file, (str, bytes, os.PathLike)) and writes(mode):
                if ro and _under(file, ro):
                    deny(file, errno.EROFS)
                if nospace and _under(file, nospace):
                    deny(file, errno.ENOSPC)
            return real_open(file, mode, *args, **kwargs)

        def osopen(path, flags, *args, **kwargs):
            if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
                if ro and _under(path, ro):
                    deny(path, errno.EROFS)
                if nospace and _under(path, nospace):
                    deny(path, errno.ENOSPC)
            return real_os_open(path, flags, *args, **kwargs)

        def mkdir(path, *args, **kwargs):
            if ro and _under(path, ro):
                deny(path, errno.EROFS)
            return real_mkdir(path, *args, **kwargs)

        def rename(src, dst, *args, **kwargs):
            if ro and (_under(src, ro) or _under(dst, ro)):
                deny(dst, errno.EROFS)
            return real_rename(src, dst, *args, **kwargs)

        def replace(src, dst, *args, **kwargs):
            if ro and (_under(src, ro) or _under(dst, ro)):
                deny(dst, errno.EROFS)
            return real_replace(src, dst, *args, **kwargs)

        import io

        out += [(builtins, "open", fopen), (io, "open", fopen), (os, "open", osopen), (os, "mkdir", mkdir),
                (os, "rename", rename), (os, "replace", replace)]

    mount = env.get("FAULT_MOUNTPOINT")
    if mount:
        mount = os.path.realpath(mount)
        real_ismount, real_rename2 = os.path.ismount, os.rename

        def ismount(path):
            return _under(path, mount) and os.path.realpath(path) == mount or real_ismount(path)

        def rename2(src, dst, *args, **kwargs):
            if os.path.realpath(src) == mount:
                raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), src)
            return real_rename2(src, dst, *args, **kwargs)

        out += [(os.path, "ismount", ismount), (os, "rename", rename2)]

    pause_after = env.get("FAULT_PAUSE_AFTER")
    if pause_after:
        from PIL import Image

        real_save, count = Image.Image.save, [0]

        def save(self, fp, *args, **kwargs):
            real_save(self, fp, *args, **kwargs)
            count[0] += 1
            if count[0] == int(pause_after):
                with builtins.open(env["FAULT_PAUSE_FILE"], "w") as f:
                    f.write(str(fp))
                time.sleep(600)

        out.append((Image.Image, "save", save))

    pause_ckpt = env.get("FAULT_PAUSE_CHECKPOINT")
    if pause_ckpt:
        import safetensors.torch

        real_save = safetensors.torch.save_file

        def save_file(tensors, filename, *args, **kwargs):
            real_save(tensors, filename, *args, **kwargs)
            if ".tmp-" in os.fspath(filename):
                with builtins.open(pause_ckpt, "w") as f:
                    f.write(os.fspath(filename))
                time.sleep(600)

        out.append((safetensors.torch, "save_file", save_file))
    return out


if __name__ == "__main__":
    for obj, name, new in patches():
        setattr(obj, name, new)
    from fastvdm.cli import main

    sys.exit(main(sys.argv[1:]))
