"""The Cython kernels at every instruction-set level this CPU has, each forced;
a level the CPU lacks is refused with the reason, never run."""
import os
import subprocess
import sys

import numpy as np
import pytest

import fastrnn
from conftest import BUILT_LEVELS as BUILT, CPU_LEVELS as CPU
from fastrnn import _isa
from fastrnn._testing import random_problem, random_upstream
from test_backends import check_against_reference


# Shapes that stress the panels (H = 1, 7, 33, 257 against 8/16 lanes; B = 1,
# 3, 17 rows against the tile heights; I != H, odd K), on both engine paths.
SHAPES = [(9, 1, 5, 1), (7, 3, 4, 7), (6, 17, 9, 33), (5, 3, 31, 257), (40, 2, 3, 9)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "T{}-B{}-I{}-H{}".format(*s))
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_each_level_matches_the_reference(level, cell, shape, dtype, kernel_path):
    T, B, I, H = shape
    lengths = [T, 0, T - 1][:B] + [T] * max(0, B - 3)
    problem = random_problem(T, B, I, H, dtype, cell=cell, seed=H, lengths=lengths)
    assert fastrnn.get_isa_level() == level
    check_against_reference(cell, "cython", problem, dtype, random_upstream(cell, T, B, H, dtype))


def test_levels_are_ordered_and_the_best_is_chosen(restore_level):
    if not BUILT:
        pytest.skip("the Cython kernels are not built")
    assert BUILT == tuple(_isa.levels_for())
    assert CPU == tuple(level for level in BUILT if level in CPU)  # lowest first
    fastrnn.set_isa_level(None)
    assert fastrnn.get_isa_level() == CPU[-1]


def test_a_level_the_cpu_lacks_is_an_error(monkeypatch, restore_level):
    if not BUILT:
        pytest.skip("the Cython kernels are not built")
    from fastrnn.kernels import _build

    best = BUILT[-1]
    real = _build.cpu_has
    monkeypatch.setattr(_build, "cpu_has", lambda level: level != best and real(level))
    with pytest.raises(fastrnn.IsaError, match=f"asks for '{best}', which this CPU lacks"):
        fastrnn.set_isa_level(best)
    with pytest.raises(ValueError, match="must be one of"):
        fastrnn.set_isa_level("avx9000")
    with pytest.raises(TypeError, match="level must be a str"):
        fastrnn.set_isa_level(3)


def _python(code, **env):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=120)


def test_the_environment_variable_forces_a_level():
    if not BUILT:
        pytest.skip("the Cython kernels are not built")
    result = _python("import fastrnn; print(fastrnn.get_isa_level())", FASTRNN_ISA=CPU[0].upper())
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == CPU[0]


def test_the_environment_variable_naming_no_level_leaves_the_cython_backend_unavailable():
    """A clear error naming the variable, and the automatic choice falls back
    with a warning: never an illegal instruction."""
    if not BUILT:
        pytest.skip("the Cython kernels are not built")
    code = ("import warnings, numpy as np, fastrnn\n"
            "try:\n"
            "    fastrnn.rnn_forward(np.ones((2, 1, 3)), None, np.ones((4, 3)), np.ones((4, 4)),"
            " backend='cython')\n"
            "except fastrnn.BackendUnavailableError as e:\n"
            "    print('refused:', e)\n"
            "print('default:', fastrnn.get_default_backend())\n")
    result = _python(code, FASTRNN_ISA="avx9000")
    assert result.returncode == 0, result.stderr
    assert "refused: the cython backend is unavailable: FASTRNN_ISA='avx9000'" in result.stdout
    assert "default: numba" in result.stdout or "default: numpy" in result.stdout
