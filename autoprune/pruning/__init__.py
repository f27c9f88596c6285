"""Graph discovery, structured pruning, sparsity masks, importance criteria, save/reload."""
from autoprune.pruning.graph import Discovery, LeftOut, PrunableGroup, discover, discover_groups
from autoprune.pruning.importance import Importance
from autoprune.pruning.stats import ModelStats, model_stats
from autoprune.pruning.structured import PruneResult, apply_plan, kept_channels

__all__ = ["Discovery", "Importance", "LeftOut", "ModelStats", "PrunableGroup", "PruneResult",
           "apply_plan", "discover", "discover_groups", "kept_channels", "model_stats"]
