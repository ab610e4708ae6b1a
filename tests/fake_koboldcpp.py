#!/usr/bin/env python3
"""A stand-in for koboldcpp (its binary cannot be installed here).

It accepts koboldcpp's documented command-line flags, prints its documented console lines
(stdout for koboldcpp's own messages, stderr for the ggml/llama.cpp ones) and serves the
documented API fields. What the "engine" does is set by environment variables:
  FAKE_KCPP_BUFFERS   JSON {"CUDA0": [model, kv, compute], "CPU": [...]} in MiB, printed after load
  FAKE_KCPP_MAX_LAYERS  out of memory on CUDA0 when it would get more layers than this
  FAKE_KCPP_OOM_MODE  "segv" (1.115.1: an unchecked weight allocation ends in SIGSEGV) or "clean" (exit 3)
  FAKE_KCPP_LOAD_S    seconds the load takes (default 0.3)
  FAKE_KCPP_NO_CUDA   "1": a build without koboldcpp_cublas (koboldcpp_nocuda, a CPU-only build): --usecuda
                      silently falls back to koboldcpp_default and every buffer is a CPU one
  FAKE_KCPP_NO_LIBRARY  "1": the engine library next to the script is missing; loading it raises the real
                      ctypes OSError ("... cannot open shared object file: No such file or directory")
  FAKE_KCPP_COST_LAW  JSON {"gpus": [[uuid, ms per layer], ...] in PCI order, "cpu_ms", "hop_ms", "base_ms",
                      "layers" (blocks + output; the model file's own count when it has one), "output_x" (the
                      output layer's time in layers, default 1)}: generation takes base + layers x ms on each device + a hop
                      per extra device, per token, reported through /api/extra/perf (hidden from Phoenix);
                      "noise": each generation's time times 1 + N(0, noise), seeded by "seed" and the plan's law time;
                      "slice_x": a slice's layers (a file with fewer layers than "layers") cost this many times theirs
                      in the whole model (slice and whole-model runs disagree; default 1)
  FAKE_KCPP_OOM_AT    "DEVICE:MIB": the load fails allocating MIB on CUDA device DEVICE (a wrapper that knows the
                      card's memory sets it), in FAKE_KCPP_OOM_MODE
  FAKE_KCPP_TIMER_ZERO  "1": /api/extra/perf reports both speeds as 0, as koboldcpp does when a token's time
                      rounds to 0 ms (a tiny model on a fast CPU)
  FAKE_KCPP_CHATTER_MB  print this many MB of console lines after loading, as fast as possible (a chatty
                      server, e.g. per-token debug output), then serve
"""

import argparse
import json
import os
import random
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VERSION = "1.115.1"


def parse():
    ap = argparse.ArgumentParser(prog="koboldcpp")
    ap.add_argument("--version", action="store_true")
    ap.add_argument("--model", "-m", nargs="*", default=[])
    ap.add_argument("--skiplauncher", action="store_true")
    ap.add_argument("--usecuda", "--usecublas", nargs="*", default=None)
    ap.add_argument("--usecpu", action="store_true")
    ap.add_argument("--gpulayers", "--gpu-layers", "--n-gpu-layers", "-ngl", type=int, default=-1)
    ap.add_argument("--tensor_split", "--tensorsplit", "--tensor-split", "-ts", type=float, nargs="+")
    ap.add_argument("--splitmode", default="layer", choices=["layer", "row", "tensor"])
    ap.add_argument("--contextsize", "-c", type=int, default=16384)
    ap.add_argument("--batchsize", "--blasbatchsize", "-b", type=int, default=512)
    ap.add_argument("--quantkv", default="f16")
    ap.add_argument("--noflashattention", "-nofa", action="store_true")
    ap.add_argument("--moecpu", "--n-cpu-moe", type=int, default=0)
    ap.add_argument("--lowvram", "-nkvo", action="store_true")
    ap.add_argument("--usemmap", action="store_true")
    ap.add_argument("--threads", "-t", type=int, default=-1)
    ap.add_argument("--parallelrequests", "--continuous-batching", "--contbatch", type=int, default=1)
    ap.add_argument("--overridetensors", "--override-tensor", "-ot", default="")
    ap.add_argument("--host", default="")
    ap.add_argument("--port", type=int, default=5001)
    ap.add_argument("--multiuser", type=int, nargs="?", const=1, default=10)
    ap.add_argument("--singleinstance", action="store_true")
    ap.add_argument("--quiet", action="store_true")
    return ap.parse_args()


