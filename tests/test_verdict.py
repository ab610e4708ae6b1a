"""One state per device, and advice that matches the cause (issue 8, items 3, 4 and 7)."""

import pytest

from phoenix_gui.hardware import GIB, MIB, demo_rig_path, load_rig
from phoenix_gui.hardware.rig import Rig, SystemInfo
from phoenix_gui.planner import PlanSettings, make_plan
from phoenix_gui.planner.ledger import DevicePlan


@pytest.fixture(scope="module")
def rig():
    return load_rig(demo_rig_path())  # GTX 1050 Ti 4 GB (display), RTX 2080 8 GB, GTX 1060 6 GB, 58 GB RAM free


def _dev(total_mib, free_mib=1000, reserve_mib=300):
    return DevicePlan(name="GPU X", kind="gpu", gpu_index=0, layers=3, first_layer=0, last_layer=2, has_output=False,
                      weights_bytes=total_mib * MIB, kv_bytes=0, compute_bytes=0, overhead_bytes=0,
                      reserve_bytes=reserve_mib * MIB, capacity_bytes=free_mib * MIB, free_bytes=free_mib * MIB,
                      bandwidth_gbs=100.0)


def test_state_boundaries():
    # usable = 1000 - 300 = 700 MiB
    assert _dev(700).state == "fits" and _dev(700).fits and _dev(700).reason() == ""
    assert _dev(701).state == "tight" and not _dev(701).fits
    assert _dev(1000).state == "tight"
    assert _dev(1001).state == "short"


def test_tight_says_tight_and_short_says_short():
    # the card that read "TIGHT" in amber and "260 MiB short" in red at once
    tight = _dev(960).reason()
    assert "tight" in tight and "eats 260 MiB of the 300 MiB" in tight and "short" not in tight
    short = _dev(1260).reason()
    assert "560 MiB short: needs 1,260 MiB where 700 MiB is usable" in short and "tight" not in short  # one "short"


def test_plan_state_and_verdict(q32, rig):
    fits = make_plan(q32, rig, PlanSettings(context=4096, gpulayers=50, tensor_split=(9, 25, 16)))
    assert fits.state == "fits" and fits.fits and fits.verdict().startswith("Fits")
    tight = make_plan(q32, rig, PlanSettings(context=4096, gpulayers=51, tensor_split=(9, 26, 16)))
    assert tight.state == "tight" and not tight.fits  # Phoenix does not recommend a tight plan
    assert tight.verdict() == ("Tight: RTX 2080 eats into the memory Phoenix keeps free; "
                               "it may load, but is not recommended.")
    short = make_plan(q32, rig, PlanSettings(context=4096, tensor_split=(4, 8, 6)))
    assert short.state == "short"
    assert short.verdict() == "Does not fit: GTX 1050 Ti, RTX 2080 and GTX 1060 6GB need more memory than is free."
    assert short.to_dict()["state"] == "short" and short.to_dict()["verdict"] == short.verdict()


def test_every_state_has_its_own_sentence(q32, rig):
    for split in [(9, 25, 16), (9, 26, 16), (4, 8, 6), (20, 5, 5)]:
        p = make_plan(q32, rig, PlanSettings(context=4096, gpulayers=sum(split), tensor_split=split))
        for d in p.devices:
            r = d.reason()
            assert (r == "") == (d.state == "fits")
            assert ("tight" in r) == (d.state == "tight")
            assert ("MiB short: needs" in r) == (d.state == "short")


def test_one_short_gpu_is_told_where_a_layer_fits(q32, rig):
    p = make_plan(q32, rig, PlanSettings(context=4096, gpulayers=30, tensor_split=(20, 5, 5)))
    assert [d.state for d in p.gpus] == ["short", "fits", "fits"]
    assert p.reasons() == [p.gpus[0].reason()]
    assert "move a layer to RTX 2080 and GTX 1060 6GB or lower the context" in p.gpus[0].reason()


def test_every_gpu_short_means_fewer_gpu_layers(q32, rig):
    # 19 GB of weights on 18 GB of GPUs: moving a layer between them cannot help
    p = make_plan(q32, rig, PlanSettings(context=4096, tensor_split=(4, 8, 6)))
    assert all(d.state == "short" for d in p.gpus)
    for r in p.reasons():
        assert "lower GPU layers (put more layers in system RAM) or the context" in r
        assert "move a layer" not in r


def test_tight_gpu_next_to_full_ones_means_fewer_gpu_layers(q32, rig):
    # the other cards fit but have no room for a whole layer
    p = make_plan(q32, rig, PlanSettings(context=4096, gpulayers=51, tensor_split=(9, 26, 16)))
    assert [d.state for d in p.gpus] == ["fits", "tight", "fits"]
    assert "lower GPU layers" in p.gpus[1].reason() and "move a layer" not in p.gpus[1].reason()


def test_gpu_without_layers_is_left_out(q32, rig):
    tiny = load_rig(demo_rig_path())
    tiny.gpus[0].free_bytes = 200 * MIB  # not even the CUDA context fits
    p = make_plan(q32, tiny, PlanSettings(context=4096, gpulayers=20, tensor_split=(0, 10, 10)))
    assert p.gpus[0].layers == 0 and p.gpus[0].state == "short"
    assert p.gpus[0].reason().endswith("— leave this GPU out.")


def _small_ram(rig):
    return Rig("small RAM", rig.gpus, SystemInfo(16 * GIB, 8 * GIB, 8, 16, 50.0, "rig file"), simulated=True)


def test_cpu_only_plan_short_of_ram_does_not_mention_gpus(q32, rig):
    no_gpu = Rig("cpu box", [], SystemInfo(16 * GIB, 8 * GIB, 8, 16, 50.0, "rig file"))
    for p in (make_plan(q32, no_gpu, PlanSettings(context=4096)),
              make_plan(q32, _small_ram(rig), PlanSettings(context=4096, devices=()))):  # GPUs there, none chosen
        assert p.gpus == [] and p.cpu.state == "short"
        r = p.cpu.reason()
        assert r.startswith("System RAM:") and "GPU" not in r
        assert "use a smaller quant or a shorter context, or close other programs" in r


def test_ram_short_with_roomy_gpus_says_offload(q32, rig):
    p = make_plan(q32, _small_ram(rig), PlanSettings(context=4096, gpulayers=10))
    assert all(d.fits for d in p.gpus) and p.cpu.state == "short"
    assert "offload more layers to GPUs" in p.cpu.reason()
