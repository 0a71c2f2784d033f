"""Run configs: a named TOML preset (train/presets/NAME.toml) or a TOML file, overridden from the CLI."""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from teleworld.errors import TeleworldError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

PRESETS_DIR = Path(__file__).parent / "presets"


@dataclass
class TrainConfig:
    """Everything a training run needs besides the data."""

    steps: int = 2000  # optimiser steps (an upper bound when ``minutes`` is set)
    minutes: float = 0.0  # wall-clock budget of this invocation's training, checkpoint at the end (0: none)
    batch_size: int = 16  # sequences per batch (per process under torchrun)
    seq_len: int = 16  # steps per training window
    lr: float = 1e-3  # peak learning rate: linear warmup, cosine decay to 10 %
    weight_decay: float = 0.0
    grad_clip: float = 100.0  # global gradient-norm clip
    val_fraction: float = 0.1  # share of episodes held out, split by whole episode
    seed: int = 0  # split, init, data order, latent sampling
    checkpoint_every: int = 500
    eval_every: int = 250  # open-loop PSNR on validation windows, logged to TensorBoard
    log_every: int = 10
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU), bf16, fp32
    compile: bool = False  # torch.compile the encoder, decoder and the recurrent cell
    prefetch: int = 2  # batches prepared ahead in a background thread
    # model sizes (see train/model.py WorldModelConfig)
    depth: int = 16
    deter: int = 192
    groups: int = 16
    classes: int = 16
    hidden: int = 192
    openloop_steps: int = 3  # imagination steps trained against the truth (0: off)
    openloop_weight: float = 0.5  # weight of that open-loop image term
    openloop_stride: int = 4  # imagine from every n-th posterior of a window
    free_nats: float = 1.0  # KL below this many nats is not penalised
    kl_dyn: float = 1.0  # prior toward the (stop-gradient) posterior
    kl_rep: float = 0.1  # posterior toward the (stop-gradient) prior
    foreground_weight: float = 1.0  # loss weight of pixels that move within a training window (1: plain MSE)
    composite: bool = True  # the decoder paints over the last observed frame (false: draws every pixel)
    rollout_steps: int = 0  # long open-loop term: steps imagined after rollout_context frames, as replay does (0: off)
    rollout_frames: int = 4  # imagined frames decoded and scored per window (random steps of the rollout)
    rollout_weight: float = 1.0  # weight of that term
    rollout_context: int = 5  # frames observed before the long rollout (replay's K)
    blend: bool = False  # learn a per-pixel blend of each imagined frame toward the last observed one (needs rollout_steps)
    blend_kernel: int = 3  # receptive field of that blend, in pixels
    head_weight: float = 10.0  # weight of the proprio (standardised) and contact heads' terms next to the image error
    reward_weight: float = 10.0  # weight of the reward head's term (standardised reward; 0: no reward head, no planning)

    def to_dict(self) -> dict:
        return asdict(self)


# Run settings a resumed run may change (how long, how fast, how it is logged; not what the model learns from).
RESUME_SAFE = ("steps", "minutes", "lr", "weight_decay", "grad_clip", "checkpoint_every", "eval_every", "log_every",
               "precision", "compile", "prefetch")


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.toml"))


def _read_toml(name_or_path: str) -> dict:
    path = Path(name_or_path)
    if path.suffix != ".toml":
        path = PRESETS_DIR / f"{name_or_path}.toml"
        if not path.exists():
            raise TeleworldError(f"unknown config {name_or_path!r}; known: {', '.join(preset_names())} or a .toml path")
    if not path.exists():
        raise TeleworldError(f"no config file at {path}")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise TeleworldError(f"{path} is not valid TOML: {exc}") from None


def config_values(name_or_path: str | None, **overrides) -> dict:
    """The keys a command sets itself: those of the preset or TOML file (if named), then the non-None overrides."""
    values = {**(_read_toml(name_or_path) if name_or_path else {}),
              **{k: v for k, v in overrides.items() if v is not None}}
    _check_keys(values, "unknown config keys")
    return values


def make_config(name_or_path: str = "small", **overrides) -> TrainConfig:
    """A preset name or TOML path, with ``overrides`` on top (None values are ignored)."""
    return _checked(TrainConfig(**config_values(name_or_path, **overrides)))


def resume_config(saved: dict, values: dict) -> TrainConfig:
    """A resumed run's config: the one it saved, with the given ``values`` on top (see check_resume)."""
    check_resume(saved, values)
    return _checked(TrainConfig(**{**saved, **values}))


def check_resume(saved: dict, values: dict) -> None:
    """Refuse ``values`` that change a key of the run's ``saved`` config other than RESUME_SAFE ones."""
    _check_keys(saved, "the run's saved config has keys this teleworld does not know")
    run = TrainConfig(**saved).to_dict()
    changed = [key for key in sorted(values) if key not in RESUME_SAFE and values[key] != run[key]]
    if changed:
        diffs = ", ".join(f"{key} {run[key]!r} -> {values[key]!r}" for key in changed)
        raise TeleworldError(f"--resume keeps the run's config, but this command changes {diffs}; only "
                             f"{', '.join(RESUME_SAFE)} may change on resume (or train a new run in another --out)")


def _check_keys(values: dict, problem: str) -> None:
    known = [f.name for f in fields(TrainConfig)]
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise TeleworldError(f"{problem}: {', '.join(unknown)}; known: {', '.join(known)}")


def _checked(cfg: TrainConfig) -> TrainConfig:
    if cfg.precision not in ("auto", "bf16", "fp32"):
        raise TeleworldError(f"precision must be auto, bf16 or fp32, not {cfg.precision!r}")
    return cfg


def parse_overrides(pairs: list[str]) -> dict:
    """['lr=3e-4', 'compile=true'] -> typed values, each parsed as a TOML value."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise TeleworldError(f"--set expects key=value, got {pair!r}")
        try:
            out[key.strip()] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            out[key.strip()] = value  # a bare string
    return out
