"""Explicit lifecycles: a machine holds one state of an enum, moves only along its ALLOWED transitions,
keeps the history of its moves and tells listeners of each one on the caller's thread. The launch
(lifecycle.LaunchMachine), the share host (share.ShareHost) and the tuner (tune.Tuner) are such machines;
a command line drives any of them with wait_while()."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Collection


class IllegalTransition(RuntimeError):
    """A transition the machine does not allow: a bug in the caller or the machine."""


@dataclass
class Transition:
    old: enum.Enum
    new: enum.Enum
    info: dict = field(default_factory=dict)
    time: float = field(default_factory=time.monotonic)


Listener = Callable[[enum.Enum, enum.Enum, dict], None]


class Machine:
    """The state, its history and the listeners. A subclass sets ALLOWED (state -> the states it may move
    to) and moves with _to(); info["message"], when given, becomes the one-line `message`."""

    ALLOWED: ClassVar[dict] = {}

    def __init__(self, initial: enum.Enum):
        self.state = initial
        self.history: list[Transition] = []
        self.message = ""  # one line about the last transition, for a status bar
        self._listeners: list[Listener] = []

    def on_transition(self, cb: Listener) -> None:
        """cb(old, new, info) after every transition, on the thread that made it."""
        self._listeners.append(cb)

    def _to(self, new: enum.Enum, **info) -> None:
        old = self.state
        if new not in self.ALLOWED[old]:
            raise IllegalTransition(f"{old.value} -> {new.value}")
        self.state = new
        self.message = info.get("message", self.message)
        self.history.append(Transition(old, new, info))
        for cb in list(self._listeners):
            cb(old, new, info)


def wait_while(machine, states: Collection, every: float = 0.1, timeout: float | None = None):
    """Poll a machine (anything with poll() and state) every `every` seconds while its state is one of
    `states`; returns the state it moved to, or the one it still holds after `timeout` seconds. The
    command line's one wait: Ctrl-C and SIGTERM (KeyboardInterrupt) reach the caller, which stops it."""
    end = None if timeout is None else time.monotonic() + timeout
    while machine.state in states:
        machine.poll()
        if machine.state not in states or (end is not None and time.monotonic() >= end):
            break
        time.sleep(every)
    return machine.state
