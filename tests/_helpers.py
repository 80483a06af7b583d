"""Problems and tolerances: fastrnn._testing states them once; test-only extras here."""
import numpy as np

from fastrnn._testing import TOLERANCE, scaled_error
from fastrnn._testing import random_rnn_problem as make_rnn_problem  # noqa: F401 (re-exported)


def assert_close(actual, expected, dtype, name=""):
    """actual (any dtype) against the float64 reference ``expected``."""
    if expected is None:
        assert actual is None, f"{name}: expected None"
        return
    assert actual is not None, f"{name}: got None"
    assert actual.dtype == dtype, f"{name}: dtype {actual.dtype}, expected {dtype}"
    assert actual.shape == expected.shape, f"{name}: shape {actual.shape} != {expected.shape}"
    err, scale = scaled_error(actual, expected)
    assert err <= TOLERANCE[np.dtype(dtype)] * scale, f"{name}: max error {err:.3g} (scale {scale:.3g})"


def as_float64(problem):
    return {k: (v.astype(np.float64) if isinstance(v, np.ndarray) and v.dtype.kind == "f" else v)
            for k, v in problem.items()}
