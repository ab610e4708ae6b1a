"""The link figures describe_node measures follow the network they cross: a userspace relay's delay per
direction (round-trip time) and a tbf rate limit on a veth pair between network namespaces (throughput),
each within 20 %, with the real koboldcpp RPC host and Phoenix's info endpoint on the far side."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from machine_helpers import gone
from netlab import DelayRelay, NetLab, namespaces, require

from phoenix_gui.backends.nodes import INFO_PORT_OFFSET, describe_node
from phoenix_gui.backends.processes.ports import free_port_with
from phoenix_gui.backends.share import ShareHost

TESTS = Path(__file__).parent
ROOT = TESTS.parent
PHOENIX = [sys.executable, "-m", "phoenix_gui"]
TOLERANCE = 0.20


def _close(measured: float, configured: float) -> bool:
    return abs(measured - configured) <= TOLERANCE * configured


@pytest.fixture(scope="module")
def share(kcpp_script):
    with ShareHost(kcpp_script, port=free_port_with([INFO_PORT_OFFSET]), cpu_only=True) as host:
        yield host


# 30 ms or more in all: the relay's timers fire a few ms late on a busy 2-core machine
@pytest.mark.parametrize("up_ms, down_ms", [(15, 15), (50, 50), (60, 20)])
def test_rtt_follows_the_relay_delay(share, up_ms, down_ms):
    port = free_port_with([INFO_PORT_OFFSET])
    with DelayRelay(("127.0.0.1", share.port), up_ms / 1000, down_ms / 1000, listen=("127.0.0.1", port)), \
            DelayRelay(("127.0.0.1", share.info_port), up_ms / 1000, down_ms / 1000, listen=("127.0.0.1", port + 1)):
        node = describe_node(f"127.0.0.1:{port}", timeout=5)
    assert node.name == socket.gethostname() and node.link.measured  # the info endpoint came through too
    assert _close(node.link.rtt_ms, up_ms + down_ms), (node.link, up_ms + down_ms)


def _run_share(lab: NetLab, ns: str, exe, host: str, port: int, *extra: str) -> subprocess.Popen:
    """`phoenix share` inside a namespace; returns once it printed the address to type."""
    p = lab.popen(ns, [*PHOENIX, "share", "--host", host, "--port", str(port), "--exe", str(exe), *extra],
                  cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    if not line.startswith("On the main PC"):
        p.kill()
        raise AssertionError(f"phoenix share did not start: {line}{p.stderr.read()[-2000:]}")
    return p


@contextlib.contextmanager
def stopped_at_exit(p: subprocess.Popen):
    """Stop a `phoenix share` with SIGTERM (as a service manager would) and check its whole tree is gone."""
    tree = [psutil.Process(p.pid)] + psutil.Process(p.pid).children(recursive=True)
    try:
        yield p
    finally:
        p.terminate()
        try:
            code = p.wait(20)
        except subprocess.TimeoutExpired:
            for q in tree:
                with contextlib.suppress(psutil.Error):
                    q.kill()
            raise
        # the engine and Phoenix's watchdog (which ends when its parent does) must all be gone
        assert code == 0 and gone([q.pid for q in tree], timeout=10), (code, tree, p.stderr.read()[-1000:])


def _describe_in(lab: NetLab, ns: str, address: str) -> dict:
    code = ("import json; from phoenix_gui.backends.nodes import describe_node; "
            f"n = describe_node({address!r}, timeout=10); print(json.dumps(vars(n.link)))")
    return json.loads(lab.exec(ns, [sys.executable, "-c", code], timeout=120).strip().splitlines()[-1])


def _rate(lab: NetLab, ns: str, dev: str, mbit: int) -> None:
    burst = max(int(mbit * 1e6 / 8 / 250), 16 << 10)
    lab.exec(ns, ["tc", "qdisc", "change", "dev", dev, "root", "tbf", "rate", f"{mbit}mbit", "burst", str(burst),
                  "latency", "200ms"])


def test_throughput_follows_the_tbf_rate(kcpp_script):
    require()
    with NetLab() as lab:
        main, node = lab.namespace(), lab.namespace()
        dev, _ = lab.link(main, "10.77.0.1/24", node, "10.77.0.2/24", rate_mbit=32)
        with stopped_at_exit(_run_share(lab, node, kcpp_script, "10.77.0.2", 50052)):
            for mbit in (32, 128):
                _rate(lab, main, dev, mbit)
                link = _describe_in(lab, main, "10.77.0.2:50052")
                assert link["measured"] and _close(link["throughput_mbs"], mbit / 8), (mbit, link)


def test_delay_and_rate_together(kcpp_script):
    """The relay sits in the main PC's namespace in front of a rate-limited veth: both figures follow."""
    require()
    with NetLab() as lab:
        main, node = lab.namespace(), lab.namespace()
        lab.link(main, "10.77.0.1/24", node, "10.77.0.2/24", rate_mbit=64)
        with stopped_at_exit(_run_share(lab, node, kcpp_script, "10.77.0.2", 50052)):
            relay = lab.popen(main, [sys.executable, str(TESTS / "netlab.py"), "15", "15",
                                     "6000:10.77.0.2:50052", "6001:10.77.0.2:50053"],
                              stdout=subprocess.PIPE, text=True)
            try:
                assert relay.stdout.readline().strip() == "ready"
                link = _describe_in(lab, main, "127.0.0.1:6000")
            finally:
                relay.kill()
                relay.wait(10)
        assert _close(link["rtt_ms"], 30) and _close(link["throughput_mbs"], 64 / 8), link


def test_the_lab_cleans_up_after_a_failure():
    require()
    with pytest.raises(RuntimeError, match="boom"), NetLab() as lab:
        made = [lab.namespace(), lab.namespace()]
        lab.link(made[0], "10.77.0.1/24", made[1], "10.77.0.2/24", rate_mbit=8)
        assert set(made) <= set(namespaces())
        raise RuntimeError("boom")
    assert not set(made) & set(namespaces())
