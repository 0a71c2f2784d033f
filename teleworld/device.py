"""Which torch device a command runs on: one rule for train, replay, plan and the demo."""

from __future__ import annotations

from typing import TYPE_CHECKING

from teleworld.errors import TeleworldError

if TYPE_CHECKING:
    import torch


def resolve_device(name: str = "auto") -> "torch.device":
    """'auto' picks CUDA when present, else CPU; 'cuda' without a GPU is an error."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TeleworldError("--device cuda asked for, but no CUDA GPU is visible")
    return torch.device(name)
