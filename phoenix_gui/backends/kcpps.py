"""Read a koboldcpp .kcpps config file: the user's hand-tuned setup, for import and comparison.

The file-level part: its size limit, its encoding (koboldcpp's launcher may write a BOM), JSON, one
sentence per failure. What each key means, and every value's check against koboldcpp 1.115.1's own
argument rules, is koboldcpp's option table (engines/koboldcpp/options.py read_config).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .. import validate as v
from ..engines.koboldcpp.options import read_config
from ..planner.settings import PlanSettings

_KCPPS_BYTES = 4 << 20


class KcppsError(v.InputError):
    """A .kcpps file cannot be used; the message is one sentence."""


@dataclass
class KcppsImport:
    path: Path
    model_path: str | None
    settings: PlanSettings
    gpu_ids: list[int] | None  # CUDA ids (PCI order) the config uses, in its order: `device`, or a usecuda digit
    notes: list[str]
    # rpcmode connect: the other PCs' RPC servers (host:port), whose devices come first in the split
    rpc_targets: list[str] = field(default_factory=list)


def read_kcpps(path: str | Path, base: PlanSettings | None = None) -> KcppsImport:
    path = Path(path)
    try:
        data = json.loads(v.read_text(path, "The config", _KCPPS_BYTES, encoding="utf-8-sig"))
    except v.InputError as e:
        raise KcppsError(str(e)) from None
    except (json.JSONDecodeError, RecursionError):
        raise KcppsError(f"{path.name} is not a koboldcpp config (it is not JSON).") from None
    if not isinstance(data, dict):
        raise KcppsError(f"{path.name} is not a koboldcpp config (no settings object).")
    try:
        r = read_config(data)
        return KcppsImport(path, r.raw["model"], (base or PlanSettings()).with_(**r.settings), r.raw["gpu_ids"],
                           r.notes, r.raw["rpc"])
    except v.InputError as e:
        raise KcppsError(f"{path.name}: {e}") from None
