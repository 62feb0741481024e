/* Proxy Normalization (PN-Act) and the fused GroupNorm (no affine) + PN-Act.
 * Exact definition: docs/proxy-norm.md.
 *
 *   proxy (per channel, N = 200 fixed points z_i; u_i and the sums in double, phi of
 *   SiLU/GELU in float lanes, see proxy_act_f):
 *     yt_i = (1 + gamma_t) z_i + beta_t,  u_i = gamma yt_i + beta,  p_i = phi(u_i)
 *     m = mean p_i,  v = mean (p_i - m)^2,  s = 1/sqrt(v + eps)
 *   data:  out = (phi(gamma y + beta) - m) s
 *
 * Backward: per (sample, channel) row one pass over the data computes
 *   S1 = sum g phi'(a),  S2 = sum g phi'(a) y,  S3 = sum g (phi(a) - m),  S4 = sum g
 * (pn_pnact_backward: float products accumulated in double; the fused kernel sums
 * blocks of up to 512 elements in float lanes and adds the block totals in double;
 * either way a fixed order within the row, whatever the thread count); the rows of
 * one channel are then added in sample order, so every result is the same for
 * any number of threads. dbeta += s S1, dgamma += s S2, dL/ds = S3, dL/dm = -s S4,
 * then the gradients flow through m and s into the proxy and its parameters. */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>

#include "act_impl.h"
#include "common.h"
#include "norm_internal.h"

#define NP PN_PROXY_POINTS
#define N_ACTS 4
#define SQRT1_2 0.70710678118654752440

/* ------------------------------------------------------------ proxy points */
static float proxy_z[NP];
static pthread_once_t proxy_once = PTHREAD_ONCE_INIT;

/* Phi^-1(p) for 0 < p <= 1/2: bisection of Phi(x) = erfc(-x/sqrt2)/2 on
 * [-40, 0]. erfc of a non-negative argument is accurate to a few ulp in libm and
 * Phi is increasing, so the bisection ends on the double nearest the quantile
 * (within erfc's error) after 60-80 halvings; no tables or magic constants. */
static double normal_quantile_lower(double p)
{
    double lo = -40.0, hi = 0.0;
    for (int it = 0; it < 2000; it++) {
        double mid = 0.5 * (lo + hi);
        if (mid <= lo || mid >= hi) break;
        if (0.5 * erfc(-mid * SQRT1_2) < p) lo = mid;
        else hi = mid;
    }
    return 0.5 * (lo + hi);
}

/* z_i = Phi^-1((i + 1/2)/N); the upper half mirrors the lower half exactly. */
static void proxy_init(void)
{
    for (int i = 0; i < NP / 2; i++) {
        double z = normal_quantile_lower((i + 0.5) / NP);
        proxy_z[i] = (float)z;
        proxy_z[NP - 1 - i] = (float)-z;
    }
    if (NP % 2) proxy_z[NP / 2] = 0.0f;
}

const float *pn_proxy_points(void)
{
    pthread_once(&proxy_once, proxy_init);
    return proxy_z;
}

/* ------------------------------------------------- the proxy of one channel */
/* The smooth activations at the N proxy points, in float lanes: u (N) -> p, dp (N).
 * The float kernels of act_impl.h (relative error < 2.5e-7 for SiLU, absolute error
 * < 3e-7 for the derivatives, < 1.2e-6 relative for GELU at u >= -3) instead of libm's
 * double exp/erfc, which kept the loop scalar and cost ~75% of a small gn+pn
 * EfficientNet's forward. m and s are stored as float, so float phi(u_i) (with the sums
 * over i still in double) changes them by about one float rounding. */
#define PROXY_ACT_LOOP(F, DF)                                                  \
    _Pragma("omp simd") for (int i = 0; i < NP; i++) {                         \
        pf[i] = F(uf[i]);                                                      \
        df[i] = DF(uf[i]);                                                     \
    }

static void proxy_act_f(float *pf, float *df, const float *uf, pn_act act)
{
    switch (act) {
    case PN_ACT_IDENTITY: PROXY_ACT_LOOP(pn_identity_f, pn_identity_df) break;
    case PN_ACT_RELU: PROXY_ACT_LOOP(pn_relu_f, pn_relu_df) break;
    case PN_ACT_SILU: PROXY_ACT_LOOP(pn_silu_f, pn_silu_df) break;
    case PN_ACT_GELU: PROXY_ACT_LOOP(pn_gelu_f, pn_gelu_df) break;
    }
}

