/* 2-D convolution (NCHW, zero padding, groups) by im2col + OpenBLAS sgemm, except for the
 * shapes conv_direct.c takes (3x3, stride 1 or 2, groups 1, up to 64 channels, built with
 * AVX2 + FMA; and 1x1 at stride 2 or more, pn_dconv_pw_ok): those run its direct kernels
 * with the same threading (whole images per thread, per-thread weight gradients summed in
 * thread order): direct_fwd / direct_bwd, pw_fwd / pw_bwd.
 *
 * Layout and strategy (im2col + sgemm)
 *   - One image at a time. im2col writes the whole image into `work` as a
 *     (Cin*KH*KW, Ho*Wo) matrix whose rows are ordered (c, kh, kw), so the rows
 *     of group g are the contiguous block [g*Kg, (g+1)*Kg) with Kg = Cin/groups*KH*KW,
 *     and the weight of group g, (Cout/groups, Kg), is contiguous too. Per image
 *     and group one sgemm:  out_g (Cout_g, HoWo) = W_g (Cout_g, Kg) x col_g (Kg, HoWo).
 *     The workspace is therefore one image's column matrix per thread (see below),
 *     independent of N. (A batch-wide column matrix would allow one larger sgemm,
 *     but it would cost N times the memory plus a transpose of the output from
 *     (Cout, N*HoWo) to NCHW; the per-image GEMMs are already large for the
 *     shapes of a ResNet, e.g. 64 x 576 x 1024 on 32x32 inputs.)
 *   - 1x1, stride 1, pad 0: the input image (Cin, H*W) already is the column
 *     matrix; the GEMMs run directly on inp / dinp (no column matrix).
 *   - Depthwise (Cin/groups = Cout/groups = 1, kernels up to 16x16): direct row loops
 *     (one tiny GEMM per channel would be all overhead); no workspace.
 *   - Backward per image: dW_g += dout_g x col_g^T (sgemm, beta 1); then the same
 *     buffer receives dcol_g = W_g^T x dout_g (beta 0) and col2im adds it into dinp.
 *     dbias += sums of dout in double.
 * Threading, two paths:
 *   - Images in parallel (pn_get_threads() > 1, N >= threads, per-image GEMM below
 *     PN_IMG_PAR_MAX multiply-adds, i.e. every convolution of a CIFAR ResNet): one OpenMP
 *     region per call, a static contiguous block of images per thread, each thread
 *     running im2col and sgemm single-threaded on its own slice of the workspace.
 *     Calling cblas_sgemm inside the region is safe with the OpenMP OpenBLAS the Makefile
 *     links (openblas_get_parallel() == 2): it sees omp_in_parallel() and runs in the
 *     calling thread. The weight gradient of each thread's images goes to its own buffer
 *     in the workspace; after a barrier the buffers are summed in thread order (double)
 *     into dweight, so results are deterministic for a given thread count. One image at
 *     a time with a multi-threaded sgemm cost ~14K fork/joins per resnet20 step on GEMMs
 *     too small to split (7x7 to 32x32 images, 16-64 channels): 2 threads were slower
 *     than 1 (see the commit message).
 *   - Otherwise one image at a time: sgemm from the calling thread (OpenBLAS uses the
 *     threads set by pn_set_threads); im2col / col2im between the sgemm calls use OpenMP
 *     only when OpenBLAS itself is built on OpenMP (one shared thread pool; with a pthreads
 *     OpenBLAS, libgomp's spinning workers and OpenBLAS's threads fight for the cores).
 * The direct loops, bias and dbias are OpenMP loops whose iterations write disjoint
 * outputs in a fixed order, so they do not depend on the partition.
 * Workspace: W' of flip_dinp (shared) first, then one slice per thread (column matrix +
 * dweight) in the parallel path, or one column matrix. It depends on pn_get_threads() at
 * the time of pn_conv2d_workspace: query it again after pn_set_threads. */
#include <cblas.h>
#include <stdatomic.h>
#include <stddef.h>
#include <string.h>

#include "common.h"
#include "layers.h"

#ifdef _OPENMP
#include <omp.h>
#endif

/* Run an OpenMP loop in parallel only when there is enough work for it. */
#define PN_PAR_MIN 16384

/* OpenBLAS exports this (0 sequential, 1 pthreads, 2 OpenMP); declared here so that
 * any cblas.h works. */
int openblas_get_parallel(void);

/* 1 when loops between two sgemm calls may use OpenMP (see the top comment). */
static int omp_between_gemms(void)
{
    /* (threads of pn_model_train_pass may ask at once: each computes the same value) */
    static _Atomic int v = -1;
    int r = atomic_load_explicit(&v, memory_order_relaxed);
    if (r < 0) {
        r = openblas_get_parallel() == 2;
        atomic_store_explicit(&v, r, memory_order_relaxed);
    }
    return r;
}

