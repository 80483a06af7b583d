/* The recurrent engine's C core: packed weight panels, the register-blocked
 * tile product, and the step counter the threads synchronise on.  The loops
 * that use them, and each cell's gate arithmetic, are Cython
 * (kernels/_engine.pxi and each cell's .pyx).
 *
 * Panels.  A matrix M (K, N) whose N columns are G gate blocks of H units
 * (column g*H + j is gate g of unit j) is packed once per call into panels of
 * `u` units: panel p holds, for k = 0..K-1, the row
 *     M[k, g*H + p*u + jj]  for g = 0..G-1, jj = 0..u-1     (G*u values)
 * so a tile of a panel has every gate of its units side by side, and one
 * thread owns whole units.  Units past H are zero.  The forward packs
 * W_hh^T (K = H) and W_ih^T (K = I) with the cell's G; the backward packs
 * W_hh (K = G*H, one block: G = 1).
 *
 * Tile.  C (mr, NR) (+)= A (mr rows, K) @ panel (K, NR), NR = nv vectors: mr*nv
 * vector accumulators stay in registers for the whole k loop, each element of
 * the panel is loaded once per tile and each row value once per k (a product
 * one row at a time reads the weights once per row).
 * With few accumulators (one or two rows) the k loop runs two independent
 * chains (even and odd k) so the FMA units are not held up by latency.
 *
 * GCC vector extensions: 512-bit registers where -march=native offers
 * AVX-512, 256-bit with AVX, 128-bit otherwise (the portable build).
 *
 * Steps.  The threads of one parallel region run a sequence of phases, each
 * of `per_phase` work items (one item = one panel for every row).  A phase
 * starts when every item of the one before is done (counter `done`).  In it
 * each thread first claims its own share of the items (the same share every
 * step, so its panels stay in its core's L2, as in DeepCPU), then claims
 * whatever its partners have not started, from the far end: a thread that
 * lost its core holds up only the item it holds, the others take the rest.
 * Waiting spins for a few microseconds, then sleeps on a futex (Linux;
 * elsewhere it yields), so a waiting thread never burns the core its partner
 * needs.
 */
#ifndef FASTRNN_ENGINE_H
#define FASTRNN_ENGINE_H

#include <stdint.h>
#include <string.h>
#include <time.h>
#include <sched.h>
#include <limits.h>
#ifdef __linux__
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif
#include <dlfcn.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__AVX2__)
#include <immintrin.h>
#endif
#if defined(__AVX512BF16__) && defined(__AVX512F__)
#define FASTRNN_DPBF16 1
#else
#define FASTRNN_DPBF16 0
#endif

#if defined(__AVX512F__)
#define FASTRNN_VBYTES 64
#elif defined(__AVX__)
#define FASTRNN_VBYTES 32
#else
#define FASTRNN_VBYTES 16
#endif
#define FASTRNN_MAX_ROWS 8

static inline int fastrnn_lanes_f32(void) { return FASTRNN_VBYTES / 4; }
static inline int fastrnn_lanes_f64(void) { return FASTRNN_VBYTES / 8; }

/* The most rows per tile for nv vectors of columns (1 <= nv <= 4), measured:
 * as many as the registers hold, and one fewer where gcc 12 then spilled an
 * accumulator to the stack (a store and reload every k).  float32, K = 128,
 * the panel in L1, GFLOP/s of one core (the tile alone, kernels/engine.h's
 * fastrnn_tile_f32 in a C loop; peak about 235 with AVX-512, 118 with AVX2):
 *   AVX-512 (32 registers)  nv=3: 6 rows 206-213, 7 rows 208-222, 8 rows 172-175
 *                           nv=4: 5 rows 209-219, 6 rows 208-214, 7 rows 185-198
 *   AVX2 (16 registers)     nv=2: 5 rows 103-105, 6 rows 51 (spilled)
 *                           nv=3: 3 rows 83-87, 4 rows 79-83;  nv=4: 3 rows 85-87
 * Fewer rows than these cost throughput too (AVX-512 nv=4: 4 rows 139-171),
 * so the engine splits a block of rows into tiles of nearly equal height
 * (16 rows: 6 + 5 + 5, not 6 + 6 + 4): fastrnn_tile_split. */
static inline int fastrnn_tile_rows(int nv)
{
#if FASTRNN_VBYTES == 64
    static const int rows[4] = {8, 8, 7, 6};
#else
    static const int rows[4] = {8, 5, 3, 3};
#endif
    return rows[(nv < 1 ? 1 : nv > 4 ? 4 : nv) - 1];
}

/* Height of the next tile when `left` rows remain, in tiles of at most `most`
 * rows: the rows shared out as evenly as that number of tiles allows. */
static inline int fastrnn_tile_split(long left, int most)
{
    long tiles;
    if (left <= most)  /* one tile: no divisions (a B = 1 step calls this per panel) */
        return (int)left;
    tiles = (left + most - 1) / most;
    return (int)((left + tiles - 1) / tiles);
}

static inline int fastrnn_team_size(void)
{
#ifdef _OPENMP
    return omp_get_num_threads();
#else
    return 1;
#endif
}

static inline double fastrnn_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

#define FASTRNN_DEFINE_PACK(NAME, T)                                                \
/* Panel p of M (K, G*H), M[k, n] = src[k*sk + n*sn], into P (K * G*u values),    \
   reading src along its contiguous axis: down a column of M when sk < sn (the   \
   forward's W^T), along a row otherwise (a strided read of a (4096, 1024)       \
   matrix misses the cache on every value).  Units past H are zero. */           \
static inline void NAME(const T *src, long sk, long sn, long K, long G, long H,   \
                        long u, long p, T *P)                                     \
{                                                                                 \
    long k, g, jj, j, NR = G * u;                                                 \
    if (sk < sn) {                                                                \
        for (g = 0; g < G; g++)                                                   \
            for (jj = 0; jj < u; jj++) {                                          \
                T *q = P + g * u + jj;                                            \
                j = p * u + jj;                                                   \
                if (j < H)                                                        \
                    for (k = 0; k < K; k++)                                       \
                        q[k * NR] = src[k * sk + (g * H + j) * sn];               \
                else                                                              \
                    for (k = 0; k < K; k++)                                       \
                        q[k * NR] = (T)0;                                         \
            }                                                                     \
        return;                                                                   \
    }                                                                             \
    for (k = 0; k < K; k++)                                                       \
        for (g = 0; g < G; g++)                                                   \
            for (jj = 0; jj < u; jj++) {                                          \
                j = p * u + jj;                                                   \
                *P++ = j < H ? src[k * sk + (g * H + j) * sn] : (T)0;             \
            }                                                                     \
}

FASTRNN_DEFINE_PACK(fastrnn_pack_panel_f32, float)
FASTRNN_DEFINE_PACK(fastrnn_pack_panel_f64, double)

/* One tile shape: MR rows, NV vectors.  SPLIT: two chains over k. */
#define FASTRNN_DEFINE_TILE(NAME, T, MR, NV, SPLIT)                                 \
static void NAME##_##MR##x##NV(const T *A, long lda, const T *P, long K, T *C, int add) \
{                                                                                   \
    enum { L = FASTRNN_VBYTES / sizeof(T), NR = NV * L };                           \
    typedef T vec __attribute__((vector_size(FASTRNN_VBYTES)));                     \
    vec acc[MR][NV], acc2[SPLIT ? MR : 1][NV], w;                                   \
    long k = 0;                                                                     \
    int r, v;                                                                       \
    for (r = 0; r < MR; r++)                                                        \
        for (v = 0; v < NV; v++) {                                                  \
            acc[r][v] = (vec){0};                                                   \
            if (add)                                                                \
                memcpy(&acc[r][v], C + r * NR + v * L, sizeof w);                   \
        }                                                                           \
    if (SPLIT) {                                                                    \
        for (r = 0; r < MR; r++)                                                    \
            for (v = 0; v < NV; v++)                                                \
                acc2[r % (SPLIT ? MR : 1)][v] = (vec){0};                           \
        for (; k + 1 < K; k += 2) {                                                 \
            const T *p = P + k * NR;                                                \
            for (v = 0; v < NV; v++) {                                              \
                memcpy(&w, p + v * L, sizeof w);                                    \
                for (r = 0; r < MR; r++)                                            \
                    acc[r][v] += A[r * lda + k] * w;                                \
                memcpy(&w, p + NR + v * L, sizeof w);                               \
                for (r = 0; r < MR; r++)                                            \
                    acc2[r % (SPLIT ? MR : 1)][v] += A[r * lda + k + 1] * w;        \
            }                                                                       \
        }                                                                           \
    }                                                                               \
    for (; k < K; k++) {                                                            \
        const T *p = P + k * NR;                                                    \
        for (v = 0; v < NV; v++) {                                                  \
            memcpy(&w, p + v * L, sizeof w);                                        \
            for (r = 0; r < MR; r++)                                                \
                acc[r][v] += A[r * lda + k] * w;                                    \
        }                                                                           \
    }                                                                               \
    for (r = 0; r < MR; r++)                                                        \
        for (v = 0; v < NV; v++) {                                                  \
            if (SPLIT)                                                              \
                acc[r][v] += acc2[r % (SPLIT ? MR : 1)][v];                         \
            memcpy(C + r * NR + v * L, &acc[r][v], sizeof acc[r][v]);               \
        }                                                                           \
}

