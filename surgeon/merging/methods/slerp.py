"""slerp: spherical interpolation between two models (mergekit's `slerp`; its base_model is the first
model here). The angle comes from normalised copies of the flattened tensors; the result mixes the
original tensors:

    theta = arccos(<v0/|v0|, v1/|v1|>)
    result = sin((1 - t) theta) / sin(theta) * v0 + sin(t theta) / sin(theta) * v1

falling back to lerp, (1 - t) v0 + t v1, when the two are nearly colinear (|cos| > 0.9995). A norm
at or below 1e-8 is left unnormalised, as mergekit does. t = 0 and t = 1 give the inputs exactly.
"""
from __future__ import annotations

import math

from pydantic import Field

from surgeon.merging.methods.common import BaseParams

NAMES = ("slerp",)
NEEDS_BASE = False
MODELS = (2, 2)
USES_WEIGHT = False
USES_DENSITY = False
WEIGHT_HINT = "set t in [parameters]"
DOT_THRESHOLD = 0.9995
EPS = 1e-8


class Params(BaseParams):
    t: float = Field(ge=0.0, le=1.0, description="0 gives the first model, 1 the second")


def coefficients(v0, v1, t: float) -> tuple[float, float]:
    """(s0, s1) with result = s0 * v0 + s1 * v1; the angle in float64."""
    a = v0.reshape(-1).double()
    b = v1.reshape(-1).double()
    na, nb = float(a.norm()), float(b.norm())
    if na > EPS:
        a = a / na
    if nb > EPS:
        b = b / nb
    dot = float((a * b).sum())
    if abs(dot) > DOT_THRESHOLD:
        return 1.0 - t, t
    theta = math.acos(dot)
    sin_theta = math.sin(theta)
    return math.sin(theta - theta * t) / sin_theta, math.sin(theta * t) / sin_theta


def combine(task, params: Params):
    v0, v1 = task.inputs
    t = params.t
    if t == 0.0:
        return v0.clone()
    if t == 1.0:
        return v1.clone()
    s0, s1 = coefficients(v0, v1, t)
    return v0 * s0 + v1 * s1
