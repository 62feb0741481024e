/* Direct 3x3 convolution (stride 1 or 2, up to 64 channels), one image at a time (used by
 * conv.c).
 *
 * Why: the 3x3 convolutions of a CIFAR/MNIST ResNet have 16 to 64 channels on 7x7 to
 * 32x32 planes. im2col + sgemm writes a column matrix 9x the input, which OpenBLAS then
 * packs once more; with such short GEMMs that traffic and the packing cost about as much
 * as a third of the multiply-adds (perf on a resnet20 step: sgemm kernel 45%, im2col and
 * its memcpy 17%, OpenBLAS packing 15%). Here the input is copied once into a zero-padded
 * plane and the multiply-adds read it in place.
 *
 * Vectorized over output channels, 8 to a lane group (AVX2 + FMA; built without them, the
 * kernel is left out and every convolution takes im2col + sgemm): an output pixel's 8 channels
 * are one vector, the input pixel is broadcast, the weights of (ci, kh, kw) for 8 output
 * channels are one vector of a packed copy of the weights. Register block: 2 vectors of
 * output channels x 6 output pixels = 12 accumulators. Pixels are numbered flat over the
 * output plane (a block may span two rows), each with its offset into the padded plane,
 * so 7x7 outputs do not waste lanes.
 *
 * Three uses:
 *   forward   y = conv(x, W)              packed weights (Cout/8, Cin, 3, 3, 8)
 *   dinp      (stride 1) dx = conv(dy, W') with W' the weights transposed and rotated by 180
 *             degrees and padding 2 - pad: the same kernel (packed (Cin/8, Cout, 3, 3, 8));
 *             at stride 2 conv.c computes it by GEMM + col2im
 *   dweight   dW[co][ci][kh][kw] = sum_p dy[co][p] * xpad[ci][p + kh*Wp + kw]: vectors
 *             of 8 output channels of dy (transposed to (P, Cout)) times broadcasts of
 *             the input; 9 accumulators, one per tap.
 * Sums are in float, as in the GEMM this replaces; the weight gradient is summed in float
 * over a thread's images (packed layout), and conv.c adds the threads' sums in double. */
#include <stddef.h>
#include <string.h>

#include "layers.h"

static int dc_enabled = 1;

void pn_dconv_enable(int on) { dc_enabled = on != 0; }

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>

enum { DC_K = 3, DC_T = 9, DC_NP = 6 };

/* Up to 64 channels: there the direct kernel ran at 0.97x to 1.42x of im2col + sgemm in
 * isolation (bench/bench_conv.c on resnet20's shapes, mostly 1.1x to 1.3x; more in a whole
 * training step, docs/RESULTS.md); at 128 to 512 channels sgemm's blocking wins or ties
 * (bench_conv -s ...: 0.74x to 1.15x), so those stay on the GEMM. */
int pn_dconv_ok(const pn_conv_shape *s)
{
    return dc_enabled && s->KH == DC_K && s->KW == DC_K && (s->stride == 1 || s->stride == 2) &&
           s->groups == 1 && s->pad <= 2 && s->Cout % 8 == 0 && s->Cin <= 64 && s->Cout <= 64;
}

/* The input gradient by the direct kernel needs stride 1 (then it is a convolution of dout)
 * and input channels in multiples of 8 (its output channels). */
int pn_dconv_dinp_ok(const pn_conv_shape *s) { return pn_dconv_ok(s) && s->stride == 1 && s->Cin % 8 == 0; }

/* Padded plane of an input of H x W with padding pad (all sides). */
static size_t pplane(int H, int W, int pad) { return (size_t)(H + 2 * pad) * (size_t)(W + 2 * pad); }

static int out_size(int n, int pad, int st) { return (n + 2 * pad - DC_K) / st + 1; }

size_t pn_dconv_scratch(const pn_conv_shape *s, int backward)
{
    const int Ho = out_size(s->H, s->pad, s->stride), Wo = out_size(s->W, s->pad, s->stride);
    size_t n = (size_t)s->Cin * pplane(s->H, s->W, s->pad);
    if (backward) n += (size_t)Ho * Wo * s->Cout;
    if (backward && pn_dconv_dinp_ok(s)) n += (size_t)s->Cout * pplane(Ho, Wo, 2 - s->pad);
    return n;
}

// w (Cout, Cin, 3, 3) -> wp (Cout/8, Cin, 3, 3, 8)
void pn_dconv_pack_fwd(float *wp, const float *w, int Cin, int Cout)
{
    for (int co = 0; co < Cout; co++)
        for (int ci = 0; ci < Cin; ci++)
            for (int t = 0; t < DC_T; t++)
                wp[(((size_t)(co / 8) * Cin + ci) * DC_T + t) * 8 + co % 8] =
                    w[((size_t)co * Cin + ci) * DC_T + t];
}

