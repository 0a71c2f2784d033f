"""The training loop, top to bottom: devices and ranks, data, model, optimiser, resume, loop, checkpoints.

Runs unchanged on a CPU, one GPU, or several under ``torchrun --nproc_per_node N`` (DDP; each rank draws its
own windows; rank 0 alone logs and checkpoints).
"""

from __future__ import annotations

import math
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from teleworld.cpu import cpu_threads
from teleworld.errors import TeleworldError
from teleworld.progress import progress_bar
from train.calibration import calibrate
from train.checkpoint import CHECKPOINT_NAME, read_checkpoint, save_checkpoint
from train.configs import TrainConfig, check_resume, saved_config
from train.dataset import DataSpec, EpisodeArrays, to_model_inputs
from train.model import WorldModel, WorldModelConfig
from train.objectives import Objective
from train.step import GraphedStep, Step
from train.validation import Validator
from recorder.windows import split_episodes


def captures_step(cfg: TrainConfig, device: torch.device, world: int) -> bool:
    """Whether the run replays its step from a CUDA graph (run.cuda_graph: auto does where it can)."""
    mode = cfg.run.cuda_graph
    if mode != "on":
        return mode == "auto" and device.type == "cuda" and world == 1 and not cfg.run.compile
    if cfg.run.compile:
        raise TeleworldError("run.cuda_graph and run.compile are alternatives; choose one")
    if device.type != "cuda":
        raise TeleworldError(f"run.cuda_graph needs a CUDA device, not {device.type}; drop it or pass --device cuda")
    if world > 1:
        raise TeleworldError("run.cuda_graph captures one process's step; drop it under torchrun (DDP)")
    return True


def init_distributed(device: torch.device) -> tuple[int, int, torch.device]:
    """(rank, world size, this rank's device); starts a process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, device
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    return dist.get_rank(), world, device


def window_starts(windows: np.ndarray, batch_size: int, seed: int, rank: int, step: int) -> np.ndarray:
    """The windows of one step: a pure function of (seed, rank, step), so a resumed run draws the same batches."""
    return np.random.default_rng([seed, rank, step]).choice(windows, batch_size)


def window_length(cfg: TrainConfig) -> int:
    """Steps a training window spans: ``seq_len`` observed frames, or the long rollout's reach if longer."""
    obj = cfg.objective
    return max(cfg.run.seq_len, obj.rollout_context + obj.rollout_steps if obj.rollout_steps else 0)


def lr_at(cfg: TrainConfig, step: int, seconds: float = 0.0) -> float:
    """Linear warmup over the first 5 % (at most 100 steps), then cosine decay to 10 % of the peak.

    With a wall-clock budget (``cfg.minutes``) the decay follows whichever runs out first, steps or time
    (``seconds`` spent training so far), so a run cut by the clock still ends at the low learning rate."""
    cfg = cfg.run
    warmup = min(100, cfg.steps // 20 + 1)
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, cfg.steps - warmup)
    if cfg.minutes:
        progress = min(1.0, max(progress, seconds / (cfg.minutes * 60)))
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def expected_steps(cfg: TrainConfig, done: int, rate: float, seconds: float) -> int:
    """Where the run will stop: at ``steps``, or sooner where its budget runs out at ``rate`` steps/s."""
    cfg = cfg.run
    if not cfg.minutes:
        return cfg.steps
    ahead = max(cfg.log_every, round(rate * max(0.0, cfg.minutes * 60 - seconds)))  # never "done" before the end
    return min(cfg.steps, done + ahead)


def out_of_time(cfg: TrainConfig, seconds: float) -> bool:
    """Whether the run's wall-clock budget (if any) is spent."""
    return bool(cfg.run.minutes) and seconds >= cfg.run.minutes * 60