static int conv_check(const pn_conv_shape *s, int *Ho, int *Wo, const char *fn)
{
    if (!s) return pn_error(PN_ERR_ARG, "%s: shape is NULL", fn);
    PN_CHECK(s->N > 0 && s->Cin > 0 && s->H > 0 && s->W > 0 && s->Cout > 0 && s->KH > 0 &&
                 s->KW > 0 && s->stride > 0 && s->groups > 0,
             "%s: sizes must be > 0 (N %d Cin %d H %d W %d Cout %d KH %d KW %d stride %d groups %d)",
             fn, s->N, s->Cin, s->H, s->W, s->Cout, s->KH, s->KW, s->stride, s->groups);
    PN_CHECK(s->pad >= 0, "%s: pad must be >= 0 (got %d)", fn, s->pad);
    PN_CHECK(s->Cin % s->groups == 0 && s->Cout % s->groups == 0,
             "%s: Cin %d and Cout %d must be divisible by groups %d", fn, s->Cin, s->Cout, s->groups);
    PN_CHECK((long)s->H + 2L * s->pad >= s->KH && (long)s->W + 2L * s->pad >= s->KW,
             "%s: kernel %dx%d larger than padded input %ldx%ld", fn, s->KH, s->KW,
             (long)s->H + 2L * s->pad, (long)s->W + 2L * s->pad);
    *Ho = (int)(((long)s->H + 2L * s->pad - s->KH) / s->stride + 1);
    *Wo = (int)(((long)s->W + 2L * s->pad - s->KW) / s->stride + 1);
    return PN_OK;
}

int pn_conv_out_hw(const pn_conv_shape *s, int *Ho, int *Wo)
{
    PN_CHECK_PTR(Ho);
    PN_CHECK_PTR(Wo);
    int ho, wo;
    int st = conv_check(s, &ho, &wo, __func__);
    if (st) return st;
    *Ho = ho;
    *Wo = wo;
    return PN_OK;
}

static int is_pointwise(const pn_conv_shape *s)
{
    return s->KH == 1 && s->KW == 1 && s->stride == 1 && s->pad == 0;
}

/* Kernels up to this size take the depthwise row loops (per-tap ranges on the stack);
 * larger ones run as grouped GEMMs. */
#define PN_DW_KMAX 16

static int is_depthwise(const pn_conv_shape *s)
{
    return s->Cin == s->groups && s->Cout == s->groups && s->KH <= PN_DW_KMAX && s->KW <= PN_DW_KMAX;
}

/* Input gradient of a stride-1 convolution as a convolution of dout: dinp = conv(dout, W')
 * with W'[ci][co][kh][kw] = W[co][ci][KH-1-kh][KW-1-kw] and padding KH-1-pad. One im2col of
 * dout and one GEMM written straight into dinp, instead of a GEMM into a 9x larger column
 * matrix (zeroed first by the BLAS) that col2im then folds back (measured on the 3x3
 * convolutions of resnet20: see the commit message). Needs KH == KW, pad <= KH-1. */
static int flip_dinp(const pn_conv_shape *s)
{
    return s->groups == 1 && s->stride == 1 && s->KH == s->KW && s->pad <= s->KH - 1 &&
           !is_pointwise(s);
}

/* The convolution of dout that gives dinp (see flip_dinp). */
static pn_conv_shape flip_shape(const pn_conv_shape *s, int Ho, int Wo)
{
    pn_conv_shape t = *s;
    t.Cin = s->Cout;
    t.Cout = s->Cin;
    t.H = Ho;
    t.W = Wo;
    t.pad = s->KH - 1 - s->pad;
    return t;
}

/* Floats rounded up to a multiple of 16 (64 bytes): per-thread slices on their own lines. */
static size_t al16(size_t n) { return (n + 15) & ~(size_t)15; }

/* Column matrix of one image (and im2col of dout for flip_dinp); 0 for 1x1 s1; the
 * direct kernel's scratch for pn_dconv_ok shapes. */
static size_t col_floats(const pn_conv_shape *s, int Ho, int Wo)
{
    if (is_pointwise(s)) return 0;
    if (pn_dconv_pw_ok(s)) return pn_dconv_pw_scratch(s);
    if (pn_dconv_ok(s)) /* + the column matrix of a GEMM input gradient */
        return pn_dconv_scratch(s, 1) +
               (pn_dconv_dinp_ok(s) ? 0 : (size_t)s->Cin * s->KH * s->KW * (size_t)Ho * Wo);
    size_t n = (size_t)s->Cin * s->KH * s->KW * (size_t)Ho * Wo;
    if (flip_dinp(s)) {
        size_t f = (size_t)s->Cout * s->KH * s->KW * (size_t)s->H * s->W; /* im2col of dout */
        if (f > n) n = f;
    }
    return n;
}

/* W' of flip_dinp (or the direct kernel's packed weights), shared by all threads, at the
 * start of the workspace. */
static size_t wflip_floats(const pn_conv_shape *s)
{
    size_t n = flip_dinp(s) ? (size_t)s->Cin * s->Cout * s->KH * s->KW : 0;
    if (pn_dconv_ok(s) && pn_dconv_wpack_floats(s) > n) n = pn_dconv_wpack_floats(s); /* Winograd: 16 per pair */
    if (pn_dconv_pw_ok(s)) n = (size_t)s->Cin * s->Cout;
    return al16(n);
}

/* Per-image multiply-adds above which one image is split across the BLAS threads
 * instead of giving whole images to the threads. */
#define PN_IMG_PAR_MAX (1L << 25)

/* Threads that work on whole images in parallel (1: one image at a time, BLAS threaded).
 * Independent of N; the calls fall back to one image at a time when N < threads. */
static int img_threads(const pn_conv_shape *s, int Ho, int Wo)
{
    const int T = pn_get_threads();
    if (T <= 1 || is_depthwise(s)) return 1;
    const long macs = (long)s->Cout * (s->Cin / s->groups) * s->KH * s->KW * (long)Ho * Wo;
    return macs <= PN_IMG_PAR_MAX || pn_dconv_ok(s) ? T : 1;
}

