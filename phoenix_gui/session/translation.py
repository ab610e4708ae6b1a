"""The one translation between what a user sets and the planner's PlanSettings: the wizard's controls
(device order, ticks, shares, locks), the saved settings (UserSettings) and the command line's plan arguments.
Auto-fit, .kcpps import, saved settings and the out-of-memory retry all reach the wizard through
`apply_to_state`; the CLI builds its PlanSettings through `settings_from_args`. `st` below is the wizard's
session (session/state.py WizardState), which calls into this module: it is not imported here."""

from __future__ import annotations

from .. import validate as v
from ..config import UserSettings
from ..engines.options import parse_overrides
from ..planner import PlanSettings
from ..planner.settings import BACKENDS, CACHE_TYPES, OBJECTIVES
from .events import CONTEXT, DEVICES, LAUNCH, SPLIT, checked


def plan_settings(st) -> PlanSettings:
    """The wizard's controls as the planner's settings."""
    devs = st.devices
    split = tuple(st.shares.get(i, 0.0) for i in devs) if devs else None
    return PlanSettings(
        context=st.context, cache_type_k=st.cache_type, cache_type_v=st.cache_type,
        flash_attn=st.flash_attn, batch=st.batch, gpulayers=st.gpulayers if devs else 0, tensor_split=split,
        moecpu=st.moecpu if st.model and st.model.is_moe else 0, backend=st.backend,
        devices=tuple(devs), host=st.host, port=st.port, margin_mib=st.margin_mib,
        overrides=st.overrides if devs else (), threads=st.threads, use_mmap=st.use_mmap,
        engine_options=st.engine_options,
    )


def apply_to_state(st, s: PlanSettings, chosen: bool = True) -> None:
    """Set every control from PlanSettings. Devices keep the user's order for the chosen GPUs,
    left-out ones after them; a missing split starts from llama.cpp's default (free memory). chosen=False:
    auto-fit's answer, which is not the user's own split."""
    n = len(st.rig.gpus)
    if s.devices is not None:
        checked(v.devices, s.devices, n)  # a GPU twice would be counted twice
    picked = list(dict.fromkeys(i for i in (s.devices if s.devices is not None else range(n)) if 0 <= i < n))
    if s.tensor_split and sum(s.tensor_split) > 0:
        checked(v.split, s.tensor_split, len(picked))  # more values than GPUs are refused, never dropped
    with st.grouped():
        rest = [i for i in st.order if i not in picked]
        st.order = st._engine_order(picked + rest + [i for i in range(n) if i not in picked + rest])
        st.included = set(picked)
        st.locked = st.locked & st.included
        ts = [float(x) for x in (s.tensor_split or ())]
        if ts and sum(ts) > 0:
            ts = ts[:len(picked)] + [0.0] * max(0, len(picked) - len(ts))
            st.shares = dict(zip(picked, ts))  # keyed by device: the engine's order does not move them
        else:
            st.reset_shares()
        st._set_gpulayers(s.gpulayers)
        st.context = max(256, int(s.context))
        st.cache_type = s.cache_type_k if s.cache_type_k in CACHE_TYPES else "f16"
        st.flash_attn, st.batch = bool(s.flash_attn), int(s.batch)
        st.margin_mib = checked(v.mib, s.margin_mib, "The safety margin (MiB)")  # a tune's winner keeps its own
        st.moecpu = max(0, int(s.moecpu))
        st.overrides = tuple(tuple(o) for o in s.overrides)
        st.threads = None if not s.threads else checked(v.integer, s.threads, "threads", 1, 4096)
        st.use_mmap = s.use_mmap
        st.engine_options = checked(v.engine_options, s.engine_options)
        st.backend = s.backend if s.backend in BACKENDS else "koboldcpp"
        st.host, st.port = s.host, int(s.port)
        st.split_chosen = picked and bool(s.tensor_split or s.gpulayers is not None)
        st._emit(DEVICES, SPLIT, CONTEXT, LAUNCH)


