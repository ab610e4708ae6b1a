"""The wizard's side of a cluster of the user's PCs (issue #14), driven through the real widgets offscreen:
Add a PC against a real koboldcpp RPC host on 127.0.0.1, devices in the engine's order, the split page's
groups and network cost, saved node addresses, and the failures a user meets (down, not an RPC server)."""

import os
import socket
import threading

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402
from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtWidgets import QToolButton  # noqa: E402

from phoenix_gui.backends.nodes import INFO_PORT_OFFSET  # noqa: E402
from phoenix_gui.backends.processes.ports import free_port_with  # noqa: E402
from phoenix_gui.config import UserSettings, load_settings, save_settings  # noqa: E402
from phoenix_gui.hardware.rig import LinkInfo, RemoteNode  # noqa: E402
from phoenix_gui.hardware.rig import GpuInfo  # noqa: E402
from phoenix_gui.ui.app import make_wizard  # noqa: E402
from phoenix_gui.ui.nodes_panel import link_text  # noqa: E402
from phoenix_gui.ui.pages.hardware import NAME, ORDER, PC, PCIE  # noqa: E402
from phoenix_gui.ui.pages.split import network_cost  # noqa: E402
from cluster_rigs import MAIN_AND_TWO_NODES  # noqa: E402

GB = 10**9


def a_node(rig, address="192.168.1.20:50052", name="gaming-pc", rtt_ms=0.6, mbs=112.0, n=1, vram_gib=12):
    """Another PC's description as describe_node returns it (the domain's own dataclasses)."""
    devices = [GpuInfo(index=i, name="NVIDIA GeForce RTX 3060", uuid=f"rpc:{address}/{i}", pci_bus_id="",
                       total_bytes=vram_gib << 30, free_bytes=(vram_gib << 30) - (1 << 30), used_bytes=1 << 30,
                       compute_capability=(8, 6), architecture="Ampere", bandwidth_gbs=360.0,
                       bandwidth_source="spec table", node=address) for i in range(n)]
    return RemoteNode(address, name, devices, LinkInfo(rtt_ms, mbs))


@pytest.fixture
def rpc_host(kcpp_tree):
    """A real koboldcpp RPC host sharing this machine's CPU on a free 127.0.0.1 port."""
    from phoenix_gui.backends.share import ShareHost

    host = ShareHost(kcpp_tree / "koboldcpp.py", port=None, cpu_only=True).start()
    yield host
    pid = host._proc.pid
    host.stop()
    from machine_helpers import gone

    assert gone([pid]), "the RPC host was left running"


def add_typed(qtbot, w, address: str):
    panel = w.page("hardware").nodes
    panel.address.setText(address)
    qtbot.mouseClick(panel.add, Qt.LeftButton)
    qtbot.waitUntil(lambda: not panel._task.running, timeout=30000)
    return panel


def rows(w):
    t = w.page("hardware").table
    return [(t.item(r, PC).text(), t.item(r, NAME).text()) for r in range(t.rowCount())]


# --- the session model ---

def test_a_pc_added_puts_its_devices_first_and_keeps_the_users_choices(wiz):
    st = wiz.state
    local_uuids = [g.uuid for g in st.rig.gpus]
    st.set_included(0, False)  # GTX 1050 Ti left out
    st.set_locked(2, True)
    share_2080 = st.percent(1) / (st.percent(1) + st.percent(2))
    st.add_node(a_node(st.rig))
    g = st.rig.gpus
    assert g[0].is_remote and [x.uuid for x in g[1:]] == local_uuids  # engine order: RPC devices first
    assert st.devices[0] == 0 and st.order[0] == 0
    assert 1 not in st.included and st.locked == {3}  # the same cards, at their new places
    assert st.percent(2) / (st.percent(2) + st.percent(3)) == pytest.approx(share_2080)
    assert st.gpu_label(0) == "RTX 3060 on gaming-pc"
    plan = st.plan()
    assert [d.gpu_index for d in plan.gpus] == st.devices and plan.gpus[0].layers > 0
    st.remove_node("192.168.1.20:50052")
    assert [x.uuid for x in st.rig.gpus] == local_uuids
    assert 0 not in st.included and st.locked == {2}


