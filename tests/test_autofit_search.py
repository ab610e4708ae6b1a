"""The searches auto-fit is built from: smallest_from finds what a bisection finds, from any starting guess,
and --moecpu's search finds the same N as a plain bisection over 0..n on every shipped rig."""

from hypothesis import given, strategies as st

from phoenix_gui.hardware import list_rigs, load_rig
from phoenix_gui.model import preset_model_info
from phoenix_gui.planner import PlanSettings
from phoenix_gui.planner import autofit as A


@given(st.integers(0, 80), st.integers(0, 82), st.integers(-5, 90))
def test_smallest_from_finds_the_first_true_from_any_guess(top, answer, guess):
    asked = []

    def ok(k):
        assert 0 <= k <= top  # never outside the range
        asked.append(k)
        return k >= answer

    assert A.smallest_from(ok, guess, top) == (answer if answer <= top else None)
    assert len(asked) <= 2 * (top + 1).bit_length() + 3  # a few steps, never a walk over the range


def test_moecpu_search_matches_a_bisection_on_every_shipped_rig():
    m = preset_model_info("qwen3-30b-a3b-q4_k_m")

    def bisect(ev, base, devices):
        lo, hi, found = 0, m.n_layer, None
        while lo <= hi:
            mid = (lo + hi) // 2
            counts, _ = A._fill(ev, base.with_(moecpu=mid), devices, polish_within=2)
            if sum(counts) == m.n_layer + 1:
                found, hi = mid, mid - 1
            else:
                lo = mid + 1
        return found

    checked = 0
    for path in list_rigs():
        rig = load_rig(path)
        devices = tuple(range(len(rig.gpus)))
        if not devices:
            continue
        for ctx in (2048, 32768):
            base = PlanSettings(context=ctx)
            ev = A._Evaluator(m, rig)
            whole, _ = A._fill(ev, base, devices)
            got = A._moe_candidates(ev, base, devices, whole)
            assert (got[0][0].moecpu if got else None) == bisect(A._Evaluator(m, rig), base, devices), (rig.name, ctx)
            checked += 1
    assert checked >= 6
