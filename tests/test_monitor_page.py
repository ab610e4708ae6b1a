"""Launch from the wizard and watch the monitor page, with the real llama-server behind it."""

import psutil
import pytest
from PySide6.QtCore import Qt

from phoenix_gui.engines.request import LaunchCommand
from phoenix_gui.backends.processes.ports import free_port
from phoenix_gui.model import write_skeleton
from phoenix_gui.ui.app import make_wizard

from fake_nvml import FakeGpu, FakeNVML


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_skeleton("tiny-llama-f16", tmp_path_factory.mktemp("m") / "tiny.gguf", random_data=True)


def cpu_rig(tmp_path):
    p = tmp_path / "cpu.toml"
    p.write_text('name = "this PC"\n[system]\nram_gib = 16\nram_bandwidth_gbs = 20\n')
    return str(p)


def test_launch_monitor_benchmark_and_stop(qtbot, tiny, tmp_path):
    w = make_wizard(rig_path=cpu_rig(tmp_path), model_path=str(tiny), persist=False, measure=False)
    qtbot.addWidget(w)
    w.resize(1280, 860)
    w.show()
    st = w.state
    st.set_backend("llama-server", None)
    st.set_port(free_port())
    st.set_context(2048)
    w.go_to("launch")
    page = w.page("launch")
    page.refresh()
    assert page.launch.isEnabled(), page.launch.toolTip()
    shown = page.cmd.toPlainText()
    mon = w.page("monitor")
    mon.log.appendPlainText("Traceback (most recent call last): the previous run")
    qtbot.mouseClick(page.launch, Qt.LeftButton)
    qtbot.waitUntil(lambda: w.session.outcome is not None and w.session.outcome.ok, timeout=60000)
    assert w.currentPage() is mon
    p = w.session.launch.process
    assert shown == LaunchCommand(p.argv, p.env).shell_line()  # the command shown is the one that runs
    assert "-lv" in p.argv and "previous run" not in mon.log.toPlainText()
    assert w.session.running and not mon.warn.isVisibleTo(mon)
    assert "Ready in" in mon.status.text()
    assert mon.table.rowCount() == 1 and mon.table.item(0, 2).text() != "—"
    pid = w.session.launch.process.pid
    with qtbot.waitSignal(w.session.benchmarked, timeout=60000):
        qtbot.mouseClick(mon.bench_btn, Qt.LeftButton)
    assert "generation 128 tokens" in mon.bench.text()
    qtbot.waitUntil(lambda: "server/gen_tps" in w.session.monitor.series and
                    len(w.session.monitor.series["server/gen_tps"]) > 0, timeout=10000)
    mon.update_plots()
    assert "server/gen_tps" in mon.curves and "listening" in mon.log.toPlainText()
    csv = tmp_path / "run.csv"
    w.session.monitor.export_csv(csv)
    assert "server/rss_mib" in csv.read_text().splitlines()[0]
    w.close()  # closing Phoenix stops the server
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_gpu_graphs_with_nvml_and_a_vanishing_gpu(qtbot, tiny, tmp_path):
    """A GPU rig whose NVML is simulated; the server runs on the CPU (no CUDA here)."""
    from phoenix_gui.hardware import demo_rig_path

    nvml = FakeNVML(gpus=[FakeGpu("NVIDIA GeForce GTX 1050 Ti", 4096, used_mib=310, uuid=None or "x", util=30)])
    w = make_wizard(rig_path=str(demo_rig_path()), model_path=str(tiny), persist=False, measure=False)
    qtbot.addWidget(w)
    st = w.state
    st.set_rig(st.rig)  # it opened on the fastest fit (issue 21): every card back, in the rig's order
    for g, fg in zip(st.rig.gpus, [nvml.gpus[0]]):
        fg.uuid = g.uuid
    w.session.nvml = nvml
    # koboldcpp's stand-in serves the API; the plan uses the simulated GPUs
    from pathlib import Path

    st.set_executable(str(Path(__file__).with_name("fake_koboldcpp.py")))
    st.set_port(free_port())
    assert w.session.start() is None
    qtbot.waitUntil(lambda: w.session.outcome is not None and w.session.outcome.ok, timeout=60000)
    m = w.session.monitor
    m.tick()
    uuid = st.rig.gpus[0].uuid
    assert m.series[f"{uuid}/mem_used_mib"].last() == pytest.approx(310)
    nvml.gpus[0].lost = True
    m.tick()
    assert m.series[f"{uuid}/mem_used_mib"].last() is None
    mon = w.page("monitor")
    mon.update_plots()  # a blank series draws nothing, and nothing breaks
    # the simulated rig's GPUs are not in this computer: said on the monitor page
    assert mon.warn.isVisibleTo(mon) and "simulated rig" in mon.warn.text()
    with qtbot.waitSignal(w.session.benchmarked, timeout=60000):
        w.session.benchmark(64, 16)
    m.tick()
    m.tick()
    assert m.series["server/gen_tps"].last() == 0  # idle after the benchmark, not its speed
    w.session.stop()
    assert not w.session.running