// w (Cout, Cin, 3, 3) -> wp (Cin/8, Cout, 3, 3, 8): wp[ci/8][co][t][ci%8] = w[co][ci][8 - t]
void pn_dconv_pack_bwd(float *wp, const float *w, int Cin, int Cout)
{
    for (int co = 0; co < Cout; co++)
        for (int ci = 0; ci < Cin; ci++)
            for (int t = 0; t < DC_T; t++)
                wp[(((size_t)(ci / 8) * Cout + co) * DC_T + t) * 8 + ci % 8] =
                    w[((size_t)co * Cin + ci) * DC_T + (DC_T - 1 - t)];
}

/* Zero the padded planes of xp (C planes of the padded size). The borders stay zero
 * because pad_copy writes interiors only. */
static void pad_zero(float *xp, int C, int H, int W, int pad)
{
    memset(xp, 0, (size_t)C * pplane(H, W, pad) * sizeof(float));
}

// x (C, H, W) -> interior of xp (C, H+2pad, W+2pad)
static void pad_copy(float *xp, const float *x, int C, int H, int W, int pad)
{
    const int Wp = W + 2 * pad;
    const size_t ps = pplane(H, W, pad);
    for (int c = 0; c < C; c++)
        for (int h = 0; h < H; h++) {
            /* rows of 7 to 32 floats: an inline loop, not a memcpy call per row */
            float *d = xp + c * ps + (size_t)(h + pad) * Wp + pad;
            const float *r = x + ((size_t)c * H + h) * W;
            int i = 0;
            for (; i + 8 <= W; i += 8) _mm256_storeu_ps(d + i, _mm256_loadu_ps(r + i));
            for (; i < W; i++) d[i] = r[i];
        }
}

/* The interior of xp from image n of src (or from x): pad_copy or the source's planes. */
static void pad_fill(float *xp, const float *x, const pn_conv_src *src, int n, int C, int H, int W,
                     int pad)
{
    if (!src) {
        pad_copy(xp, x, C, H, W, pad);
        return;
    }
    const int Wp = W + 2 * pad;
    const size_t ps = pplane(H, W, pad);
    for (int c = 0; c < C; c++) src->plane(src->ctx, n, c, xp + c * ps + (size_t)pad * Wp + pad, Wp);
}

/* r[j][l] -> r[l][j] for an 8x8 block of floats. */
static inline void transpose8(__m256 r[8])
{
    __m256 t[8], s[8];
    for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 2; i++) {
        s[4 * i] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(1, 0, 1, 0));
        s[4 * i + 1] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(3, 2, 3, 2));
        s[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(1, 0, 1, 0));
        s[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
    for (int i = 0; i < 4; i++) {
        r[i] = _mm256_permute2f128_ps(s[i], s[i + 4], 0x20);
        r[i + 4] = _mm256_permute2f128_ps(s[i], s[i + 4], 0x31);
    }
}

/* Pixel j's 8 channels in r_j (j < 6) -> channel l's pixels 0..7 at y + l * ld (pixels 6
 * and 7 are written as zeros: the caller's next block overwrites them). */
static inline void store8x6(float *y, size_t ld, __m256 r0, __m256 r1, __m256 r2, __m256 r3,
                            __m256 r4, __m256 r5)
{
    __m256 r[8] = { r0, r1, r2, r3, r4, r5, _mm256_setzero_ps(), _mm256_setzero_ps() };
    transpose8(r);
    for (int l = 0; l < 8; l++) _mm256_storeu_ps(y + l * ld, r[l]);
}

/* The same for the last block of a plane: only pixels 0..np-1 of each channel. */
static inline void store8x6_masked(float *y, size_t ld, int np, __m256 r0, __m256 r1, __m256 r2,
                                   __m256 r3, __m256 r4, __m256 r5)
{
    const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(np), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    __m256 r[8] = { r0, r1, r2, r3, r4, r5, _mm256_setzero_ps(), _mm256_setzero_ps() };
    transpose8(r);
    for (int l = 0; l < 8; l++) _mm256_maskstore_ps(y + l * ld, mask, r[l]);
}

