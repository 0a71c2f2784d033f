"""Trainer: configs, resume after a kill, NaN stop, DDP under torchrun with gloo."""

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch

from recorder import EpisodeStore
from teleworld.errors import TeleworldError
from train.checkpoint import read_checkpoint
from train.configs import TrainConfig, config_values, make_config, parse_overrides, resume_config, saved_config
from train.dataset import DataSpec, EpisodeArrays
from train.loop import Prefetcher, build_model, lr_at, train, window_length, window_starts
from train.objectives import Objective

ENV = {**os.environ, "MUJOCO_GL": "egl"}


@pytest.fixture()
def data(push_store):
    store = EpisodeStore.open(push_store)
    return EpisodeArrays(store, DataSpec.from_store(store))


SPEC = DataSpec(scene="push", camera="overhead", image_size=64, action_names=["vx", "vy"], proprio_dim=4,
                contact_dim=2)


def test_presets_toml_files_and_overrides(tmp_path):
    assert make_config("tiny").model.depth == 8
    assert make_config("small", lr=None).run.lr == 1e-3  # None means "not given"
    custom = tmp_path / "mine.toml"
    custom.write_text('depth = 4\n[run]\nprecision = "fp32"\n')  # flat keys and section tables
    cfg = make_config(str(custom), **parse_overrides(["steps=7", "compile=true"]))
    assert (cfg.model.depth, cfg.run.precision, cfg.run.steps, cfg.run.compile) == (4, "fp32", 7, True)
    with pytest.raises(TeleworldError, match="unknown config keys: bogus"):
        make_config("tiny", bogus=1)
    with pytest.raises(TeleworldError, match="unknown config 'huge'"):
        make_config("huge")
    with pytest.raises(TeleworldError, match="model.blend is learned on the long rollout"):  # small blends
        make_config("small", **parse_overrides(["objective.rollout_steps=0"]))


def test_set_overrides_take_dotted_and_flat_keys_into_their_section():
    cfg = make_config("tiny", **parse_overrides(["model.deter=32", "hidden=48", "objective.kl_rep=0.2",
                                                 "free_nats=0.5", "run.lr=5e-4", "seq_len=6"]))
    assert (cfg.model.deter, cfg.model.hidden, cfg.model.depth) == (32, 48, 8)  # depth: still the preset's
    assert (cfg.objective.kl_rep, cfg.objective.free_nats, cfg.run.lr, cfg.run.seq_len) == (0.2, 0.5, 5e-4, 6)
    assert config_values(None, **{"model.deter": 32, "lr": 1e-4}) == {"model": {"deter": 32}, "objective": {},
                                                                      "run": {"lr": 1e-4}}
    with pytest.raises(TeleworldError, match="unknown config keys: model.lr, run.nope"):  # a key of another section
        make_config("tiny", **parse_overrides(["model.lr=1e-3", "run.nope=1"]))


def test_loss_knobs_from_the_command_line_reach_the_objective_and_sizes_the_model():
    cfg = make_config("tiny", **parse_overrides(["free_nats=0.5", "kl_rep=0.2", "openloop_weight=0.25"]))
    model = build_model(cfg, SPEC)
    weights = {type(term).__name__: term.weight for term in Objective(model, cfg.objective).terms}
    assert (weights["KLRep"], weights["OpenLoop"], weights["Heads"]) == (0.2, 0.25, cfg.objective.head_weight)
    assert (model.cfg.depth, model.reward_head is not None, model.blend) == (8, True, None)
    images = torch.rand(2, 5, 3, 64, 64)
    torch.manual_seed(0)
    batch = {"image": images, "action": torch.zeros(2, 5, 2), "proprio": torch.zeros(2, 5, 4),
             "contact": torch.zeros(2, 5, 2), "reward": torch.zeros(2, 5)}
    _, terms = Objective(model, cfg.objective)(batch)
    assert terms["kl_dyn"].item() >= 0.5  # clipped below at the free nats given