/* p[i] = phi(u_i), dp[i] = phi'(u_i) for the channel's parameters; returns m and
 * the biased variance v of the p_i. u_i in double; for ReLU phi in double too (exact),
 * for the other activations phi in float (proxy_act_f); sums in double. */
static void proxy_channel(double *p, double *dp, double *m, double *v, const float *z,
                          double gamma, double beta, double gamma_t, double beta_t, pn_act act)
{
    double sum = 0;
    if (act == PN_ACT_RELU) { /* branch-free, so the loop vectorizes */
        #pragma omp simd reduction(+:sum)
        for (int i = 0; i < NP; i++) {
            const double u = gamma * ((1.0 + gamma_t) * (double)z[i] + beta_t) + beta;
            const double f = u > 0 ? u : 0.0;
            p[i] = f;
            dp[i] = u > 0 ? 1.0 : 0.0;
            sum += f;
        }
    } else {
        float uf[NP], pf[NP], df[NP];
        #pragma omp simd
        for (int i = 0; i < NP; i++)
            uf[i] = (float)(gamma * ((1.0 + gamma_t) * (double)z[i] + beta_t) + beta);
        proxy_act_f(pf, df, uf, act);
        #pragma omp simd reduction(+:sum)
        for (int i = 0; i < NP; i++) {
            p[i] = pf[i];
            dp[i] = df[i];
            sum += pf[i];
        }
    }
    double mu = sum / NP, q = 0;
    #pragma omp simd reduction(+:q)
    for (int i = 0; i < NP; i++) q += (p[i] - mu) * (p[i] - mu);
    *m = mu;
    *v = q / NP;
}

/* m, s (C): no argument checks. */
static void pnact_stats_impl(float *m, float *s, pn_pnact_params p, int C, pn_act act, float eps)
{
    const float *z = pn_proxy_points();
    #pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++) {
        double pp[NP], dp[NP], mu, v;
        proxy_channel(pp, dp, &mu, &v, z, p.gamma[c], p.beta[c], p.gamma_t[c], p.beta_t[c], act);
        m[c] = (float)mu;
        s[c] = (float)(1.0 / sqrt(v + (double)eps));
    }
}

/* Adds the parameter gradients of channel c given its totals over the batch
 * S1..S4 (see the top comment). sc = s[c] as used by the forward. */
static void channel_param_grads(pn_pnact_grads g, int c, const double S[4], double sc,
                                pn_pnact_params p, pn_act act, const float *z)
{
    double dgamma = sc * S[1], dbeta = sc * S[0], dgamma_t = 0, dbeta_t = 0;
    const double dS = S[2], dM = -sc * S[3];
    const double dV = dS * -0.5 * sc * sc * sc;
    const double gamma = p.gamma[c], gamma_t = p.gamma_t[c], beta_t = p.beta_t[c];
    double pp[NP], dp[NP], mu, v;
    proxy_channel(pp, dp, &mu, &v, z, gamma, p.beta[c], gamma_t, beta_t, act);
    #pragma omp simd reduction(+:dgamma, dbeta, dgamma_t, dbeta_t)
    for (int i = 0; i < NP; i++) {
        double dpi = dM / NP + dV * 2.0 * (pp[i] - mu) / NP; /* dL/dp_i */
        double du = dpi * dp[i];                               /* dL/du_i */
        double yt = (1.0 + gamma_t) * (double)z[i] + beta_t;
        dgamma += du * yt;
        dbeta += du;
        dgamma_t += du * gamma * (double)z[i];
        dbeta_t += du * gamma;
    }
    if (g.dgamma) g.dgamma[c] += (float)dgamma;
    if (g.dbeta) g.dbeta[c] += (float)dbeta;
    if (g.dgamma_t) g.dgamma_t[c] += (float)dgamma_t;
    if (g.dbeta_t) g.dbeta_t[c] += (float)dbeta_t;
}