/* The core: y (Cout, Ho*Wo) = sum over (ci, kh, kw) of wp x xp at stride st.
 * xp (Cin, Hp, Wp) padded input, (Ho - 1) * st + 3 <= Hp (same for W);
 * wp (Cout/8, Cin, 3, 3, 8).
 * Per block the fixed work (offsets, transposes, stores) is kept small, since with 8 or 16
 * input channels a block has only 72 or 144 steps of 12 multiply-adds: the pixel offsets
 * advance row by row without divisions, and the 8 channels of a vector go out as whole
 * 8-pixel stores (the 2 pixels past the block are written again by the next block; the
 * last block of a plane, which has no next block to fix them, uses masked stores). */
static void core(float *y, const float *xp, const float *wp, int Cin, int Cout, int Ho, int Wo,
                 int Hp, int Wp, int st)
{
    const int P = Ho * Wo;
    const size_t ps = (size_t)Hp * Wp;
    const int tap[DC_T] = { 0, 1, 2, Wp, Wp + 1, Wp + 2, 2 * Wp, 2 * Wp + 1, 2 * Wp + 2 };
    for (int cb = 0; cb < Cout; cb += 16) {
        const int nv = Cout - cb >= 16 ? 2 : 1; /* vectors of 8 output channels */
        const float *w0 = wp + (size_t)(cb / 8) * Cin * DC_T * 8;
        const float *w1 = w0 + (size_t)Cin * DC_T * 8;
        int oh = 0, ow = 0; /* the first pixel of the block */
        for (int p0 = 0; p0 < P; p0 += DC_NP) {
            const int np = P - p0 < DC_NP ? P - p0 : DC_NP;
            int off[DC_NP];
            {
                int h = oh, w = ow;
                for (int j = 0; j < DC_NP; j++) {
                    off[j] = h * st * Wp + w * st;
                    if (j + 1 < np && ++w == Wo) { w = 0; h++; }
                }
                if (np == DC_NP) { oh = h; ow = w + 1; if (ow == Wo) { ow = 0; oh++; } }
            }
            __m256 a00 = _mm256_setzero_ps(), a01 = a00, a10 = a00, a11 = a00, a20 = a00,
                   a21 = a00, a30 = a00, a31 = a00, a40 = a00, a41 = a00, a50 = a00, a51 = a00;
            const float *wa = w0, *wb = nv == 2 ? w1 : w0;
            for (int ci = 0; ci < Cin; ci++) {
                const float *xc = xp + ci * ps;
                for (int t = 0; t < DC_T; t++, wa += 8, wb += 8) {
                    const float *xt = xc + tap[t];
                    const __m256 v0 = _mm256_loadu_ps(wa), v1 = _mm256_loadu_ps(wb);
                    __m256 b;
#define DC_STEP(j, A0, A1)                                  \
    b = _mm256_broadcast_ss(xt + off[j]);                   \
    A0 = _mm256_fmadd_ps(v0, b, A0);                        \
    A1 = _mm256_fmadd_ps(v1, b, A1);
                    DC_STEP(0, a00, a01)
                    DC_STEP(1, a10, a11)
                    DC_STEP(2, a20, a21)
                    DC_STEP(3, a30, a31)
                    DC_STEP(4, a40, a41)
                    DC_STEP(5, a50, a51)
#undef DC_STEP
                }
            }
            /* (pixel, channel) -> (channel, pixel): 8x8 transposes (rows 6 and 7 unused) */
            float *yb = y + (size_t)cb * P + p0;
            if (p0 + 8 <= P) {
                store8x6(yb, (size_t)P, a00, a10, a20, a30, a40, a50);
                if (nv == 2) store8x6(yb + (size_t)8 * P, (size_t)P, a01, a11, a21, a31, a41, a51);
            } else {
                store8x6_masked(yb, (size_t)P, np, a00, a10, a20, a30, a40, a50);
                if (nv == 2) store8x6_masked(yb + (size_t)8 * P, (size_t)P, np, a01, a11, a21, a31, a41, a51);
            }
        }
    }
}

void pn_dconv_fwd_image(float *y, const float *x, const pn_conv_src *src, int n, const float *wp,
                        const pn_conv_shape *s, float *scratch, int first)
{
    const int Ho = out_size(s->H, s->pad, s->stride), Wo = out_size(s->W, s->pad, s->stride);
    if (first) pad_zero(scratch, s->Cin, s->H, s->W, s->pad);
    pad_fill(scratch, x, src, n, s->Cin, s->H, s->W, s->pad);
    core(y, scratch, wp, s->Cin, s->Cout, Ho, Wo, s->H + 2 * s->pad, s->W + 2 * s->pad, s->stride);
}