def test_this_pcs_cards_cannot_be_moved_before_a_remote_device(wiz):
    st = wiz.state
    st.add_node(a_node(st.rig))
    order = list(st.order)
    st.move_gpu(order[1], -1)  # the engine puts RPC devices first whatever is asked
    st.move_gpu(order[0], +1)
    assert st.order == order
    st.move_gpu(order[2], -1)  # this PC's cards still reorder among themselves
    assert st.order == [order[0], order[2], order[1], order[3]]
    page = wiz.page("hardware")
    wiz.go_to("hardware")
    up = lambda r: next(b for b in page.table.cellWidget(r, ORDER).findChildren(QToolButton)  # noqa: E731
                        if b.text() == "▲")
    assert not up(1).isEnabled() and up(2).isEnabled()


def test_the_same_pc_twice_is_refused_and_a_new_description_replaces_the_old(wiz):
    from phoenix_gui.session import SettingError

    st = wiz.state
    n = a_node(st.rig)
    with pytest.raises(SettingError, match="twice"):
        st.set_nodes([n, n])
    st.add_node(n)
    st.add_node(a_node(st.rig, n=2))  # described again: now two devices, still one PC
    assert [g.node for g in st.rig.gpus].count(n.address) == 2 and len(st.nodes) == 1


# --- the hardware page against a real RPC host ---

def test_add_a_real_pc_lists_its_device_first_with_the_measured_link_and_remove_it(qtbot, wiz, rpc_host):
    wiz.go_to("hardware")
    panel = add_typed(qtbot, wiz, rpc_host.address)
    assert not panel.error.isVisible(), panel.error.text()
    node = wiz.state.nodes[0]
    assert node.address == rpc_host.address and node.link is not None and node.link.measured
    pc, name = rows(wiz)[0]
    assert pc == f"{node.name}\n{rpc_host.address}" and name.startswith("RPC0 CPU")
    assert all(pc == "this PC" for pc, _ in rows(wiz)[1:])
    assert not wiz.page("hardware").table.isColumnHidden(PC)
    shown = panel.rows.itemAtPosition(0, 0).widget().text()
    assert rpc_host.address in shown and link_text(node.link) in shown and " ms round trip, " in shown
    t = wiz.page("hardware").table
    assert t.item(0, PCIE).text() == "network" and t.item(0, PCIE).toolTip() == link_text(node.link)
    assert panel.address.text() == ""
    qtbot.mouseClick(panel.rows.itemAtPosition(0, 2).widget(), Qt.LeftButton)  # Remove
    assert wiz.state.nodes == [] and all(pc == "this PC" for pc, _ in rows(wiz))
    assert wiz.page("hardware").table.isColumnHidden(PC)


def test_a_pc_that_is_down_is_one_sentence_naming_it_and_nothing_is_added(qtbot, wiz):
    address = f"127.0.0.1:{free_port_with([INFO_PORT_OFFSET])}"
    panel = add_typed(qtbot, wiz, address)
    assert panel.error.isVisible() and address in panel.error.text()
    assert panel.error.text().count(". ") <= 1 and "Traceback" not in panel.error.text()
    assert wiz.state.nodes == [] and wiz.state.unreachable == {}
    assert panel.address.text() == address  # left there to be corrected
    assert panel.add.isEnabled()


def test_something_that_is_not_an_rpc_server_is_named_and_refused(qtbot, wiz):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    port = srv.getsockname()[1]

    def answer():  # an HTTP-ish server: talks, but not llama.cpp's RPC
        try:
            c, _ = srv.accept()
            c.recv(64)
            c.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\n")
            c.close()
        except OSError:
            pass

    t = threading.Thread(target=answer, daemon=True)
    t.start()
    try:
        panel = add_typed(qtbot, wiz, f"127.0.0.1:{port}")
    finally:
        srv.close()
    assert panel.error.isVisible() and f"127.0.0.1:{port}" in panel.error.text()
    assert wiz.state.nodes == []


