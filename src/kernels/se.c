/* Squeeze-and-excitation (Hu et al. 2018; the form EfficientNet uses):
 *     s = GAP(x)                       (N,C)   squeeze
 *     h = s W1^T + b1                  (N,Cr)  reduce (a 1x1 conv with bias on a 1x1 map)
 *     r = act(h)                       (N,Cr)  SiLU in EfficientNet, ReLU in torchvision's default
 *     a = r W2^T + b2                  (N,C)   expand
 *     g = sigmoid(a)                   (N,C)   gate
 *     out[n,c,:] = x[n,c,:] * g[n,c]
 * There is no normalization inside the block (EfficientNet has none; the gate only
 * rescales channels, see docs/ARCHITECTURE.md). The small matrix products use the
 * linear kernels (OpenBLAS), the pooling uses pn_gap_*. */
#include <string.h>

#include "act_impl.h"
#include "common.h"
#include "layers.h"

#define PN_PAR_MIN 16384

static int se_check(const char *fn, int N, int C, int HW, int Cr, pn_act act)
{
    PN_CHECK(N > 0 && C > 0 && HW > 0 && Cr > 0,
             "%s: sizes must be > 0 (N %d C %d HW %d Cr %d)", fn, N, C, HW, Cr);
    PN_CHECK((int)act >= PN_ACT_IDENTITY && (int)act <= PN_ACT_GELU,
             "%s: unknown activation %d", fn, (int)act);
    return PN_OK;
}

size_t pn_se_workspace(int N, int C, int Cr)
{
    if (N <= 0 || C <= 0 || Cr <= 0) return 0;
    return (size_t)N * C + (size_t)N * Cr;
}

/* r = act(h), or its derivative times d (in place into d), n elements */
static void act_fwd(float *r, const float *h, size_t n, pn_act act)
{
    for (size_t i = 0; i < n; i++) {
        switch (act) {
        case PN_ACT_IDENTITY: r[i] = pn_identity_f(h[i]); break;
        case PN_ACT_RELU: r[i] = pn_relu_f(h[i]); break;
        case PN_ACT_SILU: r[i] = pn_silu_f(h[i]); break;
        case PN_ACT_GELU: r[i] = pn_gelu_f(h[i]); break;
        }
    }
}
static void act_bwd(float *d, const float *h, size_t n, pn_act act)
{
    for (size_t i = 0; i < n; i++) {
        switch (act) {
        case PN_ACT_IDENTITY: break;
        case PN_ACT_RELU: d[i] *= pn_relu_df(h[i]); break;
        case PN_ACT_SILU: d[i] *= pn_silu_df(h[i]); break;
        case PN_ACT_GELU: d[i] *= pn_gelu_df(h[i]); break;
        }
    }
}

// inp (N,C,HW); W1 (Cr,C), b1 (Cr), W2 (C,Cr), b2 (C) -> out (N,C,HW) (must not alias inp);
// saved for the backward: s (N,C), h (N,Cr) pre-activation, r (N,Cr), g (N,C)
int pn_se_forward(float *out, float *s, float *h, float *r, float *g, const float *inp,
                  const float *W1, const float *b1, const float *W2, const float *b2,
                  int N, int C, int HW, int Cr, pn_act act)
{
    int st = se_check(__func__, N, C, HW, Cr, act);
    if (st) return st;
    PN_CHECK_PTR(out);
    PN_CHECK_PTR(s);
    PN_CHECK_PTR(h);
    PN_CHECK_PTR(r);
    PN_CHECK_PTR(g);
    PN_CHECK_PTR(inp);
    PN_CHECK_PTR(W1);
    PN_CHECK_PTR(b1);
    PN_CHECK_PTR(W2);
    PN_CHECK_PTR(b2);
    PN_CHECK(out != inp, "%s: out must not alias inp (the backward needs inp)", __func__);
    if ((st = pn_gap_forward(s, inp, N, C, HW))) return st;
    if ((st = pn_linear_forward(h, s, W1, b1, N, C, Cr))) return st;
    act_fwd(r, h, (size_t)N * Cr, act);
    if ((st = pn_linear_forward(g, r, W2, b2, N, Cr, C))) return st;
    for (size_t i = 0; i < (size_t)N * C; i++) {
        float sg, om;
        pn_sigmoid2_f(g[i], &sg, &om);
        g[i] = sg;
    }
    #pragma omp parallel for schedule(static) if ((long)N * C * HW >= PN_PAR_MIN)
    for (long p = 0; p < (long)N * C; p++) {
        const float gp = g[p];
        const float *x = inp + (size_t)p * HW;
        float *y = out + (size_t)p * HW;
        for (int i = 0; i < HW; i++) y[i] = x[i] * gp;
    }
    return PN_OK;
}

// dout, inp (N,C,HW); s, g (N,C), h, r (N,Cr) from the forward; work pn_se_workspace floats.
// dinp (N,C,HW) written (may alias dout); dW1 (Cr,C), db1 (Cr), dW2 (C,Cr), db2 (C) accumulated.
int pn_se_backward(float *dinp, float *dW1, float *db1, float *dW2, float *db2,
                   const float *dout, const float *inp, const float *s, const float *h,
                   const float *r, const float *g, const float *W1, const float *W2,
                   int N, int C, int HW, int Cr, pn_act act, float *work)
{
    int st = se_check(__func__, N, C, HW, Cr, act);
    if (st) return st;
    PN_CHECK_PTR(dinp);
    PN_CHECK_PTR(dW1);
    PN_CHECK_PTR(db1);
    PN_CHECK_PTR(dW2);
    PN_CHECK_PTR(db2);
    PN_CHECK_PTR(dout);
    PN_CHECK_PTR(inp);
    PN_CHECK_PTR(s);
    PN_CHECK_PTR(h);
    PN_CHECK_PTR(r);
    PN_CHECK_PTR(g);
    PN_CHECK_PTR(W1);
    PN_CHECK_PTR(W2);
    PN_CHECK_PTR(work);
    float *da = work;                    /* (N,C): dL/da, later dL/ds */
    float *dh = work + (size_t)N * C;    /* (N,Cr): dL/dr, then dL/dh */
    /* dL/dg[n,c] = sum_hw dout * x;  dL/da = dL/dg * g (1 - g) */
    #pragma omp parallel for schedule(static) if ((long)N * C * HW >= PN_PAR_MIN)
    for (long p = 0; p < (long)N * C; p++) {
        const float *x = inp + (size_t)p * HW, *dy = dout + (size_t)p * HW;
        double acc = 0.0;
        for (int i = 0; i < HW; i++) acc += (double)dy[i] * x[i];
        da[p] = (float)(acc * g[p] * (1.0 - g[p]));
    }
    if ((st = pn_linear_backward(dh, dW2, db2, da, r, W2, N, Cr, C))) return st;
    act_bwd(dh, h, (size_t)N * Cr, act);
    float *ds = da; /* da is no longer needed */
    if ((st = pn_linear_backward(ds, dW1, db1, dh, s, W1, N, C, Cr))) return st;
    /* dx = dout * g + ds / HW (the GAP backward, folded into the same pass) */
    #pragma omp parallel for schedule(static) if ((long)N * C * HW >= PN_PAR_MIN)
    for (long p = 0; p < (long)N * C; p++) {
        const float gp = g[p], d = (float)((double)ds[p] / HW);
        const float *dy = dout + (size_t)p * HW;
        float *dx = dinp + (size_t)p * HW;
        for (int i = 0; i < HW; i++) dx[i] = dy[i] * gp + d;
    }
    return PN_OK;
}
