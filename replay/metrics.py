"""Image metrics on frames in [0, 1]. PSNR uses data range 1 and is capped at PSNR_CAP for identical frames."""

from __future__ import annotations

import numpy as np

PSNR_CAP = 60.0  # dB reported for (near-)identical frames, instead of infinity


def psnr(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """PSNR per frame over the last three axes (H, W, C or C, H, W); images in [0, 1], capped at PSNR_CAP."""
    mse = np.mean((np.clip(pred, 0, 1) - truth) ** 2, axis=(-3, -2, -1))
    with np.errstate(divide="ignore"):
        value = -10.0 * np.log10(mse)
    return np.minimum(value, PSNR_CAP)
