"""arm: a Kinova Jaco arm (6 joints, 3-finger hand) picks a block off a table and places it in a green zone.

The robot is dm_control's Jaco arm and hand (``dm_control/third_party/kinova``, Apache-2.0, shipped in the
dm-control wheel), attached to arm.xml's table with ``mujoco.MjSpec``. The operator commands the end effector (the
hand's pinch site): linear velocity, yaw rate and the gripper; differential IK (mink, a QP with joint position and
velocity limits, a posture task in the null space and hand-table collision avoidance) turns that into joint position
targets every control step. ``control="joint"`` drives the six joints' velocities directly instead.

The controller's state lives in MuJoCo's own state (joint targets in ``ctrl``; target pose and gripper closure in
``userdata``), so a recorded ``state`` restores the controller too and re-simulation is exact.
"""

from __future__ import annotations

from pathlib import Path

import mink
import mujoco
import numpy as np
from dm_control.entities.manipulators.kinova import assets_path

from teleop.randomization import Randomization, set_box_half_sizes, set_solid_box_mass, uniform
from teleop.scenes.base import ActionSpec, Scene
from teleop.scenes.task import Task
from teleworld.errors import TeleworldError

XML = Path(__file__).with_suffix(".xml")
KINOVA = Path(assets_path.KINOVA_ROOT)
ARM_JOINTS = tuple(f"jaco/joint_{i}" for i in range(1, 7))
FINGER_JOINTS = tuple(f"jaco/hand/finger_{i}" for i in range(1, 4))
TCP = "jaco/hand/pinchsite"  # the tool centre point: between the fingertips
HAND_GEOMS = ("link_6_main", "link_6_insert", "finger_knuckle_1", "finger_knuckle_2", "finger_knuckle_3",
              "finger_tip_1", "finger_tip_2", "finger_tip_3")
HOME = (-1.683, 3.535, 1.438, -0.339, 1.228, 1.12)  # pinch site 25 cm above the table centre, pointing down
DOWN = np.array([0.0, 0.70710678118, 0.70710678118, 0.0])  # pinch site orientation (wxyz) at yaw 0
JOINT_SPEED = np.deg2rad((36.0, 36.0, 36.0, 48.0, 48.0, 48.0))  # Jaco's joint speed limits, rad/s
KP = (1000.0, 1000.0, 1000.0, 400.0, 400.0, 400.0)  # joint position gains, N·m/rad
KV = (150.0, 150.0, 150.0, 40.0, 40.0, 40.0)  # joint damping gains, N·m·s/rad
TORQUE = (30.5, 30.5, 30.5, 6.8, 6.8, 6.8)  # Jaco's torque limits, N·m
FINGER_OPEN, FINGER_CLOSED = 0.15, 1.35  # finger joint range, rad
FINGER_KP, FINGER_TORQUE = 10.0, 1.5
MAX_LINEAR = 0.2  # m/s at |action| = 1
MAX_YAW = 1.0  # rad/s at |action| = 1
GRIP_TIME = 0.5  # s from open to closed at |gripper| = 1
WORKSPACE = (np.array([-0.3, -0.3, 0.01]), np.array([0.3, 0.25, 0.45]))  # where the target may go, m
LEAD = 0.05  # the target never leads the IK's end effector by more than this, m (no wind-up against limits)
OBJECT_AREA = 0.12  # half-width of the square where the object starts, m
ZONE_AREA = 0.16  # half-width of the square where the zone is drawn, m
ZONE_RADIUS = 0.06  # radius of the drawn zone, m; the object's centre must end within it
MIN_ZONE_DISTANCE = 0.14  # the zone is drawn at least this far from the object, m
LIFT_HEIGHT = 0.03  # the object counts as lifted this far above its resting height, m
USER = {"target": slice(0, 3), "yaw": 3, "grip": 4}  # the controller's state in data.userdata
EXTRAS = {
    "ee_pose": {"shape": [7], "dtype": "float64", "names": ["x", "y", "z", "qw", "qx", "qy", "qz"],
                "doc": "pinch-site pose in the world frame at step t (m, unit quaternion)"},
    "joint_command": {"shape": [7], "dtype": "float32", "names": [*(j.split("/")[-1] for j in ARM_JOINTS), "fingers"],
                      "doc": "joint position targets (rad) in force when step t is observed: those the IK applied "
                             "for action[t-1] (the home pose at t=0)"},
}

