/* Instance norm + activation on channels-last (N, V, C) data, the other bandwidth-bound layer of a lean network:
 * the statistics in one pass, the normalisation and the activation in a second, in place (and the same two
 * passes backward).
 *
 * channel_sums: sa[n, c] = sum_v a[n, v, c] and sab[n, c] = sum_v a[n, v, c] * b[n, v, c] (b = a gives the
 * second moment; a = dy, b = x gives the sums of the backward pass). Blocks of voxels are summed in A, then
 * added to float64 partial sums, one row of (2, N, C) per thread, zeroed and reduced by the caller.
 * Coefficients p, q, r (per (n, c), (N, C)) are of the accumulator type A.
 * affine2: out = p * u + q * v + r; v may be NULL (q unused).
 * norm_act: out = act(p * u + r) with act(t) = t > 0 ? t : slope * t (slope 1: none, 0: ReLU); out may be u
 *   (in place: the norm and the activation of a block in one read and one write of its output).
 * norm_act_grad_sums: with g = da * act'(p * z + r), sg[n, c] = sum_v g and sgz[n, c] = sum_v g * z: what the
 *   norm's backward needs, read from the saved pre-norm z and the incoming gradient in one pass.
 * norm_act_grad: out = P * g + Q * z + R with g as above (the norm's input gradient); out may be da or z. */
#include "common.h"

/* row_norm_act: po[c] = act(pp[c] * pu[c] + pr[c]); po may be pu.
 * block_sums: bs[k] += sum_j pa[j, k], bs[c + k] += sum_j pa[j, k] * pb[j, k] over nv voxels of c channels.
 * Portable loops that GCC vectorises; for bf16 with AVX512-BF16 the same arithmetic in 16-channel vectors. */
#define DEFINE_NORM_ROWS(T, A, SUFFIX)                                                                          \
static inline void row_norm_act_##SUFFIX(T *po, const T *pu, const A *restrict pp, const A *restrict pr,      \
                                         A slope, int64_t c) {                                                \
    _Pragma("omp simd")                                                                                       \
    for (int64_t k = 0; k < c; k++) {                                                                         \
        A t = pp[k] * LOAD_##SUFFIX(pu[k]) + pr[k];                                                           \
        po[k] = STORE_##SUFFIX(t > 0 ? t : slope * t);                                                        \
    }                                                                                                         \
}                                                                                                             \
                                                                                                              \
static inline void block_sums_##SUFFIX(A *restrict bs, const T *restrict pa, const T *restrict pb, int64_t nv, \
                                       int64_t c) {                                                           \
    for (int64_t j = 0; j < nv; j++) {                                                                        \
        _Pragma("omp simd")                                                                                   \
        for (int64_t k = 0; k < c; k++) {                                                                     \
            A va = LOAD_##SUFFIX(pa[j * c + k]);                                                              \
            bs[k] += va;                                                                                      \
            bs[c + k] += va * LOAD_##SUFFIX(pb[j * c + k]);                                                   \
        }                                                                                                     \
    }                                                                                                         \
}
DEFINE_NORM_ROWS(float, float, f32)
DEFINE_NORM_ROWS(double, double, f64)
#if BF16_SIMD
static inline void row_norm_act_bf16(uint16_t *po, const uint16_t *pu, const float *restrict pp,
                                     const float *restrict pr, float slope, int64_t c) {
    __m512 vs = _mm512_set1_ps(slope);
    for (int64_t j = 0; j < c; j += 16) {
        __mmask16 k = tail_mask(c - j);
        __m512 t = _mm512_fmadd_ps(f32x16_load(pp + j, k), bf16x16_load(pu + j, k),
                                   f32x16_load(pr + j, k));
        __mmask16 pos = _mm512_cmp_ps_mask(t, _mm512_setzero_ps(), _CMP_GT_OQ);
        bf16x16_store(po + j, _mm512_mask_blend_ps(pos, _mm512_mul_ps(vs, t), t), k, NULL);
    }
}

/* each 16-channel chunk summed over the block's voxels in registers: the same additions in the same order */
static inline void block_sums_bf16(float *restrict bs, const uint16_t *restrict pa, const uint16_t *restrict pb,
                                   int64_t nv, int64_t c) {
    for (int64_t j = 0; j < c; j += 16) {
        __mmask16 k = tail_mask(c - j);
        __m512 s1 = f32x16_load(bs + j, k), s2 = f32x16_load(bs + c + j, k);
        for (int64_t i = 0; i < nv; i++) {
            __m512 va = bf16x16_load(pa + i * c + j, k);
            s1 = _mm512_add_ps(s1, va);
            s2 = _mm512_fmadd_ps(va, bf16x16_load(pb + i * c + j, k), s2);
        }
        f32x16_store(bs + j, k, s1);
        f32x16_store(bs + c + j, k, s2);
    }
}
#else
DEFINE_NORM_ROWS(uint16_t, float, bf16)
#endif

