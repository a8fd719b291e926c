"""`fastvdm bench kernels`: runs a bench/ script in a child process and appends a JSON record equal to its table."""

import json

import pytest

from fastvdm.cli import bench as bench_cli
from fastvdm.cli import main


def test_bench_kernels_appends_a_record_matching_the_table(tmp_path, monkeypatch, capfd):
    monkeypatch.setitem(
        bench_cli.KERNEL_BENCHES,
        "losses",
        ("bench/bench_losses.py", {"cpu": ["--repeats", "1", "--shape", "2,3,2,8,8"], "cuda": []}),
    )
    import sys

    out = tmp_path / "results.jsonl"
    path_before = list(sys.path)
    for _ in range(2):
        assert main(["bench", "kernels", "--op", "losses", "--device", "cpu", "--json", str(out)]) == 0
    # the script ran in its own process: this one neither imported bench/ nor touched sys.path
    assert sys.path == path_before and not any(m == "bench" or m.startswith("bench.") for m in sys.modules)
    printed = capfd.readouterr().out  # the script runs in a child process: its table reaches fd 1
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 2  # appended, not overwritten
    rec = records[-1]
    assert rec["kind"] == "kernels" and rec["bench"] == "losses"
    assert rec["environment"]["torch"] and rec["environment"]["device"]
    methods = {(r["loss"], r["method"]) for r in rec["rows"]}
    assert {("denoising", "eager"), ("dmd", "eager"), ("denoising", "reference")} <= methods
    for r in rec["rows"]:
        # every JSON row is a row of the printed table, and its speedup is eager's time over its own
        assert f"{r['fwd+bwd ms']}" in printed and r["method"] in printed
        eager = next(e for e in rec["rows"] if e["loss"] == r["loss"] and e["method"] == "eager")
        # the table rounds times to 0.01 ms and the speedup to 0.01: allow exactly that rounding
        e, m, h = float(eager["fwd+bwd ms"]), float(r["fwd+bwd ms"]), 0.005
        lo, hi = (e - h) / (m + h), (e + h) / max(m - h, 1e-9)
        assert lo - h <= float(r["speedup"].rstrip("x")) <= hi + h


def test_bench_rejects_cuda_without_a_gpu(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert main(["bench", "kernels", "--device", "cuda", "--json", "/dev/null"]) == 2
    assert "no CUDA device" in capsys.readouterr().err


def test_bench_e2e_runs_both_backends_and_records_them(tmp_path, capsys):
    out = tmp_path / "e2e.jsonl"
    argv = ["bench", "e2e", "--device", "cpu", "--frames", "4", "--size", "16", "--repeats", "1",
            "--teacher-steps", "2", "--no-compile", "--json", str(out)]  # compile rows: minutes of compilation
    assert main(argv) == 0
    rec = json.loads(out.read_text())
    assert rec["kind"] == "e2e" and rec["bench_argv"][-3:] == ["--teacher-steps", "2", "--no-compile"]
    whats = {r["what"] for r in rec["rows"]}
    assert whats == {"teacher sampling (2-step DDIM)", "student sampling (4 steps)", "distillation step (KL stage)"}
    for r in rec["rows"]:
        assert float(r["seconds"]) > 0 and float(r["peak MB"]) > 0
        if r["backend"] == "reference":
            assert r["speedup vs reference"] == "1.00x"
    assert sorted(r["backend"] for r in rec["rows"]) == ["auto"] * 3 + ["reference"] * 3


def test_bench_without_the_checkout_is_one_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench_cli, "__file__", str(tmp_path / "site-packages" / "fastvdm" / "cli" / "bench.py"))
    assert main(["bench", "kernels", "--op", "losses", "--device", "cpu", "--json", str(tmp_path / "x.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "bench/" in err and "editable install" in err and "Traceback" not in err
    assert not (tmp_path / "x.jsonl").exists()
