"""`teleworld generate`: scripted episodes at volume, simulated in parallel, committed by one writer.

    driver (this process, the only writer)    workers (W spawned processes, or W Ray tasks at a time)
    plan seeds: first..., skipping stored ones
    hand each idle worker a seed  ──────────►  build scene + operator once per process
                                               reset(seed), run the operator, render one episode
    commit episodes in seed order  ◄────────  (seed, stacked arrays, labels)

A worker that dies loses only the episode it was simulating; the driver commits everything else, then fails
with a hint to rerun with ``--resume``, which tops the store up to N episodes without repeating a seed.
An episode depends only on its seed and the job, never on the worker or the backend.
"""

from __future__ import annotations

import errno
import multiprocessing as mp
import signal
import time
import traceback
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import typer
from rich.console import Console

from teleworld.errors import TeleworldError
from teleworld.progress import progress_bar

if TYPE_CHECKING:
    from recorder import EpisodeStore
    from teleop.scenes import Scene

BACKENDS = ("local", "ray")
DEFAULT_STEPS = 120  # control steps per episode for a scene that declares no episode_steps


@dataclass(frozen=True)
class Job:
    """Everything a worker needs to rebuild the scene and operator (picklable, hashable)."""

    scene: str
    steps: int
    image_size: int = 64
    expert_ratio: float = 1.0
    randomize: bool = False
    perturb: float = 0.0

    def generator_info(self) -> dict:
        """The options recorded with each episode (and matched on --resume); ``perturb`` only when used."""
        info = {"expert_ratio": self.expert_ratio, "randomize": self.randomize}
        return {**info, "perturb": self.perturb} if self.perturb else info


@dataclass
class Episode:
    """One simulated episode on its way from a worker to the writer."""

    seed: int
    steps: dict[str, np.ndarray]  # data/<key> -> (T, ...)
    contacts: dict[str, np.ndarray]  # contacts/<key> -> (N, ...)
    info: dict  # labels: operator, device, success, final_reward, randomization, ...


# ----- the worker side -----
class _Steps:
    """Collects run_episode's steps in memory and stacks them into whole arrays."""

    def __init__(self) -> None:
        self.rows: list[tuple[dict, dict]] = []

    def add(self, step: dict, contacts: dict) -> None:
        self.rows.append((step, contacts))

    def stacked(self, specs: dict, contact_specs: dict) -> tuple[dict, dict]:
        steps = {k: np.stack([np.asarray(s[k], spec.dtype) for s, _ in self.rows]) for k, spec in specs.items()}
        contacts = {k: np.concatenate([np.asarray(c[k], spec.dtype).reshape(-1, *spec.shape) for _, c in self.rows])
                    for k, spec in contact_specs.items()}
        return steps, contacts


def build_scene(job: Job) -> Scene:
    """The job's scene (randomized when asked; only scenes that declare a randomization accept that)."""
    from teleop.scenes import load

    extra = {"randomize": True} if job.randomize else {}
    return load(job.scene, image_size=(job.image_size, job.image_size), **extra)


_BUILT: dict[Job, tuple] = {}  # per process: scene, operator and array specs of each job seen


def simulate(job: Job, seed: int) -> Episode:
    """Simulate and render one episode of ``job`` from ``seed``, in memory (runs in a worker)."""
    from recorder.schema import CONTACT_SPECS, step_specs
    from recorder.writer import timing_health
    from teleop.devices.scripted import mixed_operator
    from teleop.loop import run_episode

    if job not in _BUILT:
        scene = build_scene(job)
        operator = mixed_operator(scene, job.expert_ratio, job.perturb)
        operator.connect()
        _BUILT[job] = scene, operator, step_specs(scene.info())
    scene, operator, specs = _BUILT[job]
    start, buffer = time.time(), _Steps()
    stats = run_episode(scene, operator, buffer, job.steps, seed)
    steps, contacts = buffer.stacked(specs, CONTACT_SPECS)
    success = scene.success()
    info = {"start_time": start, "device": operator.current.name, "operator": operator.label,
            "success": success, "final_reward": float(scene.reward()), "goal": scene.goal().tolist(),
            "overruns": stats.overruns,
            "timing": timing_health(steps["wall_time"], scene.control_rate),
            "generator": job.generator_info()}
    if job.randomize:
        info["randomization"] = scene.randomized
    return Episode(seed, steps, contacts, info)


