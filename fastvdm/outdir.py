"""The one output-folder guard every writing command goes through, and output folders that appear whole or not
at all.

    with staged_output_dir("OUT", force=False, inputs=[scene_dir]) as tmp:   # refused now, before any work
        ... write everything under tmp ...
    # on success tmp is renamed to OUT (an old OUT is replaced only with force); on any error tmp is removed

:func:`check_output_dir` refuses (with an :class:`~fastvdm.errors.OutputError`, one line naming the path and
what to do):

- an empty path;
- an output that is, contains, or lies inside an input (``inputs``);
- an output that is or contains the working directory or the home directory, or is a filesystem root or a
  mount point (it could never be replaced by a rename), or is, contains or lies inside fastvdm's own package
  folder (its code and shipped models);
- an output whose path runs through a file, or that is a file;
- a non-empty folder without ``force`` (``resume=True``: an existing folder is continued, e.g. a run folder);
- a location that cannot be written (probed by creating and removing a folder there).

Temporaries use fastvdm's own naming beside the output: ``.<name>.tmp-<pid>-<random>`` (the staged output)
and ``.<name>.old-<pid>-<random>`` (the previous output while it is being replaced). A run killed with
SIGKILL can leave them; :func:`sweep_stale` (called by :func:`staged_output_dir`) removes those whose process
is gone on the next run of the same output, with a note on stderr.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
import tempfile
from typing import Iterable, Optional

from fastvdm.errors import OutputError, describe_os_error


# What a training run folder holds (fastvdm.train.loop): a non-empty --out of `fastvdm train` must have one.
RUN_MARKERS = ("checkpoints", "config.json", "log.jsonl")


def _real(path: str) -> str:
    return os.path.realpath(os.path.abspath(os.path.expanduser(path)))


def _within(child: str, parent: str) -> bool:
    """``child`` is ``parent`` or lies inside it (both real absolute paths)."""
    try:
        return os.path.commonpath([child, parent]) == parent
    except ValueError:  # different drives
        return False


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists (a process of another user counts as alive)."""
    if pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return True
    return True


def _nearest_existing(path: str) -> str:
    p = path
    while not os.path.lexists(p):
        parent = os.path.dirname(p)
        if parent == p:
            break
        p = parent
    return p


def _probe_writable(folder: str, what: str, out: str) -> None:
    try:
        probe = tempfile.mkdtemp(prefix=".fastvdm-probe-", dir=folder)
        os.rmdir(probe)
    except OSError as e:
        raise OutputError(f"{what} {out}: cannot write in {folder}: {describe_os_error(e)}") from None


def check_output_dir(out: str, force: bool = False, inputs: Iterable[Optional[str]] = (), what: str = "--out",
                     resume: bool = False, markers: Iterable[str] = ()) -> str:
    """The real absolute path of output folder ``out``, or :class:`OutputError` (see the module docstring).

    inputs: paths (files or folders) the command reads; None entries are ignored. what: how the user wrote
    the option, for messages. resume: an existing folder is fine (it is continued, not replaced); with
    ``markers``, a non-empty one must hold one of those names (e.g. a run folder's ``checkpoints``), so a
    folder of the user's own files is never written into.
    """
    if out is None or not str(out).strip():
        raise OutputError(f"{what} is empty: give the name of a new output folder")
    out = str(out)
    real = _real(out)
    shown = out if out == real else f"{out} ({real})"
    if os.path.dirname(real) == real:
        raise OutputError(f"{what} {shown} is a filesystem root: give a new folder inside it")
    if os.path.isdir(real) and os.path.ismount(real):
        raise OutputError(f"{what} {shown} is a mount point, which cannot be replaced: give a folder inside it")
    for name, p in (("the working directory", os.getcwd()), ("your home directory", os.path.expanduser("~"))):
        p = _real(p)
        if _within(p, real):
            rel = "is" if p == real else "contains"
            where = "" if p == real else f" ({p})"
            raise OutputError(f"{what} {shown} {rel} {name}{where}; give a new folder (e.g. {what} results)")
    package = _real(os.path.dirname(os.path.abspath(__file__)))  # fastvdm itself (code, shipped weights)
    if _within(real, package) or _within(package, real):
        raise OutputError(f"{what} {shown} is, contains or lies inside fastvdm's own package folder ({package}, "
                          "which holds the shipped models); write the output elsewhere")
    for src in inputs:
        if src is None or not str(src).strip():
            continue
        s = _real(str(src))
        if _within(real, s) or _within(s, real):
            rel = "is" if s == real else ("lies inside" if _within(real, s) else "contains")
            raise OutputError(f"{what} {shown} {rel} the input {src}; write the output to another folder")
    existing = _nearest_existing(real)
    if existing != real and not os.path.isdir(existing):
        raise OutputError(f"{what} {shown}: {existing} is a file, not a folder; choose another output path")
    if os.path.lexists(real) and not os.path.isdir(real):
        raise OutputError(f"{what} {shown} exists and is a file, not a folder; choose another output path")
    if os.path.isdir(real) and not resume and not force:
        try:
            entries = os.listdir(real)
        except OSError as e:
            raise OutputError(f"{what} {shown}: {describe_os_error(e)}") from None
        if entries:
            raise OutputError(f"{what} {shown} exists and is not empty (use --force to replace it)")
    markers = tuple(markers)
    if resume and markers and os.path.isdir(real):
        try:
            entries = set(os.listdir(real))
        except OSError as e:
            raise OutputError(f"{what} {shown}: {describe_os_error(e)}") from None
        if entries and not entries & set(markers):
            raise OutputError(f"{what} {shown} exists and is not a folder this command wrote (it has none of "
                              f"{', '.join(markers)}); give a new folder, or the one of the run to continue")
    if resume and os.path.isdir(real):
        _probe_writable(real, what, out)
    else:
        _probe_writable(existing, what, out)
    return real


