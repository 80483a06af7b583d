/* tanh for float32 as a rational function that vectorises (the Cython kernels).
 *
 * Eigen's generic_fast_tanh_float: an odd degree-13 numerator over an even
 * degree-6 denominator on [-c, c], the input clamped there (tanh(c) rounds to
 * 1 in float32) and tanh(x) = x below 4e-4.  Maximum error against tanh in
 * float64: 3.8e-7 absolute, 6.5 float32 ulp (the C library's tanhf: 1.4 ulp),
 * tests/test_fast_tanh.py holds it to that.  It costs about 1 ns an element in
 * a vectorised loop against about 17 ns for a call to tanhf.
 *
 * The comparisons are written so that NaN fails them and passes through
 * (fminf/fmaxf would turn NaN into the clamp); +-inf clamp to +-1.  Every
 * comparison runs unconditionally (no && or nested ?:), so the compiler can
 * turn them all into vector selects.
 * The same coefficients are in kernels/_numba_util.py (fast_tanh).
 */
#ifndef FASTRNN_FAST_TANH_H
#define FASTRNN_FAST_TANH_H

#include <math.h>

/* The rational function at x as its numerator and denominator: tanh(x) is
 * about *p / *q (x clamped; no small-x case).  The int8 inference cells
 * combine several such quotients into one division (kernels/lstm_cython.pyx,
 * gru_cython.pyx: _cell_infer); q lies in [4.9e-3, 0.9], so products of a
 * few of them stay far from float32's limits. */
static inline void fastrnn_tanh_pq(float x, float *p_out, float *q_out)
{
    const float c = 7.90531110763549805f;
    float xc = x > c ? c : x;
    xc = xc < -c ? -c : xc;
    float x2 = xc * xc;
    float p = -2.76076847742355e-16f;
    p = p * x2 + 2.00018790482477e-13f;
    p = p * x2 + -8.60467152213735e-11f;
    p = p * x2 + 5.12229709037114e-08f;
    p = p * x2 + 1.48572235717979e-05f;
    p = p * x2 + 6.37261928875436e-04f;
    p = p * x2 + 4.89352455891786e-03f;
    p = p * xc;
    float q = 1.19825839466702e-06f;
    q = q * x2 + 1.18534705686654e-04f;
    q = q * x2 + 2.26843463243900e-03f;
    q = q * x2 + 4.89352518554385e-03f;
    *p_out = p;
    *q_out = q;
}

static inline float fastrnn_tanhf(float x)
{
    float p, q;
    fastrnn_tanh_pq(x, &p, &q);
    float r = p / q;
    return fabsf(x) < 0.0004f ? x : r;
}

#endif /* FASTRNN_FAST_TANH_H */
