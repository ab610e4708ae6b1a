"""Configured vs measured link figures: what `describe_node` reports for a node behind a known network.

A real `phoenix share` (koboldcpp 1.115.1's RPC host + Phoenix's info endpoint) runs in one network
namespace, the measuring side in another, linked by a veth pair whose rate a `tbf` qdisc limits; a
userspace relay (tests/netlab.py) in the main namespace adds a fixed delay each way. For each rate and
delay it prints the configured and measured throughput and round-trip time, and how long describing
the node took. The measured rate is what the data gets, about 4 % under the raw link rate (TCP/IP
headers).

Run as root from the repository root (needs `ip netns`, veth, tbf; koboldcpp built by tests/kcpp_build.py):
    .venv/bin/python benchmarks/bench_netlink.py [--rates 16,64,256,1000] [--delays 0,5,25,50]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import kcpp_build  # noqa: E402
from netlab import NetLab, unavailable  # noqa: E402

DESCRIBE = ("import json,time; from phoenix_gui.backends.nodes import describe_node; t=time.perf_counter(); "
            "n=describe_node('127.0.0.1:6000', timeout=10); print(json.dumps([vars(n.link), time.perf_counter()-t]))")


def numbers(text: str) -> list[int]:
    try:
        out = [int(x) for x in text.split(",")]
    except ValueError:
        raise SystemExit(f"bench_netlink: {text!r} is not a comma-separated list of whole numbers.") from None
    if not out or min(out) < 0:
        raise SystemExit(f"bench_netlink: {text!r} must list numbers of 0 or more.")
    return out


def measure(lab, main: str, node: str, dev: str, mbit: int, delay_ms: int) -> tuple[dict, float]:
    lab.exec(main, ["tc", "qdisc", "change", "dev", dev, "root", "tbf", "rate", f"{mbit}mbit", "burst",
                    str(max(int(mbit * 1e6 / 8 / 250), 16 << 10)), "latency", "200ms"])
    relay = lab.popen(main, [sys.executable, str(ROOT / "tests" / "netlab.py"), str(delay_ms), str(delay_ms),
                             "6000:10.77.0.2:50052", "6001:10.77.0.2:50053"], stdout=subprocess.PIPE, text=True)
    try:
        if relay.stdout.readline().strip() != "ready":
            raise SystemExit("bench_netlink: the delay relay did not start.")
        link, took = json.loads(lab.exec(main, [sys.executable, "-c", DESCRIBE], timeout=120).strip().splitlines()[-1])
        return link, took
    finally:
        relay.kill()
        relay.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rates", default="16,64,256,1000", help="tbf rates in Mbit/s")
    ap.add_argument("--delays", default="0,5,25,50", help="relay delay each way in ms")
    a = ap.parse_args()
    rates, delays = numbers(a.rates), numbers(a.delays)
    why = unavailable()
    if why:
        print(f"bench_netlink: {why}", file=sys.stderr)
        return 2
    tree = kcpp_build.built_tree()
    if tree is None:
        print("bench_netlink: koboldcpp is not built yet; run python3 tests/kcpp_build.py first.", file=sys.stderr)
        return 2
    koboldcpp = tree / "koboldcpp.py"
    rows = []
    with NetLab() as lab:
        main_ns, node_ns = lab.namespace(), lab.namespace()
        dev, _ = lab.link(main_ns, "10.77.0.1/24", node_ns, "10.77.0.2/24", rate_mbit=max(rates))
        share = lab.popen(node_ns, [sys.executable, "-m", "phoenix_gui", "share", "--host", "10.77.0.2", "--port",
                                    "50052", "--exe", str(koboldcpp)],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT)
        try:
            if not share.stdout.readline().startswith("On the main PC"):
                raise SystemExit("bench_netlink: phoenix share did not start in the node's namespace.")
            for mbit in rates:
                for delay in delays:
                    link, took = measure(lab, main_ns, node_ns, dev, mbit, delay)
                    rows.append((mbit, mbit / 8, link["throughput_mbs"], 2 * delay, link["rtt_ms"], took))
        finally:
            share.terminate()
            share.wait(20)
    print(f"{'tbf Mbit/s':>10} {'rate MB/s':>9} {'measured':>9} {'err':>6} | {'RTT ms':>6} {'measured':>9} "
          f"{'err':>6} | {'took s':>6}")
    for mbit, rate, mbs, rtt, mrtt, took in rows:
        rerr = f"{(mrtt - rtt) / rtt * 100:+.0f}%" if rtt else "     -"
        print(f"{mbit:>10} {rate:>9.1f} {mbs:>9.2f} {(mbs - rate) / rate * 100:>+5.0f}% | {rtt:>6} {mrtt:>9.2f} "
              f"{rerr:>6} | {took:>6.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
