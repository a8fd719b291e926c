"""Downstream 3D reconstruction from sparse (and generated) views: a voxel-grid radiance field on the CPU.

- ``fastvdm.recon.grid``: :class:`~fastvdm.recon.grid.VoxelGrid` (density + colour grid, trilinear
  interpolation, volume rendering with alpha compositing; differentiable).
- ``fastvdm.recon.train``: ``fit`` a grid to posed images (+ depth, + masks), ``evaluate`` PSNR / SSIM.
- ``fastvdm.recon.known``: a grid built directly from a procedural scene (the renderer's oracle test).
- ``fastvdm.recon.generators``: pluggable view generators (folders of generated views, raw warps, oracle).
- ``fastvdm.recon.evaluate``: the held-out benchmark behind ``fastvdm eval-recon``.
"""
