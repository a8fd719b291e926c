"""VideoUNet: a minimal video U-Net network F(x_t, t, cond) on (B, C, T, H, W) clips, built on :mod:`fastvdm.ops`.

    x_t, renders, masks, Plücker maps, input flags --concat--> conv_in
      -> down levels [ResBlock x n (+ spatial & temporal attention)] (spatial 2x down between levels)
      -> middle [ResBlock, attention, ResBlock]                                    (= ``encode`` output)
      -> up levels [ResBlock x (n+1) on concat(skip) (+ attention)] (2x up between levels) -> norm, conv_out

- ResBlock: act(GN(x)) -> conv -> GN(h) * (1 + scale(t)) + shift(t), SiLU -> conv, + skip. Both norms are one
  fused :func:`fastvdm.ops.group_norm` call (the timestep modulation and the SiLU included).
- Attention: GN -> one fused QKV projection (B, T, S, 3, heads, D) -> :func:`fastvdm.ops.video_attention`
  on strided views of it -> output projection, residual. Spatial attention (over the h*w tokens of a frame)
  then temporal attention (over the T frames at each position, with a sinusoidal frame-index embedding).
- Convolutions are 3D with kernel (kt, 3, 3): kt = ``temporal_kernel`` (1: per-frame 2D convs; 3: frames mix
  in every ResBlock too). Down/upsampling is spatial only: T is kept.
- Conditioning (ViewCrafter-like, DESIGN.md): per frame, the noisy frame (replaced by the clean input view at
  input frames), the point-cloud render (3), its mask (1), the Plücker map (6) and an is-input flag (1):
  3 + 3 + 1 + 6 + 1 = 14 input channels. The noise level t in [0, 999] enters through a sinusoidal embedding
  and an MLP, modulating every ResBlock.

The same class is the network of the teacher, the student and the fake-score model (DMD); ``encode`` gives the
middle-block features for the discriminator head. Preconditioning (v-prediction as is, or the EDM-style posterior
around the hole-filled render) is the job of a denoiser wrapper, :mod:`fastvdm.diffusion.denoisers`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from fastvdm import ops
from fastvdm.models.conv import Conv3d
from fastvdm.models.pretrained import PretrainedMixin

COND_CHANNELS = 3 + 1 + 6 + 1  # render RGB, render mask, Plücker, is-input flag


@dataclass
class VideoUNetConfig:
    """Architecture hyper-parameters (all JSON-serializable).

    channels: width of each resolution level (level i works at H / 2^i); num_res_blocks: ResBlocks per down
    level (the up path uses one more); attention_levels: levels with spatial + temporal attention (the
    middle block always has it); head_dim: channels per attention head; groups: GroupNorm groups (divides
    every width); temporal_kernel: 1 or 3 (the conv's extent along T); emb_dim: timestep embedding width
    (default 4 * channels[0]); max_frames: frames the temporal position embedding is tabulated for; dropout:
    ResBlock dropout.

    The network is plain: ``VideoUNet(x, t, cond) -> out``. How ``out`` relates to the clip (v itself, or the
    correction of an EDM-style preconditioning around the hole-filled render) is decided by the denoiser that
    wraps it (:mod:`fastvdm.diffusion.denoisers`), not here.
    """

    channels: tuple = (32, 64, 64)
    num_res_blocks: int = 1
    attention_levels: tuple = (1, 2)
    head_dim: int = 32
    groups: int = 8
    temporal_kernel: int = 3
    emb_dim: int = 0
    in_channels: int = 3
    max_frames: int = 64
    dropout: float = 0.0

    def __post_init__(self):
        self.channels = tuple(int(c) for c in self.channels)
        self.attention_levels = tuple(int(a) for a in self.attention_levels)
        if not self.channels or any(c % self.groups for c in self.channels):
            raise ValueError(f"every width in channels={self.channels} must be divisible by groups={self.groups}")
        if any(c % self.head_dim for i, c in enumerate(self.channels) if i in self.attention_levels) or \
                self.channels[-1] % self.head_dim:
            raise ValueError(f"attention widths must be divisible by head_dim={self.head_dim}")
        if any(not 0 <= a < len(self.channels) for a in self.attention_levels):
            raise ValueError(f"attention_levels={self.attention_levels} must index channels (0..{len(self.channels) - 1})")
        if self.temporal_kernel not in (1, 3):
            raise ValueError(f"temporal_kernel must be 1 or 3, got {self.temporal_kernel}")
        if self.emb_dim <= 0:
            self.emb_dim = 4 * self.channels[0]

    @staticmethod
    def preset(name: str) -> "VideoUNetConfig":
        """``tiny`` (1.26M parameters, trains on one CPU core at 32x32) or ``base`` (~250M, one GPU, 256x256)."""
        presets = {
            "tiny": dict(channels=(32, 64, 64), num_res_blocks=1, attention_levels=(2,), head_dim=32, groups=8,
                         temporal_kernel=1),
            "base": dict(channels=(128, 256, 384, 512), num_res_blocks=2, attention_levels=(1, 2, 3), head_dim=64,
                         groups=32, temporal_kernel=3),
        }
        if name not in presets:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(presets)}")
        return VideoUNetConfig(**presets[name])

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @staticmethod
    def from_dict(d: dict) -> "VideoUNetConfig":
        known = {f.name for f in fields(VideoUNetConfig)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"VideoUNetConfig: unknown fields {sorted(unknown)} (a stored model config with a "
                             "denoiser is read by fastvdm.diffusion.denoisers.build_denoiser)")
        return VideoUNetConfig(**d)


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding (B,) -> (B, dim) float32: [cos(t f_k), sin(t f_k)], f_k = max_period^(-k/(dim/2))."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], -1)
    return F.pad(emb, (0, dim % 2))


def _conv(cin: int, cout: int, kt: int, stride: int = 1) -> nn.Conv3d:
    return Conv3d(cin, cout, (kt, 3, 3), stride=(1, stride, stride), padding=(kt // 2, 1, 1))


class GroupNorm(nn.GroupNorm):
    """nn.GroupNorm computed by the fused :func:`fastvdm.ops.group_norm` (+ optional modulation and SiLU)."""

    def forward(self, x: Tensor, scale: Tensor | None = None, shift: Tensor | None = None,
                activation: str | None = None) -> Tensor:
        return ops.group_norm(x, self.num_groups, self.weight, self.bias, self.eps, scale, shift, activation)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, emb_dim: int, groups: int, kt: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = GroupNorm(groups, cin)
        self.conv1 = _conv(cin, cout, kt)
        self.emb = nn.Linear(emb_dim, 2 * cout)
        self.norm2 = GroupNorm(groups, cout)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _conv(cout, cout, kt)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv3d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(self.norm1(x, activation="silu"))
        scale, shift = self.emb(F.silu(emb)).chunk(2, dim=1)
        h = self.norm2(h, scale.to(h.dtype), shift.to(h.dtype), activation="silu")
        return self.skip(x) + self.conv2(self.dropout(h))


class Attention(nn.Module):
    """Residual multi-head attention over the spatial or temporal axis of (B, C, T, H, W)."""

    def __init__(self, channels: int, head_dim: int, groups: int, axis: str, max_frames: int = 64):
        super().__init__()
        self.axis, self.heads, self.head_dim = axis, channels // head_dim, head_dim
        self.norm = GroupNorm(groups, channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)
        if axis == "temporal":
            pos = timestep_embedding(torch.arange(max_frames).float(), channels, max_period=max_frames * 4.0)
            self.register_buffer("frame_pos", pos, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        B, C, T, H, W = x.shape
        h = self.norm(x).permute(0, 2, 3, 4, 1).reshape(B, T, H * W, C)  # tokens (B, T, S, C)
        if self.axis == "temporal":
            if T > self.frame_pos.shape[0]:
                raise ValueError(f"clip of {T} frames exceeds max_frames={self.frame_pos.shape[0]}")
            h = h + self.frame_pos[:T, None, :].to(h.dtype)
        qkv = self.qkv(h).view(B, T, H * W, 3, self.heads, self.head_dim)
        o = ops.video_attention(qkv[:, :, :, 0], qkv[:, :, :, 1], qkv[:, :, :, 2], self.axis)
        o = self.proj(o.reshape(B, T, H * W, C))
        return x + o.reshape(B, T, H, W, C).permute(0, 4, 1, 2, 3)


class Block(nn.Module):
    """A ResBlock optionally followed by spatial and temporal attention. One FSDP2 unit when the training loop
    shards the model (its parameters are gathered for its forward and backward only)."""

    fsdp_unit = True

    def __init__(self, cin: int, cout: int, cfg: VideoUNetConfig, attention: bool):
        super().__init__()
        self.res = ResBlock(cin, cout, cfg.emb_dim, cfg.groups, cfg.temporal_kernel, cfg.dropout)
        self.attn = nn.ModuleList(
            [Attention(cout, cfg.head_dim, cfg.groups, axis, cfg.max_frames) for axis in ("spatial", "temporal")]
        ) if attention else nn.ModuleList()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        x = self.res(x, emb)
        for a in self.attn:
            x = a(x)
        return x


class Downsample(nn.Module):
    def __init__(self, c: int, kt: int):
        super().__init__()
        self.conv = _conv(c, c, kt, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, c: int, kt: int):
        super().__init__()
        self.conv = _conv(c, c, kt)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=(1, 2, 2), mode="nearest"))


class VideoUNet(PretrainedMixin, nn.Module):
    """Video U-Net network: ``net(x_t, t, cond) -> out`` (see the module docstring); ``out`` is v when the
    network is used bare (``VDenoiser``), the preconditioned correction inside a ``PosteriorDenoiser``.

    x_t: (B, 3, T, H, W) noisy clip (or what a denoiser feeds in its place); t: (B,) float timesteps in [0, 999]; cond: dict of
    "cond_rgb" (B, 3, T, H, W) render in [-1, 1], "cond_mask" (B, 1, T, H, W) in {0, 1},
    "plucker" (B, 6, T, H, W), "is_input" (B, T) bool, "input_frames" (B, 3, T, H, W) clean frames (read only
    where is_input). H and W must be divisible by 2^(levels - 1). Returns (B, 3, T, H, W) in x_t's dtype.
    ``save_pretrained(folder)`` / ``VideoUNet.from_pretrained(folder)``: :mod:`fastvdm.models.pretrained`.
    """

    def __init__(self, config: VideoUNetConfig):
        super().__init__()
        self.config = cfg = config
        ch, kt = cfg.channels, cfg.temporal_kernel
        self.time_mlp = nn.Sequential(nn.Linear(ch[0], cfg.emb_dim), nn.SiLU(), nn.Linear(cfg.emb_dim, cfg.emb_dim))
        self.conv_in = _conv(cfg.in_channels + COND_CHANNELS, ch[0], kt)
        self.down = nn.ModuleList()
        skips = [ch[0]]
        c = ch[0]
        for i, width in enumerate(ch):
            level = nn.ModuleList()
            for _ in range(cfg.num_res_blocks):
                level.append(Block(c, width, cfg, i in cfg.attention_levels))
                c = width
                skips.append(c)
            if i + 1 < len(ch):
                level.append(Downsample(c, kt))
                skips.append(c)
            self.down.append(level)
        self.mid = nn.ModuleList([Block(c, c, cfg, True), Block(c, c, cfg, False)])
        self.up = nn.ModuleList()
        for i, width in reversed(list(enumerate(ch))):
            level = nn.ModuleList()
            for _ in range(cfg.num_res_blocks + 1):
                level.append(Block(c + skips.pop(), width, cfg, i in cfg.attention_levels))
                c = width
            if i > 0:
                level.append(Upsample(c, kt))
            self.up.append(level)
        self.norm_out = GroupNorm(cfg.groups, c)
        self.conv_out = _conv(c, cfg.in_channels, kt)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    @property
    def feature_channels(self) -> int:
        """Channels of ``encode``'s output."""
        return self.config.channels[-1]

    def _inputs(self, x_t: Tensor, t: Tensor, cond: dict) -> tuple[Tensor, Tensor]:
        B, C, T, H, W = x_t.shape
        down = 2 ** (len(self.config.channels) - 1)
        if C != self.config.in_channels or H % down or W % down:
            raise ValueError(f"x_t must be (B, {self.config.in_channels}, T, H, W) with H, W divisible by {down}, "
                             f"got {tuple(x_t.shape)}")
        missing = {"cond_rgb", "cond_mask", "plucker", "is_input", "input_frames"} - set(cond)
        if missing:
            raise ValueError(f"cond is missing {sorted(missing)}")
        t = torch.as_tensor(t, device=x_t.device)
        if t.dim() == 0:
            t = t.expand(B)
        if t.shape != (B,):
            raise ValueError(f"t must have shape (B,) = ({B},), got {tuple(t.shape)}")
        is_input = cond["is_input"].to(x_t.device).bool()
        if is_input.shape != (B, T):
            raise ValueError(f"cond['is_input'] must have shape (B, T) = ({B}, {T}), got {tuple(is_input.shape)}")
        flag = is_input[:, None, :, None, None]
        dt = x_t.dtype
        x = torch.where(flag, cond["input_frames"].to(dt), x_t)
        x = torch.cat([x, cond["cond_rgb"].to(dt), cond["cond_mask"].to(dt), cond["plucker"].to(dt),
                       flag.to(dt).expand(B, 1, T, H, W)], 1)
        emb = self.time_mlp(timestep_embedding(t, self.config.channels[0]).to(dt))
        return x, emb

    def _down_mid(self, x: Tensor, emb: Tensor) -> tuple[Tensor, list[Tensor]]:
        h = self.conv_in(x)
        hs = [h]
        for level in self.down:
            for m in level:
                h = m(h, emb) if isinstance(m, Block) else m(h)
                hs.append(h)
        for m in self.mid:
            h = m(h, emb)
        return h, hs

    def encode(self, x_t: Tensor, t: Tensor, cond: dict, multiscale: bool = False) -> Tensor | list[Tensor]:
        """Features after the down blocks and the middle block: (B, channels[-1], T, H / 2^L, W / 2^L).

        multiscale: instead, the list of each down level's last features before its downsampling,
        (B, channels[i], T, H / 2^i, W / 2^i) for i = 0..L, followed by the middle block's output."""
        x, emb = self._inputs(x_t, t, cond)
        h, hs = self._down_mid(x, emb)
        if not multiscale:
            return h
        per_level, i = [], 1  # hs = [conv_in, level 0 outputs..., level 1 outputs..., ...]
        for level in self.down:
            blocks = sum(isinstance(m, Block) for m in level)
            per_level.append(hs[i + blocks - 1])
            i += len(level)
        return per_level + [h]

    @property
    def multiscale_channels(self) -> list[int]:
        """Channels of ``encode(..., multiscale=True)``'s features."""
        return list(self.config.channels) + [self.config.channels[-1]]

    def forward(self, x_t: Tensor, t: Tensor, cond: dict) -> Tensor:
        x, emb = self._inputs(x_t, t, cond)
        h, hs = self._down_mid(x, emb)
        for level in self.up:
            for m in level:
                h = m(torch.cat([h, hs.pop()], 1), emb) if isinstance(m, Block) else m(h)
        return self.conv_out(self.norm_out(h, activation="silu"))
