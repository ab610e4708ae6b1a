"""The `phoenix` command line: detect, inspect, plan, skeleton (each with --json)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from . import __version__
from . import validate as v

MIB = 1 << 20
DEMO_PRESET = "qwen2.5-32b-instruct-q4_k_m"


class UserError(Exception):
    """One sentence for the user; exit code 2."""


class NodeUnavailable(Exception):
    """Another PC given with --rpc cannot be used (down, refused, not an RPC server): one sentence, exit 1."""


def _mib(n: int) -> str:
    return f"{n / MIB:,.0f}"


# --- shared loading ---

def _load_rig(args, demo: bool):
    from .hardware import RigFileError, demo_rig_path, detect_rig, load_rig

    targets = v.rpc_targets(args.rpc) if getattr(args, "rpc", None) is not None else []
    try:
        if getattr(args, "rig", None):
            rig = load_rig(args.rig)
        elif demo:
            rig = load_rig(demo_rig_path())
        else:
            rig = detect_rig(measure_bandwidth=not getattr(args, "no_bandwidth", False))
    except RigFileError as e:
        raise UserError(str(e)) from None
    return _with_nodes(rig, targets, args) if targets else rig


def _with_nodes(rig, targets: list[str], args=None):
    """The rig with the devices the PCs at `targets` share over RPC, each asked and its link measured, then
    checked together (one PC twice, this PC's own GPU, too many devices) and against the engine's RPC
    protocol, each refusal in one sentence naming the PC."""
    from .backends.nodes import NodeError, describe_node
    from .backends.protocols import check_version
    from .engines import engine_named
    from .hardware.cluster import ClusterError, check_cluster, cluster_rig, nodes_of

    known = nodes_of(rig)
    clash = [a for a in targets if any(n.address == a for n in known)]
    if clash:
        raise UserError(f"{clash[0]} is already a node of the rig file; give it once.")
    nodes = []
    for address in targets:
        print(f"Asking {address} ...", file=sys.stderr)
        try:
            nodes.append(describe_node(address, timeout=5.0, measure=True))
        except NodeError as e:
            raise NodeUnavailable(str(e)) from None
    try:
        check_cluster([g for g in rig.gpus if not g.is_remote], known + nodes)
    except ClusterError as e:
        raise UserError(str(e)) from None
    exe = getattr(args, "exe", None) or engine_named(getattr(args, "backend", None) or "koboldcpp").find()
    for node in nodes if exe else []:  # the engine that would load the plan must be able to talk to each
        try:
            note = check_version(node, exe)
        except NodeError as e:
            raise NodeUnavailable(str(e)) from None
        if note:
            print(f"phoenix: note: {note}", file=sys.stderr)
    return cluster_rig(rig, known + nodes)  # the rig file's nodes first, in the order given


def _load_model(args):
    """(ModelInfo, path for the command line)."""
    from .model import ModelFileError, load_preset, preset_model_info, read_model

    if getattr(args, "model", None):
        try:
            m = read_model(args.model)
        except ModelFileError as e:
            raise UserError(str(e)) from None
        return m, str(Path(args.model).resolve())
    key = getattr(args, "preset", None) or (DEMO_PRESET if getattr(args, "demo", False) else None)
    if not key:
        raise UserError("Give a model file (or --demo, or --preset NAME).")
    try:
        p = load_preset(key)
    except ValueError as e:
        raise UserError(str(e)) from None
    return preset_model_info(p), f"{p.name}-{p.recipe}.gguf"


# --- commands ---

def cmd_detect(args) -> int:
    rig = _load_rig(args, args.demo)
    if args.json:
        print(json.dumps(rig.to_dict(), indent=2))
        return 0
    print(f"{rig.name}{' (simulated)' if rig.simulated else ''}")
    if not rig.gpus:
        print(f"  No NVIDIA GPU: {rig.gpu_note}")
    for g in rig.gpus:
        disp = "  [display]" if g.display_attached else ""
        print(f"  GPU {g.index}: {g.name}  {g.architecture} (cc {g.compute_capability[0]}.{g.compute_capability[1]})"
              f"  {_mib(g.used_bytes)}/{_mib(g.total_bytes)} MiB used  {g.bandwidth_gbs:.0f} GB/s ({g.bandwidth_source})"
              f"  PCIe {g.pcie_gen or '?'} x{g.pcie_width or '?'}  {g.pci_bus_id}{disp}")
    s = rig.system
    print(f"  RAM: {s.ram_available_bytes / (1 << 30):.1f} of {s.ram_total_bytes / (1 << 30):.1f} GiB available, "
          f"{s.ram_bandwidth_gbs:.0f} GB/s ({s.ram_bandwidth_source}); CPU: {s.cpu_name} "
          f"({s.physical_cores} cores / {s.logical_cores} threads)")
    if rig.gpus:
        print(f"  Driver {rig.gpus[0].driver_version}, CUDA {rig.gpus[0].cuda_driver_version}")
    return 0


def cmd_inspect(args) -> int:
    m, _ = _load_model(args)
    d = m.summary()
    if args.json:
        print(json.dumps(d, indent=2))
        return 0
    gb = 1e9
    print(f"{m.name}  ({m.architecture}, {m.size_label or '?'} params: {m.n_params / 1e9:.2f} B, {m.file_type})")
    print(f"  file: {m.file_size / gb:.2f} GB in {max(1, len(m.parts))} part(s); tensors {m.tensor_bytes / gb:.2f} GB")
    print(f"  layers {m.n_layer}, n_embd {m.n_embd}, heads {d['n_head']} (KV {d['n_head_kv']}), "
          f"head dims K {m.key_length} / V {m.value_length}, n_ff {d['n_ff']}, vocab {m.n_vocab}")
    print(f"  trained context {m.n_ctx_train}" + (f", sliding window {m.sliding_window} on {sum(m.swa_layers)} layers" if m.sliding_window else ""))
    if m.is_moe:
        print(f"  experts {m.n_expert} ({m.n_expert_used} used per token), expert bytes {sum(l.expert_bytes for l in m.layers) / gb:.2f} GB")
    if m.kv_lora_rank:
        print(f"  MLA: kv_lora_rank {m.kv_lora_rank}, q_lora_rank {m.q_lora_rank}")
    print(f"  input embeddings {m.input_bytes / MIB:,.0f} MiB (CPU), output layer {m.output_bytes / MIB:,.0f} MiB"
          + (" (tied: token_embd duplicated)" if m.tied_embeddings else ""))
    sizes = [l.nbytes for l in m.layers]
    print(f"  per-layer {min(sizes) / MIB:,.0f}-{max(sizes) / MIB:,.0f} MiB")
    return 0


def _settings_from_args(args, rig, model=None):
    """PlanSettings from the plan arguments (session/translation.py), every value checked (validate.py): a bad
    one is a UserError sentence, never a plan. Without --ctx the context is the one default (planner/settings.py
    default_context, as in the wizard), said when the model's trained context made it smaller."""
    from .planner.settings import DEFAULT_CONTEXT, default_context
    from .session.translation import settings_from_args

    ctx = args.ctx
    if ctx is None:
        ctx = default_context(getattr(model, "n_ctx_train", None))
        if ctx < DEFAULT_CONTEXT:
            print(f"phoenix: context {ctx:,} tokens: the model was trained on {model.n_ctx_train:,} "
                  "(give --ctx for another)", file=sys.stderr)
    try:
        return settings_from_args(args, rig, ctx)
    except v.InputError as e:
        raise UserError(str(e)) from None


def _check_launch_args(args) -> None:
    """The launch/bench-only arguments: a NaN timeout would never time out."""
    try:
        v.timeout(args.timeout)
        v.integer(args.retries, "--retries", 0, 10)
        if getattr(args, "prompt_tokens", None) is not None:
            v.integer(args.prompt_tokens, "--prompt-tokens", 1, 1 << 20)
            v.integer(args.gen_tokens, "--gen-tokens", 1, 1 << 20)
            v.integer(args.repeats, "--repeats", 1, 20)
        if args.exe is not None:
            v.text(args.exe, "The executable path")
    except v.InputError as e:
        raise UserError(str(e)) from None


def _output_paths(args, model_path: str) -> None:
    """--kcpps/--script: never over a model, over another file only with --force; checked before
    anything is written, so a refusal leaves every file as it was."""
    outs = [(o, w) for o, w in ((args.kcpps, "config"), (args.script, "launcher")) if o]
    if len(outs) == 2 and _same_file(outs[0][0], outs[1][0]):
        raise UserError("--kcpps and --script name the same file; give each its own.")
    try:
        for out, what in outs:
            if _same_file(out, model_path):
                raise v.InputError(f"{Path(out).name} is the model file; Phoenix never writes over a model.")
            v.check_writable(out, args.force, what)
    except v.InputError as e:
        raise UserError(str(e)) from None


def _same_file(a: str, b: str) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve() or (Path(a).exists() and Path(b).exists()
                                                          and os.path.samefile(a, b))
    except (OSError, ValueError):
        return False


def cmd_plan(args) -> int:
    from .backends import launch_command, write_kcpps, write_launcher
    from .planner import make_plan
    from .planner.autofit import auto_fit

    demo = args.demo or (not args.model and not args.rig and args.preset is not None)
    rig = _calibrated(args, _load_rig(args, args.demo))
    model, model_path = _load_model(args)
    settings = _settings_from_args(args, rig, model)
    _output_paths(args, model_path)
    if args.exe is not None:
        try:
            v.text(args.exe, "The executable path")
        except v.InputError as e:
            raise UserError(str(e)) from None
    if args.auto:
        fit = auto_fit(model, rig, settings, args.auto)
        plan = fit.plan
    else:
        plan = make_plan(model, rig, settings)
    cmd = launch_command(plan, rig, model_path, args.exe)
    try:
        if args.kcpps:
            write_kcpps(plan, rig, model_path, args.kcpps, force=args.force)
        if args.script:
            write_launcher(cmd, args.script, force=args.force)
    except v.InputError as e:
        raise UserError(str(e)) from None
    except OSError as e:
        raise UserError(f"Cannot write {e.filename or 'the file'} ({e.strerror or e}).") from None
    if args.json:
        print(json.dumps(_plan_json(plan, rig, cmd, args.auto), indent=2))
        return 0 if plan.fits else 3
    _print_plan(plan, rig, cmd, args.auto, demo)
    return 0 if plan.fits else 3


def _plan_json(plan, rig, cmd, objective) -> dict:
    """What `plan --json` prints for one plan (and `advise --json` for each row's)."""
    from .hardware.cluster import nodes_of

    d = plan.to_dict()
    d.update(rig=rig.name, backend=plan.settings.backend if plan.settings else None, argv=cmd.argv, env=cmd.env,
             objective=objective, network_s_per_token=getattr(plan.speed_inputs, "network_s", 0.0),
             machines=_machines(plan, rig), nodes=[n.to_dict() for n in nodes_of(rig)])
    d.pop("settings", None)
    return d


def cmd_advise(args) -> int:
    """Every quant x context x KV cache type of the model on this rig: fits, fastest plan, speed band,
    prompt speed, quality cost, and which quants are already on disk."""
    from .backends import launch_command
    from .model import ModelFileError, load_preset
    from .model.presets import source_of_preset
    from .model.quants import BY_NAME, file_name_for, own_quant, quants_on_disk, source_of_file
    from .planner import PlanSettings
    from .planner.advisor import COMMON, KV_TYPES, advise, comparable_quality, contexts_for

    rig = _calibrated(args, _load_rig(args, args.demo))
    model, model_path = _load_model(args)
    try:
        base = PlanSettings(backend=args.backend, margin_mib=v.mib(args.margin, "--margin"))
        contexts = [v.context(c, args.backend) for c in args.ctx] if args.ctx else contexts_for(model)
        quants = None if args.all_quants else [v.choice(q.upper(), "quant type", list(BY_NAME)) for q in
                                                (args.quant or COMMON)]
        src = source_of_file(model_path) if args.model else source_of_preset(load_preset(args.preset or DEMO_PRESET))
    except v.InputError as e:
        raise UserError(str(e)) from None
    except ModelFileError as e:
        raise UserError(str(e)) from None
    present = quants_on_disk(model_path, src) if args.model else {}
    own = own_quant(src)
    kv = tuple(args.kv or KV_TYPES)
    show = not args.json and sys.stderr.isatty()
    advice = advise(model, rig, base, src, quants, sorted(set(contexts)), kv, present, comparable_quality, workers=2,
                    progress=(lambda i, n: print(f"\rphoenix: planning {i}/{n}", end="", file=sys.stderr))
                    if show else None)
    if show:
        print(file=sys.stderr)
    name = Path(model_path).name
    if args.json:
        rows = [{"quant": r.quant, "file_bytes": r.file_bytes, "estimate": r.estimate, "needs_imatrix": r.needs_imatrix,
                 "context": r.context, "kv_type": r.kv_type, "fits": r.fits, "status": r.status(),
                 "plan": _plan_json(r.plan, rig, launch_command(r.plan, rig, str(r.present or model_path), args.exe),
                                    "fastest"),
                 "headroom_plan": None if r.headroom is None else _plan_json(
                     r.headroom, rig, launch_command(r.headroom, rig, str(r.present or model_path), args.exe), "headroom"),
                 "tokens_per_s": round(r.tokens_per_s, 2), "band": [round(x, 2) for x in r.plan.speed_band],
                 "band_note": r.plan.speed_band_note,
                 "prompt_tokens_per_s": round(r.plan.predicted_prompt_tokens_per_s, 1), "quality": r.quality,
                 "present": str(r.present) if r.present else None,
                 "file_name": r.present.name if r.present else file_name_for(name, own, r.quant)} for r in advice.rows]
        print(json.dumps({"model": model.name, "source": name, "own_quant": own, "rig": rig.name,
                          "seconds": round(advice.seconds, 2), "rows": rows}, indent=2))
        return 0
    _print_advice(advice, model, name, own)
    return 0


def _print_advice(advice, model, name: str, own) -> None:
    from .planner.placement import experts_in_ram_blocks

    print(f"{model.name} on this rig: {len(advice.rows)} plans in {advice.seconds:.1f} s "
          f"(from {name}{f', a {own} file' if own else ', a custom mix: other sizes are estimates'}).")
    groups: dict = {}
    for r in advice.rows:
        groups.setdefault((r.context, r.kv_type), []).append(r)
    for (ctx, kv), rows in groups.items():
        print(f"\ncontext {ctx:,}, KV cache {kv}:")
        print(f"  {'quant':9s} {'file GB':>8s} {'fits':12s} {'GPU layers':>10s} {'tokens/s':>9s} {'band':>13s} "
              f"{'prompt t/s':>10s}  quality (published)")
        for r in rows:
            q = r.quality
            fam = q.get("family") if q else None
            qual = "no measurement" if q is None else (f"{q['metric']} {q['value']:g} on {q['model']}" + (
                f"; {fam['metric']} {fam['value']:g} on {fam['model']}" if fam else ""))
            mark = " *on disk" if r.present else ""
            lo, hi = r.plan.speed_band
            s = r.plan.settings
            ram = len(experts_in_ram_blocks(s.overrides)) or s.moecpu if model.is_moe else 0
            if ram:  # every layer on the GPUs, some layers' experts in RAM
                mark += f"; experts of {ram} blocks in RAM" + (" (--moecpu)" if s.moecpu else " (per card)")
            print(f"  {r.quant:9s} {r.file_bytes / 1e9:8.2f} {r.status():12s} {r.plan.gpulayers:>4d}/{r.plan.n_layer + 1:<5d} "
                  f"{r.tokens_per_s:9.2f} {f'{lo:.1f}-{hi:.1f}':>13s} {r.plan.predicted_prompt_tokens_per_s:10.0f}  {qual}"
                  f"{' [needs an imatrix]' if r.needs_imatrix else ''}{mark}")
    print("\nfits: the fastest plan fits (tight: less than a layer of room on a card); band: the held-out error of "
          "the speed model for such plans; quality: the published loss against the 16-bit model (kld: KL "
          "divergence; delta_ppl: perplexity increase), on the model named.")


def _machines(plan, rig) -> list[str]:
    """The PC of each of the plan's devices (the CPU / RAM row is this PC)."""
    from .hardware.cluster import LOCAL, machine_of

    return [machine_of(rig, rig.gpus[d.gpu_index]) if d.gpu_index is not None else LOCAL for d in plan.devices]


def _machine_groups(plan, rig) -> list[tuple[str, list[int]]]:
    """The plan's devices by the PC they are in (other PCs first, in engine order; this PC and its RAM
    last), each with a title line: one picture of the cluster. A single PC is one untitled group."""
    from .hardware.cluster import LOCAL, node_of

    groups: dict[str, tuple[str, list[int]]] = {}
    for k, d in enumerate(plan.devices):
        g = rig.gpus[d.gpu_index] if d.gpu_index is not None else None
        node = node_of(rig, g) if g is not None and g.is_remote else None
        key = node.address if node else (g.node if g is not None and g.is_remote else "")
        if key not in groups:
            if not key:
                title = f"{LOCAL}:"
            elif node and node.link:
                how = "measured" if node.link.measured else "given"
                title = (f"{node.label}: link {node.link.rtt_ms:.2f} ms round trip, "
                         f"{node.link.throughput_mbs:,.0f} MB/s ({how})")
            else:
                title = f"{node.label if node else key}: link not measured"
            groups[key] = (title, [])
        groups[key][1].append(k)
    return list(groups.values())


def _print_plan(plan, rig, cmd, objective, demo) -> None:
    s = plan.settings
    print(f"{plan.model_name} on {rig.name}{' (simulated)' if rig.simulated else ''}: context {plan.context} "
          f"({plan.kv_cells} cells), KV {'/'.join(s.kv_types())}, flash attention {'on' if s.flash_attn else 'off'}, "
          f"batch {s.batch}, gpulayers {plan.gpulayers}/{plan.n_layer + 1}"
          + (f", moecpu {s.moecpu}" if s.moecpu else "") + (f"  [auto-fit: {objective}]" if objective else ""))
    head = ("device", "layers", "weights", "KV", "compute", "overhead", "total", "usable", "headroom", "fits")
    rows = []
    for d in plan.devices:
        rows.append((d.name, str(d.layers), _mib(d.weights_bytes), _mib(d.kv_bytes), _mib(d.compute_bytes),
                     _mib(d.overhead_bytes), _mib(d.total_bytes), _mib(d.usable_bytes), _mib(d.headroom_bytes),
                     {"fits": "yes", "tight": "TIGHT", "short": "NO (OOM)"}[d.state]))
    groups = _machine_groups(plan, rig)
    pad = "  " if len(groups) > 1 else ""
    widths = [max(len(r[i]) for r in rows + [head]) + (len(pad) if i == 0 else 0) for i in range(len(head))]
    fmt = lambda r: "  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r))  # noqa: E731
    print("(MiB)")
    print(fmt(head))
    for title, members in groups:
        if pad:
            print(title)
        for k in members:
            print(fmt((pad + rows[k][0],) + rows[k][1:]))
    net = getattr(plan.speed_inputs, "network_s", 0.0)
    if net:
        print(f"  network: {net * 1000:.1f} ms per generated token (round trips and activations to the other PCs)")
    if plan.cpu.mmap_bytes:
        print(f"  CPU weights are memory-mapped: {_mib(plan.cpu.mmap_bytes)} MiB live in the page cache.")
    for r in plan.reasons():
        print(f"  ! {r}")
    for w in plan.warnings:
        print(f"  note: {w}")
    lo, hi = plan.speed_band
    # the band is the held-out error of plans like this one: its regime, quant family and device class
    kind = f"{plan.speed_family} on {plan.speed_class}" if plan.speed_family else ""
    kind += f": {plan.speed_band_note}" if plan.speed_band_note else ""
    head = (f"{lo:.1f}-{hi:.1f} tokens/s ({plan.speed_caveat}), the speed model's {plan.predicted_tokens_per_s:.1f}"
            if plan.speed_caveat else f"{plan.predicted_tokens_per_s:.1f} tokens/s, likely {lo:.1f}-{hi:.1f}")
    print(f"Predicted generation: {head} "
          + (f"[{kind}] " if kind else "") +
          f"({plan.tokens_per_s_full:.1f} at full context; prompt processing, rough: "
          f"{plan.predicted_prompt_tokens_per_s:.0f} tokens/s)")
    print("Fits." if plan.fits else "Does NOT fit.")
    for line in plan.explanation:
        print(f"  {line}")
    print("Command line:" if os.name != "nt" else "Command line (cmd.exe):")
    print("  " + (cmd.shell_line() if os.name != "nt" else cmd.cmd_line()))


def cmd_skeleton(args) -> int:
    from .model import list_presets, load_preset, read_model, write_skeleton

    if args.list or not args.preset:
        for k in list_presets():
            p = load_preset(k)
            print(f"{k:34s} {p.name} ({p.architecture}, {p.recipe})")
        return 0
    if not args.out:
        raise UserError("Give the output file: phoenix skeleton PRESET OUT.gguf")
    try:  # a skeleton is a .gguf, so only an existing file's own --force may replace it
        if os.path.lexists(args.out) and not args.force:
            raise UserError(f"{args.out} already exists; give --force to replace it, or choose another name.")
        if os.path.lexists(args.out) and not os.path.isfile(args.out):
            raise UserError(f"{args.out} exists and is not a regular file; Phoenix does not write over it.")
        p = load_preset(args.preset)
        out = write_skeleton(p, args.out, random_data=args.random)
    except ValueError as e:
        raise UserError(str(e)) from None
    except OSError as e:
        raise UserError(f"Cannot write {args.out} ({e.strerror or e}).") from None
    m = read_model(out)
    size = out.stat().st_size
    on_disk = getattr(out.stat(), "st_blocks", 0) * 512
    info = {"path": str(out), "preset": p.key, "apparent_bytes": size, "disk_bytes": on_disk,
            "published_gb": p.published_gb, "tensors": sum(len(l.tensors) for l in m.layers) + len(m.input_tensors) + len(m.output_tensors)}
    if p.published_gb:
        info["vs_published_percent"] = round((size / 1e9 / p.published_gb - 1) * 100, 3)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        extra = f", {info['vs_published_percent']:+.2f}% vs the published {p.published_gb} GB" if p.published_gb else ""
        print(f"Wrote {out}: {size / 1e9:.3f} GB apparent, {on_disk / 1e6:.1f} MB on disk, {info['tensors']} tensors{extra}.")
    return 0


def _plan_for_launch(args):
    from .planner import make_plan
    from .planner.autofit import auto_fit

    if not args.model:
        raise UserError("Give the model file to launch.")
    _check_launch_args(args)
    rig = _calibrated(args, _load_rig(args, False))
    model, model_path = _load_model(args)
    settings = _settings_from_args(args, rig, model)
    plan = auto_fit(model, rig, settings, args.auto).plan if args.auto else make_plan(model, rig, settings)
    return rig, model, model_path, plan


def _start(args, rig, model, model_path, plan, quiet: bool):
    """Drive the launch machine until the server is ready; one sentence (exit 2) when it is not."""
    from .backends.lifecycle import LaunchMachine, State
    from .backends.processes.states import wait_while

    m = LaunchMachine(plan, rig, model, model_path, args.exe, auto_retry=args.retries > 0,
                      attempts=args.retries + 1, timeout=args.timeout)
    if not quiet:
        m.on_lines(lambda batch: print("\n".join(batch), flush=True))

        def told(old, new, info):
            s = info.get("settings")
            if new is State.RETRYING and s is not None:
                print(f"phoenix: retrying with a smaller plan: gpulayers {s.gpulayers}, split {s.tensor_split}",
                      file=sys.stderr)

        m.on_transition(told)
    m.start()
    try:
        wait_while(m, {State.LOADING})
    except KeyboardInterrupt:
        m.stop()
        raise UserError("Loading was cancelled.") from None
    if m.state is not State.READY:
        m.stop()
        log = m.outcome.log_path if m.outcome else None
        raise UserError(m.message + (f" (log: {log})" if log else ""))
    return m


def cmd_launch(args) -> int:
    from .backends.processes.process import stop_on_signals

    with stop_on_signals():  # SIGTERM and SIGHUP (a closed terminal) stop the server as Ctrl-C does
        return _launch(args)


def _launch(args) -> int:
    from .backends.lifecycle import State
    from .backends.processes.states import wait_while

    rig, model, model_path, plan = _plan_for_launch(args)
    m = _start(args, rig, model, model_path, plan, quiet=False)
    la, out = m.launch, m.outcome
    print(f"phoenix: ready in {out.ready_s:.1f} s at http://{la.host}:{la.port} — Ctrl-C stops it", file=sys.stderr)
    for w in out.warnings:
        print(f"phoenix: warning: {w}", file=sys.stderr)
    for c in out.comparison:
        if c.actual_bytes is not None:
            print(f"phoenix: {c.name}: predicted {_mib(c.predicted_bytes)} MiB, actual {_mib(c.actual_bytes)} MiB",
                  file=sys.stderr)
    try:
        wait_while(m, set(State) - {State.STOPPED, State.FAILED})  # until the server stops or fails
    except KeyboardInterrupt:
        print("phoenix: stopping the server…", file=sys.stderr)
        m.stop()
        return 0
    print(f"phoenix: {m.message} (log: {la.log_path})", file=sys.stderr)
    return 1


def cmd_bench(args) -> int:
    from .backends.processes.process import stop_on_signals

    with stop_on_signals():  # the server is stopped on SIGTERM and SIGHUP too
        return _bench(args)


def _bench(args) -> int:
    from .backends.lifecycle import State
    from .backends.processes.states import wait_while

    rig, model, model_path, plan = _plan_for_launch(args)
    m = _start(args, rig, model, model_path, plan, quiet=True)
    try:
        m.benchmark(args.prompt_tokens, args.gen_tokens, args.repeats)
        ended = wait_while(m, {State.BENCHMARKING})
    finally:
        la, out = m.launch, m.outcome
        m.stop()
    res = m.benchmarked.result if m.benchmarked else None
    if res is None:
        raise UserError(m.message if ended is not State.BENCHMARKING else "The benchmark did not finish.")
    d = {"ready_s": round(out.ready_s, 3), "prompt_tokens": res.prompt_tokens,
         "prompt_tokens_per_s": round(res.prompt_tokens_per_s, 2), "gen_tokens": res.gen_tokens,
         "gen_tokens_per_s": round(res.gen_tokens_per_s, 2),
         "gen_repeats_tokens_per_s": [round(x, 2) for x in res.gen_repeats],
         "spread": None if res.spread is None else round(res.spread, 4),
         "predicted_tokens_per_s": round(la.plan.predicted_tokens_per_s, 2),
         "predicted_prompt_tokens_per_s": round(la.plan.predicted_prompt_tokens_per_s, 1),
         "devices": [{"name": c.name, "predicted_bytes": c.predicted_bytes, "actual_bytes": c.actual_bytes}
                     for c in out.comparison],
         "warnings": out.warnings, "argv": la.command.argv, "log": str(out.log_path), "fingerprint": res.fingerprint}
    if args.json:
        print(json.dumps(d, indent=2))
    else:
        print(f"ready in {d['ready_s']} s; prompt {d['prompt_tokens']} tokens at {d['prompt_tokens_per_s']} tokens/s "
              f"(predicted, rough: {d['predicted_prompt_tokens_per_s']}); generation {d['gen_tokens']} tokens at "
              f"{d['gen_tokens_per_s']} tokens/s (predicted {d['predicted_tokens_per_s']})"
              + (f", the mean of {len(res.gen_repeats)} repeats spread {res.spread:.1%}" if res.spread is not None else ""))
        for dev in d["devices"]:
            act = "—" if dev["actual_bytes"] is None else f"{_mib(dev['actual_bytes'])} MiB"
            print(f"  {dev['name']}: predicted {_mib(dev['predicted_bytes'])} MiB, actual {act}")
        for w in d["warnings"]:
            print(f"  warning: {w}")
    return 0


def _calibrated(args, rig):
    """The rig with this PC's calibration for the chosen engine, when one applies (phoenix tune)."""
    from .backends.calibrations import find
    from .planner.calibration import with_calibration

    cal, note = find(rig, args.backend)
    if note:
        print(f"phoenix: {note}", file=sys.stderr)
    return with_calibration(rig, cal)


def cmd_tune(args) -> int:
    """Measure candidate plans with the real engine, learn this PC, keep the fastest."""
    from .backends.calibrations import check_export, describe, export_to, find, import_from
    from .backends.processes.process import engine_version
    from .backends.processes.states import wait_while
    from .backends.tune import Tuner, TuneState
    from .engines import engine_named
    from .planner import PlanSettings

    if args.import_file:
        try:
            cal = import_from(args.import_file)
        except v.InputError as e:
            raise UserError(str(e)) from None
        print(f"Imported: {describe(cal)}, {cal.key.get('engine')} {cal.key.get('version')}; it applies on the PC "
              "with the same GPUs, driver and engine version.")
        return 0
    if not args.model:
        raise UserError("Give the model file to tune with.")
    _check_launch_args(args)
    if not 10 <= args.budget_s <= 86400:  # also refuses NaN
        raise UserError("--budget-s takes seconds between 10 and 86400.")
    try:
        v.integer(args.max_runs, "--max-runs", 2, 50)
    except v.InputError as e:
        raise UserError(str(e)) from None
    if args.export:  # checked before the tune: a bad name fails now, not after minutes of runs
        try:
            check_export(args.export, force=args.force)
        except v.InputError as e:
            raise UserError(str(e)) from None
    margin = args.margin  # the recommendation's; None: sized from what the tune measures
    if margin is not None:
        try:
            v.mib(margin, "--margin")
        except v.InputError as e:
            raise UserError(str(e)) from None
    args.margin = PlanSettings().margin_mib  # the candidates are judged against Phoenix's guess
    rig = _load_rig(args, False)
    model, model_path = _load_model(args)
    settings = _settings_from_args(args, rig, model)
    yours = settings if (args.split or args.gpulayers is not None) else None
    backend = engine_named(settings.backend)
    exe = args.exe or backend.find()
    if not exe:
        raise UserError(f"No {backend.name} program was found; give it with --exe.")
    version = engine_version(backend, exe)
    _, note = find(rig, backend.name, version)
    if note and not note.startswith("calibrated"):
        print(f"phoenix: {note}", file=sys.stderr)
    t = Tuner(model, rig, model_path, settings, exe, budget_s=args.budget_s, max_runs=args.max_runs,
              n_prompt=args.prompt_tokens, n_gen=args.gen_tokens, n_repeats=args.repeats, load_timeout=args.timeout,
              version=version,
              yours=yours, margin_mib=margin)
    if not args.json:
        t.on_run = lambda r: print(f"phoenix: run {len(t.runs)}: {r.label}, {r.split}: "
                                   + (f"{r.measured_tps:.2f} tokens/s" if r.measured_tps else r.outcome)
                                   + f" — about {t.time_left():.0f} s left", file=sys.stderr, flush=True)
        times = f", {t.n_repeats} times" if t.n_repeats > 1 else ""
        print(f"phoenix: tuning {model.name} with {backend.name} {version}: each run is {t.n_prompt} prompt tokens "
              f"then {t.n_gen} generated{times}; at most {args.max_runs} runs in {args.budget_s:.0f} s", file=sys.stderr)
    from .backends.processes.process import stop_on_signals

    try:
        with stop_on_signals():  # SIGTERM and SIGHUP cancel as Ctrl-C does: the engine and the slice files go
            t.start()
            if t.warmer is not None and not args.json:
                print(f"phoenix: {t.message}", file=sys.stderr, flush=True)  # reading a big file takes a while
            wait_while(t, {TuneState.RUNNING}, every=0.05)
    except KeyboardInterrupt:
        t.cancel()
        raise UserError("Tuning was cancelled; nothing is left running.") from None
    if t.state is not TuneState.DONE:
        raise UserError(t.message)
    if args.export:
        try:
            export_to(t.calibration, args.export, force=args.force)
        except v.InputError as e:  # the name was fine before the tune; something changed it since
            raise UserError(f"{e} The tune's result is kept on this PC.") from None
    if args.json:
        print(json.dumps(t.report(), indent=2))
        return 0
    print("\n".join(t.table()))
    for line in t.speedups():
        print(line)
    c = t.calibration
    print(f"Learned ({describe(c)}): time per layer "
          + ", ".join(f"{k} {ms:.3f} ms" for k, ms in c.per_layer_ms.items())
          + f"; hop cost x{c.hop_scale:.2f} of the model's")
    print(t.message + (f" Calibration exported to {args.export}." if args.export else ""))
    return 0


def cmd_gui(args) -> int:
    pages = ("hardware", "model", "context", "split", "launch", "monitor")
    if args.screenshot:
        page, out = args.screenshot
        if page not in pages:
            raise UserError(f"Unknown page {page!r}; choose one of {', '.join(pages)}.")
        try:  # an earlier screenshot may be replaced; a model or any other file may not
            v.check_writable(out, force=_is_png(out), what="screenshot")
        except v.InputError as e:
            raise UserError(str(e)) from None
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
        from .ui.app import screenshot

        path = screenshot(page, out, args.gui_demo, args.gui_rig, args.gui_model)
        print(f"Wrote {path}")
        return 0
    if (sys.platform.startswith("linux") and not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY")
            and not os.environ.get("QT_QPA_PLATFORM")):
        raise UserError("No display was found, so the wizard cannot open; the command line works without one: "
                        "phoenix plan --demo")
    from .ui.desktop_check import probe

    problem = probe()  # Qt aborts the process when the desktop plugin's libraries are missing: ask first
    if problem:
        raise UserError(problem)
    try:
        from .ui.app import run
    except ImportError as e:
        raise UserError(f"The wizard needs PySide6 ({e}); the command line still works: phoenix plan --demo") from None
    return run(args.gui_demo, args.gui_rig, args.gui_model, args.gui_kcpps)


def _is_png(path: str) -> bool:
    try:  # isfile first: opening a FIFO would block
        if not os.path.isfile(path) or os.path.islink(path):
            return False
        with open(path, "rb") as f:
            return f.read(8) == b"\x89PNG\r\n\x1a\n"
    except (OSError, ValueError):
        return False


def cmd_share(args) -> int:
    """Share this PC's devices with a main PC over llama.cpp's RPC backend until Ctrl-C or SIGTERM."""
    from .backends.processes.process import stop_on_signals
    from .backends.processes.states import wait_while
    from .backends.share import ShareHost, ShareState
    from .engines import engine_named

    exe = args.exe or engine_named("koboldcpp").find()
    if not exe:
        raise UserError("No koboldcpp found on PATH; give --exe (koboldcpp, koboldcpp.py or llama.cpp's rpc-server).")
    share = ShareHost(v.text(exe, "The executable"), host=args.host, port=args.port, allow=args.allow,
                      devices=[d for d in args.devices.split(",") if d.strip()] if args.devices else None)
    for w in share.warnings():
        print(f"phoenix: warning: {w}", file=sys.stderr)
    with stop_on_signals():  # SIGTERM and SIGHUP stop the engine as Ctrl-C does
        try:
            print(f"phoenix: starting {Path(exe).name} in RPC host mode…", file=sys.stderr)
            share.start(timeout=args.timeout)
            names = ", ".join(d.get("name", "?") for d in share.info()["devices"]) or "its devices"
            print(f"phoenix: sharing {names} (RPC protocol {share.version}); Ctrl-C stops it", file=sys.stderr)
            print("On the main PC, add this PC as: " + " or ".join(share.addresses_to_type()), flush=True)
            wait_while(share, {ShareState.SHARING}, every=0.2)  # until Ctrl-C, or the engine ends by itself
            lines = [s for s in share.output() if s.strip()][-1:]
            print(f"phoenix: the engine stopped (exit code {share.poll()}){': ' + lines[0] if lines else ''}",
                  file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("phoenix: stopping…", file=sys.stderr)
            return 0
        finally:
            share.stop()


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="phoenix", description="Plan and run big GGUF models on mismatched NVIDIA GPUs.")
    ap.add_argument("--version", action="version", version=f"phoenix {__version__}")
    ap.add_argument("--debug", action="store_true", help="show tracebacks")
    ap.add_argument("--demo", action="store_true", dest="gui_demo",
                    help="open the wizard on the simulated Phoenix Cluster with the Qwen2.5-32B preset")
    ap.add_argument("--rig", dest="gui_rig", help="open the wizard on a simulated rig TOML")
    ap.add_argument("--model", dest="gui_model", help="open the wizard with this .gguf")
    ap.add_argument("--kcpps", dest="gui_kcpps", help="open the wizard with this koboldcpp config imported")
    ap.add_argument("--self-test", action="store_true",
                    help="check this installation offscreen (imports, wizard, a plan) and exit")
    ap.add_argument("--screenshot", nargs=2, metavar=("PAGE", "OUT.png"),
                    help="render a wizard page (hardware, model, context, split, launch, monitor) to a PNG and exit")
    sub = ap.add_subparsers(dest="command")

    d = sub.add_parser("detect", help="show the GPUs, RAM and CPU")
    d.add_argument("--rig", help="a simulated rig TOML instead of this machine")
    d.add_argument("--demo", action="store_true", help="the demo rig (Phoenix Cluster)")
    d.add_argument("--no-bandwidth", action="store_true", help="skip the RAM bandwidth measurement")
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=cmd_detect)

    i = sub.add_parser("inspect", help="read a GGUF model's header")
    i.add_argument("model", nargs="?")
    i.add_argument("--preset", help="a model preset instead of a file")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=cmd_inspect, demo=False)

    p = sub.add_parser("plan", help="place layers, predict memory and speed, print the command line")
    _plan_args(p, launching=False)
    p.set_defaults(func=cmd_plan)

    la = sub.add_parser("launch", help="launch the server with a plan and keep it running until Ctrl-C")
    _plan_args(la, launching=True)
    la.set_defaults(func=cmd_launch, demo=False, preset=None, kcpps=None, script=None, json=False)

    b = sub.add_parser("bench", help="launch, wait until ready, benchmark, stop")
    _plan_args(b, launching=True)
    b.add_argument("--prompt-tokens", type=int, default=512)
    b.add_argument("--gen-tokens", type=int, default=128)
    b.add_argument("--repeats", type=int, default=1, help="run the benchmark this many times on the loaded model "
                   "and report the mean and the spread (default 1)")
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=cmd_bench, demo=False, preset=None, kcpps=None, script=None)

    tu = sub.add_parser("tune", help="measure candidate plans on this PC, learn it, keep the fastest")
    _plan_args(tu, launching=True)
    tu.add_argument("--budget-s", type=float, default=300.0, help="time for the whole tune (default 300 s)")
    tu.add_argument("--max-runs", type=int, default=6, help="measured runs at most, the final check included")
    tu.add_argument("--prompt-tokens", type=int, default=128, help="prompt tokens of every run's benchmark")
    tu.add_argument("--gen-tokens", type=int, default=32, help="generated tokens of every run's benchmark")
    tu.add_argument("--repeats", type=int, default=3, help="times every run's benchmark is repeated on the loaded "
                    "model: the mean is the run's speed, the spread its noise (default 3)")
    tu.add_argument("--export", metavar="FILE", help="also write the calibration to this file")
    tu.add_argument("--import", dest="import_file", metavar="FILE", help="keep a calibration shared as a file, then stop")
    tu.add_argument("--force", action="store_true", help="let --export replace an existing file")
    tu.add_argument("--json", action="store_true")
    # --margin (from the plan options) is the recommendation's here; unset, the tune sizes it from what it measured
    tu.set_defaults(func=cmd_tune, demo=False, preset=None, kcpps=None, script=None, margin=None)
    next(a for a in tu._actions if a.dest == "margin").help = (
        "MiB the recommendation keeps free per GPU (default: sized from what the tune measured; "
        "the runs themselves may use it)")

    ad = sub.add_parser("advise", help="which quant, context and KV cache type to run on this PC: every one planned")
    ad.add_argument("model", nargs="?", help="a .gguf of the model, any quant (any part of a split model)")
    ad.add_argument("--preset", help="a model preset instead of a file")
    ad.add_argument("--demo", action="store_true", help="the demo rig and the Qwen2.5-32B preset")
    ad.add_argument("--rig", help="a simulated rig TOML")
    ad.add_argument("--rpc", metavar="HOST:PORT,...", help="other PCs sharing their devices (phoenix share)")
    ad.add_argument("--no-bandwidth", action="store_true", help="skip the RAM bandwidth measurement")
    ad.add_argument("--ctx", type=int, nargs="+", metavar="N", help="contexts to plan (default: 2k doubling up to "
                    "the model's trained context)")
    ad.add_argument("--kv", nargs="+", choices=["f16", "q8_0", "q4_0"], help="KV cache types (default: all three)")
    ad.add_argument("--quant", nargs="+", metavar="TYPE", help="quant types to plan (default: the common ones)")
    ad.add_argument("--all-quants", action="store_true", help="every standard llama-quantize type")
    ad.add_argument("--backend", default="koboldcpp", choices=["koboldcpp", "llama-server"])
    ad.add_argument("--margin", type=float, default=256.0, metavar="MIB", help="safety margin per GPU (default 256)")
    ad.add_argument("--json", action="store_true")
    ad.set_defaults(func=cmd_advise, exe=None)

    k = sub.add_parser("skeleton", help="write a sparse GGUF with a preset's real header and tensor shapes")
    k.add_argument("preset", nargs="?")
    k.add_argument("out", nargs="?")
    k.add_argument("--list", action="store_true", help="list the presets")
    k.add_argument("--random", action="store_true", help="fill with random weights (F16/F32 presets only)")
    k.add_argument("--json", action="store_true")
    k.add_argument("--force", action="store_true", help="replace OUT if it exists")
    k.set_defaults(func=cmd_skeleton)

    sh = sub.add_parser("share", help="share this PC's GPUs with a main PC over llama.cpp's RPC backend")
    sh.add_argument("--host", default="127.0.0.1", help="the address to listen on (default 127.0.0.1: this PC only)")
    sh.add_argument("--port", type=v.port, default=50052, help="the RPC port (default 50052; info on the next one)")
    sh.add_argument("--devices", help="the engine's devices to share, such as 0,1 or CUDA0,CUDA1 (default: all)")
    sh.add_argument("--allow", help="only these client addresses or networks may connect (192.168.1.20,10.0.0.0/24)")
    sh.add_argument("--exe", help="koboldcpp, koboldcpp.py or llama.cpp's rpc-server (default: koboldcpp on PATH)")
    sh.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the engine to listen")
    sh.set_defaults(func=cmd_share)
    return ap


