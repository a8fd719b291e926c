"""Research code that the shipped models and the documented recipes do not use (not installed with fastvdm).

Run from the source checkout (its root on ``sys.path``: ``python -m experiments.NAME`` or ``pytest experiments``):
- ``disc_heads``: discriminator heads on every encoder scale, hole-weighted pooling, a pixel-branch head on x_t
  (registered as the head kind "multiscale"); ``distill_disc``: ``fastvdm train distill`` with them;
  ``distill_tiny_px.sh``: the runs of bench/RESULTS.md that used them;
- ``disc_probe``: how separable the student's clips are from real ones (pixel statistics, encoder features);
- ``distill_toy2d``: the FVGen ablation on the 2-D ring toy (toys in tests/toys.py).
"""
