/* BatchNorm with "ghost" normalization batches: training forward, evaluation
 * forward and exact training backward.
 *
 * The batch of N samples is cut into N/g consecutive chunks of g samples; each
 * chunk k is normalized with its own per-channel statistics over (g, HW), saved
 * as mean, rstd (N/g, C) at [k*C + c]. Work is split over channels (OpenMP,
 * static); inside a channel, chunks run in order, so the running statistics see
 * the same sequence of updates as N/g PyTorch calls on consecutive chunks.
 * Forward per (chunk, channel): one pass of shifted double sums about the chunk's
 * first value (pn_sum_shifted) gives mean and variance, a second pass normalizes
 * (and applies the model's following ReLU: the _ex variants, norm_internal.h). The
 * normalize pass is bn_apply_chunk, shared with pn_batchnorm_apply (the model's
 * recomputation of the output in the backward: the same function on the same
 * coefficients, so the same bits; the multiplier rstd*weight is rounded from the
 * double rstd, so it is saved (scale) rather than rebuilt from the float rstd).
 *
 * Backward per (chunk k, channel c), M = g*HW, xc = x - mean, gamma = weight_c:
 *   sdy = sum dy, sdyx = sum dy * xc                                  (double)
 *   dx = gamma*rstd*dy - gamma*rstd^3*sdyx/M * xc - gamma*rstd*sdy/M
 *   dweight_c += sum_k rstd_k * sdyx_k,  dbias_c += sum_k sdy_k  (chunk order).
 * For BN + ReLU (pn_batchnorm_backward_relux) dy is masked by the ReLU as it is read, the
 * mask recomputed from x with the forward's saved multiplier. */
#include <math.h>
#include <stddef.h>

#include "common.h"
#include "norm_internal.h"

static int bn_check(const char *fn, int N, int C, int HW, int g)
{
    if (N <= 0 || C <= 0 || HW <= 0)
        return pn_error(PN_ERR_ARG, "%s: N, C, HW must be > 0 (got N=%d C=%d HW=%d)",
                        fn, N, C, HW);
    if (g <= 0) g = N;
    if (N % g != 0)
        return pn_error(PN_ERR_ARG, "%s: norm_batch %d does not divide the batch size N=%d",
                        fn, g, N);
    if ((long long)g * HW == 1)
        return pn_error(PN_ERR_ARG,
                        "%s: a normalization batch of one value per channel (g*HW = 1) has "
                        "no variance; use norm_batch > 1 or HW > 1",
                        fn);
    return PN_OK;
}

// inp, out (N,C,HW); mean, rstd (N/g,C); running_mean, running_var, weight, bias (C) or NULL
int pn_batchnorm_forward_train(float *out, float *mean, float *rstd,
                               float *running_mean, float *running_var,
                               const float *inp, const float *weight, const float *bias,
                               int N, int C, int HW, int norm_batch,
                               float momentum, float eps)
{
    return pn_batchnorm_forward_train_ex(out, mean, rstd, running_mean, running_var, inp, weight,
                                         bias, N, C, HW, norm_batch, momentum, eps, 0);
}

/* relu: out = max(BN(x), 0) (norm_internal.h). */
int pn_batchnorm_forward_train_ex(float *out, float *mean, float *rstd,
                                  float *running_mean, float *running_var,
                                  const float *inp, const float *weight, const float *bias,
                                  int N, int C, int HW, int norm_batch,
                                  float momentum, float eps, int relu)
{
    PN_CHECK_PTR_FN("pn_batchnorm_forward_train", out);
    return pn_batchnorm_forward_train_save(out, mean, rstd, NULL, running_mean, running_var, inp,
                                           weight, bias, N, C, HW, norm_batch, momentum, eps, relu);
}

/* The normalize pass of chunk (k, c) whose first (n, c) row is `base`: g rows of HW,
 * C rows apart. Not inlined: the forward and pn_batchnorm_apply run this one code. */
static __attribute__((noinline)) void bn_apply_chunk(float *out, const float *inp, size_t base,
                                                     int g, int C, int HW, float m, float a,
                                                     float b, int relu)
{
    for (int n = 0; n < g; n++)
        pn_affine_row(out + (base + (size_t)n * C) * HW, inp + (base + (size_t)n * C) * HW, HW,
                      m, a, b, relu);
}

