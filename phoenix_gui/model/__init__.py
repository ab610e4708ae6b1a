from .errors import ModelFileError
from .info import LayerInfo, ModelInfo, TensorInfo, read_model
from .presets import ModelPreset, list_presets, load_preset
from .skeleton import preset_model_info, write_skeleton

__all__ = ["ModelFileError", "LayerInfo", "ModelInfo", "TensorInfo", "read_model", "ModelPreset",
           "list_presets", "load_preset", "preset_model_info", "write_skeleton"]
