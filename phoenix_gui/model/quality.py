"""Published quality loss of each llama-quantize type: a measured number with its source, never an estimate.

The numbers live in ``phoenix_gui/data/quant-quality.jsonl``, one JSON object a line::

    {"quant": "Q4_K_M", "metric": "kld", "value": 0.031273, "model": "Llama-3-8B",
     "source": "https://...", "note": "how it was measured"}

``metric`` is one of

- ``kld``: mean KL divergence of the quantized model's token distribution from the 16-bit model's (nats),
- ``delta_ppl``: PPL(quantized) - PPL(16-bit), in perplexity units,
- ``delta_ppl_pct``: PPL(quantized) / PPL(16-bit) - 1, in percent.

What each source is and what could not be found is in ``quant-quality-sources.md`` beside the data.
The file is read and checked once (every row: a known quant name, a metric from the set above, a
finite value, a model, a source address, no (quant, metric, model) twice); a bad row raises
QualityDataError naming its line. Qt-free.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ..resources import resource
from ..validate import InputError
from .quants import BY_NAME

METRICS = ("kld", "delta_ppl", "delta_ppl_pct")
_FIELDS = ("quant", "metric", "value", "model", "source", "note")
_REQUIRED = ("quant", "metric", "value", "model", "source")
DATA_FILE = "quant-quality.jsonl"


class QualityDataError(InputError):
    """The quality data file has a row Phoenix cannot use; the message names the file and line."""


@dataclass(frozen=True)
class Measurement:
    quant: str
    metric: str
    value: float
    model: str
    source: str
    note: str = ""


def _row(line_no: int, text: str, where: str) -> Measurement:
    at = f"{where} line {line_no}"
    try:
        obj = json.loads(text)
    except ValueError as e:
        raise QualityDataError(f"{at} is not valid JSON ({e.msg}).") from None
    if not isinstance(obj, dict):
        raise QualityDataError(f"{at} is not a JSON object.")
    extra = sorted(set(obj) - set(_FIELDS))
    if extra:
        raise QualityDataError(f"{at} has an unknown field {extra[0]!r}.")
    for key in _REQUIRED:
        if key not in obj or obj[key] is None or (isinstance(obj[key], str) and not obj[key].strip()):
            raise QualityDataError(f"{at} has no {key}.")
    quant, metric, value, model, source = (obj[k] for k in _REQUIRED)
    note = obj.get("note", "")
    if not isinstance(quant, str) or quant not in BY_NAME:
        raise QualityDataError(f"{at} names an unknown quant type {quant!r}.")
    if metric not in METRICS:
        raise QualityDataError(f"{at} has metric {metric!r}, which is not one of {', '.join(METRICS)}.")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise QualityDataError(f"{at} has a value that is not a finite number ({value!r}).")
    if metric == "kld" and value < 0:
        raise QualityDataError(f"{at} has a negative KL divergence ({value!r}).")
    if not isinstance(model, str):
        raise QualityDataError(f"{at} has a model that is not text ({model!r}).")
    if not isinstance(source, str) or not re.match(r"^https?://\S+$", source.strip()):
        raise QualityDataError(f"{at} has a source that is not a web address ({source!r}).")
    if not isinstance(note, str):
        raise QualityDataError(f"{at} has a note that is not text ({note!r}).")
    return Measurement(quant, metric, float(value), model.strip(), source.strip(), note)


def parse(text: str, where: str = DATA_FILE) -> tuple[Measurement, ...]:
    """Every row of a quant-quality file's text, checked; blank lines are skipped."""
    rows: list[Measurement] = []
    seen: dict[tuple[str, str, str], int] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        m = _row(n, line, where)
        key = (m.quant, m.metric, m.model.lower())
        if key in seen:
            raise QualityDataError(f"{where} line {n} repeats the {m.metric} of {m.quant} on {m.model} "
                                   f"already given on line {seen[key]}.")
        seen[key] = n
        rows.append(m)
    return tuple(rows)


def load(path: str | Path | None = None) -> tuple[Measurement, ...]:
    """The rows of ``path`` (default: the shipped file), checked."""
    p = Path(path) if path is not None else resource(DATA_FILE)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise QualityDataError(f"The quant quality data {p} cannot be read ({e}).") from None
    return parse(text, p.name)


@lru_cache(maxsize=1)
def measurements() -> tuple[Measurement, ...]:
    """The shipped rows, read and checked once."""
    return load()


# --- model families ---