#define FASTRNN_TILES_FOR_NV(NAME, T, NV)                                           \
FASTRNN_DEFINE_TILE(NAME, T, 1, NV, 1)                                              \
FASTRNN_DEFINE_TILE(NAME, T, 2, NV, (2 * NV <= 6))                                  \
FASTRNN_DEFINE_TILE(NAME, T, 3, NV, 0)                                              \
FASTRNN_DEFINE_TILE(NAME, T, 4, NV, 0)                                              \
FASTRNN_DEFINE_TILE(NAME, T, 5, NV, 0)                                              \
FASTRNN_DEFINE_TILE(NAME, T, 6, NV, 0)                                              \
FASTRNN_DEFINE_TILE(NAME, T, 7, NV, 0)                                              \
FASTRNN_DEFINE_TILE(NAME, T, 8, NV, 0)

/* The case of one nv in a tile dispatcher: call NAME's MR x NV tile with
   ARGS, a parenthesised argument list. */
#define FASTRNN_CASE_ROWS(NAME, NV, ARGS)                                           \
    case NV:                                                                        \
        switch (mr) {                                                               \
        case 1: NAME##_1x##NV ARGS; return;                                         \
        case 2: NAME##_2x##NV ARGS; return;                                         \
        case 3: NAME##_3x##NV ARGS; return;                                         \
        case 4: NAME##_4x##NV ARGS; return;                                         \
        case 5: NAME##_5x##NV ARGS; return;                                         \
        case 6: NAME##_6x##NV ARGS; return;                                         \
        case 7: NAME##_7x##NV ARGS; return;                                         \
        default: NAME##_8x##NV ARGS; return;                                        \
        }

/* C (mr, nv*L) = A (mr, K; row stride lda) @ P (K, nv*L), plus C's values if add;
   1 <= mr <= 8, 1 <= nv <= 4. */
#define FASTRNN_DEFINE_TILES(NAME, T)                                               \
FASTRNN_TILES_FOR_NV(NAME, T, 1)                                                    \
FASTRNN_TILES_FOR_NV(NAME, T, 2)                                                    \
FASTRNN_TILES_FOR_NV(NAME, T, 3)                                                    \
FASTRNN_TILES_FOR_NV(NAME, T, 4)                                                    \
static inline void NAME(const T *A, long lda, int mr, const T *P, long K, int nv, T *C, \
                        int add)                                                   \
{                                                                                   \
    switch (nv) {                                                                   \
    FASTRNN_CASE_ROWS(NAME, 1, (A, lda, P, K, C, add))                              \
    FASTRNN_CASE_ROWS(NAME, 2, (A, lda, P, K, C, add))                              \
    FASTRNN_CASE_ROWS(NAME, 3, (A, lda, P, K, C, add))                              \
    default:                                                                        \
    FASTRNN_CASE_ROWS(NAME, 4, (A, lda, P, K, C, add))                              \
    }                                                                               \
}

FASTRNN_DEFINE_TILES(fastrnn_tile_f32, float)
FASTRNN_DEFINE_TILES(fastrnn_tile_f64, double)

/* ---- bfloat16 products ---------------------------------------------------
 *
 * bf16 compute: the products read bfloat16 operands (the weights, x, and
 * h_{t-1} rounded to nearest even) and accumulate in float32; everything else
 * stays float32.  A bf16 panel holds its K rows in pairs, (ceil(K/2), NR, 2):
 * for each pair of k, the two values of each column side by side, the layout
 * vdpbf16ps reads (each 32-bit lane: a pair of one column).  The A operand is
 * bf16 rows with an even row stride (an odd K padded with a zero).
 *
 * With AVX512_BF16 the tile is vdpbf16ps (a pair of products a lane).
 * Without it the engine does not use these tiles: it runs float32 panels
 * and operands holding the rounded values (fastrnn_round_bf16), the same
 * products of the same bf16 values, at float32's speed.  Widening the pairs
 * instead (a shift and a mask, two FMAs: the form below, which completes the
 * one source at those levels) halves the weight traffic but measured
 * 0.78-1.05x float32's speed with AVX-512 and 0.61-0.91x with AVX2, whose
 * 16 registers then spill.  The two routes differ only in the float32
 * rounding of the sums (and vdpbf16ps reads bf16 subnormals, below 1.2e-38,
 * as zero).
 */

/* float32 -> bfloat16 bits, rounded to nearest even; NaN stays a (quiet) NaN. */
static inline uint16_t fastrnn_bf16(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x40u);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

static inline void fastrnn_to_bf16(const float *src, long n, uint16_t *dst)
{
    long i;
    for (i = 0; i < n; i++)
        dst[i] = fastrnn_bf16(src[i]);
}

/* float32 values rounded to the nearest bfloat16 (as float32). */
static inline void fastrnn_round_bf16(const float *src, long n, float *dst)
{
    long i;
    for (i = 0; i < n; i++) {
        uint32_t u = (uint32_t)fastrnn_bf16(src[i]) << 16;
        memcpy(dst + i, &u, sizeof u);
    }
}

/* fastrnn_pack_panel's panel p, as bf16 pairs of k: P (ceil(K/2) * G*u * 2),
   reading src along its contiguous axis as fastrnn_pack_panel does. */
static inline void fastrnn_pack_panel_bf16(const float *src, long sk, long sn, long K, long G,
                                           long H, long u, long p, uint16_t *P)
{
    long k, g, jj, j, NR = G * u, K2 = (K + 1) / 2;
    if (sk < sn) {
        for (g = 0; g < G; g++)
            for (jj = 0; jj < u; jj++) {
                uint16_t *q = P + 2 * (g * u + jj);
                j = p * u + jj;
                for (k = 0; k < 2 * K2; k++)
                    q[(k / 2) * 2 * NR + (k & 1)] =
                        (j < H && k < K) ? fastrnn_bf16(src[k * sk + (g * H + j) * sn]) : 0;
            }
        return;
    }
    for (k = 0; k < 2 * K2; k++)
        for (g = 0; g < G; g++)
            for (jj = 0; jj < u; jj++) {
                j = p * u + jj;
                P[(k / 2) * 2 * NR + 2 * (g * u + jj) + (k & 1)] =
                    (j < H && k < K) ? fastrnn_bf16(src[k * sk + (g * H + j) * sn]) : 0;
            }
}

/* One bf16 tile shape: C (MR, NV*L) float32, row stride ldc, (+)= A (MR rows
   of K2 bf16 pairs, row stride lda bf16 values) @ P (K2 pairs, NV*L columns). */
