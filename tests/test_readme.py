"""README.md runs as written: every ```python block (in order, in one namespace, in a scratch folder where the
placeholders SCENE_DIR and DIR/scene_00000 are real scene folders), and every `fastvdm ...` command line of the
shell blocks: the cheap ones are run, the slow ones (training, evaluation, the demo) are run under the ``slow``
mark, and every one of them must at least parse with the current command-line interface. ``python``/``bash``
lines must name scripts and modules that exist.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")

# placeholder -> value in the scratch folder (words of the README's command lines)
PLACEHOLDERS = {"SCENE_DIR": "SCENE_DIR", "DENSE_DIR": "DENSE_DIR", "DIR": "out", "N": "1", "S": "0",
                "GENERATED_DIR": "SCENE_DIR", "HELD_OUT_DIR": "SCENE_DIR", "PATH.json": "path.json"}
CHEAP = ("info", "data", "densify")  # subcommands cheap enough to run in every test run
SLOW = ("demo", "recon")  # run under the slow mark (the training / evaluation lines need runs and GPUs: parsed only)


def _blocks(lang: str) -> list[str]:
    text = open(README).read()
    return [m.group(2) for m in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.S | re.M) if m.group(1) == lang]


def _command_lines(with_setup: bool = False) -> list:
    """The README's shell command lines (``bash`` and plain blocks; lines that start with a command):
    continuations joined, comments dropped. with_setup: (line, the ``python -c`` lines before it in its block)."""
    text = open(README).read()
    blocks = [block.replace("\\\n", " ").splitlines() for block in _blocks("bash") + _blocks("")]
    # inline commands in the prose: `fastvdm info`, `fastvdm data make --out DIR ...`
    blocks.append([m for m in re.findall(r"`(fastvdm [^`]+)`", text) if "--" in m or m in ("fastvdm info", "fastvdm demo")])
    out = []
    for block in blocks:
        setup = []
        for line in block:
            for part in re.sub(r"\s+#\s.*$", "", line).split("&&"):
                part = " ".join(part.split())
                if part.split(" ", 1)[0] in ("fastvdm", "python", "bash", "torchrun", "pip", "cmake", "ctest"):
                    out.append((part, list(setup)) if with_setup else part)
                    if part.startswith("python -c "):
                        setup.append(part)
    return out


def _fastvdm_argv(line: str):
    """argv after ``fastvdm`` for a fastvdm command line (also ``torchrun ... -m fastvdm``), optional ``[...]``
    parts dropped, placeholders substituted; None for other lines."""
    line = re.sub(r"\[[^\]]*\]", "", line)
    words = shlex.split(line)
    if "fastvdm" not in words:
        return None
    i = words.index("fastvdm")
    if i and words[i - 1] != "-m" and words[0] != "fastvdm":
        return None
    return [PLACEHOLDERS.get(w, w) for w in words[i + 1:]]


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """A folder with SCENE_DIR (8 views of 32x32 with depth) and DIR/scene_00000, as the README assumes."""
    from fastvdm.cli import main

    root = tmp_path_factory.mktemp("readme")
    assert main(["data", "make", "--out", str(root / "DIR"), "--scenes", "1", "--size", "32", "--views", "8",
                 "--no-progress"]) == 0
    shutil.copytree(root / "DIR" / "scene_00000", root / "SCENE_DIR")
    return root


def test_readme_has_what_this_test_checks():
    assert len(_blocks("python")) >= 3 and any(_fastvdm_argv(ln) for ln in _command_lines())


def test_python_examples_run(scratch, monkeypatch):
    monkeypatch.chdir(scratch)
    namespace: dict = {"__name__": "readme"}
    for i, block in enumerate(_blocks("python")):
        try:
            exec(compile(block, f"README.md python block {i}", "exec"), namespace)
        except Exception as e:  # pragma: no cover - the message says which block
            raise AssertionError(f"README python block {i} failed: {type(e).__name__}: {e}\n{block}") from e


def test_every_fastvdm_command_parses():
    from fastvdm.cli import build_parser

    parser = build_parser()
    found = 0
    for line in _command_lines():
        argv = _fastvdm_argv(line)
        if argv is None or not argv:
            continue
        found += 1
        try:
            parser.parse_args(argv)
        except SystemExit as e:
            raise AssertionError(f"README command does not parse: {line!r} -> {argv}") from e
    assert found >= 8


def test_scripts_and_modules_named_by_the_readme_exist():
    for line in _command_lines():
        words = shlex.split(re.sub(r"\[[^\]]*\]", "", line))
        for prog, arg in zip(words, words[1:]):
            if prog in ("python", "bash") and arg.endswith((".py", ".sh")):
                assert os.path.isfile(os.path.join(ROOT, arg)), f"README names {arg}, which does not exist"
            if prog == "-m" and not arg.startswith("fastvdm") and arg != "pytest":
                path = os.path.join(ROOT, *arg.split(".")) + ".py"
                assert os.path.isfile(path), f"README runs -m {arg}, which does not exist"


def _run(argv, cwd):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "fastvdm", *argv], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=1200)


def _commands(kinds) -> list:
    """(line, argv, setup lines) of the fastvdm commands whose subcommand is in ``kinds``."""
    out = []
    for line, setup in _command_lines(with_setup=True):
        argv = _fastvdm_argv(line)
        if argv and argv[0] in kinds and line not in [o[0] for o in out]:
            out.append((line, argv, setup))
    return out


def _run_with_setup(scratch, name, line, argv, setup):
    work = scratch / f"{name}{abs(hash(line)) % 10**6}"
    shutil.copytree(scratch / "SCENE_DIR", work / "SCENE_DIR")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for cmd in setup:  # e.g. `python -c "... write_motorcycle_capture('moto')"` earlier in the same block
        r = subprocess.run([sys.executable] + shlex.split(cmd)[1:], cwd=work, env=env, capture_output=True, text=True,
                           timeout=600)
        assert r.returncode == 0, f"README setup {cmd!r} failed: {r.stderr[-2000:]}"
    r = _run(argv, work)
    assert r.returncode == 0, f"{line!r} failed: {r.stderr[-2000:]}"


@pytest.mark.parametrize("line,argv,setup", _commands(CHEAP), ids=[c[0] for c in _commands(CHEAP)])
def test_cheap_commands_run(scratch, line, argv, setup):
    _run_with_setup(scratch, "cmd", line, argv, setup)


@pytest.mark.slow
@pytest.mark.parametrize("line,argv,setup", _commands(SLOW), ids=[c[0] for c in _commands(SLOW)])
def test_slow_commands_run(scratch, line, argv, setup, request):
    """The demo and reconstruction commands of the README, as written (a minute or more each: run on demand,
    ``pytest -m slow tests/test_readme.py``)."""
    if "slow" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("slow: run with -m slow")
    _run_with_setup(scratch, "slow", line, argv, setup)