#define NORM_BLOCK 64
#define DEFINE_NORM(T, A, SUFFIX)                                                                               \
void channel_sums_##SUFFIX(double *restrict partial, const T *restrict a, const T *restrict b, int64_t n,    \
                           int64_t v, int64_t c, int nthreads) {                                              \
    int64_t blocks = (v + NORM_BLOCK - 1) / NORM_BLOCK;                                                       \
    _Pragma("omp parallel num_threads(nthreads)")                                                             \
    {                                                                                                         \
        double *restrict acc = partial + (int64_t)omp_get_thread_num() * 2 * n * c;                           \
        A *restrict bs = malloc(sizeof(A) * 2 * c);                                                           \
        _Pragma("omp for schedule(static)")                                                                   \
        for (int64_t job = 0; job < n * blocks; job++) {                                                      \
            int64_t i = job / blocks, v0 = (job % blocks) * NORM_BLOCK;                                       \
            int64_t v1 = v0 + NORM_BLOCK < v ? v0 + NORM_BLOCK : v;                                           \
            for (int64_t k = 0; k < 2 * c; k++) bs[k] = 0;                                                    \
            block_sums_##SUFFIX(bs, a + (i * v + v0) * c, b + (i * v + v0) * c, v1 - v0, c);                  \
            for (int64_t k = 0; k < c; k++) {                                                                 \
                acc[i * c + k] += bs[k];                                                                      \
                acc[(n + i) * c + k] += bs[c + k];                                                            \
            }                                                                                                 \
        }                                                                                                     \
        free(bs);                                                                                             \
    }                                                                                                         \
}                                                                                                             \
                                                                                                              \
void affine2_##SUFFIX(T *out, const T *u, const T *v_, const A *p, const A *q, const A *r, int64_t n,        \
                      int64_t v, int64_t c, int nthreads) {                                                   \
    int64_t blocks = (v + NORM_BLOCK - 1) / NORM_BLOCK;                                                       \
    _Pragma("omp parallel for num_threads(nthreads) schedule(static)")                                        \
    for (int64_t job = 0; job < n * blocks; job++) {                                                          \
        int64_t i = job / blocks, v0 = (job % blocks) * NORM_BLOCK;                                           \
        int64_t v1 = v0 + NORM_BLOCK < v ? v0 + NORM_BLOCK : v;                                               \
        const A *restrict pp = p + i * c, *restrict pr = r + i * c;                                           \
        for (int64_t row = i * v + v0; row < i * v + v1; row++) {                                             \
            const T *restrict pu = u + row * c;                                                               \
            T *restrict po = out + row * c;                                                                   \
            if (v_) {                                                                                         \
                const T *restrict pv = v_ + row * c;                                                          \
                const A *restrict pq = q + i * c;                                                             \
                _Pragma("omp simd")                                                                           \
                for (int64_t k = 0; k < c; k++)                                                               \
                    po[k] = STORE_##SUFFIX(pp[k] * LOAD_##SUFFIX(pu[k]) + pq[k] * LOAD_##SUFFIX(pv[k]) + pr[k]); \
            } else {                                                                                          \
                _Pragma("omp simd")                                                                           \
                for (int64_t k = 0; k < c; k++) po[k] = STORE_##SUFFIX(pp[k] * LOAD_##SUFFIX(pu[k]) + pr[k]); \
            }                                                                                                 \
        }                                                                                                     \
    }                                                                                                         \
}                                                                                                             \
                                                                                                              \
void norm_act_##SUFFIX(T *out, const T *u, const A *p, const A *r, A slope, int64_t n, int64_t v, int64_t c,  \
                       int nthreads) {                                                                        \
    int64_t blocks = (v + NORM_BLOCK - 1) / NORM_BLOCK;                                                       \
    _Pragma("omp parallel for num_threads(nthreads) schedule(static)")                                        \
    for (int64_t job = 0; job < n * blocks; job++) {                                                          \
        int64_t i = job / blocks, v0 = (job % blocks) * NORM_BLOCK;                                           \
        int64_t v1 = v0 + NORM_BLOCK < v ? v0 + NORM_BLOCK : v;                                               \
        const A *restrict pp = p + i * c, *restrict pr = r + i * c;                                           \
        for (int64_t row = i * v + v0; row < i * v + v1; row++) {                                             \
            row_norm_act_##SUFFIX(out + row * c, u + row * c, pp, pr, slope, c);                              \
        }                                                                                                     \
    }                                                                                                         \
}                                                                                                             \
                                                                                                              \
