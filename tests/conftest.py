"""pytest setup: Triton kernels run under the interpreter on CPU tensors when there is no GPU.

TRITON_INTERPRET must be set before triton is first imported, hence here, at collection start. Tests marked
``gpu`` are skipped cleanly where CUDA is unavailable.
"""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if item.get_closest_marker("gpu") is not None:  # not `"gpu" in item.keywords`: that matches a folder named gpu
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed_and_auto_backend(monkeypatch):
    """Each test starts from a fixed seed and automatic backend selection."""
    monkeypatch.delenv("FASTVDM_BACKEND", raising=False)
    torch.manual_seed(0)
