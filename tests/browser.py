"""Headless Chromium for the report tests: a page's pixels as a reader's browser draws them."""

import shutil
import subprocess

import imageio.v3 as iio
import numpy as np

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def screenshot(page, out, height: int) -> np.ndarray:
    """Render the HTML file ``page`` 1200 px wide and ``height`` tall into the PNG ``out``; (H, W, 3) int."""
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--window-size=1200,{height}", f"--screenshot={out}", page.as_uri()],
                   capture_output=True, timeout=120, check=True)
    return iio.imread(out)[..., :3].astype(int)