/* Parameter gradients from the per-row sums acc (N, C, 4), in sample order. */
static void pnact_param_grads(pn_pnact_grads g, const double *acc, const float *s,
                              pn_pnact_params p, int N, int C, pn_act act)
{
    if (!g.dgamma && !g.dbeta && !g.dgamma_t && !g.dbeta_t) return;
    const float *z = pn_proxy_points();
    #pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++) {
        double S[4] = { 0, 0, 0, 0 };
        for (int n = 0; n < N; n++)
            for (int k = 0; k < 4; k++) S[k] += acc[((size_t)n * C + c) * 4 + k];
        channel_param_grads(g, c, S, s[c], p, act, z);
    }
}

/* ------------------------------------------------------------ argument checks */
static int check_act_eps(pn_act act, float eps, const char *fn)
{
    PN_CHECK((int)act >= 0 && (int)act < N_ACTS, "%s: unknown activation %d", fn, (int)act);
    PN_CHECK(eps > 0, "%s: eps must be > 0 (got %g)", fn, (double)eps);
    return PN_OK;
}

static int check_params(pn_pnact_params p, int C, const char *fn)
{
    PN_CHECK(p.gamma && p.beta && p.gamma_t && p.beta_t,
             "%s: PN-Act parameters gamma, beta, gamma_t, beta_t must all be non-NULL", fn);
    PN_CHECK(C > 0, "%s: C must be > 0 (got %d)", fn, C);
    return PN_OK;
}

static int check_shape(int N, int C, int HW, const char *fn)
{
    PN_CHECK(N > 0 && C > 0 && HW > 0, "%s: N, C, HW must be > 0 (got %d, %d, %d)", fn, N, C, HW);
    return PN_OK;
}

#define TRY(x) do { int rc_ = (x); if (rc_ != PN_OK) return rc_; } while (0)

/* ------------------------------------------------------------------ PN-Act */
int pn_pnact_stats(float *m, float *s, pn_pnact_params p, int C, pn_act act, float eps)
{
    PN_CHECK_PTR(m);
    PN_CHECK_PTR(s);
    TRY(check_params(p, C, __func__));
    TRY(check_act_eps(act, eps, __func__));
    pnact_stats_impl(m, s, p, C, act, eps);
    return PN_OK;
}

int pn_pnact_fold(float *scale, float *shift, pn_pnact_params p, int C, pn_act act, float eps)
{
    PN_CHECK_PTR(scale);
    PN_CHECK_PTR(shift);
    TRY(check_params(p, C, __func__));
    TRY(check_act_eps(act, eps, __func__));
    pnact_stats_impl(scale, shift, p, C, act, eps); /* m -> scale, s -> shift */
    for (int c = 0; c < C; c++) {
        float m = scale[c], s = shift[c];
        scale[c] = s;
        shift[c] = -s * m;
    }
    return PN_OK;
}

/* One row of HW elements: o = (phi(gm*x + bt) - mm) * ss. o may alias x. */
#define PNACT_FWD_LOOP(F)                                                      \
    _Pragma("omp simd") for (int i = 0; i < HW; i++) o[i] = (F(gm * x[i] + bt) - mm) * ss;

static void pnact_fwd_row(float *o, const float *x, int HW, float gm, float bt, float mm,
                          float ss, pn_act act)
{
    switch (act) {
    case PN_ACT_IDENTITY: PNACT_FWD_LOOP(pn_identity_f) break;
    case PN_ACT_RELU: PNACT_FWD_LOOP(pn_relu_f) break;
    case PN_ACT_SILU: PNACT_FWD_LOOP(pn_silu_f) break;
    case PN_ACT_GELU: PNACT_FWD_LOOP(pn_gelu_f) break;
    }
}

// out, inp are (N,C,HW) and may alias; m, s are (C)
int pn_pnact_forward(float *out, float *m, float *s, const float *inp,
                     pn_pnact_params p, int N, int C, int HW, pn_act act, float eps)
{
    PN_CHECK_PTR(out);
    PN_CHECK_PTR(m);
    PN_CHECK_PTR(s);
    PN_CHECK_PTR(inp);
    TRY(check_shape(N, C, HW, __func__));
    TRY(check_params(p, C, __func__));
    TRY(check_act_eps(act, eps, __func__));
    pnact_stats_impl(m, s, p, C, act, eps);
    #pragma omp parallel for schedule(static)
    for (long r = 0; r < (long)N * C; r++) {
        const int c = (int)(r % C);
        const size_t off = (size_t)r * HW;
        pnact_fwd_row(out + off, inp + off, HW, p.gamma[c], p.beta[c], m[c], s[c], act);
    }
    return PN_OK;
}

