"""The Python-float path of check_number and the plain-function path of
accepts_extra_args agree with the general (NumPy / inspect) paths (issue 14:
a sweep builds the optimizer once per member to check it)."""

import functools
import math

import numpy as np
import pytest

from jaxopt_core.core.base import Optimizer, accepts_extra_args
from jaxopt_core.core.checks import check_number

VALUES = [0.0, -0.0, 1e-300, 0.5, 1.0, 1.0 - 2**-53, -1e-9, 2.5, math.inf, -math.inf, math.nan]
BOUNDS = [dict(), dict(high=1.0), dict(low=0.0, low_open=True), dict(low=None, high=1.0,
                                                                     high_open=False)]


def outcome(value, bounds):
    try:
        check_number("x", value, **bounds)
    except ValueError as err:
        return str(err).replace("np.float64(", "").replace(")", "")
    return "ok"


@pytest.mark.parametrize("bounds", BOUNDS)
def test_a_python_float_is_checked_as_its_float64_array(bounds):
    for v in VALUES:
        assert outcome(v, bounds) == outcome(np.float64(v), bounds), v


def test_plain_functions_read_like_inspect():
    def plain(u, s, p=None):
        return u, s

    def extra(u, s, p=None, **kw):
        return u, s

    @functools.wraps(extra)
    def wrapped(u, s, p=None):
        return u, s

    def init(p):
        return ()

    assert not accepts_extra_args(Optimizer(init, plain))
    assert accepts_extra_args(Optimizer(init, extra))
    assert accepts_extra_args(Optimizer(init, wrapped))  # inspect follows __wrapped__
    assert accepts_extra_args(Optimizer(init, functools.partial(extra, p=None)))
