"""Split-page preview latency: one slider move -> new plan -> every bar and label repainted.

    QT_QPA_PLATFORM=offscreen python benchmarks/bench_preview.py

Target (issue #3): under 16 ms per change (one frame at 60 Hz). Measures the synchronous path a
drag takes: the slider's valueChanged, the planner, the page refresh and a full repaint of the
page (all bars, labels and sliders), on the demo rig with the Qwen2.5-32B preset.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from phoenix_gui.ui.app import make_app, make_wizard  # noqa: E402


def main() -> int:
    app = make_app()
    w = make_wizard(demo=True, persist=False, measure=False)
    w.resize(1280, 860)
    w.show()
    w.state.run_auto_fit("fastest")
    w.go_to("split")
    app.processEvents()
    page = w.page("split")
    rows = [page.rows[gi].slider for gi in w.state.devices]  # each moves in whole layers
    results = {}
    cases = []
    for label, action in (
        ("drag a card's layers slider", lambda k: rows[k % len(rows)].setValue(3 + (k * 7) % 20)),
        ("change GPU layers", lambda k: page.layers.setValue(30 + k % 30)),
        ("change context (KV recomputed)", lambda k: w.state.set_context(2048 + 256 * (k % 40))),
    ):
        cases.append((label, action))
    for label, action in cases:
        for forced in (False, True):
            samples = []
            for k in range(200):
                t = time.perf_counter()
                action(k)
                if forced:
                    page.repaint()  # worst case: repaint the whole page, not only what changed
                app.processEvents()  # the event loop paints what changed, as during a real drag
                samples.append((time.perf_counter() - t) * 1000)
            results[label + (" (full repaint)" if forced else "")] = samples
    print(f"{'preview update (ms)':44s} {'median':>8s} {'p90':>8s} {'max':>8s} {'target':>7s}  met")
    for label, s in results.items():
        s.sort()
        med, p90 = statistics.median(s), s[int(0.9 * (len(s) - 1))]
        print(f"{label:44s} {med:8.2f} {p90:8.2f} {s[-1]:8.2f} {16:7d}  {'yes' if p90 < 16 else 'NO'}")
    w.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