def test_the_loader_brings_only_the_keys_the_active_terms_need(data):
    def batch(**overrides) -> dict:
        cfg = make_config("tiny", **overrides)
        needs = Objective(build_model(cfg, data.spec, goal_dim=0), cfg.objective).needs
        windows = data.windows(window_length(cfg))
        return Prefetcher(data, windows, cfg, rank=0, pin=False, needs=needs)._load(step=0)

    plain = batch(reward_weight=0)  # no rollout, no reward head: tiny's recipe minus the reward
    assert set(plain) == {"image", "action", "proprio", "contact", "reference"}
    assert "reference" not in batch(composite=False, reward_weight=0)  # only a composite decoder paints over it
    rollout = batch(seq_len=6, rollout_steps=10, rollout_context=3)
    assert {"rollout_image", "rollout_step", "span_proprio", "span_contact", "reward", "span_reward"} <= set(rollout)
    assert rollout["span_proprio"].shape[1] == rollout["action"].shape[1] == 13


def test_data_order_depends_only_on_seed_rank_and_step():
    windows = np.arange(1000)
    a = window_starts(windows, 8, seed=0, rank=0, step=17)
    assert np.array_equal(a, window_starts(windows, 8, seed=0, rank=0, step=17))
    assert not np.array_equal(a, window_starts(windows, 8, seed=0, rank=1, step=17))
    assert not np.array_equal(a, window_starts(windows, 8, seed=0, rank=0, step=18))


def test_composite_training_references_come_from_the_window_s_own_episode(data):
    ends = data.episode_ends
    steps = np.arange(0, int(ends[-1]), 7)
    refs = data.random_steps_of_episodes(steps, np.random.default_rng(0))
    assert np.array_equal(np.searchsorted(ends, refs, side="right"), np.searchsorted(ends, steps, side="right"))
    assert len(np.unique(refs - steps)) > 10  # anywhere in the episode, not a fixed offset
    batch = data.batch(steps[:3], 4)
    assert "reference" not in batch
    raw = data.gather(steps[:3], 4, refs[:3])
    assert raw["reference"].shape == (3, *raw["image"].shape[2:])
    assert np.array_equal(raw["reference"].numpy(), data.frames[refs[:3]])


def test_long_rollout_batches_reach_past_the_window_and_bring_the_frames_scored(data):
    cfg = make_config("tiny", seq_len=6, rollout_steps=20, rollout_frames=3, rollout_context=4, reward_weight=0)
    length = window_length(cfg)
    assert length == 24
    windows = data.windows(length)
    needs = Objective(build_model(cfg, data.spec), cfg.objective).needs
    raw = Prefetcher(data, windows, cfg, rank=0, pin=False, needs=needs)._load(step=5)
    starts = window_starts(windows, cfg.run.batch_size, cfg.run.seed, 0, 5)
    steps = raw["rollout_step"].numpy()
    assert raw["image"].shape[1] == 6 and raw["action"].shape[1] == length
    assert ((steps >= 4) & (steps < 24)).all() and all(len(set(row)) == 3 for row in steps)
    assert np.array_equal(raw["rollout_image"].numpy(), data.frames[starts[:, None] + steps])
    assert np.array_equal(raw["action"].numpy(), data.action[starts[:, None] + np.arange(length)])
    again = Prefetcher(data, windows, cfg, rank=0, pin=False, needs=needs)._load(step=5)
    assert torch.equal(again["rollout_step"], raw["rollout_step"])  # a pure function of the step, as for resume


def _train_cli(store: str, out, steps: int) -> subprocess.Popen:
    args = ["train", "--data", store, "--out", str(out), "--config", "tiny", "--steps", str(steps), "--device", "cpu",
            "--set", "checkpoint_every=10", "--set", "eval_every=0"]
    return [sys.executable, "-m", "teleworld", *args]


