"""Where a generated token's time goes over an RPC node: a timeline of the messages between the main
process and the node.

A real koboldcpp 1.115.1 RPC host (CPU build) on loopback, a small relay in front of it that holds every
chunk for a fixed delay each way and logs its arrival time, direction and size, and a real koboldcpp main
process with every layer on the node. For each generated token the logits come back in one reply
(n_vocab x 4 B); the timeline splits the token's time into the node's compute (request forwarded ->
reply), the main process's side (reply delivered -> next request) and the network wait (one round trip,
the relay's two delays) — the planner's network term says one round trip per token and node.

Run: .venv/bin/python benchmarks/rpc_timeline.py [--delays 0,25] [--tokens 16]
(needs koboldcpp built by tests/kcpp_build.py)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

sys.path.insert(0, str(ROOT / "benchmarks"))

import kcpp_build  # noqa: E402
from bench_cluster import start_host  # noqa: E402

from phoenix_gui.backends.processes.ports import free_port  # noqa: E402


class LoggingRelay:
    """127.0.0.1:port -> target, each chunk delivered `delay` s after it arrived; arrivals are logged."""

    def __init__(self, target_port: int, delay: float):
        self.target, self.delay, self.events = target_port, delay, []
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        threading.Thread(target=self.loop.run_until_complete, args=(self._main(),), daemon=True).start()
        if not self.ready.wait(10):
            raise SystemExit("rpc_timeline: the relay did not start.")

    async def _pipe(self, r, w, tag):
        while data := await r.read(65536):
            t = time.perf_counter()
            self.events.append((t, tag, len(data)))
            self.loop.call_at(self.loop.time() + self.delay, w.write, data)
        self.loop.call_at(self.loop.time() + self.delay, w.close)

    async def _handle(self, cr, cw):
        tr, tw = await asyncio.open_connection("127.0.0.1", self.target)
        for w in (cw, tw):
            w.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await asyncio.gather(self._pipe(cr, tw, "up"), self._pipe(tr, cw, "down"))

    async def _main(self):
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.ready.set()
        try:
            await self.server.serve_forever()
        except asyncio.CancelledError:  # close()
            pass

    def close(self):
        self.loop.call_soon_threadsafe(self.server.close)


def wait_port(port: int, proc: subprocess.Popen, seconds: float = 120) -> None:
    end = time.time() + seconds
    while time.time() < end and proc.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.3)
    raise SystemExit("rpc_timeline: koboldcpp did not start.")


def http(port: int, path: str, body: dict | None = None) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode() if body else None,
                                 headers={"Content-Type": "application/json"}, method="POST" if body is not None else "GET")
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.loads(r.read() or b"{}")


def one(script: Path, model: Path, delay_ms: float, tokens: int, n_vocab: int) -> str:
    host_port, main_port = free_port(), free_port()
    quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    host = start_host(script, host_port)
    main = relay = None
    try:
        relay = LoggingRelay(host_port, delay_ms / 1000)
        main = subprocess.Popen([sys.executable, str(script), "--skiplauncher", "--model", str(model), "--rpcmode",
                                 "connect", "--rpctargets", f"127.0.0.1:{relay.port}", "--gpulayers", "99", "--usecpu",
                                 "--contextsize", "512", "--threads", "1", "--host", "127.0.0.1", "--port",
                                 str(main_port), "--singleinstance"], **quiet)
        wait_port(main_port, main)
        start = len(relay.events)
        http(main_port, "/api/v1/generate", {"prompt": "Hello there", "max_length": tokens, "ignore_eos": True})
        perf = http(main_port, "/api/extra/perf")
        events = relay.events[start:]
        http(main_port, "/api/extra/shutdown", {})
    finally:
        for p in (main, host):
            if p is not None and p.poll() is None:
                p.terminate()
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()
        if relay:
            relay.close()
    d = delay_ms / 1000
    node, mine, last_up = [], [], None
    for i, (t, tag, n) in enumerate(events):
        if tag == "up":
            last_up = t
        elif n == n_vocab * 4 + 8 or n == n_vocab * 4:  # the logits' reply (its 8-byte size may come with it)
            if last_up is not None:
                node.append(t - last_up - d)
            nxt = next((t2 for t2, tag2, _ in events[i + 1:] if tag2 == "up"), None)
            if nxt is not None:
                mine.append(nxt - t - d)
    if not node:
        return f"{delay_ms:>8.0f} | no logits reply seen apart (chunks coalesced); eval {perf['last_eval']:.1f} ms/token"
    return (f"{delay_ms:>8.0f} | {perf['last_eval']:>12.1f} | {statistics.median(node) * 1000:>14.1f} "
            f"{min(node) * 1000:>5.0f}-{max(node) * 1000:<5.0f} | {statistics.median(mine) * 1000:>9.1f} | "
            f"{2 * delay_ms:>12.0f} | {len(node):>6}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--delays", default="0,25", help="ms each way")
    ap.add_argument("--tokens", type=int, default=16)
    a = ap.parse_args()
    try:
        delays = [float(x) for x in a.delays.split(",")]
    except ValueError:
        raise SystemExit(f"rpc_timeline: --delays {a.delays!r} is not a comma-separated list of numbers.") from None
    tree = kcpp_build.built_tree()
    if tree is None:
        print("rpc_timeline: koboldcpp is not built yet; run python3 tests/kcpp_build.py first.", file=sys.stderr)
        return 2
    from phoenix_gui.model import read_model

    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "tiny-llama-f16.gguf"
        subprocess.run([sys.executable, "-m", "phoenix_gui", "skeleton", "tiny-llama-f16", str(model)], check=True,
                       cwd=ROOT, capture_output=True)
        n_vocab = read_model(model).n_vocab
        print(f"rpc_timeline: tiny-llama-f16, every layer on one koboldcpp 1.115.1 CPU RPC host on loopback, "
              f"{a.tokens} generated tokens")
        print(f"{'delay ms':>8} | {'eval ms/tok':>12} | {'node compute ms (range)':>26} | {'main ms':>9} | "
              f"{'network ms':>12} | {'tokens':>6}")
        for delay in delays:
            print(one(tree / "koboldcpp.py", model, delay, a.tokens, n_vocab), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