def out(msg):
    print(msg, flush=True)


def err(msg):
    print(msg, file=sys.stderr, flush=True)


def law_ms_per_token(args, cuda):
    """Token time under FAKE_KCPP_COST_LAW: the offloaded (last) layers split over the visible GPUs by
    --tensor_split as llama.cpp does, the rest on the CPU."""
    law = json.loads(os.environ["FAKE_KCPP_COST_LAW"])
    ms = dict(law["gpus"])
    vis = os.environ.get("CUDA_VISIBLE_DEVICES")
    uuids = vis.split(",") if vis else [u for u, _ in law["gpus"]]
    total = model_layers(args.model[0]) or law["layers"]  # a slice of the model has fewer (model/slice.py)
    ngl = min(max(args.gpulayers, 0), total) if cuda else 0
    ts = args.tensor_split or [1.0] * len(uuids)
    cum = [sum(ts[: j + 1]) / (sum(ts) or 1.0) for j in range(len(uuids))]
    counts = [0] * len(uuids)
    for i in range(ngl):
        counts[next(j for j, c in enumerate(cum) if i / ngl < c)] += 1
    used = [n for n in counts if n] + ([total - ngl] if total - ngl else [])
    # the output layer counts as the model's last, so it is the first offloaded: on the GPU that holds the
    # last offloaded layer once any is, else on the CPU; it costs output_x layers' time there
    out_ms = ms[uuids[next(j for j, c in enumerate(cum) if (ngl - 1) / ngl < c)]] if ngl else law["cpu_ms"]
    # "slice_x": a layer of a slice (a file with fewer layers than the law's model) costs this many times
    # what it costs in the whole model, on every device: slice and whole-model runs disagree
    x = law.get("slice_x", 1.0) if total < law["layers"] else 1.0
    ms = {u: v * x for u, v in ms.items()}
    return (law["base_ms"] + sum(n * ms[u] for u, n in zip(uuids, counts)) + (total - ngl) * law["cpu_ms"] * x
            + (law.get("output_x", 1.0) - 1.0) * out_ms + law["hop_ms"] * (len(used) - 1))


def model_layers(path: str) -> int | None:
    """The model file's layers + its output layer, as koboldcpp counts --gpulayers (None if unreadable).
    Reads the GGUF keys up to the block count (they come before the tokenizer's long arrays)."""
    import struct

    sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
    try:
        with open(path, "rb") as f:
            def u(fmt):
                return struct.unpack("<" + fmt, f.read(struct.calcsize(fmt)))[0]

            def text():
                return f.read(u("Q")).decode()

            def skip(t):
                if t == 8:
                    f.seek(u("Q"), 1)
                elif t == 9:
                    et, n = u("I"), u("Q")
                    for _ in range(n) if et in (8, 9) else ():
                        skip(et)
                    if et not in (8, 9):
                        f.seek(sizes[et] * n, 1)
                else:
                    f.seek(sizes[t], 1)

            if f.read(4) != b"GGUF":
                return None
            u("I"), u("Q")
            for _ in range(u("Q")):
                key, t = text(), u("I")
                if key.endswith(".block_count") and t in (4, 5, 10):
                    return u({4: "I", 5: "i", 10: "Q"}[t]) + 1
                skip(t)
    except (OSError, ValueError, KeyError, struct.error, UnicodeDecodeError):
        return None
    return None


class State:
    token_ms = None  # set from FAKE_KCPP_COST_LAW
    noise, rng = 0.0, random.Random(0)
    perf = {"last_process": 0, "last_eval": 0, "last_token_count": 0, "last_input_count": 0, "last_process_time": 0,
            "last_eval_time": 0, "last_seed": -1, "total_gens": 0, "stop_reason": -1, "queue": 0, "idle": 1,
            "uptime": 0, "idletime": 0, "last_process_speed": 0, "last_eval_speed": 0, "total_img_gens": 0,
            "total_tts_gens": 0, "total_transcribe_gens": 0}


