"""Domain randomization: a scene declares named uniform ranges; one draw per episode, recorded with it.

A scene opts in by declaring a :class:`Randomization` and applying a draw to its own model at reset; the helpers
below edit an ``MjModel`` in place consistently (a resized box keeps its collision bounds, a new mass its
inertia). Nothing here runs unless a scene is built with randomization on, so the default scene is untouched.
"""

from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np

Value = float | list[float]


@dataclass(frozen=True)
class Range:
    """A uniform range for one parameter: a scalar (one bound each) or a vector (equal-length bounds)."""

    low: tuple[float, ...]
    high: tuple[float, ...]
    unit: str = ""

    def __post_init__(self) -> None:
        if len(self.low) != len(self.high) or any(lo > hi for lo, hi in zip(self.low, self.high)):
            raise ValueError(f"bad range {self.low} .. {self.high}")

    def sample(self, rng: np.random.Generator) -> Value:
        """One draw: a float for a scalar range, a list of floats for a vector range."""
        values = [float(v) for v in rng.uniform(self.low, self.high)]
        return values[0] if len(values) == 1 else values

    def contains(self, value: Value) -> bool:
        """True when ``value`` has this range's size and lies inside it (bounds included)."""
        values = np.atleast_1d(np.asarray(value, dtype=float))
        return values.shape == (len(self.low),) and bool(np.all((self.low <= values) & (values <= self.high)))

    def to_dict(self) -> dict:
        return {"low": list(self.low), "high": list(self.high), "unit": self.unit}


def uniform(low: float | tuple[float, ...], high: float | tuple[float, ...], unit: str = "") -> Range:
    """A :class:`Range` from scalar or tuple bounds."""
    return Range(tuple(np.atleast_1d(low).astype(float)), tuple(np.atleast_1d(high).astype(float)), unit)


class Randomization:
    """Named ranges declared by a scene, sampled in declaration order (so a seed fixes every value)."""

    def __init__(self, **ranges: Range):
        self.ranges = dict(ranges)

    def sample(self, rng: np.random.Generator) -> dict[str, Value]:
        """One value per parameter."""
        return {name: r.sample(rng) for name, r in self.ranges.items()}

    def violations(self, values: dict[str, Value]) -> list[str]:
        """Parameters missing from ``values``, unknown to the declaration, or outside their range."""
        bad = [f"{k}: missing" for k in self.ranges if k not in values]
        bad += [f"{k}: undeclared" for k in values if k not in self.ranges]
        bad += [f"{k}={v}: outside {self.ranges[k].low}..{self.ranges[k].high}"
                for k, v in values.items() if k in self.ranges and not self.ranges[k].contains(v)]
        return bad

    def to_dict(self) -> dict:
        """The declaration, JSON-ready (stored with the dataset)."""
        return {name: r.to_dict() for name, r in self.ranges.items()}


# ----- in-place MjModel edits (call mujoco.mj_setConst afterwards when masses change) -----
def set_box_half_sizes(model: mujoco.MjModel, geom: int, half: np.ndarray) -> None:
    """Resize a box geom and its collision bounds (bounding sphere and local AABB)."""
    model.geom_size[geom] = half
    model.geom_rbound[geom] = float(np.linalg.norm(half))
    model.geom_aabb[geom, 3:] = half


def set_solid_box_mass(model: mujoco.MjModel, body: int, mass: float, half: np.ndarray) -> None:
    """Give a body the mass and diagonal inertia of a solid box with half sizes ``half``."""
    a, b, c = np.square(half)
    model.body_mass[body] = mass
    model.body_inertia[body] = mass / 3.0 * np.array([b + c, a + c, a + b])


def move_camera(model: mujoco.MjModel, camera: int, pos: np.ndarray, quat: np.ndarray, offset: np.ndarray,
                yaw_deg: float) -> None:
    """Place a camera at ``pos + offset``, turned by ``yaw_deg`` about its own optical axis from ``quat``."""
    half = np.deg2rad(yaw_deg) / 2
    turned = np.empty(4)
    mujoco.mju_mulQuat(turned, np.asarray(quat, dtype=float), np.array([np.cos(half), 0.0, 0.0, np.sin(half)]))
    model.cam_pos[camera] = pos + offset
    model.cam_quat[camera] = turned