def check_output_file(path: str, inputs: Iterable[Optional[str]] = (), what: str = "--out") -> str:
    """The real absolute path of an output *file*; :class:`OutputError` if it is empty, a folder, an input,
    inside a path that runs through a file, or in a place that cannot be written."""
    if path is None or not str(path).strip():
        raise OutputError(f"{what} is empty: give a file name")
    real = _real(str(path))
    if os.path.isdir(real):
        raise OutputError(f"{what} {path} is a folder; give a file name")
    for src in inputs:
        if src is not None and str(src).strip() and _real(str(src)) == real:
            raise OutputError(f"{what} {path} is the input {src}; write to another file")
    existing = _nearest_existing(os.path.dirname(real))
    if not os.path.isdir(existing):
        raise OutputError(f"{what} {path}: {existing} is a file, not a folder; choose another output path")
    _probe_writable(existing, what, path)
    return real


_STALE = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-(?:(?P<pid>\d+)-)?[^-]+$")


def stale_temporaries(out: str) -> list[str]:
    """fastvdm's own temporaries of output ``out`` (``.<name>.tmp-*``, ``.<name>.old-*`` beside it) whose
    process is gone (or that carry no process id: left by an older fastvdm)."""
    real = _real(out)
    parent, base = os.path.dirname(real), os.path.basename(real)
    try:
        names = os.listdir(parent)
    except OSError:
        return []
    found = []
    for n in names:
        m = _STALE.match(n)
        if not m or m.group("name") != base:
            continue
        pid = m.group("pid")
        if pid is not None and pid_alive(int(pid)):
            continue
        found.append(os.path.join(parent, n))
    return sorted(found)


def sweep_stale(out: str, quiet: bool = False) -> list[str]:
    """Remove :func:`stale_temporaries` of ``out``; a note on stderr for each. Returns the removed paths."""
    removed = []
    for p in stale_temporaries(out):
        try:
            if os.path.isdir(p) and not os.path.islink(p):
                shutil.rmtree(p)
            else:
                os.remove(p)
        except OSError as e:
            if not quiet:
                print(f"fastvdm: note: could not remove {p} left by an interrupted run: {describe_os_error(e)}",
                      file=sys.stderr)
            continue
        removed.append(p)
        if not quiet:
            print(f"fastvdm: note: removed {p}, left by an interrupted run", file=sys.stderr)
    return removed


def sweep_stale_file_temps(path: str, quiet: bool = False) -> list[str]:
    """Remove ``<path>.tmp-<pid>`` files (fastvdm's atomic writes of file ``path``) whose process is gone."""
    real = _real(path)
    parent, base = os.path.dirname(real), os.path.basename(real)
    try:
        names = os.listdir(parent)
    except OSError:
        return []
    removed = []
    for n in names:
        m = re.match(re.escape(base) + r"\.tmp-(\d+)$", n)
        p = os.path.join(parent, n)
        if m and os.path.isfile(p) and not pid_alive(int(m.group(1))):
            try:
                os.remove(p)
            except OSError:
                continue
            removed.append(p)
            if not quiet:
                print(f"fastvdm: note: removed {p}, left by an interrupted run", file=sys.stderr)
    return removed


def _replace(tmp: str, out: str) -> None:
    """Rename folder ``tmp`` to ``out``; an existing ``out`` is moved aside first and restored on failure."""
    parent, base = os.path.dirname(out), os.path.basename(out)
    if not os.path.lexists(out):
        os.rename(tmp, out)
        return
    old = tempfile.mkdtemp(prefix=f".{base}.old-{os.getpid()}-", dir=parent)
    aside = os.path.join(old, "x")
    try:
        os.rename(out, aside)
    except BaseException:
        os.rmdir(old)
        raise
    try:
        os.rename(tmp, out)
    except BaseException:
        os.rename(aside, out)  # put the previous output back
        os.rmdir(old)
        raise
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def staged_output_dir(out: str, force: bool = False, inputs: Iterable[Optional[str]] = (), what: str = "--out"):
    """Check ``out`` (:func:`check_output_dir`), sweep its stale temporaries, and yield a fresh temporary folder
    beside it, renamed to ``out`` when the block succeeds (removed when it fails or is interrupted)."""
    real = check_output_dir(out, force, inputs, what)
    sweep_stale(real)
    parent = os.path.dirname(real)
    try:
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(real)}.tmp-{os.getpid()}-", dir=parent)
    except OSError as e:
        raise OutputError(f"{what} {out}: {describe_os_error(e)}") from None
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the result should be an ordinary folder
    try:
        yield tmp
        _replace(tmp, real)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if e.filename:
            raise
        raise OutputError(f"{what} {out}: writing failed: {describe_os_error(e)}") from e  # name the output
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


__all__ = ["RUN_MARKERS", "check_output_dir", "check_output_file", "staged_output_dir", "stale_temporaries",
           "sweep_stale", "sweep_stale_file_temps", "pid_alive"]
