"""One-call patching of diffusers' video U-Nets onto fastvdm's kernels (``pip install fastvdm[diffusers]``).

    from fastvdm.integrations.diffusers import apply_fastvdm, remove_fastvdm
    report = apply_fastvdm(unet)      # in place; print(report) lists what was patched and what was left
    remove_fastvdm(unet)              # restores the stock modules exactly

Supported models (anything else raises :class:`UnsupportedModelError`, nothing is patched):
``UNetSpatioTemporalConditionModel`` (Stable Video Diffusion), ``UNet3DConditionModel`` (ModelScope,
Zeroscope), ``UNetMotionModel`` (AnimateDiff), ``I2VGenXLUNet`` (I2VGen-XL).

What changes (``group_norm=True``), each a single ``fastvdm.ops.group_norm`` call instead of 2-4 PyTorch ops:
- ``ResnetBlock2D``: norm1 -> SiLU; norm2 with the time embedding: GroupNorm(h + temb) -> SiLU in "default"
  mode (the (N, C) embedding is the op's ``input_bias``), GroupNorm -> * (1 + scale) + shift -> SiLU in
  "scale_shift" mode (``scale``/``shift``);
- ``TemporalResnetBlock`` (SVD): norm1 -> SiLU, norm2 -> SiLU (the per-frame embedding, (B, C, T), is not a
  per-(B, C) bias, so its addition stays a PyTorch add);
- ``TemporalConvLayer`` (ModelScope, I2VGen-XL): the four GroupNorm -> SiLU pairs;
- the U-Net's ``conv_norm_out`` -> ``conv_act`` pair;
- every other ``nn.GroupNorm`` (the transformers' input norms): ``group_norm`` without activation.
With ``attention=True``, self-attention modules (``Attention`` without cross-attention, with diffusers' stock
processor) get :class:`FastvdmAttnProcessor`: spatial (tokens of a frame) or temporal (frames of a position)
attention by ``fastvdm.ops.video_attention`` on zero-copy (N, 1, L, heads, D) / (N, L, 1, heads, D) views of
the q, k, v projections, and an output that is already the (N, L, heads * D) input of ``to_out`` (diffusers'
processor makes transposed views for SDPA and copies the result back with a transpose + reshape).
For Stable Video Diffusion, whose every cross-attention attends to one image embedding, the cross-attentions
get :class:`SingleKeyCrossAttnProcessor` (a softmax over one key is 1: out = to_out(to_v(c)) per sample, broadcast;
exact, and the q/k projections and SDPA over all tokens are skipped). Other cross-attention (text tokens),
attention with masks, spatial/group norms, q/k norms or added KV projections, and custom
(e.g. LoRA, IP-Adapter) processors stay on diffusers' path; a patched processor falls back to the stock one for
any call it does not cover (encoder states or a mask passed at call time).

Numerics: the same math as the stock modules in fp32 statistics (see DESIGN.md tolerances: forward and
parameter gradients agree with the stock model to ~1e-4 relative in fp32), not bit-identical. ``remove_fastvdm``
restores the original ``forward`` methods, processors and modules, so the stock model's outputs are bit-identical
again. Backends: whatever ``fastvdm.ops`` selects (``with fastvdm.ops.use_backend("cpu"):`` forces one).
"""

from __future__ import annotations

import types
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch import Tensor, nn

try:
    import diffusers
    from diffusers.models.attention_processor import Attention, AttnProcessor, AttnProcessor2_0
    from diffusers.models.attention import TemporalBasicTransformerBlock
    from diffusers.models.resnet import ResnetBlock2D, TemporalConvLayer, TemporalResnetBlock
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "fastvdm.integrations.diffusers needs diffusers: pip install 'fastvdm[diffusers]' (or pip install diffusers)"
    ) from e

from fastvdm import ops

__all__ = [
    "apply_fastvdm",
    "remove_fastvdm",
    "is_patched",
    "PatchReport",
    "FastvdmAttnProcessor",
    "SingleKeyCrossAttnProcessor",
    "UnsupportedModelError",
    "SUPPORTED_MODELS",
]

