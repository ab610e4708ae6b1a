"""Issue #21 (wizard v3), the items left after the first pass: the tune's result on the split page (9), a dead
other PC (12), a .kcpps's engine options kept (13), the RPC host's CPU threads in the headline (16)."""

from PySide6.QtCore import Qt

from phoenix_gui.backends.tune import Tuner, TuneRun
from phoenix_gui.planner import PlanSettings


# --- 9: after the tune ---

def test_after_use_the_winner_the_split_page_shows_what_the_tune_measured(qtbot, skeletons, monkeypatch):
    from test_tune_panel import wizard

    w, st, page = wizard(qtbot, skeletons, monkeypatch)
    w.resize(1024, 700)
    w.show()
    w.go_to("split")
    qtbot.mouseClick(page.tune, Qt.LeftButton)
    panel = page.tune_panel
    qtbot.waitUntil(lambda: panel.tuner is not None and panel.tuner.state != "running", timeout=120000)
    t = panel.tuner
    assert t.state == "done", t.message
    # every run is a row, and every row can be seen without scrolling the table
    assert panel.table.rowCount() == len(t.runs)
    view = panel.table.viewport().rect()
    for i in range(len(t.runs)):
        rect = panel.table.visualRect(panel.table.model().index(i, 1))
        assert view.contains(rect), (i, rect, view)
    qtbot.mouseClick(panel.use_btn, Qt.LeftButton)
    same = [r.measured_tps for r in t.runs if r.outcome == "ok" and r.model is None
            and t._same(r.settings, t.winner.settings)]
    measured = sum(same) / len(same)
    # the headline is the tune's measurement of this very plan, and says so
    assert page.speed.text() == f"{measured:.1f} tokens/s"
    assert "measured by the tune" in page.compare.text()
    st.set_layers(2, 20)  # another plan: the prediction again
    assert page.speed.text() == f"{st.plan().predicted_tokens_per_s:.1f} tokens/s"
    assert "measured by the tune" not in page.compare.text()


def _tuner_with(winner_tps: float, other_tps: float, noise: float) -> Tuner:
    t = Tuner.__new__(Tuner)
    s = PlanSettings()
    t.noise = noise
    t.runs = [TuneRun("predicted best", s, 10.0, measured_tps=other_tps, outcome="ok"),
              TuneRun("calibrated winner", s.with_(gpulayers=3), 10.0, measured_tps=winner_tps, outcome="ok")]
    t.winner = t.runs[1]
    return t


def test_a_speedup_inside_the_noise_is_called_within_noise():
    t = _tuner_with(10.5, 10.0, 0.24)
    (line,) = t.speedups()
    assert "within noise" in line and "24" in line
    t = _tuner_with(15.0, 10.0, 0.01)
    (line,) = t.speedups()
    assert line.startswith("1.50 times as fast as the predicted best") and "within noise" not in line


# --- 16: a known engine limit in the headline ---

def test_a_shared_cpu_over_rpc_makes_the_headline_a_band_down_to_the_real_speed(qtbot, tmp_path, capsys):
    from cluster_rigs import MAIN_AND_TWO_NODES

    from phoenix_gui.model import preset_model_info
    from phoenix_gui.ui.app import make_wizard

    rig = tmp_path / "cluster.toml"
    rig.write_text(MAIN_AND_TWO_NODES)
    w = make_wizard(rig_path=str(rig), persist=False, measure=False)
    qtbot.addWidget(w)
    w.show()
    st = w.state
    st.set_model(preset_model_info("qwen2.5-7b-instruct-q4_k_m"), None)
    for i in range(len(st.rig.gpus)):
        st.set_included(i, True)
    laptop = next(i for i, g in enumerate(st.rig.gpus) if g.node == "192.168.1.21:50052")
    st.set_layers(laptop, 4)  # a few layers on the laptop's CPU, shared by koboldcpp's RPC host (4 threads)
    w.go_to("split")
    plan = st.plan()
    assert plan.speed_caveat.startswith("unreliable: the engine's RPC host computes")
    lo, hi = plan.speed_band
    # a run that waits ~0.5 s a token on the host's threads (the real run: ~2 tokens/s) is inside the band
    assert lo <= 1 / (1 / plan.predicted_tokens_per_s + 0.5) and hi >= plan.predicted_tokens_per_s * 0.9
    page = w.page("split")
    assert page.speed.text() == f"{lo:.1f}–{hi:.1f} tokens/s"
    assert "Unreliable: the engine's RPC host" in page.compare.text()
    st.set_layers(laptop, 0)  # nothing on the shared CPU: a plain prediction again
    assert not st.plan().speed_caveat and page.speed.text() == f"{st.plan().predicted_tokens_per_s:.1f} tokens/s"


# --- 13: a .kcpps's engine options are kept, and threads can be set ---

