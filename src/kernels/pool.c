/* Max, average and global-average pooling; elementwise add.
 * Windows are k x k with the given stride and zero padding, output size
 * (H + 2*pad - k)/stride + 1 (floor, PyTorch's ceil_mode=False). As in PyTorch,
 * pad <= k/2, so that every window holds at least one real pixel.
 * All loops are OpenMP over (n, c) planes; each plane is written by one thread
 * in a fixed order. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "common.h"
#include "layers.h"

#define PN_PAR_MIN 16384

static int pool_check(const char *fn, int N, int C, int H, int W, int k, int stride, int pad,
                      int *Ho, int *Wo)
{
    PN_CHECK(N > 0 && C > 0 && H > 0 && W > 0 && k > 0 && stride > 0,
             "%s: sizes must be > 0 (N %d C %d H %d W %d k %d stride %d)", fn, N, C, H, W, k, stride);
    PN_CHECK(pad >= 0 && pad <= k / 2, "%s: pad %d must be in [0, k/2] (k %d)", fn, pad, k);
    PN_CHECK((long)H + 2L * pad >= k && (long)W + 2L * pad >= k,
             "%s: window %d larger than padded input %ldx%ld", fn, k, (long)H + 2L * pad,
             (long)W + 2L * pad);
    PN_CHECK((long long)H * W <= INT32_MAX, "%s: H*W %lld too large for int32 indices", fn,
             (long long)H * W);
    *Ho = (int)(((long)H + 2L * pad - k) / stride + 1);
    *Wo = (int)(((long)W + 2L * pad - k) / stride + 1);
    return PN_OK;
}

/* Window rows/cols [lo, hi) of output index o clipped to the input [0, n). */
static inline void clip(int o, int stride, int pad, int k, int n, int *lo, int *hi)
{
    int a = o * stride - pad, b = a + k;
    *lo = a < 0 ? 0 : a;
    *hi = b > n ? n : b;
}

// inp (N,C,H,W) -> out, argmax (N,C,Ho,Wo); argmax = ih*W + iw of the first maximum
int pn_maxpool_forward(float *out, int32_t *argmax, const float *inp,
                       int N, int C, int H, int W, int k, int stride, int pad)
{
    int Ho, Wo;
    int st = pool_check(__func__, N, C, H, W, k, stride, pad, &Ho, &Wo);
    if (st) return st;
    PN_CHECK_PTR(out);
    PN_CHECK_PTR(argmax);
    PN_CHECK_PTR(inp);
    const size_t HW = (size_t)H * W, HoWo = (size_t)Ho * Wo;
    #pragma omp parallel for schedule(static) if ((long)N * C * (long)HoWo * k * k >= PN_PAR_MIN)
    for (long p = 0; p < (long)N * C; p++) {
        const float *x = inp + (size_t)p * HW;
        float *y = out + (size_t)p * HoWo;
        int32_t *am = argmax + (size_t)p * HoWo;
        for (int oh = 0; oh < Ho; oh++) {
            int h0, h1;
            clip(oh, stride, pad, k, H, &h0, &h1);
            for (int ow = 0; ow < Wo; ow++) {
                int w0, w1;
                clip(ow, stride, pad, k, W, &w0, &w1);
                int32_t best = (int32_t)(h0 * W + w0);
                float m = x[best];
                for (int ih = h0; ih < h1; ih++) {
                    for (int iw = w0; iw < w1; iw++) {
                        const float v = x[(size_t)ih * W + iw];
                        if (v > m || isnan(v)) { /* as PyTorch: the last NaN wins */
                            m = v;
                            best = (int32_t)(ih * W + iw);
                        }
                    }
                }
                y[(size_t)oh * Wo + ow] = m;
                am[(size_t)oh * Wo + ow] = best;
            }
        }
    }
    return PN_OK;
}

// dout, argmax (N,C,Ho,Wo) -> dinp (N,C,H,W) written
int pn_maxpool_backward(float *dinp, const float *dout, const int32_t *argmax,
                        int N, int C, int H, int W, int k, int stride, int pad)
{
    int Ho, Wo;
    int st = pool_check(__func__, N, C, H, W, k, stride, pad, &Ho, &Wo);
    if (st) return st;
    PN_CHECK_PTR(dinp);
    PN_CHECK_PTR(dout);
    PN_CHECK_PTR(argmax);
    const size_t HW = (size_t)H * W, HoWo = (size_t)Ho * Wo;
    #pragma omp parallel for schedule(static) if ((long)N * C * (long)HW >= PN_PAR_MIN)
    for (long p = 0; p < (long)N * C; p++) {
        float *dx = dinp + (size_t)p * HW;
        const float *dy = dout + (size_t)p * HoWo;
        const int32_t *am = argmax + (size_t)p * HoWo;
        memset(dx, 0, HW * sizeof(float));
        for (size_t i = 0; i < HoWo; i++) {
            const int32_t j = am[i];
            if (j >= 0 && (size_t)j < HW) dx[j] += dy[i]; /* a corrupt index is ignored */
        }
    }
    return PN_OK;
}