def serve(args):
    start = time.time()

    class H(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def _json(self, obj, code=200):
            body = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            p = self.path.rstrip("/")
            if p.endswith("/api/extra/version"):
                self._json({"result": "KoboldCpp", "version": VERSION, "protected": False, "llm": True, "txt2img": False,
                            "vision": False, "audio": False, "transcribe": False, "tts": False, "embeddings": False})
            elif p.endswith("/api/extra/perf"):
                State.perf["uptime"] = time.time() - start
                self._json(State.perf)
            elif p.endswith("/api/v1/model"):
                self._json({"result": "koboldcpp/" + os.path.splitext(os.path.basename(args.model[0]))[0]})
            elif p.endswith("/api/extra/true_max_context_length"):
                self._json({"value": args.contextsize})
            else:
                self._json({"detail": "not found"}, 404)

        def do_POST(self):
            n = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(n) or b"{}")
            p = self.path.rstrip("/")
            if p.endswith("/api/v1/generate"):
                prompt_tokens = max(1, len(body.get("prompt", "")) // 4)
                gen = int(body.get("max_length", 100))
                pp_s, tg_s = prompt_tokens / 400.0, gen / 25.0
                if State.token_ms:
                    tg_s = gen * State.token_ms / 1000 * max(0.5, 1 + State.rng.gauss(0, State.noise))
                State.perf["idle"] = 0  # busy while generating, as koboldcpp reports it
                time.sleep(min(1.0, (pp_s + tg_s) / 20))
                State.perf.update(last_process_speed=round(prompt_tokens / pp_s, 2), last_eval_speed=round(gen / tg_s, 2),
                                  last_token_count=gen, last_input_count=prompt_tokens, stop_reason=0,
                                  last_process=round(1000 * pp_s / prompt_tokens, 3), last_eval=round(1000 * tg_s / gen, 3),
                                  total_gens=State.perf["total_gens"] + 1, last_seed=1, idle=1)
                if os.environ.get("FAKE_KCPP_TIMER_ZERO") == "1":  # its per-token times rounded to 0 ms: koboldcpp
                    State.perf.update(last_process=0, last_eval=0, last_process_speed=0, last_eval_speed=0)  # says 0
                out(f"[{time.strftime('%H:%M:%S')}] CtxLimit:{prompt_tokens + gen}/{args.contextsize}, Init:0.01s, "
                    f"Processed:{prompt_tokens} in {pp_s:.2f}s ({prompt_tokens / pp_s:.2f}T/s), Generated:{gen}/{gen} in "
                    f"{tg_s:.2f}s ({gen / tg_s:.2f}T/s), Total:{pp_s + tg_s:.2f}s")
                self._json({"results": [{"text": " lorem" * gen, "finish_reason": "length",
                                         "prompt_tokens": prompt_tokens, "completion_tokens": gen}]})
            elif p.endswith("/api/extra/tokencount"):
                self._json({"value": max(1, len(body.get("prompt", "")) // 4), "ids": []})
            elif p.endswith("/api/extra/shutdown"):
                self._json({"success": True})
                threading.Thread(target=lambda: (time.sleep(0.1), os._exit(0)), daemon=True).start()
            else:
                self._json({"detail": "not found"}, 404)

    try:
        srv = ThreadingHTTPServer((args.host or "0.0.0.0", args.port), H)
    except OSError:
        # the real 1.115.1: the model is loaded, the endpoint announced, then the bind fails and it exits 0
        out(f"Please connect to custom endpoint at http://{args.host or 'localhost'}:{args.port}")
        out(f"Warning: Port {args.port} already appears to be in use by another program.")
        out("IPv4 Socket Failed to Bind.\nIPv6 Socket Failed to Bind. IPv6 will be unavailable.")
        out("ERROR: Both IPv4 and IPv6 cannot bind. Server features will not work.")
        sys.exit(0)
    out(f"Please connect to custom endpoint at http://{args.host or 'localhost'}:{args.port}")
    srv.serve_forever()


def main():
    args = parse()
    if args.version:
        out(VERSION)
        return
    out(f"***\nWelcome to KoboldCpp - Version {VERSION}")
    # koboldcpp's init_library(): --usecuda picks koboldcpp_cublas only when that file exists
    cuda = args.usecuda is not None and os.environ.get("FAKE_KCPP_NO_CUDA") != "1"
    lib = "koboldcpp_cublas.so" if cuda else "koboldcpp_default.so"
    out("Initializing dynamic library: " + lib)
    if os.environ.get("FAKE_KCPP_NO_LIBRARY") == "1":
        import ctypes

        ctypes.CDLL(os.path.join(os.path.dirname(os.path.abspath(__file__)), lib))  # raises the real OSError
    out(f"Namespace(contextsize={args.contextsize}, gpulayers={args.gpulayers}, port={args.port})")
    model = args.model[0] if args.model else ""
    if model and not os.path.exists(model):  # the real one checks before loading and exits 2
        out(f"\nCannot find text model file: {model}")
        sys.exit(2)
    out(f"Loading Text Model: {model}")
    if not model or not os.path.exists(model):
        err(f"gguf_init_from_file: failed to open GGUF file '{model}'")
        out("Load Text Model OK: False")
        out("Could not load text model: " + model)
        sys.exit(3)
    n_gpus = len(os.environ.get("CUDA_VISIBLE_DEVICES", "0,1,2").split(","))
    if cuda:
        err(f"ggml_cuda_init: found {n_gpus} CUDA devices (Total VRAM: {8192 * n_gpus} MiB):")
        for i in range(n_gpus):
            err(f"  Device {i}: NVIDIA GeForce RTX 2080, compute capability 7.5, VMM: yes, VRAM: 8192 MiB")
    if args.tensor_split:
        out("Applying Tensor Split...")
    time.sleep(float(os.environ.get("FAKE_KCPP_LOAD_S", "0.3")))
    for i in range(3):
        sys.stdout.write("." * (i + 1) + "\r")
        sys.stdout.flush()
    err(f"load_tensors: offloaded {max(args.gpulayers, 0)}/65 layers to GPU")
    max_layers = os.environ.get("FAKE_KCPP_MAX_LAYERS")
    ngl = max(args.gpulayers, 0)
    ts = args.tensor_split or [1.0] * n_gpus
    first_share = ts[0] / (sum(ts) or 1.0)
    on_cuda0 = sum(1 for i in range(ngl) if i / ngl < first_share) if ngl else 0  # llama.cpp's upper-bound rule
    if cuda and max_layers is not None and on_cuda0 > int(max_layers):
        err("ggml_backend_cuda_buffer_type_alloc_buffer: allocating 2311.25 MiB on device 0: cudaMalloc failed: out of memory")
        err("alloc_tensor_range: failed to allocate CUDA0 buffer of size 2423521280")
        if os.environ.get("FAKE_KCPP_OOM_MODE", "segv") == "segv":
            os.kill(os.getpid(), signal.SIGSEGV)
        out("Load Text Model OK: False")
        sys.exit(3)
    oom_at = os.environ.get("FAKE_KCPP_OOM_AT")
    if cuda and oom_at:
        dev, mib = oom_at.split(":")
        err(f"ggml_backend_cuda_buffer_type_alloc_buffer: allocating {float(mib):.2f} MiB on device {dev}: "
            "cudaMalloc failed: out of memory")
        err(f"alloc_tensor_range: failed to allocate CUDA{dev} buffer of size {int(float(mib) * 1048576)}")
        if os.environ.get("FAKE_KCPP_OOM_MODE", "segv") == "segv":
            os.kill(os.getpid(), signal.SIGSEGV)
        out("Load Text Model OK: False")
        sys.exit(3)
    bufs = json.loads(os.environ.get("FAKE_KCPP_BUFFERS", "{}"))
    if not cuda and args.usecuda is not None:  # no CUDA backend: everything lands in host buffers
        sums = [sum(v[i] for v in bufs.values()) for i in range(3)] if bufs else [20.0, 4.0, 2.0]
        bufs = {"CPU": sums}
    for name, (m, _, _) in bufs.items():
        err(f"load_tensors: {name:>12} model buffer size = {m:8.2f} MiB")
    err(f"llama_context: n_ctx         = {((args.contextsize + 128 + 255) // 256) * 256}")
    err(f"llama_context: n_batch       = {args.batchsize}")
    for name, (_, kv, _) in bufs.items():
        err(f"llama_kv_cache: {name:>10} KV buffer size = {kv:8.2f} MiB")
    for name, (_, _, comp) in bufs.items():
        err(f"sched_reserve: {name:>10} compute buffer size = {comp:8.2f} MiB")
    if os.environ.get("FAKE_KCPP_COST_LAW"):
        State.token_ms = law_ms_per_token(args, cuda)
        law = json.loads(os.environ["FAKE_KCPP_COST_LAW"])
        State.noise, State.rng = float(law.get("noise", 0.0)), random.Random(f"{law.get('seed', 0)}:{State.token_ms}")
    out("Starting model warm up, please wait a moment...")
    out("Load Text Model OK: True")
    chatter = float(os.environ.get("FAKE_KCPP_CHATTER_MB", "0"))
    if chatter > 0:
        line = b"[chatter] " + b"token debug output " * 4 + b"\n"
        block = line * (1048576 // len(line))
        for _ in range(int(chatter * 1048576 / len(block))):
            sys.stdout.buffer.write(block)
        out("chatter done")
    serve(args)


if __name__ == "__main__":
    main()
