"""Sharing this PC: ShareHost and `phoenix share` with the real koboldcpp 1.115.1 RPC host, its info
endpoint, its warnings, bad input, and the allow-list enforced against a peer in a network namespace."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import psutil
import pytest
from machine_helpers import gone
from netlab import NetLab, require
from test_netlink import PHOENIX, ROOT, _run_share, stopped_at_exit

from phoenix_gui.backends.nodes import INFO_PORT_OFFSET, describe_node
from phoenix_gui.backends.processes.ports import free_port_with
from phoenix_gui.backends.share import ShareError, ShareHost


def test_share_host_serves_rpc_and_info_and_leaves_nothing(kcpp_script):
    host = ShareHost(kcpp_script, port=free_port_with([INFO_PORT_OFFSET]), cpu_only=True).start()
    try:
        pids = host._proc.tree_pids()
        assert host.version is not None and str(host.version) == "4.0.1" and host.warnings() == []
        with urllib.request.urlopen(host.info_url, timeout=5) as r:
            info = json.load(r)
        assert info["service"] == "phoenix-share" and info["engine"] == "koboldcpp 1.115.1"
        assert info["protocol"] == "4.0.1" and info["rpc_port"] == host.port
        [dev] = info["devices"]
        assert dev["engine_name"] == "CPU" and dev["architecture"] == "CPU" and dev["bandwidth_gbs"] > 0
        node = describe_node(host.address)
        assert node.name == info["name"] and node.engine == info["engine"] and node.devices[0].bandwidth_gbs > 0
        assert node.link.measured and node.link.throughput_mbs > 50  # loopback: far above any LAN
        with urllib.request.urlopen(host.info_url.replace("/info", "/ping"), timeout=5) as r:
            assert r.status == 200
        for bad in (b"x" * 10, None):  # a /blob without a length, or an unknown path: refused, nothing stored
            req = urllib.request.Request(host.info_url.replace("/info", "/nothing"), data=bad, method="POST")
            with pytest.raises(urllib.error.HTTPError):
                urllib.request.urlopen(req, timeout=5)
    finally:
        host.stop()
    assert gone(pids)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", host.port), timeout=1).close()


def test_phoenix_share_prints_the_address_and_stops_on_sigterm(kcpp_script):
    port = free_port_with([INFO_PORT_OFFSET])
    p = subprocess.Popen([*PHOENIX, "share", "--port", str(port), "--exe", str(kcpp_script)], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()
        assert line.strip() == f"On the main PC, add this PC as: 127.0.0.1:{port}"
        tree = [p.pid] + [c.pid for c in psutil.Process(p.pid).children(recursive=True)]
        assert describe_node(f"127.0.0.1:{port}", measure=False).protocol == "4.0.1"
        p.send_signal(signal.SIGTERM)
        assert p.wait(20) == 0
        err = p.stderr.read()
        assert "stopping" in err and "Traceback" not in err and "warning" not in err  # loopback: no warning
        assert gone(tree)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(10)


def test_a_taken_port_is_one_sentence(kcpp_script):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(ShareError, match=f"Port {port} is already in use"):
            ShareHost(kcpp_script, port=port).start()


def test_an_engine_that_exits_at_once_is_one_sentence(tmp_path):
    fake = tmp_path / "koboldcpp.py"  # a real program, the wrong one: it exits with an error
    fake.write_text("import sys\nprint('error: this is not koboldcpp')\nsys.exit(3)\n")
    t = time.monotonic()
    with pytest.raises(ShareError, match=r"stopped \(exit code 3\) before it shared anything: .*not koboldcpp"):
        ShareHost(fake, port=None, info=False, cpu_only=True).start(timeout=30)
    assert time.monotonic() - t < 30


@pytest.mark.parametrize("kw, words", [
    ({"exe": "/no/such/koboldcpp"}, "does not exist"),
    ({"allow": "192.168.1.x"}, "is not an IP address or network"),
    ({"allow": ["10.0.0.1", "bad\nname"]}, "is not an IP address or network"),
    ({"devices": ["CUDA0; rm -rf /"]}, "is not a device name"),
    ({"host": "a b"}, "is not a host name or address"),
    ({"port": 70000}, "port"),
    ({"host": "::1"}, "IPv6"),
])
def test_bad_input_is_one_sentence(kcpp_script, kw, words):
    args = {"exe": kcpp_script, **kw}
    with pytest.raises(Exception) as e:
        ShareHost(**args).start(timeout=5)
    msg = str(e.value)
    assert words in msg and "\n" not in msg and msg.endswith(".")


def test_a_device_the_engine_lacks_is_refused_not_swapped(kcpp_script):
    # koboldcpp itself would drop the unknown name and share the CPU in its place
    host = ShareHost(kcpp_script, port=None, info=False, cpu_only=True, devices=["CUDA0"])
    with pytest.raises(ShareError, match=r"has no device CUDA0 \(it would share CPU instead\)"):
        host.start(timeout=60)
    assert gone(host._proc.tree_pids() + [host._proc.pid])
    ok = ShareHost(kcpp_script, port=None, info=False, cpu_only=True, devices=["CPU"]).start(timeout=60)
    ok.stop()
    assert [d["engine_name"] for d in ok.engine_devices] == ["CPU"]


def test_phoenix_share_bad_input_exits_2_with_one_line(kcpp_script):
    r = subprocess.run([*PHOENIX, "share", "--exe", str(kcpp_script), "--allow", "10.0.0.0/99"], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith("phoenix: 10.0.0.0/99 in the allow-list")


def test_a_lan_address_warns_that_rpc_has_no_authentication(kcpp_script):
    open_share = ShareHost(kcpp_script, host="10.77.0.2")
    assert "no password or encryption" in open_share.warnings()[0] and "--allow" in open_share.warnings()[1]
    guarded = ShareHost(kcpp_script, host="10.77.0.2", allow="10.77.0.5")
    assert "lets only 10.77.0.5/32 connect" in guarded.warnings()[1]


def test_the_allow_list_refuses_an_unlisted_peer(kcpp_script):
    """The node in one namespace shares 10.77.0.2 allowing only 10.77.0.5; the main PC's namespace has
    10.77.0.1 (its first address, used by default) and 10.77.0.5."""
    require()
    with NetLab() as lab:
        main, node = lab.namespace(), lab.namespace()
        lab.link(main, "10.77.0.1/24", node, "10.77.0.2/24", extra_a=("10.77.0.5/24",))
        with stopped_at_exit(_run_share(lab, node, kcpp_script, "10.77.0.2", 50052, "--allow", "10.77.0.5")) as p:
            code = ("from phoenix_gui.backends.nodes import describe_node, NodeError\n"
                    "from phoenix_gui.backends.rpcwire import RpcClient\n"
                    "try:\n    describe_node('10.77.0.2:50052', timeout=5)\nexcept NodeError as e:\n    print(e)\n"
                    "with RpcClient.open('10.77.0.2', 50052, timeout=5, source='10.77.0.5') as rpc:\n"
                    "    print('allowed peer:', rpc.version, rpc.device_count())\n")
            out = lab.exec(main, [sys.executable, "-c", code]).splitlines()
        err = p.stderr.read()
    assert out[0] == ("The PC at 10.77.0.2:50052 refused this PC: its `phoenix share` lets only the addresses in "
                      "its --allow list connect; add this PC's address there.")
    assert out[1] == "allowed peer: 4.0.1 1"
    assert "no password or encryption" in err and "lets only 10.77.0.5/32 connect" in err


def test_phoenix_share_says_so_when_the_engine_dies(kcpp_script):
    p = subprocess.Popen([*PHOENIX, "share", "--port", str(free_port_with([INFO_PORT_OFFSET])), "--exe", str(kcpp_script)], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().startswith("On the main PC")
        engines = [c for c in psutil.Process(p.pid).children(recursive=True) if "--rpcmode" in c.cmdline()]
        tree = [p.pid] + [c.pid for c in psutil.Process(p.pid).children(recursive=True)]
        engines[0].kill()
        assert p.wait(20) == 1
        assert "phoenix: the engine stopped (exit code -9)" in p.stderr.read()
        assert gone(tree)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(10)


def test_a_port_taken_for_the_share_has_its_info_neighbour_free_too(monkeypatch):
    from phoenix_gui.backends import share
    from phoenix_gui.backends.nodes import INFO_PORT_OFFSET
    from phoenix_gui.backends.processes import ports

    with socket.socket() as held:  # another program holds the neighbour of the first free port offered
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        offered = iter([taken - INFO_PORT_OFFSET, ports.free_port()])
        monkeypatch.setattr(ports, "free_port", lambda: next(offered))
        host = share.ShareHost("koboldcpp.py", port=None)
        assert host.port != taken - INFO_PORT_OFFSET and host.info_port == host.port + INFO_PORT_OFFSET
