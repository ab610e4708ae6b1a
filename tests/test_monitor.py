import csv
import os

import pytest

from phoenix_gui.monitor import Monitor, NvmlSampler, ProcessSampler, RingBuffer, ThroughputSampler

from fake_nvml import FakeGpu, FakeNVML


def test_ring_buffer_keeps_the_newest_in_order():
    r = RingBuffer(4)
    for i in range(10):
        r.append(float(i), i * 10)
    t, v = r.data()
    assert list(t) == [6, 7, 8, 9] and list(v) == [60, 70, 80, 90] and len(r) == 4
    r.append(10.0, None)
    assert r.last() is None


def _nvml():
    return FakeNVML(gpus=[FakeGpu("NVIDIA GeForce GTX 1050 Ti", 4096, used_mib=310, uuid="GPU-a", util=40, power_mw=None),
                          FakeGpu("NVIDIA GeForce RTX 2080", 8192, used_mib=1000, uuid="GPU-b", util=90)])


def test_nvml_sampler_and_a_gpu_that_vanishes():
    nvml = _nvml()
    s = NvmlSampler([("GPU-a", "1050 Ti"), ("GPU-b", "2080")], nvml=nvml)
    m = Monitor([s], hz=1.0)
    m.tick()
    assert m.series["GPU-a/mem_used_mib"].last() == pytest.approx(310)
    assert m.series["GPU-b/util_pct"].last() == 90
    assert m.series["GPU-a/power_w"].last() is None  # not supported: that series stays blank
    nvml.gpus[1].lost = True
    m.tick()
    assert m.series["GPU-b/mem_used_mib"].last() is None and "stopped answering" in s.note
    assert m.series["GPU-a/mem_used_mib"].last() == pytest.approx(310)  # the others go on
    m.stop()
    assert nvml.initialized == 0


def test_no_driver_degrades_to_no_gpu_series():
    import pynvml

    s = NvmlSampler([("GPU-x", "x")], nvml=pynvml)  # the real library, no driver here
    assert not s.ok and "unavailable" in s.note
    assert s.sample()["GPU-x/mem_used_mib"] is None


def test_process_sampler_and_csv_export(tmp_path):
    m = Monitor([ProcessSampler(os.getpid()), _Counter()], hz=2.0)
    for _ in range(3):
        m.tick()
    out = m.export_csv(tmp_path / "run.csv")
    rows = list(csv.reader(open(out)))
    assert rows[0] == ["time_s", "server/rss_mib", "test/n"] and len(rows) == 4
    assert float(rows[1][1]) > 10


def test_sampler_rate_is_bounded():
    with pytest.raises(ValueError):
        Monitor([], hz=20)


def test_throughput_sampler_against_a_stopped_server():
    from phoenix_gui.backends.processes.ports import free_port
    from phoenix_gui.engines.llama_server.server import LlamaServer

    s = ThroughputSampler(LlamaServer(), "127.0.0.1", free_port())
    assert s.sample() == {"server/gen_tps": None, "server/prompt_tps": None}


class _Counter:
    n = 0

    def sample(self):
        self.n += 1
        return {"test/n": self.n}


def test_koboldcpp_tokens_per_s_drop_to_idle_after_a_request(tmp_path):
    """koboldcpp's perf API keeps the last request's speeds while idle; an idle server generates 0 tokens/s."""
    import sys
    import time
    from pathlib import Path

    from phoenix_gui.backends.processes.ports import free_port
    from phoenix_gui.backends.processes.process import ServerProcess
    from phoenix_gui.engines.koboldcpp.server import KoboldCpp

    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    port = free_port()
    fake = str(Path(__file__).with_name("fake_koboldcpp.py"))
    sp = ServerProcess([sys.executable, fake, "--model", str(model), "--host", "127.0.0.1", "--port", str(port),
                        "--singleinstance"]).start()
    b = KoboldCpp()
    try:
        end = time.monotonic() + 30
        while not b.is_ready("127.0.0.1", port):
            assert time.monotonic() < end and sp.poll() is None
            time.sleep(0.1)
        s = ThroughputSampler(b, "127.0.0.1", port)
        assert s.sample() == {"server/gen_tps": 0.0, "server/prompt_tps": 0.0}
        r = b.generate("127.0.0.1", port, "hello " * 50, 32, 2048)
        got = s.sample()
        assert got["server/gen_tps"] == pytest.approx(r.gen_tokens_per_s) and got["server/gen_tps"] > 0
        assert s.sample() == {"server/gen_tps": 0.0, "server/prompt_tps": 0.0}  # idle again: not the old speed
    finally:
        sp.stop(5, graceful=lambda: b.graceful_stop("127.0.0.1", port))


def test_a_koboldcpp_speed_too_fast_to_time_is_unknown_not_zero():
    """koboldcpp divides by whole milliseconds per token: 0 tokens/s for a request that made tokens means "untimed"."""
    from phoenix_gui.engines.koboldcpp.server import measured_speed as _measured_speed

    assert _measured_speed(0, 8) is None and _measured_speed(0.0, 1) is None
    assert _measured_speed(0, 0) == 0.0  # nothing generated yet: a real zero
    assert _measured_speed(12.5, 8) == 12.5
    assert _measured_speed("fast", 8) is None and _measured_speed(None, 8) is None and _measured_speed(True, 8) is None
