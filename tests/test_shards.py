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


def test_a_cache_travels_to_workers_by_path_not_by_copy(clips, tmp_path):
    import pickle

    path = tmp_path / "c.safetensors"
    cache_clips(clips, str(path), progress=False)
    data = CachedClips(str(path))
    blob = pickle.dumps(data)  # what a spawn/forkserver DataLoader worker receives
    assert len(blob) < 500 < path.stat().st_size
    back = pickle.loads(blob)
    assert all(isinstance(v.base, np.memmap) for v in back._data.values())
    _same(back[6], data[6])


RANKS_SCRIPT = r'''
import json, os, sys
import numpy as np
import torch
import torch.distributed as dist
from fastvdm.data import open_clips
from fastvdm.train import DatasetBatches

class Probe(torch.utils.data.Dataset):
    """The clips, plus where each was read: the process, and whether the arrays there are file mappings."""
    def __init__(self, data):
        self.data = data
    def __len__(self):
        return len(self.data)
    def __getitem__(self, i):
        item = dict(self.data[i])
        parts = getattr(self.data, "datasets", [self.data])
        item["pid"] = os.getpid()
        item["mapped"] = all(isinstance(v.base, np.memmap) for d in parts for v in d._data.values())
        return item

torch.set_num_threads(1)
dist.init_process_group("gloo")
out, steps = sys.argv[1], int(sys.argv[2])
data = open_clips(frames=3, size=8, clips=7, seed=1, cache=os.path.join(out, "cache"), clips_per_shard=3)
batches = DatasetBatches(Probe(data), batch_size=2, seed=5, workers=1)
rows = []
for step in range(steps):
    b = batches(step, dist.get_rank(), dist.get_world_size())
    rows += [[step, int(i), int(s), float(f.double().sum()), int(p), bool(m)] for i, s, f, p, m in
             zip(b["sample_id"], b["scene_seed"], b["frames"], b["pid"], b["mapped"])]
with open(os.path.join(out, f"rank{dist.get_rank()}.json"), "w") as f:
    json.dump({"pid": os.getpid(), "rows": rows}, f)
dist.destroy_process_group()
'''


def test_two_ranks_write_the_shards_and_stream_disjoint_parts_covering_each_epoch(tmp_path):
    import json
    import os
    import subprocess
    import sys

    script = tmp_path / "ranks.py"
    script.write_text(RANKS_SCRIPT)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(script),
           str(tmp_path), "7"]
    proc = subprocess.run(cmd, env=env, capture_output=True, timeout=240)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    shards = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert shards == [f"clips-0000{i}.safetensors" for i in range(3)]  # 7 clips, 3 a shard; no temp files left
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for r in ranks:  # read in a DataLoader worker, from memory-mapped shards
        assert all(row[4] != r["pid"] and row[5] for row in r["rows"])
    rows = [row for r in ranks for row in r["rows"]]
    assert sorted(row[1] for row in rows) == list(range(14))  # 7 steps of 2: each position exactly once
    for step in range(7):  # one sample a rank per step, rank 0 the first
        assert [[row[1] for row in r["rows"] if row[0] == step] for r in ranks] == [[2 * step], [2 * step + 1]]
    ref = ClipDataset("train", num_frames=3, size=8, num_clips=7, seed=1)
    truth = {ref[i]["scene_seed"]: float(ref[i]["frames"].double().sum()) for i in range(7)}
    assert len(truth) == 7
    by_pos = sorted(rows, key=lambda row: row[1])
    for epoch in range(2):  # the two ranks together read every clip exactly once per epoch
        seen = [row[2] for row in by_pos[7 * epoch:7 * epoch + 7]]
        assert sorted(seen) == sorted(truth)
    for row in rows:  # and read it right (cached as uint8: the exact quantized clip)
        assert row[3] == pytest.approx(truth[row[2]], abs=1e-6)
