/* Build facts for kernels/_build.pyx, and what the CPU can run.
 *
 * Cython's `cimport openmp` includes <omp.h> unconditionally, which breaks the
 * serial build (FASTRNN_NO_OPENMP=1, or a compiler without OpenMP); testing
 * _OPENMP here compiles either way.  setup.py defines the debug flag and the
 * levels it compiled (FASTRNN_ISA_LEVELS, comma-separated; fastrnn/_isa.py).
 *
 * This module is compiled for the architecture's baseline, so that asking
 * it is safe on any CPU.
 */
#ifndef FASTRNN_OMP_SHIM_H
#define FASTRNN_OMP_SHIM_H

#include <string.h>

#ifdef _OPENMP
#define FASTRNN_HAS_OPENMP 1
#else
#define FASTRNN_HAS_OPENMP 0
#endif

#ifndef FASTRNN_DEBUG_BUILD
#define FASTRNN_DEBUG_BUILD 0
#endif
#ifndef FASTRNN_ISA_LEVELS
#define FASTRNN_ISA_LEVELS ""
#endif

/* 1 when this CPU (and the OS: libgcc checks that it saves the AVX-512
   registers) runs the level named `level` (fastrnn/_isa.py's names). */
static inline int fastrnn_cpu_has(const char *level)
{
#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
    __builtin_cpu_init();
    if (!strcmp(level, "avx2"))
        return __builtin_cpu_supports("x86-64-v3") != 0;
    if (!strcmp(level, "avx512"))
        return __builtin_cpu_supports("x86-64-v4") != 0;
    if (!strcmp(level, "avx512_bf16"))
        return __builtin_cpu_supports("x86-64-v4") && __builtin_cpu_supports("avx512bf16")
               && __builtin_cpu_supports("avx512vnni");
    return 0;
#else
    return !strcmp(level, "portable");
#endif
}

#endif /* FASTRNN_OMP_SHIM_H */
