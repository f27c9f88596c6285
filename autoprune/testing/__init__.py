"""Test support for autoprune and its plugins (needs the ``test`` extra: pytest).

* ``models``: pure-torch models with the shapes that break pruning tools (``TINY``: small ones).
* ``fakes``: a latency backend without a runtime (``fake``), LatencyStats in one call, a null run sink.
* ``toy``: a toy plan space and the real driver loop on a formula instead of a model (agent tests).
* ``suites``: ``AgentSuite``, ``BackendSuite``, ``ImportanceSuite``: what every plugin must pass.

Import the modules themselves; this package imports nothing.
"""
