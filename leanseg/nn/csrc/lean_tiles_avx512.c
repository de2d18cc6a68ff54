/* The lean convolution in one pass in float32 with AVX-512 intrinsics (lean_tile_f32), for up to 64 output
 * channels: forward at stride 1 and 2, and the stride-1 adjoint (dx; lean_bwd_f32 reuses its rows). The portable
 * direct kernel spends most of its time per voxel (a buffer of the 1x1 results, a pointer per tap chosen per
 * voxel, loops of run-time length). Here one tile of DX voxels of a row keeps its DX x NB vectors of 16 outputs in
 * registers from the 1x1 (a broadcast of each input channel times a row of W^T) through the taps to the store;
 * W^T stays in L1; the voxels whose x-taps leave the input (the ends of a row) take the same code one at a time
 * with those taps reading zeros, and rows whose taps leave the input drop those taps. The stride-2 adjoint keeps
 * the direct kernel. Without AVX-512 (lean_simd() 0) the caller uses the direct kernel and BLAS.
 */
#include "common.h"

#if LEAN_SIMD
/* DX voxels starting at o (output) and s (centre source), voxel steps ostep and sstep; tk[k] the source of tap k
 * for the first voxel (the same sstep), tp[k] its coefficients (NB * 16, zero-padded). wt (cin, NB * 16) is W^T
 * zero-padded; bias NULL or NB * 16 values. mb: blocks of 16 outputs that have taps (ceil(m / 16)), mmask the
 * lanes of the last of them (the tap loads stop at channel m), omask the stored lanes of the last block. With rs
 * (2 * NB vectors), the sums and sums of squares of the stored values are added to it. */
#define DEFINE_LEAN_TILE(TNB, TDX)                                                                                    \
static inline __attribute__((always_inline)) void lean_tile_##TNB##_##TDX(float *restrict o, int64_t ostep,           \
        const float *restrict s, int64_t sstep, const float *const *tk, const float *const *tp, int nt,               \
        const float *restrict wt, const float *restrict bias, int64_t cin, int64_t mb, __mmask16 mmask,               \
        __mmask16 omask, __m512 *rs, int stream) {                                                                    \
    __m512 acc[TDX][TNB];                                                                                             \
_Pragma("GCC unroll 8")                                                                                               \
    for (int j = 0; j < TDX; j++)                                                                                     \
_Pragma("GCC unroll 4")                                                                                               \
        for (int b = 0; b < TNB; b++) acc[j][b] = bias ? _mm512_loadu_ps(bias + 16 * b) : _mm512_setzero_ps();        \
    for (int64_t c = 0; c < cin; c++) {                                                                               \
        __m512 wv[TNB];                                                                                               \
_Pragma("GCC unroll 4")                                                                                               \
        for (int b = 0; b < TNB; b++) wv[b] = _mm512_loadu_ps(wt + c * TNB * 16 + 16 * b);                            \
_Pragma("GCC unroll 8")                                                                                               \
        for (int j = 0; j < TDX; j++) {                                                                               \
            __m512 xv = _mm512_set1_ps(s[j * sstep + c]);                                                             \
_Pragma("GCC unroll 4")                                                                                               \
            for (int b = 0; b < TNB; b++) acc[j][b] = _mm512_fmadd_ps(wv[b], xv, acc[j][b]);                          \
        }                                                                                                             \
    }                                                                                                                 \
    for (int k = 0; k < nt; k++) {                                                                                    \
_Pragma("GCC unroll 4")                                                                                               \
        for (int b = 0; b < TNB; b++) {                                                                               \
            if (b >= mb) break;                                                                                       \
            __mmask16 lm = b == mb - 1 ? mmask : (__mmask16)0xFFFF;                                                   \
            __m512 t = _mm512_loadu_ps(tp[k] + 16 * b);                                                               \
_Pragma("GCC unroll 8")                                                                                               \
            for (int j = 0; j < TDX; j++)                                                                             \
                acc[j][b] = _mm512_fmadd_ps(t, _mm512_maskz_loadu_ps(lm, tk[k] + j * sstep + 16 * b), acc[j][b]);     \
        }                                                                                                             \
    }                                                                                                                 \
_Pragma("GCC unroll 8")                                                                                               \
    for (int j = 0; j < TDX; j++)                                                                                     \
_Pragma("GCC unroll 4")                                                                                               \
        for (int b = 0; b < TNB; b++) {                                                                               \
            if (stream)                                                                                               \
                _mm512_stream_ps(o + j * ostep + 16 * b, acc[j][b]);                                                  \
            else if (b < TNB - 1)                                                                                     \
                _mm512_storeu_ps(o + j * ostep + 16 * b, acc[j][b]);                                                  \
            else                                                                                                      \
                _mm512_mask_storeu_ps(o + j * ostep + 16 * b, omask, acc[j][b]);                                      \
            if (rs) {                                                                                                 \
                rs[b] = _mm512_add_ps(rs[b], acc[j][b]);                                                              \
                rs[TNB + b] = _mm512_fmadd_ps(acc[j][b], acc[j][b], rs[TNB + b]);                                     \
            }                                                                                                         \
        }                                                                                                             \
}
DEFINE_LEAN_TILE(1, 8)
DEFINE_LEAN_TILE(1, 1)
DEFINE_LEAN_TILE(2, 6)
DEFINE_LEAN_TILE(2, 1)
DEFINE_LEAN_TILE(3, 4)
DEFINE_LEAN_TILE(3, 1)
DEFINE_LEAN_TILE(4, 4)
DEFINE_LEAN_TILE(4, 1)