/* One row: the sums S1..S4 into acc[0..4) and dx = g * phi'(a) * k, k = s*gamma.
 * dx may alias d (each element is read before it is written). */
#define PNACT_BWD_LOOP(F, DF)                                                  \
    _Pragma("omp simd reduction(+:s1, s2, s3, s4)")                            \
    for (int i = 0; i < HW; i++) {                                             \
        const float y = x[i], gi = d[i], a = gm * y + bt;                      \
        const float gd = gi * DF(a);                                           \
        s1 += gd;                                                              \
        s2 += gd * y;                                                          \
        s3 += gi * (F(a) - mm);                                                \
        s4 += gi;                                                              \
        dx[i] = gd * k;                                                        \
    }

static void pnact_bwd_row(double *acc, float *dx, const float *d, const float *x, int HW,
                          float gm, float bt, float mm, float k, pn_act act)
{
    double s1 = 0, s2 = 0, s3 = 0, s4 = 0;
    switch (act) {
    case PN_ACT_IDENTITY: PNACT_BWD_LOOP(pn_identity_f, pn_identity_df) break;
    case PN_ACT_RELU: PNACT_BWD_LOOP(pn_relu_f, pn_relu_df) break;
    case PN_ACT_SILU: PNACT_BWD_LOOP(pn_silu_f, pn_silu_df) break;
    case PN_ACT_GELU: PNACT_BWD_LOOP(pn_gelu_f, pn_gelu_df) break;
    }
    acc[0] = s1;
    acc[1] = s2;
    acc[2] = s3;
    acc[3] = s4;
}

// dinp, dout, inp are (N,C,HW) (dinp may alias dout); m, s are (C)
int pn_pnact_backward(float *dinp, pn_pnact_grads g, const float *dout, const float *inp,
                      const float *m, const float *s, pn_pnact_params p,
                      int N, int C, int HW, pn_act act)
{
    PN_CHECK_PTR(dinp);
    PN_CHECK_PTR(dout);
    PN_CHECK_PTR(inp);
    PN_CHECK_PTR(m);
    PN_CHECK_PTR(s);
    TRY(check_shape(N, C, HW, __func__));
    TRY(check_params(p, C, __func__));
    TRY(check_act_eps(act, 1.0f, __func__));
    double *acc = malloc((size_t)N * C * 4 * sizeof *acc);
    if (!acc) return pn_error(PN_ERR_NOMEM, "%s: no memory for %d x %d row sums", __func__, N, C);
    #pragma omp parallel for schedule(static)
    for (long r = 0; r < (long)N * C; r++) {
        const int c = (int)(r % C);
        const size_t off = (size_t)r * HW;
        pnact_bwd_row(acc + (size_t)r * 4, dinp + off, dout + off, inp + off, HW,
                      p.gamma[c], p.beta[c], m[c], s[c] * p.gamma[c], act);
    }
    pnact_param_grads(g, acc, s, p, N, C, act);
    free(acc);
    return PN_OK;
}

/* ------------------------------------------------ fused GroupNorm + PN-Act */
static int check_gn(int C, int G, float gn_eps, const char *fn)
{
    PN_CHECK(G > 0 && C % G == 0, "%s: G must be > 0 and divide C (C %d, G %d)", fn, C, G);
    PN_CHECK(gn_eps >= 0, "%s: gn_eps must be >= 0 (got %g)", fn, (double)gn_eps);
    return PN_OK;
}

/* One row: y = (x - mu) * rs, o = (phi(gm*y + bt) - mm) * ss. o may alias x. */
#define GNPN_FWD_LOOP(F)                                                       \
    _Pragma("omp simd") for (int i = 0; i < HW; i++) {                         \
        const float y = (x[i] - mu) * rs;                                      \
        o[i] = (F(gm * y + bt) - mm) * ss;                                     \
    }

