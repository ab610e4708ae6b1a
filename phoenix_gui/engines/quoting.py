"""How a command's words are written for sh and for cmd.exe, and the checks every value passes first.

A value reaches a command line or a script only through these checks: no control character (CR/LF would
start a new command in a .bat, NUL ends a C string, Ctrl-Z ends a .bat), and in a .bat no double quote
(cmd.exe has no escape for it inside quotes, so it would end the quoting).
"""

from __future__ import annotations

import re
import unicodedata

from ..validate import InputError

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _is_control(c: str) -> bool:
    return unicodedata.category(c) in ("Cc", "Zl", "Zp")  # C0, DEL, C1 (NEL), line/paragraph separators


def check_value(value: str, what: str = "A value") -> str:
    """Refuse text with control characters: in a command line or a script they start a new command."""
    if any(_is_control(c) for c in value):
        raise InputError(f"{what} ({_short(value)}) contains a control character such as a line break, "
                         "which cannot go into a command line or a script.")
    return value


def _short(value: str) -> str:
    r = repr(value)
    return r if len(r) <= 60 else r[:57] + "..."


def check_env_name(name: str) -> None:
    if not _ENV_NAME.match(name):
        raise InputError(f"{_short(name)} is not an environment variable name.")


def check_bat_value(value: str, what: str) -> str:
    check_value(value, what)
    if '"' in value:
        raise InputError(f"{what} ({_short(value)}) contains a double quote, which cmd.exe cannot pass safely.")
    return value


def displayable(value: str) -> str:
    """A character cmd.exe cannot carry safely shown as U+FFFD: shown text never reads as a second command."""
    return "".join("\ufffd" if _is_control(c) or c == '"' else c for c in value)


def bat_text(s: str) -> str:
    """Inside double quotes cmd.exe takes & | < > ^ ( ) ! literally (delayed expansion off); % is
    expanded even there, so it is doubled."""
    return s.replace("%", "%%")


def cmd_quote(arg: str) -> str:
    """One argument for a .bat line, always in double quotes. Trailing backslashes are doubled so that
    the program's C runtime does not read the closing quote as an escaped one."""
    check_bat_value(arg, "An argument")
    stripped = arg.rstrip("\\")
    return '"' + bat_text(stripped + "\\" * (2 * (len(arg) - len(stripped)))) + '"'
