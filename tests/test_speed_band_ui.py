"""The split page shows how sure the speed prediction is: the likely range from the held-out error
of the plan's regime, and the speed with a full KV cache."""

from __future__ import annotations

import re

from phoenix_gui.planner.plan import make_plan


def _numbers(text: str) -> list[float]:
    return [float(x) for x in re.findall(r"\d+\.\d", text)]


def test_split_page_shows_the_likely_range_and_the_full_context_speed(wiz):
    wiz.go_to("split")
    page = wiz.page("split")
    st = wiz.state
    st.set_gpulayers(40)
    plan = make_plan(st.model, st.rig, st.settings())
    assert plan.fits
    assert page.speed.text() == f"{plan.predicted_tokens_per_s:.1f} tokens/s"  # the big number stays plain
    line = page.compare.text().split("<br>")[0]
    lo, hi = plan.speed_band
    assert line == f"likely {lo:.1f}–{hi:.1f} · {plan.tokens_per_s_full:.1f} at full context" + (
        f" · {plan.speed_band_note}" if plan.speed_band_note else "")
    # issue 19: the demo rig's GTX 1050 Ti / 1060 are small Pascal chips no public row measures
    assert plan.speed_class == "small Pascal" and "few measurements (small Pascal: 0 rows)" in line
    low, high, full = _numbers(line.split(" · few")[0])
    assert low <= round(plan.predicted_tokens_per_s, 1) <= high and low < high
    assert full < plan.predicted_tokens_per_s  # a full cache is read on every token


def test_the_range_follows_the_plan(wiz):
    """Moving layers from RAM to the GPUs changes the regime's figures; the line follows the plan."""
    wiz.go_to("split")
    page = wiz.page("split")
    st = wiz.state
    st.set_gpulayers(30)
    before = page.compare.text().split("<br>")[0]
    st.set_gpulayers(38)
    plan = make_plan(st.model, st.rig, st.settings())
    after = page.compare.text().split("<br>")[0]
    assert plan.fits and after != before
    lo, hi = plan.speed_band
    assert after.startswith(f"likely {lo:.1f}–{hi:.1f}")


def test_a_plan_that_does_not_fit_shows_no_range(wiz):
    wiz.go_to("split")
    page = wiz.page("split")
    wiz.state.set_gpulayers(None)
    wiz.state.set_split_text("4 8 6")
    assert not wiz.state.plan().fits
    assert "likely" not in page.compare.text() and "full context" not in page.compare.text()
