"""Run configs: a named TOML preset (train/presets/NAME.toml) or a TOML file, overridden from the CLI.

A config has three sections, TOML tables in a file: ``[model]`` (sizes), ``[objective]`` (the loss terms' weights
and settings, train/objectives.py) and ``[run]`` (steps, batches, optimiser, logging). Keys may be given dotted
(``model.deter=256``) or flat (``deter=256``) where only one section has them."""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from teleworld.errors import TeleworldError
from train.objectives import LEGACY, ObjectiveConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

PRESETS_DIR = Path(__file__).parent / "presets"


@dataclass
class ModelSettings:
    """The model's sizes and parts (train/model.py WorldModelConfig; the data sets the rest)."""

    depth: int = 16  # channels of the first conv layer; doubles per layer
    deter: int = 192  # GRU state size
    groups: int = 16  # categorical latent: groups x classes
    classes: int = 16
    hidden: int = 192
    composite: bool = True  # the decoder paints over the last observed frame (false: draws every pixel)
    transport: bool = False  # the composite decoder first moves the reference's pixels by a predicted flow
    blend: bool = False  # learn a per-pixel blend of imagined frames toward the last observed one (needs rollout_steps)
    blend_kernel: int = 3  # receptive field of that blend, in pixels
    proprio_input: bool = False  # the posterior also observes concat(qpos, qvel): a state observation (planning)


@dataclass
class RunSettings:
    """How long and how fast a run trains, on which windows, and how it is logged."""

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
    cuda_graph: str = "auto"  # replay the step from a CUDA graph (train/step.py): auto (one GPU, no compile), on, off
    prefetch: int = 2  # batches prepared ahead in a background thread


SECTIONS = {"model": ModelSettings, "objective": ObjectiveConfig, "run": RunSettings}


@dataclass
class TrainConfig:
    """Everything a training run needs besides the data: the model's sizes, the loss's terms, the run's settings."""

    model: ModelSettings = field(default_factory=ModelSettings)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    run: RunSettings = field(default_factory=RunSettings)

    def to_dict(self) -> dict:
        """{"model": {...}, "objective": {...}, "run": {...}}."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        """Nested, dotted or flat keys (see nest); unknown keys are an error."""
        nested = nest(values)
        return cls(**{name: kind(**nested[name]) for name, kind in SECTIONS.items()})


# Run settings a resumed run may change (not what the model is or learns from).
RESUME_SAFE = tuple(f.name for f in fields(RunSettings))


def nest(values: dict) -> dict[str, dict]:
    """Config values -> {section: {key: value}} for every section. Accepts section tables ({"model": {"deter": 256}}),
    dotted keys ("model.deter") and flat keys ("deter", mapped to the one section that has it)."""
    out: dict[str, dict] = {name: {} for name in SECTIONS}
    unknown = []
    for key, value in values.items():
        if key in SECTIONS and isinstance(value, dict):
            pairs = [(f"{key}.{k}", v) for k, v in value.items()]
        else:
            pairs = [(key, value)]
        for name, v in pairs:
            section, _, leaf = name.rpartition(".")
            owners = [s for s in SECTIONS if leaf in _keys(s)] if not section else [section]
            if len(owners) != 1 or owners[0] not in SECTIONS or leaf not in _keys(owners[0]):
                unknown.append(name)
            else:
                out[owners[0]][leaf] = v
    if unknown:
        known = ", ".join(f"{s}.{k}" for s in SECTIONS for k in _keys(s))
        raise TeleworldError(f"unknown config keys: {', '.join(sorted(unknown))}; known: {known}")
    return out


def _keys(section: str) -> list[str]:
    return [f.name for f in fields(SECTIONS[section])]


def saved_config(ckpt: dict) -> TrainConfig:
    """The run config a checkpoint saved. One saved flat (before the sections) is nested, and the loss settings it
    lacks are the ones its model was trained with: those saved in its model config, LEGACY ones for a model saved
    before issue 27."""
    saved = ckpt["train_config"]
    if any(key in SECTIONS for key in saved):
        return TrainConfig.from_dict(saved)
    model = ckpt.get("config", {})
    past = {**(LEGACY if "heads" not in model else {}), **{k: v for k, v in model.items() if k in _keys("objective")}}
    return TrainConfig.from_dict({**{k: v for k, v in past.items() if k not in saved}, **saved})


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


def config_values(name_or_path: str | None, **overrides) -> dict[str, dict]:
    """The keys a command sets itself, nested by section: those of the preset or TOML file (if named), then the
    non-None ``overrides`` (dotted or flat keys)."""
    values = nest(_read_toml(name_or_path)) if name_or_path else nest({})
    for section, given in nest({k: v for k, v in overrides.items() if v is not None}).items():
        values[section].update(given)
    return values


def make_config(name_or_path: str = "small", **overrides) -> TrainConfig:
    """A preset name or TOML path, with ``overrides`` on top (dotted or flat keys; None values are ignored)."""
    return _checked(TrainConfig.from_dict(config_values(name_or_path, **overrides)))


def resume_config(saved: TrainConfig, values: dict) -> TrainConfig:
    """A resumed run's config: the one it saved, with the given ``values`` on top (see check_resume)."""
    check_resume(saved, values)
    merged = saved.to_dict()
    for section, given in nest(values).items():
        merged[section].update(given)
    return _checked(TrainConfig.from_dict(merged))


