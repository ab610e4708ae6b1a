import pynvml
import pytest

from phoenix_gui.hardware import GIB, MIB, RigFileError, demo_rig_path, detect_gpus, detect_rig, list_rigs, load_rig
from phoenix_gui.hardware.specs import architecture_for, find_spec

from fake_nvml import FakeGpu, FakeNVML

SEED = [
    FakeGpu("NVIDIA GeForce GTX 1060 6GB", 6144, bus_id="00000000:03:00.0", uuid="GPU-c", cc=(6, 1), bus_width=192, mem_clock_mhz=4004),
    FakeGpu("NVIDIA GeForce GTX 1050 Ti", 4096, used_mib=310, bus_id="00000000:01:00.0", uuid="GPU-a", cc=(6, 1),
            bus_width=128, mem_clock_mhz=3504, display=True),
    FakeGpu("NVIDIA GeForce RTX 2080", 8192, bus_id="00000000:02:00.0", uuid="GPU-b", cc=(7, 5), pcie_width=8),
]


def test_detects_three_mismatched_gpus_in_pci_order():
    nvml = FakeNVML(gpus=list(SEED))
    gpus, note = detect_gpus(nvml)
    assert note == ""
    assert [g.uuid for g in gpus] == ["GPU-a", "GPU-b", "GPU-c"]
    a, b, c = gpus
    assert a.name == "NVIDIA GeForce GTX 1050 Ti" and a.display_attached and a.architecture == "Pascal"
    assert a.total_bytes == 4096 * MIB and a.used_bytes == 310 * MIB and a.free_bytes == (4096 - 310) * MIB
    assert b.architecture == "Turing" and b.compute_capability == (7, 5) and b.pcie_width == 8
    # bandwidth: from the spec table where the card is known
    assert a.bandwidth_gbs == pytest.approx(112.1) and a.bandwidth_source == "spec table"
    assert c.bandwidth_gbs == pytest.approx(192.2)
    assert a.driver_version == "550.144.03" and a.cuda_driver_version == "12.4"
    assert nvml.initialized == 0  # shut down again


def test_unknown_card_gets_bandwidth_from_bus_width_and_clock():
    nvml = FakeNVML(gpus=[FakeGpu("NVIDIA Mystery Accelerator X", 16384, cc=(8, 9), bus_width=256, mem_clock_mhz=10501)])
    (g,), _ = detect_gpus(nvml)
    assert g.bandwidth_source == "nvml"
    assert g.bandwidth_gbs == pytest.approx(256 / 8 * 10501 * 2 / 1000, rel=1e-3)
    assert g.architecture == "Ada Lovelace"


def test_memory_info_falls_back_to_v1_on_old_drivers():
    nvml = FakeNVML(gpus=[FakeGpu("NVIDIA GeForce RTX 2080", 8192, used_mib=1000, no_v2=True)])
    (g,), _ = detect_gpus(nvml)
    assert g.free_bytes == 7192 * MIB


def test_real_pynvml_without_driver_gives_zero_gpus_and_a_reason():
    # This machine has no NVIDIA driver: the real library raises NVML_ERROR_LIBRARY_NOT_FOUND.
    gpus, note = detect_gpus(pynvml)
    assert gpus == []
    assert "No NVIDIA driver" in note


@pytest.mark.parametrize("code,words", [
    (pynvml.NVML_ERROR_DRIVER_NOT_LOADED, "not loaded"),
    (pynvml.NVML_ERROR_NO_PERMISSION, "permission"),
    (pynvml.NVML_ERROR_UNKNOWN, "could not be queried"),
])
def test_init_errors_become_one_sentence(code, words):
    gpus, note = detect_gpus(FakeNVML(init_error=code))
    assert gpus == [] and words in note and "\n" not in note


def test_a_lost_gpu_is_skipped_and_named():
    cards = [FakeGpu(**{**SEED[1].__dict__}), FakeGpu(**{**SEED[2].__dict__, "lost": True})]
    gpus, note = detect_gpus(FakeNVML(gpus=cards))
    assert [g.uuid for g in gpus] == ["GPU-a"]
    assert "GPU 1" in note


def test_detect_rig_on_this_machine_has_ram_and_cores():
    rig = detect_rig(measure_bandwidth=False)
    assert rig.system.ram_total_bytes > 1 * GIB
    assert rig.system.physical_cores >= 1
    assert rig.gpus == [] and rig.gpu_note


def test_ram_bandwidth_is_measured_once_and_cached(tmp_path, monkeypatch):
    from phoenix_gui.hardware import system

    monkeypatch.setattr(system, "_cache_file", lambda: tmp_path / "bw.json")
    bw, src = system.ram_bandwidth()
    assert src == "measured" and bw > 0.5

    def must_not_measure(*a, **k):
        raise AssertionError("measured again despite the cache")

    monkeypatch.setattr(system, "measure_ram_bandwidth", must_not_measure)
    assert system.ram_bandwidth() == (bw, "measured")


def test_ram_bandwidth_falls_back_to_the_table(tmp_path, monkeypatch):
    from phoenix_gui.hardware import system

    monkeypatch.setattr(system, "_cache_file", lambda: tmp_path / "none" / "bw.json")

    def broken(*a, **k):
        raise MemoryError

    monkeypatch.setattr(system, "measure_ram_bandwidth", broken)
    assert system.ram_bandwidth() == (system.FALLBACK_BANDWIDTH_GBS, "table")


def test_shipped_rigs_load():
    rigs = [load_rig(p) for p in list_rigs()]
    assert len(rigs) >= 4
    seed = load_rig(demo_rig_path())
    assert [g.short_name for g in seed.gpus] == ["GTX 1050 Ti", "RTX 2080", "GTX 1060 6GB"]
    assert sum(g.display_attached for g in seed.gpus) == 1
    assert seed.system.ram_total_bytes == 64 * GIB
    for r in rigs:
        assert r.simulated and all(g.bandwidth_gbs > 0 for g in r.gpus)


@pytest.mark.parametrize("text,words", [
    ("this is = not toml [", "not valid TOML"),
    ("[system]\nram_gib = 8\n[[gpu]]\nname = 'Mystery'\nvram_mib = 100\n", "spec table"),
    ("[[gpu]]\nname = 'NVIDIA GeForce RTX 2080'\nvram_mib = 8192\n", "needs ram_gib"),
])
def test_bad_rig_files_give_one_sentence(tmp_path, text, words):
    p = tmp_path / "rig.toml"
    p.write_text(text)
    with pytest.raises(RigFileError, match=words):
        load_rig(p)


def test_missing_rig_file():
    with pytest.raises(RigFileError, match="does not exist"):
        load_rig("/nonexistent/rig file.toml")


def test_spec_table_matching():
    assert find_spec("NVIDIA GeForce RTX 3080 Ti").name == "GeForce RTX 3080 Ti"
    assert find_spec("NVIDIA GeForce RTX 3080", 10).name == "GeForce RTX 3080 10GB"
    assert find_spec("Tesla P40").bandwidth_gbs == pytest.approx(345.6)
    assert find_spec("") is None
    assert architecture_for((6, 1)) == "Pascal" and architecture_for((8, 6)) == "Ampere"
    assert architecture_for((12, 0)) == "Blackwell"