def test_monitor_table_headers_fit(qtbot, tmp_path):
    w = make_wizard(rig_path=cpu_rig(tmp_path), persist=False, measure=False)
    qtbot.addWidget(w)
    w.show()
    head = w.page("monitor").table.horizontalHeader()
    for c in range(head.count()):
        assert head.sectionSize(c) >= head.sectionSizeHint(c), c


def _oom_wizard(qtbot, tiny, monkeypatch, mode: str):
    """The demo rig's wizard on the koboldcpp stand-in, which runs out of memory on any GPU layer
    ("segv": dies by signal, "clean": exits with CUDA's message), split 1:1:1."""
    from pathlib import Path

    from phoenix_gui.hardware import demo_rig_path

    monkeypatch.setenv("FAKE_KCPP_MAX_LAYERS", "0")
    monkeypatch.setenv("FAKE_KCPP_OOM_MODE", mode)
    w = make_wizard(rig_path=str(demo_rig_path()), model_path=str(tiny), persist=False, measure=False)
    qtbot.addWidget(w)
    w.state.set_executable(str(Path(__file__).with_name("fake_koboldcpp.py")))
    w.state.set_port(free_port())
    w.state.set_rig(w.state.rig)  # it opened on the fastest fit (issue 21): every card back, in the rig's order
    w.state.set_split_text("1 1 1")
    return w


def test_oom_in_the_wizard_offers_a_smaller_retry(qtbot, tiny, tmp_path, monkeypatch):
    w = _oom_wizard(qtbot, tiny, monkeypatch, "segv")
    st = w.state
    with qtbot.waitSignal(w.session.failed, timeout=60000) as blocker:
        w.session.start(auto_retry=False)
    f = blocker.args[0]
    assert f.is_oom and "GTX 1050 Ti" in f.message
    mon = w.page("monitor")
    assert mon.retry_btn.isVisibleTo(mon) and mon.error.text() == f.message
    before = st.plan().gpus[0].layers
    qtbot.mouseClick(mon.retry_btn, Qt.LeftButton)
    qtbot.waitUntil(lambda: w.session.outcome is not None and w.session.outcome.ok, timeout=60000)
    assert st.plan().gpus[0].layers < before
    w.session.stop()


def test_auto_retry_in_the_wizard_shows_the_smaller_plan(qtbot, tiny, tmp_path, monkeypatch):
    from phoenix_gui.backends.lifecycle import State

    w = _oom_wizard(qtbot, tiny, monkeypatch, "clean")
    st = w.state
    assert st.plan().gpus[0].layers == 1
    seen = []
    w.session.transition.connect(lambda old, new, info: seen.append(new))
    assert w.session.start(auto_retry=True, attempts=3) is None
    qtbot.waitUntil(lambda: w.session.outcome is not None, timeout=60000)
    try:
        assert w.session.outcome.ok and State.RETRYING in seen
        assert st.plan().gpus[0].layers == 0  # the sliders show the plan that runs
        assert st.plan().gpulayers == w.session.launch.plan.gpulayers
    finally:
        w.session.stop()
    assert not w.session.running and seen[-1] is State.STOPPED
