"""The wizard's session, free of Qt (an import-linter contract keeps it so): the evented state the pages bind
to, the devices it keeps per-device state for, and the one translation between settings and the planner's
PlanSettings. The ui binds widgets to it; the cli builds its PlanSettings through it."""

from .events import ALL_TOPICS, CONTEXT, DEVICES, LAUNCH, MODEL, NOTES, PLAN, RIG, SPLIT, SettingError
from .split import SHARE_TOTAL, parse_split
from .state import OPENED_ON_FASTEST, WizardState

__all__ = ["ALL_TOPICS", "CONTEXT", "DEVICES", "LAUNCH", "MODEL", "NOTES", "OPENED_ON_FASTEST", "PLAN", "RIG",
           "SHARE_TOTAL", "SPLIT", "SettingError", "WizardState", "parse_split"]
