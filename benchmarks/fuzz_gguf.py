"""Fuzz the GGUF reader with mutated and truncated real headers (default 10,000 cases).

    python benchmarks/fuzz_gguf.py [N]

Only ModelFileError may escape; every case must finish quickly and without allocating much.
Prints a table of outcomes and the slowest case.
"""

from __future__ import annotations

import random
import resource
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from phoenix_gui.model import ModelFileError, read_model, write_skeleton  # noqa: E402


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    rng = random.Random(1234)
    outcomes: Counter[str] = Counter()
    slowest = (0.0, "")
    with tempfile.TemporaryDirectory() as d:
        seeds = [write_skeleton(k, Path(d) / f"{k}.gguf").read_bytes()[:1 << 20]
                 for k in ("tiny-llama-f16",)]
        big = write_skeleton("qwen2.5-7b-instruct-q4_k_m", Path(d) / "q7.gguf")
        with open(big, "rb") as f:
            seeds.append(f.read(4 << 20))  # header of a 152k-token vocabulary, tensors cut off
        target = Path(d) / "case.gguf"
        t0 = time.perf_counter()
        for i in range(n):
            b = bytearray(rng.choice(seeds))
            kind = rng.random()
            if kind < 0.45:
                for _ in range(rng.randint(1, 8)):
                    pos = rng.randrange(min(len(b), 1 << 16)) if rng.random() < 0.8 else rng.randrange(len(b))
                    b[pos] = rng.randrange(256)
            elif kind < 0.6:
                pos = rng.randrange(min(len(b), 1 << 16))
                b[pos:pos + 8] = rng.randbytes(8)
            elif kind < 0.8:
                b = b[:rng.randrange(len(b))]
            else:
                pos = rng.randrange(min(len(b), 1 << 16))
                b[pos:pos + 8] = (rng.choice([0, 1, 2**31, 2**32 - 1, 2**63, 2**64 - 1])).to_bytes(8, "little")
            target.write_bytes(bytes(b))
            t = time.perf_counter()
            try:
                read_model(target)
                outcomes["read fine"] += 1
            except ModelFileError:
                outcomes["ModelFileError"] += 1
            except Exception as e:  # noqa: BLE001 - this is what the fuzzer hunts
                outcomes[f"ESCAPED {type(e).__name__}"] += 1
                print(f"case {i}: {type(e).__name__}: {e}")
            dt = time.perf_counter() - t
            if dt > slowest[0]:
                slowest = (dt, f"case {i}")
        total = time.perf_counter() - t0
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{'outcome':24s} {'cases':>8s}")
    for k, v in sorted(outcomes.items()):
        print(f"{k:24s} {v:8d}")
    print(f"{'total':24s} {n:8d}   in {total:.1f} s; slowest case {slowest[0] * 1000:.0f} ms ({slowest[1]}); peak RSS {peak_mib:.0f} MiB")
    return 1 if any(k.startswith("ESCAPED") for k in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
