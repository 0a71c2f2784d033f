"""replay's sub-commands: `teleworld replay`, `view`, `dream` and `plan`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console


def replay_command(
    model: Path = typer.Option(..., "--model", help="Run directory or checkpoint file."),
    data: Path = typer.Option(..., "--data", help="Episode store to replay."),
    out: Path = typer.Option(..., "--out", help="Directory for report.html, metrics.json/.csv, plots, videos."),
    context: int = typer.Option(5, help="Real frames observed before imagining (K)."),
    horizon: int = typer.Option(50, help="Open-loop steps imagined with the real actions (H)."),
    windows: int = typer.Option(16, help="Windows drawn from held-out episodes."),
    seed: int = typer.Option(0, help="Seed of the window draw, the action shuffle and the bootstrap."),
    video_windows: int = typer.Option(4, help="Windows shown in the rollout videos."),
    all_episodes: bool = typer.Option(False, help="Draw from every episode (a store the model never saw), "
                                                  "not only the run's held-out ones."),
    simulator: bool = typer.Option(False, help="Also re-run the scene from the recorded states with the recorded "
                                               "actions (a check of the data, shown as a fourth video row)."),
    device: str = typer.Option("cpu", help="cpu, cuda or auto."),
) -> None:
    """Compare imagined rollouts with the real ones and with baselines on held-out episodes."""
    from replay.evaluate import evaluate
    from replay.report import summary_lines
    from teleworld.device import resolve_device

    metrics = evaluate(model, data, out, context, horizon, windows, seed, resolve_device(device),
                       episodes="all" if all_episodes else None, video_windows=video_windows, simulator=simulator)
    console = Console()
    for line in summary_lines(metrics):
        console.print(line)
    console.print(metrics["action_sensitivity"]["verdict"])
    if metrics.get("simulator_scene_changed"):
        console.print("warning: the scene has changed since this data was recorded; the simulator cannot match it")
    console.print(f"report: {out / 'report.html'}")


def view_command(
    model: Path = typer.Option(..., "--model", help="Run directory or checkpoint file."),
    data: Path = typer.Option(..., "--data", help="Episode store to browse."),
    context: int = typer.Option(5, help="Initial context length K."),
    horizon: int = typer.Option(50, help="Initial horizon H."),
    scale: int = typer.Option(4, min=1, help="Screen pixels per image pixel."),
    device: str = typer.Option("cpu", help="cpu, cuda or auto."),
) -> None:
    """Browse real vs imagined rollouts in a window (keys are listed on screen)."""
    from replay.view import run_view
    from teleworld.device import resolve_device

    run_view(model, data, context, horizon, scale, resolve_device(device))


def dream_command(
    model: Path = typer.Option(..., "--model", help="Run directory or checkpoint file."),
    scene: str = typer.Option(None, "--scene", help="Scene to drive; default: the one the model was trained on."),
    seed: int = typer.Option(0, help="Seed of the scene's initial state."),
    operator: str = typer.Option("keyboard", "--operator", help="keyboard or gamepad."),
    bindings: Path = typer.Option(None, help="TOML file overriding the scene's default bindings (docs/teleop.md)."),
    scale: int = typer.Option(4, min=1, help="Screen pixels per image pixel."),
    device: str = typer.Option("cpu", help="Torch device of the model: cpu, cuda or auto."),
    plan: bool = typer.Option(False, "--plan", help="The planner drives (model with a reward head); the operator's "
                                                    "keys or stick move the goal."),
    candidates: int = typer.Option(64, help="With --plan: candidates per iteration."),
    horizon: int = typer.Option(12, help="With --plan: knots each candidate looks ahead."),
    repeat: int = typer.Option(4, help="With --plan: control steps per knot."),
    iterations: int = typer.Option(2, help="With --plan: refits per replanning step."),
) -> None:
    """Drive the simulator and the world model side by side with the keyboard or a gamepad; R resyncs."""
    from replay.dream import run_dream
    from replay.planning import PlannerConfig
    from teleworld.device import resolve_device

    cfg = PlannerConfig(candidates=candidates, horizon=horizon, repeat=repeat, iterations=iterations,
                        elites=max(4, candidates // 8)) if plan else None
    run_dream(model, scene, seed, scale, resolve_device(device), operator, bindings, cfg)


def plan_command(
    model: list[Path] = typer.Option(..., "--model", help="Run directory or checkpoint file (with a reward head), "
                                                          "an image world model or a state model (train --config "
                                                          "state); repeat it to plan with an ensemble of runs."),
    out: Path = typer.Option(..., "--out", help="Directory for plan.json, episodes.csv, calibration.csv, videos, "
                                                "report.html."),
    episodes: int = typer.Option(50, help="Episodes per method (the same seeds for every method)."),
    steps: int = typer.Option(120, help="Control steps per episode at most; an episode ends at the scene's success."),
    planner: str = typer.Option("cem", help="cem or mppi."),
    candidates: int = typer.Option(256, help="Action sequences imagined per iteration (one batched call)."),
    horizon: int = typer.Option(16, help="Knots each candidate looks ahead."),
    repeat: int = typer.Option(1, help="Control steps each knot's action is held (reach: horizon x repeat steps)."),
    iterations: int = typer.Option(3, help="Refits per replanning step."),
    elites: int = typer.Option(32, help="Top candidates each refit uses."),
    replan: int = typer.Option(1, help="Knots executed per plan before replanning."),
    samples: int = typer.Option(1, help="Sampled futures per candidate (1: the latent's expected value)."),
    spread_penalty: float = typer.Option(0.0, help="Score = mean imagined return - this x their spread (over "
                                                   "sampled futures and ensemble members)."),
    shaping: float = typer.Option(1.0, help="Weight of the scene's shaping term in each step's reward (push: minus "
                                            "the pusher's distance to the spot behind the box; 0: the reward "
                                            "alone)."),
    seed: int = typer.Option(100_000, help="Episode i resets the scene with seed + i (use seeds the run never "
                                           "trained on)."),
    methods: str = typer.Option("model,random,oracle,expert", help="Comma-separated subset of model, random, "
                                                                   "oracle, expert."),
    oracle_candidates: int = typer.Option(64, help="The oracle's candidates (it steps MuJoCo per candidate)."),
    oracle_iterations: int = typer.Option(2, help="The oracle's refits per replanning step."),
    video_episodes: int = typer.Option(1, min=0, help="Episodes drawn into each method's video."),
    rank_checks: int = typer.Option(0, min=0, help="The model's first N plans per episode: also score their "
                                                   "candidates in the simulator and report how well the model "
                                                   "ranked them (Spearman rho; not timed)."),
    record: Path | None = typer.Option(None, "--record", help="Also record every episode run into this Zarr "
                                                               "store (created, or appended to), to train on what "
                                                               "the planner did; use seeds you will not evaluate on."),
    device: str = typer.Option("cpu", help="Torch device of the model: cpu, cuda or auto."),
    compile: bool = typer.Option(False, "--compile", help="torch.compile the model's imagination: compiled once "
                                                           "before the first episode (tens of seconds), then "
                                                           "1.1-1.5x faster replanning on a CPU (docs/planning.md)."),
) -> None:
    """Reach the scene's goal by planning with the world model; scored in the simulator against baselines."""
    from replay.plan import PlanSettings, run_plan
    from replay.planning import PlannerConfig
    from teleworld.device import resolve_device

    cfg = PlannerConfig(planner=planner, candidates=candidates, horizon=horizon, repeat=repeat, iterations=iterations,
                        elites=min(elites, candidates), samples=samples, spread_penalty=spread_penalty, shaping=shaping,
                        compile=compile)
    settings = PlanSettings(episodes=episodes, steps=steps, replan=replan, seed=seed,
                            methods=tuple(m.strip() for m in methods.split(",") if m.strip()),
                            oracle_candidates=oracle_candidates, oracle_iterations=oracle_iterations,
                            video_episodes=video_episodes, rank_checks=rank_checks)
    summary = run_plan(model[0], out, cfg, settings, resolve_device(device), ensemble=model[1:], record=record)
    console = Console()
    for name, s in summary["methods"].items():
        ms = "" if s["plan_ms_p50"] is None else f", plan {s['plan_ms_p50']:.1f} ms p50 / {s['plan_ms_p99']:.1f} p99"
        console.print(f"{name}: success {s['success_rate']:.2f} [{s['ci'][0]:.2f}, {s['ci'][1]:.2f}] "
                      f"({s['successes']}/{s['episodes']}), final distance {s['final_distance_mean']:.3f}{ms}")
        if "ranking" in s and s["ranking"]["rho_mean"] is not None:
            r = s["ranking"]
            console.print(f"{name}: ranks candidates as the simulator does with rho {r['rho_mean']:.2f} (mean over "
                          f"{r['checks']} plans); its favourite's true-return quantile {r['chosen_quantile_mean']:.2f}")
    console.print(f"report: {out / 'report.html'}")


def register(app: typer.Typer) -> None:
    app.command("replay")(replay_command)
    app.command("view")(view_command)
    app.command("dream")(dream_command)
    app.command("plan")(plan_command)