def _plan_args(p, launching: bool) -> None:
    p.add_argument("model", nargs="?", help="a .gguf file (any part of a split model)")
    if not launching:
        p.add_argument("--demo", action="store_true", help="the demo rig and the Qwen2.5-32B preset, no GPU or file needed")
        p.add_argument("--preset", help="a model preset instead of a file (see phoenix skeleton --list)")
    else:
        p.add_argument("--retries", type=int, default=2, help="smaller-plan retries after an out-of-memory (default 2)")
        p.add_argument("--timeout", type=float, default=1800, help="seconds to wait for the server to load")
    p.add_argument("--rig", help="a simulated rig TOML")
    p.add_argument("--rpc", metavar="HOST:PORT,...",
                   help="other PCs sharing their devices over RPC (phoenix share there): asked, measured, placed first")
    p.add_argument("--no-bandwidth", action="store_true", help="skip the RAM bandwidth measurement")
    p.add_argument("--ctx", type=int, default=None,
                   help="context size in tokens (default 4096, or the model's trained context when smaller)")
    p.add_argument("--kv", default="f16", choices=["f16", "bf16", "q8_0", "q5_1", "q5_0", "q4_1", "q4_0", "iq4_nl", "f32"])
    p.add_argument("--no-flash-attn", action="store_true")
    p.add_argument("--batch", type=int, default=512, help="batch size (n_ubatch), default 512")
    p.add_argument("--gpulayers", type=int, help="layers to offload incl. the output layer (default: all)")
    p.add_argument("--split", type=float, nargs="+", metavar="W", help="tensor split weights in device order")
    p.add_argument("--devices", help="GPU indices to use, in order, e.g. 1,0,2 (default: all)")
    p.add_argument("--moecpu", type=int, default=0, help="keep the experts of the first N layers in RAM")
    p.add_argument("--split-mode", default="layer", choices=["layer", "row"])
    p.add_argument("--parallel", type=int, default=1, metavar="N",
                   help="parallel slots sharing the context (llama-server -np, koboldcpp --parallelrequests)")
    p.add_argument("--override-tensors", metavar="RE=DEV,...",
                   help="tensor overrides, first match wins: e.g. 'ffn_.*_exps=CPU' (DEV: CPU or CUDA<n>, the n-th GPU)")
    p.add_argument("--era", default="current", choices=["current", "old"], help="n_gpu_layers rule (old: builds before Dec 2025)")
    p.add_argument("--overhead", type=float, metavar="MIB", help="CUDA context + runtime per GPU (default 300 Linux, 450 Windows)")
    p.add_argument("--margin", type=float, default=256.0, metavar="MIB", help="safety margin per GPU (default 256)")
    p.add_argument("--display-reserve", type=float, metavar="MIB", help="extra room on a GPU driving a display (default 256/512)")
    p.add_argument("--auto", choices=["fastest", "context", "headroom"], help="auto-fit with this objective")
    p.add_argument("--backend", default="koboldcpp", choices=["koboldcpp", "llama-server"])
    p.add_argument("--exe", help="the server executable or koboldcpp.py")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5001)
    if not launching:
        p.add_argument("--kcpps", help="also write a koboldcpp .kcpps config here")
        p.add_argument("--script", help="also write a launcher (.bat or .sh) here")
        p.add_argument("--force", action="store_true", help="replace an existing --kcpps/--script file (never a model)")
        p.add_argument("--json", action="store_true")


