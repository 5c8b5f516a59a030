/* RNNProp's deployed step fused into one pass over the coordinates (AVX-512F/DQ, float32).

   Per block of 16 coordinates: Adam's moments and the two features, every LSTM layer (H = 20) and the
   output layer, with each coordinate's state read and written once and everything in between kept in
   registers or L1. Built by optimlab.learned.kernels on first use with the system C compiler.

   Per LSTM layer and group of 4 coordinates, the gate matmul [x, h, 1] @ W runs with the 80 gate outputs
   of one coordinate across 5 AVX-512 registers (20 accumulators for the group; the weights stay in L1),
   then the activations and the cell update are applied to the accumulators. The packed weights (made by
   the Python side) order the 80 gate columns i0-15 | f0-15 | o0-15 | g0-15 | i16-19 f16-19 o16-19 g16-19,
   so that units 0-15 of each gate fill a register and the cell update of those units runs on whole
   registers; units 16-19 of 4 coordinates are regrouped by a 4x4 transpose of 128-bit blocks. The
   columns are pre-scaled so that each accumulator holds a = -z log2(e) (sigmoid gates) or -2 z log2(e)
   (cell input, tanh z = 2 sigmoid(2z) - 1): every gate is then 1 / (1 + 2^a).

   Activations: 2^a = 2^floor(a) * P(a - floor(a)) with P a degree-5 minimax polynomial on [0, 1)
   (relative error 7.5e-8), VREDUCEPS for the fraction and VSCALEFPS for the power of two; the reciprocal
   is VRCP14PS refined by one Newton step. Measured against float64 on [-20, 20]: sigmoids within 2.4e-7
   relative (about 2 float32 ulps), tanh of the gates and cells (2 sigmoid(2z) - 1) within 2.1e-7
   absolute, the output's tanh (an odd polynomial below 0.625, so accurate near zero) within 3.3e-7
   relative. a is clamped at 64 (2^64 keeps the
   reciprocal's Newton step finite; the sigmoid is then below 6e-20 instead of exactly its value), with
   VMINPS's operand order chosen so that a NaN goes through. Compiled without -ffast-math: NaN and
   infinities propagate as IEEE arithmetic says, as in the eager step. */

#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#define H 20
#define NG 80
#define BLK 16
#define MAXL 8

#define INLINE static inline __attribute__((always_inline))

INLINE __m512 exp2_frac(__m512 f) { /* 2^f on [0, 1) */
    __m512 p = _mm512_set1_ps(1.87757e-03f);
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(8.98934e-03f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.582634e-02f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.401536e-01f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.931531e-01f));
    return _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.9999994e-01f));
}

/* 1 / (1 + 2^a) */
INLINE __m512 sig2(__m512 a) {
    const __m512 one = _mm512_set1_ps(1.0f);
    a = _mm512_min_ps(_mm512_set1_ps(64.0f), a); /* VMINPS returns its second operand when one is NaN */
    __m512 f = _mm512_reduce_ps(a, 0x09);        /* a - floor(a): M = 0, round down, no precision exception */
    __m512 e = _mm512_scalef_ps(exp2_frac(f), a); /* * 2^floor(a) */
    __m512 d = _mm512_add_ps(e, one);
    __m512 r = _mm512_rcp14_ps(d);
    return _mm512_fmadd_ps(r, _mm512_fnmadd_ps(d, r, one), r);
}

/* tanh z = 2 / (1 + 2^(-2 z log2 e)) - 1 */
INLINE __m512 tanh_abs(__m512 z) {
    __m512 s = sig2(_mm512_mul_ps(z, _mm512_set1_ps(-2.8853900817779268f)));
    return _mm512_fmsub_ps(_mm512_set1_ps(2.0f), s, _mm512_set1_ps(1.0f));
}

/* tanh, accurate relative near 0 (the output layer: one per coordinate) */
INLINE __m512 tanh_rel(__m512 z) {
    __m512 big = tanh_abs(z);
    __m512 z2 = _mm512_mul_ps(z, z);
    __m512 p = _mm512_set1_ps(-5.6601292e-03f); /* degree-11 odd minimax on [0, 0.625]: 3.9e-9 relative */
    p = _mm512_fmadd_ps(p, z2, _mm512_set1_ps(2.0591130e-02f));
    p = _mm512_fmadd_ps(p, z2, _mm512_set1_ps(-5.3721119e-02f));
    p = _mm512_fmadd_ps(p, z2, _mm512_set1_ps(1.3331129e-01f));
    p = _mm512_fmadd_ps(p, z2, _mm512_set1_ps(-3.3333260e-01f));
    p = _mm512_fmadd_ps(p, z2, _mm512_set1_ps(1.0f));
    __m512 small = _mm512_mul_ps(p, z);
    __mmask16 lo = _mm512_cmp_ps_mask(_mm512_abs_ps(z), _mm512_set1_ps(0.625f), _CMP_LT_OQ);
    return _mm512_mask_blend_ps(lo, big, small);
}

