"""Multi-view data: cameras and trajectories, procedural scenes, point-cloud warping, clips, scene folders.

Modules (imported on demand, so that ``import fastvdm.data`` stays cheap):

- ``fastvdm.data.cameras``: the :class:`~fastvdm.data.cameras.Camera` type (OpenCV convention), nerfstudio
  ``transforms.json`` conversion, trajectories, Plücker rays.
- ``fastvdm.data.scenes``: seeded procedural rooms with textured primitives and a CPU ray-caster (RGB + depth).
- ``fastvdm.data.warp``: unproject RGB-D views to points; z-buffered point rendering into target cameras (the
  conditioning splat, and the full-resolution surfel splat whose seen mask marks only covered pixels).
- ``fastvdm.data.stereo``: depth for posed photos without depth (rectification, SGBM, left-right check).
- ``fastvdm.data.colmap``: COLMAP models (text or binary, via pycolmap) as a scene.
- ``fastvdm.data.examples``: the Motorcycle stereo photo pair with ground-truth depth, as views or a capture folder.
- ``fastvdm.data.dataset``: ``ClipDataset`` (training clips, fixed held-out test split), ``clip_from_views``,
  ``cache_clips``.
- ``fastvdm.data.scene_io``: read/write a nerfstudio-style scene folder (images, depth, point cloud);
  ``read_capture`` (nerfstudio with target-only frames, or COLMAP).
"""


def open_clips(*args, **kwargs):
    """Training clips from a clip cache (file or folder) or procedural scenes: see
    :func:`fastvdm.data.dataset.open_clips` (imported on first use)."""
    from fastvdm.data.dataset import open_clips as _open_clips

    return _open_clips(*args, **kwargs)
