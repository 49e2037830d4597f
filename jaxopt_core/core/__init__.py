"""The optimizer core: the protocol, its building blocks, the optimizers and schedules.

Nothing here knows about training loops: every function is a pure map over
pytrees. Layers above (regularization, training, app) import from here, never
the other way round.
"""
