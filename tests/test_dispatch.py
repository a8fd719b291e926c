"""Backend registry and selection: listing, forcing (context manager and env var), auto, clear errors."""

import os
import subprocess
import sys

import pytest
import torch

import fastvdm.ops as ops
from fastvdm.ops import _dispatch


def _gn_args():
    x = torch.randn(2, 8, 3, 4, 5)
    return x


def test_reference_is_always_listed_for_every_op():
    assert "reference" in ops.available_backends()
    for op in ops.OPS:
        assert "reference" in ops.available_backends(op)


def test_cpu_backend_listed_when_extension_is_built():
    from fastvdm.ops import extensions

    if extensions.cpu_status() is None:
        assert "cpu" in ops.available_backends()
    else:
        assert "cpu" not in ops.available_backends()


def test_triton_listed_under_interpreter():
    pytest.importorskip("triton")
    # conftest sets TRITON_INTERPRET=1 when there is no GPU.
    assert os.environ.get("TRITON_INTERPRET") == "1" or torch.cuda.is_available()
    assert "triton" in ops.available_backends()


def test_triton_unavailable_without_interpreter_or_gpu(monkeypatch):
    pytest.importorskip("triton")
    if torch.cuda.is_available():
        pytest.skip("a GPU makes triton available")
    monkeypatch.delenv("TRITON_INTERPRET")
    assert "TRITON_INTERPRET" in _dispatch.backend_status("triton")
    assert "triton" not in ops.available_backends()


def test_unknown_op_and_backend_are_rejected():
    with pytest.raises(ValueError, match="unknown op"):
        ops.available_backends("conv")
    with pytest.raises(ValueError, match="unknown backend"):
        with ops.use_backend("tpu"):
            pass


def test_use_backend_forces_and_restores():
    x = _gn_args()
    auto = ops.selected_backend("group_norm", x, 4, None, None, 1e-5, None, None, None)
    with ops.use_backend("reference"):
        assert ops.selected_backend("group_norm", x, 4, None, None, 1e-5, None, None, None) == "reference"
        with ops.use_backend("auto"):
            assert ops.selected_backend("group_norm", x, 4, None, None, 1e-5, None, None, None) == auto
    assert ops.selected_backend("group_norm", x, 4, None, None, 1e-5, None, None, None) == auto


def test_use_backend_for_some_ops_only():
    x = _gn_args()
    args = (x, 4, None, None, 1e-5, None, None, None)
    with ops.use_backend("reference"):
        with ops.use_backend("auto", ops=["dmd_loss"]):
            assert ops.selected_backend("group_norm", *args) == "reference"


def test_env_var_forces_backend(monkeypatch):
    x = _gn_args()
    monkeypatch.setenv("FASTVDM_BACKEND", "reference")
    assert ops.selected_backend("group_norm", x, 4, None, None, 1e-5, None, None, None) == "reference"
    monkeypatch.setenv("FASTVDM_BACKEND", "nonsense")
    with pytest.raises(ops.BackendUnavailableError, match="FASTVDM_BACKEND"):
        ops.group_norm(x, 4)


def test_forcing_an_unavailable_backend_names_it_and_why():
    x = _gn_args()
    if torch.cuda.is_available():
        pytest.skip("cuda may be available here")
    with ops.use_backend("cuda"):
        with pytest.raises(ops.BackendUnavailableError, match=r"'cuda'.*no CUDA device"):
            ops.group_norm(x, 4)


def test_forcing_a_backend_that_does_not_implement_the_op(monkeypatch):
    q = torch.randn(1, 2, 3, 1, 4)
    if "cpu" not in ops.available_backends():
        pytest.skip("needs the cpu backend")
    # the cpu backend implements every op: hide its attention for this test
    monkeypatch.setitem(_dispatch._registry, "video_attention",
                        {k: v for k, v in _dispatch._registry["video_attention"].items() if k != "cpu"})
    with ops.use_backend("cpu"):
        with pytest.raises(ops.BackendUnavailableError, match="does not implement video_attention"):
            ops.video_attention(q, q, q, "spatial")


