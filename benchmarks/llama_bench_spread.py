"""How much one measured generation speed varies on real rigs: published llama-bench spreads.

llama-bench repeats each test on one load (5 times unless -r says otherwise) and prints the mean tokens/s
± the sample standard deviation of the repeats (tools/llama-bench/llama-bench.cpp). llama_bench_spread.csv
holds 84 such token-generation rows copied from public llama.cpp threads, each with its page. This
prints the relative spread (sd / mean) by kind of rig, as printed and scaled to one tuning repeat of
planner/tuning.RUN_GEN tokens (x sqrt(tokens / RUN_GEN): timing noise per token, averaged over the
tokens, the scaling the rows' tg32-512 spreads roughly follow). bench_tune.py's noise levels are read
against this table. Within one load only: what varies between loads is not in these numbers.

Run: .venv/bin/python benchmarks/llama_bench_spread.py
"""

from __future__ import annotations

import csv
import re
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from phoenix_gui.planner.tuning import RUN_GEN  # noqa: E402

DATA = Path(__file__).with_name("llama_bench_spread.csv")
LONGEST_SCALED = 512  # generated tokens
KINDS = {"gpu_full": "fully on one GPU", "multi_gpu": "several GPUs", "hybrid": "GPU build, layers in RAM",
         "cpu": "CPU only"}


def rows() -> list[dict]:
    out = []
    with open(DATA, newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            m = re.fullmatch(r"tg\s*(\d+)", r["test"].strip())
            tps, sd = float(r["tps"]), float(r["sd"])
            if m and tps > 0:
                n = int(m.group(1))
                out.append({**r, "n": n, "rel": sd / tps,
                            "rel_run": sd / tps * (n / RUN_GEN) ** 0.5 if n <= LONGEST_SCALED else None})
    return out


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * (len(xs) - 1) + 0.5))]


def main() -> int:
    data = rows()
    print(f"llama_bench_spread: {len(data)} published llama-bench token-generation rows from "
          f"{len({r['source_url'] for r in data})} pages; relative sd of one repeat")
    print(f"{'kind':<26} {'rows':>4}  {'as printed: median':>18}  {'p90':>6}  "
          f"{f'one {RUN_GEN}-token repeat: median':>27}  {'p90':>6}  {'max':>6}")
    for kind, label in (*KINDS.items(), ("", "all")):
        sel = [r for r in data if not kind or r["kind"] == kind]
        if not sel:
            continue
        a, b = [r["rel"] for r in sel], [r["rel_run"] for r in sel if r["rel_run"] is not None]
        print(f"{label:<26} {len(sel):>4}  {statistics.median(a):>18.2%}  {pct(a, 0.9):>6.2%}  "
              f"{statistics.median(b):>27.2%}  {pct(b, 0.9):>6.2%}  {max(b):>6.2%}  ({len(b)} rows)")
    print(f"rows printing ± 0.00 (a spread under the print's resolution) count as 0; the repeat column leaves out "
          f"runs of more than {LONGEST_SCALED} tokens.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