/* dWp (Cout/8, Cin, 3, 3, 8) = beta * dWp + sum_p dyT[p][co] * xp[ci][off(p) + tap]
 * (packed: the accumulators are added as vectors, no transposition per image).
 * dyT (Cout/8, P, 8): 8 output channels of a pixel contiguous; xp (Cin, Hp, Wp) read at
 * stride st; beta 0 or 1.
 * A GEMM dW (Cout, Cin*9) = dy (Cout, P) x X^T with X the unformed column matrix: the
 * register block is 2 vectors of 8 output channels x 6 columns (ci, tap) = 12 accumulators,
 * per pixel 2 loads of dy, 6 broadcasts of x and 12 multiply-adds (the forward's ratio). The
 * columns are numbered k = ci * 9 + tap; a last group of fewer than 6 repeats its last
 * column and stores only the valid ones. Each accumulator is one 8-channel vector of the
 * packed layout. */
static void dweight(float *dWp, float beta, const float *dyT, const float *xp, int Cin, int Cout,
                    int Ho, int Wo, int Hp, int Wp, int st)
{
    const size_t ps = (size_t)Hp * Wp, P = (size_t)Ho * Wo;
    const int tap[DC_T] = { 0, 1, 2, Wp, Wp + 1, Wp + 2, 2 * Wp, 2 * Wp + 1, 2 * Wp + 2 };
    const int K = Cin * DC_T;
    for (int cb = 0; cb < Cout; cb += 16) {
        const int nv = Cout - cb >= 16 ? 2 : 1;
        const float *d0 = dyT + (size_t)(cb / 8) * P * 8, *d1 = nv == 2 ? d0 + P * 8 : d0;
        for (int k0 = 0; k0 < K; k0 += DC_NP) {
            const int nk = K - k0 < DC_NP ? K - k0 : DC_NP;
            size_t co[DC_NP];  /* offset of column k0 + j in xp (for pixel 0) */
            size_t dst[DC_NP]; /* its vector in the packed dWp, for the first 8 channels */
            for (int j = 0; j < DC_NP; j++) {
                const int k = k0 + (j < nk ? j : nk - 1), ci = k / DC_T, t = k % DC_T;
                co[j] = ci * ps + (size_t)tap[t];
                dst[j] = (((size_t)(cb / 8) * Cin + ci) * DC_T + t) * 8;
            }
            __m256 a00 = _mm256_setzero_ps(), a01 = a00, a10 = a00, a11 = a00, a20 = a00,
                   a21 = a00, a30 = a00, a31 = a00, a40 = a00, a41 = a00, a50 = a00, a51 = a00;
            const float *g0 = d0, *g1 = d1;
            for (int oh = 0; oh < Ho; oh++) {
                const float *xr = xp + (size_t)oh * st * Wp;
                for (int ow = 0; ow < Wo; ow++, g0 += 8, g1 += 8) {
                    const float *xt = xr + ow * st;
                    const __m256 v0 = _mm256_loadu_ps(g0), v1 = _mm256_loadu_ps(g1);
                    __m256 b;
#define DW_STEP(j, A0, A1)                                  \
    b = _mm256_broadcast_ss(xt + co[j]);                    \
    A0 = _mm256_fmadd_ps(v0, b, A0);                        \
    A1 = _mm256_fmadd_ps(v1, b, A1);
                    DW_STEP(0, a00, a01)
                    DW_STEP(1, a10, a11)
                    DW_STEP(2, a20, a21)
                    DW_STEP(3, a30, a31)
                    DW_STEP(4, a40, a41)
                    DW_STEP(5, a50, a51)
#undef DW_STEP
                }
            }
            const __m256 acc[2][DC_NP] = { { a00, a10, a20, a30, a40, a50 },
                                           { a01, a11, a21, a31, a41, a51 } };
            for (int v = 0; v < nv; v++)
                for (int j = 0; j < nk; j++) {
                    float *dp = dWp + dst[j] + (size_t)v * Cin * DC_T * 8;
                    __m256 r = acc[v][j];
                    if (beta != 0.0f) r = _mm256_add_ps(r, _mm256_loadu_ps(dp));
                    _mm256_storeu_ps(dp, r);
                }
        }
    }
}

void pn_dconv_dw_reduce(float *dweight, const float *dWp, size_t stride, int nslices, int co_lo,
                        int co_hi, int Cin)
{
    for (int co = co_lo; co < co_hi; co++)
        for (int ci = 0; ci < Cin; ci++) {
            const float *p = dWp + ((size_t)(co / 8) * Cin + ci) * DC_T * 8 + co % 8;
            float *d = dweight + ((size_t)co * Cin + ci) * DC_T;
            for (int t = 0; t < DC_T; t++) {
                double acc = 0.0;
                for (int u = 0; u < nslices; u++) acc += p[(size_t)u * stride + (size_t)t * 8];
                d[t] += (float)acc;
            }
        }
}