def test_a_kcpps_import_is_confirmed_and_its_engine_options_are_kept(wiz, qtbot, tmp_path):
    import json

    from phoenix_gui.backends.commandline import launch_command, request_for
    from phoenix_gui.engines.koboldcpp.options import kcpps_config
    from phoenix_gui.config import UserSettings

    cfg = tmp_path / "mine.kcpps"
    cfg.write_text(json.dumps({"contextsize": 2048, "batchsize": 256, "gpulayers": 20, "threads": 8, "blasthreads": 6,
                               "usemlock": True, "quiet": True, "highpriority": False, "usemmap": True}))
    st = wiz.state
    wiz.go_to("model")
    page = wiz.page("model")
    page.import_kcpps(str(cfg))
    info = page.info.text()
    assert info.startswith("Imported mine.kcpps: context 2,048, batch 256, KV cache f16, flash attention on, 20 layers")
    assert "Kept from your config (mine.kcpps): --threads 8, --usemmap, --blasthreads 6, --quiet, --usemlock." in info
    argv = st.command().argv
    for flag in (["--threads", "8"], ["--blasthreads", "6"], ["--usemlock"], ["--quiet"], ["--usemmap"]):
        assert any(argv[i:i + len(flag)] == flag for i in range(len(argv))), flag
    assert "--highpriority" not in argv
    exported = kcpps_config(request_for(st.plan(), st.rig, "m.gguf"))
    assert (exported["threads"], exported["blasthreads"], exported["usemlock"], exported["quiet"],
            exported["usemmap"]) == (8, 6, True, True, True)
    # threads are set on the Context page, and the rest stays kept
    wiz.go_to("context")
    ctx = wiz.page("context")
    assert ctx.threads.value() == 8 and "--blasthreads 6" in ctx.kept.text()
    ctx.threads.setValue(3)
    assert st.threads == 3 and st.command().argv[st.command().argv.index("--threads") + 1] == "3"
    assert "--threads" not in st.kept_text() and "--usemlock" in st.kept_text()
    st.set_backend("llama-server")
    argv = launch_command(st.plan(), st.rig, "m.gguf").argv
    assert argv[argv.index("-t") + 1] == "3" and argv[argv.index("-tb") + 1] == "6" and "--mlock" in argv
    # saved and read back
    us = st.to_user_settings(UserSettings())
    assert (us.threads, us.use_mmap, us.engine_options) == (3, True, {"blasthreads": 6, "quiet": True, "usemlock": True})
    st.set_threads(None)
    st.apply_user_settings(us)
    assert st.threads == 3 and dict(st.engine_options) == {"blasthreads": 6, "quiet": True, "usemlock": True}
    ctx.threads.setValue(0)  # the engine's choice
    assert st.threads is None and "-t" not in st.command().argv


# --- 12: a dead other PC is shown down on the Hardware and Monitor pages ---

def test_a_pc_that_stops_answering_is_shown_down_on_hardware_and_monitor(wiz, qtbot):
    import subprocess
    import sys
    from pathlib import Path

    from test_wizard_cluster import a_node

    from phoenix_gui.backends.nodes import INFO_PORT_OFFSET
    from phoenix_gui.backends.processes.ports import free_port_with

    port = free_port_with([INFO_PORT_OFFSET])
    address = f"127.0.0.1:{port}"
    server = [Path(__file__).with_name("fake_rpc_server.py")]

    def start():
        p = subprocess.Popen([sys.executable, str(server[0]), "-H", "127.0.0.1", "-p", str(port)],
                             stdout=subprocess.PIPE, text=True)
        assert p.stdout.readline().startswith("Starting RPC server")
        return p

    proc = start()
    try:
        st = wiz.state
        st.add_node(a_node(st.rig, address=address))
        hw = wiz.page("hardware")
        panel = hw.nodes
        panel.health.setInterval(100)
        wiz.go_to("hardware")
        qtbot.wait(400)
        assert address not in st.down
        proc.kill()
        proc.wait()
        qtbot.waitUntil(lambda: address in st.down, timeout=10000)
        assert "stopped answering" in st.down[address]
        row = next(r for r, gi in enumerate(st.order) if st.rig.gpus[gi].node == address)
        assert hw.table.item(row, 1).text().endswith("· DOWN")
        from PySide6.QtWidgets import QLabel

        assert any(f"· DOWN: {address} stopped answering" in w.text() for w in panel.findChildren(QLabel))
        mon = wiz.page("monitor")
        g = next(g for g in st.rig.gpus if g.node == address)
        mon.remote_info[address] = {"devices": [{"total_bytes": 12 << 30, "free_bytes": 9 << 30}]}  # its last reading
        text = mon._remote_text(g, "RTX 3060")
        assert text.startswith("RTX 3060: DOWN (") and "MiB" not in text
        proc = start()  # back: shown healthy again
        qtbot.waitUntil(lambda: address not in st.down, timeout=10000)
        assert not hw.table.item(row, 1).text().endswith("· DOWN")
    finally:
        proc.kill()
        proc.wait()