def loss_status(row: dict) -> str:
    """The logged loss and its terms, e.g. 'loss 312 (image 298 kl_dyn 1 kl_rep 1)'."""
    def num(v: float) -> str:
        return f"{v:.0f}" if abs(v) >= 1000 else f"{v:.3g}"

    terms = " ".join(f"{k} {num(v)}" for k, v in row.items() if k not in ("step", "lr", "total"))
    return f"loss {num(row['total'])} ({terms})"


def build_model(cfg: TrainConfig, spec: DataSpec, goal_dim: int = 0) -> WorldModel:
    """A fresh model sized by ``cfg.model`` for the shapes in ``spec``, with the parts its objective trains: a blend
    over the long rollout's horizon, a reward head (if ``reward_weight``) that sees a task goal of ``goal_dim``
    values."""
    return WorldModel(
        WorldModelConfig(
            image_size=spec.image_size,
            action_dim=len(spec.action_names),
            proprio_dim=spec.proprio_dim,
            contact_dim=spec.contact_dim,
            goal_dim=goal_dim,
            blend_horizon=cfg.objective.rollout_steps if cfg.model.blend else 0,
            reward=cfg.objective.reward_weight > 0,
            **asdict(cfg.model),
        )
    )


class Prefetcher:
    """Gathers the next batches in a background thread (pinned memory on CUDA) so the device never waits; each batch
    holds the keys in ``needs`` (Objective.needs: what the active loss terms read)."""

    def __init__(self, data: EpisodeArrays, windows: np.ndarray, cfg: TrainConfig, rank: int, pin: bool,
                 needs: set[str]):
        self.data, self.windows, self.cfg, self.rank, self.pin, self.needs = data, windows, cfg, rank, pin, needs
        self.pool = ThreadPoolExecutor(max_workers=1)
        self.pending: dict[int, Future] = {}

    def _load(self, step: int) -> dict[str, torch.Tensor]:
        run, obj = self.cfg.run, self.cfg.objective
        starts = window_starts(self.windows, run.batch_size, run.seed, self.rank, step)
        references = rollout = None
        if "reference" in self.needs:  # a frame of the same episode, usually far from the window: see objectives.Pass
            rng = np.random.default_rng([run.seed, self.rank, step, 1])
            references = self.data.random_steps_of_episodes(starts, rng)
        if "rollout_image" in self.needs:  # which imagined frames of the long rollout get decoded: objectives.Rollout
            rng = np.random.default_rng([run.seed, self.rank, step, 2])
            picks = rng.random((len(starts), obj.rollout_steps)).argsort(1)[:, : obj.rollout_frames]
            rollout = np.sort(picks, 1) + obj.rollout_context
        raw = self.data.gather(starts, run.seq_len, references, rollout, window_length(self.cfg), keys=self.needs)
        return {k: v.pin_memory() for k, v in raw.items()} if self.pin else raw

    def get(self, step: int) -> dict[str, torch.Tensor]:
        """The raw batch of ``step``; schedules the following ones."""
        for ahead in range(step, step + max(1, self.cfg.run.prefetch) + 1):
            if ahead < self.cfg.run.steps and ahead not in self.pending:
                self.pending[ahead] = self.pool.submit(self._load, ahead)
        return self.pending.pop(step).result()

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def train(
    data: EpisodeArrays,
    cfg: TrainConfig,
    out_dir: str | Path,
    device: torch.device | str = "cpu",
    show_progress: bool = True,
    resume: bool = False,
) -> dict:
    """Fit a world model on random windows of the training episodes; returns a summary dict (rank 0)."""
    out_dir = Path(out_dir)
    run = cfg.run
    rank, world, device = init_distributed(torch.device(device))
    main_process = rank == 0
    if device.type == "cpu":  # the CPUs this process may use, not the machine's: a second job costs its share
        torch.set_num_threads(cpu_threads())
    torch.manual_seed(run.seed + rank)
    bf16 = run.precision == "bf16" or (run.precision == "auto" and device.type == "cuda")
    captured = captures_step(cfg, device, world)

    # ---- data: split by whole episode; windows never cross episodes ----
    ckpt = _resume_checkpoint(out_dir, data.spec, cfg) if resume else None
    if ckpt is not None:
        train_eps, val_eps = np.array(ckpt["train_episodes"]), np.array(ckpt["val_episodes"])
    elif data.stored_split is not None:  # `teleworld data split` wins over the seeded default
        train_eps, val_eps = data.stored_split["train"], data.stored_split["val"]
    else:
        train, val = split_episodes(len(data.active), run.val_fraction, run.seed)
        train_eps, val_eps = data.active[train], data.active[val]
    windows = data.windows(window_length(cfg), train_eps)
    if len(windows) == 0:
        raise TeleworldError(f"no training episode has {window_length(cfg)} steps; record longer episodes or lower "
                             "seq_len (or rollout_steps)")
    if cfg.objective.rollout_steps and not 1 <= cfg.objective.rollout_context <= run.seq_len:
        raise TeleworldError(f"rollout_context must lie within the window (1..seq_len={run.seq_len})")

    # ---- model and optimiser (architecture from the checkpoint on resume) ----
    saved = WorldModel(WorldModelConfig.from_dict(ckpt["config"])) if ckpt else None
    rewarded = saved.reward_head is not None if saved is not None else cfg.objective.reward_weight > 0
    if rewarded:  # batches carry each episode's task goal, which the reward head is conditioned on
        data.load_goals()
    goals = data.goal.shape[1] if rewarded else 0
    model = saved if saved is not None else build_model(cfg, data.spec, goals)
    if ckpt is None and model.proprio_head is not None and model.standard_heads:  # restored with the weights on resume
        model.set_proprio_stats(*data.proprio_stats(train_eps))
    if ckpt is None and model.reward_head is not None:
        model.set_reward_stats(*data.reward_stats(train_eps))
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=run.lr, weight_decay=run.weight_decay, eps=1e-6)
    start_step, seconds_before = 0, 0.0  # training time of earlier invocations of a resumed run
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        torch.set_rng_state(ckpt["torch_rng"][rank % len(ckpt["torch_rng"])])
        start_step = ckpt["step"]
        seconds_before = ckpt.get("train_seconds", 0.0)
    if run.compile:
        model.encoder.compile()
        model.decoder.compile()
        model.rssm.img_step = torch.compile(model.rssm.img_step)
    objective = Objective(model, cfg.objective)
    ddp = torch.nn.parallel.DistributedDataParallel(objective) if world > 1 else objective
    step_fn: Step | None = None if captured else Step(ddp, optimizer, run.grad_clip, bf16, device)

    extra = {"train_config": cfg.to_dict(), "val_episodes": val_eps.tolist(), "train_episodes": train_eps.tolist()}

    def checkpoint(step: int, final: bool = False) -> Path:
        rng = [torch.get_rng_state()]
        if world > 1:
            rng = [torch.empty_like(rng[0]) for _ in range(world)]
            dist.all_gather_object(rng, torch.get_rng_state())
        if not main_process:
            return out_dir / CHECKPOINT_NAME
        state = {**extra, "optimizer": optimizer.state_dict(), "torch_rng": rng,
                 "train_seconds": seconds_before + time.time() - start}
        if final:  # the contact head's operating point, chosen on training windows (train/calibration.py)
            state["contact_thresholds"] = calibrate(model, data, train_eps, run.seed, device)
        return save_checkpoint(out_dir / CHECKPOINT_NAME, model, data.spec, step, state)

    validator = Validator(data, val_eps, device) if main_process else None
    logger = _tensorboard(out_dir) if main_process else None
    prefetch = Prefetcher(data, windows, cfg, rank, pin=device.type == "cuda", needs=objective.needs)
    history: list[dict] = []
    start = time.time()
    try:
        with progress_bar(show_progress and main_process) as progress:
            budget = f", at most {run.minutes:g} min" if run.minutes else ""
            task = progress.add_task(f"train{budget}", total=run.steps, completed=start_step, status="",
                                     unit="steps")
            done = start_step
            for step in range(start_step, run.steps):
                if _everyone(out_of_time(cfg, time.time() - start), world, device):
                    break
                batch = to_model_inputs(prefetch.get(step), device)
                if step_fn is None:  # captured at the first batch: every later one has its shapes
                    step_fn = GraphedStep(ddp, optimizer, run.grad_clip, bf16, device, batch)
                loss, terms = step_fn(batch, lr_at(cfg, step, time.time() - start))
                if not _finite_everywhere(loss, world):
                    raise TeleworldError(
                        f"loss became {loss.item()} at step {step}; stopped, the last good checkpoint is kept")
                done = step + 1
                if main_process and (step % run.log_every == 0 or done == run.steps):
                    row = {"step": step, "lr": float(optimizer.param_groups[0]["lr"]),
                           **{k: v.item() for k, v in terms.items()}}
                    history.append(row)
                    for key, value in row.items():
                        if key != "step":
                            logger.add_scalar(f"{'optim' if key == 'lr' else 'loss'}/{key}", value, step)
                    rate = (done - start_step) / (time.time() - start)
                    logger.add_scalar("perf/steps_per_s", rate, step)
                    progress.update(task, status=loss_status(row),
                                    total=expected_steps(cfg, done, rate, time.time() - start))
                if validator is not None and run.eval_every and (done % run.eval_every == 0 or done == run.steps):
                    validator.log(model, logger, done)
                    model.train()
                if run.checkpoint_every and done % run.checkpoint_every == 0 and done < run.steps:
                    checkpoint(done)
                progress.advance(task)
            progress.update(task, total=done)  # where it stopped: at the last step or when the clock ran out
        if validator is not None and run.eval_every and start_step < done < run.steps:  # stopped by the clock
            validator.log(model, logger, done)
        path = checkpoint(done, final=True)
    finally:
        prefetch.close()
        if logger is not None:
            logger.close()
    model.eval()
    return {"checkpoint": str(path), "steps": done, "seconds": time.time() - start, "history": history,
            "threads": torch.get_num_threads(),
            "model": model, "val_episodes": val_eps.tolist(), "rank": rank, "world_size": world,
            "validation": validator.last if validator is not None else None}


