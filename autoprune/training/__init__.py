"""Fine-tuning, distillation and evaluation loops."""
from autoprune.training.dense import cache_dir, train_once
from autoprune.training.finetune import TrainingDiverged, evaluate, fine_tune, test_score

__all__ = ["TrainingDiverged", "cache_dir", "evaluate", "fine_tune", "test_score", "train_once"]
