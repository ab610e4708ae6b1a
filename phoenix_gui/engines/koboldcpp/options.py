"""koboldcpp's options: ONE table, from which its command line, its .kcpps config and the .kcpps reader are built.

Every value Phoenix cares about is passed explicitly: defaults moved between releases, and an omitted split
means "by free memory at load", a snapshot of whatever else runs at that instant. The reader checks every
value against koboldcpp 1.115.1's own argument rules before it reaches the wizard or the planner (a NaN
split or a 2^31 gpulayers used to crash the wizard on Next). Row order is the command line's order.
"""

from __future__ import annotations

from ... import validate as v
from ..devices import buffer_overrides, device_env, engine_split, kcpps_devices, rpc_nodes
from ..options import (SWITCH, VALUES, Option, Reading, flag, format_overrides, from_kcpps, number_text,
                       parse_overrides, to_argv, to_kcpps)
from ..request import LaunchCommand, LaunchRequest, exe_argv

KV_TYPES = ("f16", "bf16", "q8_0", "q5_1", "q4_0")  # --quantkv's names
# --quantkv's names, and the legacy index strings/ints it still parses
_QUANTKV = {"f16": "f16", "bf16": "bf16", "q8_0": "q8_0", "q5_1": "q5_1", "q4_0": "q4_0",
            "0": "f16", "1": "q8_0", "2": "q4_0", "3": "bf16"}
_USECUDA = ("0", "1", "2", "3", "all", "mmq", "nommq", "normal", "lowvram", "rowsplit")


def _local(r: LaunchRequest) -> bool:
    """Layers on one of this PC's GPUs: the CUDA library; otherwise the CPU one (with only other PCs'
    devices koboldcpp keeps --gpulayers with --usecpu in connect mode)."""
    return r.offloads and any(not g.is_remote for g in r.gpus)


def _nodes(r: LaunchRequest) -> list[str]:
    return rpc_nodes(r) if r.offloads else []


def _kept(name: str, default):
    """An option Phoenix does not plan, kept from the user's config as they set it."""
    return lambda r: dict(r.engine_options).get(name, default)


def _split(r: LaunchRequest):
    split = engine_split(r)
    return [float(x) for x in split] if r.offloads and len(split) > 1 else None


# --- readers: a config's value -> settings (None: the key is absent) ---

def _read_model(_x, r: Reading) -> None:
    model = r.data.get("model_param") or r.data.get("model")
    if isinstance(model, list):
        model = model[0] if model else None
    r.raw["model"] = None if model is None or model == "" else v.text(model, "The model path")


def _read_usecuda(x, r: Reading) -> None:
    cuda = x if x is not None else r.data.get("usecublas")  # its name before 1.9x
    if cuda is not None and (not isinstance(cuda, list) or not all(isinstance(c, str) and c in _USECUDA for c in cuda)):
        raise v.InputError(f"usecuda must be a list of {', '.join(_USECUDA)}, not {cuda!r}.")
    r.raw["cuda"] = cuda


def _read_raw_flag(key: str):
    def read(x, r: Reading) -> None:
        r.raw[key] = flag(x, key)
    return read


def _read_rpc(_x, r: Reading) -> None:
    """rpcmode/rpctargets together: connect mode's server list; a host config shares a PC, it runs no model."""
    mode = v.choice(r.data.get("rpcmode") or "disabled", "rpcmode", ("disabled", "connect", "host"))
    if mode == "host":
        raise v.InputError("it shares this PC's devices as an RPC host and runs no model; use phoenix share for that.")
    if mode != "connect":
        r.raw["rpc"] = []
    elif not r.data.get("rpctargets"):
        raise v.InputError("rpcmode is connect but rpctargets names no PC; give host:port of each.")
    else:
        r.raw["rpc"] = v.rpc_targets(r.data["rpctargets"])


def _read_gpulayers(x, r: Reading) -> None:
    if x is None:
        return
    gl = v.integer(x, "gpulayers", -1, v.INT32_MAX)
    if gl == -1:
        r.notes.append("The config let koboldcpp choose the GPU layers (-1); Phoenix plans all layers.")
    else:
        r.settings["gpulayers"] = gl


def _read_split(ts, r: Reading) -> None:
    if ts is None or ts == []:
        return
    if not isinstance(ts, list):
        raise v.InputError(f"tensor_split must be a list of numbers, not {ts!r}.")
    vals = tuple(v.number(x, "Each tensor_split value", 0) for x in ts)
    if len(vals) > v.MAX_DEVICES:
        raise v.InputError(f"tensor_split has {len(vals)} values; koboldcpp takes at most {v.MAX_DEVICES}.")
    if any(vals):
        r.settings["tensor_split"] = v.split(vals)  # the one rule for weights (of any size: only ratios matter)
    else:
        r.notes.append("The config's tensor_split is all zeros, which koboldcpp ignores (split by free memory).")