/* One LSTM layer on 4 coordinates: x rows (stride xs, K inputs), h and c rows (stride H) updated in place.
   W: packed [K + H + 1][80] (inputs, recurrent, bias). */
INLINE void lstm4(const int K, const float *x, const int xs, float *h, float *c, const float *W) {
    __m512 acc[4][5];
    const float *bias = W + (K + H) * NG;
    for (int r = 0; r < 5; r++) {
        __m512 b = _mm512_loadu_ps(bias + 16 * r);
        for (int q = 0; q < 4; q++) acc[q][r] = b;
    }
    for (int k = 0; k < K; k++) {
        __m512 w[5];
        for (int r = 0; r < 5; r++) w[r] = _mm512_loadu_ps(W + k * NG + 16 * r);
        for (int q = 0; q < 4; q++) {
            __m512 b = _mm512_set1_ps(x[q * xs + k]);
            for (int r = 0; r < 5; r++) acc[q][r] = _mm512_fmadd_ps(b, w[r], acc[q][r]);
        }
    }
    for (int k = 0; k < H; k++) {
        __m512 w[5];
        for (int r = 0; r < 5; r++) w[r] = _mm512_loadu_ps(W + (K + k) * NG + 16 * r);
        for (int q = 0; q < 4; q++) {
            __m512 b = _mm512_set1_ps(h[q * H + k]);
            for (int r = 0; r < 5; r++) acc[q][r] = _mm512_fmadd_ps(b, w[r], acc[q][r]);
        }
    }
    const __m512 two = _mm512_set1_ps(2.0f), one = _mm512_set1_ps(1.0f);
    /* units 16-19 of the 4 coordinates' cells, lane 4q + j = c[q][16 + j] (read before any store) */
    __m512 ct = _mm512_setzero_ps();
    for (int q = 0; q < 4; q++) ct = _mm512_mask_loadu_ps(ct, (__mmask16)(0xF << (4 * q)), c + 16 + 16 * q);
    __m512 t[4];
    for (int q = 0; q < 4; q++) {
        __m512 i = sig2(acc[q][0]), f = sig2(acc[q][1]), o = sig2(acc[q][2]);
        __m512 g = _mm512_fmsub_ps(two, sig2(acc[q][3]), one);
        __m512 cq = _mm512_loadu_ps(c + q * H);
        cq = _mm512_fmadd_ps(i, g, _mm512_mul_ps(f, cq));
        __m512 hq = _mm512_mul_ps(o, tanh_abs(cq));
        _mm512_storeu_ps(c + q * H, cq);
        _mm512_storeu_ps(h + q * H, hq);
        __m512 tq = sig2(acc[q][4]);
        t[q] = _mm512_mask_fmsub_ps(tq, 0xF000, two, one); /* lanes 12-15: g = 2 s - 1 */
    }
    /* 4x4 transpose of 128-bit blocks: block b of t[q] -> block q of gate b */
    __m512 a0 = _mm512_shuffle_f32x4(t[0], t[1], 0x44), a1 = _mm512_shuffle_f32x4(t[0], t[1], 0xEE);
    __m512 a2 = _mm512_shuffle_f32x4(t[2], t[3], 0x44), a3 = _mm512_shuffle_f32x4(t[2], t[3], 0xEE);
    __m512 gi = _mm512_shuffle_f32x4(a0, a2, 0x88), gf = _mm512_shuffle_f32x4(a0, a2, 0xDD);
    __m512 go = _mm512_shuffle_f32x4(a1, a3, 0x88), gg = _mm512_shuffle_f32x4(a1, a3, 0xDD);
    ct = _mm512_fmadd_ps(gi, gg, _mm512_mul_ps(gf, ct));
    __m512 ht = _mm512_mul_ps(go, tanh_abs(ct));
    for (int q = 0; q < 4; q++) {
        _mm512_mask_storeu_ps(c + 16 + 16 * q, (__mmask16)(0xF << (4 * q)), ct);
        _mm512_mask_storeu_ps(h + 16 + 16 * q, (__mmask16)(0xF << (4 * q)), ht);
    }
}

/* x' = lerp(x, y, w) as ATen's vectorised lerp computes it */
INLINE __m512 lerp(__m512 x, __m512 y, float w) {
    __m512 d = _mm512_sub_ps(y, x);
    return w < 0.5f ? _mm512_fmadd_ps(_mm512_set1_ps(w), d, x) : _mm512_fmadd_ps(_mm512_set1_ps(w - 1.0f), d, y);
}

typedef struct {
    int layers;
    float *h[MAXL], *c[MAXL];
    const float *w[MAXL];
    const float *w_out;
    float b_out, w1, w2, c1, c2, eps, alpha, lr;
} step_args;

