"""Run folders, study storage, Pareto fronts, reports and export."""