static inline __attribute__((always_inline)) void
gnpn_fwd_row(float *o, const float *x, int HW, float mu, float rs, float gm, float bt, float mm,
             float ss, pn_act act)
{
    switch (act) {
    case PN_ACT_IDENTITY: GNPN_FWD_LOOP(pn_identity_f) break;
    case PN_ACT_RELU: { /* ss > 0: (relu(a) - mm) ss = relu(a ss) - mm ss */
        const float A = rs * gm * ss, B = bt * ss, M = mm * ss;
        _Pragma("omp simd") for (int i = 0; i < HW; i++) o[i] = pn_relu_f((x[i] - mu) * A + B) - M;
        break;
    }
    case PN_ACT_SILU: GNPN_FWD_LOOP(pn_silu_f) break;
    case PN_ACT_GELU: GNPN_FWD_LOOP(pn_gelu_f) break;
    }
}

/* The output pass of the fused kernel from the saved statistics; the forward and
 * pn_gn_pnact_apply (the model's recomputation of the output in the backward) both run
 * it, so both give the same bits. */
static void gnpn_apply(float *out, const float *inp, const float *mean, const float *rstd,
                       const float *m, const float *s, pn_pnact_params p, int N, int C, int HW,
                       int G, pn_act act)
{
    const int Cg = C / G;
    #pragma omp parallel for schedule(static)
    for (long r = 0; r < (long)N * C; r++) {
        const int c = (int)(r % C);
        const long ng = (r / C) * G + c / Cg;
        const size_t off = (size_t)r * HW;
        gnpn_fwd_row(out + off, inp + off, HW, mean[ng], rstd[ng], p.gamma[c], p.beta[c],
                     m[c], s[c], act);
    }
}

// out, inp (N,C,HW), may alias; mean, rstd (N,G); m, s (C)
int pn_gn_pnact_forward(float *out, float *mean, float *rstd, float *m, float *s,
                        const float *inp, pn_pnact_params p,
                        int N, int C, int HW, int G, float gn_eps, pn_act act, float pn_eps)
{
    PN_CHECK_PTR(out);
    TRY(pn_gn_pnact_stats(mean, rstd, m, s, inp, p, N, C, HW, G, gn_eps, act, pn_eps));
    gnpn_apply(out, inp, mean, rstd, m, s, p, N, C, HW, G, act);
    return PN_OK;
}

/* The checks of a call on the forward's saved state (apply, backward): the input, mean and
 * rstd (N, G), PN's m and s (C), the shapes, parameters and activation. */
static int check_saved(const char *fn, const float *inp, const float *mean, const float *rstd,
                       const float *m, const float *s, pn_pnact_params p, int N, int C, int HW,
                       int G, pn_act act)
{
    PN_CHECK_PTR_FN(fn, inp);
    PN_CHECK_PTR_FN(fn, mean);
    PN_CHECK_PTR_FN(fn, rstd);
    PN_CHECK_PTR_FN(fn, m);
    PN_CHECK_PTR_FN(fn, s);
    TRY(check_shape(N, C, HW, fn));
    TRY(check_gn(C, G, 0.0f, fn));
    TRY(check_params(p, C, fn));
    TRY(check_act_eps(act, 1.0f, fn));
    return PN_OK;
}

// mean, rstd (N,G); m, s (C): the statistics of pn_gn_pnact_forward without its output pass
int pn_gn_pnact_stats(float *mean, float *rstd, float *m, float *s, const float *inp,
                      pn_pnact_params p, int N, int C, int HW, int G, float gn_eps, pn_act act,
                      float pn_eps)
{
    static const char fn[] = "pn_gn_pnact_forward";
    PN_CHECK_PTR_FN(fn, mean);
    PN_CHECK_PTR_FN(fn, rstd);
    PN_CHECK_PTR_FN(fn, m);
    PN_CHECK_PTR_FN(fn, s);
    PN_CHECK_PTR_FN(fn, inp);
    TRY(check_shape(N, C, HW, fn));
    TRY(check_gn(C, G, gn_eps, fn));
    TRY(check_params(p, C, fn));
    TRY(check_act_eps(act, pn_eps, fn));
    pn_group_stats(mean, rstd, inp, N, C, HW, G, gn_eps);
    pnact_stats_impl(m, s, p, C, act, pn_eps);
    return PN_OK;
}

// dst: H rows of W, ld apart; src (H, W): one (sample, channel) plane of the output pass
void pn_gn_pnact_plane(float *dst, int ld, const float *src, int H, int W, float mu, float rs,
                       float gm, float bt, float mm, float ss, pn_act act)
{
    for (int h = 0; h < H; h++)
        gnpn_fwd_row(dst + (size_t)h * ld, src + (size_t)h * W, W, mu, rs, gm, bt, mm, ss, act);
}