#define FASTRNN_DEFINE_TILE_BF16(NAME, MR, NV)                                      \
static void NAME##_##MR##x##NV(const uint16_t *A, long lda, const uint16_t *P, long K2, \
                               float *C, long ldc, int add)                         \
{                                                                                   \
    enum { L = FASTRNN_VBYTES / 4, NR = NV * L, ROWS = MR };                        \
    typedef float vec __attribute__((vector_size(FASTRNN_VBYTES)));                 \
    typedef uint32_t ivec __attribute__((vector_size(FASTRNN_VBYTES)));             \
    vec acc[MR][NV];                                                                \
    ivec w;                                                                         \
    uint32_t a[MR];                                                                 \
    long k;                                                                         \
    int r, v;                                                                       \
    for (r = 0; r < MR; r++)                                                        \
        for (v = 0; v < NV; v++) {                                                  \
            acc[r][v] = (vec){0};                                                   \
            if (add)                                                                \
                memcpy(&acc[r][v], C + r * ldc + v * L, sizeof acc[r][v]);          \
        }                                                                           \
    for (k = 0; k < K2; k++) {                                                      \
        const uint16_t *p = P + k * 2 * NR;                                         \
        for (r = 0; r < MR; r++)                                                    \
            memcpy(&a[r], A + r * lda + 2 * k, sizeof a[r]);                        \
        for (v = 0; v < NV; v++) {                                                  \
            memcpy(&w, p + v * 2 * L, sizeof w);                                    \
            FASTRNN_BF16_FMA                                                        \
        }                                                                           \
    }                                                                               \
    for (r = 0; r < MR; r++)                                                        \
        for (v = 0; v < NV; v++)                                                    \
            memcpy(C + r * ldc + v * L, &acc[r][v], sizeof acc[r][v]);              \
}

#if FASTRNN_DPBF16 && FASTRNN_VBYTES == 64
/* A register broadcast of each row's pair, shared by the row's NV products.
   Tried: the pair as vdpbf16ps's broadcast memory operand ({1to16}, inline
   asm), no broadcast instructions: 0.47-0.61x this tile's speed at
   (B, H) = (16, 256) and (64, 1024) (AMD Zen 4, interleaved A/B). */
#define FASTRNN_BF16_FMA                                                            \
    for (r = 0; r < ROWS; r++)                                                        \
        acc[r][v] = (vec)_mm512_dpbf16_ps((__m512)acc[r][v],                        \
                                          (__m512bh)_mm512_set1_epi32((int)a[r]),   \
                                          (__m512bh)w);
#else
#define FASTRNN_BF16_FMA                                                            \
    {                                                                               \
        vec w0 = (vec)(w << 16), w1 = (vec)(w & 0xffff0000u);                       \
        for (r = 0; r < ROWS; r++) {                                                \
            uint32_t lo = a[r] << 16, hi = a[r] & 0xffff0000u;                      \
            float a0, a1;                                                           \
            memcpy(&a0, &lo, sizeof a0);                                            \
            memcpy(&a1, &hi, sizeof a1);                                            \
            acc[r][v] += a0 * w0;                                                   \
            acc[r][v] += a1 * w1;                                                   \
        }                                                                           \
    }
#endif

/* DEFINE(NAME, MR, NV) for MR = 1 .. 8: a tile shape of each height. */
#define FASTRNN_TILES_FOR_ROWS(DEFINE, NAME, NV)                                    \
DEFINE(NAME, 1, NV) DEFINE(NAME, 2, NV) DEFINE(NAME, 3, NV) DEFINE(NAME, 4, NV)      \
DEFINE(NAME, 5, NV) DEFINE(NAME, 6, NV) DEFINE(NAME, 7, NV) DEFINE(NAME, 8, NV)

FASTRNN_TILES_FOR_ROWS(FASTRNN_DEFINE_TILE_BF16, fastrnn_tile_bf16, 1)
FASTRNN_TILES_FOR_ROWS(FASTRNN_DEFINE_TILE_BF16, fastrnn_tile_bf16, 2)
FASTRNN_TILES_FOR_ROWS(FASTRNN_DEFINE_TILE_BF16, fastrnn_tile_bf16, 3)
FASTRNN_TILES_FOR_ROWS(FASTRNN_DEFINE_TILE_BF16, fastrnn_tile_bf16, 4)

/* C (mr, nv*L; row stride ldc) = A (mr rows of K bf16 pairs) @ P (K pairs,
   nv*L), plus C's values if add; 1 <= mr <= 8, 1 <= nv <= 4. */
static inline void fastrnn_tile_bf16(const uint16_t *A, long lda, int mr, const uint16_t *P,
                                     long K, int nv, float *C, long ldc, int add)
{
    switch (nv) {
    FASTRNN_CASE_ROWS(fastrnn_tile_bf16, 1, (A, lda, P, K, C, ldc, add))
    FASTRNN_CASE_ROWS(fastrnn_tile_bf16, 2, (A, lda, P, K, C, ldc, add))
    FASTRNN_CASE_ROWS(fastrnn_tile_bf16, 3, (A, lda, P, K, C, ldc, add))
    default:
    FASTRNN_CASE_ROWS(fastrnn_tile_bf16, 4, (A, lda, P, K, C, ldc, add))
    }
}

static inline int fastrnn_has_dpbf16(void) { return FASTRNN_DPBF16; }

/* Columns n0 .. n0+NR-1 of the float32 rows src (K rows, row stride ld) as a
   bf16 pair panel (ceil(K/2), NR, 2): what fastrnn_pack_panel_bf16 makes of
   them, as 32-bit words of two rows (a form gcc vectorises).  Columns past N
   and the row past an odd K are zero.  When `sums` is not NULL, sums[c] +=
   the float32 column sums of those columns (c from 0 for column n0, summed
   over the rows in order), in the same pass over src. */
static void fastrnn_pack_rows_bf16(const float *src, long ld, long K, long N, long n0, long NR,
                                   uint16_t *P, float *sums)
{
    long k2, c, K2 = (K + 1) / 2, nc = N - n0 < NR ? N - n0 : NR;
    for (k2 = 0; k2 < K2; k2++) {
        const float *r0 = src + 2 * k2 * ld + n0, *r1 = r0 + ld;
        uint32_t *q = (uint32_t *)(P + k2 * 2 * NR);
        if (2 * k2 + 1 < K) {
            for (c = 0; c < nc; c++)
                q[c] = (uint32_t)fastrnn_bf16(r0[c]) | (uint32_t)fastrnn_bf16(r1[c]) << 16;
            if (sums)
                for (c = 0; c < nc; c++)
                    sums[c] = (sums[c] + r0[c]) + r1[c];
        } else {
            for (c = 0; c < nc; c++)
                q[c] = fastrnn_bf16(r0[c]);
            if (sums)
                for (c = 0; c < nc; c++)
                    sums[c] += r0[c];
        }
        for (; c < NR; c++)
            q[c] = 0;
    }
}

/* dst[j*ldd + i] = bf16(src[i*ld + j]) for i < rows, j < cols: a float32
   matrix transposed into bf16 rows (the backward's X^T and H_prev^T, whose
   rows are pairs of k for the weight gradients' products).  With AVX512_BF16
   in blocks of 32 rows (16 pairs) by 16 columns: each pair of rows converted
   and interleaved into 32-bit words (vcvtne2ps2bf16 and a permute, the
   rounding of fastrnn_bf16 but for subnormals, which become zero, as
   vdpbf16ps reads them anyway), and the 16 x 16 words transposed in
   registers: 0.16-0.18 ns a value against 1.75 for the plain loop below
   in 32 x 32 blocks (a (1024, 1024) and a (4096, 256) matrix in cache, one
   Zen 4 core). */