@pytest.mark.parametrize("typed", ["192.168.1.20", "host:99999", "a b:5", "127.0.0.1:50052,127.0.0.1:50052"])
def test_a_bad_address_is_one_sentence_before_anything_is_asked(qtbot, wiz, typed):
    panel = wiz.page("hardware").nodes
    panel.address.setText(typed)
    qtbot.mouseClick(panel.add, Qt.LeftButton)
    assert panel.error.isVisible() and panel.error.text()
    assert not panel._task.running and wiz.state.nodes == []


# --- remembered between runs ---

def test_node_addresses_are_saved_and_asked_again_at_the_next_start(qtbot, config_dir, rpc_host):
    w = make_wizard(persist=True, measure=False)
    qtbot.addWidget(w)
    w.show()
    add_typed(qtbot, w, rpc_host.address)
    w.close()
    assert load_settings()[0].nodes == [rpc_host.address]
    w2 = make_wizard(persist=True, measure=False)
    qtbot.addWidget(w2)
    w2.show()
    qtbot.waitUntil(lambda: bool(w2.state.nodes), timeout=30000)
    assert w2.state.rig.gpus[0].node == rpc_host.address


def wizard_remembering(qtbot, address):
    """A wizard started with `address` among the remembered PCs, shown once it has found that PC unreachable."""
    save_settings(UserSettings(nodes=[address]))
    w = make_wizard(persist=True, measure=False)
    qtbot.addWidget(w)
    w.show()
    qtbot.waitUntil(lambda: address in w.state.unreachable, timeout=30000)
    return w


def test_a_remembered_pc_that_is_down_stays_listed_with_why_and_can_be_removed(qtbot, config_dir):
    address = f"127.0.0.1:{free_port_with([INFO_PORT_OFFSET])}"
    w = wizard_remembering(qtbot, address)
    panel = w.page("hardware").nodes
    row = panel.rows.itemAtPosition(0, 0).widget().text()
    assert row == w.state.unreachable[address] and address in row  # said once, on its own row
    assert not panel.error.isVisible()
    assert panel.rows.itemAtPosition(0, 1).widget().text() == "Try again"
    w.close()
    assert load_settings()[0].nodes == [address]  # a PC switched off today is still wanted tomorrow
    w2 = make_wizard(persist=True, measure=False)
    qtbot.addWidget(w2)
    w2.show()
    p2 = w2.page("hardware").nodes
    qtbot.waitUntil(lambda: address in w2.state.unreachable, timeout=30000)
    qtbot.mouseClick(p2.rows.itemAtPosition(0, 2).widget(), Qt.LeftButton)  # Remove
    w2.close()
    assert load_settings()[0].nodes == []


@pytest.mark.parametrize("bad", [["192.168.1.20"], ["a:1", "a:1"], "127.0.0.1:5", [5], ["h:0"], ["x\n:5"]])
def test_bad_saved_nodes_fall_back_and_the_rest_is_kept(config_dir, bad):
    import json

    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "settings.json").write_text(json.dumps({"nodes": bad, "context": 8192}))
    us, note = load_settings()
    assert us.nodes == [] and us.context == 8192 and "nodes" in note


# --- the split page: one picture of the cluster ---

