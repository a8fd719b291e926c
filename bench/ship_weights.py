"""Export the trained tiny teacher and student into fastvdm/weights/ (the models the package ships).

    python bench/ship_weights.py --teacher runs/teacher_tiny --student runs/distill_tiny/gan_skl \
        --teacher-command "bash bench/train_teacher_tiny.sh" --student-command "bash bench/distill_tiny.sh ..."

Each model is written with :func:`fastvdm.train.export_model` (EMA weights, model config, the run config with
frame count and size, the step) as ``fastvdm/weights/{teacher,student}_tiny.safetensors``; MANIFEST.json beside
them records, per model, the source checkpoint, step, seed, the command that trained it, its log, the size and
the SHA-256 of the file (checked by tests/test_pipeline.py).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main() -> None:
    from fastvdm.pipeline import WEIGHTS_DIR
    from fastvdm.train import export_model, read_checkpoint, resolve_checkpoint
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
        dst = os.path.join(WEIGHTS_DIR, f"{name}.safetensors")
        info = {"command": cmd, "log": log, "source": os.path.relpath(path, ROOT)}
        export_model(path, dst, name="unet", ema=True, info=info)
        with open(dst, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        manifest["models"][name] = {**info, "step": meta.get("step"), "seed": meta.get("run", {}).get("seed"),
                                    "run_config": meta.get("run", {}).get("config", {}),
                                    "bytes": os.path.getsize(dst), "sha256": digest}
        print(f"{name}: step {meta.get('step')} from {path} -> {dst} ({os.path.getsize(dst) / 2 ** 20:.1f} MiB)")
    atomic_write_text(os.path.join(WEIGHTS_DIR, "MANIFEST.json"), json.dumps(manifest, indent=2) + "\n")


if __name__ == "__main__":
    main()
