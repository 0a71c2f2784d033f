"""The `simulator` method: the scene re-run from each window's recorded state with the recorded actions.

It starts from the state recorded at the last context step (K-1) and applies the recorded actions, exactly like the
model's open loop. On faithful data (the stored action is the one applied, the state is complete, the scene has not
changed) it reproduces the recording, so it scores at the PSNR cap: a check of the data, shown next to the model.
"""

from __future__ import annotations

import numpy as np

from recorder import EpisodeStore
from recorder.schema import proprio
from teleop.scenes import load


def scene_changed(store: EpisodeStore) -> bool:
    """The registered scene's MJCF differs from the one stored with the data (the simulator cannot match it)."""
    scene = load(store.info["scene"])
    try:
        return scene.mjcf() != store.info.get("mjcf", scene.mjcf())
    finally:
        scene.close()


def simulate(store: EpisodeStore, camera: str, starts: np.ndarray, context: int, horizon: int
             ) -> dict[str, np.ndarray]:
    """image (W, H, 3, S, S) in [0, 1], proprio (W, H, P) and contact (W, H, G) of the re-simulated steps."""
    info = store.info
    options = {"randomize": True} if "randomization" in info else {}  # reset(seed) redraws the episode's draw
    scene = load(info["scene"], image_size=tuple(info["image_size"]), cameras=(camera,), **options)
    ends, states, actions = store.episode_ends, store.array("state"), store.array("action")
    out: dict[str, list] = {"image": [], "proprio": [], "contact": []}
    try:
        for start in np.asarray(starts):
            episode = int(np.searchsorted(ends, start, side="right"))
            scene.reset(store.episode_info(episode).get("seed"))  # task setup that is not physics state
            first = int(start) + context - 1
            scene.set_state(states[first])
            steps = [scene.step(a) for a in actions[first : first + horizon]]
            out["image"].append(np.stack([np.moveaxis(o.frames[camera], -1, 0) for o in steps]) / 255.0)
            out["proprio"].append(proprio(np.stack([o.qpos for o in steps]), np.stack([o.qvel for o in steps])))
            out["contact"].append(np.stack([o.contact_summary for o in steps]).astype(bool))
    finally:
        scene.close()
    return {k: np.stack(v).astype(np.float32 if k != "contact" else bool) for k, v in out.items()}
