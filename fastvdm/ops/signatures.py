"""The argument lists of the ops, written once: the backends' custom ops, public functions and autograd are
built from them (``torch.library`` reads a custom op's schema from the ``inspect.Signature`` made here).

``group_norm(x, num_groups, weight, bias, eps, scale, shift, activation)`` is the op with the longest list; its
(name, type) pairs are :data:`GROUP_NORM_PARAMS`, in the positional order of :func:`fastvdm.ops.group_norm`
(which the dispatcher passes to every backend). Add an argument here and in the launchers; the rest follows.
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
)
GroupNormArgs = NamedTuple("GroupNormArgs", GROUP_NORM_PARAMS)  # one call's arguments, by name


def tensor_args(params) -> tuple:
    """Names of the tensor (or optional tensor) arguments of ``params``: the differentiable ones."""
    return tuple(name for name, kind in params if kind in (Tensor, Optional[Tensor]))


def signature(params, returns) -> inspect.Signature:
    """An ``inspect.Signature`` of positional parameters ``params`` ((name, type) pairs) returning ``returns``."""
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    return inspect.Signature([inspect.Parameter(n, kind, annotation=t) for n, t in params], return_annotation=returns)


def with_signature(params, returns):
    """Decorator: give a ``*args`` function the signature of ``params`` -> ``returns`` (for ``torch.library``)."""

    def apply(fn):
        fn.__signature__ = signature(params, returns)
        return fn

    return apply
