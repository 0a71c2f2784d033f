"""A teleoperation session: the real-time loop, episode control and the window, around one scene and device.

Data flow of one tick (``TeleopSession.tick``)::

    window events ──> devices ──> commands (record, save, discard, re-record, reset, pause, quit, help)
    observation ──> device.get_action ──> clip (the applied action) ──> BackgroundWriter queue ──> Zarr
                                                 └──> scene.step ──> next observation ──> window + HUD
    Pacer: sleep to the next tick of the control rate; late steps are counted as overruns.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from concurrent.futures import Future
from typing import Literal, Mapping

import numpy as np

from recorder import EpisodeStore
from recorder.background_writer import BackgroundWriter
from teleop.bindings import Command
from teleop.devices.base import Device
from teleop.loop import step_record
from teleop.pacer import Pacer, jitter_ms
from teleop.scenes.base import Scene
from teleop.window import Hud, Window

OnQuit = Literal["ask", "save", "discard"]
SWITCH_INTERVAL = 0.001  # s


class TeleopSession:
    """Drive ``scene`` with ``device`` at the scene's control rate and record episodes into ``store``.

    ``command_devices`` only issue commands (e.g. the keyboard next to a gamepad). ``on_quit`` decides what
    quitting (or closing the window) does with an open episode: ``ask`` shows a prompt (save / discard /
    quit again to keep driving), ``save`` or ``discard`` act at once. ``command_keys`` names the key (or
    button) of each command for the prompt. Call ``tick`` until it returns False, then ``close`` (or ``run``).

    While idle the scene shows the start that recording will use: ``record`` resets to that start (the idle
    driving is only practice), and after a save the next start is drawn. The live view is rendered at the
    window's resolution; the recorded frames keep the scene's image size.
    """

    def __init__(
        self,
        scene: Scene,
        device: Device,
        store: EpisodeStore,
        window: Window,
        command_devices: tuple[Device, ...] = (),
        seed: int = 0,
        on_quit: OnQuit = "ask",
        operator: str = "human",
        help_lines: tuple[str, ...] = (),
        help_hint: str = "",
        command_keys: Mapping[Command, str] | None = None,
    ):
        self.scene, self.device, self.window = scene, device, window
        # The writer thread runs Python code too; by default a thread waits up to 5 ms for the GIL, which
        # would show up as jitter. 1 ms hands the loop the GIL back soon after it wakes.
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL))
        self.devices = (device, *command_devices)
        self.writer = BackgroundWriter(store)
        self.on_quit, self.operator, self.help_lines, self.help_hint = on_quit, operator, help_lines, help_hint
        self.command_keys = {c: (command_keys or {}).get(c, c.value) for c in Command}
        self.pacer = Pacer(scene.control_rate)
        self.episodes_saved = store.num_episodes  # index of the next saved episode
        self.saved: list[Future] = []  # futures of this session's saved episodes -> their indices
        self.next_seed = seed
        self.recording = self.paused = self.asking = self.show_help = self.finished = False
        self.episode_seed: int | None = None
        self._last_saved: tuple[Future, int] | None = None  # (episode, seed) re-record replaces when idle
        self.steps = 0
        self.messages: deque[str] = deque(maxlen=3)
        self._episode_start = (0, 0)  # (overruns, tick index) when the open episode began
        self.rec_seconds = 0.0  # wall time spent recording the open episode, pauses and prompts excluded
        self._last_tick = time.monotonic()
        self._reset(self._draw_seed())

    # ----- the loop -----
    def run(self) -> None:
        """Tick until the operator quits, then close."""
        try:
            while self.tick():
                pass
        finally:
            self.close()

    def tick(self) -> bool:
        """One control step: events, action, record, physics, draw, wait. False once the session is over."""
        now = self.pacer.tick()
        for event in self.window.poll():
            if self.window.is_close(event):
                self.handle(Command.QUIT)
            for device in self.devices:
                command = device.handle_event(event)
                if command is not None:
                    self.handle(command)
        if self.finished:
            return False
        clock, self._last_tick = self._last_tick, time.monotonic()
        if self.recording and not (self.paused or self.asking):
            self.rec_seconds += self._last_tick - clock
        if not (self.paused or self.asking):
            action = self.scene.action_spec.clip(self.device.get_action(self.obs))
            if self.recording:
                self.writer.add(*step_record(self.obs, action, now))
                self.steps += 1
            self.obs = self.scene.step(action)
            if self.recording and self.device.done:
                self._save()
        self.window.draw(self.scene.render(self.scene.cameras[0], self._view_size()), self.hud())
        self.pacer.wait()
        return True

    def close(self) -> None:
        """Finish writing. An episode still open here (the loop was interrupted) is kept unless the
        operator chose ``on_quit="discard"``; either way it is announced on stderr."""
        if self.recording:
            if self.on_quit == "discard":
                self._discard()
            else:
                self._save()
            print(f"teleop: {self.messages[-1]} on exit", file=sys.stderr)
        self.writer.close()

    # ----- episode control -----
    def handle(self, command: Command) -> None:
        """Apply one operator command (none once the session is over)."""
        if self.finished:
            return
        if self.asking:
            self._answer_quit_prompt(command)
        elif command is Command.RECORD:
            self._save() if self.recording else self._start(self.episode_seed)
        elif command is Command.SAVE and self.recording:
            self._save()
        elif command is Command.DISCARD and self.recording:
            self._discard()
        elif command is Command.RERECORD:
            self._rerecord()
        elif command is Command.RESET:
            if self.recording:
                self.messages.append("save or discard the episode before resetting")
            else:
                self._reset(self._draw_seed())
        elif command is Command.PAUSE:
            self.paused = not self.paused
        elif command is Command.HELP:
            self.show_help = not self.show_help
        elif command is Command.QUIT:
            self._quit()

    def _quit(self) -> None:
        if self.recording and self.on_quit == "ask":
            self.asking = True
            return
        if self.recording:
            self._save() if self.on_quit == "save" else self._discard()
        self.finished = True

    def _answer_quit_prompt(self, command: Command) -> None:
        if command is Command.SAVE:
            self._save()
            self.finished = True
        elif command is Command.DISCARD:
            self._discard()
            self.finished = True
        elif command is Command.QUIT:  # quit again: back to driving, episode still open
            self.asking = False

    def _draw_seed(self) -> int:
        if self.device.episode_seed is not None:
            return int(self.device.episode_seed)
        self.next_seed += 1
        return self.next_seed - 1

    def _reset(self, seed: int) -> None:
        self._last_saved = None
        self.obs = self.scene.reset(seed)
        self.device.on_reset(self.obs, np.random.default_rng(seed + 1_000_003))
        self.episode_seed = seed

    def _start(self, seed: int) -> None:
        self._reset(seed)
        self.writer.begin(seed=seed, scene=self.scene.name, device=self.device.name, operator=self.operator,
                          control_rate=self.scene.control_rate, goal=self.scene.goal().tolist())
        self.recording, self.steps, self.rec_seconds = True, 0, 0.0
        self._episode_start = (self.pacer.overruns, len(self.pacer.lateness))

    def _save(self) -> None:
        if self.steps == 0:
            self._discard()
            self.messages[-1] = "nothing recorded: empty episode dropped"
            return
        overruns, first_tick = self._episode_start
        p50, p99 = jitter_ms(self.pacer.lateness[first_tick:])
        saved = self.writer.end(overruns=self.pacer.overruns - overruns, jitter_p50_ms=p50,
                                jitter_p99_ms=p99, success=self.scene.success())
        self.saved.append(saved)
        seed = self.episode_seed
        self.messages.append(f"saved episode {self.episodes_saved} ({self.steps} steps)")
        self.episodes_saved += 1
        self.recording = False
        self._reset(self._draw_seed())  # show the next start: the one the next recording uses
        self._last_saved = (saved, seed)

    def _discard(self) -> None:
        self.writer.discard()
        self.messages.append(f"discarded the open episode ({self.steps} steps)")
        self.recording = False
        self._reset(self.episode_seed)  # back to the same start: a discarded take can be tried again

    def _rerecord(self) -> None:
        """Another take from the same start: replaces the open episode, or else the episode just saved."""
        if self.episode_seed is None:
            return
        seed, replaced = self.episode_seed, self._last_saved
        if self.recording:
            self._discard()
        elif replaced is not None:
            future, seed = replaced
            self.writer.mark_deleted(future)
            self.saved.remove(future)
            self.messages.append(f"episode {self.episodes_saved - 1} marked deleted")
        self._start(seed)
        self.messages.append(f"re-recording from seed {seed}")

    # ----- HUD -----
    def hud(self) -> Hud:
        """The HUD for the current state."""
        if self.recording:
            state = f"REC {self.rec_seconds:5.1f} s  {self.steps} steps"
        else:
            state = f"not recording ({self.command_keys[Command.RECORD]}: record this start)"
        if self.paused:
            state += "  PAUSED"
        alerts = [self.device.status] if self.device.status else []
        if self.asking:
            keys = self.command_keys
            alerts += ["episode open! quit how?", f"  {keys[Command.SAVE]}: save it and quit",
                       f"  {keys[Command.DISCARD]}: discard it and quit", f"  {keys[Command.QUIT]}: keep driving"]
        return Hud(
            lines=[
                f"scene   {self.scene.name}",
                f"device  {self.device.name}",
                *self.scene.hud_lines(),
                f"episode {self.episodes_saved}  (seed {self.episode_seed})",
                state,
                f"rate    {self.pacer.achieved_rate:5.1f} / {self.scene.control_rate:g} Hz",
                f"overruns {self.pacer.overruns}   queue {self.writer.pending}",
                "contact " + ", ".join("-".join(g) for g, on in zip(self.scene.contact_groups,
                                                                     self.obs.contact_summary) if on),
                self.help_hint,
                *self.messages,
            ],
            recording=self.recording,
            contact=self._touching(),
            alerts=alerts,
            overlay=list(self.help_lines) if self.show_help else [],
        )

    def _view_size(self) -> tuple[int, int]:
        """The live view's (H, W): the recorded camera's aspect at the window's resolution."""
        h, w = self.scene.image_size
        scale = self.window.view_size / max(h, w)
        return round(h * scale), round(w * scale)

    def _touching(self) -> bool:
        """The contact light: the scene's first contact group (robot and object), or any contact at all."""
        if len(self.obs.contact_summary):
            return bool(self.obs.contact_summary[0])
        return len(self.obs.contacts) > 0
