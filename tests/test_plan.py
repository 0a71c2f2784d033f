"""`teleworld plan` on real inputs: real MuJoCo, a tiny model really trained on a real store, the CLI end to end."""

import csv
import json
import os
import re
import subprocess
import sys
from contextlib import contextmanager

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from browser import CHROMIUM, screenshot
from conftest import record
from recorder import EpisodeStore
from replay.plan import VIDEO_SCALE, PlanningController, PlanSettings, controller_for, run_episode, run_plan, wilson
from replay.planning import SHAPING, ModelScorer, Planner, PlannerConfig, ranking_agreement, reacher_reach
from teleop.scenes import load
from teleworld.errors import TeleworldError
from train.checkpoint import load_model, read_checkpoint
from train.configs import make_config
from train.dataset import DataSpec, EpisodeArrays
from train.loop import train
from train.model import WorldModel, WorldModelConfig
from train.objectives import Objective, ObjectiveConfig

TINY_PLAN = ["--candidates", "16", "--horizon", "4", "--iterations", "2", "--elites", "4", "--oracle-candidates", "8",
             "--oracle-iterations", "1"]


def teleworld(*args: str, log=None) -> subprocess.CompletedProcess:
    """Run the CLI with stdout and stderr piped to files (as a user's nohup would), then read them back."""
    out, err = log / "stdout.txt", log / "stderr.txt"
    with open(out, "w") as o, open(err, "w") as e:
        rc = subprocess.run([sys.executable, "-m", "teleworld", *args], stdout=o, stderr=e, timeout=600,
                            env={**os.environ, "MUJOCO_GL": "egl"}).returncode
    return subprocess.CompletedProcess(args, rc, out.read_text(), err.read_text())


def fit(store_path, out_dir, **overrides) -> str:
    store = EpisodeStore.open(store_path)
    data = EpisodeArrays(store, DataSpec.from_store(store))
    return train(data, make_config("tiny", **{"steps": 3, **overrides}), out_dir, show_progress=False)["checkpoint"]


