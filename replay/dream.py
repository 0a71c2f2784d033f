"""`teleworld dream`: one operator drives the real simulator and the world model at once, shown side by side.

Each control step the operator's action (teleop's keyboard or gamepad device, with the scene's bindings) is applied
to the scene and to the model's latent state (one imagination step + decode, timed). The model runs open loop from
its last resync. The device's commands mean: record (R / pad A) resync the model to the real state by observing the
last K real frames (as in replay's protocol), reset (tab / pad back) a new episode, quit (escape / pad guide).
With ``--plan`` the planner of `teleworld plan` drives instead, its imagined plan end in the model's panel, and the
operator's device moves the goal. A state model (`teleworld train --config state`) dreams too: the scene is rendered
in the state it imagines.
"""

from __future__ import annotations

import time
from collections import deque
from pathlib import Path

import numpy as np
import pygame
import torch

from replay.metrics import psnr
from replay.planning import PlannerConfig, observed_state
from replay.screen import BACKGROUND, draw_contact_lights, draw_lines, draw_panels, init_display, panels_size
from teleop.bindings import Bindings, Command
from teleop.devices.base import Device
from teleop.scenes import load
from teleop.scenes.base import Observation, Scene
from teleworld.errors import TeleworldError
from train.dataset import DataSpec
from train.model import WorldModel
from train.state_model import StateModel

RESYNC_CONTEXT = 5  # real frames observed on a resync
GOAL_SPEED = 0.004  # m per control step at full deflection: how fast `dream --plan`'s operator moves the goal


class Dream:
    """The scene and the model stepped together; ``state`` is the model's latent for the current step."""

    def __init__(self, model: WorldModel | StateModel, spec: DataSpec, scene: Scene, seed: int = 0,
                 device: torch.device | str = "cpu", contact_thresholds: list[float] | None = None):
        self.model, self.spec, self.scene, self.device = model, spec, scene, torch.device(device)
        # the probability above which a group is lit: the run's own cut (train/calibration.py), else 0.5
        self.contact_cut = torch.tensor(contact_thresholds if contact_thresholds is not None else 0.5)
        self.reset(seed)

    def reset(self, seed: int) -> None:
        """New episode from ``seed``; the model observes its first frame."""
        self.seed = seed
        self.obs = self.scene.reset(seed)
        # (frame (3, S, S), its proprio concat(qpos, qvel), the action applied after it)
        self.history: deque = deque(maxlen=RESYNC_CONTEXT)
        self.latency_ms: deque = deque(maxlen=50)
        self.steps = 0
        self.resync()

    def real_frame(self) -> np.ndarray:
        """The current real camera frame as (3, S, S) in [0, 1]."""
        return np.moveaxis(self.obs.frames[self.spec.camera], -1, 0).astype(np.float32) / 255.0

    def real_proprio(self) -> np.ndarray:
        """The current real concat(qpos, qvel), what a model with ``proprio_input`` observes next to the frame."""
        return np.concatenate([self.obs.qpos, self.obs.qvel]).astype(np.float32)

    @torch.no_grad()
    def resync(self) -> None:
        """Put the model on the real state: observe the last K real frames with the actions between them."""
        frames = [f for f, _, _ in self.history] + [self.real_frame()]
        proprio = [p for _, p, _ in self.history] + [self.real_proprio()]
        actions = [a for _, _, a in self.history] + [np.zeros(self.scene.action_spec.size, np.float32)]  # unused
        images = torch.from_numpy(np.stack(frames)[None]).to(self.device)
        acts = torch.from_numpy(np.stack(actions)[None]).to(self.device)
        states = torch.from_numpy(np.stack(proprio)[None]).to(self.device)
        posts, _ = self.model.observe(images[:, -RESYNC_CONTEXT:], acts[:, -RESYNC_CONTEXT:],
                                      states[:, -RESYNC_CONTEXT:])
        self.state = {k: v[:, -1] for k, v in posts.items()}
        self.reference = images[:, -1]  # the last real frame the model saw; a composite decoder paints over it
        self.since_resync = 0
        self.pred = self._shown(self.model.decode(self.model.rssm.feat(self.state)[:, None], self.reference))

    def _shown(self, out: dict[str, torch.Tensor]) -> np.ndarray:
        """The model's decoded frame (1, 1, 3, S, S) as shown; keeps its contact head's flags in ``pred_contact``
        (None without a contact head)."""
        logits = out.get("contact_logits")
        if logits is None:
            self.pred_contact = None
        else:
            self.pred_contact = (logits[0, 0].float().sigmoid().cpu() > self.contact_cut).numpy()
        return out["image"][0, 0].clamp(0, 1).float().cpu().numpy()

    def contact_lights(self) -> tuple[list[str], np.ndarray, np.ndarray | None]:
        """(group names, the scene's contact summary now, the model's predicted contacts now or None)."""
        names = ["/".join(pair) for pair in self.scene.contact_groups]
        return names, np.asarray(self.obs.contact_summary, bool), self.pred_contact

    @torch.no_grad()
    def step(self, action: np.ndarray) -> None:
        """Apply one action to the simulator and to the model."""
        action = self.scene.action_spec.clip(action)
        self.history.append((self.real_frame(), self.real_proprio(), action))
        self.obs = self.scene.step(action)
        began = time.perf_counter()
        self.pred = self._imagine(torch.from_numpy(action[None]).to(self.device))
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        self.latency_ms.append((time.perf_counter() - began) * 1e3)
        self.since_resync += 1
        self.steps += 1

    def _imagine(self, action: torch.Tensor) -> np.ndarray:
        """One imagination step of the model's state under ``action`` (1, A); returns the frame to show."""
        out = self.model.open_loop(self.reference[:, None], action[:, None], context=1, horizon=1, start=self.state,
                                   ahead_from=self.since_resync)  # replay's imagination, one step per call
        self.state = {k: v[:, -1] for k, v in out["priors"].items()}
        return self._shown(out)

    def divergence_db(self) -> float:
        """PSNR of the imagined frame against the real one (lower = further apart)."""
        return float(psnr(self.pred, self.real_frame()))

    def lines(self, action: np.ndarray) -> list[str]:
        """Status text: divergence, model latency against the control period, the action."""
        budget = 1e3 / self.scene.control_rate
        recent = np.asarray(self.latency_ms) if self.latency_ms else np.zeros(1)
        fits = "fits" if recent.max() < budget else "DOES NOT FIT"
        return [f"step {self.steps}  open loop for {self.since_resync} steps since resync  "
                f"PSNR imagined vs real {self.divergence_db():.2f} dB",
                f"model step {np.median(recent):.1f} ms median, {recent.max():.1f} worst of last {len(recent)} "
                f"({fits} the {budget:.0f} ms period)  "
                f"action {np.array2string(action, precision=2)}",
                "drive with the bound keys or stick   record (R / pad A): resync   reset (tab): new episode   "
                "quit (escape)"]


