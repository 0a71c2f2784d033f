"""Named model + optimisation configs. A run's config = a named preset, overridden by CLI flags."""

from __future__ import annotations

from dataclasses import dataclass, fields

from teleworld.errors import TeleworldError


@dataclass
class TrainConfig:
    """Everything a training run needs besides the data. Model sizes are in WorldModelConfig fields."""

    steps: int = 2000
    batch_size: int = 16
    seq_len: int = 16
    lr: float = 6e-4
    weight_decay: float = 0.0
    grad_clip: float = 100.0
    val_fraction: float = 0.1
    seed: int = 0
    checkpoint_every: int = 500
    # model sizes
    depth: int = 16
    deter: int = 256
    groups: int = 16
    classes: int = 16
    hidden: int = 256
    openloop_steps: int = 3


PRESETS: dict[str, dict] = {
    "tiny": dict(depth=8, deter=64, hidden=64, groups=8, classes=8, batch_size=4, seq_len=8, steps=40),
    "small": dict(depth=16, deter=192, hidden=192, groups=16, classes=16),
    "medium": dict(depth=32, deter=512, hidden=512, groups=32, classes=32, batch_size=32, seq_len=32, steps=50000, lr=3e-4),
    "large": dict(depth=48, deter=1024, hidden=1024, groups=32, classes=32, batch_size=32, seq_len=64, steps=100000, lr=2e-4),
}


def make_config(name: str = "small", **overrides) -> TrainConfig:
    """A preset by name with ``overrides`` (None values are ignored)."""
    if name not in PRESETS:
        raise TeleworldError(f"unknown config {name!r}; known: {', '.join(PRESETS)}")
    known = {f.name for f in fields(TrainConfig)}
    values = {**PRESETS[name], **{k: v for k, v in overrides.items() if v is not None}}
    unknown = set(values) - known
    if unknown:
        raise TeleworldError(f"unknown config keys: {', '.join(sorted(unknown))}")
    return TrainConfig(**values)
