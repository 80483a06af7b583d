"""Instruction-set levels of the Cython kernels: which are built, which the
CPU has, and which one runs.

Each cell's Cython module is one source compiled once per level (setup.py
reads ``levels_for`` below without importing fastrnn) into
``fastrnn.kernels.{cell}_cython_{level}``; engine.h picks its vector width and
its bf16 product from the level's predefined macros, so the level is a
parameter of the one engine, not a copy of it (as NumPy's
``NPY_CPU_DISPATCH`` builds one source for several targets).  At the first
use the best level that both the build and the CPU have is chosen from what
the CPU reports (CPUID, not the compiler's flags); ``FASTRNN_ISA`` or
``set_isa_level`` asks for a lower one.

The levels, lowest first:

``avx2``         x86-64-v3 (AVX2, FMA): the portable x86-64 baseline.
``avx512``       x86-64-v4 (AVX-512 F/BW/CD/DQ/VL): 512-bit vectors, 32 registers.
``avx512_bf16``  avx512 and AVX512_BF16 (``vdpbf16ps``: bf16 pairs into float32)
                 and AVX512_VNNI.
``portable``     any other architecture (aarch64...): the compiler's baseline.

Without AVX2 an x86-64 CPU has no level of these: the Cython backend says
so and the Numba backend serves.
"""
import os
import platform

# name: the C compiler flags that build it.  Lowest first.
X86_LEVELS = {
    "avx2": ("-march=x86-64-v3",),
    "avx512": ("-march=x86-64-v4",),
    "avx512_bf16": ("-march=x86-64-v4", "-mavx512bf16", "-mavx512vnni"),
}
PORTABLE_LEVELS = {"portable": ()}
ENVIRONMENT = "FASTRNN_ISA"


def is_x86_64(machine=None):
    return (machine or platform.machine()).lower() in ("x86_64", "amd64")


def levels_for(machine=None):
    """The levels a build for ``machine`` (this one when None) compiles, lowest first."""
    return X86_LEVELS if is_x86_64(machine) else PORTABLE_LEVELS


class IsaError(ValueError):
    """A level was asked for that this build or this CPU does not have."""


_chosen = None  # the level in use once chosen; None until the first use


def _build():
    from fastrnn.kernels import _build  # the Cython build's facts; ImportError if not built
    return _build


def built_isa_levels():
    """The levels this build compiled, lowest first."""
    return tuple(_build().build_info()["levels"])


def cpu_isa_levels():
    """The levels of ``built_isa_levels`` that this CPU can run, lowest first."""
    build = _build()
    return tuple(level for level in built_isa_levels() if build.cpu_has(level))


def _check(level, where):
    built = built_isa_levels()
    if level not in built:
        raise IsaError(f"{where} must be one of {', '.join(built)} (the levels this build "
                       f"compiled) or None for the best this CPU has, got {level!r}")
    have = cpu_isa_levels()
    if level not in have:
        raise IsaError(f"{where} asks for {level!r}, which this CPU lacks: it has "
                       f"{', '.join(have) or 'none of ' + ', '.join(built)}")
    return level


def get_isa_level():
    """The level the Cython kernels run at: ``FASTRNN_ISA`` or the last
    ``set_isa_level``, else the best this CPU has.  Raises ``IsaError`` when
    ``FASTRNN_ISA`` names a level this build or CPU lacks, and
    ``ImportError`` when the Cython kernels are not built."""
    global _chosen
    if _chosen is None:
        value = os.environ.get(ENVIRONMENT, "").strip().lower()
        if value:
            _chosen = _check(value, f"{ENVIRONMENT}={os.environ[ENVIRONMENT]!r}")
        else:
            have = cpu_isa_levels()
            if not have:
                raise IsaError(f"this CPU has none of the levels the Cython kernels were "
                               f"built for ({', '.join(built_isa_levels())}); x86-64 needs "
                               f"AVX2 and FMA")
            _chosen = have[-1]
    return _chosen


def set_isa_level(level):
    """Run the Cython kernels at ``level`` (a name of ``cpu_isa_levels()``), or
    at the best this CPU has when None (``FASTRNN_ISA`` is then ignored).
    A level this CPU lacks is an ``IsaError`` (a ValueError), never an
    illegal instruction."""
    global _chosen
    if level is None:
        have = cpu_isa_levels()
        _chosen = have[-1] if have else None
        return
    if not isinstance(level, str):
        raise TypeError(f"level must be a str (one of {', '.join(built_isa_levels())}) "
                        f"or None, got {type(level).__name__}")
    _chosen = _check(level.strip().lower(), "level")