/* One output row (n, z, y) of lean_tile_f32: the row's taps, the row's ends one voxel at a time, tiles between. */
#define TILE_FN2(NB, DX) lean_tile_##NB##_##DX
#define TILE_FN(NB, DX) TILE_FN2(NB, DX)
#define DEFINE_TILE_ROW(NB)                                                                                     \
static void tile_row_##NB(float *restrict po, grid_t go, const float *restrict in, grid_t gi, int64_t row,     \
                          const float *wt, const float *bias, const float *taps, const float *zeros,          \
                          const int64_t *axis, const int64_t *sign, int nt0, int64_t cin, int64_t cout,       \
                          int64_t m, int64_t mul, __m512 *rs, int stream) {                                   \
    int64_t n = row / (go.d * go.h), z = (row / go.h) % go.d, y = row % go.h;                                 \
    const float *crow = in + ((n * gi.d + z * mul) * gi.h + y * mul) * gi.w * gi.ld;                          \
    const float *base[6], *tp[6];                                                                             \
    int64_t xoff[6];                                                                                          \
    int nt = 0, nf = 0;                                                                                       \
    const float *far[4];                                                                                      \
    for (int k = 0; k < nt0; k++) {                                                                           \
        int64_t rz = source_coord(z, mul, 1, axis[k] == 0 ? sign[k] : 0, gi.d);                               \
        int64_t ry = source_coord(y, mul, 1, axis[k] == 1 ? sign[k] : 0, gi.h);                               \
        if (rz < 0 || ry < 0) continue; /* a row outside the input: the tap adds nothing to this row */       \
        base[nt] = in + ((n * gi.d + rz) * gi.h + ry) * gi.w * gi.ld;                                         \
        if (mul == 1 && far_row(axis[k], gi.h, gi.w, gi.ld)) far[nf++] = base[nt]; /* stride 2: no gain */   \
        xoff[nt] = axis[k] == 2 ? sign[k] : 0;                                                                \
        tp[nt++] = taps + k * NB * 16;                                                                        \
    }                                                                                                         \
    int64_t mb = (m + 15) / 16, sstep = mul * gi.ld;                                                          \
    __mmask16 mmask = lane_mask(m - 16 * (mb - 1)), omask = lane_mask(cout - 16 * (NB - 1));                  \
    /* x in [lo, hi): every x-tap inside the input (x * mul - 1 >= 0 and x * mul + 1 < gi.w) */               \
    int64_t lo = go.w > 1 ? 1 : go.w, hi = gi.w >= 2 ? (gi.w - 2) / mul + 1 : 0;                             \
    if (hi > go.w) hi = go.w;                                                                                 \
    if (hi < lo) hi = lo;                                                                                     \
    const float *tk[6];                                                                                       \
    /* The common case of 16 channels, every tap row inside, no bias or statistics, runs the tile with constant   \
     * arguments, so that its channel, tap, mask, bias and statistics tests fold away. */                        \
    int full = NB == 1 && nt == nt0 && (nt0 == 6 || nt0 == 4) && cin == 16 && m == 16 && cout == 16 && !bias && \
               !rs && sstep == 16 && go.ld == 16;                                                             \
    for (int64_t x = 0; x < go.w;) {                                                                          \
        /* the interior's last partial tile: a whole tile ending at hi, recomputing (identically) voxels already \
         * stored, instead of up to TILE - 1 single voxels; not with stats, which would count them twice */     \
        if (!rs && x >= lo && x < hi && x + TILE_##NB > hi && hi - lo >= TILE_##NB) x = hi - TILE_##NB;        \
        if (x >= lo && x + TILE_##NB <= hi) {                                                                      \
            for (int k = 0; k < nt; k++) tk[k] = base[k] + (x * mul + xoff[k]) * gi.ld;                       \
            for (int k = 0; k < nf; k++) /* each line of the tile PF_DIST tiles ahead in the far tap rows */    \
                for (int64_t f = 0; f < TILE_##NB * sstep; f += 16)                                           \
                    _mm_prefetch((const char *)(far[k] + (x + PF_DIST * TILE_##NB) * sstep + f), _MM_HINT_T0); \
            if (full && stream) /* constant arguments: the tile's tests fold away (see full) */                 \
                TILE_FN(NB, TILE_##NB)(po + x * 16, 16, crow + x * 16, 16, tk, tp, nt0 == 6 ? 6 : 4, wt, NULL, 16, \
                                       1, 0xFFFF, 0xFFFF, NULL, 1);                                           \
            else if (full)                                                                                    \
                TILE_FN(NB, TILE_##NB)(po + x * 16, 16, crow + x * 16, 16, tk, tp, nt0 == 6 ? 6 : 4, wt, NULL, 16, \
                                       1, 0xFFFF, 0xFFFF, NULL, 0);                                           \
            else                                                                                              \
                TILE_FN(NB, TILE_##NB)(po + x * go.ld, go.ld, crow + x * sstep, sstep, tk, tp, nt, wt, bias,   \
                                       cin, mb, mmask, omask, rs, stream);                                    \
            x += TILE_##NB;                                                                                    \
        } else {                                                                                              \
            for (int k = 0; k < nt; k++) {                                                                    \
                int64_t rx = x * mul + xoff[k];                                                               \
                tk[k] = rx >= 0 && rx < gi.w ? base[k] + rx * gi.ld : zeros;                                  \
            }                                                                                                 \
            lean_tile_##NB##_1(po + x * go.ld, go.ld, crow + x * sstep, sstep, tk, tp, nt, wt, bias, cin, mb, \
                               mmask, omask, rs, 0);                                                                   \
            x++;                                                                                              \
        }                                                                                                     \
    }                                                                                                         \
}
/* Tiles ahead that a row's tap rows at least PF_BYTES from its centre row are prefetched (0: not at all): those rows
 * (the z-taps' in 3D, the y-taps' of wide 2D rows) were read a plane or a long row earlier, so they come from L2. */
#ifndef PF_DIST
#define PF_DIST 2
#endif
#ifndef PF_BYTES
#define PF_BYTES 16384
#endif
/* Whether the rows of a tap along axis (0: z, 1: y, 2: x) lie at least PF_BYTES from the row being computed, on a
 * stride-1 grid of h x w voxels of ld floats: then they come from L2 and are worth prefetching (lean_tile_f32's
 * rows in tiles PF_DIST ahead, lean_bwd_f32's one line per voxel BPF ahead). */
static inline int far_row(int64_t axis, int64_t h, int64_t w, int64_t ld) {
    return PF_DIST && axis != 2 && (axis == 0 ? h * w : w) * ld * (int64_t)sizeof(float) >= PF_BYTES;
}
/* voxels per tile for NB blocks of outputs: DX * NB accumulators, with W's NB vectors, fit the 32 registers */
#define TILE_1 8
#define TILE_2 6
#define TILE_3 4
#define TILE_4 4
DEFINE_TILE_ROW(1)
DEFINE_TILE_ROW(2)
DEFINE_TILE_ROW(3)
DEFINE_TILE_ROW(4)

/* out = 1x1(in) + stencil(in) (+ bias), as lean_direct_f32 with div = 1 and cout <= 64, but wt (cin, NB * 16),
 * taps (nt, NB * 16) and bias (NB * 16) zero-padded to NB = ceil(cout / 16) blocks; stats as lean_direct's.
 * stream: write the tiles with non-temporal stores (for outputs the caches cannot keep: no read of each line before
 * it is written); the caller guarantees out 64-byte aligned and go.ld == cout, a multiple of 16. */
void lean_tile_f32(float *out, grid_t go, const float *in, grid_t gi, const float *wt, const float *bias,
                   const float *taps, const float *zeros, const int64_t *axis, const int64_t *sign, int64_t ntaps,
                   int64_t cin, int64_t cout, int64_t m, int64_t mul, double *stats, int stream, int nthreads) {
    int64_t rows = go.n * go.d * go.h, nb = (cout + 15) / 16;
    _Pragma("omp parallel num_threads(nthreads)")
    {
        double *restrict acc = stats ? stats + (int64_t)omp_get_thread_num() * 2 * go.n * cout : NULL;
        __m512 rs[8];
        float sums[128];
        _Pragma("omp for schedule(static)")
        for (int64_t row = 0; row < rows; row++) {
            for (int b = 0; b < 8; b++) rs[b] = _mm512_setzero_ps();
            float *po = out + row * go.w * go.ld;
            __m512 *r = stats ? rs : NULL;
            if (nb == 1)
                tile_row_1(po, go, in, gi, row, wt, bias, taps, zeros, axis, sign, ntaps, cin, cout, m, mul, r,
                           stream);
            else if (nb == 2)
                tile_row_2(po, go, in, gi, row, wt, bias, taps, zeros, axis, sign, ntaps, cin, cout, m, mul, r,
                           stream);
            else if (nb == 3)
                tile_row_3(po, go, in, gi, row, wt, bias, taps, zeros, axis, sign, ntaps, cin, cout, m, mul, r,
                           stream);
            else
                tile_row_4(po, go, in, gi, row, wt, bias, taps, zeros, axis, sign, ntaps, cin, cout, m, mul, r,
                           stream);
            if (acc) {
                int64_t n = row / (go.d * go.h);
                for (int b = 0; b < 2 * nb; b++) _mm512_storeu_ps(sums + 16 * b, rs[b]);
                for (int64_t c = 0; c < cout; c++) {
                    acc[n * cout + c] += sums[c];
                    acc[(go.n + n) * cout + c] += sums[16 * nb + c];
                }
            }
        }
        if (stream) _mm_sfence(); /* the streamed stores are visible to every thread after the region */
    }
}
#endif /* LEAN_SIMD */
