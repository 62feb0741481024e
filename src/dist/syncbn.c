/* Synchronized BatchNorm (see syncbn.h). Same formulas as
 * src/kernels/batchnorm.c with the sums taken over every rank:
 *   forward:  S_c = sum x, M = count, mu = S/M, Q_c = sum (x - mu)^2, var = Q/M
 *   backward: sdy = sum dy, sdyx = sum dy (x - mu)   (all ranks)
 *             dx = g r dy - g r^3 sdyx/M (x - mu) - g r sdy/M
 *             dweight += r * local sdyx, dbias += local sdy. */
#include "dist/syncbn.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/common.h"
#include "kernels/norm_internal.h"

static double *scratch(pn_syncbn *s, size_t n)
{
    if (n > s->cap) {
        double *p = realloc(s->scratch, n * sizeof *p);
        if (!p) return NULL;
        s->scratch = p;
        s->cap = n;
    }
    return s->scratch;
}

static int reduce(pn_syncbn *s, double *buf, size_t n)
{
    s->bytes += (double)n * sizeof(double);
    if (s->dist.size <= 1) return PN_OK;
    return s->dist.allreduce_f64(s->dist.ctx, buf, n);
}

static int fwd(void *ctx, float *out, float *mean, float *rstd, float *running_mean,
               float *running_var, const float *inp, const float *weight, const float *bias, int N,
               int C, int HW, float momentum, float eps)
{
    pn_syncbn *s = ctx;
    PN_CHECK_PTR(s);
    PN_CHECK_PTR(out);
    PN_CHECK_PTR(inp);
    PN_CHECK(N > 0 && C > 0 && HW > 0, "sync-bn: N, C, HW must be > 0 (got %d %d %d)", N, C, HW);
    double *buf = scratch(s, (size_t)C + 1);
    if (!buf) return pn_error(PN_ERR_NOMEM, "sync-bn: out of memory");
    #pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++) {
        double t = 0;
        for (int n = 0; n < N; n++) t += pn_sum(inp + ((size_t)n * C + c) * HW, (size_t)HW);
        buf[c] = t;
    }
    buf[C] = (double)N * HW;
    int rc = reduce(s, buf, (size_t)C + 1);
    if (rc) return rc;
    const double count = buf[C];
    PN_CHECK(count > 1, "sync-bn: one value per channel has no variance");
    for (int c = 0; c < C; c++) mean[c] = (float)(buf[c] / count);
    double *mu = malloc((size_t)C * sizeof *mu);
    if (!mu) return pn_error(PN_ERR_NOMEM, "sync-bn: out of memory");
    for (int c = 0; c < C; c++) mu[c] = buf[c] / count;
    #pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++) {
        double q = 0;
        for (int n = 0; n < N; n++) q += pn_sum_sqdev(inp + ((size_t)n * C + c) * HW, (size_t)HW, mu[c]);
        buf[c] = q;
    }
    rc = reduce(s, buf, (size_t)C);
    if (rc) { free(mu); return rc; }
    #pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++) {
        const double var = buf[c] / count, r = 1.0 / sqrt(var + (double)eps);
        rstd[c] = (float)r;
        if (running_mean) {
            const double mom = momentum;
            running_mean[c] = (float)((1.0 - mom) * running_mean[c] + mom * mu[c]);
            running_var[c] = (float)((1.0 - mom) * running_var[c] + mom * buf[c] / (count - 1.0));
        }
        const float m = (float)mu[c];
        const float a = (float)(weight ? r * weight[c] : r);
        const float b = bias ? bias[c] : 0.0f;
        for (int n = 0; n < N; n++) {
            const float *x = inp + ((size_t)n * C + c) * HW;
            float *y = out + ((size_t)n * C + c) * HW;
            for (int i = 0; i < HW; i++) y[i] = (x[i] - m) * a + b;
        }
    }
    free(mu);
    return PN_OK;
}

static int bwd(void *ctx, float *dinp, float *dweight, float *dbias, const float *dout,
               const float *inp, const float *mean, const float *rstd, const float *weight, int N,
               int C, int HW)
{
    pn_syncbn *s = ctx;
    PN_CHECK_PTR(s);
    PN_CHECK_PTR(dinp);
    PN_CHECK_PTR(dout);
    PN_CHECK_PTR(inp);
    PN_CHECK(N > 0 && C > 0 && HW > 0, "sync-bn: N, C, HW must be > 0 (got %d %d %d)", N, C, HW);
    double *buf = scratch(s, 2 * (size_t)C + 1);
    if (!buf) return pn_error(PN_ERR_NOMEM, "sync-bn: out of memory");
    #pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++) {
        double sdy = 0, sdyx = 0;
        for (int n = 0; n < N; n++) {
            const size_t off = ((size_t)n * C + c) * HW;
            pn_sum_dy_dyx(dout + off, inp + off, (size_t)HW, mean[c], &sdy, &sdyx);
        }
        buf[2 * c] = sdy;
        buf[2 * c + 1] = sdyx;
        /* This rank's share of the parameter gradients. */
        if (dweight) dweight[c] += (float)((double)rstd[c] * sdyx);
        if (dbias) dbias[c] += (float)sdy;
    }
    buf[2 * C] = (double)N * HW;
    int rc = reduce(s, buf, 2 * (size_t)C + 1);
    if (rc) return rc;
    const double inv_m = 1.0 / buf[2 * C];
    #pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++) {
        const double gam = weight ? weight[c] : 1.0, r = rstd[c];
        const float m = mean[c];
        const float c1 = (float)(gam * r);
        const float c2 = (float)(-gam * r * r * r * buf[2 * c + 1] * inv_m);
        const float c3 = (float)(-gam * r * buf[2 * c] * inv_m);
        for (int n = 0; n < N; n++) {
            const size_t off = ((size_t)n * C + c) * HW;
            const float *dy = dout + off, *x = inp + off;
            float *dx = dinp + off;
            for (int i = 0; i < HW; i++) dx[i] = c1 * dy[i] + c2 * (x[i] - m) + c3;
        }
    }
    return PN_OK;
}

void pn_syncbn_override(pn_syncbn *s, const pn_dist *d, pn_bn_override *o)
{
    memset(s, 0, sizeof *s);
    s->dist = *d;
    o->forward = fwd;
    o->backward = bwd;
    o->ctx = s;
}

void pn_syncbn_free(pn_syncbn *s)
{
    if (!s) return;
    free(s->scratch);
    s->scratch = NULL;
    s->cap = 0;
}
