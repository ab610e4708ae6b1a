from .context import ContextPage
from .hardware import HardwarePage
from .launch import LaunchPage
from .model import ModelPage
from .monitor import MonitorPage
from .split import SplitPage

__all__ = ["ContextPage", "HardwarePage", "LaunchPage", "ModelPage", "MonitorPage", "SplitPage"]
