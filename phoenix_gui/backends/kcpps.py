"""Read a koboldcpp .kcpps config: the user's hand-tuned setup, for import and comparison.

Every value is checked against koboldcpp 1.115.1's own argument rules before it reaches the
wizard or the planner (a NaN split or a 2^31 gpulayers used to crash the wizard on Next).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .. import validate as v
from ..planner.settings import PlanSettings, parse_overrides

# koboldcpp's --quantkv: names, and the legacy index strings/ints it still parses
_QUANTKV = {"f16": "f16", "bf16": "bf16", "q8_0": "q8_0", "q5_1": "q5_1", "q4_0": "q4_0",
            "0": "f16", "1": "q8_0", "2": "q4_0", "3": "bf16"}
_USECUDA = ("0", "1", "2", "3", "all", "mmq", "nommq", "normal", "lowvram", "rowsplit")
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
        return _parse(data, path, base or PlanSettings())
    except v.InputError as e:
        raise KcppsError(f"{path.name}: {e}") from None


def _given(data: dict, key: str) -> bool:
    return data.get(key) is not None


def _flag(data: dict, key: str) -> bool:
    x = data.get(key)
    if x is None or x in (0, 1):  # koboldcpp writes true/false; 0/1 from hand edits are the same
        return bool(x)
    raise v.InputError(f"{key} must be true or false, not {x!r}.")


def _model(data: dict) -> str | None:
    model = data.get("model_param") or data.get("model")
    if isinstance(model, list):
        model = model[0] if model else None
    if model is None or model == "":
        return None
    return v.text(model, "The model path")


def _parse(data: dict, path: Path, s: PlanSettings) -> KcppsImport:
    notes: list[str] = []
    model = _model(data)
    kw: dict = {"backend": "koboldcpp"}
    if _given(data, "contextsize"):
        kw["context"] = v.integer(data["contextsize"], "contextsize", v.CONTEXT_MIN, v.CONTEXT_MAX["koboldcpp"])
    key = "batchsize" if _given(data, "batchsize") else "blasbatchsize"
    if _given(data, key):
        bs = v.integer(data[key], key)
        if bs not in v.KOBOLD_BATCHES:
            raise v.InputError(f"{key} {bs} is not one koboldcpp accepts ({', '.join(map(str, v.KOBOLD_BATCHES))}).")
        kw["batch"] = 1 if bs == -1 else bs  # -1: no batching, koboldcpp processes one token at a time
        if bs == -1:
            notes.append("The config turned batching off (batchsize -1): prompts are processed one token at a time.")
    if _given(data, "gpulayers"):
        gl = v.integer(data["gpulayers"], "gpulayers", -1, v.INT32_MAX)
        if gl == -1:
            notes.append("The config let koboldcpp choose the GPU layers (-1); Phoenix plans all layers.")
        else:
            kw["gpulayers"] = gl
    ts = data.get("tensor_split")
    if ts is not None and ts != []:
        if not isinstance(ts, list):
            raise v.InputError(f"tensor_split must be a list of numbers, not {ts!r}.")
        vals = tuple(v.number(x, "Each tensor_split value", 0) for x in ts)
        if len(vals) > v.MAX_DEVICES:
            raise v.InputError(f"tensor_split has {len(vals)} values; koboldcpp takes at most {v.MAX_DEVICES}.")
        if any(vals):
            kw["tensor_split"] = v.split(vals)  # the one rule for weights (of any size: only ratios matter)
        else:
            notes.append("The config's tensor_split is all zeros, which koboldcpp ignores (split by free memory).")
    if _given(data, "quantkv"):
        q = data["quantkv"]
        name = _QUANTKV.get(str(q).lower()) if isinstance(q, str) or (isinstance(q, int) and not isinstance(q, bool)) else None
        if name is None:
            raise v.InputError(f"quantkv {q!r} is not one koboldcpp accepts (f16, bf16, q8_0, q5_1, q4_0 or 0-3).")
        kw["cache_type_k"] = kw["cache_type_v"] = name
    if "noflashattention" in data:
        kw["flash_attn"] = not _flag(data, "noflashattention")
    elif "flashattention" in data:  # legacy opt-in key
        kw["flash_attn"] = _flag(data, "flashattention")
    if _given(data, "moecpu"):
        kw["moecpu"] = v.integer(data["moecpu"], "moecpu", 0, v.INT32_MAX)
    if _flag(data, "lowvram"):
        kw["lowvram"] = True
    if _given(data, "overridetensors") and data["overridetensors"] != "":
        if not isinstance(data["overridetensors"], str):
            raise v.InputError(f"overridetensors must be text like exps=CPU, not {data['overridetensors']!r}.")
        kw["overrides"] = parse_overrides(data["overridetensors"])
    if _given(data, "parallelrequests"):  # 0 and 1 both mean one sequence
        kw["parallel"] = max(1, v.integer(data["parallelrequests"], "parallelrequests", 0, 32))
    if _given(data, "splitmode"):
        mode = v.choice(data["splitmode"], "splitmode", ("layer", "row", "tensor"))
        if mode == "tensor":
            raise v.InputError("splitmode tensor is not something Phoenix can plan (use layer or row).")
        kw["split_mode"] = mode
    cuda = data.get("usecuda") if _given(data, "usecuda") else data.get("usecublas")
    if cuda is not None:
        if not isinstance(cuda, list) or not all(isinstance(x, str) and x in _USECUDA for x in cuda):
            raise v.InputError(f"usecuda must be a list of {', '.join(_USECUDA)}, not {cuda!r}.")
        if "rowsplit" in cuda:
            kw["split_mode"] = "row"
        if "lowvram" in cuda:
            kw["lowvram"] = True
    ports = [v.port(data[k]) for k in ("port_param", "port") if _given(data, k)]
    if ports:  # koboldcpp copies port_param over port whenever it is not the default 5001
        kw["port"] = ports[0] if ports[0] != 5001 or len(ports) == 1 else ports[1]
    if _given(data, "host") and data["host"] != "":
        kw["host"] = v.host(data["host"])
    if _given(data, "usemmap"):
        kw["use_mmap"] = _flag(data, "usemmap")
    if _given(data, "threads"):  # -1 (a template's) or 0: the engine's own choice
        threads = v.integer(data["threads"], "threads", -1, 4096)
        if threads > 0:
            kw["threads"] = threads
    kept: dict = {}
    if _given(data, "blasthreads"):
        kept["blasthreads"] = max(0, v.integer(data["blasthreads"], "blasthreads", -1, 4096))
    for name in ("usemlock", "quiet", "highpriority"):
        kept[name] = _flag(data, name)
    kw["engine_options"] = v.engine_options(kept)
    if _flag(data, "nommap") and not _given(data, "usemmap"):
        notes.append("The config's nommap is a retired key koboldcpp ignores; mapping stays off unless usemmap is on.")
    gpu_ids = _device_ids(data)
    ids = [int(x) for x in (cuda or []) if x.isascii() and x.isdigit()]
    if gpu_ids is not None:  # the device list chooses and orders the GPUs; a usecuda digit is then the main GPU
        notes.append("The config chose its GPUs by name (device): " + ", ".join(f"GPU {i}" for i in gpu_ids) + ".")
    elif ids and "tensor_split" not in kw:
        gpu_ids = ids[:1]  # a digit without a split masks to that one GPU
        notes.append(f"The config used only GPU {ids[0]}.")
    rpc = _rpc_targets(data)
    if rpc:
        notes.append(f"The config uses devices of other PCs over RPC ({', '.join(rpc)}); they come first in its "
                     "tensor_split.")
    if (_flag(data, "usecpu") and not rpc) or _flag(data, "noblas"):  # connect mode keeps gpulayers with usecpu
        kw["gpulayers"] = 0
    if _flag(data, "autofit"):  # llama.cpp's own fit (koboldcpp.md §5): Phoenix cannot foresee its choice
        notes.append("The config lets koboldcpp fit the layers itself (autofit), which discards its tensor_split, "
                     "overridetensors and moecpu; Phoenix cannot predict that choice: it plans the values given, "
                     "and its own launch turns autofit off.")
    return KcppsImport(path, model, s.with_(**kw), gpu_ids, notes, rpc)


def _device_ids(data: dict) -> list[int] | None:
    """koboldcpp's `device` override ("CUDA2,CUDA0"; other PCs' "RPC0", ... first): this PC's CUDA ids
    in the chosen order (koboldcpp numbers them in PCI bus order). None: no override."""
    text = data.get("device")
    if text in (None, ""):
        return None
    if not isinstance(text, str):
        raise v.InputError(f"device must be text like CUDA0,CUDA1, not {text!r}.")
    names = [n.strip() for n in text.split(",")]
    ids: list[int] = []
    for n in names:
        if n.startswith("RPC") and n[3:].isascii() and n[3:].isdigit():
            if ids:
                raise v.InputError(f"device lists {n} after this PC's GPUs; another PC's devices come first.")
            continue
        if not (n.startswith("CUDA") and n[4:].isascii() and n[4:].isdigit()):
            raise v.InputError(f"device {n!r} is not a device Phoenix can plan (CUDA<n> or RPC<n>).")
        ids.append(int(n[4:]))
    if len(set(ids)) != len(ids):
        raise v.InputError(f"device names a GPU twice ({text}).")
    return ids or None


def _rpc_targets(data: dict) -> list[str]:
    """koboldcpp's rpcmode/rpctargets: connect mode's server list; a host config shares a PC, it runs no model."""
    mode = v.choice(data.get("rpcmode") or "disabled", "rpcmode", ("disabled", "connect", "host"))
    if mode == "host":
        raise v.InputError("it shares this PC's devices as an RPC host and runs no model; use phoenix share for that.")
    if mode != "connect":
        return []
    if not data.get("rpctargets"):
        raise v.InputError("rpcmode is connect but rpctargets names no PC; give host:port of each.")
    return v.rpc_targets(data["rpctargets"])