RANDOMIZATION = Randomization(
    object_half=uniform(0.018, 0.026, "m"),  # half the cube's side, nominal 0.022
    object_mass=uniform(0.05, 0.3, "kg"),  # nominal 0.1
    object_friction=uniform(0.6, 1.2),  # sliding friction of the object, nominal 1.0
    object_rgb=uniform((0.6, 0.05, 0.05), (1.0, 0.45, 0.35)),  # nominal (.85, .2, .15)
    light=uniform((0.25, 0.45), (0.55, 0.75)),  # headlight (ambient, diffuse), nominal (0.4, 0.6)
    top_light=uniform(0.3, 0.7),  # diffuse of the light above the table, nominal 0.5
)


def build_spec(for_ik: bool = False) -> mujoco.MjSpec:
    """arm.xml with the Jaco arm at ``arm_mount`` and its hand at the wrist. ``for_ik``: the kinematic model the IK
    solves on (arm joints only: no object, rigid fingers, no actuators)."""
    spec = mujoco.MjSpec.from_file(str(XML))
    arm = mujoco.MjSpec.from_file(str(KINOVA / "jaco_arm.xml"))
    hand = mujoco.MjSpec.from_file(str(KINOVA / "jaco_hand.xml"))
    arm.site("wristsite").attach_body(hand.body("hand"), "hand/", "")
    spec.site("arm_mount").attach_body(arm.body("b_base"), "jaco/", "")
    if for_ik:
        spec.delete(spec.body("object"))
        for joint in FINGER_JOINTS:
            spec.delete(spec.joint(joint))
        return spec
    for body in spec.bodies:
        if body.name.startswith("jaco/"):
            body.gravcomp = 1.0  # the joint controllers track targets without fighting gravity
    for joint, kp, kv, torque in zip(ARM_JOINTS, KP, KV, TORQUE):
        _position_actuator(spec, joint, kp, kv, torque)
    for joint in FINGER_JOINTS:
        _position_actuator(spec, joint, FINGER_KP, 0.0, FINGER_TORQUE)
    spec.body("jaco/hand/hand").add_camera(name="wrist", pos=[0.0, 0.075, -0.06], quat=[0.0, 0.0, 0.0, 1.0],
                                           fovy=75.0)
    return spec


def _position_actuator(spec: mujoco.MjSpec, joint: str, kp: float, kv: float, torque: float) -> None:
    act = spec.add_actuator(name=joint.split("/")[-1], target=joint, trntype=mujoco.mjtTrn.mjTRN_JOINT)
    act.set_to_position(kp=kp, kv=kv)
    act.forcelimited = mujoco.mjtLimited.mjLIMITED_TRUE
    act.forcerange = [-torque, torque]


def target_rotation(yaw: float) -> mink.SO3:
    """The pinch site pointing down, turned by ``yaw`` about the world's vertical."""
    return mink.SO3.from_z_radians(yaw) @ mink.SO3(DOWN)


