"""Latency backends, the measurement protocol, the meter, the latency cache and predictor.

Import the modules themselves (``autoprune.hardware.meter``...): this package imports nothing.
"""
