"""Benchmarks of jaxopt_core against optax and against the machine's limits.

Run ``python benchmarks/run.py`` (see ``benchmarks/README.md``); the modules:

* :mod:`benchmarks.timing`: interleaved repetitions, medians, load average;
* :mod:`benchmarks.steps`: (a) one optimizer step, bytes moved, streaming ceiling, HLO audit;
* :mod:`benchmarks.training`: (b) a full training step on a 1000-leaf model;
* :mod:`benchmarks.problems`: the models and data the benchmarks train;
* :mod:`benchmarks.sweeps`: (c) learning-rate sweeps and their compile times;
* :mod:`benchmarks.memory`: (d) peak memory against the theoretical footprint;
* :mod:`benchmarks.report`: RESULTS.md, the targets and sweep_scaling.png.
"""