def _serve(job: Job, conn: Connection) -> None:
    """A local worker: receive a seed, send back its episode (or the traceback of its failure); None ends it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    try:
        while (seed := conn.recv()) is not None:
            try:
                episode = simulate(job, seed)
            except Exception:  # a bug, not a lost worker: the driver re-raises it
                episode = f"seed {seed} failed in a worker:\n{traceback.format_exc()}"
            conn.send(episode)
    except (EOFError, BrokenPipeError):  # the driver is gone
        pass


# ----- the driver side -----
class SeedOrder:
    """Releases episodes in planned seed order; a lost seed stops holding the later ones back."""

    def __init__(self, seeds: list[int], emit: Callable[[Episode], None]):
        self.pending, self.emit = deque(seeds), emit
        self.ready: dict[int, Episode | None] = {}
        self.lost: list[int] = []

    def add(self, episode: Episode) -> None:
        self.ready[episode.seed] = episode
        self._release()

    def lose(self, seed: int) -> None:
        self.lost.append(seed)
        self.ready[seed] = None
        self._release()

    def finish(self) -> None:
        """Emit whatever is still held back (seeds that never ran count as lost)."""
        for seed in self.pending:
            episode = self.ready.get(seed)
            if episode is not None:
                self.emit(episode)
            elif seed not in self.lost:
                self.lost.append(seed)
        self.pending.clear()

    def _release(self) -> None:
        while self.pending and self.pending[0] in self.ready:
            episode = self.ready.pop(self.pending.popleft())
            if episode is not None:
                self.emit(episode)


def run_local(job: Job, seeds: list[int], workers: int, order: SeedOrder) -> None:
    """Simulate ``seeds`` in ``workers`` spawned processes, each fed one seed at a time through its own pipe."""
    ctx = mp.get_context("spawn")  # EGL contexts do not survive fork
    todo = deque(seeds)
    busy: dict[Connection, tuple[mp.Process, int | None]] = {}

    def feed(conn: Connection, proc: mp.Process) -> None:
        """Give an idle worker its next seed, or retire it."""
        seed = todo.popleft() if todo else None
        try:
            conn.send(seed)
        except OSError:  # it died while idle: nothing is lost, another worker takes the seed
            if seed is not None:
                todo.appendleft(seed)
            seed = None
        if seed is None:
            busy.pop(conn, None)
            proc.join()
        else:
            busy[conn] = proc, seed

    for _ in range(min(workers, len(seeds))):
        conn, child = ctx.Pipe()
        proc = ctx.Process(target=_serve, args=(job, child), daemon=True)
        proc.start()
        child.close()
        feed(conn, proc)
    try:
        while busy:
            for conn in wait(list(busy)):
                proc, seed = busy[conn]
                try:
                    episode = conn.recv()
                except (EOFError, OSError):  # the worker died: only its open episode is lost
                    del busy[conn]
                    proc.join()
                    order.lose(seed)
                    continue
                if isinstance(episode, str):
                    raise RuntimeError(episode)
                order.add(episode)
                feed(conn, proc)
    finally:
        for proc, _ in busy.values():
            proc.terminate()


def run_ray(job: Job, seeds: list[int], workers: int, order: SeedOrder) -> None:
    """Simulate ``seeds`` as Ray tasks, at most ``workers`` at a time (joins RAY_ADDRESS or starts a local Ray)."""
    try:
        import ray
    except ImportError:
        raise TeleworldError("--backend ray needs Ray: pip install 'teleworld[ray]'") from None
    started = not ray.is_initialized()
    if started:
        ray.init(include_dashboard=False, log_to_driver=False)
    task = ray.remote(num_cpus=1, max_retries=2)(simulate)  # a task whose worker dies is run again
    todo, running = deque(seeds), {}
    try:
        while todo or running:
            while todo and len(running) < workers:
                seed = todo.popleft()
                running[task.remote(job, seed)] = seed
            done, _ = ray.wait(list(running), num_returns=1)
            seed = running.pop(done[0])
            try:
                order.add(ray.get(done[0]))
            except ray.exceptions.RayTaskError:  # a bug in the task: not retried, re-raised
                raise
            except ray.exceptions.RayError:  # its worker or node died more often than retried
                order.lose(seed)
    finally:
        if started:
            ray.shutdown()


def plan_seeds(stored: set[int], first: int, count: int) -> list[int]:
    """The first ``count`` seeds from ``first`` upward that are not already ``stored``."""
    seeds, seed = [], first
    while len(seeds) < count:
        if seed not in stored:
            seeds.append(seed)
        seed += 1
    return seeds


def generate_episodes(store: EpisodeStore, job: Job, seeds: list[int], workers: int = 1, backend: str = "local",
                      on_episode: Callable[[int], None] | None = None) -> list[int]:
    """Simulate ``seeds`` in parallel and commit each episode to ``store``; returns the seeds that were lost."""
    if backend not in BACKENDS:
        raise TeleworldError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if workers < 1:
        raise TeleworldError(f"--workers must be at least 1, got {workers}")

    def commit(episode: Episode) -> None:
        store.write_episode(episode.steps, episode.contacts, {"seed": episode.seed, "scene": job.scene,
                                                              **episode.info})
        if on_episode is not None:
            on_episode(episode.seed)

    order = SeedOrder(seeds, commit)
    if not seeds:
        return []
    try:
        (run_ray if backend == "ray" else run_local)(job, seeds, workers, order)
    finally:
        order.finish()
    return order.lost


def _seeds_to_run(store: EpisodeStore, first: int, episodes: int) -> list[int]:
    """For --resume: the lowest seeds from ``first`` not stored yet, enough to bring the store to ``episodes``."""
    infos = (store.episode_info(i) for i in range(store.num_episodes))
    stored = {int(info["seed"]) for info in infos if info.get("seed") is not None}
    return plan_seeds(stored, first, max(episodes - store.num_episodes, 0))


def _disk_full(out: Path, exc: OSError, committed: int, target: int) -> TeleworldError:
    """The one line for a disk that filled mid-run: committed episodes are whole (the end is written last)."""
    return TeleworldError(f"{out}: {exc.strerror.lower()} while writing; its {committed} committed episodes are "
                          f"safe. Free space, then rerun with --resume --episodes {target} to top the store up")


def _open_store(out: Path, sim: Scene, job: Job, append: bool, resume: bool) -> EpisodeStore:
    """Open or create the output store and check that it holds this job's kind of episodes."""
    from recorder import EpisodeStore

    if not (append or resume) or (resume and not out.exists()):
        return EpisodeStore.create(out, sim.info())
    store = EpisodeStore.open(out, mode="a")
    theirs, ours = store.info, sim.info()
    for key in ("scene", "image_size", "cameras", "action_spec", "step_extras"):
        if theirs.get(key) != ours.get(key):
            store.close()
            raise TeleworldError(f"{out} holds {key}={theirs.get(key)}, this run makes {key}={ours.get(key)}")
    if store.num_episodes:
        stored = store.episode_info(store.num_episodes - 1).get("generator")
        wanted = job.generator_info()
        if resume and stored is not None and stored != wanted:
            store.close()
            raise TeleworldError(f"{out} was generated with {stored}; resume it with the same options")
    return store