/* One weight gradient: the direct kernel's packed sums (16/9 larger for Winograd). */
static size_t dw_floats(const pn_conv_shape *s)
{
    return pn_dconv_ok(s) ? pn_dconv_dw_floats(s) : (size_t)s->Cout * (s->Cin / s->groups) * s->KH * s->KW;
}

/* Per-thread slice in the image-parallel path: column matrix, then dweight. */
static size_t slice_floats(const pn_conv_shape *s, int Ho, int Wo)
{
    return al16(col_floats(s, Ho, Wo)) + al16(dw_floats(s));
}

size_t pn_conv2d_workspace(const pn_conv_shape *s)
{
    int Ho, Wo;
    if (conv_check(s, &Ho, &Wo, __func__)) return 0;
    if (is_depthwise(s)) return 0;
    const int T = img_threads(s, Ho, Wo);
    if (T > 1 || pn_dconv_ok(s) || pn_dconv_pw_ok(s)) return wflip_floats(s) + (size_t)T * slice_floats(s, Ho, Wo);
    if (is_pointwise(s)) return 0;
    return wflip_floats(s) + col_floats(s, Ho, Wo);
}

/* Output columns [lo, hi) whose input column ow*stride - pad + k lies in [0, n). */
static inline void valid_range(int n_out, int n_in, int stride, int pad, int k, int *lo, int *hi)
{
    int a = pad - k; /* need ow*stride >= a */
    int l = a > 0 ? (a + stride - 1) / stride : 0;
    int b = n_in - 1 + pad - k; /* need ow*stride <= b */
    int h = b < 0 ? 0 : b / stride + 1;
    if (h > n_out) h = n_out;
    if (l > h) l = h;
    *lo = l;
    *hi = h;
}

// x (Cin,H,W) -> col (Cin*KH*KW, Ho*Wo)
static void im2col(float *col, const float *x, const pn_conv_shape *s, int Ho, int Wo, int par_ok)
{
    const int H = s->H, W = s->W, KH = s->KH, KW = s->KW, st = s->stride, pad = s->pad;
    const long rows = (long)s->Cin * KH * KW;
    const size_t HoWo = (size_t)Ho * Wo;
    const int par = par_ok && omp_between_gemms() && rows * (long)HoWo >= PN_PAR_MIN;
    #pragma omp parallel for schedule(static) if (par)
    for (long r = 0; r < rows; r++) {
        const int c = (int)(r / (KH * KW)), kh = (int)(r / KW % KH), kw = (int)(r % KW);
        const float *xc = x + (size_t)c * H * W;
        float *dst = col + (size_t)r * HoWo;
        int lo, hi;
        valid_range(Wo, W, st, pad, kw, &lo, &hi);
        if (st == 1 && Wo == W) {
            /* Row r is the plane shifted by (kh-pad, kw-pad): one copy of the valid rows
             * (row ends wrap into the neighbouring row), then zero what lies outside. A
             * copy per output row cost as much as the GEMM for 28-float rows. */
            int ohl, ohh;
            valid_range(Ho, H, 1, pad, kh, &ohl, &ohh);
            if (ohh > ohl && hi > lo) {
                const ptrdiff_t shift = (ptrdiff_t)(kh - pad) * W + (kw - pad);
                const size_t a = (size_t)ohl * W + lo, b = (size_t)(ohh - 1) * W + hi;
                memcpy(dst + a, xc + (ptrdiff_t)a + shift, (b - a) * sizeof(float));
                /* border columns, a strided column at a time (1 per side for 3x3) */
                for (int ow = 0; ow < lo; ow++)
                    for (int oh = ohl; oh < ohh; oh++) dst[(size_t)oh * W + ow] = 0.0f;
                for (int ow = hi; ow < W; ow++)
                    for (int oh = ohl; oh < ohh; oh++) dst[(size_t)oh * W + ow] = 0.0f;
            } else {
                ohl = ohh = Ho;
            }
            memset(dst, 0, (size_t)ohl * W * sizeof(float));
            memset(dst + (size_t)ohh * W, 0, (size_t)(Ho - ohh) * W * sizeof(float));
            continue;
        }
        for (int oh = 0; oh < Ho; oh++, dst += Wo) {
            const int ih = oh * st - pad + kh;
            if (ih < 0 || ih >= H) {
                memset(dst, 0, (size_t)Wo * sizeof(float));
                continue;
            }
            for (int ow = 0; ow < lo; ow++) dst[ow] = 0.0f;
            const float *src = xc + (size_t)ih * W - pad + kw;
            if (st == 1) {
                if (hi > lo) memcpy(dst + lo, src + lo, (size_t)(hi - lo) * sizeof(float));
            } else {
                for (int ow = lo; ow < hi; ow++) dst[ow] = src[ow * st];
            }
            for (int ow = hi; ow < Wo; ow++) dst[ow] = 0.0f;
        }
    }
}

