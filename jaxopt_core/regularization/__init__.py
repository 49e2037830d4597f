"""Regularization: L1/L2/elastic-net penalties, their proximal operators,
proximal-gradient methods (ISTA, FISTA) and the regularization path.

Builds on :mod:`jaxopt_core.core` only.
"""
