"""Graph discovery, structured pruning and model statistics."""
from autoprune.pruning.graph import PrunableGroup, discover_groups
from autoprune.pruning.stats import ModelStats, model_stats
from autoprune.pruning.structured import PruneResult, apply_plan, kept_channels

__all__ = ["ModelStats", "PrunableGroup", "PruneResult", "apply_plan", "discover_groups", "kept_channels",
           "model_stats"]
