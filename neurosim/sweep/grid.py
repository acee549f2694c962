"""Sweep points: a noise scale for every sigma of a profile, or a grid over profile keys.

``--scale 0,0.5,1,2`` gives one point per factor (every sigma of ``variation`` and ``noise``
multiplied by it, :meth:`DeviceProfile.scaled`). ``--vary variation.v_threshold.sigma=0,0.01``
sets one key of the profile instead; several ``--vary`` make the cartesian grid.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

from pydantic import ValidationError

from neurosim.device.profile import DeviceProfile
from neurosim.errors import ConfigError, ProfileError

Point = dict[str, float]


def parse_values(text: str, where: str) -> list[float]:
    """``"0,0.5,1"`` -> ``[0.0, 0.5, 1.0]``; finite numbers only."""
    values = []
    for part in (p.strip() for p in text.split(",")):
        try:
            value = float(part)
        except ValueError:
            raise ConfigError(f"{where}: {part!r} is not a number") from None
        if not math.isfinite(value):
            raise ConfigError(f"{where}: {part!r} is not a finite number")
        values.append(value)
    if not values:
        raise ConfigError(f"{where}: no values")
    return values


def parse_vary(items: list[str]) -> list[tuple[str, list[float]]]:
    """``["variation.v_threshold.sigma=0,0.01"]`` -> ``[("variation.v_threshold.sigma", [0, 0.01])]``."""
    out = []
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--vary: expected KEY=V1,V2,..., got {item!r}")
        out.append((key.strip(), parse_values(values, f"--vary {key.strip()}")))
    keys = [k for k, _ in out]
    if len(set(keys)) != len(keys):
        raise ConfigError("--vary: a key is given twice")
    return out


def make_points(scales: list[float] | None, vary: list[tuple[str, list[float]]]) -> list[Point]:
    """The sweep's points, in order: scales, or the grid of the varied keys."""
    if vary and scales:
        raise ConfigError("give --scale or --vary, not both")
    if vary:
        keys = [k for k, _ in vary]
        return [dict(zip(keys, combo)) for combo in itertools.product(*(v for _, v in vary))]
    if not scales:
        raise ConfigError("give --scale S1,S2,... or --vary KEY=V1,V2,...")
    for s in scales:
        if s < 0:
            raise ConfigError(f"--scale: {s} is negative")
    return [{"scale": s} for s in scales]


def profile_at(profile: DeviceProfile, point: Point) -> DeviceProfile:
    """``profile`` with the point applied (a scale of every sigma, or keys set)."""
    if "scale" in point:
        return profile.scaled(point["scale"])
    data = profile.to_dict()
    for key, value in point.items():
        _set(data, key, value, profile.name)
    try:
        return DeviceProfile.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise ProfileError(f"--vary: profile {profile.name} at {point}: {where}: "
                           f"{first['msg'].removeprefix('Value error, ')}") from None


def _set(data: dict[str, Any], key: str, value: float, name: str) -> None:
    parts = key.split(".")
    node: Any = data
    for i, part in enumerate(parts[:-1]):
        if not isinstance(node, dict):
            raise ConfigError(f"--vary: {'.'.join(parts[:i])} of profile {name} is not a section")
        node = node.setdefault(part, {})
    if not isinstance(node, dict):
        raise ConfigError(f"--vary: {'.'.join(parts[:-1])} of profile {name} is not a section")
    current = node.get(parts[-1])
    if isinstance(current, int) and not isinstance(current, bool) and float(value).is_integer():
        node[parts[-1]] = int(value)
    else:
        node[parts[-1]] = value


def point_label(point: Point) -> str:
    """A short text for a point, e.g. ``scale=4`` or ``variation.v_reset.sigma=0.02``."""
    return ", ".join(f"{k}={v:g}" for k, v in point.items())