// out, inp (N,C,HW), may alias; mean, rstd (N,G), m, s (C) as the forward saved them
int pn_gn_pnact_apply(float *out, const float *inp, const float *mean, const float *rstd,
                      const float *m, const float *s, pn_pnact_params p, int N, int C, int HW,
                      int G, pn_act act)
{
    static const char fn[] = "pn_gn_pnact_apply";
    PN_CHECK_PTR_FN(fn, out);
    TRY(check_saved(fn, inp, mean, rstd, m, s, p, N, C, HW, G, act));
    gnpn_apply(out, inp, mean, rstd, m, s, p, N, C, HW, G, act);
    return PN_OK;
}

/* Phase 1, one row: the sums S1..S4 of the top comment, with y recomputed.
 * Blocks of SUM_BLK elements are summed in float (vector lanes, a fixed order for
 * a given build), each block total is added in double in block order. For ReLU,
 * g phi(a) = g phi'(a) (gm y + bt), so S3 = gm S2 + bt S1 - mm S4 (three sums). */
#define SUM_BLK 512
#define GNPN_SUMS_LOOP(F, DF)                                                  \
    for (int i0 = 0; i0 < HW; i0 += SUM_BLK) {                                 \
        const int i1 = i0 + SUM_BLK < HW ? i0 + SUM_BLK : HW;                  \
        float f1 = 0, f2 = 0, f3 = 0, f4 = 0;                                  \
        _Pragma("omp simd reduction(+:f1, f2, f3, f4)")                        \
        for (int i = i0; i < i1; i++) {                                        \
            const float y = (x[i] - mu) * rs, gi = d[i], a = gm * y + bt;      \
            const float gd = gi * DF(a);                                       \
            f1 += gd;                                                          \
            f2 += gd * y;                                                      \
            f3 += gi * (F(a) - mm);                                            \
            f4 += gi;                                                          \
        }                                                                      \
        s1 += f1;                                                              \
        s2 += f2;                                                              \
        s3 += f3;                                                              \
        s4 += f4;                                                              \
    }

static inline __attribute__((always_inline)) void
gnpn_sums_row(double *acc, const float *d, const float *x, int HW, float mu, float rs, float gm,
              float bt, float mm, pn_act act)
{
    double s1 = 0, s2 = 0, s3 = 0, s4 = 0;
    switch (act) {
    case PN_ACT_IDENTITY: GNPN_SUMS_LOOP(pn_identity_f, pn_identity_df) break;
    case PN_ACT_RELU:
        for (int i0 = 0; i0 < HW; i0 += SUM_BLK) {
            const int i1 = i0 + SUM_BLK < HW ? i0 + SUM_BLK : HW;
            float f1 = 0, f2 = 0, f4 = 0;
            _Pragma("omp simd reduction(+:f1, f2, f4)")
            for (int i = i0; i < i1; i++) {
                const float y = (x[i] - mu) * rs, gi = d[i];
                const float gd = gi * pn_relu_df(gm * y + bt);
                f1 += gd;
                f2 += gd * y;
                f4 += gi;
            }
            s1 += f1;
            s2 += f2;
            s4 += f4;
        }
        s3 = (double)gm * s2 + (double)bt * s1 - (double)mm * s4;
        break;
    case PN_ACT_SILU: GNPN_SUMS_LOOP(pn_silu_f, pn_silu_df) break;
    case PN_ACT_GELU: GNPN_SUMS_LOOP(pn_gelu_f, pn_gelu_df) break;
    }
    acc[0] = s1;
    acc[1] = s2;
    acc[2] = s3;
    acc[3] = s4;
}

/* Phase 2, one row: dy = g * phi'(a) * k (k = s*gamma) and
 * dx = rstd * (dy - mean(dy) - y * mean(dy*y)) = k1 g phi'(a) - k2 - k3 y with
 * k1 = rstd*k, k2 = rstd*mean(dy), k3 = rstd*mean(dy*y). dx may alias d or x. */
#define GNPN_DX_LOOP(DF)                                                       \
    _Pragma("omp simd") for (int i = 0; i < HW; i++) {                         \
        const float y = (x[i] - mu) * rs;                                      \
        dx[i] = k1 * d[i] * DF(gm * y + bt) - k2 - k3 * y;                     \
    }

