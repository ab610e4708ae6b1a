"""The option table: one row per engine option, and the generic code that reads and writes it.

A row names an option once: the .kcpps key, the command-line flag, how its value is written for a
LaunchRequest, and how a config's value is checked and turned into settings. An engine's command line,
its config file and its config reader are all built from the same rows (engines/<engine>/options.py), so
an option is spelled in one place. Adding an option or an engine version is a table edit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from .. import validate as v
from .request import LaunchRequest

SWITCH = "switch"  # a bare flag, on when the value is true; true/false in a config
VALUE = "value"  # a flag and one value
VALUES = "values"  # a flag and each value of a list
REPEAT = "repeat"  # the flag again before each value of a list
WORDS = "words"  # a list of words as they are (a profile's spelling); the flag names the first


@dataclass
class Reading:
    """What a config says, as it is read: PlanSettings values by name, notes for the user, and the checked
    raw values a row leaves to the engine's last step (the keys that act together)."""
    data: dict  # the config being read: a row whose meaning depends on another key looks there
    settings: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    raw: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Option:
    key: str | None  # in a .kcpps (None: not in a config)
    flag: str | None  # on the command line (None: not on it)
    kind: str = VALUE
    # the value for a request, in the engine's own terms (None: Phoenix never writes it, a legacy key it reads)
    write: Callable[[LaunchRequest], Any] | None = None
    # check a config's value (None when the key is absent) and put it into the Reading
    read: Callable[[Any, Reading], None] | None = None
    fields: tuple[str, ...] = ()  # the PlanSettings fields it carries
    omit: tuple = ()  # values the command line leaves out (the engine's default); a config keeps them
    when: Callable[[LaunchRequest], bool] | None = None  # the command line has it only when this holds
    text: Callable[[Any], str] = str  # how one value is written on the command line
    legacy: tuple[str, ...] = ()  # older config keys for the same option, which its reader also accepts


def to_argv(table: tuple[Option, ...], req: LaunchRequest) -> list[str]:
    """The table's command line for a request, in table order."""
    argv: list[str] = []
    for o in table:
        if o.flag is None or o.write is None or (o.when is not None and not o.when(req)):
            continue
        x = o.write(req)
        if x is None or x is False or (o.kind != SWITCH and x in o.omit) or (o.kind == SWITCH and not x):
            continue
        if o.kind == SWITCH:
            argv.append(o.flag)
        elif o.kind == WORDS:
            argv += list(x)
        elif o.kind == REPEAT:
            for y in x:
                argv += [o.flag, o.text(y)]
        elif o.kind == VALUES:
            argv += [o.flag, *(o.text(y) for y in x)]
        else:
            argv += [o.flag, o.text(x)]
    return argv


def to_kcpps(table: tuple[Option, ...], req: LaunchRequest) -> dict:
    """The table's config for a request, every key it writes explicit, in table order."""
    return {o.key: o.write(req) for o in table if o.key is not None and o.write is not None}


def from_kcpps(table: tuple[Option, ...], data: dict) -> Reading:
    """Every row's reader, in table order, on a config's values."""
    r = Reading(data)
    for o in table:
        if o.key is not None and o.read is not None:
            o.read(data.get(o.key), r)
    return r


# --- small readers the tables share ---

def flag(x, key: str) -> bool:
    """A config's true/false: koboldcpp writes true/false; 0/1 from hand edits are the same."""
    if x is None or x in (0, 1):
        return bool(x)
    raise v.InputError(f"{key} must be true or false, not {x!r}.")


def number_text(x: float) -> str:
    """A number as an engine reads it: 1.5, 3 (no trailing zeros), at most 4 decimals."""
    return f"{x:.4f}".rstrip("0").rstrip(".") if x != int(x) else str(int(x))


def parse_overrides(text: str) -> tuple[tuple[str, str], ...]:
    """koboldcpp's --overridetensors / llama-server's -ot text, "regex=DEVICE,regex=DEVICE", as pairs.
    Like both engines, it splits on commas and on the first "=" of each part."""
    pairs = []
    for part in (text or "").split(","):
        if not part.strip():
            continue
        rx, eq, buft = part.partition("=")
        if not eq or not rx.strip() or not buft.strip():
            raise v.InputError(f"The tensor override {part.strip()!r} is not PATTERN=DEVICE (e.g. exps=CPU).")
        pairs.append((rx.strip(), buft.strip()))
    return tuple(pairs)


def format_overrides(overrides) -> str:
    return ",".join(f"{rx}={buft}" for rx, buft in overrides)