def resumable_checkpoint(out_dir: str | Path) -> dict:
    """The checkpoint of the run in ``out_dir``, with what resuming it needs: optimiser state and the run's config."""
    ckpt = read_checkpoint(Path(out_dir) / CHECKPOINT_NAME)
    if "optimizer" not in ckpt or "train_config" not in ckpt:
        raise TeleworldError(f"{Path(out_dir) / CHECKPOINT_NAME} holds no optimiser state and cannot be resumed")
    return ckpt


def _resume_checkpoint(out_dir: Path, spec: DataSpec, cfg: TrainConfig) -> dict:
    ckpt = resumable_checkpoint(out_dir)
    DataSpec(**ckpt["data_spec"]).check_compatible(spec)
    check_resume(saved_config(ckpt), cfg.to_dict())
    if cfg.run.steps < ckpt["step"]:
        raise TeleworldError(f"the run in {out_dir} is at step {ckpt['step']}, past steps={cfg.run.steps}; "
                             "ask for more")
    return ckpt


def _everyone(flag: bool, world: int, device: torch.device) -> bool:
    """True on every rank when it is true on any (ranks stop together, e.g. when the clock runs out)."""
    if world == 1:
        return flag
    agreed = torch.tensor(float(flag), device=device)
    dist.all_reduce(agreed, op=dist.ReduceOp.MAX)
    return bool(agreed.item())


def _finite_everywhere(loss: torch.Tensor, world: int) -> bool:
    finite = torch.isfinite(loss.detach()).float()
    if world > 1:
        dist.all_reduce(finite, op=dist.ReduceOp.MIN)
    return bool(finite.item())


def _tensorboard(out_dir: Path):
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(out_dir / "tensorboard"))