_IGNORED = {"meta", "instruct", "chat", "base", "it", "hf", "gguf", "the", "model"}
_WORD = re.compile(r"^([a-z]+)(\d+(?:\.\d+)?)?$")
_VERSION = re.compile(r"^v?(\d+(?:\.\d+)?)$")


def family(name: str) -> tuple[str, str] | None:
    """A model name's family as (name, version): "Meta-Llama-3.1-8B-Instruct" -> ("llama", "3.1"),
    "Qwen2.5-32B" -> ("qwen", "2.5"), "Mistral-7B" -> ("mistral", ""); None when no word is found."""
    tokens = [t for t in re.split(r"[-_\s/]+", name.lower()) if t]
    for i, tok in enumerate(tokens):
        m = _WORD.match(tok)
        if not m or m.group(1) in _IGNORED or len(m.group(1)) < 2:
            continue
        version = m.group(2) or ""
        if not version and i + 1 < len(tokens):
            v = _VERSION.match(tokens[i + 1])
            if v:
                version = v.group(1)
        return m.group(1), version
    return None


def _kin(a: tuple[str, str] | None, b: tuple[str, str] | None) -> int:
    """2: same family and version; 1: same family, same major version (Llama-3 and Llama-3.1); 0: not kin."""
    if a is None or b is None or a[0] != b[0]:
        return 0
    if a[1] == b[1]:
        return 2
    if a[1] and b[1] and a[1].split(".")[0] == b[1].split(".")[0]:
        return 1
    return 0


def _parts(name: str) -> set[str]:
    return {t for t in re.split(r"[-_\s/.]+", name.lower()) if t}


def _size_b(name: str) -> float | None:
    """The parameter count in billions named in a model name ("Qwen3-30B-A3B" -> 30), or None."""
    for t in re.split(r"[-_\s/]+", name.lower()):
        m = re.match(r"^(?:\d+x)?(\d+(?:\.\d+)?)b$", t)
        if m and float(m.group(1)) > 0:
            return float(m.group(1))
    return None


def _size_gap(a: float | None, b: float | None) -> float:
    return abs(math.log(a / b)) if a and b else math.inf


def _pick_metric(rows: list[Measurement]) -> Measurement:
    for metric in METRICS:
        for r in rows:
            if r.metric == metric:
                return r
    raise AssertionError("no rows")  # callers pass a non-empty list


def quality_for(quant: str, model_name: str | None = None,
                rows: tuple[Measurement, ...] | None = None) -> dict | None:
    """The published quality loss of ``quant``, or None where no measurement exists.

    Which model's measurement: among the models measured at this quant, the one of the same family
    as ``model_name`` (the family word and version in the name, e.g. "Qwen2.5" or "Llama-3"; an exact
    version beats the same major version, so Llama-3.1 prefers Llama-3.1 rows, then Llama-3); within
    the family, the model closest in parameter count (the "32B" in the names), then the one sharing
    most name parts with ``model_name`` (variant), then the most cited. With no kin (or no ``model_name``), the most-cited reference model that has this quant
    (the model with most rows in the file; Llama-3-8B in the shipped data).

    Which metric: one per answer, from that one model: its mean KL divergence when it has one for
    this quant, else its perplexity delta (``delta_ppl``), else its relative delta (``delta_ppl_pct``).

    Returns {"metric", "value", "source", "model", "basis"}: ``model`` is the model it was measured
    on, ``basis`` is "family" when that model is kin to ``model_name`` and "reference" otherwise.
    """
    data = measurements() if rows is None else rows
    quant = quant.strip().upper()
    here = [r for r in data if r.quant == quant]
    if not here:
        return None
    cited: dict[str, int] = {}
    for r in data:
        cited[r.model] = cited.get(r.model, 0) + 1
    by_model: dict[str, list[Measurement]] = {}
    for r in here:
        by_model.setdefault(r.model, []).append(r)
    fam = family(model_name) if model_name else None
    want = _parts(model_name) if model_name else set()
    size = _size_b(model_name) if model_name else None

    def rank(model: str):
        return (_kin(fam, family(model)), -_size_gap(size, _size_b(model)), len(want & _parts(model)),
                cited[model], model)

    best = max(by_model, key=rank)
    basis = "family" if _kin(fam, family(best)) else "reference"
    if basis == "reference":  # not kin: the most-cited model, not the one that shares a word by chance
        best = max(by_model, key=lambda m: (cited[m], m))
    r = _pick_metric(by_model[best])
    return {"metric": r.metric, "value": r.value, "source": r.source, "model": r.model, "basis": basis}