static inline __attribute__((always_inline)) void
gnpn_dx_row(float *dx, const float *d, const float *x, int HW, float mu, float rs, float gm,
            float bt, float k1, float k2, float k3, pn_act act)
{
    switch (act) {
    case PN_ACT_IDENTITY: GNPN_DX_LOOP(pn_identity_df) break;
    case PN_ACT_RELU: { /* with t = x - mu: a = t (gm rs) + bt, k3 y = (k3 rs) t */
        const float A = gm * rs, K3 = k3 * rs;
        _Pragma("omp simd") for (int i = 0; i < HW; i++) {
            const float t = x[i] - mu;
            dx[i] = k1 * d[i] * pn_relu_df(t * A + bt) - (k2 + K3 * t);
        }
        break;
    }
    case PN_ACT_SILU: GNPN_DX_LOOP(pn_silu_df) break;
    case PN_ACT_GELU: GNPN_DX_LOOP(pn_gelu_df) break;
    }
}

size_t pn_gn_pnact_backward_work(int N, int C)
{
    return N > 0 && C > 0 ? 4 * (size_t)N * (size_t)C : 0;
}

// dinp, dout, inp (N,C,HW), dinp may alias dout or inp; mean, rstd (N,G); m, s (C)
int pn_gn_pnact_backward(float *dinp, pn_pnact_grads g, const float *dout, const float *inp,
                         const float *mean, const float *rstd, const float *m, const float *s,
                         pn_pnact_params p, int N, int C, int HW, int G, pn_act act)
{
    return pn_gn_pnact_backward_ex(dinp, g, dout, inp, mean, rstd, m, s, p, N, C, HW, G, act, NULL);
}

/* work: the (N, C, 4) row sums, pn_gn_pnact_backward_work(N, C) doubles, or NULL. */
int pn_gn_pnact_backward_ex(float *dinp, pn_pnact_grads g, const float *dout, const float *inp,
                            const float *mean, const float *rstd, const float *m, const float *s,
                            pn_pnact_params p, int N, int C, int HW, int G, pn_act act,
                            double *work)
{
    static const char fn[] = "pn_gn_pnact_backward"; /* errors under the public name */
    PN_CHECK_PTR_FN(fn, dinp);
    PN_CHECK_PTR_FN(fn, dout);
    TRY(check_saved(fn, inp, mean, rstd, m, s, p, N, C, HW, G, act));
    const int Cg = C / G;
    const size_t NC = (size_t)N * C;
    double *acc = work, *owned = NULL;
    if (!acc) {
        acc = owned = malloc(NC * 4 * sizeof *acc);
        if (!acc) return pn_error(PN_ERR_NOMEM, "%s: no memory for %d x %d row sums", fn, N, C);
    }
    const double inv_count = 1.0 / ((double)Cg * HW);

    /* one task per (sample, group): the row sums of its Cg channels, then dx for them
     * while the group's x and dout are still in cache */
    #pragma omp parallel for schedule(static)
    for (long ng = 0; ng < (long)N * G; ng++) {
        const size_t n = (size_t)(ng / G);
        const int c0 = (int)(ng % G) * Cg;
        const float mu = mean[ng], rs = rstd[ng];
        // GroupNorm's sums: dy = g*s*phi'(a)*gamma, so sum dy = s*gamma*S1 (channels in order)
        double sdy = 0, sdyy = 0;
        for (int c = c0; c < c0 + Cg; c++) {
            const size_t r = n * C + c, off = r * HW;
            double *a = acc + r * 4;
            gnpn_sums_row(a, dout + off, inp + off, HW, mu, rs, p.gamma[c], p.beta[c], m[c], act);
            const double k = (double)s[c] * p.gamma[c];
            sdy += k * a[0];
            sdyy += k * a[1];
        }
        const float k2 = (float)(rs * (sdy * inv_count)), k3 = (float)(rs * (sdyy * inv_count));
        for (int c = c0; c < c0 + Cg; c++) {
            const size_t off = (n * C + c) * HW;
            gnpn_dx_row(dinp + off, dout + off, inp + off, HW, mu, rs, p.gamma[c], p.beta[c],
                        rs * s[c] * p.gamma[c], k2, k3, act);
        }
    }
    pnact_param_grads(g, acc, s, p, N, C, act);
    free(owned);
    return PN_OK;
}