def test_split_groups_bars_per_pc_in_engine_order_with_the_network_cost(qtbot, wiz):
    st = wiz.state
    st.add_node(a_node(st.rig, rtt_ms=0.6, mbs=112.0))
    st.run_auto_fit("fastest")
    wiz.go_to("split")
    page = wiz.page("split")
    heads = [h.text() for h in page.group_heads]
    assert heads[0].startswith("gaming-pc (192.168.1.20:50052) · link 0.60 ms round trip, 112 MB/s")
    assert heads[1:] == ["this PC"]
    plan = st.plan()
    remote = plan.devices[0]
    assert st.rig.gpus[remote.gpu_index].is_remote and remote.layers > 0
    assert page.bar_rows[0][0].text().startswith(remote.name)  # its own bar, first
    net = page.net_rows["192.168.1.20:50052"]
    assert net.isVisibleTo(page)
    per_token, sent, load_s = network_cost(plan, st.rig, st.model, "192.168.1.20:50052")
    # weights over the link at load: ~90 s for ~10 GB at gigabit speed
    assert sent == remote.weights_bytes and load_s == pytest.approx(sent / 112e6)
    assert f"{sent / 1e9:,.1f} GB of weights, about {round(load_s)} s" in net.text()
    assert f"{per_token * 1000:.1f} ms per token" in net.text()
    # one run of layers there: at least a round trip plus the activations each way (the planner's own term)
    assert per_token >= 0.6e-3 + 2 * 4 * st.model.n_embd / 112e6
    # the only other PC: its cost is the whole plan's network term
    assert per_token == pytest.approx(plan.speed_inputs.network_s)


def test_two_pcs_each_have_their_cost_and_they_add_up_to_the_plans(qtbot, wiz):
    st = wiz.state
    st.add_node(a_node(st.rig, "10.0.0.2:50052", "laptop", rtt_ms=2.0, mbs=50.0, vram_gib=6))
    st.add_node(a_node(st.rig, "10.0.0.3:50052", "gaming-pc", rtt_ms=0.5, mbs=112.0))
    wiz.go_to("split")
    page = wiz.page("split")
    assert [h.text().split(" ")[0] for h in page.group_heads] == ["laptop", "gaming-pc", "this"]
    plan = st.plan()
    costs = [network_cost(plan, st.rig, st.model, a) for a in ("10.0.0.2:50052", "10.0.0.3:50052")]
    assert all(c[1] > 0 for c in costs)
    assert sum(c[0] for c in costs) == pytest.approx(plan.speed_inputs.network_s)
    assert costs[0][2] == pytest.approx(costs[0][1] / 50e6)


def test_slower_link_costs_more_per_token_and_at_load(wiz):
    st = wiz.state
    st.add_node(a_node(st.rig, rtt_ms=0.5, mbs=1000.0))
    fast = network_cost(st.plan(), st.rig, st.model, "192.168.1.20:50052")
    st.add_node(a_node(st.rig, rtt_ms=5.0, mbs=10.0))  # the same PC over a much worse link
    slow = network_cost(st.plan(), st.rig, st.model, "192.168.1.20:50052")
    assert slow[0] > 5 * fast[0] and slow[2] == pytest.approx(100 * fast[2], rel=0.01)


# --- launch across two PCs from the wizard, and the monitor's per-device buffers ---

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from phoenix_gui.model import write_skeleton

    return write_skeleton("tiny-llama-f16", tmp_path_factory.mktemp("m") / "tiny.gguf", random_data=True)


