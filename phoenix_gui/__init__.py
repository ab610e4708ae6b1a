"""Phoenix: plan and run big GGUF models on mismatched NVIDIA GPUs."""

__version__ = "0.1.0"