def test_resume_after_kill_matches_an_uninterrupted_run(push_store, tmp_path):
    steps = 300
    subprocess.run(_train_cli(push_store, tmp_path / "full", steps), check=True, env=ENV, capture_output=True)
    proc = subprocess.Popen(_train_cli(push_store, tmp_path / "killed", steps), env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = tmp_path / "killed" / "checkpoint.pt"
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved_step = read_checkpoint(ckpt)["step"]
    assert 0 < saved_step < steps, "the kill should land mid-run"
    result = subprocess.run(_train_cli(push_store, tmp_path / "killed", steps) + ["--resume"], env=ENV,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    full, resumed = read_checkpoint(tmp_path / "full"), read_checkpoint(ckpt)
    assert resumed["step"] == steps
    for key, value in full["model"].items():
        assert torch.equal(value, resumed["model"][key]), key


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(data, tmp_path):
    train(data, make_config("tiny", steps=20, checkpoint_every=10, eval_every=0), tmp_path, show_progress=False)
    data.proprio[:] = np.nan
    with pytest.raises(TeleworldError, match="loss became nan at step 20"):
        train(data, make_config("tiny", steps=40, checkpoint_every=10, eval_every=0), tmp_path, show_progress=False,
              resume=True)
    assert read_checkpoint(tmp_path)["step"] == 20


def test_a_captured_step_is_refused_where_it_cannot_run(data, tmp_path):
    with pytest.raises(TeleworldError, match="run.cuda_graph needs a CUDA device, not cpu"):
        train(data, make_config("tiny", steps=2, cuda_graph="on"), tmp_path, show_progress=False)
    with pytest.raises(TeleworldError, match="run.cuda_graph and run.compile are alternatives"):
        train(data, make_config("tiny", steps=2, cuda_graph=True, compile=True), tmp_path, show_progress=False)
    assert not (tmp_path / "checkpoint.pt").exists()
    with pytest.raises(TeleworldError, match="cuda_graph must be auto, on or off, not 'sometimes'"):
        make_config("tiny", cuda_graph="sometimes")


def test_config_values_of_the_wrong_type_are_refused():
    from train.configs import parse_overrides

    with pytest.raises(TeleworldError, match="model.transport must be true or false, not 'maybe'"):
        make_config("tiny", **parse_overrides(["model.transport=maybe"]))
    with pytest.raises(TeleworldError, match="run.lr must be a number, not 'fast'"):
        make_config("tiny", **parse_overrides(["run.lr=fast"]))
    with pytest.raises(TeleworldError, match="run.steps must be an integer, not True"):
        make_config("tiny", steps=True)
    assert make_config("tiny", **parse_overrides(["run.lr=1"])).run.lr == 1.0  # an integer where a float belongs
    with pytest.raises(TeleworldError, match="model.transport moves the frame a compositing decoder paints over"):
        make_config("tiny", transport=True, composite=False)


def test_a_wall_clock_budget_stops_training_checkpoints_and_resumes(data, tmp_path):
    cfg = make_config("tiny", steps=100_000, minutes=0.05, eval_every=0, checkpoint_every=0)
    first = train(data, cfg, tmp_path, show_progress=False)
    assert 0 < first["steps"] < 100_000
    ckpt = read_checkpoint(tmp_path)
    assert ckpt["step"] == first["steps"] and ckpt["train_seconds"] >= 3.0
    assert ckpt["train_config"]["run"]["minutes"] == 0.05
    again = train(data, cfg, tmp_path, show_progress=False, resume=True)  # a new budget for this invocation
    assert again["steps"] > first["steps"]
    assert read_checkpoint(tmp_path)["train_seconds"] >= 6.0  # the run's training time adds up


def test_with_a_budget_the_learning_rate_decays_with_the_clock():
    cfg = make_config("tiny", steps=100_000, minutes=10)
    assert lr_at(cfg, 200, 0.0) == pytest.approx(cfg.run.lr, rel=1e-2)  # few steps and no time spent: near the peak
    assert lr_at(cfg, 200, 300.0) == pytest.approx(0.55 * cfg.run.lr, rel=1e-2)  # half the budget: half-way down
    assert lr_at(cfg, 200, 600.0) == pytest.approx(0.1 * cfg.run.lr)  # budget spent: the floor
    assert lr_at(make_config("tiny", steps=100_000), 200, 600.0) == pytest.approx(cfg.run.lr, rel=1e-2)  # no budget


def test_resume_refuses_other_data(data, tmp_path):
    train(data, make_config("tiny", steps=2, eval_every=0), tmp_path, show_progress=False)
    data.spec = DataSpec(**{**vars(data.spec), "action_names": ["a", "b", "c"]})
    with pytest.raises(TeleworldError, match="action_names"):
        train(data, make_config("tiny", steps=4), tmp_path, show_progress=False, resume=True)


def test_resume_config_is_the_saved_one_with_only_run_settings_changed():
    saved = make_config("tiny", steps=3, seq_len=6, rollout_steps=8)
    nested = saved.to_dict()
    resumed = resume_config(saved, config_values(None, steps=9, **{"run.lr": 5e-4})).to_dict()
    assert resumed == {**nested, "run": {**nested["run"], "steps": 9, "lr": 5e-4}}
    assert resume_config(saved, config_values("tiny", seq_len=6)).to_dict() == {**nested, "run": {**nested["run"],
                                                                                                   "steps": 40}}
    with pytest.raises(TeleworldError, match=r"changes model.blend False -> True, model.classes 8 -> 16, .*"
                                             r"objective.rollout_steps 8 -> 50; only the run settings \(steps, "):
        resume_config(saved, config_values("small"))


def test_a_run_saved_with_a_flat_config_resumes_nested(data, tmp_path):
    """A checkpoint from before the sections: its flat train_config (no head_weight: before issue 27, as its model
    config without "heads" says) resumes with the loss it trained with."""
    train(data, make_config("tiny", steps=2, eval_every=0, reward_weight=0), tmp_path, show_progress=False)
    path = tmp_path / "checkpoint.pt"
    ckpt = read_checkpoint(path)
    flat = {k: v for section in ckpt["train_config"].values() for k, v in section.items() if k != "head_weight"}
    old_model = {k: v for k, v in ckpt["config"].items() if k not in ("heads", "reward", "blend_horizon")}
    weights = {k: v for k, v in ckpt["model"].items()  # legacy heads: no statistics
               if k not in ("proprio_mean", "proprio_std", "proprio_anchored")}
    torch.save({**ckpt, "train_config": flat, "config": {**old_model, "reward_weight": 0.0}, "model": weights}, path)
    saved = saved_config(read_checkpoint(path))
    assert saved.objective.head_weight == 1.0  # what that model was trained with, not today's default of 10
    assert saved.model.deter == 64 and saved.run.steps == 2
    cfg = resume_config(saved, config_values(None, steps=4))
    result = train(data, cfg, tmp_path, show_progress=False, resume=True)
    resumed = read_checkpoint(path)
    assert resumed["step"] == 4 and result["model"].cfg.heads == "legacy"
    assert resumed["train_config"] == {**saved.to_dict(), "run": {**saved.to_dict()["run"], "steps": 4}}


def test_resume_restores_the_run_s_config_and_refuses_conflicting_keys(data, push_store, tmp_path):
    run = make_config("tiny", steps=3, seq_len=6, rollout_steps=8, eval_every=0)  # batches unlike small's or tiny's
    train(data, run, tmp_path / "base", show_progress=False)
    shutil.copytree(tmp_path / "base", tmp_path / "a")
    shutil.copytree(tmp_path / "base", tmp_path / "b")

    def resume(out, *args: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "teleworld", "train", "--data", push_store, "--out", str(out), "--device", "cpu",
               "--steps", "5", *args, "--resume"]
        return subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)

    assert resume(tmp_path / "a").returncode == 0  # no --config: the run's own, not the default preset
    assert resume(tmp_path / "b", "--config", "tiny", "--set", "seq_len=6", "--set", "rollout_steps=8",
                  "--set", "eval_every=0").returncode == 0  # the same config, spelled out
    a, b = read_checkpoint(tmp_path / "a"), read_checkpoint(tmp_path / "b")
    nested = run.to_dict()
    assert a["step"] == 5 and a["train_config"] == b["train_config"] == {**nested, "run": {**nested["run"], "steps": 5}}
    assert TrainConfig.from_dict(a["train_config"]).objective.rollout_steps == 8  # the nested config, restored
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    refused = resume(tmp_path / "a", "--config", "small", "--set", "lr=5e-4")
    lines = refused.stderr.strip().splitlines()
    assert refused.returncode == 1 and len(lines) == 1, refused.stderr
    assert lines[0].startswith("error: --resume keeps the run's config, but this command changes model.blend False")
    assert "lr" not in lines[0].partition("; only")[0] and read_checkpoint(tmp_path / "a")["step"] == 5
    with pytest.raises(TeleworldError, match="changes objective.rollout_steps 8 -> 9"):
        train(data, make_config("tiny", steps=8, seq_len=6, rollout_steps=9), tmp_path / "a", resume=True)
    with pytest.raises(TeleworldError, match="is at step 5, past steps=4"):
        train(data, make_config("tiny", steps=4, seq_len=6, rollout_steps=8), tmp_path / "a", resume=True)


DDP_SCRIPT = textwrap.dedent(
    """
    import sys, torch
    from recorder import EpisodeStore
    from train.configs import make_config
    from train.dataset import DataSpec, EpisodeArrays
    from train.loop import train

    store = EpisodeStore.open(sys.argv[1])
    data = EpisodeArrays(store, DataSpec.from_store(store))
    result = train(data, make_config("tiny", steps=6, eval_every=0), sys.argv[2], "cpu", show_progress=False)
    flat = torch.cat([p.detach().flatten() for p in result["model"].parameters()])
    torch.save(flat, f"{sys.argv[2]}/weights_rank{result['rank']}.pt")
    """
)


def test_ddp_two_processes_with_gloo_hold_identical_weights(push_store, tmp_path):
    script = tmp_path / "ddp_train.py"
    script.write_text(DDP_SCRIPT)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
           str(script), push_store, str(tmp_path)]
    result = subprocess.run(cmd, env={**ENV, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    w0 = torch.load(tmp_path / "weights_rank0.pt", weights_only=True)
    w1 = torch.load(tmp_path / "weights_rank1.pt", weights_only=True)
    assert torch.equal(w0, w1)
    assert read_checkpoint(tmp_path)["step"] == 6  # written by rank 0 only


def test_training_skips_deleted_episodes_and_follows_a_stored_split(tmp_path, push_store):
    import shutil

    path = tmp_path / "copy.zarr"
    shutil.copytree(push_store, path)
    with EpisodeStore.open(path, mode="a") as store:
        store.set_edits(deleted=[1])
    store = EpisodeStore.open(path)
    result = train(EpisodeArrays(store, DataSpec.from_store(store)), make_config("tiny", steps=1, eval_every=0),
                   tmp_path / "a", show_progress=False)
    used = set(read_checkpoint(tmp_path / "a")["train_episodes"]) | set(result["val_episodes"])
    assert used == {0, 2, 3, 4, 5}
    with EpisodeStore.open(path, mode="a") as store:
        store.set_edits(split={"train": [0, 1, 2, 3], "val": [4, 5]})
    store = EpisodeStore.open(path)
    train(EpisodeArrays(store, DataSpec.from_store(store)), make_config("tiny", steps=1, eval_every=0),
          tmp_path / "b", show_progress=False)
    ckpt = read_checkpoint(tmp_path / "b")
    assert ckpt["train_episodes"] == [0, 2, 3] and ckpt["val_episodes"] == [4, 5]


def test_frames_larger_than_the_ram_cache_train_identically(push_store, tmp_path):
    """A RAM budget far below the frames' size: they are read by chunk through the LRU cache, and the run is the
    one that had them all in RAM, weight for weight."""
    from recorder.loader import ChunkedRows

    store = EpisodeStore.open(push_store)
    spec = DataSpec.from_store(store)
    in_ram = EpisodeArrays(store, spec, cache="ram")
    budget = 64 * 64 * 3 * 16 * 3  # three 16-frame chunks of the 180 frames
    chunked = EpisodeArrays(store, spec, max_cache_bytes=budget)  # auto: they do not fit
    assert isinstance(chunked.frames, ChunkedRows) and isinstance(in_ram.frames, np.ndarray)
    cfg = make_config("tiny", steps=3, seed=4)
    a = train(in_ram, cfg, tmp_path / "ram", show_progress=False)
    b = train(chunked, cfg, tmp_path / "chunks", show_progress=False)
    assert chunked.frames.reads > len(chunked.frames) / chunked.frames.chunk  # chunks were evicted and read again
    weights_a = read_checkpoint(a["checkpoint"])["model"]
    weights_b = read_checkpoint(b["checkpoint"])["model"]
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    idx = np.array([[0, 17, 179], [33, 34, 2]])
    assert np.array_equal(chunked.frames[idx], in_ram.frames[idx])