def test_launch_over_a_real_rpc_node_and_the_monitor_shows_its_logged_buffers(qtbot, tmp_path, tiny, kcpp_script,
                                                                                rpc_host):
    from phoenix_gui.backends.logparse import parse_log
    from phoenix_gui.backends.processes.ports import free_port

    rig = tmp_path / "cpu.toml"  # this PC: no GPU, so every offloaded layer goes to the other PC
    rig.write_text('name = "this PC"\n[system]\nram_gib = 16\nram_bandwidth_gbs = 20\n')
    w = make_wizard(rig_path=str(rig), model_path=str(tiny), persist=False, measure=False)
    qtbot.addWidget(w)
    w.resize(1280, 860)
    w.show()
    st = w.state
    st.set_backend("koboldcpp", str(kcpp_script))
    st.set_port(free_port())
    st.set_context(512)
    add_typed(qtbot, w, rpc_host.address)
    assert st.devices == [0] and st.rig.gpus[0].node == rpc_host.address
    plan = st.plan()
    assert plan.gpus[0].layers == plan.n_layer + 1  # every layer on the other PC
    assert f"--rpctargets {rpc_host.address}" in " ".join(st.command().argv)
    w.go_to("launch")
    page = w.page("launch")
    page.refresh()
    assert page.launch.isEnabled(), page.launch.toolTip()
    qtbot.mouseClick(page.launch, Qt.LeftButton)
    qtbot.waitUntil(lambda: w.session.outcome is not None, timeout=120000)
    out = w.session.outcome
    assert out.ok, out.failure and out.failure.message
    pid = w.session.launch.process.pid
    mon = w.page("monitor")
    logged = parse_log("\n".join(w.session.launch.process.lines))
    rpc = [b for b, _k in logged.buffers if b.startswith("RPC0[")]
    assert rpc == [f"RPC0[{rpc_host.address}]"] * len(rpc) and rpc
    actual_mib = sum(v for (b, k), v in logged.buffers.items() if b == rpc[0] and k in ("model", "KV", "compute"))
    rows = {mon.table.item(r, 0).text(): mon.table.item(r, 2).text() for r in range(mon.table.rowCount())}
    assert rows[plan.gpus[0].name] == f"{actual_mib:,.0f} MiB"
    assert not mon.warn.isVisibleTo(mon), mon.warn.text()  # the layers did reach a device: the other PC's
    mon.update_plots()  # asks the other PC's info endpoint on the worker
    qtbot.waitUntil(lambda: rpc_host.address in mon.remote_info, timeout=10000)
    mon.update_plots()
    total = rpc_host.info()["devices"][0]["total_bytes"] / (1 << 20)
    assert f" / {total:,.0f} MiB (" in mon.now.text() and f"as {rpc_host.address} reports" in mon.now.text()
    w.close()
    from machine_helpers import gone

    assert gone([pid])


def older_koboldcpp(tmp_path, version=(3, 0, 0)):
    """A koboldcpp source tree whose RPC header says an older protocol (how engine_protocol reads a tree)."""
    tree = tmp_path / "koboldcpp-old"
    (tree / "ggml" / "include").mkdir(parents=True)
    (tree / "koboldcpp.py").write_text("# an older koboldcpp\n")
    major, minor, patch = version
    (tree / "ggml" / "include" / "ggml-rpc.h").write_text(
        f"#define RPC_PROTO_MAJOR_VERSION {major}\n#define RPC_PROTO_MINOR_VERSION {minor}\n"
        f"#define RPC_PROTO_PATCH_VERSION {patch}\n")
    return tree / "koboldcpp.py"


def test_a_node_whose_rpc_protocol_differs_from_this_pcs_engine_is_refused_naming_it(qtbot, wiz, tmp_path, rpc_host):
    wiz.state.set_backend("koboldcpp", str(older_koboldcpp(tmp_path)))
    panel = add_typed(qtbot, wiz, rpc_host.address)
    text = panel.error.text()
    assert panel.error.isVisible() and rpc_host.address in text and "3.0.0" in text and "same" in text
    assert wiz.state.nodes == []


def test_the_same_engine_on_both_pcs_is_accepted(qtbot, wiz, kcpp_script, rpc_host):
    wiz.state.set_backend("koboldcpp", str(kcpp_script))
    panel = add_typed(qtbot, wiz, rpc_host.address)
    assert not panel.error.isVisible(), panel.error.text()
    assert not panel.note.isVisible() and wiz.state.nodes[0].address == rpc_host.address


# --- .kcpps configs that use other PCs ---

def test_a_kcpps_for_a_cluster_round_trips_through_the_wizard(wiz, tmp_path):
    from phoenix_gui.backends.commandline import write_kcpps
    from phoenix_gui.backends.kcpps import read_kcpps

    st = wiz.state
    st.add_node(a_node(st.rig))
    st.set_split_text("20 9 25 11")  # every device used: a .kcpps cannot mask this PC's GPUs
    want = st.layer_counts()
    path = write_kcpps(st.plan(), st.rig, "model.gguf", tmp_path / "cluster.kcpps")
    imp = read_kcpps(path)
    assert imp.rpc_targets == ["192.168.1.20:50052"]
    st.set_split_text(" ".join("1" for _ in st.devices))  # moved away, then the config brings it back
    st.apply_kcpps(imp)
    assert st.layer_counts() == want and st.devices[0] == 0 and st.rig.gpus[0].is_remote


