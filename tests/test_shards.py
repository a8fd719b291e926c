"""Sharded clip caches read memory-mapped, and batches streamed by DataLoader workers: the same clips and the
same per-rank batches as the in-memory paths, for any number of ranks."""

import numpy as np
import pytest
import torch

from fastvdm.data.dataset import CachedClips, ClipDataset, cache_clips, cache_shards, open_clips
from fastvdm.train import DatasetBatches


@pytest.fixture(scope="module")
def clips():
    return ClipDataset("train", num_frames=3, size=8, num_clips=7, seed=3)


def _same(a: dict, b: dict):
    assert sorted(a) == sorted(b)
    for k in a:
        if isinstance(a[k], torch.Tensor):
            assert torch.equal(a[k], b[k]), k
        else:
            assert a[k] == b[k], k


def test_shards_by_rank_cover_the_dataset_and_read_back_exactly(clips, tmp_path):
    folder = tmp_path / "cache"
    mine0 = cache_shards(clips, str(folder), clips_per_shard=3, rank=0, world_size=2, progress=False)
    mine1 = cache_shards(clips, str(folder), clips_per_shard=3, rank=1, world_size=2, progress=False)
    assert [p.rsplit("/", 1)[1] for p in mine0] == ["clips-00000.safetensors", "clips-00002.safetensors"]
    assert [p.rsplit("/", 1)[1] for p in mine1] == ["clips-00001.safetensors"]
    assert not list(folder.glob("*.tmp-*"))
    data = open_clips(str(folder))
    assert len(data) == len(clips) == 7
    single = tmp_path / "one.safetensors"
    cache_clips(clips, str(single), progress=False)
    one = CachedClips(str(single))
    for i in range(len(clips)):
        _same(data[i], one[i])
    # memory-mapped: the cache's arrays are views of the file, not copies in memory
    assert all(isinstance(v.base, np.memmap) or isinstance(v, np.memmap) for v in one._data.values())
    with pytest.raises(IndexError):
        one[7]


def test_open_clips_with_a_cache_folder_writes_shards_once(tmp_path, monkeypatch):
    folder = tmp_path / "shards"
    a = open_clips(frames=3, size=8, clips=5, seed=1, cache=str(folder))
    written = sorted(p.stat().st_mtime_ns for p in folder.glob("*.safetensors"))
    b = open_clips(frames=3, size=8, clips=5, seed=1, cache=str(folder))  # reused, not rewritten
    assert sorted(p.stat().st_mtime_ns for p in folder.glob("*.safetensors")) == written
    assert len(a) == len(b) == 5
    _same(a[4], b[4])


@pytest.mark.parametrize("world", [1, 2])
def test_dataloader_workers_give_the_same_batches(clips, tmp_path, world):
    path = tmp_path / "c.safetensors"
    cache_clips(clips, str(path), progress=False)
    data = CachedClips(str(path))
    plain = DatasetBatches(data, batch_size=4, seed=5)
    streamed = DatasetBatches(data, batch_size=4, seed=5, workers=2)
    for rank in range(world):
        for step in [0, 1, 2, 3, 7, 8]:  # consecutive steps stream; 7 restarts the stream (a resume)
            _same(streamed(step, rank, world), plain(step, rank, world))