def _open_with(argv: list[str]) -> list[str]:
    """`phoenix FILE` (Windows "Open with Phoenix", drag onto the icon): a .gguf or .kcpps opens the wizard."""
    if len(argv) == 1 and not argv[0].startswith("-"):
        low = argv[0].lower()
        if low.endswith(".gguf"):
            return ["--model", argv[0]]
        if low.endswith((".kcpps", ".kcppt")):
            return ["--kcpps", argv[0]]
    return argv


def self_test() -> int:
    """What a frozen build must be able to do: every module imports, the wizard builds, a plan computes."""
    import importlib
    import pkgutil
    import tempfile

    from .ui.desktop_check import needs_probe, probe

    # The wizard below builds offscreen; the desktop plugin the real window needs is checked apart.
    desktop = "desktop plugin loads" if needs_probe() else "no display, offscreen only"
    problem = probe()
    if problem:
        print(f"phoenix self-test FAILED: {problem}", file=sys.stderr)
        return 1
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ["PHOENIX_CONFIG_DIR"] = tempfile.mkdtemp(prefix="phoenix-selftest-")
    import phoenix_gui

    # not __main__: importing it runs main() again, a second self-test inside this one
    names = [m.name for m in pkgutil.walk_packages(phoenix_gui.__path__, "phoenix_gui.") if m.name != "phoenix_gui.__main__"]
    for n in names:
        importlib.import_module(n)
    from .ui.app import self_test_gui

    plan, argv = self_test_gui()
    import pynvml  # noqa: F401 - the GPU library must be bundled even where no driver exists

    print(f"phoenix self-test OK: {len(names)} modules, wizard built, demo plan {plan.predicted_tokens_per_s:.1f} "
          f"tokens/s on {len(plan.gpus)} GPUs, {len(argv)} launch arguments, {desktop}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(_open_with(list(sys.argv[1:] if argv is None else argv)))
    if args.self_test:
        try:
            return self_test()
        except Exception as e:  # noqa: BLE001 - the reason, for the build log
            print(f"phoenix self-test FAILED: {type(e).__name__}: {e}", file=sys.stderr)
            return 1
    if not getattr(args, "func", None):
        args.func = cmd_gui
    try:
        return args.func(args)
    except NodeUnavailable as e:
        print(f"phoenix: {e}", file=sys.stderr)
        return 1
    except (UserError, v.InputError) as e:
        print(f"phoenix: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except Exception as e:  # noqa: BLE001 - one sentence, never a traceback, unless asked
        if args.debug:
            raise
        print(f"phoenix: unexpected error ({type(e).__name__}: {e}); run with --debug for details.", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