def test_a_kcpps_for_a_pc_not_added_is_one_sentence_naming_it(wiz, tmp_path):
    from phoenix_gui.backends.commandline import write_kcpps
    from phoenix_gui.backends.kcpps import read_kcpps
    from phoenix_gui.session import SettingError

    st = wiz.state
    st.add_node(a_node(st.rig))
    path = write_kcpps(st.plan(), st.rig, "model.gguf", tmp_path / "cluster.kcpps")
    st.remove_node("192.168.1.20:50052")
    before = st.settings()
    with pytest.raises(SettingError, match=r"192\.168\.1\.20:50052.*Add a PC"):
        st.apply_kcpps(read_kcpps(path))
    assert st.settings() == before  # nothing half-applied


def test_a_kcpps_for_this_pc_alone_leaves_the_other_pcs_devices_out(wiz, tmp_path):
    from phoenix_gui.backends.commandline import write_kcpps
    from phoenix_gui.backends.kcpps import read_kcpps

    st = wiz.state
    path = write_kcpps(st.plan(), st.rig, "model.gguf", tmp_path / "alone.kcpps")
    st.add_node(a_node(st.rig))
    st.apply_kcpps(read_kcpps(path))
    assert 0 not in st.included and "--rpctargets" not in st.command().argv


# --- the rest of the session model with other PCs ---

def test_changing_this_pcs_rig_keeps_the_other_pcs(wiz, tmp_path):
    from phoenix_gui.hardware import load_rig

    st = wiz.state
    st.add_node(a_node(st.rig))
    rig = tmp_path / "one.toml"
    rig.write_text('name = "laptop"\n[system]\nram_gib = 32\nram_bandwidth_gbs = 40\n'
                   '[[gpu]]\nname = "NVIDIA GeForce RTX 3050"\nvram_mib = 4096\n')
    st.set_rig(load_rig(rig), str(rig))
    assert [g.node for g in st.rig.gpus] == ["192.168.1.20:50052", ""]
    assert st.rig.name == "laptop + gaming-pc" and st.devices == [0, 1]
    wiz.go_to("hardware")
    assert wiz.page("hardware").heading.text().startswith("Simulated rig: laptop")  # each PC named with its address
    assert "gaming-pc (192.168.1.20:50052)" in wiz.page("hardware").heading.text()


def test_a_measured_ram_bandwidth_is_kept_when_a_pc_is_added(wiz):
    from dataclasses import replace as copy

    st = wiz.state
    st.rig.system = copy(st.rig.system, ram_bandwidth_gbs=77.0, ram_bandwidth_source="measured")  # as app.py does
    st.changed()
    st.add_node(a_node(st.rig))
    st.remove_node("192.168.1.20:50052")
    assert st.rig.system.ram_bandwidth_gbs == 77.0


def test_saved_split_is_this_pcs_and_survives_a_start_without_the_other_pc(qtbot, config_dir):
    us = UserSettings()
    w = make_wizard(persist=False, measure=False)
    qtbot.addWidget(w)
    st = w.state
    st.add_node(a_node(st.rig))
    st.to_user_settings(us)
    local = [g.uuid for g in st.rig.gpus if not g.is_remote]
    assert us.nodes == ["192.168.1.20:50052"] and us.devices == (local or None)  # the other PC's device is not this PC's (None: no GPU here)
    assert len(us.split or []) == len(local)
    # the next start, before the other PC is described again: this PC's part of the settings still applies
    w2 = make_wizard(persist=False, measure=False)
    qtbot.addWidget(w2)
    w2.state.apply_user_settings(us)
    assert w2.state.saved_nodes == ["192.168.1.20:50052"] and w2.state.nodes == []


