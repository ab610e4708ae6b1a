"""What should I run on this PC? Every standard quant of a model x context x KV cache type, planned on this rig.

The question users face before any split: which file to download, which context to ask for. One header
gives every quant's exact tensor types and file size (model/quants.py); each quant x context x KV type is
planned like any other plan (auto-fit, fastest and most headroom), so the table's numbers are the ones the
split page would show for that file. The rows share one model, one rig and one speed model, so they can
be compared: the speed band and the quality cost (model/quality.py, published measurements only) say how
far to trust the difference.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from ..hardware.rig import Rig
from ..model.info import ModelInfo
from ..model.quants import QUANTS, Derived, Source, every_quant, requantized
from .autofit import auto_fits
from .ledger import Plan
from .settings import PlanSettings

KV_TYPES = ("f16", "q8_0", "q4_0")
CONTEXT_STEPS = (2048, 4096, 8192, 16384, 32768, 65536, 131072)
# the quants a user is offered by default: the common ones, not every exotic type
COMMON = ("IQ2_XXS", "IQ2_M", "Q2_K", "IQ3_XXS", "IQ3_M", "Q3_K_S", "Q3_K_M", "Q3_K_L", "IQ4_XS", "Q4_0", "Q4_K_S",
          "Q4_K_M", "MXFP4_MOE", "Q5_K_S", "Q5_K_M", "Q6_K", "Q8_0", "BF16")


@dataclass
class Row:
    quant: str
    file_bytes: int
    estimate: bool  # the source's own mix is custom: this is the standard mix's size, not that file's
    needs_imatrix: bool
    context: int
    kv_type: str
    plan: Plan  # the fastest plan that fits (or the engine default's plan when nothing fits)
    headroom: Plan | None  # the plan that leaves the tightest card the most room at a small speed cost
    settings: PlanSettings
    quality: dict | None = None
    present: Path | None = None

    @property
    def fits(self) -> bool:
        return self.plan.fits

    @property
    def tokens_per_s(self) -> float:
        return self.plan.predicted_tokens_per_s

    def status(self) -> str:
        """"fits", "tight" (fits with less than a layer's room somewhere) or "does not fit"."""
        if not self.plan.fits:
            return "does not fit"
        return "tight" if self.plan.state == "tight" else "fits"


@dataclass
class Advice:
    model: ModelInfo
    rows: list[Row] = field(default_factory=list)
    seconds: float = 0.0
    own_quant: str | None = None  # the source file's own quant, None for a custom mix or a preset


def comparable_quality(quant: str, model_name: str) -> dict | None:
    """The quality cost for a row of the table: the reference model's measurement (model/quality.py: the most
    cited, Llama-3-8B's KL divergence in the shipped data), so that rows compare one metric on one model;
    a measurement on the model's own family, where one was published, rides along under "family"."""
    from ..model.quality import quality_for

    ref = quality_for(quant)
    own = quality_for(quant, model_name)
    if own is not None and own.get("basis") == "family":
        ref = dict(ref) if ref is not None else dict(own)
        ref["family"] = own
    return ref


def contexts_for(model: ModelInfo, steps=CONTEXT_STEPS) -> list[int]:
    """The context steps up to the model's trained context (and that context itself)."""
    limit = model.n_ctx_train or max(steps)
    out = [c for c in steps if c <= limit]
    if limit not in out and limit <= max(steps) * 2:
        out.append(limit)
    return out or [min(steps)]


def advise(model: ModelInfo, rig: Rig, base: PlanSettings, src: Source, quants: list[str] | None = None,
           contexts: list[int] | None = None, kv_types: tuple[str, ...] = KV_TYPES, present: dict | None = None,
           quality=None, headroom: bool = True, progress=None, cancelled=None, workers: int = 1) -> Advice:
    """Plan every quant x context x KV type. `src` is the model's Source (quants.source_of_*), `present` the
    quants on disk (name -> file), `quality(quant, model_name)` the published quality cost or None,
    `progress(done, total)` is called as rows arrive and `cancelled()` ends early (the rows so far are kept).
    workers > 1 plans the quants in that many forked processes where the OS forks (the command line; the
    wizard plans on its one worker thread so it can cancel between rows)."""
    t0 = time.perf_counter()
    derived = [d for d in every_quant(src) if quants is None or d.quant in quants]
    order = {q.name: i for i, q in enumerate(QUANTS)}
    derived.sort(key=lambda d: order[d.quant])
    contexts = contexts or contexts_for(model)
    total = len(derived) * len(contexts) * len(kv_types)
    out = Advice(model)
    job = (model, rig, base, contexts, kv_types, headroom)
    if workers > 1 and len(derived) > 1 and _can_fork():
        _rows_forked(job, derived, workers, out, total, progress)
    else:
        for d in derived:
            if cancelled is not None and cancelled():
                break
            for row in _quant_rows(job, d, cancelled):
                out.rows.append(row)
                if progress is not None:
                    progress(len(out.rows), total)
    for r in out.rows:  # the parts that are not planning: cheap, and the same in every process
        r.quality = quality(r.quant, model.name) if quality else None
        r.present = (present or {}).get(r.quant)
    out.rows.sort(key=lambda r: (order[r.quant], contexts.index(r.context), kv_types.index(r.kv_type)))
    out.seconds = time.perf_counter() - t0
    return out


def _quant_rows(job, d: Derived, cancelled=None) -> list[Row]:
    model, rig, base, contexts, kv_types, headroom = job
    m = _model_for(model, d)
    rows = []
    for ctx in contexts:
        for kv in kv_types:
            if cancelled is not None and cancelled():
                return rows
            s = base.with_(context=ctx, cache_type_k=kv, cache_type_v=kv,
                           flash_attn=base.flash_attn or kv != "f16")  # a quantized V cache needs flash attention
            rows.append(_row(m, rig, s, d, headroom))
    return rows


_JOB = None  # what a forked worker plans with: inherited, not pickled (a model's tensor table is big)


def _worker(d: Derived) -> list[Row]:
    return _quant_rows(_JOB, d)


def _can_fork() -> bool:
    import multiprocessing

    return "fork" in multiprocessing.get_all_start_methods()


def _rows_forked(job, derived: list[Derived], workers: int, out: Advice, total: int, progress) -> None:
    import multiprocessing

    global _JOB
    _JOB = job
    try:
        with multiprocessing.get_context("fork").Pool(min(workers, len(derived))) as pool:
            # the biggest quants first: they take the longest, so the last ones to finish are short
            for rows in pool.imap_unordered(_worker, sorted(derived, key=lambda d: -d.file_bytes)):
                out.rows.extend(rows)
                if progress is not None:
                    progress(len(out.rows), total)
    finally:
        _JOB = None


def _model_for(model: ModelInfo, d: Derived) -> ModelInfo:
    same = all(d.types.get(t.name, t.ggml_type) == t.ggml_type
               for t in [*model.input_tensors, *(t for layer in model.layers for t in layer.tensors),
                         *model.output_tensors])
    return model if same else requantized(model, d)


def _row(m: ModelInfo, rig: Rig, s: PlanSettings, d: Derived, headroom: bool) -> Row:
    fits = auto_fits(m, rig, s, ("fastest", "headroom") if headroom else ("fastest",))
    fast = fits[0]
    room = fits[1].plan if headroom and fast.plan.fits else None
    return Row(d.quant, d.file_bytes, not d.exact, d.needs_imatrix, s.context, s.cache_type_k, fast.plan, room,
               fast.settings)
