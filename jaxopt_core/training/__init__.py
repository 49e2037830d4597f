"""The training engine: the jitted step, minibatching, the flat layout, ``fit``
and ``sweep`` (grid, compiled program, sharding, results) and progress.

Builds on :mod:`jaxopt_core.core` and :mod:`jaxopt_core.regularization`.
"""
