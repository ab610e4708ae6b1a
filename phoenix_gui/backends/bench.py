"""The built-in benchmark: a fixed prompt of N tokens, then M generated tokens; a history per
model + plan + hardware fingerprint."""

from __future__ import annotations

import hashlib
import json
import statistics
import time
from dataclasses import asdict, dataclass, field

from ..hardware.rig import Rig
from ..model.info import ModelInfo
from ..planner import Plan
from ..storage import append_record, data_dir, read_records
from ..engines.base import Engine

SENTENCE = ("The quick brown fox jumps over the lazy dog while the old GPUs hum along in the basement server. ")


@dataclass
class BenchResult:
    prompt_tokens: int
    prompt_tokens_per_s: float
    gen_tokens: int
    gen_tokens_per_s: float
    predicted_tokens_per_s: float
    predicted_prompt_tokens_per_s: float
    fingerprint: str
    time: float
    gen_repeats: list[float] = field(default_factory=list)  # tokens/s of each repeat (gen_tokens_per_s: their mean)

    @property
    def spread(self) -> float | None:
        return spread_of(self.gen_repeats)


def spread_of(speeds: list[float]) -> float | None:
    """Repeated measurements' relative standard deviation (None with fewer than two)."""
    r = [x for x in speeds if x > 0]
    return statistics.stdev(r) / statistics.fmean(r) if len(r) > 1 else None


def make_prompt(backend: Engine, host: str, port: int, n_tokens: int) -> str:
    """About n_tokens tokens of text, sized with the server's own tokenizer where it has one."""
    text = SENTENCE * max(1, n_tokens // 10)
    count = backend.count_tokens(host, port, text)
    if count:
        for _ in range(3):
            if abs(count - n_tokens) <= max(2, n_tokens // 50):
                break
            text = (SENTENCE * (len(text) * n_tokens // max(1, count) // len(SENTENCE) + 2))
            text = text[: max(1, len(text) * n_tokens // max(1, backend.count_tokens(host, port, text) or count))]
            count = backend.count_tokens(host, port, text) or n_tokens
    return text


def fingerprint(model: ModelInfo, plan: Plan, rig: Rig) -> str:
    s = plan.settings
    key = json.dumps({
        "model": [model.name, model.file_type, model.tensor_bytes],
        "plan": [plan.gpulayers, plan.tensor_split, plan.context, s.cache_type_k, s.flash_attn, s.batch, s.moecpu,
                 s.backend],
        "gpus": [(g.name, g.uuid) for g in rig.gpus if g.index in {d.gpu_index for d in plan.gpus}],
    }, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def run_benchmark(backend: Engine, host: str, port: int, plan: Plan, model: ModelInfo, rig: Rig,
                  n_prompt: int = 512, n_gen: int = 128, repeats: int = 1) -> BenchResult:
    """The prompt then n_gen tokens, `repeats` times on the loaded model (the load costs far more than a
    repeat): the result is the mean, and the repeats' spread says how far one measurement can be trusted."""
    prompt = make_prompt(backend, host, port, n_prompt)
    backend.generate(host, port, "warm up", 4, plan.context)  # first request pays one-off setup costs
    rs = [backend.generate(host, port, prompt, n_gen, plan.context) for _ in range(max(1, repeats))]
    gen = [r.gen_tokens_per_s for r in rs]
    # the prompt speed of the first repeat: an engine may reuse the cached prompt in the next ones (koboldcpp)
    return BenchResult(rs[0].prompt_tokens, rs[0].prompt_tokens_per_s, rs[0].gen_tokens,
                       statistics.fmean(gen), plan.predicted_tokens_per_s, plan.predicted_prompt_tokens_per_s,
                       fingerprint(model, plan, rig), time.time(), gen if len(gen) > 1 else [])


HISTORY = "bench-history.jsonl"  # in the data folder: one BenchResult a line


def record(result: BenchResult) -> None:
    append_record(data_dir() / HISTORY, asdict(result))


def history(fp: str) -> list[BenchResult]:
    """The recorded benchmarks of this fingerprint (bench.fingerprint), oldest first."""
    out = []
    for d in read_records(data_dir() / HISTORY):
        try:
            if d.get("fingerprint") == fp:
                out.append(BenchResult(**d))
        except (ValueError, TypeError):
            continue
    return out