// col (Cin*KH*KW, Ho*Wo) -> dx (Cin,H,W) written (sum of the columns that read each pixel)
static void col2im(float *dx, const float *col, const pn_conv_shape *s, int Ho, int Wo, int par_ok)
{
    const int H = s->H, W = s->W, KH = s->KH, KW = s->KW, st = s->stride, pad = s->pad;
    const size_t HoWo = (size_t)Ho * Wo;
    const int par = par_ok && omp_between_gemms() && (long)s->Cin * KH * KW * (long)HoWo >= PN_PAR_MIN;
    #pragma omp parallel for schedule(static) if (par)
    for (int c = 0; c < s->Cin; c++) {
        float *xc = dx + (size_t)c * H * W;
        memset(xc, 0, (size_t)H * W * sizeof(float));
        for (int kh = 0; kh < KH; kh++) {
            for (int kw = 0; kw < KW; kw++) {
                const float *src = col + ((size_t)(c * KH + kh) * KW + kw) * HoWo;
                int lo, hi;
                valid_range(Wo, W, st, pad, kw, &lo, &hi);
                for (int oh = 0; oh < Ho; oh++) {
                    const int ih = oh * st - pad + kh;
                    if (ih < 0 || ih >= H) continue;
                    float *d = xc + (size_t)ih * W - pad + kw;
                    const float *sr = src + (size_t)oh * Wo;
                    if (st == 1)
                        for (int ow = lo; ow < hi; ow++) d[ow] += sr[ow];
                    else
                        for (int ow = lo; ow < hi; ow++) d[ow * st] += sr[ow];
                }
            }
        }
    }
}

/* ------------------------------------------------------------ depthwise */
/* Row by row: each output row (forward) or input-gradient row is finished while it is in
 * L1, each tap a vectorized axpy over the row; every element sees its terms in the same
 * order as a tap-by-tap pass over the whole plane. The weight gradient sums each row in
 * double lanes (omp simd reduction), then the rows in order. */

/* y[i] += a * x[i*st] for i in [lo, hi) (y and x never overlap: restrict lets it vectorize) */
static inline void axpy_row(float *restrict y, const float *restrict x, float a, int lo, int hi, int st)
{
    if (st == 1) {
        #pragma omp simd
        for (int i = lo; i < hi; i++) y[i] += a * x[i];
    } else {
        for (int i = lo; i < hi; i++) y[i] += a * x[i * st];
    }
}

/* y[i*st] += a * x[i] for i in [lo, hi) */
static inline void axpy_row_scatter(float *restrict y, const float *restrict x, float a, int lo, int hi,
                                    int st)
{
    if (st == 1) {
        #pragma omp simd
        for (int i = lo; i < hi; i++) y[i] += a * x[i];
    } else {
        for (int i = lo; i < hi; i++) y[i * st] += a * x[i];
    }
}

// inp (N,C,H,W), weight (C,1,KH,KW), bias (C) or NULL, out (N,C,Ho,Wo)
static void dw_forward(float *out, const float *inp, const float *weight, const float *bias,
                       const pn_conv_shape *s, int Ho, int Wo)
{
    const int C = s->Cin, H = s->H, W = s->W, KH = s->KH, KW = s->KW, st = s->stride, pad = s->pad;
    const size_t HoWo = (size_t)Ho * Wo;
    int lo[PN_DW_KMAX], hi[PN_DW_KMAX];
    for (int kw = 0; kw < KW; kw++) valid_range(Wo, W, st, pad, kw, &lo[kw], &hi[kw]);
    #pragma omp parallel for schedule(static) if ((long)s->N * C * (long)HoWo * KH * KW >= PN_PAR_MIN)
    for (long nc = 0; nc < (long)s->N * C; nc++) {
        const int c = (int)(nc % C);
        const float *x = inp + (size_t)nc * H * W;
        const float *w = weight + (size_t)c * KH * KW;
        float *y = out + (size_t)nc * HoWo;
        for (int oh = 0; oh < Ho; oh++) {
            float *yr = y + (size_t)oh * Wo;
            for (int ow = 0; ow < Wo; ow++) yr[ow] = 0.0f;
            for (int kh = 0; kh < KH; kh++) {
                const int ih = oh * st - pad + kh;
                if (ih < 0 || ih >= H) continue;
                for (int kw = 0; kw < KW; kw++)
                    axpy_row(yr, x + (size_t)ih * W - pad + kw, w[kh * KW + kw], lo[kw], hi[kw], st);
            }
            if (bias)
                for (int ow = 0; ow < Wo; ow++) yr[ow] += bias[c];
        }
    }
}