static void fastrnn_transpose_bf16(const float *src, long ld, long rows, long cols,
                                   uint16_t *dst, long ldd)
{
    long i0 = 0, j0, i, j;
#if FASTRNN_DPBF16 && FASTRNN_VBYTES == 64
    const __m512i inter = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10,
                                           25, 9, 24, 8, 23, 7, 22, 6, 21, 5, 20, 4,
                                           19, 3, 18, 2, 17, 1, 16, 0);
    for (; i0 + 32 <= rows; i0 += 32)
        for (j0 = 0; j0 + 16 <= cols; j0 += 16) {
            __m512i w[16], t[16];
            int k;
            for (k = 0; k < 16; k++) {
                const float *r0 = src + (i0 + 2 * k) * ld + j0;
                __m512bh b = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(r0 + ld), _mm512_loadu_ps(r0));
                w[k] = _mm512_permutexvar_epi16(inter, (__m512i)b);  /* word c: pair of column c */
            }
            /* transpose the 16 x 16 words: w[k] word c -> t[c] word k */
            for (k = 0; k < 16; k += 2) {
                t[k] = _mm512_unpacklo_epi32(w[k], w[k + 1]);
                t[k + 1] = _mm512_unpackhi_epi32(w[k], w[k + 1]);
            }
            for (k = 0; k < 16; k += 4) {
                w[k] = _mm512_unpacklo_epi64(t[k], t[k + 2]);
                w[k + 1] = _mm512_unpackhi_epi64(t[k], t[k + 2]);
                w[k + 2] = _mm512_unpacklo_epi64(t[k + 1], t[k + 3]);
                w[k + 3] = _mm512_unpackhi_epi64(t[k + 1], t[k + 3]);
            }
            for (k = 0; k < 4; k++) {
                t[k] = _mm512_shuffle_i32x4(w[k], w[k + 4], 0x88);
                t[k + 4] = _mm512_shuffle_i32x4(w[k + 8], w[k + 12], 0x88);
                t[k + 8] = _mm512_shuffle_i32x4(w[k], w[k + 4], 0xdd);
                t[k + 12] = _mm512_shuffle_i32x4(w[k + 8], w[k + 12], 0xdd);
            }
            for (k = 0; k < 4; k++) {
                w[k] = _mm512_shuffle_i32x4(t[k], t[k + 4], 0x88);
                w[k + 4] = _mm512_shuffle_i32x4(t[k + 8], t[k + 12], 0x88);
                w[k + 8] = _mm512_shuffle_i32x4(t[k], t[k + 4], 0xdd);
                w[k + 12] = _mm512_shuffle_i32x4(t[k + 8], t[k + 12], 0xdd);
            }
            for (k = 0; k < 16; k++)
                _mm512_storeu_si512(dst + (j0 + k) * ldd + i0, w[k]);
        }
    /* the columns past the last block of 16 of those rows, below */
    if (i0 > 0)
        for (j = cols - cols % 16; j < cols; j++)
            for (i = 0; i < i0; i++)
                dst[j * ldd + i] = fastrnn_bf16(src[i * ld + j]);
#endif
    for (; i0 < rows; i0 += 32)
        for (j0 = 0; j0 < cols; j0 += 32) {
            long i1 = i0 + 32 < rows ? i0 + 32 : rows, j1 = j0 + 32 < cols ? j0 + 32 : cols;
            for (j = j0; j < j1; j++)
                for (i = i0; i < i1; i++)
                    dst[j * ldd + i] = fastrnn_bf16(src[i * ld + j]);
        }
}

/* dst[j*ldd + i] = src[i*ld + j] for i < rows, j < cols (float32), in
   16 x 16 blocks. */
static void fastrnn_transpose_f32(const float *src, long ld, long rows, long cols, float *dst,
                                  long ldd)
{
    long i0, j0, i, j;
    for (i0 = 0; i0 < rows; i0 += 16)
        for (j0 = 0; j0 < cols; j0 += 16) {
            long i1 = i0 + 16 < rows ? i0 + 16 : rows, j1 = j0 + 16 < cols ? j0 + 16 : cols;
            for (j = j0; j < j1; j++)
                for (i = i0; i < i1; i++)
                    dst[j * ldd + i] = src[i * ld + j];
        }
}

/* C (M, N) float32, row stride ldc, = (or += when add) A @ B in bf16: A is M
   rows of K2 bf16 pairs (row stride lda values), B panels of NR = nv*L
   columns as fastrnn_pack_panel_bf16 packs them (panel j at Bp + j*K2*2*NR;
   its columns past N zero).  The backward's weight gradients (OpenBLAS has
   no bf16 GEMM).  Blocked as a GEMM library blocks: k in blocks of a
   panel's slice of FASTRNN_GEMM_PANEL_BYTES, rows in blocks of
   FASTRNN_GEMM_ROWS (their slice of A stays in L2); a tile's sums go into C,
   through `tmp` where the panel is past C's last column.  Measured on one
   Zen 4 core (M x N x K = 512 x 512 x 1024, 2048 x 2048 x 1024, 512 x 1024
   x 512; bf16 peak about 230 GFLOP/s): slices of 24 KB (in L1) 206-214,
   180-184, 195-211 GFLOP/s; 48 KB 217-223, 191-197, 215; 96 KB 220-225,
   201-205, 204-220; row blocks of 128-512 within the noise. */
#ifndef FASTRNN_GEMM_PANEL_BYTES
#define FASTRNN_GEMM_PANEL_BYTES (48 * 1024)
#endif
#ifndef FASTRNN_GEMM_ROWS
#define FASTRNN_GEMM_ROWS 256
#endif
static void fastrnn_gemm_bf16(long M, long N, long K2, const uint16_t *A, long lda,
                              const uint16_t *Bp, int nv, float *C, long ldc, int add)
{
    enum { L = FASTRNN_VBYTES / 4 };
    long NR = nv * L, kc = FASTRNN_GEMM_PANEL_BYTES / (NR * 4), mc = FASTRNN_GEMM_ROWS, kb, m0, j, r, i, c;
    int mr_max = fastrnn_tile_rows(nv), mr;
    float tmp[FASTRNN_MAX_ROWS * 4 * L];
    if (kc < 4)
        kc = 4;
    for (kb = 0; kb < K2; kb += kc) {
        long kl = K2 - kb < kc ? K2 - kb : kc;
        int acc = add || kb > 0;
        for (m0 = 0; m0 < M; m0 += mc) {
            long ml = M - m0 < mc ? M - m0 : mc;
            for (j = 0; j * NR < N; j++) {
                const uint16_t *P = Bp + (j * K2 + kb) * 2 * NR;
                long nc = N - j * NR < NR ? N - j * NR : NR;
                for (r = 0; r < ml; r += mr) {
                    mr = fastrnn_tile_split(ml - r, mr_max);
                    if (nc == NR) {
                        fastrnn_tile_bf16(A + (m0 + r) * lda + 2 * kb, lda, mr, P, kl, nv,
                                          C + (m0 + r) * ldc + j * NR, ldc, acc);
                        continue;
                    }
                    fastrnn_tile_bf16(A + (m0 + r) * lda + 2 * kb, lda, mr, P, kl, nv, tmp, NR,
                                      0);
                    for (i = 0; i < mr; i++) {
                        float *d = C + (m0 + r + i) * ldc + j * NR;
                        const float *s = tmp + i * NR;
                        if (acc)
                            for (c = 0; c < nc; c++)
                                d[c] += s[c];
                        else
                            for (c = 0; c < nc; c++)
                                d[c] = s[c];
                    }
                }
            }
        }
    }
}

/* ---- int8 products (dynamic quantization) --------------------------------
 *
 * int8 compute (inference): each weight row is int8 with a float32 scale
 * (symmetric, quantized once: fastrnn.quantize_weight); each row of an
 * operand (x_t, h_{t-1}) is quantized when it is read, symmetric per row,
 * with the scale max|a| / 127 (fastrnn_quantize_u8).  The products sum
 * int8 x int8 in int32, exactly; the engine then rescales each sum to
 * float32 as ((float)sum * s_a) * s_w, the order fastrnn.reference keeps.
 *
 * vpdpbusd (AVX512_VNNI) multiplies unsigned by signed bytes, four to a
 * 32-bit lane.  The operand is stored as q + 128 (0..255), so each sum
 * comes out 128 * (the weight column's sum) too high: a tile starts its
 * sums at -128 times the column sums (`init`, made when the panel is
 * packed), and what it returns is the signed product, bit for bit.
 *
 * A panel of int8 weights holds K in groups of four, (ceil(K/4), NR, 4):
 * for each group, the four values of each column side by side (the layout
 * vpdpbusd reads: each 32-bit lane, four k of one column); a K that is not
 * a multiple of four is padded with zero weights, and the operand rows have
 * a stride of ceil(K/4)*4 bytes.  Without VNNI (the avx2 and avx512
 * levels) the same tiles run on vpmaddwd (pairs of 16-bit products), which
 * gives the same sums at about a third of the rate or less, and each group's
 * columns hold their bytes as pairs instead (fastrnn_s8_at).
 */
#if defined(__AVX512VNNI__) && FASTRNN_VBYTES == 64
#define FASTRNN_VNNI 1
#else
#define FASTRNN_VNNI 0
#endif

static inline int fastrnn_has_vnni(void) { return FASTRNN_VNNI; }