SUPPORTED_MODELS = (
    "UNetSpatioTemporalConditionModel",
    "UNet3DConditionModel",
    "UNetMotionModel",
    "I2VGenXLUNet",
)
# Transformer blocks whose self-attention runs over the frames of each position (diffusers reshapes the
# hidden states to (batch * positions, frames, C) before them).
_TEMPORAL_CONTAINERS = (
    "TemporalBasicTransformerBlock",
    "TransformerTemporalModel",
    "AnimateDiffTransformer3D",
    "I2VGenXLTransformerTemporalEncoder",
)
_STOCK_PROCESSORS = (AttnProcessor2_0, AttnProcessor)
_STATE = "_fastvdm_patch_state"


class UnsupportedModelError(TypeError):
    """apply_fastvdm was given a model it does not know how to patch."""


@dataclass
class PatchReport:
    """What :func:`apply_fastvdm` did. patched / left: lists of (module path, what or why)."""

    model: str
    patched: list = field(default_factory=list)
    left: list = field(default_factory=list)

    def count(self, prefix: str) -> int:
        """Number of patched entries whose description starts with ``prefix``."""
        return sum(1 for _, what in self.patched if what.startswith(prefix))

    def summary(self) -> dict:
        """{description: count} of the patched entries, and of the reasons modules were left."""
        out: dict = {}
        for _, what in self.patched:
            out[what] = out.get(what, 0) + 1
        for _, why in self.left:
            key = f"left: {why}"
            out[key] = out.get(key, 0) + 1
        return out

    def __str__(self) -> str:
        lines = [f"fastvdm patch of {self.model}: {len(self.patched)} modules patched, {len(self.left)} left"]
        for what, n in self.summary().items():
            lines.append(f"  {n:4d} x {what}")
        return "\n".join(lines)


# ================================================================================================ fused ops
def _gn(norm: nn.GroupNorm, x: Tensor, activation: Optional[str] = None, scale=None, shift=None, input_bias=None):
    """``norm`` (an nn.GroupNorm) + modulation + activation as one fastvdm group_norm call."""
    return ops.group_norm(
        x, norm.num_groups, norm.weight, norm.bias, norm.eps, scale, shift, activation, input_bias
    )


def _per_sample(t: Tensor, n: int) -> Tensor:
    """A (B, C) embedding for n samples (diffusers broadcasts a batch-1 embedding)."""
    return t if t.shape[0] == n else t.expand(n, -1)


def _resnet2d_forward(self: ResnetBlock2D, input_tensor: Tensor, temb: Optional[Tensor], *args, **kwargs) -> Tensor:
    """ResnetBlock2D.forward with fused norm1 + SiLU and norm2 + time embedding + SiLU."""
    hidden_states = _gn(self.norm1, input_tensor, "silu")
    if self.upsample is not None:
        if hidden_states.shape[0] >= 64:
            input_tensor = input_tensor.contiguous()
            hidden_states = hidden_states.contiguous()
        input_tensor = self.upsample(input_tensor)
        hidden_states = self.upsample(hidden_states)
    elif self.downsample is not None:
        input_tensor = self.downsample(input_tensor)
        hidden_states = self.downsample(hidden_states)
    hidden_states = self.conv1(hidden_states)

    if self.time_emb_proj is not None and temb is not None:
        if not self.skip_time_act:
            temb = self.nonlinearity(temb)
        temb = self.time_emb_proj(temb)
    n = hidden_states.shape[0]
    if self.time_embedding_norm == "default":
        bias = None if temb is None else _per_sample(temb, n)
        hidden_states = _gn(self.norm2, hidden_states, "silu", input_bias=bias)
    else:  # "scale_shift" (checked when patching)
        if temb is None:
            raise ValueError(f" `temb` should not be None when `time_embedding_norm` is {self.time_embedding_norm}")
        time_scale, time_shift = torch.chunk(_per_sample(temb, n), 2, dim=1)
        hidden_states = _gn(self.norm2, hidden_states, "silu", scale=time_scale, shift=time_shift)

    hidden_states = self.dropout(hidden_states)
    hidden_states = self.conv2(hidden_states)
    if self.conv_shortcut is not None:
        if self.training:
            input_tensor = input_tensor.contiguous()
        input_tensor = self.conv_shortcut(input_tensor)
    return (input_tensor + hidden_states) / self.output_scale_factor


