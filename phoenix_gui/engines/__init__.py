"""The engines Phoenix runs, one package each (koboldcpp, llama_server, rpc_server), and this registry.

An engine package holds everything Phoenix knows about that engine: its EngineProfile facts for the
planner (pure data), how to talk to its server, its RPC host, its log patterns. The packages do not
import each other (an import-linter contract); code above asks this registry by name.
"""

from __future__ import annotations

import copy
from pathlib import Path

from . import koboldcpp, llama_server, rpc_server
from .base import Engine
from .koboldcpp.profile import KOBOLDCPP_1115, KOBOLDCPP_OLD
from .llama_server.profile import LLAMA_CPP_OLD, LLAMA_SERVER_CURRENT
from .profile import EngineProfile

# every engine, by the name settings and command lines use; adding one is one package with an ENGINE
ENGINES: dict[str, Engine] = {e.name: e for e in (koboldcpp.ENGINE, llama_server.ENGINE, rpc_server.ENGINE)}
DEFAULT_RPC_HOST = "koboldcpp"  # a program no RPC host engine claims is run as koboldcpp (koboldcpp.py, renamed builds)


def engine_named(name: str) -> Engine:
    """The engine of that name: a copy of its own, as a caller (a test) may replace a method on it."""
    if name not in ENGINES:
        raise ValueError(f"Unknown engine {name!r}; known: {', '.join(ENGINES)}.")
    return copy.copy(ENGINES[name])


def engine_for_exe(exe: str | Path) -> Engine:
    """The engine a program is, by its file name: the longest exe_hint in it wins (llama-server's empty hint
    takes any program no other engine claims)."""
    claims = [e for e in ENGINES.values() if e.claims(exe)]
    return copy.copy(max(claims, key=lambda e: len(e.exe_hint)))


def engine_for_host(exe: str | Path) -> Engine:
    """The RPC host engine that runs exe to share this PC's devices."""
    e = engine_for_exe(exe)
    return e if e.rpc_host else engine_named(DEFAULT_RPC_HOST)

PROFILES: dict[str, EngineProfile] = {p.name: p for p in (KOBOLDCPP_1115, LLAMA_SERVER_CURRENT, LLAMA_CPP_OLD, KOBOLDCPP_OLD)}
# the profile a backend gets when PlanSettings.engine is None, and its pre-Dec-2025 one (--era old)
CURRENT = {"koboldcpp": KOBOLDCPP_1115, "llama-server": LLAMA_SERVER_CURRENT}
OLD = {"koboldcpp": KOBOLDCPP_OLD, "llama-server": LLAMA_CPP_OLD}


def profile_named(name: str | EngineProfile) -> EngineProfile:
    """A profile by name; a backend name gives that backend's current profile."""
    if isinstance(name, EngineProfile):
        return name
    p = PROFILES.get(name) or CURRENT.get(name)
    if p is None:
        raise ValueError(f"Unknown engine {name!r}; known: {', '.join(PROFILES)}.")
    return p


def engine_for(backend: str, era: str = "current") -> str:
    """The profile name for a backend and an n_gpu_layers era ("current" or "old", as --era)."""
    table = OLD if era == "old" else CURRENT
    if backend not in table:
        raise ValueError(f"Unknown backend {backend!r}.")
    return table[backend].name
