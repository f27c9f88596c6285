"""Fine-tuning, distillation and evaluation loops."""
from autoprune.training.finetune import TrainingDiverged, evaluate, fine_tune, test_score

__all__ = ["TrainingDiverged", "evaluate", "fine_tune", "test_score"]