class StateDream(Dream):
    """Dream with a state model (train/state_model.py): it observes the real state, or reads it from the last two
    real frames when trained with ``observe=frames``, steps its imagined state with each action, and shows the scene
    rendered in that state (the model draws no frame of its own)."""

    model: StateModel

    @torch.no_grad()
    def resync(self) -> None:
        """Put the model on the real state as `plan` observes it."""
        previous = self.history[-1][0] if self.history else self.real_frame()
        frames = torch.from_numpy(np.stack([self.real_frame(), previous])).to(self.device)
        proprio = torch.from_numpy(self.real_proprio()[None])
        self.state = observed_state(self.model, frames[:1], frames[1:], proprio, self.obs.extras).to(self.device)
        self.since_resync = 0
        self.pred, self.pred_contact = self._rendered(), None  # it predicts no contact

    def _rendered(self) -> np.ndarray:
        """The scene rendered in the imagined state, (3, S, S) in [0, 1]."""
        qpos = self.state[0, : self.scene.model.nq].double().cpu().numpy()
        frame = self.scene.render_pose(qpos, self.spec.camera)
        return np.moveaxis(frame, -1, 0).astype(np.float32) / 255.0

    def _imagine(self, action: torch.Tensor) -> np.ndarray:
        """One step of the imagined state under ``action`` (1, A); returns the scene rendered in it."""
        self.state = self.model.step(self.state, action)
        return self._rendered()


class PlanDriver(Device):
    """`dream --plan`: the planner (replay/plan.py) drives the simulator; the operator's device moves the goal.

    Each step it plans from the model's own posterior of the real frames; ``imagined`` is the frame the model
    imagines at the end of the chosen plan, shown in the model's panel."""

    name = "planner"

    def __init__(self, dream: Dream, cfg: PlannerConfig, goal_device: Device, replan: int = 1):
        from replay.plan import PlanningController

        super().__init__(dream.scene.action_spec)
        if dream.model.reward_head is None:
            raise TeleworldError("this checkpoint has no reward head, so it cannot plan; retrain it with "
                                 "`teleworld train` (reward_weight > 0)")
        self.controller = PlanningController(dream.scene, cfg, replan, dream.model, dream.spec.camera, draw=True)
        self.goal_device = goal_device

    def connect(self) -> None:
        self.goal_device.connect()
        super().connect()

    def disconnect(self) -> None:
        self.goal_device.disconnect()
        super().disconnect()

    def on_reset(self, observation: Observation, rng: np.random.Generator) -> None:
        self.goal_device.on_reset(observation, rng)
        self.controller.reset(observation, int(rng.integers(2**31)))

    def handle_event(self, event) -> Command | None:
        return self.goal_device.handle_event(event)

    @property
    def imagined(self) -> np.ndarray | None:
        return self.controller.imagined

    def get_action(self, observation: Observation) -> np.ndarray:
        from replay.plan import move_goal

        move = np.asarray(self.goal_device.get_action(observation), np.float64)[:2]
        if np.any(move):
            move_goal(self.controller.scene, move * GOAL_SPEED)
            self.controller.retarget()
        return self.controller.act(observation)