def test_try_again_adds_a_remembered_pc_once_it_shares(qtbot, config_dir, kcpp_tree):
    from phoenix_gui.backends.share import ShareHost

    port = free_port_with([INFO_PORT_OFFSET])
    address = f"127.0.0.1:{port}"
    w = wizard_remembering(qtbot, address)
    panel = w.page("hardware").nodes
    host = ShareHost(kcpp_tree / "koboldcpp.py", port=port, cpu_only=True).start()  # the PC is switched on
    try:
        qtbot.mouseClick(panel.rows.itemAtPosition(0, 1).widget(), Qt.LeftButton)  # Try again
        qtbot.waitUntil(lambda: not panel._task.running, timeout=30000)
        assert w.state.unreachable == {} and w.state.rig.gpus[0].node == address
        assert not panel.error.isVisible() and rows(w)[0][0].endswith(address)
    finally:
        pid = host._proc.pid
        host.stop()
    from machine_helpers import gone

    assert gone([pid])


def test_the_monitor_says_when_another_pc_reports_no_memory(wiz):
    mon = wiz.page("monitor")
    g = a_node(wiz.state.rig).devices[0]
    assert mon._remote_text(g, "RTX 3060 (gaming-pc)") == ("RTX 3060 (gaming-pc): on 192.168.1.20:50052, not measured "
                                                          "from this PC (it shares no Phoenix info)")
    mon.remote_info[g.node] = {"devices": [{"total_bytes": 12 << 30, "free_bytes": 9 << 30}]}
    assert mon._remote_text(g, "RTX 3060") == "RTX 3060: 3,072 / 12,288 MiB (25 %, as 192.168.1.20:50052 reports)"
    mon.remote_info[g.node] = {"devices": [{"total_bytes": "12", "free_bytes": None}]}  # not numbers: not shown
    assert "not measured" in mon._remote_text(g, "RTX 3060")




def test_a_rig_file_with_nodes_opens_as_one_cluster_picture(qtbot, tmp_path):
    rig = tmp_path / "cluster.toml"
    rig.write_text(MAIN_AND_TWO_NODES)
    w = make_wizard(rig_path=str(rig), persist=False, measure=False)
    qtbot.addWidget(w)
    w.resize(1280, 860)
    w.show()
    st = w.state
    assert [n.name for n in st.nodes] == ["gaming-pc", "laptop"] and st.rig.name == "Main PC + gaming-pc, laptop"
    assert [pc.split("\n")[0] for pc, _ in rows(w)] == ["gaming-pc", "laptop", "this PC"]
    panel = w.page("hardware").nodes
    assert panel.rows.itemAtPosition(1, 0).widget().text().startswith('"laptop" (192.168.1.21:50052) · 1 device')
    from phoenix_gui.model import preset_model_info

    st.set_model(preset_model_info("qwen2.5-32b-instruct-q4_k_m"), None)
    st.set_split_text("30 20 15")
    w.go_to("split")
    page = w.page("split")
    assert [h.text().split(" ")[0] for h in page.group_heads] == ["gaming-pc", "laptop", "this"]
    assert set(page.net_rows) == {"192.168.1.20:50052", "192.168.1.21:50052"}
    qtbot.mouseClick(panel.rows.itemAtPosition(1, 2).widget(), Qt.LeftButton)  # Remove the laptop
    assert [n.name for n in st.nodes] == ["gaming-pc"] and st.rig.name == "Main PC + gaming-pc"
    w.go_to("split")
    assert [h.text().split(" ")[0] for h in page.group_heads] == ["gaming-pc", "this"]


def test_enter_in_the_address_field_asks_that_pc_and_stays_on_the_page(qtbot, wiz):
    wiz.go_to("hardware")
    panel = wiz.page("hardware").nodes
    address = f"127.0.0.1:{free_port_with([INFO_PORT_OFFSET])}"
    panel.address.setFocus()
    qtbot.keyClicks(panel.address, address)
    qtbot.keyClick(panel.address, Qt.Key_Return)
    qtbot.waitUntil(lambda: not panel._task.running and panel.error.isVisible(), timeout=30000)
    assert address in panel.error.text() and wiz.currentPage() is wiz.page("hardware")
