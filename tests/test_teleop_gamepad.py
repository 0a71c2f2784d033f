"""A virtual SDL game controller (SDL_JoystickAttachVirtual, the SDL bundled with pygame) drives a scene through
the real GameController path, including pulling it out and plugging it back in mid-episode."""

import ctypes
import glob
import os

import numpy as np
import pygame
import pytest

from recorder import EpisodeStore
from teleop.bindings import load_bindings
from teleop.devices.gamepad import GamepadDevice, apply_deadzone
from teleop.devices.keyboard import KeyboardDevice
from teleop.scenes import load
from teleop.session import TeleopSession
from teleworld.errors import TeleworldError

GAMECONTROLLER, AXES, BUTTONS, HATS = 1, 6, 15, 1  # SDL_JOYSTICK_TYPE_GAMECONTROLLER and its layout
LEFTX, LEFTY, TRIGGERRIGHT = 0, 1, 5
BUTTON_A, LEFTSHOULDER, RIGHTSHOULDER = 0, 9, 10


class VirtualPad:
    """A game controller that exists only inside SDL: plug, move sticks, press buttons, unplug."""

    def __init__(self):
        libs = glob.glob(os.path.join(os.path.dirname(pygame.__file__), os.pardir, "pygame.libs", "libSDL2-*.so*"))
        self.sdl = ctypes.CDLL(libs[0])
        self.sdl.SDL_JoystickFromInstanceID.restype = ctypes.c_void_p
        self.sdl.SDL_JoystickSetVirtualAxis.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int16]
        self.sdl.SDL_JoystickSetVirtualButton.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint8]
        self.index: int | None = None

    def plug(self) -> None:
        self.index = self.sdl.SDL_JoystickAttachVirtual(GAMECONTROLLER, AXES, BUTTONS, HATS)
        assert self.index >= 0

    def unplug(self) -> None:
        assert self.sdl.SDL_JoystickDetachVirtual(self.index) == 0
        self.index = None

    def _handle(self) -> int:
        instance = self.sdl.SDL_JoystickGetDeviceInstanceID(self.index)
        return self.sdl.SDL_JoystickFromInstanceID(instance)

    def axis(self, axis: int, value: int) -> None:
        assert self.sdl.SDL_JoystickSetVirtualAxis(self._handle(), axis, value) == 0

    def button(self, button: int, pressed: bool) -> None:
        assert self.sdl.SDL_JoystickSetVirtualButton(self._handle(), button, int(pressed)) == 0


@pytest.fixture
def pad():
    pad = VirtualPad()
    pygame.init()
    pygame.joystick.init()
    yield pad
    if pad.index is not None:
        pad.unplug()


def tap(session: TeleopSession, pad: VirtualPad, button: int) -> None:
    pad.button(button, True)
    session.tick()
    pad.button(button, False)


def test_virtual_gamepad_drives_push_and_unplugging_pauses_without_losing_the_episode(tmp_path, window, pad):
    pad.plug()
    scene = load("push", control_rate=50.0)
    bindings = load_bindings(None, scene)
    device = GamepadDevice(scene.action_spec, bindings)
    keyboard = KeyboardDevice(scene.action_spec, bindings, scene.control_rate)
    device.connect()
    keyboard.connect()
    assert device.status == ""
    session = TeleopSession(scene, device, EpisodeStore.create(tmp_path / "s.zarr", scene.info()), window,
                            command_devices=(keyboard,))
    pad.axis(LEFTX, 32767)  # full right
    pad.axis(LEFTY, -16384)  # half up (SDL's y axis points down; push binds "-lefty")
    tap(session, pad, BUTTON_A)  # A: start recording
    for _ in range(10):
        session.tick()
    pad.unplug()  # pulled out mid-episode
    for _ in range(5):
        session.tick()
    assert session.recording and "unplugged" in session.device.status
    assert any("unplugged" in alert for alert in session.hud().alerts)
    pad.plug()  # plugged back in: the device opens it on its next event poll
    session.tick()
    assert device.status == ""
    pad.axis(LEFTX, -32767)
    for _ in range(5):
        session.tick()
    tap(session, pad, BUTTON_A)  # A again: stop and save
    session.close()

    store = EpisodeStore.open(tmp_path / "s.zarr")
    assert store.num_episodes == 1
    action = store.episode(0)["action"]
    half = apply_deadzone(16384 / 32767, 0.1)
    assert len(action) == 22  # the start tick + 10, 5 unplugged, the re-plug tick, 5 (stop acts before stepping)
    assert np.allclose(action[:11], [1.0, half])
    assert np.all(action[11:17] == 0.0)  # unplugged: the robot gets zero action
    assert np.allclose(action[17:], [-1.0, 0.0])
    assert store.episode_info(0)["device"] == "gamepad"


def test_triggers_and_deadzones_map_to_the_gripper_grasp(window, pad):
    pad.plug()
    scene = load("gripper")
    device = GamepadDevice(scene.action_spec, load_bindings(None, scene))
    device.connect()
    pad.axis(TRIGGERRIGHT, 32767)
    pad.axis(LEFTX, 2000)  # inside the deadzone
    window.poll()
    action = device.get_action(scene.reset(0))
    assert action[scene.action_spec.names.index("grasp")] == 1.0
    assert action[scene.action_spec.names.index("root")] == 0.0
    device.disconnect()


def test_no_gamepad_is_a_clear_error(window, pad):
    scene = load("push")
    with pytest.raises(TeleworldError, match="no gamepad found"):
        GamepadDevice(scene.action_spec, load_bindings(None, scene)).connect()


def test_deadzone_rescales_to_full_range():
    assert apply_deadzone(0.05, 0.1) == 0.0
    assert apply_deadzone(1.0, 0.1) == 1.0 and apply_deadzone(-1.0, 0.1) == -1.0
    assert apply_deadzone(0.55, 0.1) == pytest.approx(0.5)


def test_bumpers_drive_the_arm_gripper_and_a_button_is_never_an_action_and_a_command(window, pad, tmp_path):
    from teleop.bindings import AxisBinding, Bindings, _check_pad_buttons
    from teleop.bindings import Command

    pad.plug()
    scene = load("arm", image_size=(32, 32))
    device = GamepadDevice(scene.action_spec, load_bindings(None, scene))
    device.connect()
    gripper = scene.action_spec.names.index("gripper")
    levels = []
    for right, left in ((True, False), (False, False), (False, True)):
        pad.button(RIGHTSHOULDER, right)
        pad.button(LEFTSHOULDER, left)
        window.poll()
        levels.append(device.get_action(scene.reset(0))[gripper])
    device.disconnect()
    assert levels == [1.0, 0.0, -1.0]  # right closes, none holds, left opens
    with pytest.raises(ValueError, match="gamepad button 'a' drives gripper and issues record"):
        _check_pad_buttons({"gripper": AxisBinding("a-b")}, Bindings().pad_commands)
    bad = tmp_path / "pad.toml"
    bad.write_text('[gamepad.commands]\nhelp = "rightshoulder"\n')
    with pytest.raises(TeleworldError, match="'rightshoulder' drives gripper and issues help"):
        load_bindings(bad, scene)
    assert Bindings().pad_commands[Command.HELP] == "dpad_up"