class ArmIK:
    """Differential IK for the Jaco's pinch site with mink: one QP per control step.

    Tasks: the pinch-site pose (position, and orientation: pointing down at a yaw) and a light posture task toward
    HOME in the null space. Limits: joint positions, Jaco's joint speeds, and the hand kept 5 mm clear of the table.
    """

    def __init__(self) -> None:
        self.model = build_spec(for_ik=True).compile()
        self.configuration = mink.Configuration(self.model)
        self.frame = mink.FrameTask(TCP, "site", position_cost=1.0, orientation_cost=0.3, lm_damping=1e-3)
        self.posture = mink.PostureTask(self.model, cost=1e-2)
        self.posture.set_target(np.array(HOME))
        hand = [f"jaco/hand/{g}" for g in HAND_GEOMS]
        self.limits = [
            mink.ConfigurationLimit(self.model),
            mink.VelocityLimit(self.model, dict(zip(ARM_JOINTS, JOINT_SPEED))),
            mink.CollisionAvoidanceLimit(self.model, [(hand, ["table"])], minimum_distance_from_collisions=0.005,
                                         collision_detection_distance=0.04),
        ]

    def tcp(self, q: np.ndarray) -> np.ndarray:
        """Pinch-site position at joint angles ``q``."""
        self.configuration.update(np.asarray(q, dtype=float))
        return self.configuration.data.site(TCP).xpos.copy()

    def solve(self, q: np.ndarray, position: np.ndarray, yaw: float, dt: float) -> np.ndarray:
        """Joint angles one control period ``dt`` after ``q`` on the way to the target pose (``q`` itself when the
        QP has no solution, e.g. the limits contradict each other: the arm holds still rather than fail)."""
        self.configuration.update(np.asarray(q, dtype=float))
        self.frame.set_target(mink.SE3.from_rotation_and_translation(target_rotation(yaw), position))
        try:
            velocity = mink.solve_ik(self.configuration, [self.frame, self.posture], dt, "daqp", damping=1e-4,
                                     limits=self.limits)
        except mink.NoSolutionFound:
            return np.asarray(q, dtype=float)
        return self.configuration.integrate(velocity, dt)


class PickPlaceTask(Task):
    """Pick the object up and put it in the zone. Reward: 1 on success, else a staged 0..0.9 (hand near the
    object, object lifted, object near the zone). Success: the object rests in the zone (centre within 6 cm, back
    on the table) and the gripper is open."""

    def initialize(self, physics: ArmScene, rng: np.random.Generator) -> None:
        xy = rng.uniform(-OBJECT_AREA, OBJECT_AREA, size=2)
        yaw = rng.uniform(-np.pi, np.pi)
        while True:
            zone = rng.uniform(-ZONE_AREA, ZONE_AREA, size=2)
            if np.linalg.norm(zone - xy) > MIN_ZONE_DISTANCE:
                break
        physics.home()
        physics.place_object(xy, yaw)
        physics.place_zone(zone)

    def goal(self, physics: ArmScene) -> np.ndarray:
        """The zone's centre (x, y), m."""
        return physics.zone_xy()

    def goal_distance(self, physics: ArmScene) -> float:
        """Horizontal distance from the object's centre to the zone's, m."""
        return physics.zone_distance()

    def set_goal(self, physics: ArmScene, goal: np.ndarray) -> np.ndarray:
        """Move the zone, kept within the area where zones are drawn."""
        physics.place_zone(np.clip(np.asarray(goal, dtype=np.float64), -ZONE_AREA, ZONE_AREA))
        return self.goal(physics)

    def success(self, physics: ArmScene) -> bool:
        resting = physics.object_position()[2] < physics.object_half() + 0.01
        return bool(physics.zone_distance() < ZONE_RADIUS and resting and physics.grip() < 0.5)

    def reward(self, physics: ArmScene) -> float:
        if self.success(physics):
            return 1.0
        reach = 1.0 - np.tanh(10.0 * np.linalg.norm(physics.tcp_position() - physics.object_position()))
        place = 1.0 - np.tanh(10.0 * physics.zone_distance())
        return float(0.2 * reach + 0.3 * physics.lifted() + 0.4 * place)