def _temporal_resnet_forward(self: TemporalResnetBlock, input_tensor: Tensor, temb: Optional[Tensor]) -> Tensor:
    """TemporalResnetBlock.forward (x: (B, C, T, H, W)) with fused norm1 + SiLU and norm2 + SiLU."""
    hidden_states = _gn(self.norm1, input_tensor, "silu")
    hidden_states = self.conv1(hidden_states)
    if self.time_emb_proj is not None:
        temb = self.nonlinearity(temb)
        temb = self.time_emb_proj(temb)[:, :, :, None, None]
        hidden_states = hidden_states + temb.permute(0, 2, 1, 3, 4)  # per frame: not a per-(B, C) bias
    hidden_states = _gn(self.norm2, hidden_states, "silu")
    hidden_states = self.dropout(hidden_states)
    hidden_states = self.conv2(hidden_states)
    if self.conv_shortcut is not None:
        input_tensor = self.conv_shortcut(input_tensor)
    return input_tensor + hidden_states


def _temporal_conv_forward(self: TemporalConvLayer, hidden_states: Tensor, num_frames: int = 1) -> Tensor:
    """TemporalConvLayer.forward with each GroupNorm -> SiLU pair fused (the layers after it unchanged)."""
    hidden_states = (
        hidden_states[None, :].reshape((-1, num_frames) + hidden_states.shape[1:]).permute(0, 2, 1, 3, 4)
    )
    identity = hidden_states
    for seq in (self.conv1, self.conv2, self.conv3, self.conv4):
        hidden_states = _gn(seq[0], hidden_states, "silu")
        for layer in list(seq)[2:]:
            hidden_states = layer(hidden_states)
    hidden_states = identity + hidden_states
    return hidden_states.permute(0, 2, 1, 3, 4).reshape(
        (hidden_states.shape[0] * hidden_states.shape[2], -1) + hidden_states.shape[3:]
    )


def _group_norm_forward(self: nn.GroupNorm, x: Tensor) -> Tensor:
    return _gn(self, x)


def _group_norm_silu_forward(self: nn.GroupNorm, x: Tensor) -> Tensor:
    return _gn(self, x, "silu")


def _identity_forward(self: nn.Module, x: Tensor) -> Tensor:
    return x


