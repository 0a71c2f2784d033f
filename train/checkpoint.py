"""Checkpoints: a plain dict of tensors and primitives, written atomically, read with weights_only=True."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

from recorder.schema import SCHEMA_VERSION
from teleworld.errors import TeleworldError
from train.dataset import DataSpec
from train.model import WorldModel, WorldModelConfig

FORMAT = "teleworld-world-model"
FORMAT_VERSION = 1
CHECKPOINT_NAME = "checkpoint.pt"


def save_checkpoint(path: str | os.PathLike, model: WorldModel, spec: DataSpec, step: int, extra: dict | None = None) -> Path:
    """Write model weights, the config to rebuild it and the data spec; temp file + rename, never half-written."""
    return write_checkpoint(path, {
        "config": model.cfg.to_dict(),
        "data_spec": vars(spec).copy(),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "step": int(step),
        **(extra or {}),
    })


def write_checkpoint(path: str | os.PathLike, contents: dict) -> Path:
    """Write ``contents`` with the format's header atomically (temp file + rename); a failed write (e.g. a full
    disk) keeps the previous checkpoint and says why in one line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"format": FORMAT, "format_version": FORMAT_VERSION, "schema_version": SCHEMA_VERSION, **contents}
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
    except (OSError, RuntimeError) as exc:  # e.g. a full disk: the previous checkpoint stays as it was
        tmp.unlink(missing_ok=True)
        raise TeleworldError(f"could not write {path} ({_os_reason(exc)}); the previous checkpoint is kept") from exc
    os.replace(tmp, path)
    return path


def _os_reason(exc: BaseException) -> str:
    """The OS's words for a failed write (torch wraps them in a RuntimeError)."""
    cause = exc if isinstance(exc, OSError) else exc.__context__
    return cause.strerror if isinstance(cause, OSError) and cause.strerror else str(exc)


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Load a checkpoint dict without executing code; refuse anything that is not a teleworld model."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.exists():
        raise TeleworldError(f"no checkpoint at {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # foreign bytes make torch warn about odd pickle protocols
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as exc:
        raise TeleworldError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except Exception as exc:  # the unpickler fails on foreign bytes in many ways: IndexError, KeyError, ...
        raise TeleworldError(f"{path} is not a loadable teleworld checkpoint (torch.load failed: "
                             f"{type(exc).__name__})") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise TeleworldError(f"{path} is not a teleworld world-model checkpoint")
    if ckpt.get("format_version", 0) > FORMAT_VERSION:
        raise TeleworldError(f"{path} was written by a newer teleworld (format {ckpt['format_version']})")
    return ckpt


def load_model(path: str | os.PathLike, device: torch.device | str = "cpu") -> tuple[WorldModel, DataSpec, dict]:
    """Rebuild the model from a checkpoint; returns (model in eval mode, its data spec, the raw dict)."""
    ckpt = read_checkpoint(path)
    if ckpt.get("kind", "image") != "image":
        raise TeleworldError(f"{path} is a {ckpt['kind']} model (`teleworld train --config {ckpt['kind']}`), not an "
                             "image world model: `teleworld plan` plans with it; replay, view and dream need an image "
                             "world model")
    model = WorldModel(WorldModelConfig.from_dict(ckpt["config"]))
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        reason = " ".join(line.strip() for line in str(exc).splitlines()[:2])[:300]  # names the missing keys
        raise TeleworldError(f"checkpoint weights do not fit its own config: {reason}") from None
    return model.to(device).eval(), DataSpec(**ckpt["data_spec"]), ckpt
