"""Writing images and videos of clips: PNG frames, a PNG grid, and an mp4 (or a GIF where no encoder exists).

Clips are (3, T, H, W) tensors in [-1, 1]. Every file is written to a temporary name and renamed, so a crash
never leaves a half-written image or video.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np


def to_uint8(x) -> np.ndarray:
    """(3, ..., H, W) in [-1, 1] -> uint8 array (..., H, W, 3)."""
    import torch

    x = ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.movedim(0, -1).numpy()


def _upscale(img: np.ndarray, scale: int) -> np.ndarray:
    return img.repeat(scale, 0).repeat(scale, 1) if scale > 1 else img


def save_png(path: str, img: np.ndarray, scale: int = 1) -> str:
    """uint8 (H, W, 3) -> PNG (nearest-neighbour upscaled by ``scale``), atomically; returns path."""
    from PIL import Image

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    Image.fromarray(_upscale(img, scale)).save(path + ".tmp.png")
    os.replace(path + ".tmp.png", path)
    return path


def clip_strip(clip) -> np.ndarray:
    """(3, T, H, W) in [-1, 1] -> its T frames side by side, uint8 (H, T*W, 3)."""
    return np.concatenate(list(to_uint8(clip)), 1)


def label_rows(img: np.ndarray, labels: Sequence[str], width: int = 120) -> np.ndarray:
    """uint8 (H, W, 3) made of len(labels) equal-height rows -> the same with a white margin of ``width`` pixels
    on the left holding each row's label (PIL's default font), vertically centred on its row."""
    from PIL import Image, ImageDraw

    h, w = img.shape[:2]
    canvas = Image.new("RGB", (w + width, h), (255, 255, 255))
    canvas.paste(Image.fromarray(img), (width, 0))
    draw = ImageDraw.Draw(canvas)
    row_h = h / max(len(labels), 1)
    for i, text in enumerate(labels):
        draw.text((4, int((i + 0.5) * row_h) - 6), str(text), fill=(0, 0, 0))
    return np.asarray(canvas)


def save_grid(path: str, rows: Sequence, scale: int = 4, labels: Sequence[str] | None = None) -> str:
    """One row per clip (each (3, T, H, W) in [-1, 1], same shape), frames left to right; ``labels``: one name per
    row, written in a margin on the left (after upscaling, so the text stays legible); returns path."""
    img = _upscale(np.concatenate([clip_strip(r) for r in rows], 0), scale)
    if labels is not None:
        if len(labels) != len(rows):
            raise ValueError(f"save_grid: {len(rows)} rows but {len(labels)} labels")
        img = label_rows(img, labels)
    return save_png(path, img)


def _save_gif(path: str, frames: Sequence[np.ndarray], fps: int) -> str:
    from PIL import Image

    imgs = [Image.fromarray(f) for f in frames]
    imgs[0].save(path + ".tmp.gif", save_all=True, append_images=imgs[1:], duration=round(1000 / fps), loop=0)
    os.replace(path + ".tmp.gif", path)
    return path


def save_video(stem: str, frames: Sequence[np.ndarray], fps: int = 8, scale: int = 4, gif_too: bool = False) -> str:
    """uint8 (H, W, 3) frames -> ``stem.mp4`` when imageio-ffmpeg is installed, else ``stem.gif``; returns path.
    gif_too: write ``stem.gif`` beside the mp4 as well (a fallback for viewers without H.264)."""
    big = [_upscale(f, scale) for f in frames]
    os.makedirs(os.path.dirname(os.path.abspath(stem)), exist_ok=True)
    try:
        import imageio.v2 as imageio
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        return _save_gif(stem + ".gif", big, fps)
    if gif_too:
        _save_gif(stem + ".gif", big, fps)
    path = stem + ".mp4"
    imageio.mimsave(path + ".tmp.mp4", big, fps=fps)
    os.replace(path + ".tmp.mp4", path)
    return path


def write_clip_outputs(out: str, generated, cond, gt, scale: int = 4) -> list[str]:
    """OUT/frames/frame_XXXXX.png, OUT/grid.png (rows: cond / generated / gt) and OUT/video.mp4 (or .gif).
    generated, cond, gt: (3, T, H, W) in [-1, 1] (gt may be None). Returns the paths, video last."""
    gen = to_uint8(generated)  # (T, H, W, 3)
    paths = [save_png(os.path.join(out, "frames", f"frame_{i:05d}.png"), f) for i, f in enumerate(gen)]
    paths.append(save_grid(os.path.join(out, "grid.png"), [cond, generated] + ([gt] if gt is not None else []), scale))
    paths.append(save_video(os.path.join(out, "video"), list(gen), scale=scale))
    return paths


__all__ = ["to_uint8", "save_png", "clip_strip", "save_grid", "save_video", "write_clip_outputs"]