def _read_splitmode(x, r: Reading) -> None:
    if x is None:
        return
    mode = v.choice(x, "splitmode", ("layer", "row", "tensor"))
    if mode == "tensor":
        raise v.InputError("splitmode tensor is not something Phoenix can plan (use layer or row).")
    r.settings["split_mode"] = mode


def _read_device(text, r: Reading) -> None:
    """koboldcpp's `device` override ("CUDA2,CUDA0"; other PCs' "RPC0", ... first): this PC's CUDA ids
    in the chosen order (koboldcpp numbers them in PCI bus order). None: no override."""
    r.raw["gpu_ids"] = None
    if text in (None, ""):
        return
    if not isinstance(text, str):
        raise v.InputError(f"device must be text like CUDA0,CUDA1, not {text!r}.")
    ids: list[int] = []
    for n in (n.strip() for n in text.split(",")):
        if n.startswith("RPC") and n[3:].isascii() and n[3:].isdigit():
            if ids:
                raise v.InputError(f"device lists {n} after this PC's GPUs; another PC's devices come first.")
            continue
        if not (n.startswith("CUDA") and n[4:].isascii() and n[4:].isdigit()):
            raise v.InputError(f"device {n!r} is not a device Phoenix can plan (CUDA<n> or RPC<n>).")
        ids.append(int(n[4:]))
    if len(set(ids)) != len(ids):
        raise v.InputError(f"device names a GPU twice ({text}).")
    r.raw["gpu_ids"] = ids or None


def _read_overrides(x, r: Reading) -> None:
    if x is None or x == "":
        return
    if not isinstance(x, str):
        raise v.InputError(f"overridetensors must be text like exps=CPU, not {x!r}.")
    r.settings["overrides"] = parse_overrides(x)


def _read_moecpu(x, r: Reading) -> None:
    if x is not None:
        r.settings["moecpu"] = v.integer(x, "moecpu", 0, v.INT32_MAX)


def _read_lowvram(x, r: Reading) -> None:
    if flag(x, "lowvram"):
        r.settings["lowvram"] = True


def _read_context(x, r: Reading) -> None:
    if x is not None:
        r.settings["context"] = v.integer(x, "contextsize", v.CONTEXT_MIN, v.CONTEXT_MAX["koboldcpp"])


def _read_batch(x, r: Reading) -> None:
    key = "batchsize" if x is not None else "blasbatchsize"  # blasbatchsize: its name before 1.7x
    bs = r.data.get(key)
    if bs is None:
        return
    bs = v.integer(bs, key)
    if bs not in v.KOBOLD_BATCHES:
        raise v.InputError(f"{key} {bs} is not one koboldcpp accepts ({', '.join(map(str, v.KOBOLD_BATCHES))}).")
    r.settings["batch"] = 1 if bs == -1 else bs  # -1: no batching, koboldcpp processes one token at a time
    if bs == -1:
        r.notes.append("The config turned batching off (batchsize -1): prompts are processed one token at a time.")


def _read_quantkv(q, r: Reading) -> None:
    if q is None:
        return
    name = _QUANTKV.get(str(q).lower()) if isinstance(q, str) or (isinstance(q, int) and not isinstance(q, bool)) else None
    if name is None:
        raise v.InputError(f"quantkv {q!r} is not one koboldcpp accepts (f16, bf16, q8_0, q5_1, q4_0 or 0-3).")
    r.settings["cache_type_k"] = r.settings["cache_type_v"] = name


def _read_flash(_x, r: Reading) -> None:
    if "noflashattention" in r.data:
        r.settings["flash_attn"] = not flag(r.data["noflashattention"], "noflashattention")
    elif "flashattention" in r.data:  # the opt-in key of older releases
        r.settings["flash_attn"] = flag(r.data["flashattention"], "flashattention")


def _read_mmap(x, r: Reading) -> None:
    if x is not None:
        r.settings["use_mmap"] = flag(x, "usemmap")


def _read_nommap(x, r: Reading) -> None:
    if flag(x, "nommap") and r.data.get("usemmap") is None:
        r.notes.append("The config's nommap is a retired key koboldcpp ignores; mapping stays off unless usemmap is on.")


def _read_threads(x, r: Reading) -> None:
    if x is not None:  # -1 (a template's) or 0: the engine's own choice
        threads = v.integer(x, "threads", -1, 4096)
        if threads > 0:
            r.settings["threads"] = threads


def _read_kept(key: str):
    """An option Phoenix keeps but does not plan (validate.ENGINE_OPTIONS)."""
    def read(x, r: Reading) -> None:
        kept = r.raw.setdefault("kept", {})
        if key == "blasthreads":
            if x is not None:
                kept[key] = max(0, v.integer(x, "blasthreads", -1, 4096))
        else:
            kept[key] = flag(x, key)
    return read