@pytest.fixture(scope="module")
def run(push_store, tmp_path_factory) -> str:
    """A tiny model with a reward head, trained for a few steps on the push fixture."""
    return fit(push_store, tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def cli_plan(run, tmp_path_factory):
    """`teleworld plan` run once through the CLI on the tiny model, output piped to files."""
    out = tmp_path_factory.mktemp("plan")
    result = teleworld("plan", "--model", run, "--out", str(out / "plan"), "--episodes", "2", "--steps", "6",
                       "--rank-checks", "1", *TINY_PLAN, log=out)
    return result, out / "plan"


def test_reward_head_trains_on_recorded_goals(push_store, run):
    model, _, _ = load_model(run)
    assert model.reward_head is not None and model.cfg.goal_dim == 2
    assert float(model.reward_std) > 0.01  # standardised by the training episodes' rewards
    store = EpisodeStore.open(push_store)
    data = EpisodeArrays(store, DataSpec.from_store(store))
    data.load_goals()
    scene = load("push")
    for episode in (0, 3):  # the fixture records seeds 0..5; the goal is drawn from the seed
        scene.reset(store.episode_info(episode)["seed"])
        start = 0 if episode == 0 else int(data.episode_ends[episode - 1])
        np.testing.assert_allclose(data.goal[start], scene.goal(), atol=1e-6)
    batch = data.batch(data.windows(8)[[0, -1]], 8)
    assert batch["goal"].shape == (2, 2) and batch["reward"].shape == (2, 8)
    _, terms = Objective(model, ObjectiveConfig())(batch)
    assert torch.isfinite(terms["reward"]) and terms["reward"] > 0


def test_checkpoint_saved_before_the_reward_head_still_loads(run, tmp_path):
    """An old checkpoint (no reward keys in its config, no reward weights) loads for replay, without the head."""
    ckpt = read_checkpoint(run)
    old = {k: v for k, v in ckpt["config"].items() if k not in ("reward", "reward_weight", "goal_dim")}
    weights = {k: v for k, v in ckpt["model"].items() if not k.startswith(("reward_head", "reward_", "goal_"))}
    path = tmp_path / "old.pt"
    torch.save({**ckpt, "config": old, "model": weights}, path)
    model, _, _ = load_model(path)
    assert model.reward_head is None
    with pytest.raises(ValueError, match="no reward head"):
        model.reward(torch.zeros(1, model.cfg.feat))


@pytest.mark.parametrize("planner", ["cem", "mppi"])
def test_planner_finds_the_best_sequence_of_a_known_return(planner):
    """Return = -(a - target)^2 summed: the plan must converge to the target sequence, inside the bounds."""
    target = torch.tensor([[0.5, -0.3], [0.2, 0.9], [-0.7, 0.0]])
    cfg = PlannerConfig(planner=planner, candidates=128, horizon=3, iterations=8, elites=16)
    plan = Planner(cfg, np.array([-1.0, -1.0]), np.array([1.0, 1.0]), seed=0).plan(
        lambda a: -(a - target).pow(2).sum((1, 2))[:, None])
    np.testing.assert_allclose(plan.actions, target.numpy(), atol=0.08)
    assert plan.predicted_return > -0.02 and plan.spread == 0.0


def test_planner_warm_start_shifts_the_plan():
    cfg = PlannerConfig(candidates=8, horizon=4, elites=2)
    planner = Planner(cfg, np.array([-1.0]), np.array([1.0]), seed=0)
    planner.mean = torch.tensor([[0.1], [0.2], [0.3], [0.4]])
    planner.shift(1)
    np.testing.assert_allclose(planner.mean.numpy()[:, 0], [0.2, 0.3, 0.4, 0.0])


def test_model_scorer_imagines_every_candidate_in_one_batch(run):
    """Scores match imagining each candidate alone; sampled futures spread, and repeat with the same seed."""
    model, _, _ = load_model(run)
    scene = load("push")
    obs = scene.reset(100_000)
    scorer = ModelScorer(model, scene.goal(), samples=1, seed=0)
    frame = torch.from_numpy(obs.frames["overhead"]).permute(2, 0, 1).float().div(255)[None, None]
    with torch.no_grad():
        scorer.state, _ = model.rssm.obs_step(model.rssm.initial(1, "cpu"), torch.zeros(1, 2),
                                              model.encode(frame)[:, 0])
    actions = torch.rand(5, 4, 2, generator=torch.Generator().manual_seed(1)) * 2 - 1
    together = scorer(actions)[:, 0]
    alone = torch.stack([scorer(actions[i : i + 1])[0, 0] for i in range(5)])
    torch.testing.assert_close(together, alone, atol=1e-4, rtol=1e-4)
    assert together.std() > 0  # the actions matter to the imagined return
    sampled = ModelScorer(model, scene.goal(), samples=4, seed=3)
    sampled.state = scorer.state
    first = sampled(actions)
    assert first.shape == (5, 4) and (first.std(1) > 0).all()
    again = ModelScorer(model, scene.goal(), samples=4, seed=3)
    again.state = scorer.state
    torch.testing.assert_close(again(actions), first)


def test_compiled_scorer_returns_what_the_eager_one_does(run):
    """`plan --compile`: the torch.compile'd imagination (with push's shaping on the proprio head) scores every
    candidate as the eager one does, and its warm-up leaves the scorer's latent and proprio as they were."""
    model, _, _ = load_model(run)
    scene = load("push")
    obs = scene.reset(100_000)
    scorers = [ModelScorer(model, scene.goal(), samples=1, seed=0, shaping=SHAPING["push"], shaping_weight=1.0,
                           compile=compiled) for compiled in (False, True)]
    frame = torch.from_numpy(obs.frames["overhead"]).permute(2, 0, 1).float().div(255)[None, None]
    with torch.no_grad():
        state, _ = model.rssm.obs_step(model.rssm.initial(1, "cpu"), torch.zeros(1, 2), model.encode(frame)[:, 0])
    proprio = torch.from_numpy(np.concatenate([obs.qpos, obs.qvel])).float()[None]
    for scorer in scorers:
        scorer.state, scorer.proprio = state, proprio
    scorers[1].warm_up(6, 4)
    assert scorers[1].state is state and scorers[1].proprio is proprio
    actions = torch.rand(6, 4, 2, generator=torch.Generator().manual_seed(2)) * 2 - 1
    eager, compiled = scorers[0](actions), scorers[1](actions)
    assert eager.std() > 0
    torch.testing.assert_close(compiled, eager, atol=1e-4, rtol=1e-4)


def test_plan_cli_runs_end_to_end_with_the_schema(cli_plan):
    result, out = cli_plan
    assert result.returncode == 0, result.stderr
    assert "plan model" in result.stderr and "report:" in result.stdout  # progress on stderr, results on stdout
    summary = json.loads((out / "plan.json").read_text())
    assert set(summary) == {"methods", "config", "comparisons"}
    assert list(summary["methods"]) == ["model", "random", "oracle", "expert"]
    for name, stats in summary["methods"].items():
        for key in ("success_rate", "ci", "final_distance_mean", "plan_ms_p50", "plan_ms_p99", "episodes",
                    "solved_at_reset"):
            assert key in stats, (name, key)
        assert stats["episodes"] == 2 and stats["ci"][0] <= stats["success_rate"] <= stats["ci"][1]
        assert (stats["plan_ms_p50"] is None) == (name in ("random", "expert"))
    assert 0 < summary["methods"]["model"]["plan_ms_p50"] <= summary["methods"]["model"]["plan_ms_p99"]
    assert summary["config"]["planner"]["candidates"] == 16 and summary["config"]["seeds"] == [100_000, 100_001]
    with open(out / "episodes.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8 and {r["seed"] for r in rows} == {"100000", "100001"}
    for method in ("model", "random", "oracle", "expert"):
        frames = list(iio.imiter(out / f"plan_{method}.mp4"))
        assert len(frames) >= 1 and frames[0].shape[1] == 3 * frames[0].shape[0] + 4 * VIDEO_SCALE  # real | imagined | goal, 2-px gaps
    with open(out / "calibration.csv") as f:
        assert sum(1 for r in csv.DictReader(f) if r["method"] == "model") >= 2
    ranking = summary["methods"]["model"]["ranking"]  # --rank-checks 1: one checked plan per episode
    assert ranking["checks"] == 2 and "ranking" not in summary["methods"]["oracle"]
    with open(out / "ranking.csv") as f:
        assert [r["method"] for r in csv.DictReader(f)] == ["model", "model"]


def test_ranking_agreement_tells_a_faithful_scorer_from_a_wrong_one():
    truth = torch.tensor([3.0, -1.0, 2.0, 0.5, 7.0])
    assert ranking_agreement(truth * 2 + 1, truth) == (pytest.approx(1.0), 1.0)  # same order, its favourite the best
    rho, quantile = ranking_agreement(-truth, truth)
    assert rho == pytest.approx(-1.0) and quantile == pytest.approx(0.2)  # picks the worst of five
    assert ranking_agreement(truth, torch.zeros(5)) == (None, 1.0)  # the simulator cannot tell them apart


def test_rank_checks_score_the_models_candidates_in_the_simulator_without_changing_the_episode(run):
    """The check steps MuJoCo from the current state: the episode must go on from exactly where it was."""
    model, spec, _ = load_model(run)
    scene = load("push", image_size=(spec.image_size, spec.image_size), cameras=(spec.camera,))
    cfg = PlannerConfig(candidates=16, horizon=4, iterations=2, elites=4)

    def episode(checks: int):
        settings = PlanSettings(replan=2, rank_checks=checks)
        controller = controller_for("model", scene, cfg, settings, model, spec.camera)
        return run_episode("model", controller, scene, 0, 100_000, 16, 4, spec.camera)

    checked, plain = episode(3), episode(0)
    assert [row[0] for row in checked.ranking] == [0, 2, 4] and plain.ranking == []
    assert all(rho is None or -1 <= rho <= 1 for _, rho, _ in checked.ranking)
    assert all(1 / 16 <= q <= 1 for _, _, q in checked.ranking)
    assert (checked.final_distance, checked.return_) == (plain.final_distance, plain.return_)


def test_an_ensemble_scores_every_candidate_with_each_member_from_its_own_posterior(run, push_store, tmp_path):
    """Two runs of the same data: one return per member and candidate, each what that member alone returns after
    observing the same frame; the planner's spread is their disagreement, and plan.json names the members."""
    other = fit(push_store, tmp_path / "other", seed=1)
    (first, spec, _), (second, _, _) = load_model(run), load_model(other)
    scene = load("push", image_size=(spec.image_size, spec.image_size), cameras=(spec.camera,))
    cfg = PlannerConfig(candidates=16, horizon=4, iterations=2, elites=4)

    def observed(model, members=()):
        controller = controller_for("model", scene, cfg, PlanSettings(replan=2), model, spec.camera, members)
        obs = scene.reset(100_000)
        controller.reset(obs, 100_000)
        controller._observe(obs)
        return controller

    actions = torch.rand(5, 4, 2, generator=torch.Generator().manual_seed(2)) * 2 - 1
    ensemble = observed(first, [second])
    both = ensemble.scorer(actions)
    assert both.shape == (5, 2) and not torch.allclose(both[:, 0], both[:, 1])
    torch.testing.assert_close(both[:, 0], observed(first).scorer(actions)[:, 0])
    torch.testing.assert_close(both[:, 1], observed(second).scorer(actions)[:, 0])
    assert ensemble.planner.plan(ensemble.scorer).spread > 0
    settings = PlanSettings(episodes=1, steps=4, methods=("model",), video_episodes=0)
    summary = run_plan(run, tmp_path / "plan", cfg, settings, show_progress=False, ensemble=[other])
    assert summary["config"]["ensemble"] == [other] and summary["methods"]["model"]["calibration"]["spread_mean"] > 0


def test_an_ensemble_of_runs_that_see_differently_is_refused_in_one_line(run, tmp_path):
    small = fit(record(tmp_path / "small.zarr", episodes=2, image_size=32), tmp_path / "small")
    result = teleworld("plan", "--model", run, "--model", small, "--out", str(tmp_path / "plan"), "--episodes", "1",
                       *TINY_PLAN, log=tmp_path)
    lines = [ln for ln in result.stderr.strip().splitlines() if ln.strip()]
    assert result.returncode == 1 and len(lines) == 1 and "32 px" in lines[0], result.stderr
    assert not (tmp_path / "plan" / "plan.json").exists()


def test_plan_records_the_episodes_it_runs_into_a_store_that_trains(run, tmp_path):
    """`plan --record`: every step the planner took, in a store train reads; its actions replayed from the recorded
    seed give back the recorded rewards; a second run appends; a store of another scene kind is refused."""
    cfg = PlannerConfig(candidates=16, horizon=4, iterations=2, elites=4)
    settings = PlanSettings(episodes=2, steps=6, methods=("model", "random"), video_episodes=0, seed=300_000)
    path = tmp_path / "planned.zarr"
    run_plan(run, tmp_path / "a", cfg, settings, show_progress=False, record=path)
    with open(tmp_path / "a" / "episodes.csv") as f:
        taken = [int(r["steps"]) for r in csv.DictReader(f)]
    store = EpisodeStore.open(path)
    assert store.num_episodes == 4 and [len(store.episode(i)["action"]) for i in range(4)] == taken
    info = store.episode_info(0)
    assert info["seed"] == 300_000 and info["operator"] == "planner" and len(info["goal"]) == 2
    scene = load("push", image_size=(64, 64))
    scene.reset(info["seed"])
    steps = store.episode(0)
    replayed = [scene.step(a).reward for a in steps["action"]]
    np.testing.assert_allclose(replayed[:-1], steps["reward"][1:], atol=1e-6)  # a row's reward: before its action
    EpisodeArrays(store, DataSpec.from_store(store))  # train reads it
    store.close()
    run_plan(run, tmp_path / "b", cfg, PlanSettings(episodes=1, steps=4, methods=("model",), video_episodes=0,
                                                    seed=300_002), show_progress=False, record=path)
    assert EpisodeStore.open(path).num_episodes == 5
    other = record(tmp_path / "small.zarr", episodes=1, steps=4, image_size=32)
    with pytest.raises(TeleworldError, match="image_size"):
        run_plan(run, tmp_path / "c", cfg, settings, show_progress=False, record=other)


def test_same_seed_same_result(run, tmp_path):
    cfg = PlannerConfig(candidates=16, horizon=4, iterations=2, elites=4, samples=2)
    settings = PlanSettings(episodes=2, steps=6, methods=("model", "random"), video_episodes=0)
    first = run_plan(run, tmp_path / "a", cfg, settings, show_progress=False)
    second = run_plan(run, tmp_path / "b", cfg, settings, show_progress=False)
    other = run_plan(run, tmp_path / "c", cfg, PlanSettings(episodes=2, steps=6, methods=("model", "random"),
                                                            video_episodes=0, seed=7), show_progress=False)

    def outcome(directory):
        with open(directory / "episodes.csv") as f:
            return [(r["method"], r["seed"], r["final_distance"], r["return"]) for r in csv.DictReader(f)]

    assert outcome(tmp_path / "a") == outcome(tmp_path / "b") != outcome(tmp_path / "c")
    assert first["methods"]["model"]["final_distance_mean"] == second["methods"]["model"]["final_distance_mean"]
    assert other["config"]["seeds"] == [7, 8]


def test_compiled_planning_compiles_before_the_first_step_and_plans_as_eager(run, tmp_path):
    """`plan --compile`: the controller compiles at reset (its warm-up), so no replanning step compiles (dynamo
    captures no new graph while it acts), and run_plan's episodes end as the eager planner's do."""
    from torch._dynamo.utils import counters

    model, spec, _ = load_model(run)
    scene = load("push")
    cfg = PlannerConfig(candidates=16, horizon=4, iterations=1, elites=4, compile=True)
    controller = PlanningController(scene, cfg, replan=1, model=model, camera=spec.camera)
    obs = scene.reset(100_000)
    controller.reset(obs, 100_000)
    compiled = counters["stats"]["unique_graphs"]
    assert compiled > 0
    for _ in range(3):
        obs = scene.step(controller.act(obs))
    assert counters["stats"]["unique_graphs"] == compiled and len(controller.plans) == 3
    settings = PlanSettings(episodes=2, steps=5, methods=("model",), video_episodes=0)
    distance = {}
    for compile in (False, True):
        result = run_plan(run, tmp_path / str(compile), PlannerConfig(**{**cfg.to_dict(), "compile": compile}),
                          settings, show_progress=False)
        distance[compile] = result["methods"]["model"]["final_distance_mean"]
    assert abs(distance[True] - distance[False]) < 0.02


def test_oracle_planner_beats_random_on_push(run):
    """The planner itself works: with the simulator as its model it pushes the box to the goal; random does not."""
    scene = load("push")
    cfg = PlannerConfig(horizon=12, repeat=4)
    settings = PlanSettings(replan=2, oracle_candidates=24)
    seed = 100_000
    oracle = run_episode("oracle", controller_for("oracle", scene, cfg, settings, None, "overhead"), scene, 0, seed,
                         120, 48, "overhead")
    random = run_episode("random", controller_for("random", scene, cfg, settings, None, "overhead"), scene, 0, seed,
                         120, 48, "overhead")
    assert oracle.success and not random.success
    assert oracle.final_distance < 0.05 < random.final_distance


def test_oracle_plan_executed_whole_yields_exactly_its_predicted_return():
    """Calibration bookkeeping and the oracle's state restore: a plan executed to its end, open loop, in the
    deterministic simulator gives back exactly the (shaped) return the oracle predicted for it."""
    scene = load("push")
    cfg = PlannerConfig(horizon=4, repeat=2, candidates=8, elites=4)
    settings = PlanSettings(replan=4, oracle_candidates=8, oracle_iterations=1)
    ep = run_episode("oracle", controller_for("oracle", scene, cfg, settings, None, "overhead"), scene, 0, 100_000,
                     16, 8, "overhead")
    assert [row[0] for row in ep.calibration] == [0, 8]
    for _, predicted, spread, realised in ep.calibration:
        assert spread == 0.0 and predicted == pytest.approx(realised, abs=1e-4)


def test_checkpoint_without_reward_head_is_refused_in_one_line(push_store, tmp_path):
    path = fit(push_store, tmp_path / "run", reward_weight=0.0)
    result = teleworld("plan", "--model", path, "--out", str(tmp_path / "plan"), "--episodes", "1", *TINY_PLAN,
                       log=tmp_path)
    lines = [ln for ln in result.stderr.strip().splitlines() if ln.strip()]
    assert result.returncode == 1 and len(lines) == 1 and "no reward head" in lines[0], result.stderr
    assert not (tmp_path / "plan" / "plan.json").exists()


def test_bad_methods_are_refused_in_one_line(run, tmp_path):
    result = teleworld("plan", "--model", run, "--out", str(tmp_path / "plan"), "--methods", "model,psychic",
                       log=tmp_path)
    lines = [ln for ln in result.stderr.strip().splitlines() if ln.strip()]
    assert result.returncode == 1 and len(lines) == 1 and "--methods" in lines[0], result.stderr


def test_push_shaping_leads_the_pusher_behind_the_box_not_to_its_nearest_side():
    """Zero where the pusher touches the box face-on from the far side of the goal; a pusher as close on the goal's
    side scores lower; the spot follows the box."""
    scene = load("push")
    scene.reset(100_000)
    box, goal = scene.box_xy(), scene.goal()
    away = (box - goal) / np.linalg.norm(box - goal)
    shaping = SHAPING["push"]

    def score(pusher: np.ndarray, box_at: np.ndarray = box) -> float:
        proprio = torch.zeros(scene.data.qpos.size + scene.data.qvel.size, dtype=torch.float64)
        proprio[0:2], proprio[2:4] = torch.from_numpy(pusher), torch.from_numpy(box_at)
        return float(shaping(proprio, torch.from_numpy(goal)))

    touching = box + 0.085 * away
    assert score(touching) == pytest.approx(0.0, abs=1e-5)
    assert score(box - 0.085 * away) == pytest.approx(-0.17, abs=1e-4)  # touching too, but on the goal's side
    assert score(touching + 0.05 * away) > score(touching + np.array([-away[1], away[0]]) * 0.1)
    assert score(touching + 0.1 * away, box + 0.1 * away) == pytest.approx(0.0, abs=1e-5)


def test_reacher_shaping_is_minus_the_fingertip_distance_the_simulator_measures():
    scene = load("reacher-hard", image_size=(32, 32))
    rng = np.random.default_rng(3)
    obs = scene.reset(3)
    for _ in range(15):
        obs = scene.step(rng.uniform(-1, 1, 2))
        scene.set_state(obs.state)  # kinematics of the new state (a step leaves them at the old one's)
        proprio = torch.from_numpy(np.concatenate([obs.qpos, obs.qvel]))
        shaped = float(reacher_reach(proprio, torch.from_numpy(scene.goal())))
        assert -shaped == pytest.approx(scene.task.goal_distance(scene), abs=1e-6)
    scene.close()


def test_wilson_interval_matches_known_values():
    np.testing.assert_allclose(wilson(5, 10), [0.2366, 0.7634], atol=1e-4)
    np.testing.assert_allclose(wilson(0, 50), [0.0, 0.0713], atol=1e-4)


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium (apt-get install chromium)")
def test_plan_report_shows_its_images_in_headless_chromium(cli_plan, tmp_path):
    _, out = cli_plan
    html = (out / "report.html").read_text()
    assert html.count("src='data:image/png;base64,") == 3  # success rates, calibration and ranking (--rank-checks)
    assert html.count("src='data:image/gif;base64,") == 4 and "file://" not in html
    shown = screenshot(out / "report.html", tmp_path / "shown.png", 2400)
    broken = tmp_path / "broken.html"
    broken.write_text(re.sub(r"base64,[A-Za-z0-9+/=]+", "base64,AAAA", html))
    blank = screenshot(broken, tmp_path / "blank.png", 2400)
    assert (np.abs(shown - blank).max(-1) > 30).sum() > 50_000  # the plots and clips are drawn


def test_world_model_config_without_reward_keys_has_no_head():
    model = WorldModel(WorldModelConfig.from_dict({"image_size": 64, "action_dim": 2}))
    assert model.reward_head is None and "reward_mean" not in dict(model.named_buffers())


@contextmanager
def dreaming_planner(run):
    """`dream --plan` on push (seed 100000) with a small planner, driven 6 steps with the right arrow held: yields
    (dream, driver, the goal and the pusher's position before); closes the scene."""
    import pygame

    from replay.dream import PlanDriver, dream_loop, open_dream
    from replay.screen import init_display, panels_size
    from teleop.bindings import default_bindings
    from teleop.devices.keyboard import KeyboardDevice

    dream = open_dream(run, "push", seed=100_000)
    screen = init_display(panels_size(64, 2, 3), "test dream plan")
    keyboard = KeyboardDevice(dream.scene.action_spec, default_bindings(dream.scene), dream.scene.control_rate)
    driver = PlanDriver(dream, PlannerConfig(candidates=16, horizon=4, iterations=1, elites=4), keyboard)
    try:
        driver.connect()
        driver.on_reset(dream.obs, np.random.default_rng(0))
        goal, pusher = dream.scene.goal().copy(), dream.scene.pusher_xy()
        pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=pygame.K_RIGHT))
        assert dream_loop(dream, screen, 2, driver, paced=False, max_steps=6) == 6
        yield dream, driver, goal, pusher
    finally:
        driver.disconnect()
        dream.scene.close()