/* scale (N/g, C) or NULL: the multiplier of each chunk, for pn_batchnorm_apply. */
int pn_batchnorm_forward_train_save(float *out, float *mean, float *rstd, float *scale,
                                    float *running_mean, float *running_var,
                                    const float *inp, const float *weight, const float *bias,
                                    int N, int C, int HW, int norm_batch,
                                    float momentum, float eps, int relu)
{
    static const char fn[] = "pn_batchnorm_forward_train"; /* errors under the public name */
    /* out NULL: statistics only (the model applies them later, see pn_affine_plane) */
    PN_CHECK_PTR_FN(fn, mean);
    PN_CHECK_PTR_FN(fn, rstd);
    PN_CHECK_PTR_FN(fn, inp);
    int rc = bn_check(fn, N, C, HW, norm_batch);
    if (rc) return rc;
    PN_CHECK(eps >= 0.0f, "%s: eps must be >= 0 (got %g)", fn, (double)eps);
    PN_CHECK(momentum >= 0.0f && momentum <= 1.0f, "%s: momentum must be in [0, 1] (got %g)",
             fn, (double)momentum);
    PN_CHECK((running_mean == NULL) == (running_var == NULL),
             "%s: running_mean and running_var must both be given or both be NULL", fn);

    const int g = norm_batch <= 0 ? N : norm_batch, chunks = N / g;
    const double count = (double)g * HW;
    #pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++) {
        for (int k = 0; k < chunks; k++) {
            const size_t base = (size_t)k * g * C + c; /* (n, c) index of the chunk's first sample */
            /* one pass over the chunk, about its first value (pn_sum_shifted) */
            const double k0 = inp[base * HW];
            double s1 = 0, s2 = 0, mu, q;
            for (int n = 0; n < g; n++)
                pn_sum_shifted(inp + (base + (size_t)n * C) * HW, HW, k0, &s1, &s2);
            pn_shifted_moments(k0, s1, s2, count, &mu, &q);
            const double var = q / count, r = 1.0 / sqrt(var + (double)eps);
            mean[(size_t)k * C + c] = (float)mu;
            rstd[(size_t)k * C + c] = (float)r;
            if (running_mean) {
                const double mom = momentum;
                running_mean[c] = (float)((1.0 - mom) * running_mean[c] + mom * mu);
                running_var[c] = (float)((1.0 - mom) * running_var[c] + mom * q / (count - 1.0));
            }
            const float m = (float)mu;
            const float a = (float)(weight ? r * weight[c] : r);
            const float b = bias ? bias[c] : 0.0f;
            if (scale) scale[(size_t)k * C + c] = a;
            if (out) bn_apply_chunk(out, inp, base, g, C, HW, m, a, b, relu);
        }
    }
    return PN_OK;
}

// out, inp (N,C,HW); mean, scale (N/g,C) as the training forward saved them; bias (C) or NULL
int pn_batchnorm_apply(float *out, const float *inp, const float *mean, const float *scale,
                       const float *bias, int N, int C, int HW, int norm_batch, int relu)
{
    static const char fn[] = "pn_batchnorm_apply";
    PN_CHECK_PTR_FN(fn, out);
    PN_CHECK_PTR_FN(fn, inp);
    PN_CHECK_PTR_FN(fn, mean);
    PN_CHECK_PTR_FN(fn, scale);
    int rc = bn_check(fn, N, C, HW, norm_batch);
    if (rc) return rc;
    const int g = norm_batch <= 0 ? N : norm_batch, chunks = N / g;
    #pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++)
        for (int k = 0; k < chunks; k++)
            bn_apply_chunk(out, inp, (size_t)k * g * C + c, g, C, HW, mean[(size_t)k * C + c],
                           scale[(size_t)k * C + c], bias ? bias[c] : 0.0f, relu);
    return PN_OK;
}

// inp, out (N,C,HW); running_mean, running_var (C); weight, bias (C) or NULL
int pn_batchnorm_forward_eval(float *out, const float *inp,
                              const float *running_mean, const float *running_var,
                              const float *weight, const float *bias,
                              int N, int C, int HW, float eps)
{
    return pn_batchnorm_forward_eval_ex(out, inp, running_mean, running_var, weight, bias, N, C,
                                        HW, eps, 0);
}