def _read_parallel(x, r: Reading) -> None:
    if x is not None:  # 0 and 1 both mean one sequence
        r.settings["parallel"] = max(1, v.integer(x, "parallelrequests", 0, 32))


def _read_host(x, r: Reading) -> None:
    if x is not None and x != "":
        r.settings["host"] = v.host(x)


def _read_ports(_x, r: Reading) -> None:
    """port and port_param together: koboldcpp copies port_param over port whenever it is not the default 5001."""
    ports = [v.port(r.data[k]) for k in ("port_param", "port") if r.data.get(k) is not None]
    if ports:
        r.settings["port"] = ports[0] if ports[0] != 5001 or len(ports) == 1 else ports[1]


OPTIONS: tuple[Option, ...] = (
    Option("skiplauncher", "--skiplauncher", SWITCH, write=lambda r: True),
    Option("model", "--model", VALUES, write=lambda r: [r.model_path], read=_read_model),
    Option("model_param", None, write=lambda r: r.model_path, read=_read_model),
    # bare --usecuda: every visible GPU, no masking by id
    Option("usecuda", "--usecuda", SWITCH, write=lambda r: ["normal"] if _local(r) else None, read=_read_usecuda,
           fields=("split_mode", "lowvram"), legacy=("usecublas",)),
    Option("usevulkan", None, write=lambda r: None),
    Option("usecpu", "--usecpu", SWITCH, write=lambda r: not _local(r), read=_read_raw_flag("usecpu"),
           fields=("gpulayers",)),
    Option("rpcmode", "--rpcmode", write=lambda r: "connect" if _nodes(r) else "disabled", omit=("disabled",),
           read=_read_rpc),
    Option("rpctargets", "--rpctargets", write=lambda r: ",".join(_nodes(r)), omit=("",), read=_read_rpc),
    Option("gpulayers", "--gpulayers", write=lambda r: r.gpulayers if r.offloads else 0, read=_read_gpulayers,
           fields=("gpulayers",)),
    Option("tensor_split", "--tensor_split", VALUES, write=_split, text=number_text, read=_read_split,
           fields=("tensor_split",)),
    Option("maingpu", None, write=lambda r: -1),
    Option("splitmode", "--splitmode", write=lambda r: "row" if r.split_mode == "row" else "layer", omit=("layer",),
           when=lambda r: r.offloads and len(r.plan_gpus) > 1, read=_read_splitmode, fields=("split_mode",)),
    # a .kcpps cannot carry CUDA_VISIBLE_DEVICES: the command line masks with it instead
    Option("device", None, write=kcpps_devices, read=_read_device, fields=("devices",)),
    # koboldcpp applies them before --moecpu's own
    Option("overridetensors", "--overridetensors",
           write=lambda r: format_overrides(buffer_overrides(r)) if r.offloads else "", omit=("",),
           read=_read_overrides, fields=("overrides",)),
    Option("moecpu", "--moecpu", write=lambda r: r.moecpu, omit=(0,), when=lambda r: r.offloads, read=_read_moecpu,
           fields=("moecpu",)),
    Option("lowvram", "--lowvram", SWITCH, write=lambda r: r.lowvram, when=lambda r: r.offloads, read=_read_lowvram,
           fields=("lowvram",)),
    Option("nopipelineparallel", None, write=lambda r: False),
    # llama.cpp's own fit (koboldcpp.md §5) would discard the plan's split: Phoenix's launch turns it off
    Option("autofit", None, write=lambda r: False, read=_read_raw_flag("autofit")),
    Option("autofitpadding", None, write=lambda r: 1024),
    Option("contextsize", "--contextsize", write=lambda r: r.context, read=_read_context, fields=("context",)),
    Option("batchsize", "--batchsize", write=lambda r: r.batch, read=_read_batch, fields=("batch",),
           legacy=("blasbatchsize",)),
    Option("quantkv", "--quantkv", write=lambda r: r.cache_type_k if r.cache_type_k in KV_TYPES else "f16",
           read=_read_quantkv, fields=("cache_type_k", "cache_type_v")),
    Option("noflashattention", "--noflashattention", SWITCH, write=lambda r: not r.flash_attn, read=_read_flash,
           fields=("flash_attn",), legacy=("flashattention",)),
    Option("usemmap", "--usemmap", SWITCH, write=lambda r: r.mmap, read=_read_mmap, fields=("use_mmap",)),
    Option("nommap", None, read=_read_nommap),  # retired; read for a note only
    Option("threads", "--threads", write=lambda r: r.threads or -1, omit=(-1,), read=_read_threads,
           fields=("threads",)),
    # kept from the user's config as they set them (validate.ENGINE_OPTIONS), in its sorted order
    Option("blasthreads", "--blasthreads", write=_kept("blasthreads", 0), omit=(0,), read=_read_kept("blasthreads"),
           fields=("engine_options",)),
    Option("highpriority", "--highpriority", SWITCH, write=lambda r: bool(_kept("highpriority", False)(r)),
           read=_read_kept("highpriority"), fields=("engine_options",)),
    Option("quiet", "--quiet", SWITCH, write=lambda r: bool(_kept("quiet", False)(r)), read=_read_kept("quiet"),
           fields=("engine_options",)),
    Option("usemlock", "--usemlock", SWITCH, write=lambda r: bool(_kept("usemlock", False)(r)),
           read=_read_kept("usemlock"), fields=("engine_options",)),
    # slots sharing one unified cache
    Option("parallelrequests", "--parallelrequests", write=lambda r: r.parallel, omit=(1,), read=_read_parallel,
           fields=("parallel",)),
    Option("host", "--host", write=lambda r: r.host, read=_read_host, fields=("host",)),
    Option("port", "--port", write=lambda r: r.port, read=_read_ports, fields=("port",)),
    Option("port_param", None, write=lambda r: r.port, read=_read_ports, fields=("port",)),
    Option("multiuser", "--multiuser", write=lambda r: 1),
    Option("noblas", None, read=_read_raw_flag("noblas"), fields=("gpulayers",)),  # retired: no BLAS = CPU only
    Option(None, "--singleinstance", SWITCH, write=lambda r: True),  # lets /api/extra/shutdown stop it cleanly
    Option("istemplate", None, write=lambda r: False),
)