static void dw_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                        const float *inp, const float *weight, const pn_conv_shape *s, int Ho, int Wo)
{
    const int N = s->N, C = s->Cin, H = s->H, W = s->W, KH = s->KH, KW = s->KW;
    const int st = s->stride, pad = s->pad;
    const size_t HW = (size_t)H * W, HoWo = (size_t)Ho * Wo;
    const long work = (long)N * C * (long)HoWo * KH * KW;
    int lo[PN_DW_KMAX], hi[PN_DW_KMAX];
    for (int kw = 0; kw < KW; kw++) valid_range(Wo, W, st, pad, kw, &lo[kw], &hi[kw]);
    /* Parameter gradients: one channel per iteration, one double sum per tap: over
     * (n, oh) in that order of the rows' sums (double lanes). */
    #pragma omp parallel for schedule(static) if (work >= PN_PAR_MIN)
    for (int c = 0; c < C; c++) {
        double acc[PN_DW_KMAX * PN_DW_KMAX];
        for (int t = 0; t < KH * KW; t++) acc[t] = 0.0;
        double accb = 0.0;
        for (int n = 0; n < N; n++) {
            const float *x = inp + ((size_t)n * C + c) * HW;
            const float *dy = dout + ((size_t)n * C + c) * HoWo;
            for (int kh = 0; kh < KH; kh++)
                for (int oh = 0; oh < Ho; oh++) {
                    const int ih = oh * st - pad + kh;
                    if (ih < 0 || ih >= H) continue;
                    const float *xr = x + (size_t)ih * W - pad;
                    const float *dr = dy + (size_t)oh * Wo;
                    for (int kw = 0; kw < KW; kw++) {
                        double r = 0.0; /* the row's sum, in double lanes */
                        if (st == 1) {
                            #pragma omp simd reduction(+ : r)
                            for (int ow = lo[kw]; ow < hi[kw]; ow++) r += (double)dr[ow] * xr[ow + kw];
                        } else {
                            for (int ow = lo[kw]; ow < hi[kw]; ow++) r += (double)dr[ow] * xr[ow * st + kw];
                        }
                        acc[kh * KW + kw] += r;
                    }
                }
            if (dbias)
                for (size_t i = 0; i < HoWo; i++) accb += dy[i];
        }
        for (int t = 0; t < KH * KW; t++) dweight[(size_t)c * KH * KW + t] += (float)acc[t];
        if (dbias) dbias[c] += (float)accb;
    }
    if (!dinp) return;
    /* Input gradient row by row: dx row ih gathers, for kh then kw, the dout row oh with
     * oh*st - pad + kh = ih. */
    #pragma omp parallel for schedule(static) if (work >= PN_PAR_MIN)
    for (long nc = 0; nc < (long)N * C; nc++) {
        const int c = (int)(nc % C);
        float *dx = dinp + (size_t)nc * HW;
        const float *dy = dout + (size_t)nc * HoWo;
        const float *w = weight + (size_t)c * KH * KW;
        for (int ih = 0; ih < H; ih++) {
            float *xr0 = dx + (size_t)ih * W;
            for (int iw = 0; iw < W; iw++) xr0[iw] = 0.0f;
            for (int kh = 0; kh < KH; kh++) {
                const int t = ih + pad - kh;
                if (t < 0 || t % st) continue;
                const int oh = t / st;
                if (oh >= Ho) continue;
                const float *dr = dy + (size_t)oh * Wo;
                for (int kw = 0; kw < KW; kw++)
                    axpy_row_scatter(xr0 - pad + kw, dr, w[kh * KW + kw], lo[kw], hi[kw], st);
            }
        }
    }
}

/* ------------------------------------------------------ one image */

/* x (Cin,H,W) -> y (Cout,Ho,Wo), no bias. col: col_floats() floats (unused for 1x1 s1). */
static void fwd_image(float *y, const float *x, const float *weight, const pn_conv_shape *s,
                      int Ho, int Wo, float *col, int par_ok)
{
    const int G = s->groups, Cout_g = s->Cout / G, Kg = s->Cin / G * s->KH * s->KW;
    const size_t HoWo = (size_t)Ho * Wo;
    const float *c = x;
    if (!is_pointwise(s)) {
        im2col(col, x, s, Ho, Wo, par_ok);
        c = col;
    }
    for (int g = 0; g < G; g++)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Cout_g, (int)HoWo, Kg, 1.0f,
                    weight + (size_t)g * Cout_g * Kg, Kg, c + (size_t)g * Kg * HoWo, (int)HoWo,
                    0.0f, y + (size_t)g * Cout_g * HoWo, (int)HoWo);
}

/* One image of the backward: dW = beta*dW + dy x col^T; dx (or NULL) written.
 * wflip: W' when flip_dinp applies (and dx != NULL). */
static void bwd_image(float *dx, float *dW, float beta, const float *dy, const float *x,
                      const float *weight, const float *wflip, const pn_conv_shape *s,
                      const pn_conv_shape *fs, int Ho, int Wo, float *col, int par_ok)
{
    const int G = s->groups, Cout_g = s->Cout / G, Kg = s->Cin / G * s->KH * s->KW;
    const int pw = is_pointwise(s);
    const size_t HW = (size_t)s->H * s->W, HoWo = (size_t)Ho * Wo;
    const float *c = x;
    if (!pw) {
        im2col(col, x, s, Ho, Wo, par_ok);
        c = col;
    }
    for (int g = 0; g < G; g++)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Cout_g, Kg, (int)HoWo, 1.0f,
                    dy + (size_t)g * Cout_g * HoWo, (int)HoWo, c + (size_t)g * Kg * HoWo,
                    (int)HoWo, beta, dW + (size_t)g * Cout_g * Kg, Kg);
    if (!dx) return;
    if (wflip) {
        const int Kf = s->Cout * s->KH * s->KW;
        im2col(col, dy, fs, s->H, s->W, par_ok);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, s->Cin, (int)HW, Kf, 1.0f, wflip,
                    Kf, col, (int)HW, 0.0f, dx, (int)HW);
        return;
    }
    float *dcol = pw ? dx : col;
    for (int g = 0; g < G; g++)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Kg, (int)HoWo, Cout_g, 1.0f,
                    weight + (size_t)g * Cout_g * Kg, Kg, dy + (size_t)g * Cout_g * HoWo,
                    (int)HoWo, 0.0f, dcol + (size_t)g * Kg * HoWo, (int)HoWo);
    if (!pw) col2im(dx, dcol, s, Ho, Wo, par_ok);
}

/* Images [lo, hi) of thread t out of nth (static partition, contiguous blocks). */
static void img_range(int N, int t, int nth, int *lo, int *hi)
{
    *lo = (int)((long)N * t / nth);
    *hi = (int)((long)N * (t + 1) / nth);
}

