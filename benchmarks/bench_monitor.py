"""Monitor overhead: CPU time Phoenix spends sampling (NVML, process memory, the server's
throughput endpoint) and redrawing the graphs, against the real llama-server on a tiny model.

    QT_QPA_PLATFORM=offscreen python benchmarks/bench_monitor.py [seconds]

Target (issue #4): under 1 % of one core at 1 Hz.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from phoenix_gui.backends.lifecycle import LaunchMachine, State  # noqa: E402
from phoenix_gui.backends.processes.ports import free_port  # noqa: E402
from phoenix_gui.hardware.rig import GIB, Rig, SystemInfo  # noqa: E402
from phoenix_gui.model import read_model, write_skeleton  # noqa: E402
from phoenix_gui.monitor import Monitor, NvmlSampler, ProcessSampler, ThroughputSampler  # noqa: E402
from phoenix_gui.planner import PlanSettings, make_plan  # noqa: E402


def cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def main() -> int:
    secs = float(sys.argv[1]) if len(sys.argv) > 1 else 20.0
    with tempfile.TemporaryDirectory() as d:
        path = write_skeleton("tiny-llama-f16", Path(d) / "tiny.gguf", random_data=True)
        model = read_model(path)
        rig = Rig("this PC", [], SystemInfo(16 * GIB, 12 * GIB, 2, 2, 20.0, "table"))
        plan = make_plan(model, rig, PlanSettings(context=2048, backend="llama-server", port=free_port()))
        machine = LaunchMachine(plan, rig, model, str(path), log_dir=Path(d))
        machine.start()
        end = time.monotonic() + 120
        while machine.state not in (State.READY, State.FAILED, State.STOPPED) and time.monotonic() < end:
            machine.poll()
            time.sleep(0.05)
        out, la = machine.outcome, machine.launch
        assert out is not None and out.ok, machine.failure
        print(f"llama-server ready in {out.ready_s:.2f} s")
        rows = []
        try:
            t0, c0 = time.monotonic(), cpu_seconds()
            time.sleep(secs / 2)
            idle = (cpu_seconds() - c0) / (time.monotonic() - t0)
            for hz in (1.0, 10.0):
                samplers = [NvmlSampler([("GPU-none", "none")]), ProcessSampler(la.process.pid),
                            ThroughputSampler(la.backend, la.host, la.port)]
                m = Monitor(samplers, hz).start()
                t0, c0 = time.monotonic(), cpu_seconds()
                time.sleep(secs)
                used = (cpu_seconds() - c0) / (time.monotonic() - t0) - idle
                m.stop()
                rows.append((f"sampling at {hz:g} Hz (NVML, RSS, /metrics)", used * 100, 1.0 if hz == 1 else None))
            # drawing: the monitor page redraws once per sample
            from phoenix_gui.ui.app import make_app
            from phoenix_gui.ui.pages.monitor import MonitorPage
            from phoenix_gui.ui.session import ServerSession
            from phoenix_gui.session import WizardState

            app = make_app()
            st = WizardState(rig)
            st.set_model(model, str(path))
            sess = ServerSession(st)
            sess.machine = machine
            sess.monitor = Monitor([ProcessSampler(la.process.pid), ThroughputSampler(la.backend, la.host, la.port)], 1.0)
            for _ in range(60):
                sess.monitor.tick()
            page = MonitorPage(st, sess)
            page.resize(1200, 700)
            page.show()
            app.processEvents()
            c0 = cpu_seconds()
            n = 30
            for _ in range(n):
                page.update_plots()
                app.processEvents()  # the event loop repaints what changed, as in the app
            per_draw = (cpu_seconds() - c0) / n
            rows.append(("one graph redraw (60 s window), per second", per_draw * 100, None))
        finally:
            machine.stop()
    print(f"{'monitor overhead':48s} {'% of one core':>14s} {'target':>8s}")
    for name, pct, target in rows:
        print(f"{name:48s} {pct:13.2f}% {('< ' + str(target) + '%') if target else '':>8s}")
    total = rows[0][1] + rows[2][1]
    print(f"{'total at 1 Hz (sampling + drawing)':48s} {total:13.2f}% {'< 1.0%':>8s}  {'met' if total < 1 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
