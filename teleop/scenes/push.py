"""push: a round pusher moved in x/y pushes a free box across a walled table, seen from above."""

from __future__ import annotations

from pathlib import Path

import mujoco
import numpy as np

from teleop.randomization import Randomization, move_camera, set_box_half_sizes, set_solid_box_mass, uniform
from teleop.scenes.base import ActionSpec, Scene
from teleop.scenes.task import Task

XML = Path(__file__).with_suffix(".xml")
MAX_SPEED = 0.3  # m/s at |action| = 1
ARENA = 0.22  # half-width of the area where the pusher and box start, m
SUCCESS_RADIUS = 0.05  # an episode succeeds when the box's centre ends this close to the goal, m
MARK_OFFSET = 0.6  # the yellow mark sits at this fraction of the box half-width from its centre

RANDOMIZATION = Randomization(
    box_mass=uniform(0.2, 0.8, "kg"),  # nominal 0.4
    box_half_width=uniform(0.04, 0.06, "m"),  # square footprint, nominal 0.05; height stays 0.03
    friction=uniform(0.3, 1.0),  # sliding friction of every geom, nominal 0.6
    box_rgb=uniform((0.0, 0.2, 0.6), (0.35, 0.5, 1.0)),  # nominal (.15, .35, .85)
    pusher_rgb=uniform((0.65, 0.0, 0.0), (1.0, 0.3, 0.3)),  # nominal (.85, .15, .15)
    table_tint=uniform((0.75, 0.75, 0.75), (1.0, 1.0, 1.0)),  # multiplies the checker texture, nominal 1
    wall_grey=uniform(0.15, 0.45),  # nominal 0.3
    light=uniform((0.25, 0.45), (0.55, 0.75)),  # headlight (ambient, diffuse), nominal (0.4, 0.6)
    camera_offset=uniform((-0.02, -0.02, -0.05), (0.02, 0.02, 0.05), "m"),
    camera_yaw=uniform(-5.0, 5.0, "deg"),
)


class PushTask(Task):
    """Push the box to a goal point drawn at reset. Reward: minus the box's distance to it; success: within
    SUCCESS_RADIUS. The goal is the task's own draw: no camera shows it and the state does not hold it."""

    goal_xy = np.zeros(2)

    def initialize(self, physics: PushScene, rng: np.random.Generator) -> None:
        box_xy = rng.uniform(-ARENA + 0.05, ARENA - 0.05, size=2)
        while True:  # start the pusher clear of the box
            pusher_xy = rng.uniform(-ARENA, ARENA, size=2)
            if np.linalg.norm(pusher_xy - box_xy) > 0.14:
                break
        yaw = rng.uniform(-np.pi, np.pi)
        qpos = physics.data.qpos
        qpos[0:2] = pusher_xy
        qpos[2:5] = [box_xy[0], box_xy[1], 0.031]
        qpos[5:9] = [np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)]
        self.goal_xy = rng.uniform(-ARENA + 0.05, ARENA - 0.05, size=2)

    def reward(self, physics: PushScene) -> float:
        return -self.goal_distance(physics)

    def success(self, physics: PushScene) -> bool:
        """The box's centre is within SUCCESS_RADIUS of the goal."""
        return self.goal_distance(physics) < SUCCESS_RADIUS

    def goal(self, physics: PushScene) -> np.ndarray:
        """The goal point (x, y), m."""
        return np.array(self.goal_xy, dtype=np.float64)

    def goal_distance(self, physics: PushScene) -> float:
        """Distance from the box's centre to the goal, m."""
        return float(np.linalg.norm(physics.box_xy() - self.goal_xy))

    def set_goal(self, physics: PushScene, goal: np.ndarray) -> np.ndarray:
        """Move the goal, kept within the area where goals are drawn."""
        self.goal_xy = np.clip(np.asarray(goal, dtype=np.float64), -ARENA + 0.05, ARENA - 0.05)
        return self.goal(physics)


class PushScene(Scene):
    """Action: pusher velocity (vx, vy) in [-1, 1], scaled to ±0.3 m/s; the task is PushTask.

    ``randomize=True`` draws the parameters of ``RANDOMIZATION`` at every reset (from a stream of the seed
    separate from the task's, so the layout of a seed does not change) and keeps the draw in ``randomized``; off,
    the model is never touched.
    """

    name = "push"
    control_rate = 20.0
    default_cameras = ("overhead",)
    contact_groups = (("pusher", "box"), ("box", "world"))
    tracked_bodies = ("box", "pusher")
    key_bindings = (("pusher_vx", "left", "right"), ("pusher_vy", "down", "up"))
    pad_bindings = (("pusher_vx", "leftx"), ("pusher_vy", "-lefty"))
    randomization = RANDOMIZATION
    task_class = PushTask

    def __init__(self, *args, randomize: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.randomize = randomize
        self.randomized: dict = {}
        cam = self.model.camera("overhead")
        self._camera_home = (cam.pos.copy(), cam.quat.copy())

    def build(self) -> tuple[mujoco.MjModel, mujoco.MjData]:
        model = mujoco.MjModel.from_xml_path(str(XML))
        return model, mujoco.MjData(model)

    def mjcf(self) -> str:
        return XML.read_text()

    def info(self) -> dict:
        info = super().info()
        if self.randomize:
            info["randomization"] = self.randomization.to_dict()
        return info

    @property
    def action_spec(self) -> ActionSpec:
        return ActionSpec(names=("pusher_vx", "pusher_vy"), low=(-1.0, -1.0), high=(1.0, 1.0))

    def vary(self, rng: np.random.Generator) -> None:
        if self.randomize:  # a child stream: the task's draws stay those of the unrandomized scene
            self.randomized = self.randomization.sample(rng.spawn(1)[0])
            self._apply(self.randomized)

    def _apply(self, p: dict) -> None:
        """Write one draw of RANDOMIZATION into the model (every parameter is set, none is left over)."""
        m = self.model
        box, mark, body = m.geom("box").id, m.geom("box_mark").id, m.body("box").id
        half = np.array([p["box_half_width"], p["box_half_width"], m.geom_size[box, 2]])
        set_box_half_sizes(m, box, half)
        m.geom_pos[mark, 0] = MARK_OFFSET * half[0]
        set_solid_box_mass(m, body, p["box_mass"], half)
        m.geom_friction[:, 0] = p["friction"]
        m.geom_rgba[box, :3] = p["box_rgb"]
        m.geom_rgba[m.geom("pusher").id, :3] = p["pusher_rgb"]
        m.mat_rgba[m.geom_matid[m.geom("table").id], :3] = p["table_tint"]
        for wall in ("wall_n", "wall_s", "wall_e", "wall_w"):
            m.geom_rgba[m.geom(wall).id, :3] = p["wall_grey"]
        m.vis.headlight.ambient[:] = p["light"][0]
        m.vis.headlight.diffuse[:] = p["light"][1]
        move_camera(m, m.camera("overhead").id, *self._camera_home, np.array(p["camera_offset"]), p["camera_yaw"])
        mujoco.mj_setConst(m, self.data)  # mass-dependent constants (constraint scaling)
        mujoco.mj_resetData(m, self.data)

    def apply_action(self, action: np.ndarray) -> None:
        self.data.ctrl[:] = action * MAX_SPEED

    def pusher_xy(self) -> np.ndarray:
        return self.data.qpos[0:2].copy()

    def box_xy(self) -> np.ndarray:
        return self.data.qpos[2:4].copy()

    def box_half_width(self) -> float:
        """Half the side of the box's square footprint, m (0.05 unless randomized)."""
        return float(self.model.geom_size[self.model.geom("box").id, 0])
