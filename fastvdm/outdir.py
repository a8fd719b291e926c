"""Output folders that appear whole or not at all.

    with staged_output_dir("OUT", force=False) as tmp:   # FileExistsError now if OUT is non-empty and not force
        ... write everything under tmp ...
    # on success tmp is renamed to OUT (an old OUT is replaced only with force); on any error tmp is removed
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile


def check_output_dir(out: str, force: bool = False) -> str:
    """The absolute path of ``out``; FileExistsError if it is a file, or a non-empty folder and not ``force``."""
    out = os.path.abspath(out)
    if os.path.exists(out) and not os.path.isdir(out):
        raise FileExistsError(f"{out} exists and is not a folder")
    if os.path.isdir(out) and os.listdir(out) and not force:
        raise FileExistsError(f"{out} exists and is not empty (use --force to replace it)")
    return out


@contextlib.contextmanager
def staged_output_dir(out: str, force: bool = False):
    """Yield a fresh temporary folder beside ``out``; rename it to ``out`` when the block succeeds."""
    out = check_output_dir(out, force)
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.tmp-", dir=parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the result should be an ordinary folder
    try:
        yield tmp
        if os.path.exists(out):
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.old-", dir=parent)
            os.rename(out, os.path.join(old, "x"))
            os.rename(tmp, out)
            shutil.rmtree(old)
        else:
            os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


__all__ = ["check_output_dir", "staged_output_dir"]
