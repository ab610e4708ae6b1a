"""What a tune's fit says about itself, in sentences for the tune table, the JSON and the Tune panel:
the terms a slice run shares with whole-model runs, the factors the runs left on a bound (held at the
speed model's figure, with the run that would pin each down) and a disagreement between the fit and
the measurements. Kept apart from backends/tune.py, which measures."""

from __future__ import annotations

from ..planner.calibration import BOUNDS


def _term(tuner, term: str) -> str:
    if term.startswith("gpu:"):
        uuid = term[4:]
        name = next((g.short_name for g in tuner.rig.gpus if g.uuid == uuid), uuid)
        return f"{name}'s time per layer"
    return {"cpu": "the CPU's time per layer", "hop": "the cost of a hop between devices",
            "base": "the fixed cost per token", "output": "the output layer's cost",
            "slice": "a layer's cost in a slice against the whole model"}.get(term, term)


def _kind(term: str) -> str:
    return "device" if term.startswith("gpu:") or term == "cpu" else term


def fit_notes(tuner) -> list[str]:
    f = tuner.fit
    out = []
    if f is not None and any(r.model is not None for r in tuner.runs):
        out.append(f"Shared by slice and whole-model runs, fitted apart from the devices: the fixed cost per token "
                   f"{f.base:.2f}x the speed model's, the output layer {f.output:.2f}x (on whichever device holds it), "
                   f"a layer in a slice {f.slice:.2f}x its time in the whole model.")
    for term, side, value in (f.held if f is not None else []):
        lo, hi = BOUNDS[_kind(term)]
        run = tuner.pinned.get(term)
        if run is not None and run in tuner.runs:
            then = f"run {tuner.runs.index(run) + 1} ({run.split}) was measured to pin it down, and still did not"
        elif run is not None:
            then = f"the run that would pin it down: {run.split} (no time or runs were left to measure it)"
        else:
            then = "no plan that fits and was not measured already tells it apart from the rest"
        bound = lo if side == "floor" else hi
        where = "the speed model's figure" if _kind(term) == "device" else f"that {side}"  # calibration.fit_terms
        out.append(f"The fit put {_term(tuner, term)} at {value:.3g}x the speed model's, past its "
                   f"{side} ({bound:g}x): the runs could not tell it apart, so it is held at {where}; {then}.")
    for term, run in tuner.pinned.items():
        if run is not None and run in tuner.runs and (f is None or all(t != term for t, _, _ in f.held)):
            out.append(f"Run {tuner.runs.index(run) + 1} ({run.split}) was measured because the fit had put "
                       f"{_term(tuner, term)} on a bound; with it the fit is within its bounds.")
    if tuner.disagreement:
        out.append(tuner.disagreement)
    return out
