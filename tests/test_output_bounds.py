"""A server's output cannot exhaust Phoenix: 100 MB from a real child process, with and without
newlines, is read in bounded time with bounded memory, the log file rotates at its cap, the lines
waiting for the window are bounded, and the last lines are still there for diagnosis."""

import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from phoenix_gui.backends.processes import output, process
from phoenix_gui.backends.lifecycle import PENDING_LINES, LaunchMachine, State, _PendingLines
from phoenix_gui.backends.processes.ports import free_port
from phoenix_gui.backends.processes.output import LineSplitter, RotatingLog
from phoenix_gui.backends.processes.process import ServerProcess
from phoenix_gui.hardware import demo_rig_path, load_rig
from phoenix_gui.model import read_model, write_skeleton
from phoenix_gui.planner import PlanSettings, make_plan
from machine_helpers import drive

FAKE = str(Path(__file__).with_name("fake_koboldcpp.py"))
MB = 1 << 20

FLOOD = """import sys
mode, total = sys.argv[1], int(sys.argv[2])
unit = {"newlines": b"x" * 99 + b"\\n", "none": b"x" * 100, "cr": b"." * 99 + b"\\r", "crlf": b"y" * 98 + b"\\r\\n"}[mode]
block = unit * (1048576 // len(unit))
out = sys.stdout.buffer
for _ in range(total // len(block)):
    out.write(block)
out.write(b"\\nLAST LINE 1\\nLAST LINE 2\\n")
out.flush()
"""


# --- splitting, on real byte streams cut at every awkward place ---

def split_all(chunks, max_chars=output.MAX_LINE_CHARS):
    s = LineSplitter(max_chars)
    out = []
    for c in chunks:
        out += s.feed(c)
    return out + s.close()


def test_each_line_end_counts_once_even_when_cut_between_reads():
    data = "a\r\nb\rc\nd\r\n\r\ne ü 中\r".encode()
    want = ["a", "b", "c", "d", "", "e ü 中"]
    assert split_all([data]) == want
    for i in range(len(data) + 1):  # every cut point, including inside \r\n and inside UTF-8
        assert split_all([data[:i], data[i:]]) == want, i
    assert split_all([bytes([b]) for b in data]) == want


def test_koboldcpp_progress_dots_become_lines():
    assert split_all([b".\r..\r...\r", b"Load Text Model OK: True\n"]) == [".", "..", "...", "Load Text Model OK: True"]


def test_a_line_without_end_is_cut_into_pieces_and_the_tail_stays_small():
    s = LineSplitter(1000)
    got = []
    for _ in range(100):
        got += s.feed(b"z" * 777)
        assert len(s._tail) <= 1000  # only the unfinished tail is kept
    got += s.close()
    assert "".join(got) == "z" * 77700 and all(len(x) <= 1000 for x in got)


def test_the_log_rotates_at_its_cap_and_keeps_one_older_copy(tmp_path):
    log = RotatingLog(tmp_path / "s.log", "$ server --flag\n", max_bytes=10_000)
    for i in range(5000):
        log.write_lines([f"line {i}"])
    log.close()
    cur, old = tmp_path / "s.log", tmp_path / "s.log.1"
    assert cur.stat().st_size <= 10_000 and old.stat().st_size <= 10_000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.log", "s.log.1"]
    text = cur.read_text()
    assert text.startswith("$ server --flag\n(continued: the output before this is in s.log.1)")
    assert text.endswith("line 4999\n") and log.rotations > 1


def test_pending_lines_are_bounded_and_say_what_was_skipped():
    q = _PendingLines(limit=100)
    for i in range(1000):
        q.put(str(i))
    assert len(q) == 100
    batch = q.take(1000)
    assert batch[0] == "[phoenix: 900 lines of server output skipped here; the log file has them]"
    assert batch[1:] == [str(i) for i in range(900, 1000)]
    q.put("x")
    assert q.take(10) == ["x"]


# --- 100 MB from a real process ---