def generate(
    out: Path = typer.Option(..., "--out", help="Zarr store to create (or extend with --append / --resume)."),
    scene: str = typer.Option("push", help="Scene name (see `teleworld scenes`)."),
    episodes: int = typer.Option(20, min=1, help="Episodes to record (with --resume: the store's target size)."),
    steps: int = typer.Option(None, min=1, help="Control steps per episode [default: the scene's episode_steps, "
                                                "120 for most, 200 for arm]."),
    seed: int = typer.Option(0, help="Seed of the first episode; episode i uses seed + i."),
    image_size: int = typer.Option(64, help="Square camera frame side in pixels."),
    append: bool = typer.Option(False, help="Append N more episodes to an existing store."),
    resume: bool = typer.Option(False, help="Top the store up to N episodes, skipping seeds already stored."),
    workers: int = typer.Option(1, min=1, help="Worker processes (or concurrent Ray tasks) that simulate+render."),
    backend: str = typer.Option("local", help="local (spawned processes) or ray (needs teleworld[ray])."),
    expert_ratio: float = typer.Option(1.0, min=0.0, max=1.0,
                                       help="Share of episodes driven by the scene's expert; the rest explore."),
    randomize: bool = typer.Option(False, help="Domain randomization: draw the scene's declared parameters."),
    perturb: float = typer.Option(0.0, min=0.0, max=1.0,
                                  help="Per step of an expert episode, the chance that random actions interrupt "
                                       "the expert for a few steps (it then recovers); such episodes are labelled "
                                       "'perturbed'. Shows a model what the expert never does (docs/generate.md)."),
) -> None:
    """Record episodes driven by scripted operators (no human needed), in parallel."""
    if append and resume:
        raise TeleworldError("--append and --resume exclude each other")
    if backend not in BACKENDS:
        raise TeleworldError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    from teleop.scenes import SCENES

    if randomize and scene in SCENES and getattr(SCENES[scene], "randomization", None) is None:
        raise TeleworldError(f"scene {scene!r} declares no domain randomization")
    steps = steps or getattr(SCENES.get(scene), "episode_steps", DEFAULT_STEPS)
    if perturb and expert_ratio == 0.0:
        raise TeleworldError("--perturb interrupts the expert's episodes, and --expert-ratio 0 records none")
    job = Job(scene, steps, image_size, expert_ratio, randomize, perturb)
    sim = build_scene(job)  # an unknown scene fails here, before anything is written
    console = Console()
    with _open_store(out, sim, job, append, resume) as store:
        have = store.num_episodes
        seeds = _seeds_to_run(store, seed, episodes) if resume else list(range(seed, seed + episodes))
        with progress_bar() as progress:
            task = progress.add_task(f"generate {scene} ×{workers} ({backend})", total=len(seeds), status="",
                                     unit="episodes")
            try:
                lost = generate_episodes(store, job, seeds, workers, backend, lambda _seed: progress.advance(task))
            except OSError as exc:
                if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                    raise
                raise _disk_full(out, exc, store.num_episodes, have + len(seeds)) from exc
        console.print(f"{store.num_episodes} episodes, {store.num_steps} steps in {out}")
        if lost:
            raise TeleworldError(f"{len(lost)} episode(s) lost to a dead worker (seeds {sorted(lost)}); "
                                 f"rerun with --resume --episodes {have + len(seeds)} to top the store up")


def register(app: typer.Typer) -> None:
    app.command()(generate)