/* Row `src` (n values) quantized: dst[i] = rint(src[i] * (127 / amax)) + 128
   as bytes, n4 >= n of them (the rest 128: zero); returns the scale
   amax / 127.  A row of zeros (or of values below 2**-120) has the scale 0
   and quantizes to zeros; a row holding an inf or a NaN has the scale NaN
   (so every product it enters is NaN). */
static inline float fastrnn_quantize_u8(const float *src, long n, long n4, uint8_t *dst)
{
    /* The largest |value| as the largest of the bits with the sign cleared
       (an integer maximum, which vectorises; inf and NaN have the largest). */
    uint32_t top = 0, bits;
    float amax, inv;
    int32_t q;
    long i;
    for (i = 0; i < n; i++) {
        memcpy(&bits, src + i, sizeof bits);
        bits &= 0x7fffffffu;
        top = bits > top ? bits : top;
    }
    if (top < 0x03800000u || top >= 0x7f800000u) {  /* below 2**-120 (127 / amax would
                                                           overflow), or not finite */
        memset(dst, 128, n4);
        return top < 0x7f800000u ? 0.0f : __builtin_nanf("");
    }
    memcpy(&amax, &top, sizeof amax);
    inv = 127.0f / amax;
    /* Clamped as integers (vpminsd, vpmaxsd; |src[i] * inv| <= 127 up to
       rounding, so the clamp changes nothing but stays as a guard): clamped
       as floats, gcc built the bytes from masks of comparisons, 1.6x the
       time of the whole function at AVX-512, 2x at AVX2 (16 rows of 256). */
    for (i = 0; i < n; i++) {
        q = (int32_t)__builtin_rintf(src[i] * inv);
        q = q < 127 ? q : 127;
        q = q > -127 ? q : -127;
        dst[i] = (uint8_t)(q + 128);
    }
    for (; i < n4; i++)
        dst[i] = 128;
    return amax / 127.0f;
}

/* Where weight k of column c sits in a panel of NR columns (K in groups of
   four).  With vpdpbusd (and AMX, and the scalar tiles): the group's four
   bytes of each column side by side, (K4, NR, 4).  With vpmaddwd
   at the avx2 and avx512 levels (FASTRNN_S8_PAIRS): each group's vector of
   L columns as two halves, the (k0, k1) pairs of its L columns, then their
   (k2, k3) pairs, so that one vpmovsxbw widens a half into the 16-bit pairs
   vpmaddwd multiplies. */
#if !FASTRNN_VNNI && ((FASTRNN_VBYTES == 32 && defined(__AVX2__)) \
                      || (FASTRNN_VBYTES == 64 && defined(__AVX512BW__)))
#define FASTRNN_S8_PAIRS 1
#else
#define FASTRNN_S8_PAIRS 0
#endif

static inline long fastrnn_s8_at(long k, long c, long NR)
{
#if FASTRNN_S8_PAIRS
    enum { L = FASTRNN_VBYTES / 4 };
    return (k / 4) * 4 * NR + (c / L) * 4 * L + ((k & 3) >> 1) * 2 * L + (c % L) * 2 + (k & 1);
#else
    return (k / 4) * 4 * NR + 4 * c + (k & 3);
#endif
}

/* Panel p of the int8 weights W (G*H rows of K, row stride K) into P
   (K4 >= ceil(K/4) groups of four k by NR columns, laid out as
   fastrnn_s8_at says, NR = G*u: gate g's units p*u ..
   p*u+u-1), with init[c] = -128 * (column c's sum) and sw[c] its row's
   scale (s[row]); k past K and units past H are zero. */
static inline void fastrnn_pack_panel_s8(const int8_t *W, const float *s, long K, long K4,
                                         long G, long H, long u, long p, int8_t *P,
                                         int32_t *init, float *sw)
{
    long k, g, jj, j, c, NR = G * u;
    memset(P, 0, (size_t)(4 * K4 * NR));
    for (g = 0; g < G; g++)
        for (jj = 0; jj < u; jj++) {
            const int8_t *w = W + (g * H + p * u + jj) * K;
            int32_t sum = 0;
            c = g * u + jj;
            j = p * u + jj;
            sw[c] = j < H ? s[g * H + j] : 0.0f;
            if (j >= H)
                continue;
            for (k = 0; k < K; k++) {
                P[fastrnn_s8_at(k, c, NR)] = w[k];
                sum += w[k];
            }
            init[c] = -128 * sum;
        }
    for (c = 0; c < NR; c++)
        if (p * u + c % u >= H)
            init[c] = 0;
}

/* FASTRNN_ROUNDED(v): v as a rounded value, so that the compiler cannot fuse
   the product it holds with an addition that follows (an FMA, one rounding
   where NumPy rounds twice).  gcc fused such an addition in some of a
   tile's rows and not others, by the tile's shape (fastrnn_tile_s8_4x4 in
   11 of 16, 3x4 in 8 of 12), so a row's input term hung on which rows
   shared its tile; the batch split's row groups would have made that
   change from one call to the next. */
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define FASTRNN_ROUNDED(v) __asm__("" : "+v"(v))
#elif defined(__GNUC__) && defined(__aarch64__)
#define FASTRNN_ROUNDED(v) __asm__("" : "+w"(v))
#else
#define FASTRNN_ROUNDED(v) ((void)0)
#endif

/* The rescaling of a tile's sums done by the tile itself, from its
   registers, when they are final (the last block of k): row r, column
   c = v*L + l goes to dst[r*ldd + voff[v] + l] as ((float)sum * sa[r]) *
   sw[c], plus bias[voff[v] + l] where bias is not NULL: fastrnn_rescale_s8
   and fastrnn_rescale_s8_gates's values without their pass over the int32
   sums (stored, read back, converted; with loops of one vector a gate, a
   quarter of an LSTM (8, 256) int8 step's own code, perf). */
typedef struct {
    const float *sa, *sw, *bias;
    float *dst;
    long ldd, voff[4];
} fastrnn_s8_scaled;

/* Group k of four k into the tile's accumulators acc: A's bytes of each
   row times the panel's columns, vector v's group at pw (FASTRNN_S8_DOT,
   per instruction set, reads it in its layout). */
#define FASTRNN_S8_GROUP                                                            \
    for (r = 0; r < ROWS; r++)                                                      \
        memcpy(&a[r], A + r * lda + 4 * k, sizeof a[r]);                            \
    for (v = 0; v < VECS; v++) {                                                    \
        const int8_t *pw = P + k * 4 * NR + v * 4 * L;                              \
        FASTRNN_S8_DOT                                                              \
    }

/* One int8 tile shape: C (MR, NV*L) int32, row stride ldc, = (add ? C : init)
   + A (MR rows of K4 groups of 4 bytes, q + 128; row stride lda bytes) @
   P (K4 groups, NV*L columns); rescaled into e's dst instead where e is not
   NULL (C unused).
   Each accumulator is a chain of dependent vpdpbusd (5 cycles each on
   Intel, two a cycle): a tile of fewer than 8 accumulators (MR * NV: one
   row, a few rows) would wait on the chains, so it keeps KS sets of them,
   set s summing the groups k = s mod KS, added together at the end (integer
   sums: the same bits in any order). */
