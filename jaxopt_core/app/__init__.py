"""The ``jaxopt-core`` command-line application: built-in datasets and models,
the CLI and its report. A library user never needs to import it; it uses only
the public API of the layers below.
"""
