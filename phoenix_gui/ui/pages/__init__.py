from .context import ContextPage
from .hardware import HardwarePage
from .launch import LaunchPage
from .model import ModelPage
from .split import SplitPage

__all__ = ["ContextPage", "HardwarePage", "LaunchPage", "ModelPage", "SplitPage"]