static int thread_num(void)
{
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

static int num_threads(void)
{
#ifdef _OPENMP
    return omp_get_num_threads();
#else
    return 1;
#endif
}

/* Bias added to every output plane: out (N, C, HW). */
static void add_bias(float *out, const float *bias, int N, int C, size_t HW)
{
    if (!bias) return;
    const long planes = (long)N * C;
    #pragma omp parallel for schedule(static) if (planes * (long)HW >= PN_PAR_MIN)
    for (long p = 0; p < planes; p++) {
        const float b = bias[p % C];
        float *y = out + (size_t)p * HW;
        for (size_t i = 0; i < HW; i++) y[i] += b;
    }
}

/* dbias[c] += sum of dout's plane c over the images, in double. dout (N, C, HW). */
static void bias_grad(float *dbias, const float *dout, int N, int C, size_t HW)
{
    #pragma omp parallel for schedule(static) if ((long)N * C * (long)HW >= PN_PAR_MIN)
    for (int co = 0; co < C; co++) {
        double acc = 0.0;
        for (int n = 0; n < N; n++) {
            const float *dy = dout + ((size_t)n * C + co) * HW;
            for (size_t i = 0; i < HW; i++) acc += dy[i];
        }
        dbias[co] += (float)acc;
    }
}

/* The direct kernel's forward (pn_dconv_ok shapes): images in parallel when there are
 * enough, else one thread. The input is inp, or src when inp is NULL. */
static void direct_fwd(float *out, const float *inp, const pn_conv_src *src, const float *weight,
                       const pn_conv_shape *s, float *work)
{
    int Ho = 0, Wo = 0; /* set: the callers checked the shape */
    pn_conv_out_hw(s, &Ho, &Wo);
    const size_t HW = (size_t)s->H * s->W, HoWo = (size_t)Ho * Wo;
    const int T = img_threads(s, Ho, Wo);
    const size_t slice = slice_floats(s, Ho, Wo), off = wflip_floats(s);
    #pragma omp parallel num_threads(T) if (T > 1 && s->N >= T)
    {
        const int t = thread_num();
        /* the packing is split over the threads (serial, the other thread waited on it:
         * perf had it at 10% of a micro-batch-8 step) */
        pn_dconv_pack_fwd(work, weight, s, t, num_threads());
        #pragma omp barrier
        int lo, hi;
        img_range(s->N, t, num_threads(), &lo, &hi);
        for (int n = lo; n < hi; n++)
            pn_dconv_fwd_image(out + (size_t)n * s->Cout * HoWo,
                               inp ? inp + (size_t)n * s->Cin * HW : NULL, src, n, work, s,
                               work + off + (size_t)t * slice, n == lo);
    }
}

/* The direct kernel's backward (pn_dconv_ok shapes; the input gradient by GEMM + col2im
 * where pn_dconv_dinp_ok does not hold: Cin not a multiple of 8, or stride 2 with
 * pn_conv_stride2_enable(0)). The input is inp, or src when inp is NULL. */
static void direct_bwd(float *dinp, float *dweight, const float *dout, const float *inp,
                       const pn_conv_src *src, const float *weight, const pn_conv_shape *s,
                       float *work)
{
    int Ho = 0, Wo = 0; /* set: the callers checked the shape */
    pn_conv_out_hw(s, &Ho, &Wo);
    const size_t HW = (size_t)s->H * s->W, HoWo = (size_t)Ho * Wo;
    const int T = img_threads(s, Ho, Wo);
    const int ddir = pn_dconv_dinp_ok(s);
    const size_t dsz = pn_dconv_scratch(s, 1);
    const int Kg = s->Cin * s->KH * s->KW;
    const int par = T > 1 && s->N >= T;
    const size_t slice = slice_floats(s, Ho, Wo), off = wflip_floats(s);
    const size_t colsz = al16(col_floats(s, Ho, Wo));
    const size_t nw = dw_floats(s);
    /* Each thread sums its images' weight gradient in its slice (packed layout, or the
     * untransformed Winograd sums); then the slices are added in thread order into dweight
     * (pn_dconv_dw_reduce, which also transforms Winograd's). */
    #pragma omp parallel num_threads(T) if (par)
    {
        const int t = thread_num(), nth = num_threads();
        float *scr = work + off + (size_t)t * slice, *dW = scr + colsz;
        if (dinp && ddir) {
            pn_dconv_pack_bwd(work, weight, s, t, nth);
            #pragma omp barrier
        }
        int lo, hi;
        img_range(s->N, t, nth, &lo, &hi);
        if (lo == hi) memset(dW, 0, nw * sizeof(float));
        for (int n = lo; n < hi; n++) {
            float *dx = dinp ? dinp + (size_t)n * s->Cin * HW : NULL;
            const float *dy = dout + (size_t)n * s->Cout * HoWo;
            pn_dconv_bwd_image(ddir ? dx : NULL, dW, n == lo ? 0.0f : 1.0f, dy,
                               inp ? inp + (size_t)n * s->Cin * HW : NULL, src, n, work, s, scr,
                               n - lo, n == hi - 1);
            if (dx && !ddir) { /* dcol = W^T dy, folded back by col2im */
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Kg, (int)HoWo, s->Cout, 1.0f,
                            weight, Kg, dy, (int)HoWo, 0.0f, scr + dsz, (int)HoWo);
                col2im(dx, scr + dsz, s, Ho, Wo, 0);
            }
        }
        #pragma omp barrier
        pn_dconv_dw_reduce(dweight, work + off + colsz, slice, nth, s->Cout * t / nth,
                           s->Cout * (t + 1) / nth, s);
    }
}