/* One block of 16 coordinates; pointers already offset to the block. */
static void block16(const step_args *A, float *p, const float *g, float *m, float *v, float *const *hs,
                    float *const *cs) {
    float feat[BLK * 2] __attribute__((aligned(64)));
    float out[BLK] __attribute__((aligned(64)));
    __m512 gv = _mm512_loadu_ps(g), mv = _mm512_loadu_ps(m), vv = _mm512_loadu_ps(v);
    mv = lerp(mv, gv, A->w1);
    vv = lerp(vv, _mm512_mul_ps(gv, gv), A->w2);
    _mm512_storeu_ps(m, mv);
    _mm512_storeu_ps(v, vv);
    __m512 r = _mm512_add_ps(_mm512_div_ps(vv, _mm512_set1_ps(A->c2)), _mm512_set1_ps(A->eps));
    r = _mm512_div_ps(_mm512_set1_ps(1.0f), _mm512_sqrt_ps(r));
    __m512 x0 = _mm512_mul_ps(_mm512_div_ps(mv, _mm512_set1_ps(A->c1)), r), x1 = _mm512_mul_ps(gv, r);
    /* interleave into rows [x0, x1] */
    const __m512i lo = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    const __m512i hi = _mm512_set_epi32(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8);
    _mm512_store_ps(feat, _mm512_permutex2var_ps(x0, lo, x1));
    _mm512_store_ps(feat + 16, _mm512_permutex2var_ps(x0, hi, x1));
    for (int q = 0; q < BLK; q += 4) lstm4(2, feat + 2 * q, 2, hs[0] + q * H, cs[0] + q * H, A->w[0]);
    for (int l = 1; l < A->layers; l++)
        for (int q = 0; q < BLK; q += 4) lstm4(H, hs[l - 1] + q * H, H, hs[l] + q * H, cs[l] + q * H, A->w[l]);
    const float *hl = hs[A->layers - 1];
    __m512 w0 = _mm512_loadu_ps(A->w_out), w16 = _mm512_maskz_loadu_ps(0xF, A->w_out + 16);
    for (int q = 0; q < BLK; q++) {
        __m512 s = _mm512_mul_ps(_mm512_loadu_ps(hl + q * H), w0);
        s = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(0xF, hl + q * H + 16), w16, s);
        out[q] = _mm512_reduce_add_ps(s);
    }
    __m512 y = _mm512_add_ps(_mm512_load_ps(out), _mm512_set1_ps(A->b_out));
    __m512 d = _mm512_mul_ps(tanh_rel(y), _mm512_set1_ps(A->alpha));
    _mm512_storeu_ps(p, _mm512_fmadd_ps(d, _mm512_set1_ps(-A->lr), _mm512_loadu_ps(p)));
}

/* scalars: b_out, 1 - beta_1, 1 - beta_2, c1, c2, epsilon, alpha, lr. Returns 0, or -1 for an unsupported
   layer count. */
int optimlab_rnnprop_step(int64_t start, int64_t stop, int layers, float *param, const float *grad, float *m,
                          float *v, float *const *h, float *const *c, const float *const *w, const float *w_out,
                          const float *scalars) {
    if (layers < 1 || layers > MAXL) return -1;
    step_args A;
    A.layers = layers;
    for (int l = 0; l < layers; l++) A.h[l] = h[l], A.c[l] = c[l], A.w[l] = w[l];
    A.w_out = w_out;
    A.b_out = scalars[0], A.w1 = scalars[1], A.w2 = scalars[2], A.c1 = scalars[3], A.c2 = scalars[4];
    A.eps = scalars[5], A.alpha = scalars[6], A.lr = scalars[7];
    float *hs[MAXL], *cs[MAXL];
    int64_t i = start;
    for (; i + BLK <= stop; i += BLK) {
        for (int l = 0; l < layers; l++) hs[l] = A.h[l] + i * H, cs[l] = A.c[l] + i * H;
        block16(&A, param + i, grad + i, m + i, v + i, hs, cs);
    }
    if (i < stop) { /* the last partial block, through zero-padded copies */
        int64_t n = stop - i;
        float pb[BLK] = {0}, gb[BLK] = {0}, mb[BLK] = {0}, vb[BLK] = {0};
        float hb[MAXL][BLK * H], cb[MAXL][BLK * H];
        memcpy(pb, param + i, n * 4), memcpy(gb, grad + i, n * 4), memcpy(mb, m + i, n * 4), memcpy(vb, v + i, n * 4);
        for (int l = 0; l < layers; l++) {
            memset(hb[l], 0, sizeof hb[l]), memset(cb[l], 0, sizeof cb[l]);
            memcpy(hb[l], A.h[l] + i * H, n * H * 4), memcpy(cb[l], A.c[l] + i * H, n * H * 4);
            hs[l] = hb[l], cs[l] = cb[l];
        }
        block16(&A, pb, gb, mb, vb, hs, cs);
        memcpy(param + i, pb, n * 4), memcpy(m + i, mb, n * 4), memcpy(v + i, vb, n * 4);
        for (int l = 0; l < layers; l++)
            memcpy(A.h[l] + i * H, hb[l], n * H * 4), memcpy(A.c[l] + i * H, cb[l], n * H * 4);
    }
    return 0;
}
