"""A cluster on loopback: predicted vs measured generation speed across other PCs, with and without
added network latency.

Real koboldcpp 1.115.1 RPC hosts (`--rpcmode host`, CPU build) stand in for the other PCs, each behind a
userspace delay relay (tests/netlab.py) that holds every byte for a fixed time each way; `phoenix bench
--rpc` then asks each node through its relay (so the link it measures includes the delay), plans, launches
the real koboldcpp main process, benchmarks and stops. Printed per delay: the measured round trip, the
predicted and measured tokens/s, and the added time per token, predicted (the planner's network term)
and measured (against the run without delay).

Run: .venv/bin/python benchmarks/bench_cluster.py [--model tiny-llama-f16] [--nodes 1] [--delays 0,10,25]
     [--gen-tokens 32] [--repeat 2]
(needs koboldcpp built by tests/kcpp_build.py; the model is a preset written as a skeleton)
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import kcpp_build  # noqa: E402
from netlab import DelayRelay  # noqa: E402

from phoenix_gui.backends.processes.ports import free_port  # noqa: E402


def start_host(script: Path, port: int) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, str(script), "--skiplauncher", "--rpcmode", "host", "--rpchost", "127.0.0.1",
                          "--rpcport", str(port), "--usecpu"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return p
        except OSError:
            time.sleep(0.3)
    p.kill()
    raise SystemExit("bench_cluster: a koboldcpp RPC host did not start.")


def bench(script: Path, model: Path, targets: list[str], gen: int) -> dict:
    out = subprocess.run([sys.executable, "-m", "phoenix_gui", "bench", str(model), "--rpc", ",".join(targets),
                          "--exe", str(script), "--backend", "koboldcpp", "--ctx", "512", "--port", str(free_port()),
                          "--prompt-tokens", "32", "--gen-tokens", str(gen), "--timeout", "300", "--json"],
                         capture_output=True, text=True, cwd=ROOT, timeout=900)
    if out.returncode != 0:
        raise SystemExit(f"bench_cluster: phoenix bench failed: {out.stderr.strip()[-400:]}")
    return json.loads(out.stdout)


def plan_network_ms(model: Path, targets: list[str]) -> tuple[float, float]:
    out = subprocess.run([sys.executable, "-m", "phoenix_gui", "plan", str(model), "--rpc", ",".join(targets),
                          "--backend", "koboldcpp", "--ctx", "512", "--json"], capture_output=True, text=True, cwd=ROOT,
                         timeout=300)
    if out.returncode != 0:
        raise SystemExit(f"bench_cluster: phoenix plan failed: {out.stderr.strip()[-400:]}")
    d = json.loads(out.stdout)
    rtts = [n["link"]["rtt_ms"] for n in d.get("nodes", []) if n.get("link")]
    return 1000 * float(d.get("network_s_per_token", 0.0)), statistics.median(rtts) if rtts else 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny-llama-f16")
    ap.add_argument("--nodes", type=int, default=1, choices=(1, 2))
    ap.add_argument("--delays", default="0,10,25", help="ms each way added by the relay")
    ap.add_argument("--gen-tokens", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=2)
    a = ap.parse_args()
    try:
        delays = [float(x) for x in a.delays.split(",")]
    except ValueError:
        raise SystemExit(f"bench_cluster: --delays {a.delays!r} is not a comma-separated list of numbers.") from None
    if 0.0 not in delays:
        delays.insert(0, 0.0)
    tree = kcpp_build.built_tree()
    if tree is None:
        print("bench_cluster: koboldcpp is not built yet; run python3 tests/kcpp_build.py first.", file=sys.stderr)
        return 2
    script = tree / "koboldcpp.py"
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / f"{a.model}.gguf"
        subprocess.run([sys.executable, "-m", "phoenix_gui", "skeleton", a.model, str(model)], check=True, cwd=ROOT,
                       capture_output=True)
        hosts = [start_host(script, free_port()) for _ in range(a.nodes)]
        rows = []
        try:
            for delay in delays:
                relays = [DelayRelay(("127.0.0.1", int(h.args[h.args.index("--rpcport") + 1])), delay / 1000, delay / 1000)
                          for h in hosts]
                for r in relays:
                    r.__enter__()
                try:
                    targets = [f"127.0.0.1:{r.port}" for r in relays]
                    net_ms, rtt = plan_network_ms(model, targets)
                    runs = [bench(script, model, targets, a.gen_tokens) for _ in range(a.repeat)]
                finally:
                    for r in relays:
                        r.close()
                tps = statistics.median(r["gen_tokens_per_s"] for r in runs)
                rows.append((delay, rtt, net_ms, runs[0]["predicted_tokens_per_s"], tps))
        finally:
            for h in hosts:
                h.terminate()
                h.wait(20)
    print(f"bench_cluster: {a.model}, {a.nodes} RPC node(s) on loopback (koboldcpp 1.115.1 CPU hosts), "
          f"{a.gen_tokens} generated tokens, median of {a.repeat}")
    print(f"{'delay ms':>8} {'RTT ms':>7} {'net ms/tok':>10} {'pred tok/s':>10} {'meas tok/s':>10} | "
          f"{'added ms/tok pred':>17} {'measured':>9}")
    base_ms = 1000 / rows[0][4]
    for delay, rtt, net_ms, pred, tps in rows:
        added = 1000 / tps - base_ms
        print(f"{delay:>8.0f} {rtt:>7.2f} {net_ms:>10.2f} {pred:>10.1f} {tps:>10.2f} | "
              f"{net_ms - rows[0][2]:>17.1f} {added:>9.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
