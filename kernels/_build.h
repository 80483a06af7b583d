/* Build facts for kernels/_build.pyx, OpenMP or not.
 *
 * Cython's `cimport openmp` includes <omp.h> unconditionally, which breaks the
 * serial build (FASTRNN_NO_OPENMP=1, or a compiler without OpenMP); testing
 * _OPENMP here compiles either way.  setup.py defines the other two.
 */
#ifndef FASTRNN_OMP_SHIM_H
#define FASTRNN_OMP_SHIM_H

#ifdef _OPENMP
#define FASTRNN_HAS_OPENMP 1
#else
#define FASTRNN_HAS_OPENMP 0
#endif

#ifndef FASTRNN_DEBUG_BUILD
#define FASTRNN_DEBUG_BUILD 0
#endif
#ifndef FASTRNN_NATIVE_BUILD
#define FASTRNN_NATIVE_BUILD 0
#endif

#endif /* FASTRNN_OMP_SHIM_H */
