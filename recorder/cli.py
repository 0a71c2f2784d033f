"""recorder's sub-commands: `teleworld data ...` (thin: parse, call recorder/, print)."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from teleworld.errors import TeleworldError

data_app = typer.Typer(help="Inspect, check, edit and export episode stores.", no_args_is_help=True)
STORE = typer.Argument(..., help="Path (or fsspec URL) of a teleworld Zarr store.")


@data_app.command()
def info(store: Path = STORE,
         as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """Summarise a store: scene, cameras, episodes, steps, uncommitted data, deletion marks, split."""
    from recorder import EpisodeStore

    s = EpisodeStore.open(store)
    meta = {k: v for k, v in s.info.items() if k != "mjcf"}
    infos = [s.episode_info(i) for i in range(s.num_episodes)]
    edits = s.edits
    summary = {**meta, "episodes": s.num_episodes, "steps": s.num_steps, "uncommitted_steps": s.uncommitted_steps(),
               "deleted": edits["deleted"], "partial": [i for i, e in enumerate(infos) if e.get("partial")],
               "split": edits["split"] and {k: len(edits["split"][k]) for k in ("train", "val")},
               "episode_lengths": [e["length"] for e in infos]}
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    table = Table("field", "value", title=str(store))
    for key in ("scene", "schema_version", "control_rate", "cameras", "image_size", "episodes", "steps",
                "uncommitted_steps", "deleted", "partial", "split", "mujoco_version"):
        table.add_row(key, str(summary.get(key)))
    table.add_row("actions", ", ".join(meta["action_spec"]["names"]))
    Console().print(table)


@data_app.command()
def validate(store: Path = STORE) -> None:
    """Check every invariant: lengths agree, ends increase, info parses, no NaN, time runs forward, chunks decode."""
    from recorder import EpisodeStore
    from recorder.health import validate as run

    s = EpisodeStore.open(store)
    report = run(s, show_progress=True)
    console = Console(stderr=True)
    for note in report.notes:
        console.print(f"note: {note}")
    for problem in report.problems[1:]:
        console.print(f"problem: {problem}")
    if not report.ok:
        more = f" (and {len(report.problems) - 1} more above)" if len(report.problems) > 1 else ""
        raise TeleworldError(f"{store} is invalid: {report.problems[0]}{more}")
    Console().print(f"{store}: valid, {s.num_episodes} episodes, {s.num_steps} steps")


@data_app.command()
def repair(store: Path = STORE,
           salvage: bool = typer.Option(False, help="Keep the crashed tail as an episode marked partial.")) -> None:
    """Clean up after a crashed writer: cut off (or salvage) the uncommitted tail, remove stray temp files."""
    from recorder import EpisodeStore
    from recorder.health import repair as run

    with EpisodeStore.open(store, mode="a") as s:
        result = run(s, salvage)
        Console().print(f"{store}: salvaged {result['salvaged_steps']} steps"
                        + (f" as partial episode {result['episode']}" if result["episode"] is not None else "")
                        + f", dropped {result['dropped_steps']}, removed {result['removed_temp_files']} temp files;"
                        f" {s.num_episodes} episodes")


@data_app.command()
def delete(store: Path = STORE,
           episodes: list[int] = typer.Argument(..., help="Episode indices."),
           compact: bool = typer.Option(False, help="Rewrite the store without the deleted episodes (renumbers)."),
           undo: bool = typer.Option(False, help="Remove the deletion marks of these episodes instead.")) -> None:
    """Mark episodes deleted (reversible; loaders and exports skip them); --compact rewrites the store."""
    from recorder import EpisodeStore
    from recorder.edit import compact as run_compact
    from recorder.edit import mark_deleted, restore

    with EpisodeStore.open(store, mode="a") as s:
        marked = restore(s, episodes) if undo else mark_deleted(s, episodes)
    Console().print(f"{store}: episodes marked deleted: {marked or 'none'}")
    if compact and not undo:
        result = run_compact(str(store), show_progress=True)
        Console().print(f"{store}: compacted, {result['kept']} episodes kept, {result['removed']} removed")


@data_app.command()
def trim(store: Path = STORE, episode: int = typer.Argument(..., help="Episode index."),
         start: int = typer.Option(0, help="First step to keep."),
         end: int = typer.Option(None, help="Step after the last to keep (negative counts from the end).")) -> None:
    """Keep only steps [start, end) of one episode (rewrites the store)."""
    from recorder.edit import trim as run

    result = run(str(store), episode, start, end, show_progress=True)
    Console().print(f"{store}: episode {episode} trimmed from {result['was']} to {result['length']} steps")


@data_app.command()
def split(store: Path = STORE, val: float = typer.Option(0.1, help="Fraction of episodes for validation."),
          seed: int = typer.Option(0, help="Seed of the split.")) -> None:
    """Split the active episodes into train/val by whole episode and store the split in the store."""
    from recorder import EpisodeStore
    from recorder.edit import store_split

    with EpisodeStore.open(store, mode="a") as s:
        result = store_split(s, val, seed)
    Console().print(f"{store}: train {len(result['train'])} episodes, val {result['val']}")


@data_app.command()
def merge(a: Path = typer.Argument(..., help="First store."), b: Path = typer.Argument(..., help="Second store."),
          out: Path = typer.Option(..., "--out", help="New store to write.")) -> None:
    """Write the active episodes of A then B into a new store (their schemas must agree)."""
    from recorder.edit import merge as run

    result = run(str(a), str(b), str(out), show_progress=True)
    Console().print(f"{out}: {result['episodes']} episodes ({result['from_a']} from {a}, {result['from_b']} from {b})")


class ExportFormat(str, Enum):
    lerobot = "lerobot"
    diffusion_policy = "diffusion-policy"


@data_app.command()
def export(store: Path = STORE, out: Path = typer.Option(..., "--out", help="Directory to create."),
           fmt: ExportFormat = typer.Option(..., "--format", help="lerobot (v3.0) or diffusion-policy (zarr 2)."),
           task: str = typer.Option(None, help="LeRobot task string (default: the scene name)."),
           rename: list[str] = typer.Option(None, "--rename", help="diffusion-policy: old=new renames data/<old> "
                                            "to the key a DP task config expects (repeatable).")) -> None:
    """Export the active episodes for another toolkit's loader."""
    from recorder import EpisodeStore
    from recorder.export import export_diffusion_policy, export_lerobot, parse_renames

    renames = parse_renames(rename)
    if renames and fmt is not ExportFormat.diffusion_policy:
        raise TeleworldError("--rename applies to --format diffusion-policy")
    s = EpisodeStore.open(store)
    if fmt is ExportFormat.lerobot:
        result = export_lerobot(s, out, task, show_progress=True)
    else:
        result = export_diffusion_policy(s, out, show_progress=True, rename=renames)
    Console().print(f"{out}: {fmt.value} export, {result['episodes']} episodes")


@data_app.command()
def video(store: Path = STORE, episode: int = typer.Argument(..., help="Episode index."),
          out: Path = typer.Option(None, "--out", help="MP4 to write (default: episode_<EP>.mp4)."),
          scale: int = typer.Option(4, min=1, help="Upscaling factor of the frames.")) -> None:
    """Write an MP4 of one episode with sim time, step, contact count, normal force and touching groups."""
    from recorder import EpisodeStore
    from recorder.video import episode_video

    out = out or Path(f"episode_{episode}.mp4")
    result = episode_video(EpisodeStore.open(store), episode, out, scale, show_progress=True)
    Console().print(f"{out}: {result['frames']} frames at {result['fps']:g} fps")


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