#define FASTRNN_DEFINE_TILE_S8(NAME, MR, NV)                                        \
static void NAME##_##MR##x##NV(const uint8_t *A, long lda, const int8_t *P, long K4, \
                               const int32_t *init, int32_t *C, long ldc, int add,  \
                               const fastrnn_s8_scaled *e)                          \
{                                                                                   \
    enum { L = FASTRNN_VBYTES / 4, NR = NV * L, ROWS = MR, VECS = NV,               \
           KS = MR * NV >= 8 ? 1 : MR * NV >= 4 ? 2 : 4 };                           \
    typedef int32_t ivec __attribute__((vector_size(FASTRNN_VBYTES)));              \
    typedef float fvec __attribute__((vector_size(FASTRNN_VBYTES)));                \
    ivec sets[KS][MR][NV], w;                                                       \
    uint32_t a[MR];                                                                 \
    long k, k0;                                                                     \
    int r, v, s;                                                                    \
    for (r = 0; r < MR; r++)                                                        \
        for (v = 0; v < NV; v++) {                                                  \
            memcpy(&sets[0][r][v], add ? C + r * ldc + v * L : init + v * L, sizeof w); \
            for (s = 1; s < KS; s++)                                                \
                sets[s][r][v] = (ivec){0};                                          \
        }                                                                           \
    for (k0 = 0; k0 + KS <= K4; k0 += KS)                                           \
        for (s = 0; s < KS; s++) {                                                  \
            ivec (*acc)[NV] = sets[s];                                              \
            k = k0 + s;                                                             \
            FASTRNN_S8_GROUP                                                        \
        }                                                                           \
    ivec (*acc)[NV] = sets[0];                                                      \
    for (k = k0; k < K4; k++) { /* the last K4 mod KS groups */                     \
        FASTRNN_S8_GROUP                                                            \
    }                                                                               \
    for (s = 1; s < KS; s++)                                                        \
        for (r = 0; r < MR; r++)                                                    \
            for (v = 0; v < NV; v++)                                                \
                acc[r][v] += sets[s][r][v];                                         \
    if (e) { /* e's fields read once: the stores below could alias them */        \
        const float *sa = e->sa, *sw = e->sw, *bias = e->bias;                      \
        float *dst = e->dst;                                                        \
        long ldd = e->ldd, voff[NV];                                                \
        for (v = 0; v < NV; v++)                                                    \
            voff[v] = e->voff[v];                                                   \
        for (r = 0; r < MR; r++)                                                    \
            for (v = 0; v < NV; v++) {                                              \
                fvec f, sc, b;                                                      \
                memcpy(&sc, sw + v * L, sizeof sc);                                 \
                f = (__builtin_convertvector(acc[r][v], fvec) * sa[r]) * sc;         \
                if (bias) {                                                         \
                    memcpy(&b, bias + voff[v], sizeof b);                           \
                    FASTRNN_ROUNDED(f);                                             \
                    f = f + b;                                                      \
                }                                                                   \
                memcpy(dst + r * ldd + voff[v], &f, sizeof f);                      \
            }                                                                       \
        return;                                                                     \
    }                                                                               \
    for (r = 0; r < MR; r++)                                                        \
        for (v = 0; v < NV; v++)                                                    \
            memcpy(C + r * ldc + v * L, &acc[r][v], sizeof w);                      \
}

#if FASTRNN_VNNI
#define FASTRNN_S8_DOT                                                              \
    {                                                                               \
        memcpy(&w, pw, sizeof w);                                                   \
        for (r = 0; r < ROWS; r++)                                                  \
            acc[r][v] = (ivec)_mm512_dpbusd_epi32((__m512i)acc[r][v],               \
                                                  _mm512_set1_epi32((int)a[r]), (__m512i)w); \
    }
#elif FASTRNN_S8_PAIRS
/* Without VNNI, at the avx2 and avx512 levels: vpmaddwd, pairs of 16-bit
   values multiplied and summed into 32 bits, which cannot overflow here
   (|sum| <= 2 * 255 * 127; vpmaddubsw, which sums in 16 bits with
   saturation, would reach it).  The panel holds each vector's (k0, k1) and
   (k2, k3) pairs as halves (fastrnn_s8_at), one vpmovsxbw each; the
   operand's four bytes, broadcast, are spread into the pairs (b0, b1) and
   (b2, b3) of every lane by vpshufb (zero-extended).  (Rebuilding both with
   shifts and masks from side-by-side groups, as these tiles did before, ran
   them at half the rate on an AMD EPYC Zen 3 (avx2) and at about three
   quarters of it on a Zen 5 (avx512): docs/precision.md.) */
#if FASTRNN_VBYTES == 64
#define FASTRNN_MADD16(a, b) ((ivec)_mm512_madd_epi16((__m512i)(a), (__m512i)(b)))
#define FASTRNN_S8_HALF(p) ((ivec)_mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(p))))
#define FASTRNN_S8_SPREAD(ab, m) _mm512_shuffle_epi8((__m512i)(ab), _mm512_set1_epi32((int)(m)))
#define FASTRNN_S8_BROADCAST(x) _mm512_set1_epi32((int)(x))
#else
#define FASTRNN_MADD16(a, b) ((ivec)_mm256_madd_epi16((__m256i)(a), (__m256i)(b)))
#define FASTRNN_S8_HALF(p) ((ivec)_mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(p))))
#define FASTRNN_S8_SPREAD(ab, m) _mm256_shuffle_epi8((__m256i)(ab), _mm256_set1_epi32((int)(m)))
#define FASTRNN_S8_BROADCAST(x) _mm256_set1_epi32((int)(x))
#endif
#define FASTRNN_S8_DOT                                                              \
    {                                                                               \
        ivec w01 = FASTRNN_S8_HALF(pw), w23 = FASTRNN_S8_HALF(pw + 2 * L);          \
        for (r = 0; r < ROWS; r++) {                                                \
            ivec ab = (ivec)FASTRNN_S8_BROADCAST(a[r]);                             \
            acc[r][v] += FASTRNN_MADD16(FASTRNN_S8_SPREAD(ab, 0xff01ff00u), w01)     \
                         + FASTRNN_MADD16(FASTRNN_S8_SPREAD(ab, 0xff03ff02u), w23);  \
        }                                                                           \
    }
#else
/* Each of a lane's four bytes, widened (the weight's signed, the operand's
   unsigned), multiplied and summed in 32 bits: vpdpbusd's result. */
#define FASTRNN_S8_DOT                                                              \
    {                                                                               \
        memcpy(&w, pw, sizeof w);                                                   \
        ivec w0 = (w << 24) >> 24, w1 = (w << 16) >> 24;                            \
        ivec w2 = (w << 8) >> 24, w3 = w >> 24;                                     \
        for (r = 0; r < ROWS; r++)                                                  \
            acc[r][v] += (int32_t)(a[r] & 0xff) * w0 + (int32_t)((a[r] >> 8) & 0xff) * w1 \
                         + (int32_t)((a[r] >> 16) & 0xff) * w2 + (int32_t)(a[r] >> 24) * w3; \
    }
#endif

FASTRNN_TILES_FOR_ROWS(FASTRNN_DEFINE_TILE_S8, fastrnn_tile_s8, 1)
FASTRNN_TILES_FOR_ROWS(FASTRNN_DEFINE_TILE_S8, fastrnn_tile_s8, 2)
FASTRNN_TILES_FOR_ROWS(FASTRNN_DEFINE_TILE_S8, fastrnn_tile_s8, 3)
FASTRNN_TILES_FOR_ROWS(FASTRNN_DEFINE_TILE_S8, fastrnn_tile_s8, 4)

/* C (mr, nv*L) int32 (row stride ldc) = (add ? C : init) + A @ P, or those
   sums rescaled into e's dst (e not NULL): the tile above; 1 <= mr <= 8,
   1 <= nv <= 4. */
static inline void fastrnn_tile_s8(const uint8_t *A, long lda, int mr, const int8_t *P,
                                   long K4, int nv, const int32_t *init, int32_t *C, long ldc,
                                   int add, const fastrnn_s8_scaled *e)
{
    switch (nv) {
    FASTRNN_CASE_ROWS(fastrnn_tile_s8, 1, (A, lda, P, K4, init, C, ldc, add, e))
    FASTRNN_CASE_ROWS(fastrnn_tile_s8, 2, (A, lda, P, K4, init, C, ldc, add, e))
    FASTRNN_CASE_ROWS(fastrnn_tile_s8, 3, (A, lda, P, K4, init, C, ldc, add, e))
    default:
    FASTRNN_CASE_ROWS(fastrnn_tile_s8, 4, (A, lda, P, K4, init, C, ldc, add, e))
    }
}

/* C (rows, NR) float32 = ((float)(S + add[c]) * sa[r]) * sw[c]: the int32
   sums S (rows, NR) (plus add, when not NULL: the AMX tiles' correction)
   rescaled, in the order fastrnn.reference keeps. */
static inline void fastrnn_rescale_s8(const int32_t *restrict S, long rows, long NR,
                                      const int32_t *restrict add, const float *restrict sa,
                                      const float *restrict sw, float *restrict C)
{
    long r, c;
    for (r = 0; r < rows; r++) {
        float a = sa[r];
        if (add)
            for (c = 0; c < NR; c++)
                C[r * NR + c] = ((float)(S[r * NR + c] + add[c]) * a) * sw[c];
        else
            for (c = 0; c < NR; c++)
                C[r * NR + c] = ((float)S[r * NR + c] * a) * sw[c];
    }
}