@pytest.mark.parametrize("mode", ["none", "newlines", "cr", "crlf"])
def test_a_100_mb_flood_is_read_in_bounded_time_and_memory(tmp_path, mode):
    script = tmp_path / "flood.py"
    script.write_text(FLOOD)
    total = 100 * MB
    me = psutil.Process()
    rss0, peak = me.memory_info().rss, [0]
    done = threading.Event()

    def watch():
        while not done.wait(0.05):
            peak[0] = max(peak[0], me.memory_info().rss)

    threading.Thread(target=watch, daemon=True).start()
    pending = _PendingLines()
    cpu0, t0 = sum(me.cpu_times()[:2]), time.monotonic()
    sp = ServerProcess([sys.executable, str(script), mode, str(total)], log_path=tmp_path / "logs" / "flood.log",
                       on_line=pending.put).start()
    try:
        sp.proc.wait(120)  # old code: quadratic re-splitting never finished 100 MB without newlines
    finally:
        sp.stop(timeout=2)
    sp.wait_output(30)
    secs, cpu = time.monotonic() - t0, sum(me.cpu_times()[:2]) - cpu0
    done.set()
    grew = (max(peak[0], me.memory_info().rss) - rss0) / MB
    print(f"\n{mode:>8}: {sp.bytes_read / MB:.0f} MB in {secs:.1f} s = {sp.bytes_read / MB / secs:.0f} MB/s read, "
          f"Phoenix CPU {cpu:.1f} s ({cpu / (sp.bytes_read / MB) * 1000:.0f} ms per MB), RSS grew {grew:.0f} MB")
    assert sp.bytes_read >= total - MB  # everything was read (the last partial block is not written)
    assert secs < 90 and grew < 150
    lines = list(sp.lines)
    assert lines[-2:] == ["LAST LINE 1", "LAST LINE 2"]  # the end is there for diagnosis
    assert len(lines) <= process.TAIL_LINES and sum(map(len, lines)) <= process.TAIL_CHARS + output.MAX_LINE_CHARS
    assert max(map(len, lines)) <= output.MAX_LINE_CHARS
    log, older = tmp_path / "logs" / "flood.log", tmp_path / "logs" / "flood.log.1"
    assert log.stat().st_size <= output.LOG_MAX_BYTES and older.stat().st_size <= output.LOG_MAX_BYTES
    assert sorted(p.name for p in log.parent.iterdir()) == ["flood.log", "flood.log.1"]
    assert log.read_bytes().endswith(b"LAST LINE 1\nLAST LINE 2\n")
    assert len(pending) <= PENDING_LINES
    batch = pending.take(PENDING_LINES)
    assert "skipped" in batch[0] and batch[-1] == "LAST LINE 2"


def test_a_chatty_koboldcpp_gets_ready_with_bounded_lines_and_log(tmp_path, monkeypatch):
    """The whole path: the launch machine, koboldcpp's stand-in printing 30 MB after loading."""
    monkeypatch.setenv("FAKE_KCPP_CHATTER_MB", "30")
    model_path = write_skeleton("tiny-llama-f16", tmp_path / "tiny.gguf", random_data=True)
    rig, model = load_rig(demo_rig_path()), read_model(model_path)
    plan = make_plan(model, rig, PlanSettings(context=2048, port=free_port(), tensor_split=(1, 1, 1)))
    m = LaunchMachine(plan, rig, model, str(model_path), exe=FAKE, log_dir=tmp_path / "logs")
    got = []
    m.on_lines(got.extend)
    m.start()
    try:
        drive(m, timeout=120)
        assert m.state is State.READY, m.failure
        sp = m.launch.process
        end = time.monotonic() + 60
        while "chatter done" not in list(sp.lines)[-3:] and time.monotonic() < end:
            time.sleep(0.1)
        m.poll()
    finally:
        m.stop()
    log = m.launch.log_path
    assert log.stat().st_size <= output.LOG_MAX_BYTES
    assert Path(str(log) + ".1").exists()  # 30 MB > the 20 MB cap: rotated once
    assert any("skipped here" in line for line in got) and "chatter done" in got
    assert len(got) < 30 * MB // 87  # fewer than were printed: the window was not flooded
