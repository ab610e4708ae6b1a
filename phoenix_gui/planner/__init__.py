"""Layer placement, per-device memory, speed and auto-fit: pure functions over plain dataclasses."""

from .ledger import DevicePlan, Plan
from .placement import normalise_split, plan_layers
from .plan import make_plan
from .settings import PlanSettings

__all__ = ["DevicePlan", "Plan", "PlanSettings", "make_plan", "normalise_split", "plan_layers"]
