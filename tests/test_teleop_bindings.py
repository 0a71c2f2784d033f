"""Bindings: scene defaults, TOML overrides that really change what a key does, and one clear error per bad file."""

import numpy as np
import pygame
import pytest

from teleop.bindings import Command, load_bindings
from teleop.devices.keyboard import KeyboardDevice
from teleop.scenes import SCENES, load
from teleworld.errors import TeleworldError


@pytest.mark.parametrize("name", sorted(SCENES))
def test_every_scene_binds_every_action_to_distinct_keys(name):
    scene = load(name)
    bindings = load_bindings(None, scene)
    assert set(bindings.keys) == set(scene.action_spec.names)
    keys = [k for pair in bindings.keys.values() for k in pair] + list(bindings.key_commands.values())
    assert len(keys) == len(set(keys))


def test_toml_overrides_keys_ramp_and_commands(tmp_path):
    path = tmp_path / "keys.toml"
    path.write_text('[keyboard]\nramp_time = 0\n[keyboard.axes]\npusher_vx = ["j", "l"]\n'
                    '[keyboard.commands]\nrecord = "f5"\n[gamepad]\ndeadzone = 0.2\n'
                    '[gamepad.axes]\npusher_vy = { axis = "righty", scale = 0.5 }\n')
    scene = load("push")
    bindings = load_bindings(path, scene)
    assert bindings.pad_axes["pusher_vx"].deadzone == 0.2 and bindings.pad_axes["pusher_vy"].scale == 0.5
    pygame.display.init()
    device = KeyboardDevice(scene.action_spec, bindings, control_rate=20.0)
    device.connect()
    down = pygame.event.Event(pygame.KEYDOWN, key=pygame.K_l)
    assert device.handle_event(down) is None
    assert np.array_equal(device.get_action(None), [1.0, 0.0])  # ramp_time 0: full scale at once
    assert device.handle_event(pygame.event.Event(pygame.KEYDOWN, key=pygame.K_F5)) is Command.RECORD
    assert device.handle_event(pygame.event.Event(pygame.KEYDOWN, key=pygame.K_r)) is None


@pytest.mark.parametrize("text, message", [
    ("[keyboard.axes\n", "not valid TOML"),
    ('[keyboard.axes]\nflying = ["a", "b"]\n', "unknown action of scene 'push' 'flying'"),
    ('[keyboard.axes]\npusher_vx = "a"\n', "must be two key names"),
    ('[keyboard.commands]\nexplode = "x"\n', "unknown keyboard.commands name 'explode'"),
    ('[gamepad.axes]\npusher_vx = "leftz"\n', "unknown gamepad axis or button 'leftz'"),
    ('[gamepad.commands]\nrecord = "turbo"\n', "unknown gamepad button 'turbo'"),
    ("[gamepad]\ndeadzone = 1.5\n", "deadzone must be in [0, 1)"),
    ("[mouse]\n", "unknown top-level table 'mouse'"),
])
def test_bad_bindings_files_are_clear_errors(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(TeleworldError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        load_bindings(path, load("push"))


def test_unknown_key_name_is_a_clear_error_at_connect(tmp_path):
    path = tmp_path / "keys.toml"
    path.write_text('[keyboard.axes]\npusher_vx = ["left", "nokey"]\n')
    scene = load("push")
    pygame.display.init()
    with pytest.raises(TeleworldError, match="unknown key name 'nokey' bound to pusher_vx"):
        KeyboardDevice(scene.action_spec, load_bindings(path, scene), 20.0).connect()