/* dy (C, P) -> dyT (C/8, P, 8), C a multiple of 8: 8x8 transposes, the last P % 8
 * pixels one by one. */
static void to_blocked8(float *dyT, const float *dy, int C, int P)
{
    for (int c0 = 0; c0 < C; c0 += 8) {
        const float *src = dy + (size_t)c0 * P;
        float *dst = dyT + (size_t)c0 * P;
        int p = 0;
        for (; p + 8 <= P; p += 8) {
            __m256 r[8];
            for (int l = 0; l < 8; l++) r[l] = _mm256_loadu_ps(src + (size_t)l * P + p);
            transpose8(r);
            for (int l = 0; l < 8; l++) _mm256_storeu_ps(dst + (size_t)(p + l) * 8, r[l]);
        }
        for (; p < P; p++)
            for (int l = 0; l < 8; l++) dst[(size_t)p * 8 + l] = src[(size_t)l * P + p];
    }
}

void pn_dconv_bwd_image(float *dx, float *dWp, float beta, const float *dy, const float *x,
                        const pn_conv_src *src, int n, const float *wpb, const pn_conv_shape *s,
                        float *scratch, int first)
{
    const int Ho = out_size(s->H, s->pad, s->stride), Wo = out_size(s->W, s->pad, s->stride);
    const int q = 2 - s->pad, P = Ho * Wo, Cout = s->Cout, Hp = s->H + 2 * s->pad, Wp = s->W + 2 * s->pad;
    float *xp = scratch, *dyT = xp + (size_t)s->Cin * pplane(s->H, s->W, s->pad);
    float *dyp = dyT + (size_t)P * Cout;
    if (first) {
        pad_zero(xp, s->Cin, s->H, s->W, s->pad);
        if (dx) pad_zero(dyp, Cout, Ho, Wo, q);
    }
    pad_fill(xp, x, src, n, s->Cin, s->H, s->W, s->pad);
    to_blocked8(dyT, dy, Cout, P);
    dweight(dWp, beta, dyT, xp, s->Cin, Cout, Ho, Wo, Hp, Wp, s->stride);
    if (!dx) return;
    pad_copy(dyp, dy, Cout, Ho, Wo, q);
    core(dx, dyp, wpb, Cout, s->Cin, s->H, s->W, Ho + 2 * q, Wo + 2 * q, 1);
}

#else /* no AVX2 + FMA at compile time: im2col + sgemm does every convolution (a portable
       * C version of this kernel ran far slower than OpenBLAS, e.g. in the sanitizer build). */

int pn_dconv_ok(const pn_conv_shape *s)
{
    (void)s;
    return 0;
}

int pn_dconv_dinp_ok(const pn_conv_shape *s)
{
    (void)s;
    return 0;
}

/* Never called: conv.c asks pn_dconv_ok first. */
size_t pn_dconv_scratch(const pn_conv_shape *s, int backward)
{
    (void)s;
    (void)backward;
    return 0;
}
void pn_dconv_pack_fwd(float *wp, const float *w, int Cin, int Cout) { (void)wp; (void)w; (void)Cin; (void)Cout; }
void pn_dconv_pack_bwd(float *wp, const float *w, int Cin, int Cout) { (void)wp; (void)w; (void)Cin; (void)Cout; }
void pn_dconv_fwd_image(float *y, const float *x, const pn_conv_src *src, int n, const float *wp,
                        const pn_conv_shape *s, float *scratch, int first)
{
    (void)y; (void)x; (void)src; (void)n; (void)wp; (void)s; (void)scratch; (void)first;
}
void pn_dconv_bwd_image(float *dx, float *dWp, float beta, const float *dy, const float *x,
                        const pn_conv_src *src, int n, const float *wpb, const pn_conv_shape *s,
                        float *scratch, int first)
{
    (void)dx; (void)dWp; (void)beta; (void)dy; (void)x; (void)src; (void)n; (void)wpb; (void)s;
    (void)scratch; (void)first;
}
void pn_dconv_dw_reduce(float *dweight, const float *dWp, size_t stride, int nslices, int co_lo,
                        int co_hi, int Cin)
{
    (void)dweight; (void)dWp; (void)stride; (void)nslices; (void)co_lo; (void)co_hi; (void)Cin;
}
#endif