def dream_loop(dream: Dream, screen: pygame.Surface, scale: int, operator: Device,
               helpers: tuple[Device, ...] = (), paced: bool = True, max_steps: int | None = None) -> int:
    """Run at the scene's control rate until quit (or ``max_steps``); returns the steps taken.

    ``operator`` drives; it and ``helpers`` (e.g. the keyboard beside a gamepad) issue commands."""
    clock = pygame.time.Clock()
    running, steps = True, 0
    while running and (max_steps is None or steps < max_steps):
        for event in pygame.event.get():
            commands = [d.handle_event(event) for d in (operator, *helpers)]
            if event.type == pygame.QUIT or Command.QUIT in commands:
                running = False
            elif Command.RECORD in commands:
                dream.resync()
            elif Command.RESET in commands:
                dream.reset(dream.seed + 1)
                operator.on_reset(dream.obs, np.random.default_rng(dream.seed))
        if not running:
            break
        action = operator.get_action(dream.obs)
        dream.step(action)
        steps += 1
        screen.fill(BACKGROUND)
        plan = getattr(operator, "imagined", None)  # `--plan`: the end of the planner's chosen plan
        shown = dream.pred if plan is None else np.moveaxis(plan, -1, 0).astype(np.float32) / 255.0
        y = draw_panels(screen, dream.real_frame(), shown, scale,
                        ("real simulator", "world model" if plan is None else "imagined end of the plan"),
                        imagined=dream.since_resync > 0)
        names, real, predicted = dream.contact_lights()
        draw_contact_lights(screen, names, real, 0, dream.spec.image_size, scale)  # on the real panel
        if predicted is not None:
            draw_contact_lights(screen, names, predicted, 1, dream.spec.image_size, scale, reference=real)
        draw_lines(screen, dream.lines(action), y)
        pygame.display.flip()
        if paced:
            clock.tick(dream.scene.control_rate)
    return steps


def operator_devices(kind: str, scene: Scene, bindings: Bindings) -> tuple[Device, tuple[Device, ...]]:
    """teleop's keyboard, or its gamepad with the keyboard beside it for commands."""
    from teleop.devices.gamepad import GamepadDevice
    from teleop.devices.keyboard import KeyboardDevice

    keyboard = KeyboardDevice(scene.action_spec, bindings, scene.control_rate)
    if kind == "keyboard":
        return keyboard, ()
    if kind == "gamepad":
        return GamepadDevice(scene.action_spec, bindings), (keyboard,)
    raise TeleworldError(f"unknown device {kind!r}; use keyboard or gamepad")


def open_dream(model_path: str | Path, scene_name: str | None = None, seed: int = 0,
               device: torch.device | str = "cpu") -> Dream:
    """Load the model and its scene (``scene_name`` defaults to the model's); refuse a scene it does not know."""
    from train.checkpoint import load_model, read_checkpoint
    from train.state_model import KIND as STATE_KIND, load_state_model

    state_model = read_checkpoint(model_path).get("kind") == STATE_KIND
    model, spec, ckpt = (load_state_model if state_model else load_model)(model_path, device)
    scene_name = scene_name or spec.scene
    if spec.scene != scene_name:
        raise TeleworldError(f"model was trained on scene {spec.scene!r}, not {scene_name!r}")
    try:
        scene = load(scene_name, image_size=(spec.image_size, spec.image_size), cameras=(spec.camera,))
    except ValueError as exc:  # a camera the scene does not have
        raise TeleworldError(f"model does not fit scene {scene_name!r}: {exc}") from None
    if list(scene.action_spec.names) != list(spec.action_names):
        scene.close()
        raise TeleworldError(f"model was trained on actions {spec.action_names} but scene {scene_name!r} has "
                             f"{list(scene.action_spec.names)}")
    if state_model:
        return StateDream(model, spec, scene, seed, device)
    return Dream(model, spec, scene, seed, device, ckpt.get("contact_thresholds"))


def run_dream(model_path: str | Path, scene_name: str | None = None, seed: int = 0, scale: int = 4,
              device: torch.device | str = "cpu", operator: str = "keyboard", bindings: Path | None = None,
              plan: PlannerConfig | None = None) -> None:
    """Load, open the window and the operator's devices, loop, close. ``plan`` (a PlannerConfig): the planner
    drives and the operator's device moves the goal."""
    from teleop.bindings import load_bindings

    dream = open_dream(model_path, scene_name, seed, device)
    devices: tuple[Device, ...] = ()
    try:
        driver, helpers = operator_devices(operator, dream.scene, load_bindings(bindings, dream.scene))
        if plan is not None:
            driver = PlanDriver(dream, plan, driver)
        screen = init_display(panels_size(dream.spec.image_size, scale, 3), "teleworld dream")
        devices = (driver, *helpers)
        for d in devices:
            d.connect()  # a missing gamepad fails here with one line
        driver.on_reset(dream.obs, np.random.default_rng(seed))
        dream_loop(dream, screen, scale, driver, helpers)
    finally:
        for d in devices:
            d.disconnect()
        dream.scene.close()
        pygame.quit()