/* The 1x1 strided kernel's forward (pn_dconv_pw_ok shapes): images in parallel as in
 * direct_fwd, each thread subsampling its images in its slice. */
static void pw_fwd(float *out, const float *inp, const float *weight, const pn_conv_shape *s, int Ho,
                   int Wo, float *work)
{
    const size_t HW = (size_t)s->H * s->W, HoWo = (size_t)Ho * Wo;
    const int T = img_threads(s, Ho, Wo);
    pn_dconv_pw_pack(work, weight, s, 0);
    const size_t slice = slice_floats(s, Ho, Wo), off = wflip_floats(s);
    #pragma omp parallel num_threads(T) if (T > 1 && s->N >= T)
    {
        const int t = thread_num();
        int lo, hi;
        img_range(s->N, t, num_threads(), &lo, &hi);
        for (int n = lo; n < hi; n++)
            pn_dconv_pw_fwd_image(out + (size_t)n * s->Cout * HoWo, inp + (size_t)n * s->Cin * HW, work, s,
                                  work + off + (size_t)t * slice);
    }
}

/* Its backward: per thread the weight gradient of its images in its slice (packed
 * (Cout/8, Cin, 8)), then the slices added in thread order, in double (pn_dconv_dw_reduce). */
static void pw_bwd(float *dinp, float *dweight, const float *dout, const float *inp, const float *weight,
                   const pn_conv_shape *s, int Ho, int Wo, float *work)
{
    const size_t HW = (size_t)s->H * s->W, HoWo = (size_t)Ho * Wo;
    const int T = img_threads(s, Ho, Wo), Cin = s->Cin, Cout = s->Cout;
    if (dinp) pn_dconv_pw_pack(work, weight, s, 1);
    const size_t slice = slice_floats(s, Ho, Wo), off = wflip_floats(s);
    const size_t colsz = al16(col_floats(s, Ho, Wo)), nw = (size_t)Cout * Cin;
    #pragma omp parallel num_threads(T) if (T > 1 && s->N >= T)
    {
        const int t = thread_num(), nth = num_threads();
        float *scr = work + off + (size_t)t * slice, *dW = scr + colsz;
        int lo, hi;
        img_range(s->N, t, nth, &lo, &hi);
        if (lo == hi) memset(dW, 0, nw * sizeof(float));
        for (int n = lo; n < hi; n++)
            pn_dconv_pw_bwd_image(dinp ? dinp + (size_t)n * Cin * HW : NULL, dW, n == lo ? 0.0f : 1.0f,
                                  dout + (size_t)n * Cout * HoWo, inp + (size_t)n * Cin * HW, work, s, scr);
        #pragma omp barrier
        pn_dconv_dw_reduce(dweight, work + off + colsz, slice, nth, Cout * t / nth, Cout * (t + 1) / nth, s);
    }
}

/* --------------------------------------------------------------- public */

int pn_conv2d_forward(float *out, const float *inp, const float *weight, const float *bias,
                      const pn_conv_shape *s, float *work)
{
    int Ho, Wo;
    int st = conv_check(s, &Ho, &Wo, __func__);
    if (st) return st;
    PN_CHECK_PTR(out);
    PN_CHECK_PTR(inp);
    PN_CHECK_PTR(weight);
    const int dw = is_depthwise(s), pw = is_pointwise(s);
    PN_CHECK(work || dw || pw, "%s: work is NULL but %zu floats of workspace are needed", __func__,
             pn_conv2d_workspace(s));
    if (dw) {
        dw_forward(out, inp, weight, bias, s, Ho, Wo);
        return PN_OK;
    }
    const size_t HW = (size_t)s->H * s->W, HoWo = (size_t)Ho * Wo;
    const int T = img_threads(s, Ho, Wo);
    if (pn_dconv_ok(s)) {
        direct_fwd(out, inp, NULL, weight, s, work);
    } else if (pn_dconv_pw_ok(s)) {
        pw_fwd(out, inp, weight, s, Ho, Wo, work);
    } else if (T > 1 && s->N >= T) {
        /* Whole images per thread; sgemm called inside the region runs in the calling
         * thread (OpenBLAS on OpenMP does so in a parallel region). */
        const size_t slice = slice_floats(s, Ho, Wo), off = wflip_floats(s);
        #pragma omp parallel num_threads(T)
        {
            const int t = thread_num();
            float *col = work ? work + off + (size_t)t * slice : NULL;
            int lo, hi;
            img_range(s->N, t, num_threads(), &lo, &hi);
            for (int n = lo; n < hi; n++)
                fwd_image(out + (size_t)n * s->Cout * HoWo, inp + (size_t)n * s->Cin * HW, weight,
                          s, Ho, Wo, col, 0);
        }
    } else {
        float *col = work ? work + wflip_floats(s) : NULL;
        for (int n = 0; n < s->N; n++)
            fwd_image(out + (size_t)n * s->Cout * HoWo, inp + (size_t)n * s->Cin * HW, weight, s,
                      Ho, Wo, col, 1);
    }
    add_bias(out, bias, s->N, s->Cout, HoWo);
    return PN_OK;
}