def koboldcpp_command(req: LaunchRequest) -> LaunchCommand:
    env = {"PYTHONUNBUFFERED": "1"}
    if req.offloads:
        env.update(device_env(req))
    return LaunchCommand(exe_argv(req.exe, "koboldcpp") + to_argv(OPTIONS, req), env, "koboldcpp")


def kcpps_config(req: LaunchRequest) -> dict:
    """A koboldcpp config with every placement key explicit; port and port_param agree."""
    return to_kcpps(OPTIONS, req)


def read_config(data: dict) -> Reading:
    """A .kcpps's settings (PlanSettings values by name, "backend" koboldcpp), notes, and in raw: "model" (its
    model path or None), "gpu_ids" (CUDA ids in PCI order it uses, in its order, or None), "rpc" (its RPC
    servers, whose devices come first in its split). The keys that act together are settled last."""
    r = from_kcpps(OPTIONS, data)
    s = r.settings
    s["backend"] = "koboldcpp"
    cuda = r.raw.get("cuda") or []
    if "rowsplit" in cuda:
        s["split_mode"] = "row"
    if "lowvram" in cuda:
        s["lowvram"] = True
    s["engine_options"] = v.engine_options(r.raw.get("kept", {}))
    ids = [int(x) for x in cuda if x.isascii() and x.isdigit()]
    gpu_ids = r.raw["gpu_ids"]
    if gpu_ids is not None:  # the device list chooses and orders the GPUs; a usecuda digit is then the main GPU
        r.notes.append("The config chose its GPUs by name (device): " + ", ".join(f"GPU {i}" for i in gpu_ids) + ".")
    elif ids and "tensor_split" not in s:
        r.raw["gpu_ids"] = ids[:1]  # a digit without a split masks to that one GPU
        r.notes.append(f"The config used only GPU {ids[0]}.")
    rpc = r.raw["rpc"]
    if rpc:
        r.notes.append(f"The config uses devices of other PCs over RPC ({', '.join(rpc)}); they come first in its "
                       "tensor_split.")
    if (r.raw["usecpu"] and not rpc) or r.raw["noblas"]:  # connect mode keeps gpulayers with usecpu
        s["gpulayers"] = 0
    if r.raw["autofit"]:  # llama.cpp's own fit (koboldcpp.md §5): Phoenix cannot foresee its choice
        r.notes.append("The config lets koboldcpp fit the layers itself (autofit), which discards its tensor_split, "
                       "overridetensors and moecpu; Phoenix cannot predict that choice: it plans the values given, "
                       "and its own launch turns autofit off.")
    return r


def koboldcpp_over_rpc(argv: list[str], target: str) -> list[str]:
    """Phoenix's koboldcpp command for a one-GPU plan, with the GPU replaced by an RPC device at
    `target` (host:port of a `koboldcpp --rpcmode host`): how a CPU build shows per-device buffers."""
    i = argv.index("--usecuda")
    out = argv[:i] + ["--rpcmode", "connect", "--rpctargets", target] + argv[i + 1:]
    return [a.replace("=CUDA0", f"=RPC0[{target}]") for a in out]
