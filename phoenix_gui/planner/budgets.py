"""What out-of-memory failures taught about each GPU: plain numbers per GPU UUID, carried in the plan's
settings (PlanSettings.budgets) from one retry to the next and through the tuner (planner/recovery.py
learns and applies them)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..hardware.rig import MIB


@dataclass
class Budget:
    """What failures showed about one GPU."""
    free_cap_bytes: int | None = None  # the card held less than this
    extra_per_layer_bytes: int = 0  # the engine needs this much more per layer than predicted
    # a load of a plan this large (the bare plan's bytes, less one MiB) ran out of memory on the card with no
    # size logged: the card held less than this plus the engine's excess over the plan there (see cap)
    plan_cap_bytes: int | None = None

    def cap(self, excess_bytes: int = 0) -> int | None:
        """The most the card can hold, given the engine's measured excess over the plan on it."""
        caps = [c for c in (self.free_cap_bytes,
                            None if self.plan_cap_bytes is None else self.plan_cap_bytes + max(0, excess_bytes))
                if c is not None]
        return min(caps) if caps else None

    def to_dict(self) -> dict:
        out = {"free_cap_mib": None if self.free_cap_bytes is None else self.free_cap_bytes / MIB,
               "extra_per_layer_mib": self.extra_per_layer_bytes / MIB}
        if self.plan_cap_bytes is not None:
            out["plan_cap_mib"] = self.plan_cap_bytes / MIB
        return out

    @staticmethod
    def from_dict(d: dict) -> "Budget":
        cap, plan = d.get("free_cap_mib"), d.get("plan_cap_mib")
        return Budget(None if cap is None else int(float(cap) * MIB), int(float(d.get("extra_per_layer_mib", 0)) * MIB),
                      None if plan is None else int(float(plan) * MIB))


@dataclass
class Budgets:
    by_uuid: dict[str, Budget] = field(default_factory=dict)

    def get(self, uuid: str) -> Budget:
        return self.by_uuid.get(uuid, Budget())

    def to_dict(self) -> dict:
        return {u: b.to_dict() for u, b in self.by_uuid.items()}

    @staticmethod
    def from_settings(s) -> "Budgets":
        """The corrections a plan's settings carry (PlanSettings.budgets), as a copy to add to."""
        return Budgets(dict(s.budgets.by_uuid))

    def into(self, s):
        """These settings carrying these corrections (a PlanSettings; not part of the plan's identity)."""
        return s.with_(budgets=self)