/* dst[r*ldd + k*H + jj] (k < G, jj < nu) = ((float)(S + add) * sa[r]) * sw
   + bias[k*H + jj], column c = k*u + jj of S (rows, G*u): fastrnn_rescale_s8
   with the bias added, into a row's gates.  (restrict: without it gcc
   checked each run of nu values for overlap, and the rescaling of an LSTM
   (64, 1024) inference's input terms ran at 2.4 ns a value.)  Without
   contraction into FMAs, as the tiles' FASTRNN_ROUNDED: in a loop it
   vectorises gcc may fuse the vector body and not the scalar tail. */
__attribute__((optimize("fp-contract=off")))
static inline void fastrnn_rescale_s8_gates(const int32_t *restrict S, long rows, long G, long u,
                                            long nu, const int32_t *restrict add,
                                            const float *restrict sa, const float *restrict sw,
                                            const float *restrict bias, long H,
                                            float *restrict dst, long ldd)
{
    long r, k, j, NR = G * u;
    for (r = 0; r < rows; r++) {
        float a = sa[r];
        for (k = 0; k < G; k++) {
            const int32_t *restrict s = S + r * NR + k * u;
            const float *restrict w = sw + k * u, *restrict b = bias + k * H;
            float *restrict d = dst + r * ldd + k * H;
            if (add)
                for (j = 0; j < nu; j++)
                    d[j] = ((float)(s[j] + add[k * u + j]) * a) * w[j] + b[j];
            else
                for (j = 0; j < nu; j++)
                    d[j] = ((float)s[j] * a) * w[j] + b[j];
        }
    }
}

/* ---- AMX (Intel Sapphire Rapids on): int8 products on tiles -------------
 *
 * Where the CPU has AMX-INT8 and Linux lets the process use it
 * (arch_prctl ARCH_REQ_XCOMP_PERM), the int8 products run on the tile unit
 * instead: tdpbusd, the same unsigned-by-signed bytes summed in int32, so
 * the same sums bit for bit; the correction for the operand's +128 is added
 * when they are rescaled.  A tile holds 16 rows of 64 bytes: the operand's
 * rows are read 16 at a time (the buffers have room past the last) and K in
 * blocks of 64 (K4, the groups of four, a multiple of 16: rows padded with
 * zero weights).  Built at the level with VNNI only. */
#if FASTRNN_VNNI && defined(__linux__) && defined(__x86_64__) && defined(__GNUC__) \
    && !defined(__clang__) && __GNUC__ >= 11
#define FASTRNN_AMX_BUILT 1
#include <cpuid.h>

static int fastrnn_amx_state = -1;  /* -1 not yet asked, 0 no, 1 yes */

static inline int fastrnn_amx_usable(void)
{
    if (fastrnn_amx_state < 0) {
        unsigned a, b, c, d;
        int ok = __get_cpuid_count(7, 0, &a, &b, &c, &d) && (d >> 24 & 1) && (d >> 25 & 1);
        /* ARCH_REQ_XCOMP_PERM (0x1023) for XFEATURE_XTILEDATA (18) */
        if (ok)
            ok = syscall(SYS_arch_prctl, 0x1023, 18) == 0;
        fastrnn_amx_state = ok;
    }
    return fastrnn_amx_state;
}

typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} fastrnn_tilecfg;

/* Tiles 0-3: sums (16 x 16 int32); 4: operand rows (16 x 64 bytes);
   5-7: weights (16 groups x 16 columns x 4). */
__attribute__((target("amx-tile")))
static inline void fastrnn_amx_begin(void)
{
    fastrnn_tilecfg cfg;
    int t;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (t = 0; t < 8; t++) {
        cfg.colsb[t] = 64;
        cfg.rows[t] = 16;
    }
    /* Not _tile_loadconfig: gcc 12's reads only 8 bytes of the
       configuration as far as the optimiser knows, which then dropped the
       stores of the rest (a general-protection fault). */
    __asm__ __volatile__("ldtilecfg %0" : : "m"(cfg));
}

__attribute__((target("amx-tile")))
static inline void fastrnn_amx_end(void) { _tile_release(); }

#define FASTRNN_AMX_COLUMN(T, B)                                                    \
    if (nc > T) {                                                                   \
        _tile_loadd(B, P + kg * 4 * NR + (c0 + 16 * T) * 4, 4 * NR);                \
        _tile_dpbusd(T, 4, B);                                                      \
    }

/* S (rows rounded up to 16, NR) int32 = A (rows of K4 groups of four bytes,
   row stride lda; readable 16 rows on) @ P (K4 groups, NR columns);
   K4 a multiple of 16, NR of 16.  Between fastrnn_amx_begin and _end. */
__attribute__((target("amx-tile,amx-int8")))
static void fastrnn_product_s8_amx(const uint8_t *A, long lda, long rows, const int8_t *P,
                                   long K4, long NR, int32_t *S)
{
    long r0, c0, kg, nc;
    for (r0 = 0; r0 < rows; r0 += 16)
        for (c0 = 0; c0 < NR; c0 += 64) {
            nc = (NR - c0) / 16 < 4 ? (NR - c0) / 16 : 4;
            _tile_zero(0);
            _tile_zero(1);
            _tile_zero(2);
            _tile_zero(3);
            for (kg = 0; kg < K4; kg += 16) {
                _tile_loadd(4, A + r0 * lda + 4 * kg, lda);
                FASTRNN_AMX_COLUMN(0, 5)
                FASTRNN_AMX_COLUMN(1, 6)
                FASTRNN_AMX_COLUMN(2, 7)
                FASTRNN_AMX_COLUMN(3, 5)
            }
            _tile_stored(0, S + r0 * NR + c0, 4 * NR);
            if (nc > 1)
                _tile_stored(1, S + r0 * NR + c0 + 16, 4 * NR);
            if (nc > 2)
                _tile_stored(2, S + r0 * NR + c0 + 32, 4 * NR);
            if (nc > 3)
                _tile_stored(3, S + r0 * NR + c0 + 48, 4 * NR);
        }
}
#else
#define FASTRNN_AMX_BUILT 0
static inline int fastrnn_amx_usable(void) { return 0; }
static inline void fastrnn_amx_begin(void) {}
static inline void fastrnn_amx_end(void) {}
static inline void fastrnn_product_s8_amx(const uint8_t *A, long lda, long rows,
                                          const int8_t *P, long K4, long NR, int32_t *S)
{
    (void)A; (void)lda; (void)rows; (void)P; (void)K4; (void)NR; (void)S;
}
#endif

/* ---- BLAS's threads ------------------------------------------------------ */

typedef int (*fastrnn_blas_local_fn)(int);

/* openblas_set_num_threads_local (OpenBLAS 0.3.27 on: the thread count of
   the calling thread's BLAS calls, returning the one before) of the BLAS
   that the module holding `symbol` links to, or NULL.  dlsym on a handle
   searches the object and its dependencies. */
static inline fastrnn_blas_local_fn fastrnn_find_blas_local(const void *symbol)
{
    Dl_info info;
    void *handle;
    if (!dladdr(symbol, &info) || !info.dli_fname)
        return NULL;
    handle = dlopen(info.dli_fname, RTLD_LAZY | RTLD_NOLOAD);
    if (!handle)
        return NULL;
    return (fastrnn_blas_local_fn)dlsym(handle, "openblas_set_num_threads_local");
}

/* The L2 cache of one core in bytes (glibc's sysconf, which reads it once
   from CPUID; 1 MB where it does not say). */
static inline long fastrnn_l2_bytes(void)
{
    long b = 0;
#if defined(__linux__) && defined(_SC_LEVEL2_CACHE_SIZE)
    b = sysconf(_SC_LEVEL2_CACHE_SIZE);
#endif
    return b > 0 ? b : 1L << 20;
}

/* ---- the step counter ---------------------------------------------------- */

typedef struct {
    int done;       /* items done; a futex word (the low 32 bits of the count are enough) */
    int sleepers;   /* threads asleep on done */
    char pad[56];
    int abort;      /* set once: every thread stops at its next item */
    int solo;       /* one thread uses it (a team of one, or a thread's own
                       counter): claims and counts without locked instructions */
    long per_phase;
    long *claims;   /* per item: the last phase it was claimed in (-1 before the first) */
} fastrnn_steps;

