"""What an engine needs to build its command line (LaunchRequest) and the command it builds (LaunchCommand).

backends/commandline.request_for fills a LaunchRequest from (Plan, Rig, model path, exe) by plain copying:
the engine rules (device order, option spellings) live in engines/devices.py and each engine's options.py,
which read only this, never a Plan (the engines sit below the planner).
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..hardware.rig import GpuInfo
from .profile import EngineProfile
from .quoting import bat_text, cmd_quote, displayable


def exe_argv(exe: str | Path | None, default: str) -> list[str]:
    """A koboldcpp.py runs with this Python; a binary runs as itself; none: the engine's name on PATH."""
    if exe is None:
        return [default]
    exe = str(exe)
    if exe.lower().endswith(".py"):
        return [sys.executable, exe]
    return [exe]


@dataclass(frozen=True)
class LaunchRequest:
    exe: str | None  # the engine's program (None: its name on PATH)
    model_path: str
    rig_gpus: tuple[GpuInfo, ...]  # every device of the rig, in rig order (other PCs' first, per node)
    plan_gpus: tuple[int, ...]  # the plan's GPUs in plan order, as indices into rig_gpus
    selected: tuple[GpuInfo, ...]  # the GPUs the settings chose (PlanSettings.devices, or all), in that order
    gpulayers: int
    tensor_split: tuple[float, ...]  # the plan's split, one weight per plan GPU
    profile: EngineProfile
    # the PlanSettings values the command lines read, under PlanSettings' names
    context: int = 4096
    batch: int = 512
    cache_type_k: str = "f16"
    cache_type_v: str = "f16"  # the effective V type (PlanSettings.kv_types: quantized V needs flash attention)
    flash_attn: bool = True
    mmap: bool = False  # the effective choice (PlanSettings.mmap)
    threads: int | None = None
    parallel: int = 1
    host: str = "127.0.0.1"
    port: int = 5001
    split_mode: str = "layer"
    overrides: tuple[tuple[str, str], ...] = ()
    moecpu: int = 0
    lowvram: bool = False
    engine_options: tuple = ()

    @property
    def gpus(self) -> list[GpuInfo]:
        """The plan's GPUs in plan order."""
        return [self.rig_gpus[i] for i in self.plan_gpus]

    @property
    def offloads(self) -> bool:
        """Layers go to a GPU (this PC's or another's): the engine gets device options at all."""
        return bool(self.plan_gpus) and self.gpulayers > 0


@dataclass
class LaunchCommand:
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    backend: str = "koboldcpp"

    def shell_line(self) -> str:
        """For display and copy-paste into sh (shlex quoting holds for any text)."""
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env.items())
        return (env + " " if env else "") + " ".join(shlex.quote(a) for a in self.argv)

    def cmd_line(self) -> str:
        """For display and copy-paste into cmd.exe; a character cmd.exe cannot carry safely is shown
        as U+FFFD, so even a hostile value never shows as a runnable second command."""
        sets = "".join(f'set "{k}={bat_text(displayable(v))}" && ' for k, v in self.env.items())
        return sets + " ".join(cmd_quote(displayable(a)) for a in self.argv)
