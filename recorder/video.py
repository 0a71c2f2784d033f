"""`teleworld data video`: an MP4 of one episode, every camera side by side, with a time and contact overlay."""

from __future__ import annotations

from pathlib import Path

import imageio.v2 as imageio
import numpy as np
from PIL import Image, ImageDraw

from recorder.schema import image_key
from recorder.store import EpisodeStore
from teleworld.progress import progress_bar

BAR = 30  # pixels of text under the frames
TOUCH, FREE = (255, 80, 60), (150, 150, 150)


def episode_video(store: EpisodeStore, episode: int, out: Path, scale: int = 4, show_progress: bool = False) -> dict:
    """Write the episode's frames upscaled ``scale`` times with sim time, step, contact count and touching groups."""
    cams = store.info["cameras"]
    data = store.episode(episode, [image_key(c) for c in cams] + ["sim_time", "contact_count", "contact_summary"])
    groups = ["-".join(g) for g in store.info["contact_groups"]]
    force = _normal_force_per_step(store, episode)
    length = len(data["sim_time"])
    fps = float(store.info["control_rate"])
    out.parent.mkdir(parents=True, exist_ok=True)
    with imageio.get_writer(out, fps=fps, codec="libx264", macro_block_size=1, pixelformat="yuv420p") as writer, \
            progress_bar(show_progress) as bar:
        task = bar.add_task("video", total=length, status=f"episode {episode}", unit="frames")
        for t in range(length):
            frame = np.concatenate([data[image_key(c)][t] for c in cams], axis=1)
            image = Image.fromarray(frame).resize((frame.shape[1] * scale, frame.shape[0] * scale), Image.NEAREST)
            canvas = Image.new("RGB", (image.width, image.height + BAR), (0, 0, 0))
            canvas.paste(image, (0, 0))
            draw = ImageDraw.Draw(canvas)
            draw.text((4, 2), f"ep {episode}  step {t}/{length}  t={data['sim_time'][t]:.2f}s", fill=(255, 255, 255))
            draw.text((4, image.height + 2), f"contacts {int(data['contact_count'][t])}  Fn {force[t]:.1f} N",
                      fill=(255, 255, 255))
            x = 4
            for g, name in enumerate(groups):
                touching = bool(data["contact_summary"][t][g])
                draw.text((x, image.height + 15), name, fill=TOUCH if touching else FREE)
                x += 8 * len(name) + 10
            writer.append_data(np.asarray(canvas))
            bar.update(task, advance=1)
    return {"frames": length, "fps": fps, "path": str(out)}


def _normal_force_per_step(store: EpisodeStore, episode: int) -> np.ndarray:
    """Sum of contact normal forces of each step (N)."""
    offsets, rows = store.episode_contacts(episode)
    normal = rows["force"][:, 0] if len(rows["force"]) else np.zeros(0)
    return np.add.reduceat(np.concatenate([normal, [0.0]]), offsets[:-1]) * (np.diff(offsets) > 0)
