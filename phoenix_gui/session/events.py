"""Evented fields for the session (glue's CallbackProperty idea, no Qt): a `Field` is a descriptor that
validates a value, stores it and announces its topic when, and only when, the value changes. The state's
setters and the code around it (tune panel, app start) write through these, so no write can skip the event.
"""

from __future__ import annotations

import functools
from contextlib import contextmanager
from typing import Callable, Iterable

from .. import validate as v

# Topics a listener can follow. PLAN is announced with every change that can change the plan.
RIG, DEVICES, SPLIT, MODEL, CONTEXT, LAUNCH, NOTES, PLAN = ("rig", "devices", "split", "model", "context", "launch",
                                                            "notes", "plan")
ALL_TOPICS = frozenset((RIG, DEVICES, SPLIT, MODEL, CONTEXT, LAUNCH, NOTES, PLAN))
PLAN_INPUTS = frozenset((RIG, DEVICES, SPLIT, MODEL, CONTEXT, LAUNCH))

Listener = Callable[[frozenset], None]


class SettingError(v.InputError):
    """A value the wizard cannot use; the message is one sentence for the user (the shared
    validate.InputError, a ValueError, so the wizard and the command line refuse the same values alike)."""


def checked(check, *args):
    """Run a shared validator; its InputError becomes the wizard's SettingError (same sentence)."""
    try:
        return check(*args)
    except SettingError:
        raise
    except v.InputError as e:
        raise SettingError(str(e)) from None


class Field:
    """One evented value of an `Evented` object: `obj.name = x` checks x (check(obj, x) returns the value
    to keep or raises SettingError), stores it and announces `topic` if it differs from what was there."""

    def __init__(self, topic: str, default=None, check: Callable | None = None, factory: Callable | None = None):
        self.topic, self.default, self.check, self.factory = topic, default, check, factory

    def __set_name__(self, owner, name: str) -> None:
        self.name, self.slot = name, "_f_" + name

    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        d = obj.__dict__
        if self.slot not in d:
            d[self.slot] = self.factory() if self.factory else self.default
        return d[self.slot]

    def __set__(self, obj, value) -> None:
        if self.check is not None:
            value = self.check(obj, value)
        if self.slot in obj.__dict__ and _same(obj.__dict__[self.slot], value):
            return
        obj.__dict__[self.slot] = value
        obj._emit(self.topic)


def _same(a, b) -> bool:
    try:
        return type(a) is type(b) and bool(a == b)
    except Exception:  # values whose == is not a plain bool (arrays): treat as changed
        return False


def announced_once(method):
    """A setter that writes several fields announces what changed once, when it is done."""
    @functools.wraps(method)
    def run(self, *args, **kwargs):
        with self.grouped():
            return method(self, *args, **kwargs)
    return run


class Evented:
    """Listeners per topic, and grouping several changes into one announcement."""

    def __init__(self):
        self._listeners: list[tuple[frozenset, Listener]] = []
        self._pending: set | None = None

    def on(self, topics: Iterable[str] | str, fn: Listener) -> None:
        """Call fn(changed_topics) whenever one of `topics` changes."""
        t = frozenset([topics] if isinstance(topics, str) else topics)
        unknown = t - ALL_TOPICS
        if unknown:
            raise ValueError(f"unknown topics {sorted(unknown)}")
        self._listeners.append((t, fn))

    def off(self, fn: Listener) -> None:
        # == not `is`: each `obj.method` is a new bound-method object, equal to the one given to on()
        self._listeners = [(t, f) for t, f in self._listeners if f != fn]

    def subscribe(self, fn: Callable[[], None]) -> None:
        """Call fn() on any change."""
        self.on(ALL_TOPICS, lambda _t: fn())

    @contextmanager
    def grouped(self):
        """Group several setters into one announcement."""
        outer = self._pending is not None
        if not outer:
            self._pending = set()
        try:
            yield
        finally:
            if not outer:
                topics, self._pending = self._pending, None
                if topics:
                    self._announce(topics)

    def _emit(self, *topics: str) -> None:
        t = set(topics)
        if t & PLAN_INPUTS:
            t.add(PLAN)
            self._inputs_changed()
        if self._pending is not None:
            self._pending |= t
        else:
            self._announce(t)

    def _inputs_changed(self) -> None:
        """A plan input changed: the subclass drops what it derived from them."""

    def _announce(self, topics: set) -> None:
        ft = frozenset(topics)
        for want, fn in list(self._listeners):
            if want & ft:
                fn(ft)

    def changed(self) -> None:
        """Everything may have changed."""
        self._emit(*ALL_TOPICS)