void norm_act_grad_sums_##SUFFIX(double *restrict partial, const T *restrict da, const T *restrict z,        \
                                 const A *restrict p, const A *restrict r, A slope, int64_t n, int64_t v,    \
                                 int64_t c, int nthreads) {                                                   \
    int64_t blocks = (v + NORM_BLOCK - 1) / NORM_BLOCK;                                                       \
    _Pragma("omp parallel num_threads(nthreads)")                                                             \
    {                                                                                                         \
        double *restrict acc = partial + (int64_t)omp_get_thread_num() * 2 * n * c;                           \
        A *restrict bs = malloc(sizeof(A) * 2 * c);                                                           \
        _Pragma("omp for schedule(static)")                                                                   \
        for (int64_t job = 0; job < n * blocks; job++) {                                                      \
            int64_t i = job / blocks, v0 = (job % blocks) * NORM_BLOCK;                                       \
            int64_t v1 = v0 + NORM_BLOCK < v ? v0 + NORM_BLOCK : v;                                           \
            const A *restrict pp = p + i * c, *restrict pr = r + i * c;                                       \
            for (int64_t k = 0; k < 2 * c; k++) bs[k] = 0;                                                    \
            for (int64_t j = v0; j < v1; j++) {                                                               \
                const T *restrict pa = da + (i * v + j) * c, *restrict pz = z + (i * v + j) * c;              \
                _Pragma("omp simd")                                                                           \
                for (int64_t k = 0; k < c; k++) {                                                             \
                    A zk = LOAD_##SUFFIX(pz[k]);                                                              \
                    A g = LOAD_##SUFFIX(pa[k]) * (pp[k] * zk + pr[k] > 0 ? (A)1 : slope);                     \
                    bs[k] += g;                                                                               \
                    bs[c + k] += g * zk;                                                                      \
                }                                                                                             \
            }                                                                                                 \
            for (int64_t k = 0; k < c; k++) {                                                                 \
                acc[i * c + k] += bs[k];                                                                      \
                acc[(n + i) * c + k] += bs[c + k];                                                            \
            }                                                                                                 \
        }                                                                                                     \
        free(bs);                                                                                             \
    }                                                                                                         \
}                                                                                                             \
                                                                                                              \
void norm_act_grad_##SUFFIX(T *out, const T *da, const T *z, const A *p, const A *r, A slope, const A *P,     \
                            const A *Q, const A *R, int64_t n, int64_t v, int64_t c, int nthreads) {          \
    int64_t blocks = (v + NORM_BLOCK - 1) / NORM_BLOCK;                                                       \
    _Pragma("omp parallel for num_threads(nthreads) schedule(static)")                                        \
    for (int64_t job = 0; job < n * blocks; job++) {                                                          \
        int64_t i = job / blocks, v0 = (job % blocks) * NORM_BLOCK;                                           \
        int64_t v1 = v0 + NORM_BLOCK < v ? v0 + NORM_BLOCK : v;                                               \
        const A *restrict pp = p + i * c, *restrict pr = r + i * c;                                           \
        const A *restrict PP = P + i * c, *restrict QQ = Q + i * c, *restrict RR = R + i * c;                 \
        for (int64_t row = i * v + v0; row < i * v + v1; row++) {                                             \
            const T *pa = da + row * c, *pz = z + row * c;                                                    \
            T *po = out + row * c;                                                                            \
            _Pragma("omp simd")                                                                               \
            for (int64_t k = 0; k < c; k++) {                                                                 \
                A zk = LOAD_##SUFFIX(pz[k]);                                                                  \
                A g = LOAD_##SUFFIX(pa[k]) * (pp[k] * zk + pr[k] > 0 ? (A)1 : slope);                         \
                po[k] = STORE_##SUFFIX(PP[k] * g + QQ[k] * zk + RR[k]);                                       \
            }                                                                                                 \
        }                                                                                                     \
    }                                                                                                         \
}

DEFINE_NORM(float, float, f32)
DEFINE_NORM(double, double, f64)
DEFINE_NORM(uint16_t, float, bf16)