def test_dream_plan_drives_the_scene_and_the_keys_move_the_goal(run):
    """`dream --plan`: the planner acts in the live loop, its imagined plan end is shown, the arrows move the goal."""
    with dreaming_planner(run) as (dream, driver, goal, pusher):
        assert dream.scene.goal()[0] > goal[0] + 0.01 and dream.scene.goal()[1] == goal[1]  # right arrow: goal +x
        assert not np.allclose(dream.scene.pusher_xy(), pusher)  # the planner, not the arrows, drove the pusher
        np.testing.assert_allclose(driver.controller.scorer.goal.numpy(), dream.scene.goal(), atol=1e-6)
        assert driver.imagined is not None and driver.imagined.shape == (64, 64, 3)
        assert len(driver.controller.plans) == 6


def test_a_model_that_observes_proprio_trains_plans_replays_and_dreams(push_store, tmp_path):
    """`model.proprio_input`: the posterior observes concat(qpos, qvel) next to the frame, in training, planning,
    replay and dream alike; the state changes the posterior, and a caller that forgets it is told in one line."""
    from replay.dream import open_dream
    from replay.rollout import predict

    path = fit(push_store, tmp_path / "run", proprio_input=True)
    model, _, _ = load_model(path)
    assert model.cfg.proprio_input and model.proprio_encoder is not None
    store = EpisodeStore.open(push_store)
    data = EpisodeArrays(store, DataSpec.from_store(store))
    batch = data.batch(data.windows(8)[[0, -1]], 8)
    with pytest.raises(ValueError, match="observes proprio"):
        model.observe(batch["image"], batch["action"])
    posts, _ = model.observe(batch["image"], batch["action"], batch["proprio"])
    moved = batch["proprio"].clone()
    moved[..., 2:4] += 0.1  # the box 10 cm away, same frames
    other, _ = model.observe(batch["image"], batch["action"], moved)
    assert (posts["stoch"] - other["stoch"]).abs().max() > 1e-4
    truth, preds, _ = predict(model, batch, batch["action"].flip(0), context=3)
    assert preds["model"]["image"].shape == truth["image"][:, 3:].shape
    settings = PlanSettings(episodes=1, steps=4, methods=("model",), video_episodes=0)
    result = run_plan(path, tmp_path / "plan", PlannerConfig(candidates=16, horizon=4, iterations=1, elites=4),
                      settings, show_progress=False)
    assert result["methods"]["model"]["episodes"] == 1
    dream = open_dream(path, "push", seed=100_000)
    try:
        dream.step(np.zeros(2, np.float32))
        dream.resync()
        assert dream.pred.shape == (3, 64, 64)
    finally:
        dream.scene.close()