int pn_conv2d_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                       const float *inp, const float *weight, const pn_conv_shape *s, float *work)
{
    int Ho, Wo;
    int st = conv_check(s, &Ho, &Wo, __func__);
    if (st) return st;
    PN_CHECK_PTR(dweight);
    PN_CHECK_PTR(dout);
    PN_CHECK_PTR(inp);
    PN_CHECK_PTR(weight);
    const int dw = is_depthwise(s), pw = is_pointwise(s);
    PN_CHECK(work || dw || pw, "%s: work is NULL but %zu floats of workspace are needed", __func__,
             pn_conv2d_workspace(s));
    if (dw) {
        dw_backward(dinp, dweight, dbias, dout, inp, weight, s, Ho, Wo);
        return PN_OK;
    }
    const size_t HW = (size_t)s->H * s->W, HoWo = (size_t)Ho * Wo;
    if (dbias) bias_grad(dbias, dout, s->N, s->Cout, HoWo);
    if (pn_dconv_pw_ok(s)) {
        pw_bwd(dinp, dweight, dout, inp, weight, s, Ho, Wo, work);
        return PN_OK;
    }
    const int direct = pn_dconv_ok(s);
    const int flip = dinp && flip_dinp(s) && !direct;
    pn_conv_shape fs = flip_shape(s, Ho, Wo);
    float *wflip = NULL;
    if (flip) {
        const int KH = s->KH, KW = s->KW, Kf = s->Cout * KH * KW;
        wflip = work;
        for (int ci = 0; ci < s->Cin; ci++)
            for (int co = 0; co < s->Cout; co++)
                for (int kh = 0; kh < KH; kh++)
                    for (int kw = 0; kw < KW; kw++)
                        wflip[(size_t)ci * Kf + ((size_t)co * KH + kh) * KW + kw] =
                            weight[(((size_t)co * s->Cin + ci) * KH + KH - 1 - kh) * KW + KW - 1 - kw];
    }
    const int T = img_threads(s, Ho, Wo);
    if (direct) {
        direct_bwd(dinp, dweight, dout, inp, NULL, weight, s, work);
        return PN_OK;
    }
    if (T > 1 && s->N >= T && work) {
        /* Whole images per thread, each summing its dweight in its own slice; the slices
         * are then added in thread order (deterministic for a given thread count). */
        const size_t slice = slice_floats(s, Ho, Wo), off = wflip_floats(s);
        const size_t colsz = al16(col_floats(s, Ho, Wo));
        const size_t nw = (size_t)s->Cout * (s->Cin / s->groups) * s->KH * s->KW;
        #pragma omp parallel num_threads(T)
        {
            const int t = thread_num(), nth = num_threads();
            float *col = work + off + (size_t)t * slice, *dW = col + colsz;
            int lo, hi;
            img_range(s->N, t, nth, &lo, &hi);
            if (lo == hi) memset(dW, 0, nw * sizeof(float));
            for (int n = lo; n < hi; n++)
                bwd_image(dinp ? dinp + (size_t)n * s->Cin * HW : NULL, dW, n == lo ? 0.0f : 1.0f,
                          dout + (size_t)n * s->Cout * HoWo, inp + (size_t)n * s->Cin * HW,
                          weight, wflip, s, &fs, Ho, Wo, col, 0);
            #pragma omp barrier
            size_t a = nw * (size_t)t / (size_t)nth, b = nw * (size_t)(t + 1) / (size_t)nth;
            for (size_t i = a; i < b; i++) {
                double acc = 0.0;
                for (int u = 0; u < nth; u++) acc += work[off + (size_t)u * slice + colsz + i];
                dweight[i] += (float)acc;
            }
        }
        return PN_OK;
    }
    float *col = work ? work + wflip_floats(s) : NULL;
    for (int n = 0; n < s->N; n++)
        bwd_image(dinp ? dinp + (size_t)n * s->Cin * HW : NULL, dweight, 1.0f,
                  dout + (size_t)n * s->Cout * HoWo, inp + (size_t)n * s->Cin * HW, weight, wflip,
                  s, &fs, Ho, Wo, col, 1);
    return PN_OK;
}

int pn_conv2d_src_ok(const pn_conv_shape *s) { return pn_dconv_ok(s); }

int pn_conv2d_forward_src(float *out, const pn_conv_src *src, const float *weight,
                          const float *bias, const pn_conv_shape *s, float *work)
{
    int Ho, Wo;
    int st = conv_check(s, &Ho, &Wo, __func__);
    if (st) return st;
    PN_CHECK_PTR(out);
    PN_CHECK(src && src->plane, "%s: src or src->plane is NULL", __func__);
    PN_CHECK_PTR(weight);
    PN_CHECK_PTR(work);
    PN_CHECK(pn_conv2d_src_ok(s), "%s: not a shape of the direct kernel", __func__);
    direct_fwd(out, NULL, src, weight, s, work);
    add_bias(out, bias, s->N, s->Cout, (size_t)Ho * Wo);
    return PN_OK;
}

int pn_conv2d_backward_src(float *dinp, float *dweight, float *dbias, const float *dout,
                           const pn_conv_src *src, const float *weight, const pn_conv_shape *s,
                           float *work)
{
    int Ho, Wo;
    int st = conv_check(s, &Ho, &Wo, __func__);
    if (st) return st;
    PN_CHECK_PTR(dweight);
    PN_CHECK_PTR(dout);
    PN_CHECK(src && src->plane, "%s: src or src->plane is NULL", __func__);
    PN_CHECK_PTR(weight);
    PN_CHECK_PTR(work);
    PN_CHECK(pn_conv2d_src_ok(s), "%s: not a shape of the direct kernel", __func__);
    if (dbias) bias_grad(dbias, dout, s->N, s->Cout, (size_t)Ho * Wo);
    direct_bwd(dinp, dweight, dout, NULL, src, weight, s, work);
    return PN_OK;
}
