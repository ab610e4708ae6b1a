"""Read a koboldcpp .kcpps config: the user's hand-tuned setup, for import and comparison."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..planner.settings import PlanSettings

_LEGACY_KV = {0: "f16", 1: "q8_0", 2: "q4_0", 3: "bf16"}


class KcppsError(ValueError):
    """A .kcpps file cannot be used; the message is one sentence."""


@dataclass
class KcppsImport:
    path: Path
    model_path: str | None
    settings: PlanSettings
    gpu_ids: list[int] | None  # a digit in usecuda (masks to one GPU without a split)
    notes: list[str]


def read_kcpps(path: str | Path, base: PlanSettings | None = None) -> KcppsImport:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise KcppsError(f"The config {path} does not exist.") from None
    except (OSError, UnicodeDecodeError) as e:
        raise KcppsError(f"The config {path.name} cannot be read ({e}).") from None
    except json.JSONDecodeError:
        raise KcppsError(f"{path.name} is not a koboldcpp config (it is not JSON).") from None
    if not isinstance(data, dict):
        raise KcppsError(f"{path.name} is not a koboldcpp config (no settings object).")
    notes: list[str] = []
    s = base or PlanSettings()
    model = data.get("model_param") or data.get("model")
    if isinstance(model, list):
        model = model[0] if model else None
    if model is not None and not isinstance(model, str):
        model = None
    kw: dict = {"backend": "koboldcpp"}
    try:
        if isinstance(data.get("contextsize"), (int, float)):
            kw["context"] = int(data["contextsize"])
        bs = data.get("batchsize", data.get("blasbatchsize"))
        if isinstance(bs, (int, float)) and bs > 0:
            kw["batch"] = int(bs)
        gl = data.get("gpulayers")
        if isinstance(gl, (int, float)) and gl >= 0:
            kw["gpulayers"] = int(gl)
        elif gl == -1:
            notes.append("The config let koboldcpp choose the GPU layers (-1); Phoenix plans all layers.")
        ts = data.get("tensor_split")
        if isinstance(ts, list) and ts and all(isinstance(x, (int, float)) for x in ts):
            kw["tensor_split"] = tuple(float(x) for x in ts)
        q = data.get("quantkv")
        if isinstance(q, int):
            q = _LEGACY_KV.get(q, "f16")
        if isinstance(q, str) and q:
            kw["cache_type_k"] = kw["cache_type_v"] = q
        if "noflashattention" in data:
            kw["flash_attn"] = not bool(data["noflashattention"])
        elif "flashattention" in data:  # legacy opt-in key
            kw["flash_attn"] = bool(data["flashattention"])
        mc = data.get("moecpu")
        if isinstance(mc, (int, float)) and mc > 0:
            kw["moecpu"] = int(mc)
        if data.get("lowvram"):
            kw["lowvram"] = True
        if data.get("splitmode") == "row" or "rowsplit" in (data.get("usecublas") or []):
            kw["split_mode"] = "row"
        port = data.get("port_param") if data.get("port_param") not in (None, 5001) else data.get("port")
        if isinstance(port, int):
            kw["port"] = port
        if isinstance(data.get("host"), str) and data["host"]:
            kw["host"] = data["host"]
        if "usemmap" in data:
            kw["use_mmap"] = bool(data["usemmap"])
    except (TypeError, ValueError) as e:
        raise KcppsError(f"{path.name} has a malformed value ({e}).") from None
    cuda = data.get("usecuda") or data.get("usecublas")
    gpu_ids = None
    if isinstance(cuda, list):
        ids = [int(x) for x in cuda if isinstance(x, str) and x.isdigit()]
        if ids and not kw.get("tensor_split"):
            gpu_ids = ids[:1]  # a digit without a split masks to that one GPU
            notes.append(f"The config used only GPU {ids[0]}.")
    if data.get("usecpu") or data.get("noblas"):
        kw["gpulayers"] = 0
    return KcppsImport(path, model, s.with_(**kw), gpu_ids, notes)
