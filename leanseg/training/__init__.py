"""Training: one loop for every registered task (``train``), its run options (``TrainConfig``) and result."""

from leanseg.training.loop import TrainConfig, TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "train"]
