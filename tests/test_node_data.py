"""What another PC says is hostile until checked (issue 24, items 5, 9-11): its text reaches no terminal
or label raw, every exchange with it has an overall deadline, its numbers pass a rig file's rules, its
protocol must be one this PC's engine speaks, and one PC cannot be counted twice (by two names, or by a
GPU that is also this PC's or another node's).

Lying and stalling nodes are tests/hostile_node.py (real sockets, the real wire formats); where a real
engine can show it (one PC under two names, the version the engine speaks) the real koboldcpp is used."""

from __future__ import annotations

import subprocess
import threading
import time

import pytest
from hostile_node import GIB, HostileNode, share_info
from test_netlink import PHOENIX, ROOT

from phoenix_gui.backends.nodes import NodeError, describe_node, measure_throughput

GPU = {"name": "RTX 3060", "uuid": "GPU-11111111-2222-3333-4444-555555555555", "architecture": "Ampere",
       "compute_capability": "8.6", "bandwidth_gbs": 360.0, "bus_width_bits": 192}
ESC_NAME = "\x1b[2J\x1b[1;31mkitchen-pc\r\nphoenix: all good\x1b]0;owned\x07"


def _raw(text: str) -> str:
    return "".join(c for c in text if not (c.isprintable() or c == "\n"))


def _within(seconds: float, fn, *args, **kw):
    """fn's result (or exception) if it ends within `seconds`, else a failure: a hang is not waited out."""
    box: dict = {}

    def run():
        try:
            box["ok"] = fn(*args, **kw)
        except BaseException as e:  # noqa: BLE001 - handed to the test
            box["err"] = e

    t = threading.Thread(target=run, daemon=True)
    start = time.monotonic()
    t.start()
    t.join(seconds)
    if t.is_alive():
        pytest.fail(f"{getattr(fn, '__name__', fn)} still running after {seconds:g} s")
    if "err" in box:
        raise box["err"]
    return box["ok"], time.monotonic() - start