int pn_batchnorm_forward_eval_ex(float *out, const float *inp,
                                 const float *running_mean, const float *running_var,
                                 const float *weight, const float *bias,
                                 int N, int C, int HW, float eps, int relu)
{
    static const char fn[] = "pn_batchnorm_forward_eval"; /* errors under the public name */
    PN_CHECK_PTR_FN(fn, out);
    PN_CHECK_PTR_FN(fn, inp);
    PN_CHECK_PTR_FN(fn, running_mean);
    PN_CHECK_PTR_FN(fn, running_var);
    PN_CHECK(N > 0 && C > 0 && HW > 0, "%s: N, C, HW must be > 0 (got N=%d C=%d HW=%d)",
             fn, N, C, HW);
    PN_CHECK(eps >= 0.0f, "%s: eps must be >= 0 (got %g)", fn, (double)eps);

    #pragma omp parallel for schedule(static)
    for (long nc = 0; nc < (long)N * C; nc++) {
        const int c = (int)(nc % C);
        const double r = 1.0 / sqrt((double)running_var[c] + (double)eps);
        const float m = running_mean[c];
        const float a = (float)(weight ? r * weight[c] : r);
        const float b = bias ? bias[c] : 0.0f;
        pn_affine_row(out + (size_t)nc * HW, inp + (size_t)nc * HW, HW, m, a, b, relu);
    }
    return PN_OK;
}

/* scale (with bias): the backward of max(BN(x), 0), dout masked by the ReLU recomputed
 * from x (pn_batchnorm_backward_relux); NULL: the plain backward. */
static int bn_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                       const float *inp, const float *mean, const float *rstd, const float *weight,
                       int N, int C, int HW, int norm_batch, const float *scale,
                       const float *bias)
{
    static const char fn[] = "pn_batchnorm_backward"; /* errors under the public name */
    PN_CHECK_PTR_FN(fn, dinp);
    PN_CHECK_PTR_FN(fn, dout);
    PN_CHECK_PTR_FN(fn, inp);
    PN_CHECK_PTR_FN(fn, mean);
    PN_CHECK_PTR_FN(fn, rstd);
    int rc = bn_check(fn, N, C, HW, norm_batch);
    if (rc) return rc;

    const int g = norm_batch <= 0 ? N : norm_batch, chunks = N / g;
    const double inv_m = 1.0 / ((double)g * HW);
    #pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++) {
        const double gam = weight ? weight[c] : 1.0;
        const float bc = bias ? bias[c] : 0.0f;
        double dw = 0, db = 0;
        for (int k = 0; k < chunks; k++) {
            const size_t base = (size_t)k * g * C + c;
            const float m = mean[(size_t)k * C + c];
            const float a = scale ? scale[(size_t)k * C + c] : 0.0f;
            const double r = rstd[(size_t)k * C + c];
            double sdy = 0, sdyx = 0;
            for (int n = 0; n < g; n++) {
                const size_t off = (base + (size_t)n * C) * HW;
                if (scale) pn_sum_dy_dyx_relux(dout + off, inp + off, HW, m, a, bc, &sdy, &sdyx);
                else pn_sum_dy_dyx(dout + off, inp + off, HW, m, &sdy, &sdyx);
            }
            dw += r * sdyx;
            db += sdy;
            const float c1 = (float)(gam * r);
            const float c2 = (float)(-gam * r * r * r * sdyx * inv_m);
            const float c3 = (float)(-gam * r * sdy * inv_m);
            for (int n = 0; n < g; n++) {
                const size_t off = (base + (size_t)n * C) * HW;
                if (scale) pn_norm_dx_row_relux(dinp + off, dout + off, inp + off, HW, m, a, bc, c1, c2, c3);
                else pn_norm_dx_row(dinp + off, dout + off, inp + off, HW, m, c1, c2, c3);
            }
        }
        if (dweight) dweight[c] += (float)dw;
        if (dbias) dbias[c] += (float)db;
    }
    return PN_OK;
}

// dout, inp, dinp (N,C,HW); mean, rstd (N/g,C); weight (C) or NULL; dweight, dbias (C) or NULL
int pn_batchnorm_backward(float *dinp, float *dweight, float *dbias,
                          const float *dout, const float *inp,
                          const float *mean, const float *rstd, const float *weight,
                          int N, int C, int HW, int norm_batch)
{
    return bn_backward(dinp, dweight, dbias, dout, inp, mean, rstd, weight, N, C, HW, norm_batch,
                       NULL, NULL);
}

int pn_batchnorm_backward_relux(float *dinp, float *dweight, float *dbias, const float *dout,
                                const float *inp, const float *mean, const float *rstd,
                                const float *scale, const float *bias, const float *weight, int N,
                                int C, int HW, int norm_batch)
{
    PN_CHECK_PTR_FN("pn_batchnorm_backward", scale);
    return bn_backward(dinp, dweight, dbias, dout, inp, mean, rstd, weight, N, C, HW, norm_batch,
                       scale, bias);
}
