"""Search strategies: ways to choose and revise the hyperparameters of a sweep.

:mod:`~jaxopt_core.training.search.axes` holds the hyperparameter
distributions (uniform, log-uniform, integers, choice), each with a pure JAX
map from uniform draws to values, so strategies that revise hyperparameters
inside the compiled program can redraw from the axis a value came from.
:mod:`~jaxopt_core.training.search.sampling` draws a sweep's grid from them
(random or scrambled Sobol points) instead of a cartesian product.
"""