def test_auto_never_picks_triton_on_cpu_tensors():
    x = _gn_args()
    assert ops.selected_backend("group_norm", x, 4, None, None, 1e-5, None, None, None) != "triton"
    q = torch.randn(1, 2, 3, 1, 4)
    assert ops.selected_backend("video_attention", q, q, q, "spatial", None) != "triton"


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: ops.group_norm(torch.randn(2, 6, 4), 4), "divide the 6 channels"),
        (lambda: ops.group_norm(torch.randn(2, 8, 4), 4, weight=torch.randn(4)), r"weight must have shape \(8,\)"),
        (lambda: ops.group_norm(torch.randn(2, 8, 4), 4, scale=torch.randn(8)), r"scale must have shape \(2, 8\)"),
        (lambda: ops.group_norm(torch.randn(2, 8, 4), 4, activation="relu"), "activation"),
        (lambda: ops.group_norm(torch.arange(8).view(1, 8), 4), "floating"),
        (lambda: ops.video_attention(torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5), "spatial"), r"\(B, T, S, heads, D\)"),
        (lambda: ops.video_attention(*(torch.randn(1, 2, 3, 1, 4),) * 3, "diagonal"), "axis"),
        (lambda: ops.video_attention(torch.randn(1, 2, 3, 1, 4), torch.randn(1, 2, 3, 1, 8), torch.randn(1, 2, 3, 1, 4), "joint"), "k must have the shape"),
        (lambda: ops.denoising_loss(*(torch.randn(2, 3),) * 3, torch.rand(3), torch.rand(2)), r"alpha must have shape \(2,\)"),
        (lambda: ops.denoising_loss(*(torch.randn(2, 3),) * 3, torch.rand(2), torch.rand(2), target="score"), "target"),
        (lambda: ops.dmd_loss(torch.randn(2, 3), torch.randn(2, 3).double(), torch.randn(2, 3)), "dtype"),
        (lambda: ops.dmd_loss(torch.randn(2, 3), torch.randn(2, 3), torch.randn(2, 4)), "x0_fake must have the shape"),
    ],
)
def test_bad_inputs_raise_clear_errors(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


def test_reference_path_works_without_the_extension(tmp_path):
    """What an install with FASTVDM_SKIP_EXT=1 gives: no fastvdm._C_cpu, every op on the reference."""
    code = (
        "import sys; sys.modules['fastvdm._C_cpu'] = None\n"
        "import torch, fastvdm.ops as o\n"
        "assert o.available_backends() == ['reference'], o.available_backends()\n"
        "x = torch.randn(2, 8, 3, 4, requires_grad=True)\n"
        "y = o.group_norm(x, 4, activation='silu'); y.sum().backward()\n"
        "assert torch.isfinite(x.grad).all()\n"
        "print(o.selected_backend('group_norm', x, 4, None, None, 1e-5, None, None, None))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "reference"


# ------------------------------------------------------------------------------------------- threads and compile
def _gn_selected(x):
    return ops.selected_backend("group_norm", x, 4, None, None, 1e-5, None, None, None)


def test_use_backend_affects_the_calling_thread_only():
    """Issue 17 case 3: a thread's forcing must not leak into other threads (it used to be process-wide)."""
    import threading

    if "cpu" not in ops.available_backends("group_norm"):
        pytest.skip("needs the cpu backend")
    x = _gn_args()
    auto = _gn_selected(x)
    entered, release = threading.Event(), threading.Event()
    seen = {}

    def forcer(name):
        with ops.use_backend(name):
            seen[name + "_inside"] = _gn_selected(x)
            entered.set()
            release.wait(10)

    def reader():
        with ops.use_backend("reference"):
            seen["reader"] = [_gn_selected(x) for _ in range(20)]

    t = threading.Thread(target=forcer, args=("cpu",))
    t.start()
    assert entered.wait(10)
    assert _gn_selected(x) == auto  # this thread is not forced
    r = threading.Thread(target=reader)
    r.start()
    r.join()
    release.set()
    t.join()
    assert seen["cpu_inside"] == "cpu"
    assert seen["reader"] == ["reference"] * 20
    # a thread forcing an unavailable backend makes only its own calls fail
    if not torch.cuda.is_available():
        errors = []

        def cuda_thread():
            with ops.use_backend("cuda"):
                try:
                    ops.group_norm(x, 4)
                except ops.BackendUnavailableError as e:
                    errors.append(str(e))
                entered2.set()
                release2.wait(10)

        entered2, release2 = threading.Event(), threading.Event()
        c = threading.Thread(target=cuda_thread)
        c.start()
        assert entered2.wait(10)
        ops.group_norm(x, 4)  # fine here while the other thread forces cuda
        release2.set()
        c.join()
        assert len(errors) == 1 and "cuda" in errors[0]


def test_use_backend_out_of_order_exit_keeps_the_other_entry():
    a, b = ops.use_backend("reference"), ops.use_backend("auto")
    a.__enter__()
    b.__enter__()
    a.__exit__(None, None, None)
    assert _dispatch._forcing.stack == [("auto", None)]
    b.__exit__(None, None, None)
    assert _dispatch._forcing.stack == []


def test_env_var_garbage_is_one_clear_line(monkeypatch):
    monkeypatch.setenv("FASTVDM_BACKEND", "garbage")
    with pytest.raises(ops.BackendUnavailableError) as e:
        ops.group_norm(_gn_args(), 4)
    msg = str(e.value)
    assert "\n" not in msg and "FASTVDM_BACKEND='garbage'" in msg and "reference" in msg


class _GNModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(8))
        self.conv = torch.nn.Conv3d(8, 8, 1)

    def forward(self, x):
        return self.conv(ops.group_norm(x, 4, self.w, None, activation="silu"))


def test_compile_traces_forced_dispatch_without_graph_breaks_and_guards_per_thread():
    """torch.compile of a model using the ops: no graph break, and the graph follows the calling thread's
    forcing (a recompile under another forcing, the cached graph again when it comes back)."""
    import threading

    if "cpu" not in ops.available_backends("group_norm"):
        pytest.skip("needs the cpu backend")
    torch._dynamo.reset()
    m, x = _GNModel(), torch.randn(2, 8, 3, 4, 4)
    for name in ("reference", "cpu"):
        with ops.use_backend(name):
            explained = torch._dynamo.explain(m)(x)
        assert explained.graph_break_count == 0 and explained.graph_count == 1, name
    torch._dynamo.reset()
    graphs, ran = [], []

    def record(gm, example_inputs):
        kind = "cpu" if "group_norm_cpu" in gm.code else "reference" if "group_norm_reference" in gm.code else "?"
        graphs.append(kind)

        def run(*args):
            ran.append(kind)
            return gm.forward(*args)

        return run

    cm = torch.compile(m, backend=record, fullgraph=True)
    want = m(x)
    with ops.use_backend("reference"):
        torch.testing.assert_close(cm(x), want)
    with ops.use_backend("cpu"):
        torch.testing.assert_close(cm(x), want, rtol=1e-4, atol=1e-5)
    assert graphs == ["reference", "cpu"]
    with ops.use_backend("reference"):
        cm(x)
    assert graphs == ["reference", "cpu"] and ran[-1] == "reference"  # the cached graph, no recompile
    seen = []

    def other():  # another thread forcing reference while this one forces cpu: the reference graph
        with ops.use_backend("reference"):
            cm(x)
            seen.append(ran[-1])

    with ops.use_backend("cpu"):
        t = threading.Thread(target=other)
        t.start()
        t.join()
        cm(x)
        seen.append(ran[-1])
    assert seen == ["reference", "cpu"] and graphs == ["reference", "cpu"]
    torch._dynamo.reset()