# ================================================================================================ attention
class FastvdmAttnProcessor:
    """Self-attention of a diffusers ``Attention`` on ``fastvdm.ops.video_attention``.

    hidden_states (N, L, C) -> q, k, v = to_q/k/v(hidden_states), each (N, L, heads * D), viewed without a
    copy as (N, 1, L, heads, D) with axis "spatial" (L = tokens of a frame) or (N, L, 1, heads, D) with axis
    "temporal" (L = frames of a position); the kernel's (N, ..., heads, D) contiguous output is the
    (N, L, heads * D) input of ``to_out``. Scale: D**-0.5, as diffusers' SDPA processor.
    Calls it does not cover (encoder_hidden_states, an attention mask, 4-D input, extra arguments) go to
    ``fallback``, the processor it replaced.
    """

    def __init__(self, axis: str, fallback: Callable):
        if axis not in ("spatial", "temporal"):
            raise ValueError(f"axis must be 'spatial' or 'temporal', got {axis!r}")
        self.axis = axis
        self.fallback = fallback

    def __call__(
        self,
        attn: Attention,
        hidden_states: Tensor,
        encoder_hidden_states: Optional[Tensor] = None,
        attention_mask: Optional[Tensor] = None,
        temb: Optional[Tensor] = None,
        *args,
        **kwargs,
    ) -> Tensor:
        if encoder_hidden_states is not None or attention_mask is not None or hidden_states.ndim != 3 or args or kwargs:
            return self.fallback(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        n, length, _ = hidden_states.shape
        video = (n, 1, length) if self.axis == "spatial" else (n, length, 1)
        return _video_self_attention(attn, hidden_states, video, self.axis)


def _video_self_attention(attn: Attention, hidden_states: Tensor, video: tuple, axis: str) -> Tensor:
    """``attn``'s self-attention (stock processor semantics) by ``fastvdm.ops.video_attention``.

    hidden_states: (N, L, C) tokens; video: (B, T, S) with B * T * S = N * L, the video layout those tokens are
    in (the q, k, v projections are viewed as (B, T, S, heads, D) without a copy); axis: "spatial" or "temporal".
    Returns (N, L, C)."""
    q = attn.to_q(hidden_states)
    k = attn.to_k(hidden_states)
    v = attn.to_v(hidden_states)
    heads = attn.heads
    shape = (*video, heads, k.shape[-1] // heads)
    out = ops.video_attention(q.view(shape), k.view(shape), v.view(shape), axis)
    out = out.view(q.shape).to(q.dtype)
    out = attn.to_out[0](out)
    out = attn.to_out[1](out)
    if attn.residual_connection:
        out = out + hidden_states
    return out / attn.rescale_output_factor


class _ZeroGrads(torch.autograd.Function):
    """Identity on ``x``; in the backward, exact zero gradients for ``params`` (projections whose contribution is
    zero in exact arithmetic, so that an optimizer sees a gradient for them as with the stock module)."""

    @staticmethod
    def forward(ctx, x: Tensor, *params: Tensor) -> Tensor:
        ctx.like = [(p.shape, p.dtype, p.device) for p in params]
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return (grad, *(torch.zeros(shape, dtype=dtype, device=device) for shape, dtype, device in ctx.like))


def _dropout_active(attn: Attention) -> bool:
    return attn.training and any(isinstance(m, nn.Dropout) and m.p > 0 for m in attn.to_out)


class SingleKeyCrossAttnProcessor:
    """Cross-attention to a single conditioning token, the case of Stable Video Diffusion (every cross-attention
    attends to one CLIP image embedding per clip).

    A softmax over one key is exactly 1, so every query's output is that key's value: out = to_out(to_v(c)) for
    the (N, 1, C') conditioning c, computed once per sample and broadcast over the L queries (an expanded view;
    diffusers' processor computes to_q and to_out for all N * L tokens and runs SDPA). The queries and the q and k
    projections do not contribute (their stock gradients are zero up to rounding): they get exact zero gradients,
    so that every parameter still has a gradient, as with the stock module. Calls it does not
    cover (more than one conditioning token, a mask, 4-D input, dropout active in training, extra arguments) go
    to ``fallback``, the processor it replaced.
    """

    def __init__(self, fallback: Callable):
        self.fallback = fallback

    def __call__(
        self,
        attn: Attention,
        hidden_states: Tensor,
        encoder_hidden_states: Optional[Tensor] = None,
        attention_mask: Optional[Tensor] = None,
        temb: Optional[Tensor] = None,
        *args,
        **kwargs,
    ) -> Tensor:
        context = encoder_hidden_states
        if (context is None or context.ndim != 3 or context.shape[1] != 1 or hidden_states.ndim != 3
                or context.shape[0] != hidden_states.shape[0] or attention_mask is not None or args or kwargs
                or _dropout_active(attn)):
            return self.fallback(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        out = _one_key_attention(attn, context, hidden_states)  # (N, 1, C)
        out = out + hidden_states if attn.residual_connection else out.expand_as(hidden_states)
        return out / attn.rescale_output_factor


def _one_key_attention(attn: Attention, context: Tensor, queries: Tensor) -> Tensor:
    """``attn``'s output (before residual and rescale) for queries attending to one key: to_out(to_v(c)).

    context: (N, 1, C') conditioning; queries: the (..., C) query tokens, unused (a softmax over one key is 1) but
    given exact zero gradients, as are the q and k projections. Returns (N, 1, C)."""
    if attn.norm_cross:
        context = attn.norm_encoder_hidden_states(context)
    out = attn.to_out[1](attn.to_out[0](attn.to_v(context).to(queries.dtype)))
    unused = [t for t in (queries, *attn.to_q.parameters(), *attn.to_k.parameters()) if t.requires_grad]
    return _ZeroGrads.apply(out, *unused) if unused and torch.is_grad_enabled() else out


def _temporal_block_forward(self: TemporalBasicTransformerBlock, hidden_states: Tensor, num_frames: int,
                            encoder_hidden_states: Optional[Tensor] = None) -> Tensor:
    """TemporalBasicTransformerBlock.forward (SVD) without its two layout copies.

    The stock block turns the frames-major (B * T, S, C) tokens into (B * S, T, C) (a permute + copy) so that
    its self-attention runs over the frames of each position, and back at the end. Every other layer (norms,
    feed-forwards, projections) acts on each token alone, so here the block stays in the (B * T, S, C) layout
    and its self-attention reads the frames of each position in place (``video_attention`` axis "temporal" on
    (B, T, S, heads, D) views); the cross-attention to one token per position (SVD's image embedding repeated
    over the S positions) is that token's to_out(to_v(c)), added per position. Calls this does not cover
    (processors other than fastvdm's, chunked feed-forward, a conditioning of several tokens or none) run the
    stock forward."""
    bt, length, channels = hidden_states.shape
    batch = bt // num_frames
    ctx, attn2 = encoder_hidden_states, self.attn2
    covered = (
        self._chunk_size is None
        and isinstance(self.attn1.processor, FastvdmAttnProcessor)
        and (attn2 is None or (
            isinstance(attn2.processor, SingleKeyCrossAttnProcessor) and ctx is not None and ctx.ndim == 3
            and tuple(ctx.shape[:2]) == (batch * length, 1) and not attn2.residual_connection
            and not _dropout_active(attn2)))
    )
    if not covered:
        return type(self).forward(self, hidden_states, num_frames, encoder_hidden_states)
    residual = hidden_states
    hidden_states = self.ff_in(self.norm_in(hidden_states))
    if self.is_res:
        hidden_states = hidden_states + residual
    attn_output = _video_self_attention(self.attn1, self.norm1(hidden_states), (batch, num_frames, length), "temporal")
    hidden_states = attn_output + hidden_states
    if attn2 is not None:
        per_position = _one_key_attention(attn2, ctx, self.norm2(hidden_states))  # (B * S, 1, C)
        per_position = per_position.view(batch, 1, length, channels) / attn2.rescale_output_factor
        hidden_states = (hidden_states.view(batch, num_frames, length, channels) + per_position).view(bt, length,
                                                                                                      channels)
    ff_output = self.ff(self.norm3(hidden_states))
    return ff_output + hidden_states if self.is_res else ff_output


def _attention_blocker(attn: Attention, single_key_cross: bool = False) -> Optional[str]:
    """Why ``attn`` stays on diffusers' path, or None if FastvdmAttnProcessor (self-attention) or, with
    ``single_key_cross``, SingleKeyCrossAttnProcessor (cross-attention) covers it."""
    if attn.is_cross_attention and not single_key_cross:
        return "cross-attention (keys/values from the conditioning): diffusers' processor"
    if not isinstance(attn.processor, _STOCK_PROCESSORS):
        return f"custom processor {type(attn.processor).__name__} (LoRA, IP-Adapter, ...): kept"
    for name in ("spatial_norm", "group_norm", "norm_q", "norm_k", "add_k_proj"):
        if getattr(attn, name, None) is not None:
            return f"attention with {name}: diffusers' processor"
    if getattr(attn, "fused_projections", False):
        return "fused QKV projections (fuse_qkv_projections): diffusers' processor"
    return None


# ================================================================================================ patching
def _is_silu(m) -> bool:
    return isinstance(m, nn.SiLU)


def _resnet2d_blocker(m: ResnetBlock2D) -> Optional[str]:
    if not (isinstance(m.norm1, nn.GroupNorm) and isinstance(m.norm2, nn.GroupNorm)):
        return "norms are not nn.GroupNorm"
    if not _is_silu(m.nonlinearity):
        return f"activation {type(m.nonlinearity).__name__} is not SiLU"
    if m.time_embedding_norm not in ("default", "scale_shift"):
        return f"time_embedding_norm {m.time_embedding_norm!r}"
    return None


def _temporal_conv_blocker(m: TemporalConvLayer) -> Optional[str]:
    for seq in (m.conv1, m.conv2, m.conv3, m.conv4):
        if not (isinstance(seq, nn.Sequential) and isinstance(seq[0], nn.GroupNorm) and _is_silu(seq[1])):
            return "a conv stage is not GroupNorm -> SiLU -> ..."
    return None


def _check_model(unet) -> None:
    name = type(unet).__name__
    classes = tuple(getattr(diffusers, n) for n in SUPPORTED_MODELS if hasattr(diffusers, n))
    if not isinstance(unet, classes):
        raise UnsupportedModelError(
            f"apply_fastvdm does not know {name}; supported diffusers video U-Nets: {', '.join(SUPPORTED_MODELS)}. "
            "Nothing was patched."
        )


def is_patched(unet) -> bool:
    """Whether ``unet`` currently carries fastvdm patches."""
    return getattr(unet, _STATE, None) is not None


def apply_fastvdm(unet, group_norm: bool = True, attention=True, verbose: bool = False) -> PatchReport:
    """Patch a diffusers video U-Net in place onto fastvdm's fused GroupNorm and video attention.

    unet: one of :data:`SUPPORTED_MODELS` (else :class:`UnsupportedModelError`, nothing patched).
    group_norm: fuse the ResNet blocks' GroupNorm + time embedding + SiLU (and route every other GroupNorm
    through fastvdm's kernel). attention: self-attention processors on ``fastvdm.ops.video_attention``: True
    (spatial and temporal; for SVD also its single-token cross-attentions, :class:`SingleKeyCrossAttnProcessor`),
    "temporal" or "spatial" (only that axis's self-attention), False (none).
    verbose: print the report. Returns a :class:`PatchReport` (what was patched, what was left and why).
    A model that is already patched raises ValueError (call :func:`remove_fastvdm` first).
    """
    _check_model(unet)
    axes = {True: ("spatial", "temporal"), False: (), "spatial": ("spatial",), "temporal": ("temporal",)}
    if not isinstance(attention, (bool, str)) or attention not in axes:
        raise ValueError(f"attention must be True, False, 'spatial' or 'temporal', got {attention!r}")
    if is_patched(unet):
        raise ValueError(f"this {type(unet).__name__} is already patched by fastvdm; call remove_fastvdm(unet) first")
    report = PatchReport(type(unet).__name__)
    undo: list = []  # (module, kind, saved)

    def patch_forward(module: nn.Module, fn) -> None:
        undo.append((module, "forward", module.__dict__.get("forward")))
        module.forward = types.MethodType(fn, module)

    modules = dict(unet.named_modules())
    consumed: set = set()  # ids of GroupNorms fused into a bigger pattern

    if group_norm:
        for path, m in modules.items():
            if isinstance(m, ResnetBlock2D):
                why = _resnet2d_blocker(m)
                if why:
                    report.left.append((path, f"ResnetBlock2D: {why}"))
                    continue
                patch_forward(m, _resnet2d_forward)
                consumed.update((id(m.norm1), id(m.norm2)))
                mode = "GroupNorm(h + temb)" if m.time_embedding_norm == "default" else "GroupNorm*(1+scale)+shift"
                report.patched.append((path, f"ResnetBlock2D: GroupNorm->SiLU and {mode}->SiLU fused"))
            elif isinstance(m, TemporalResnetBlock):
                if not (isinstance(m.norm1, nn.GroupNorm) and isinstance(m.norm2, nn.GroupNorm) and _is_silu(m.nonlinearity)):
                    report.left.append((path, "TemporalResnetBlock: not GroupNorm -> SiLU"))
                    continue
                patch_forward(m, _temporal_resnet_forward)
                consumed.update((id(m.norm1), id(m.norm2)))
                report.patched.append(
                    (path, "TemporalResnetBlock: GroupNorm->SiLU x2 fused (per-frame temb add stays in torch)")
                )
            elif isinstance(m, TemporalConvLayer):
                why = _temporal_conv_blocker(m)
                if why:
                    report.left.append((path, f"TemporalConvLayer: {why}"))
                    continue
                patch_forward(m, _temporal_conv_forward)
                consumed.update(id(seq[0]) for seq in (m.conv1, m.conv2, m.conv3, m.conv4))
                report.patched.append((path, "TemporalConvLayer: GroupNorm->SiLU x4 fused"))
        norm_out, act_out = getattr(unet, "conv_norm_out", None), getattr(unet, "conv_act", None)
        if isinstance(norm_out, nn.GroupNorm) and _is_silu(act_out):
            patch_forward(norm_out, _group_norm_silu_forward)
            patch_forward(act_out, _identity_forward)
            consumed.add(id(norm_out))
            report.patched.append(("conv_norm_out", "output GroupNorm->SiLU fused (conv_act becomes identity)"))
        for path, m in modules.items():
            if isinstance(m, nn.GroupNorm) and id(m) not in consumed:
                patch_forward(m, _group_norm_forward)
                report.patched.append((path, "GroupNorm (no activation follows): fastvdm group_norm"))

    if axes[attention]:
        # SVD conditions every cross-attention on one image embedding; the text-conditioned U-Nets on many tokens
        single_key_cross = attention is True and type(unet).__name__ == "UNetSpatioTemporalConditionModel"
        temporal_ids = set()
        for path, m in modules.items():
            if type(m).__name__ in _TEMPORAL_CONTAINERS:
                temporal_ids.update(id(a) for a in m.modules() if isinstance(a, Attention))
        for path, m in modules.items():
            if not isinstance(m, Attention):
                continue
            if m.is_cross_attention and single_key_cross:
                why = _attention_blocker(m, single_key_cross=True)
                if why:
                    report.left.append((path, why))
                    continue
                undo.append((m, "processor", m.processor))
                m.set_processor(SingleKeyCrossAttnProcessor(m.processor))
                report.patched.append((path, "cross-attention to one conditioning token: to_out(to_v(c)) broadcast"))
                continue
            why = _attention_blocker(m)
            if why:
                report.left.append((path, why))
                continue
            axis = "temporal" if id(m) in temporal_ids else "spatial"
            if axis not in axes[attention]:
                report.left.append((path, f"{axis} self-attention: not requested (attention={attention!r})"))
                continue
            undo.append((m, "processor", m.processor))
            m.set_processor(FastvdmAttnProcessor(axis, m.processor))
            what = "frames of a position" if axis == "temporal" else "tokens of a frame"
            report.patched.append((path, f"self-attention ({axis}: {what}): fastvdm video_attention"))
        if "temporal" in axes[attention]:
            for path, m in modules.items():
                if isinstance(m, TemporalBasicTransformerBlock):
                    patch_forward(m, _temporal_block_forward)
                    report.patched.append(
                        (path, "TemporalBasicTransformerBlock: frames-major layout kept (no permute copies)"))

    setattr(unet, _STATE, undo)
    if verbose:
        print(report)
    return report


def remove_fastvdm(unet) -> None:
    """Undo :func:`apply_fastvdm`: the original forward methods and attention processors, exactly."""
    undo = getattr(unet, _STATE, None)
    if undo is None:
        raise ValueError(f"this {type(unet).__name__} is not patched by fastvdm")
    for module, kind, saved in reversed(undo):
        if kind == "forward":
            if saved is None:
                del module.forward  # back to the class's method
            else:
                module.forward = saved
        else:
            module.set_processor(saved)
    delattr(unet, _STATE)