def check_resume(saved: TrainConfig, values: dict) -> None:
    """Refuse ``values`` that change a key of the run's ``saved`` config outside its run section (RESUME_SAFE)."""
    run = saved.to_dict()
    given = nest(values)
    changed = [(section, key) for section in SECTIONS if section != "run" for key in sorted(given[section])
               if given[section][key] != run[section][key]]
    if changed:
        diffs = ", ".join(f"{section}.{key} {run[section][key]!r} -> {given[section][key]!r}"
                          for section, key in changed)
        raise TeleworldError(f"--resume keeps the run's config, but this command changes {diffs}; only the run "
                             f"settings ({', '.join(RESUME_SAFE)}) may change on resume (or train a new run in "
                             "another --out)")


def _checked(cfg: TrainConfig) -> TrainConfig:
    if cfg.run.precision not in ("auto", "bf16", "fp32"):
        raise TeleworldError(f"precision must be auto, bf16 or fp32, not {cfg.run.precision!r}")
    if isinstance(cfg.run.cuda_graph, bool):  # --set cuda_graph=true reads as TOML's boolean
        cfg.run.cuda_graph = "on" if cfg.run.cuda_graph else "off"
    _check_types(cfg)
    if cfg.run.cuda_graph not in ("auto", "on", "off"):
        raise TeleworldError(f"cuda_graph must be auto, on or off, not {cfg.run.cuda_graph!r}")
    if cfg.model.blend and cfg.objective.rollout_steps < 1:
        raise TeleworldError("model.blend is learned on the long rollout: set objective.rollout_steps >= 1 or "
                             "model.blend=false")
    if cfg.model.transport and not cfg.model.composite:
        raise TeleworldError("model.transport moves the frame a compositing decoder paints over: set "
                             "model.composite=true or model.transport=false")
    return cfg


# the settings' field types (their annotations as text): the type and how an error names it
KINDS = {"bool": (bool, "true or false"), "int": (int, "an integer"), "float": (float, "a number"),
         "str": (str, "a string")}


def _check_types(cfg: TrainConfig) -> None:
    """Refuse a value of the wrong type in one line (``--set model.blend=maybe`` reads as the string "maybe"); an
    integer where a float belongs becomes that float."""
    for section in SECTIONS:
        settings = getattr(cfg, section)
        for f in fields(settings):
            (kind, name), value = KINDS[str(f.type)], getattr(settings, f.name)
            if kind is float and type(value) is int:
                setattr(settings, f.name, float(value))
            elif not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
                raise TeleworldError(f"{section}.{f.name} must be {name}, not {value!r}")


def parse_overrides(pairs: list[str]) -> dict:
    """['run.lr=3e-4', 'compile=true'] -> typed values, each parsed as a TOML value; keys as given (see nest)."""
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
