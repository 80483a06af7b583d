/* c (N,) = a (K,) @ M (K, N) for one row: the kernels' own per-step product,
 * with M packed once per call into column panels.
 *
 * Packed layout: the columns in blocks of 8*LANES, then of LANES, then the
 * remaining N % LANES; the block starting at column n0 with w columns is
 * stored at P + n0*K as K rows of w contiguous values.  The product keeps a
 * block's sums in eight vector registers for the whole k loop (eight
 * independent chains of fused multiply-adds: with four, the adds' latency
 * held it to one multiply-add a cycle) and reads P
 * front to back, so each element of M is loaded once, c is stored once, and
 * no cache set is hit K times in a row (reading M's rows in place, with a row
 * length of 4 KB, LSTM (B, H) = (1, 256), ran 3x slower than BLAS for that).
 * Each c[n] adds a[k] M[k, n] in k order (no reassociation).
 *
 * GCC's vector extensions: AVX2 registers with -march=native, pairs of SSE
 * registers in a portable build.  LANES = 8 for float32, 4 for float64.
 */
#ifndef FASTRNN_MATMUL_ROW_H
#define FASTRNN_MATMUL_ROW_H

#include <string.h>

#define FASTRNN_DEFINE_MATMUL_ROW(NAME, T, LANES)                                   \
typedef T NAME##_vec __attribute__((vector_size(LANES * sizeof(T))));               \
                                                                                    \
static inline NAME##_vec NAME##_load(const T *p)                                    \
{                                                                                   \
    NAME##_vec v;                                                                   \
    memcpy(&v, p, sizeof v); /* an unaligned load */                                \
    return v;                                                                       \
}                                                                                   \
                                                                                    \
/* Element (k, n) of M is src[k*sk + n*sn]: sk = N, sn = 1 packs M as stored;   \
   sk = 1, sn = K packs the transpose of a row-major (N, K) matrix. */             \
static inline void NAME##_pack(const T *src, long sk, long sn, long K, long N, T *P) \
{                                                                                   \
    long n0 = 0, w, k, j;                                                           \
    while (n0 < N) {                                                                \
        w = N - n0 >= 8 * LANES ? 8 * LANES : (N - n0 >= LANES ? LANES : N - n0);   \
        for (k = 0; k < K; k++)                                                     \
            for (j = 0; j < w; j++)                                                 \
                P[n0 * K + k * w + j] = src[k * sk + (n0 + j) * sn];                \
        n0 += w;                                                                    \
    }                                                                               \
}                                                                                   \
                                                                                    \
static inline void NAME(const T *a, const T *P, long K, long N, T *c)              \
{                                                                                   \
    long n0 = 0, k, n, w;                                                           \
    for (; n0 + 8 * LANES <= N; n0 += 8 * LANES) {                                  \
        const T *p = P + n0 * K;                                                    \
        NAME##_vec s[8] = {{0}};                                                    \
        int v;                                                                      \
        for (k = 0; k < K; k++, p += 8 * LANES) {                                   \
            T ak = a[k];                                                            \
            for (v = 0; v < 8; v++)                                                 \
                s[v] += ak * NAME##_load(p + v * LANES);                            \
        }                                                                           \
        memcpy(c + n0, s, sizeof s);                                                \
    }                                                                               \
    for (; n0 + LANES <= N; n0 += LANES) {                                          \
        const T *p = P + n0 * K;                                                    \
        NAME##_vec s = {0};                                                         \
        for (k = 0; k < K; k++, p += LANES)                                         \
            s += a[k] * NAME##_load(p);                                             \
        memcpy(c + n0, &s, sizeof s);                                               \
    }                                                                               \
    w = N - n0;                                                                     \
    for (n = 0; n < w; n++)                                                         \
        c[n0 + n] = 0;                                                              \
    for (k = 0; k < K; k++)                                                         \
        for (n = 0; n < w; n++)                                                     \
            c[n0 + n] += a[k] * P[n0 * K + k * w + n];                              \
}

FASTRNN_DEFINE_MATMUL_ROW(fastrnn_matmul_row_f32, float, 8)
FASTRNN_DEFINE_MATMUL_ROW(fastrnn_matmul_row_f64, double, 4)

#endif /* FASTRNN_MATMUL_ROW_H */
