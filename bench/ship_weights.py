"""Export the trained tiny teacher and student into fastvdm/weights/ (the models the package ships).

    python bench/ship_weights.py --teacher runs/teacher_tiny --student runs/distill_tiny/gan_skl \
        --teacher-command "bash bench/train_teacher_tiny.sh" --student-command "bash bench/distill_tiny.sh ..."

Each model is written with :func:`fastvdm.pipeline.export_pretrained` (EMA weights; config.json with the
architecture, parameterization, schedule, kind, frame count and size, sampler, provenance) as the pretrained
folder ``fastvdm/weights/{teacher,student}_tiny/``; MANIFEST.json beside them records, per model, the source
checkpoint, step, seed, the command that trained it, its log, and the size and SHA-256 of each file of the
folder (checked by tests/test_pipeline.py). ``--convert-files`` turns the older single-file exports
(``{teacher,student}_tiny.safetensors``, :func:`fastvdm.train.export_model`) into folders, weights unchanged.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def folder_files(folder: str) -> dict:
    """{file name: {"bytes", "sha256"}} of a pretrained folder."""
    out = {}
    for f in sorted(os.listdir(folder)):
        with open(os.path.join(folder, f), "rb") as fh:
            out[f] = {"bytes": os.path.getsize(os.path.join(folder, f)), "sha256": hashlib.sha256(fh.read()).hexdigest()}
    return out


def convert_files() -> None:
    """Single-file exports in fastvdm/weights/ -> pretrained folders (same weights); MANIFEST entries updated."""
    from fastvdm.pipeline import WEIGHTS_DIR, export_pretrained
    from fastvdm.train import read_checkpoint
    from fastvdm.train.checkpoint import atomic_write_text

    path = os.path.join(WEIGHTS_DIR, "MANIFEST.json")
    with open(path) as f:
        manifest = json.load(f)
    for name, entry in manifest["models"].items():
        src = os.path.join(WEIGHTS_DIR, f"{name}.safetensors")
        _, meta = read_checkpoint(src)
        info = meta.get("info", {})
        dst = export_pretrained(src, os.path.join(WEIGHTS_DIR, name), name.split("_")[0], ema=True, overwrite=True,
                                provenance={**info, "step": meta.get("step"), "weights": meta.get("weights"),
                                            "converted_from": f"{name}.safetensors sha256 {entry.get('sha256')}"})
        entry.pop("bytes", None)
        entry.pop("sha256", None)
        entry["files"] = folder_files(dst)
        os.remove(src)
        print(f"{name}: {src} -> {dst}")
    atomic_write_text(path, json.dumps(manifest, indent=2) + "\n")


def main() -> None:
    if "--convert-files" in sys.argv[1:]:
        return convert_files()
    from fastvdm.pipeline import WEIGHTS_DIR, export_pretrained
    from fastvdm.train import read_checkpoint, resolve_checkpoint
    from fastvdm.train.checkpoint import atomic_write_text

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", required=True, help="teacher run folder or checkpoint")
    p.add_argument("--student", required=True, help="student (distillation) run folder or checkpoint")
    p.add_argument("--teacher-command", required=True)
    p.add_argument("--student-command", required=True)
    p.add_argument("--teacher-log", default="bench/logs/teacher_tiny.log")
    p.add_argument("--student-log", default="bench/logs/distill_tiny_gan_skl.log")
    p.add_argument("--name", default="tiny")
    args = p.parse_args()
    os.makedirs(WEIGHTS_DIR, exist_ok=True)
    manifest = {"note": "Tiny models trained on this project's procedural scenes (fastvdm.data) by the commands "
                        "below, on a 2-core CPU; see bench/RESULTS.md for their evaluation.", "models": {}}
    for role, src, cmd, log in (("teacher", args.teacher, args.teacher_command, args.teacher_log),
                                ("student", args.student, args.student_command, args.student_log)):
        path = resolve_checkpoint(src)
        _, meta = read_checkpoint(path)
        name = f"{role}_{args.name}"
        dst = os.path.join(WEIGHTS_DIR, name)
        info = {"command": cmd, "log": log, "source": os.path.relpath(path, ROOT)}
        export_pretrained(path, dst, role, name="unet", ema=True, overwrite=True, provenance=info)
        files = folder_files(dst)
        manifest["models"][name] = {**info, "step": meta.get("step"), "seed": meta.get("run", {}).get("seed"),
                                    "run_config": meta.get("run", {}).get("config", {}), "files": files}
        size = sum(f["bytes"] for f in files.values())
        print(f"{name}: step {meta.get('step')} from {path} -> {dst}/ ({size / 2 ** 20:.1f} MiB)")
    atomic_write_text(os.path.join(WEIGHTS_DIR, "MANIFEST.json"), json.dumps(manifest, indent=2) + "\n")


if __name__ == "__main__":
    main()