def to_user_settings(st, us: UserSettings) -> UserSettings:
    """The wizard's controls into the saved settings (this PC's devices by uuid, other PCs by address)."""
    us.context, us.cache_type, us.flash_attn, us.batch = st.context, st.cache_type, st.flash_attn, st.batch
    us.moecpu, us.gpulayers, us.backend = st.moecpu, st.gpulayers, st.backend
    us.overrides = [list(o) for o in st.overrides]
    us.threads, us.use_mmap, us.engine_options = st.threads, st.use_mmap, dict(st.engine_options)
    us.host, us.port, us.objective = st.host, st.port, st.objective
    if st.executable:
        us.executables[st.backend] = st.executable
    if st.model_path:
        us.model_path = st.model_path
    if not st.rig.simulated:  # a simulated rig's GPUs are not this PC's: keep the real PC's split
        # this PC's devices only: other PCs are described again at the next start, and their devices
        # get their share then
        local = [i for i in st.devices if not st.rig.gpus[i].is_remote]
        # a PC without GPUs (or with every card unticked) has no split: None, never [], which is no split
        us.split = [st.shares.get(i, 0.0) for i in local] or None
        has_gpus = any(not g.is_remote for g in st.rig.gpus)
        us.devices = [st.rig.gpus[i].uuid for i in local] if has_gpus else None
        us.nodes = list(dict.fromkeys([n.address for n in st.nodes] + list(st.unreachable) + st.saved_nodes))
    return us


def from_user_settings(us: UserSettings, rig) -> PlanSettings:
    """Saved settings as PlanSettings on this rig: the saved devices (by uuid) and split only when every one
    of those devices is still here."""
    by_uuid = {g.uuid: i for i, g in enumerate(rig.gpus)}
    known = us.devices is not None and all(u in by_uuid for u in us.devices)
    devices = tuple(by_uuid[u] for u in us.devices) if known else None
    split = tuple(us.split) if known and us.split and len(us.split) == len(devices) else None
    return PlanSettings(context=us.context, cache_type_k=us.cache_type, cache_type_v=us.cache_type,
                        flash_attn=us.flash_attn, batch=us.batch, gpulayers=us.gpulayers, tensor_split=split,
                        moecpu=us.moecpu, backend=us.backend, devices=devices, host=us.host, port=us.port,
                        overrides=tuple(tuple(o) for o in us.overrides), threads=us.threads, use_mmap=us.use_mmap,
                        engine_options=tuple(us.engine_options.items()))


def apply_user_settings(st, us: UserSettings) -> None:
    with st.grouped():
        st.apply(from_user_settings(us, st.rig))
        st.saved_nodes = [a for a in us.nodes if a not in {n.address for n in st.nodes}]
        st.objective = us.objective if us.objective in OBJECTIVES else "fastest"
        st.executable = us.executables.get(st.backend)


# --- the command line's plan arguments ---

def settings_from_args(args, rig, context: int) -> PlanSettings:
    """PlanSettings from the CLI's plan arguments, every value checked (validate.py); raises v.InputError."""
    from ..engines import engine_for

    return PlanSettings(
        context=v.context(context, args.backend), cache_type_k=args.kv, cache_type_v=args.kv,
        flash_attn=not args.no_flash_attn, batch=v.batch(args.batch), gpulayers=_gpulayers(args.gpulayers),
        tensor_split=_split(args, rig), moecpu=v.moecpu(args.moecpu), split_mode=args.split_mode,
        parallel=v.integer(args.parallel, "--parallel", 1, 32), overrides=parse_overrides(args.override_tensors or ""),
        backend=args.backend, engine=engine_for(args.backend, args.era) if args.era == "old" else None,
        devices=_devices(args.devices, rig), host=v.host(args.host), port=v.port(args.port),
        cuda_overhead_mib=_opt_mib(args.overhead, "--overhead"), margin_mib=v.mib(args.margin, "--margin"),
        display_reserve_mib=_opt_mib(args.display_reserve, "--display-reserve"),
    )


def _gpulayers(n):
    if n is not None and n < 0:
        raise v.InputError("--gpulayers takes 0 or more layers (leave it out for all).")
    return v.gpulayers(n)


def _opt_mib(x, what: str):
    return None if x is None else v.mib(x, what)


def _devices(text: str | None, rig):
    if not text:
        return None
    try:
        ids = [int(x) for x in text.split(",")]
    except ValueError:
        raise v.InputError("--devices takes GPU indices separated by commas, e.g. 0,2.") from None
    return v.devices(ids, len(rig.gpus))


def _split(args, rig):
    if not args.split:
        return None
    n = len(args.devices.split(",")) if args.devices else len(rig.gpus)
    if n == 0:
        raise v.InputError("--split needs a GPU, and this rig has none.")
    return v.split(args.split, n)