def _plan(*args, timeout=60, env=None):
    return subprocess.run([*PHOENIX, "plan", "--demo", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env, errors="surrogateescape")


# --- item 5: text from the network ---

def test_control_characters_from_a_node_are_escaped_where_they_enter():
    dev = dict(GPU, name="\x1b[31mRTX\x1b[0m 3060\n\r", uuid="GPU-\x07x", driver_version="550\x1b[K",
               architecture="Amp\u202eere", bandwidth_source="spec\x00")
    with HostileNode(info=share_info([dev], name=ESC_NAME, engine="koboldcpp \u202e1.511.1\u202c\x07")) as n:
        node = describe_node(n.address, timeout=5, measure=False)
    [g] = node.devices
    texts = [node.name, node.engine, g.name, g.uuid, g.driver_version, g.architecture, g.bandwidth_source]
    assert not any(_raw(t) for t in texts), texts
    assert node.name.startswith("\\x1b[2J") and "\\r\\nphoenix" in node.name and "\\u202e" in node.engine
    assert node.label == f'"{node.name}" ({n.address})'  # the PC's own words, quoted


def test_plan_rpc_prints_a_nodes_name_quoted_and_escaped():
    with HostileNode(info=share_info([GPU], name=ESC_NAME)) as n:
        r = _plan("--rpc", n.address)
    assert r.returncode in (0, 3), r.stderr
    assert not _raw(r.stdout + r.stderr)
    assert '"\\x1b[2J\\x1b[1;31mkitchen-pc\\r\\nphoenix: all good' in r.stdout


def test_the_wizard_lists_a_nodes_name_escaped(qtbot, wiz):
    from test_wizard_cluster import add_typed

    with HostileNode(info=share_info([GPU], name=ESC_NAME)) as n:
        panel = add_typed(qtbot, wiz, n.address)
    [node] = wiz.state.nodes
    labels = [panel.rows.itemAt(i).widget().text() for i in range(panel.rows.count())
              if hasattr(panel.rows.itemAt(i).widget(), "text")]
    assert any(t.startswith('"\\x1b[2J') for t in labels) and not any(_raw(t) for t in labels)
    assert not _raw(wiz.state.rig.name) and not _raw(node.devices[0].name)


# --- item 9: an overall deadline on every exchange ---

def test_an_info_endpoint_answering_a_byte_a_second_cannot_stall_describe_node():
    with HostileNode(info=share_info([GPU]), dribble_info=1.0) as n:
        node, took = _within(20, describe_node, n.address, timeout=5, measure=True)
    assert took < 9  # RPC, then /info given up after 3 s, no link test without it
    assert node.name == n.address and not node.link.measured  # taken as a node without an info endpoint


def test_rpc_replies_a_byte_at_a_time_end_at_the_deadline_in_one_sentence():
    """Each reply arrives within the per-read timeout; all of them together would take minutes."""
    with HostileNode(devices=[(6 * GIB, 8 * GIB)] * 16, delay=0.1) as n:
        with pytest.raises(NodeError) as e:
            _within(20, describe_node, n.address, timeout=2, measure=True)
    msg = str(e.value)
    assert msg.startswith(f"The PC at {n.address} answered too slowly") and "\n" not in msg


def test_a_link_test_answered_a_byte_a_second_ends_at_its_deadline():
    with HostileNode(info=share_info([GPU]), dribble_blob=1.0) as n:
        mbs, took = _within(15, measure_throughput, "127.0.0.1", n.port, 0.0, 2.0)
    assert mbs is None and took < 4


def test_plan_rpc_is_not_stalled_by_a_dribbling_node():
    with HostileNode(info=share_info([GPU]), dribble_info=1.0) as n:
        try:
            r = _plan("--rpc", n.address, timeout=40)
        except subprocess.TimeoutExpired:
            pytest.fail("phoenix plan --rpc was still asking after 40 s")
    assert r.returncode in (0, 3), r.stderr


def test_the_wizard_is_not_stalled_by_a_dribbling_node(qtbot, wiz):
    with HostileNode(info=share_info([GPU]), dribble_info=1.0) as n:
        panel = wiz.page("hardware").nodes
        panel.address.setText(n.address)
        panel.add_typed()
        qtbot.waitUntil(lambda: not panel._task.running, timeout=20000)
    assert [x.address for x in wiz.state.nodes] == [n.address]


# --- item 10: a node's numbers pass a rig file's rules ---

@pytest.mark.parametrize("kw, words", [
    (dict(devices=[(2 ** 64 - 1, 2 ** 64 - 1)]), "18,446,744,073,709,551,615 bytes of memory"),
    (dict(devices=[(64 * GIB, 8 * GIB)]), "more free memory than in total"),
    (dict(devices=[(0, 0)]), "0 bytes of memory"),
    (dict(devices=[], count=0), "shares no device"),
    (dict(devices=[(6 * GIB, 8 * GIB)] * 17), "17 devices; llama.cpp uses at most 16"),
    (dict(devices=[(6 * GIB, 8 * GIB)] * 64), "64 devices; llama.cpp uses at most 16"),
    (dict(info=share_info([dict(GPU, bandwidth_gbs=float("inf"))])), "bandwidth_gbs must be a finite number"),
    (dict(info=share_info([dict(GPU, bandwidth_gbs=float("nan"))])), "bandwidth_gbs must be a finite number"),
    (dict(info=share_info([dict(GPU, bandwidth_gbs=-5)])), "bandwidth_gbs must be between 0 and 100000"),
    (dict(info=share_info([dict(GPU, bandwidth_gbs="fast")])), "bandwidth_gbs must be a number"),
    (dict(info=share_info([dict(GPU, bus_width_bits=2 ** 70)])), "bus_width_bits must be between"),
])
def test_absurd_node_data_is_one_sentence_naming_the_pc(kw, words):
    with HostileNode(**kw) as n:
        with pytest.raises(NodeError) as e:
            describe_node(n.address, timeout=5, measure=False)
    msg = str(e.value)
    assert msg.startswith(f"The PC at {n.address} ") and words in msg and "\n" not in msg and msg.endswith(".")


def test_an_info_endpoint_nested_100000_deep_is_ignored_not_a_crash():
    with HostileNode(info_raw="[" * 100_000 + "]" * 100_000) as n:
        node = describe_node(n.address, timeout=5, measure=False)
    assert node.name == n.address


def test_plan_rpc_with_infinite_bandwidth_is_refused_not_nan():
    with HostileNode(info=share_info([dict(GPU, bandwidth_gbs=float("inf"))])) as n:
        r = _plan("--rpc", n.address, "--json")
    assert r.returncode == 1 and "Infinity" not in r.stdout and "nan" not in r.stdout
    assert r.stderr.strip().splitlines()[-1].startswith(f"phoenix: The PC at {n.address} sent unusable device data")


@pytest.mark.parametrize("version, old_form", [((255, 255, 255), False), ((4, 9, 0), False), ((3, 0, 0), True)])
def test_plan_rpc_refuses_a_protocol_the_engine_cannot_talk_to(kcpp_script, version, old_form):
    with HostileNode(version=version, old_form=old_form, info=share_info([GPU])) as n:
        r = _plan("--rpc", n.address, "--exe", str(kcpp_script))
    last = r.stderr.strip().splitlines()[-1]
    assert r.returncode == 1, r.stdout[-300:] + r.stderr
    assert last.startswith(f'phoenix: "hostile-pc" ({n.address}) runs RPC protocol {"%d.%d.%d" % version}')
    assert "4.0.1 of koboldcpp.py" in last


# --- item 11: one PC counted once ---

@pytest.fixture(scope="module")
def real_node(kcpp_script):
    from phoenix_gui.backends.share import ShareHost

    with ShareHost(kcpp_script, port=None, cpu_only=True) as host:
        yield host


def test_one_pc_under_two_names_is_refused(real_node):
    r = _plan("--rpc", f"127.0.0.1:{real_node.port},localhost:{real_node.port}")
    last = r.stderr.strip().splitlines()[-1]
    assert r.returncode == 2, r.stdout[-300:] + r.stderr
    assert last == (f"phoenix: localhost:{real_node.port} and 127.0.0.1:{real_node.port} are the same PC "
                    f"(127.0.0.1:{real_node.port}); list it once, or its memory would count twice.")


def test_the_wizard_adds_one_pc_under_two_names_once(qtbot, wiz, real_node):
    from test_wizard_cluster import add_typed

    panel = add_typed(qtbot, wiz, f"127.0.0.1:{real_node.port},localhost:{real_node.port}")
    assert [n.address for n in wiz.state.nodes] == [f"127.0.0.1:{real_node.port}"]
    assert "are the same PC" in panel.error.text() and "\n" not in panel.error.text()


def test_two_nodes_reporting_one_gpu_are_refused():
    with HostileNode(info=share_info([GPU])) as a, HostileNode(info=share_info([GPU])) as b:
        r = _plan("--rpc", f"{a.address},{b.address}")
    assert r.returncode == 2 and "share the same GPU (GPU-11111111" in r.stderr and "list it once" in r.stderr


def test_a_node_sharing_this_pcs_own_gpu_is_refused(seed_rig):
    mine = seed_rig.gpus[1]
    with HostileNode(info=share_info([dict(GPU, name=mine.name, uuid=mine.uuid)])) as n:
        r = _plan("--rpc", n.address)
    assert r.returncode == 2 and f"({mine.uuid}), which is a GPU of this PC" in r.stderr


def test_more_than_16_devices_with_this_pcs_are_refused(seed_rig):
    with HostileNode(devices=[(6 * GIB, 8 * GIB)] * 14) as n:
        r = _plan("--rpc", n.address)
    assert r.returncode == 2 and f"add up to {14 + len(seed_rig.gpus)}; llama.cpp uses at most 16" in r.stderr
