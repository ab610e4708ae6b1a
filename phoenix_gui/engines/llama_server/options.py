"""llama-server's options: ONE table, from which its command line is built (it has no config file).

Every value Phoenix cares about is passed explicitly: defaults moved between llama.cpp releases, and an
omitted split means "by free memory at load". Row order is the command line's order.
"""

from __future__ import annotations

import re

from ...validate import split_weights
from ..devices import device_env, device_names, rpc_nodes
from ..options import REPEAT, SWITCH, VALUE, WORDS, Option, number_text, to_argv
from ..request import LaunchCommand, LaunchRequest, exe_argv


def _multi(r: LaunchRequest) -> bool:
    return r.offloads and len(r.plan_gpus) > 1


def _overrides(r: LaunchRequest) -> list[str]:
    """REGEX=BUFT with the plan's n-th GPU (CUDAn) as its --device name."""
    names = device_names(r)
    out = []
    for rx, buft in r.overrides:
        gpu = re.match(r"CUDA(\d+)$", buft)
        out.append(f"{rx}={names[int(gpu.group(1))] if gpu else buft}")
    return out


def _kept(name: str):
    """llama-server's names for what a koboldcpp config kept; --quiet and --highpriority have no twin here."""
    return lambda r: dict(r.engine_options).get(name)


def _offloads(r: LaunchRequest) -> bool:
    return r.offloads


OPTIONS: tuple[Option, ...] = (
    Option(None, "-m", write=lambda r: r.model_path),
    Option(None, "--rpc", write=lambda r: ",".join(rpc_nodes(r)), omit=("",), when=_offloads),
    # the chosen GPUs in the chosen order (CUDAn = PCI order under PCI_BUS_ID); another PC's device by its
    # RPC name (RPC devices are numbered across the --rpc servers, in that order)
    Option(None, "--device", write=lambda r: ",".join(device_names(r)), when=_offloads),
    Option(None, "-ngl", write=lambda r: r.gpulayers if r.offloads else 0),
    # --device lists the plan's GPUs in its own order, so the split follows that order
    Option(None, "-ts", write=lambda r: ",".join(number_text(x) for x in split_weights(list(r.tensor_split))),
           when=_multi),
    Option(None, "-sm", write=lambda r: "row" if r.split_mode == "row" else "layer", when=_multi),
    Option(None, "-ot", REPEAT, write=_overrides, when=_offloads),  # before --n-cpu-moe: the first match wins
    Option(None, "--n-cpu-moe", write=lambda r: r.moecpu, omit=(0,), when=_offloads),
    Option(None, "-nkvo", SWITCH, write=lambda r: r.lowvram, when=_offloads),
    Option(None, "-c", write=lambda r: r.context),
    Option(None, "-b", write=lambda r: r.batch),
    Option(None, "-ub", write=lambda r: r.batch),
    Option(None, "-ctk", write=lambda r: r.cache_type_k),
    Option(None, "-ctv", write=lambda r: r.cache_type_v),
    Option(None, "-fa", write=lambda r: "on" if r.flash_attn else "off"),
    Option(None, "-np", write=lambda r: r.parallel),
    Option(None, "--fit", write=lambda r: "off"),
    # every slot may use the whole context, as koboldcpp's slots do
    Option(None, "--kv-unified", SWITCH, write=lambda r: r.parallel > 1),
    # the user (or an import) turned mapping off; mapping is this engine's default. Its spelling is the build's
    Option(None, "--load-mode", WORDS, write=lambda r: None if r.mmap else r.profile.no_mmap_args),
    Option(None, "-t", write=lambda r: r.threads, omit=(0,)),
    Option(None, "-tb", write=_kept("blasthreads")),
    Option(None, "--mlock", SWITCH, write=_kept("usemlock")),
    Option(None, "--host", write=lambda r: r.host),
    Option(None, "--port", write=lambda r: r.port),
    # Prometheus counters for the throughput graph; the per-device buffer lines appear only at verbosity 4
    Option(None, "--metrics", SWITCH, write=lambda r: True),
    Option(None, "-lv", VALUE, write=lambda r: 4),
)


def llama_server_command(req: LaunchRequest) -> LaunchCommand:
    env: dict[str, str] = {}
    if req.offloads:
        env.update(device_env(req))
        env.pop("CUDA_VISIBLE_DEVICES", None)  # --device chooses the GPUs
    return LaunchCommand(exe_argv(req.exe, "llama-server") + to_argv(OPTIONS, req), env, "llama-server")


def buffer_probe_argv(binary: str, model: str, port: int, args: list[str]) -> list[str]:
    """A buffer probe's command line: verbose logging (-lv 4 prints the per-device buffer lines) and no
    warm-up run (it would read every weight), then the probe's own options."""
    return [str(binary), "-m", str(model), "--host", "127.0.0.1", "--port", str(port), "-lv", "4",
            "--no-warmup", *args]
