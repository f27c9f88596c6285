"""Agents (Optuna samplers of the run's study), the plan space they sample, objectives and constraints,
the one Pareto front and hypervolume, and the studies that prime a search (sensitivity, predictor calibration).

Import the modules themselves (``autoprune.search.agent``...): this package imports nothing, so
reading one module does not load Optuna and torch for the others.
"""