/* claims: per_phase longs, owned by the caller. */
static inline void fastrnn_steps_init(fastrnn_steps *s, long per_phase, long *claims)
{
    long i;
    memset(s, 0, sizeof *s);
    s->per_phase = per_phase;
    s->claims = claims;
    for (i = 0; i < per_phase; i++)
        claims[i] = -1;
}

static inline void fastrnn_pause(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* Spin this long before sleeping: longer than a step's imbalance between two
   busy cores, far shorter than a scheduler time slice. */
#define FASTRNN_SPIN_SECONDS 20e-6

static inline int fastrnn_steps_reached(fastrnn_steps *s, int want)
{
    int now = __atomic_load_n(&s->done, __ATOMIC_ACQUIRE);
    return (int)((unsigned int)now - (unsigned int)want) >= 0;
}

/* Wait until every item of the phases before `phase` is done: 1, or 0 once
   the work is aborted. */
static inline int fastrnn_steps_wait(fastrnn_steps *s, long phase)
{
    int want = (int)(unsigned int)(phase * s->per_phase), now;
    double t0 = 0;
    long spins = 0;
    while (!fastrnn_steps_reached(s, want)) {
        if (__atomic_load_n(&s->abort, __ATOMIC_RELAXED))
            return 0;
        if (++spins < 64) {
            fastrnn_pause();
            continue;
        }
        if (t0 == 0)
            t0 = fastrnn_now();
        if (fastrnn_now() - t0 < FASTRNN_SPIN_SECONDS) {
            spins = 0;
            continue;
        }
#ifdef __linux__
        {
            struct timespec limit = {0, 2000000}; /* wake at least every 2 ms: abort */
            __atomic_add_fetch(&s->sleepers, 1, __ATOMIC_SEQ_CST);
            now = __atomic_load_n(&s->done, __ATOMIC_SEQ_CST);
            if ((int)((unsigned int)now - (unsigned int)want) < 0)
                syscall(SYS_futex, &s->done, FUTEX_WAIT_PRIVATE, now, &limit, NULL, 0);
            __atomic_sub_fetch(&s->sleepers, 1, __ATOMIC_SEQ_CST);
        }
#else
        sched_yield();
#endif
    }
    return !__atomic_load_n(&s->abort, __ATOMIC_RELAXED);
}

/* Claim item i of `phase` (after fastrnn_steps_wait for that phase): 1 when
   this thread is the one to do it.  Phases only grow, and a phase may pass
   without claims (the backward's weight-gradient phases, whose items each
   thread counts done for its share), so an item is free in `phase` while
   its last claim is of an earlier one. */
static inline int fastrnn_steps_claim(fastrnn_steps *s, long i, long phase)
{
    long seen = __atomic_load_n(&s->claims[i], __ATOMIC_RELAXED);
    if (seen >= phase)
        return 0;
    if (s->solo) {
        s->claims[i] = phase;
        return 1;
    }
    return __atomic_compare_exchange_n(&s->claims[i], &seen, phase, 0,
                                       __ATOMIC_ACQ_REL, __ATOMIC_RELAXED);
}

/* One item finished. */
static inline void fastrnn_steps_done(fastrnn_steps *s)
{
    if (s->solo) {
        __atomic_store_n(&s->done, s->done + 1, __ATOMIC_RELAXED);
        return;
    }
    __atomic_add_fetch(&s->done, 1, __ATOMIC_SEQ_CST);
#ifdef __linux__
    if (__atomic_load_n(&s->sleepers, __ATOMIC_SEQ_CST))
        syscall(SYS_futex, &s->done, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
#endif
}

static inline int fastrnn_steps_aborted(fastrnn_steps *s)
{
    return __atomic_load_n(&s->abort, __ATOMIC_RELAXED);
}

static inline void fastrnn_steps_abort(fastrnn_steps *s)
{
    __atomic_store_n(&s->abort, 1, __ATOMIC_SEQ_CST);
#ifdef __linux__
    syscall(SYS_futex, &s->done, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
#endif
}

/* ---- row groups (the int8 batch split) -----------------------------------
 *
 * Under the batch split each thread runs its rows through every step alone.
 * Held to a fixed half, the call lasts as long as the slower core's half,
 * and the cores of a shared VM slow down by a third or more for stretches
 * of milliseconds to seconds, one at a time.  So int8 splits the batch into
 * groups of rows, each with the phase it has reached: a thread claims a run
 * of adjacent free groups at one phase (at most its share of the groups
 * left, so a fast thread cannot take them all), runs `span` phases of them,
 * and hands them back; a thread whose groups are done takes the groups its
 * partner hands back, so the slower core's rows end up shared.  A group's
 * rows are the same rows of the same phases whichever thread runs them, and
 * int8's sums are exact: the answers do not depend on who ran what. */
typedef struct {
    long *next;     /* per group: the first phase it has not run */
    int *held;      /* per group: 1 while a thread runs it */
    long n;         /* groups */
    long end;       /* the phase past the last */
    long most;      /* the most a claim takes (0: a fair share of those left) */
} fastrnn_groups;

/* Hand back the run of groups lo .. lo+n-1, which have run up to `phase`. */
static inline void fastrnn_groups_release(fastrnn_groups *g, long lo, long n, long phase)
{
    long i;
    for (i = lo; i < lo + n; i++) {
        __atomic_store_n(&g->next[i], phase, __ATOMIC_RELAXED);
        __atomic_store_n(&g->held[i], 0, __ATOMIC_RELEASE);
    }
}

/* Claim group i if it is free and at `phase`: 1, or 0 (left as it was). */
static inline int fastrnn_groups_try(fastrnn_groups *g, long i, long phase)
{
    int free_ = 0;
    if (__atomic_load_n(&g->held[i], __ATOMIC_RELAXED)
            || !__atomic_compare_exchange_n(&g->held[i], &free_, 1, 0,
                                            __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
        return 0;
    if (g->next[i] == phase)
        return 1;
    __atomic_store_n(&g->held[i], 0, __ATOMIC_RELEASE);  /* a partner moved it on */
    return 0;
}

/* Claim a run of adjacent free groups at the lowest phase a free group has
 * reached (`prefer`'s where it ties), at most ceil(left / team) of them:
 * returns how many (*lo the first, *phase their phase), waiting while the
 * groups left are all held; 0 once every group is done or *abort is set.
 * Waiting spins for FASTRNN_SPIN_SECONDS, then yields the core. */
static inline long fastrnn_groups_take(fastrnn_groups *g, long prefer, int team,
                                       long *lo, long *phase, const int *abort)
{
    double t0 = 0;
    long spins = 0;
    for (;;) {
        long i, best = -1, best_phase = 0, left = 0, most, a, b;
        if (__atomic_load_n(abort, __ATOMIC_RELAXED))
            return 0;
        for (i = 0; i < g->n; i++) {
            int held = __atomic_load_n(&g->held[i], __ATOMIC_ACQUIRE);
            long at = __atomic_load_n(&g->next[i], __ATOMIC_RELAXED);
            if (!held && at >= g->end)
                continue;  /* done (held groups count as left) */
            left++;
            if (!held && (best < 0 || at < best_phase || (at == best_phase && i == prefer))) {
                best = i;
                best_phase = at;
            }
        }
        if (left == 0)
            return 0;
        if (best >= 0 && fastrnn_groups_try(g, best, best_phase)) {
            most = g->most ? g->most : (left + team - 1) / team;
            for (a = b = best; b - a + 1 < most && b + 1 < g->n
                               && fastrnn_groups_try(g, b + 1, best_phase); b++)
                ;
            for (; b - a + 1 < most && a > 0 && fastrnn_groups_try(g, a - 1, best_phase); a--)
                ;
            *lo = a;
            *phase = best_phase;
            return b - a + 1;
        }
        if (best >= 0)
            continue;  /* lost it to a partner: look again */
        if (++spins < 64) {
            fastrnn_pause();
            continue;
        }
        spins = 0;
        if (t0 == 0)
            t0 = fastrnn_now();
        else if (fastrnn_now() - t0 >= FASTRNN_SPIN_SECONDS)
            sched_yield();
    }
}

#endif /* FASTRNN_ENGINE_H */