// inp (N,C,H,W) -> out (N,C,Ho,Wo): window sum / (k*k), padding counted in the divisor
int pn_avgpool_forward(float *out, const float *inp,
                       int N, int C, int H, int W, int k, int stride, int pad)
{
    int Ho, Wo;
    int st = pool_check(__func__, N, C, H, W, k, stride, pad, &Ho, &Wo);
    if (st) return st;
    PN_CHECK_PTR(out);
    PN_CHECK_PTR(inp);
    const size_t HW = (size_t)H * W, HoWo = (size_t)Ho * Wo;
    const double inv = 1.0 / ((double)k * k);
    #pragma omp parallel for schedule(static) if ((long)N * C * (long)HoWo * k * k >= PN_PAR_MIN)
    for (long p = 0; p < (long)N * C; p++) {
        const float *x = inp + (size_t)p * HW;
        float *y = out + (size_t)p * HoWo;
        for (int oh = 0; oh < Ho; oh++) {
            int h0, h1;
            clip(oh, stride, pad, k, H, &h0, &h1);
            for (int ow = 0; ow < Wo; ow++) {
                int w0, w1;
                clip(ow, stride, pad, k, W, &w0, &w1);
                double acc = 0.0;
                for (int ih = h0; ih < h1; ih++)
                    for (int iw = w0; iw < w1; iw++) acc += x[(size_t)ih * W + iw];
                y[(size_t)oh * Wo + ow] = (float)(acc * inv);
            }
        }
    }
    return PN_OK;
}

// dout (N,C,Ho,Wo) -> dinp (N,C,H,W) written
int pn_avgpool_backward(float *dinp, const float *dout,
                        int N, int C, int H, int W, int k, int stride, int pad)
{
    int Ho, Wo;
    int st = pool_check(__func__, N, C, H, W, k, stride, pad, &Ho, &Wo);
    if (st) return st;
    PN_CHECK_PTR(dinp);
    PN_CHECK_PTR(dout);
    const size_t HW = (size_t)H * W, HoWo = (size_t)Ho * Wo;
    const float inv = (float)(1.0 / ((double)k * k));
    #pragma omp parallel for schedule(static) if ((long)N * C * (long)HoWo * k * k >= PN_PAR_MIN)
    for (long p = 0; p < (long)N * C; p++) {
        float *dx = dinp + (size_t)p * HW;
        const float *dy = dout + (size_t)p * HoWo;
        memset(dx, 0, HW * sizeof(float));
        for (int oh = 0; oh < Ho; oh++) {
            int h0, h1;
            clip(oh, stride, pad, k, H, &h0, &h1);
            for (int ow = 0; ow < Wo; ow++) {
                int w0, w1;
                clip(ow, stride, pad, k, W, &w0, &w1);
                const float g = dy[(size_t)oh * Wo + ow] * inv;
                for (int ih = h0; ih < h1; ih++)
                    for (int iw = w0; iw < w1; iw++) dx[(size_t)ih * W + iw] += g;
            }
        }
    }
    return PN_OK;
}

// inp (N,C,HW) -> out (N,C) mean over HW (double)
int pn_gap_forward(float *out, const float *inp, int N, int C, int HW)
{
    PN_CHECK_PTR(out);
    PN_CHECK_PTR(inp);
    PN_CHECK_POS(N);
    PN_CHECK_POS(C);
    PN_CHECK_POS(HW);
    #pragma omp parallel for schedule(static) if ((long)N * C * HW >= PN_PAR_MIN)
    for (long p = 0; p < (long)N * C; p++) {
        const float *x = inp + (size_t)p * HW;
        double acc = 0.0;
        for (int i = 0; i < HW; i++) acc += x[i];
        out[p] = (float)(acc / HW);
    }
    return PN_OK;
}

// dout (N,C) -> dinp (N,C,HW) = dout / HW
int pn_gap_backward(float *dinp, const float *dout, int N, int C, int HW)
{
    PN_CHECK_PTR(dinp);
    PN_CHECK_PTR(dout);
    PN_CHECK_POS(N);
    PN_CHECK_POS(C);
    PN_CHECK_POS(HW);
    #pragma omp parallel for schedule(static) if ((long)N * C * HW >= PN_PAR_MIN)
    for (long p = 0; p < (long)N * C; p++) {
        const float g = (float)((double)dout[p] / HW);
        float *dx = dinp + (size_t)p * HW;
        for (int i = 0; i < HW; i++) dx[i] = g;
    }
    return PN_OK;
}

void pn_add(float *out, const float *a, const float *b, size_t n)
{
    #pragma omp parallel for simd schedule(static) if (n >= 65536)
    for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

void pn_add_inplace(float *out, const float *a, size_t n)
{
    #pragma omp parallel for simd schedule(static) if (n >= 65536)
    for (size_t i = 0; i < n; i++) out[i] += a[i];
}