class ArmScene(Scene):
    """Action (``control="ee"``, default): end-effector velocity ``ee_vx, ee_vy, ee_vz`` (±0.2 m/s, world frame:
    +x right and +y away as seen from the front camera, +z up), ``ee_yaw`` (±1 rad/s) and ``gripper`` (+1 closes,
    -1 opens, full travel in 0.5 s; 0 holds). ``control="joint"``: the six joints' velocities (Jaco's speed limits
    at ±1) and ``gripper``. The task is PickPlaceTask.

    ``randomize=True`` draws ``RANDOMIZATION`` (object size, mass, friction, colour; the lights) at every reset,
    from a child stream of the seed, and keeps it in ``randomized``.
    """

    name = "arm"
    control_rate = 20.0
    default_cameras = ("front", "wrist")
    contact_groups = (("jaco/hand/b_finger_tip_1", "object"), ("jaco/hand/b_finger_tip_2", "object"),
                      ("jaco/hand/b_finger_tip_3", "object"), ("object", "world"))
    tracked_bodies = ("object", "jaco/hand/hand")
    randomization = RANDOMIZATION
    task_class = PickPlaceTask
    episode_steps = 200  # `teleworld generate`'s default episode length here: the expert needs about 90..130
    EE_KEYS = (("ee_vx", "left", "right"), ("ee_vy", "down", "up"), ("ee_vz", "s", "w"), ("ee_yaw", "a", "d"),
               ("gripper", "q", "e"))
    EE_PAD = (("ee_vx", "leftx"), ("ee_vy", "-lefty"), ("ee_vz", "triggerright-triggerleft"), ("ee_yaw", "rightx"),
              ("gripper", "rightshoulder-leftshoulder"))
    JOINT_KEYS = (("joint_1", "a", "d"), ("joint_2", "s", "w"), ("joint_3", "down", "up"), ("joint_4", "j", "l"),
                  ("joint_5", "k", "i"), ("joint_6", "left", "right"), ("gripper", "q", "e"))
    JOINT_PAD = (("joint_1", "leftx"), ("joint_2", "-lefty"), ("joint_3", "-righty"), ("joint_4", "rightx"),
                 ("gripper", "triggerright-triggerleft"))

    def __init__(self, *args, control: str = "ee", randomize: bool = False, **kwargs):
        if control not in ("ee", "joint"):
            raise TeleworldError(f"arm: control must be 'ee' or 'joint', got {control!r}")
        self.control = control
        super().__init__(*args, **kwargs)
        self.key_bindings = self.EE_KEYS if control == "ee" else self.JOINT_KEYS
        self.pad_bindings = self.EE_PAD if control == "ee" else self.JOINT_PAD
        self.randomize = randomize
        self.randomized: dict = {}
        self.ik = ArmIK()
        m = self.model
        self._arm_qpos = np.array([m.jnt_qposadr[m.joint(j).id] for j in ARM_JOINTS])
        self._finger_qpos = np.array([m.jnt_qposadr[m.joint(j).id] for j in FINGER_JOINTS])
        self._object_qpos = m.jnt_qposadr[m.joint("object").id]
        self._zone_mocap = m.body_mocapid[m.body("zone").id]
        self._finger_of = {m.body(f"jaco/hand/{link}_{i}").id: i  # finger links -> finger number
                           for i in (1, 2, 3) for link in ("b_finger", "b_finger_tip")}
        self._limited = self.ik.model.jnt_limited.astype(bool)
        self._range = self.ik.model.jnt_range.copy()

    def build(self) -> tuple[mujoco.MjModel, mujoco.MjData]:
        spec = build_spec()
        self._xml = spec.to_xml()
        model = spec.compile()
        return model, mujoco.MjData(model)

    def mjcf(self) -> str:
        return self._xml

    def info(self) -> dict:
        info = super().info()
        info["control"] = self.control
        info["step_extras"] = EXTRAS
        if self.randomize:
            info["randomization"] = self.randomization.to_dict()
        return info

    @property
    def action_spec(self) -> ActionSpec:
        if self.control == "ee":
            names = ("ee_vx", "ee_vy", "ee_vz", "ee_yaw", "gripper")
        else:
            names = (*(j.split("/")[-1] for j in ARM_JOINTS), "gripper")
        return ActionSpec(names=names, low=(-1.0,) * len(names), high=(1.0,) * len(names))

    # ----- episode start -----
    def vary(self, rng: np.random.Generator) -> None:
        if self.randomize:  # a child stream: the task's draws stay those of the unrandomized scene
            self.randomized = self.randomization.sample(rng.spawn(1)[0])
            self._apply(self.randomized)

    def home(self) -> None:
        """The arm at HOME, fingers open, and the controller's targets where that puts the hand."""
        d = self.data
        d.qpos[self._arm_qpos] = HOME
        d.qpos[self._finger_qpos] = FINGER_OPEN
        d.ctrl[:6] = HOME
        d.ctrl[6:9] = FINGER_OPEN
        d.userdata[USER["target"]] = self.ik.tcp(np.array(HOME))
        d.userdata[USER["yaw"]] = 0.0
        d.userdata[USER["grip"]] = 0.0

    def place_object(self, xy: np.ndarray, yaw: float) -> None:
        """The object resting on the table at ``xy`` turned by ``yaw``."""
        half, i = self.object_half(), self._object_qpos
        self.data.qpos[i:i + 7] = [xy[0], xy[1], half, np.cos(yaw / 2), 0, 0, np.sin(yaw / 2)]

    def place_zone(self, xy: np.ndarray) -> None:
        """The zone's centre (its mocap body) at ``xy``."""
        self.data.mocap_pos[self._zone_mocap, :2] = xy

    def _apply(self, p: dict) -> None:
        """Write one draw of RANDOMIZATION into the model (every parameter is set, none is left over)."""
        m = self.model
        geom, body = m.geom("object").id, m.body("object").id
        half = np.full(3, p["object_half"])
        set_box_half_sizes(m, geom, half)
        set_solid_box_mass(m, body, p["object_mass"], half)
        m.geom_friction[geom, 0] = p["object_friction"]
        m.geom_rgba[geom, :3] = p["object_rgb"]
        m.vis.headlight.ambient[:] = p["light"][0]
        m.vis.headlight.diffuse[:] = p["light"][1]
        m.light_diffuse[m.light("top").id] = p["top_light"]
        mujoco.mj_setConst(m, self.data)  # mass-dependent constants (constraint scaling)
        mujoco.mj_resetData(m, self.data)

    # ----- control -----
    def apply_action(self, action: np.ndarray) -> None:
        d, dt = self.data, 1.0 / self.control_rate
        q = d.ctrl[:6].astype(float)
        if self.control == "ee":
            tcp = self.ik.tcp(q)
            target = np.clip(d.userdata[USER["target"]] + action[:3] * MAX_LINEAR * dt, *WORKSPACE)
            lead = target - tcp
            target = tcp + lead * min(1.0, LEAD / (np.linalg.norm(lead) + 1e-12))
            yaw = _wrap(d.userdata[USER["yaw"]] + action[3] * MAX_YAW * dt)
            q_next = self.ik.solve(q, target, yaw, dt)
        else:
            q_next = q + action[:6] * JOINT_SPEED * dt
            q_next = np.where(self._limited, np.clip(q_next, self._range[:, 0], self._range[:, 1]), q_next)
            target, yaw = self.ik.tcp(q_next), _yaw_of(self.ik.configuration.data.site(TCP).xmat)
        grip = float(np.clip(d.userdata[USER["grip"]] + action[-1] * dt / GRIP_TIME, 0.0, 1.0))
        d.ctrl[:6] = q_next
        d.ctrl[6:9] = FINGER_OPEN + grip * (FINGER_CLOSED - FINGER_OPEN)
        d.userdata[USER["target"]] = target
        d.userdata[USER["yaw"]] = yaw
        d.userdata[USER["grip"]] = grip

    # ----- what the sim can tell -----
    def tcp_position(self) -> np.ndarray:
        """The pinch site's world position, m."""
        return self.data.site(TCP).xpos.copy()

    def tcp_pose(self) -> np.ndarray:
        """(x, y, z, qw, qx, qy, qz) of the pinch site in the world frame."""
        quat = np.empty(4)
        mujoco.mju_mat2Quat(quat, self.data.site(TCP).xmat)
        return np.concatenate([self.tcp_position(), quat])

    def tcp_yaw(self) -> float:
        """The pinch site's yaw about the vertical, relative to DOWN, rad."""
        return _yaw_of(self.data.site(TCP).xmat)

    def target_yaw(self) -> float:
        """The controller's target yaw (the hand follows it with a lag), rad."""
        return float(self.data.userdata[USER["yaw"]])

    def grip(self) -> float:
        """Commanded gripper closure: 0 open .. 1 closed."""
        return float(self.data.userdata[USER["grip"]])

    def object_position(self) -> np.ndarray:
        return self.data.qpos[self._object_qpos:self._object_qpos + 3].copy()

    def object_yaw(self) -> float:
        """The object's rotation about the vertical, rad."""
        w, x, y, z = self.data.qpos[self._object_qpos + 3:self._object_qpos + 7]
        return float(np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z)))

    def object_half(self) -> float:
        """Half the cube's side, m (0.022 unless randomized)."""
        return float(self.model.geom_size[self.model.geom("object").id, 0])

    def held(self) -> bool:
        """At least two of the three fingers (either link) touch the object."""
        con = self.data.contact[:self.data.ncon]
        bodies = self.model.geom_bodyid[np.asarray(con.geom, dtype=int).reshape(-1, 2)]
        obj = self.model.body("object").id
        other = np.where(bodies[:, 0] == obj, bodies[:, 1], np.where(bodies[:, 1] == obj, bodies[:, 0], -1))
        return len({self._finger_of.get(int(b)) for b in other} - {None}) >= 2

    def lifted(self) -> bool:
        """The object is LIFT_HEIGHT above its resting height."""
        return self.object_position()[2] > self.object_half() + LIFT_HEIGHT

    def zone_distance(self) -> float:
        """Horizontal distance from the object's centre to the zone's centre, m."""
        return float(np.linalg.norm(self.object_position()[:2] - self.zone_xy()))

    def zone_xy(self) -> np.ndarray:
        """The zone's centre (x, y), m (in the state, as the zone's mocap position)."""
        return self.data.mocap_pos[self._zone_mocap, :2].copy()

    def extras(self) -> dict[str, np.ndarray]:
        return {"ee_pose": self.tcp_pose(),
                "joint_command": np.concatenate([self.data.ctrl[:6], self.data.ctrl[6:7]]).astype(np.float32)}

    def hud_lines(self) -> list[str]:
        x, y, z = self.tcp_position()
        state = "closed" if self.grip() > 0.5 else "open"
        holding = "  holding" if self.held() else ""
        return [f"ee xyz {x:+.3f} {y:+.3f} {z:+.3f} m",
                f"ee yaw {np.rad2deg(self.tcp_yaw()):+4.0f} deg",
                f"grip   {state} ({self.grip():.2f}){holding}"]


def _wrap(angle: float) -> float:
    return float((angle + np.pi) % (2 * np.pi) - np.pi)


def _yaw_of(xmat: np.ndarray) -> float:
    """Yaw about the world vertical of a site frame relative to DOWN."""
    rel = np.asarray(xmat).reshape(3, 3) @ target_rotation(0.0).as_matrix().T
    return float(np.arctan2(rel[1, 0], rel[0, 0]))


class ArmJointScene(ArmScene):
    """``arm`` driven joint by joint: the six joints' velocities and the gripper (no IK), for `teleworld teleop`."""

    name = "arm-joint"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, control="joint", **kwargs)
