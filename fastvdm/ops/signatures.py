"""The argument lists of the ops, written once: the backends' custom ops, public functions and autograd are
built from them (``torch.library`` reads a custom op's schema from the ``inspect.Signature`` made here).

``group_norm(x, num_groups, weight, bias, eps, scale, shift, activation, input_bias)`` is the op with the longest
list; its (name, type) pairs are :data:`GROUP_NORM_PARAMS`, in the positional order of
:func:`fastvdm.ops.group_norm` (which the dispatcher passes to every backend); a trailing (name, type, default)
triple is an argument callers may omit. Add an argument here and in the launchers; the rest follows.
"""

from __future__ import annotations

import inspect
from typing import NamedTuple, Optional

from torch import Tensor

GROUP_NORM_PARAMS = (
    ("x", Tensor),
    ("num_groups", int),
    ("weight", Optional[Tensor]),
    ("bias", Optional[Tensor]),
    ("eps", float),
    ("scale", Optional[Tensor]),
    ("shift", Optional[Tensor]),
    ("activation", Optional[str]),
    ("input_bias", Optional[Tensor], None),  # (B, C) added to x before the statistics: GroupNorm(x + input_bias)
)
GroupNormArgs = NamedTuple("GroupNormArgs", [p[:2] for p in GROUP_NORM_PARAMS])  # one call's arguments, by name
GroupNormArgs.__new__.__defaults__ = tuple(p[2] for p in GROUP_NORM_PARAMS if len(p) == 3)


def tensor_args(params) -> tuple:
    """Names of the tensor (or optional tensor) arguments of ``params``: the differentiable ones."""
    return tuple(p[0] for p in params if p[1] in (Tensor, Optional[Tensor]))


def signature(params, returns) -> inspect.Signature:
    """An ``inspect.Signature`` of positional parameters ``params`` ((name, type) pairs, or (name, type, default)
    triples for trailing optional ones) returning ``returns``."""
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    empty = inspect.Parameter.empty
    return inspect.Signature(
        [inspect.Parameter(p[0], kind, annotation=p[1], default=p[2] if len(p) == 3 else empty) for p in params],
        return_annotation=returns,
    )


def with_signature(params, returns):
    """Decorator: give a ``*args`` function the signature of ``params`` -> ``returns`` (for ``torch.library``)."""

    def apply(fn):
        fn.__signature__ = signature(params, returns)
        return fn

    return apply
