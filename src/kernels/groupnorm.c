/* GroupNorm (LayerNorm = 1 group, InstanceNorm = C groups): forward and backward.
 *
 * Forward: statistics per (sample, group) from pn_group_stats (one pass, double,
 * about the group's first value), then out = (x - mean) * a_c + b_c with
 * a_c = rstd * weight_c, b_c = bias_c, one contiguous loop over HW per (sample,
 * channel), with the model's following ReLU applied in the same loop
 * (pn_groupnorm_forward_ex). Subtracting the mean first keeps inputs with a large
 * mean (x ~ 100 + 0.01 randn) exact.
 *
 * Backward (PyTorch's three phases), per (sample n, group g) with D = (C/G)*HW,
 * xc = x - mean, gamma_c = weight_c (1 without affine):
 *   1. per channel: sdy_c = sum dy, sdyx_c = sum dy * xc             (double)
 *   2. per group:   Sdy = sum_c gamma_c sdy_c, Sdyx = sum_c gamma_c sdyx_c,
 *                   c2 = -Sdyx * rstd^3 / D,  c3 = -Sdy * rstd / D
 *   3. stream:      dx = c1_c * dy + c2 * xc + c3,   c1_c = gamma_c * rstd
 * which is dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)) with
 * dxhat = gamma * dy. Parameter gradients dweight_c = sum_n rstd * sdyx_c and
 * dbias_c = sum_n sdy_c are reduced over n in order 0..N-1 (deterministic); the
 * per-(n, c) sums live in caller-owned scratch (pn_groupnorm_backward_ex) or, from
 * the public function, in a buffer allocated for the call. For GN + ReLU
 * (pn_groupnorm_backward_relux) dy is masked by the ReLU as it is read, the mask
 * recomputed from x. */
#include <stdlib.h>

#include "common.h"
#include "norm_internal.h"

static int gn_check_shape(const char *fn, int N, int C, int HW, int G)
{
    if (N <= 0 || C <= 0 || HW <= 0 || G <= 0)
        return pn_error(PN_ERR_ARG, "%s: N, C, HW, G must be > 0 (got N=%d C=%d HW=%d G=%d)",
                        fn, N, C, HW, G);
    if (C % G != 0)
        return pn_error(PN_ERR_ARG, "%s: C=%d is not divisible by G=%d groups", fn, C, G);
    return PN_OK;
}

/* The normalize pass: out = (x - mean) * (rstd * weight_c) + bias_c (then ReLU), from the
 * saved float statistics; the forward and pn_groupnorm_apply (the model's recomputation of
 * the output in the backward) both run it, so both give the same bits. */
static void gn_apply(float *out, const float *inp, const float *mean, const float *rstd,
                     const float *weight, const float *bias, int N, int C, int HW, int G, int relu)
{
    const int cpg = C / G;
    #pragma omp parallel for schedule(static)
    for (long nc = 0; nc < (long)N * C; nc++) {
        const int c = (int)(nc % C);
        const long ng = nc / C * G + c / cpg;
        const float m = mean[ng];
        const float a = weight ? rstd[ng] * weight[c] : rstd[ng];
        const float b = bias ? bias[c] : 0.0f;
        pn_affine_row(out + (size_t)nc * HW, inp + (size_t)nc * HW, HW, m, a, b, relu);
    }
}

// inp, out (N,C,HW); mean, rstd (N,G); weight, bias (C) or NULL
int pn_groupnorm_forward(float *out, float *mean, float *rstd,
                         const float *inp, const float *weight, const float *bias,
                         int N, int C, int HW, int G, float eps)
{
    return pn_groupnorm_forward_ex(out, mean, rstd, inp, weight, bias, N, C, HW, G, eps, 0);
}

/* relu: out = max(GN(x), 0) (norm_internal.h). */
int pn_groupnorm_forward_ex(float *out, float *mean, float *rstd,
                            const float *inp, const float *weight, const float *bias,
                            int N, int C, int HW, int G, float eps, int relu)
{
    static const char fn[] = "pn_groupnorm_forward"; /* errors under the public name */
    PN_CHECK_PTR_FN(fn, out);
    PN_CHECK_PTR_FN(fn, mean);
    PN_CHECK_PTR_FN(fn, rstd);
    PN_CHECK_PTR_FN(fn, inp);
    int rc = gn_check_shape(fn, N, C, HW, G);
    if (rc) return rc;
    PN_CHECK(eps >= 0.0f, "%s: eps must be >= 0 (got %g)", fn, (double)eps);

    pn_group_stats(mean, rstd, inp, N, C, HW, G, eps);
    gn_apply(out, inp, mean, rstd, weight, bias, N, C, HW, G, relu);
    return PN_OK;
}

// out, inp (N,C,HW); mean, rstd (N,G) as the forward saved them; weight, bias (C) or NULL
int pn_groupnorm_apply(float *out, const float *inp, const float *mean, const float *rstd,
                       const float *weight, const float *bias, int N, int C, int HW, int G,
                       int relu)
{
    static const char fn[] = "pn_groupnorm_apply";
    PN_CHECK_PTR_FN(fn, out);
    PN_CHECK_PTR_FN(fn, inp);
    PN_CHECK_PTR_FN(fn, mean);
    PN_CHECK_PTR_FN(fn, rstd);
    int rc = gn_check_shape(fn, N, C, HW, G);
    if (rc) return rc;
    gn_apply(out, inp, mean, rstd, weight, bias, N, C, HW, G, relu);
    return PN_OK;
}

size_t pn_groupnorm_backward_work(int N, int C)
{
    return N > 0 && C > 0 ? 2 * (size_t)N * (size_t)C : 0;
}

// dout, inp, dinp (N,C,HW); mean, rstd (N,G); weight (C) or NULL; dweight, dbias (C) or NULL
int pn_groupnorm_backward(float *dinp, float *dweight, float *dbias,
                          const float *dout, const float *inp,
                          const float *mean, const float *rstd, const float *weight,
                          int N, int C, int HW, int G)
{
    return pn_groupnorm_backward_ex(dinp, dweight, dbias, dout, inp, mean, rstd, weight, N, C, HW,
                                    G, NULL);
}

/* relux: dout masked by the ReLU after the norm, recomputed from x with the forward's
 * coefficients (bias needed then); work: 2*N*C doubles or NULL (norm_internal.h). */
static int gn_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                       const float *inp, const float *mean, const float *rstd, const float *weight,
                       const float *bias, int N, int C, int HW, int G, int relux, double *work)
{
    static const char fn[] = "pn_groupnorm_backward"; /* errors under the public name */
    PN_CHECK_PTR_FN(fn, dinp);
    PN_CHECK_PTR_FN(fn, dout);
    PN_CHECK_PTR_FN(fn, inp);
    PN_CHECK_PTR_FN(fn, mean);
    PN_CHECK_PTR_FN(fn, rstd);
    int rc = gn_check_shape(fn, N, C, HW, G);
    if (rc) return rc;

    /* per-(n,c) sums, kept for the parameter gradients: sdy at [nc], sdyx at [N*C + nc] */
    double *sums = NULL, *owned = NULL;
    if (dweight || dbias) {
        sums = work;
        if (!sums) {
            sums = owned = malloc(pn_groupnorm_backward_work(N, C) * sizeof *sums);
            if (!sums) return pn_error(PN_ERR_NOMEM, "%s: out of memory", fn);
        }
    }

    const int cpg = C / G;
    const double inv_d = 1.0 / ((double)cpg * HW);
    #pragma omp parallel for schedule(static)
    for (long ng = 0; ng < (long)N * G; ng++) {
        const long c0 = ng % G * cpg, nc0 = ng * cpg; /* first channel, first (n,c) */
        const double mu = mean[ng], r = rstd[ng];
        double Sdy = 0, Sdyx = 0;
        for (int j = 0; j < cpg; j++) {
            double sdy = 0, sdyx = 0;
            const size_t off = (size_t)(nc0 + j) * HW;
            if (relux) {
                const int c = (int)(c0 + j);
                const float mf = mean[ng], a = weight ? rstd[ng] * weight[c] : rstd[ng];
                pn_sum_dy_dyx_relux(dout + off, inp + off, HW, mf, a, bias ? bias[c] : 0.0f, &sdy, &sdyx);
            } else pn_sum_dy_dyx(dout + off, inp + off, HW, mu, &sdy, &sdyx);
            const double gam = weight ? weight[c0 + j] : 1.0;
            Sdy += gam * sdy;
            Sdyx += gam * sdyx;
            if (sums) {
                sums[nc0 + j] = sdy;
                sums[(size_t)N * C + nc0 + j] = sdyx;
            }
        }
        const float c2 = (float)(-Sdyx * r * r * r * inv_d);
        const float c3 = (float)(-Sdy * r * inv_d);
        const float m = mean[ng];
        for (int j = 0; j < cpg; j++) {
            const float c1 = (float)((weight ? weight[c0 + j] : 1.0) * r);
            const size_t off = (size_t)(nc0 + j) * HW;
            if (relux) {
                const int c = (int)(c0 + j);
                const float a = weight ? rstd[ng] * weight[c] : rstd[ng];
                pn_norm_dx_row_relux(dinp + off, dout + off, inp + off, HW, m, a, bias ? bias[c] : 0.0f,
                                     c1, c2, c3);
            } else
                pn_norm_dx_row(dinp + off, dout + off, inp + off, HW, m, c1, c2, c3);
        }
    }

    if (sums) {
        #pragma omp parallel for schedule(static)
        for (int c = 0; c < C; c++) {
            double dw = 0, db = 0;
            for (int n = 0; n < N; n++) {
                const size_t nc = (size_t)n * C + c;
                db += sums[nc];
                dw += sums[(size_t)N * C + nc] * rstd[(size_t)n * G + c / cpg];
            }
            if (dweight) dweight[c] += (float)dw;
            if (dbias) dbias[c] += (float)db;
        }
        free(owned);
    }
    return PN_OK;
}

int pn_groupnorm_backward_ex(float *dinp, float *dweight, float *dbias,
                             const float *dout, const float *inp,
                             const float *mean, const float *rstd, const float *weight,
                             int N, int C, int HW, int G, double *work)
{
    return gn_backward(dinp, dweight, dbias, dout, inp, mean, rstd, weight, NULL, N, C, HW, G, 0,
                       work);
}

int pn_groupnorm_backward_relux(float *dinp, float *dweight, float *dbias, const float *dout,
                                const float *inp, const float *mean, const float *rstd,
                                const float *weight, const float *bias, int N, int C, int HW,
                                int G, double *work)
{
    return gn_backward(dinp, dweight, dbias, dout, inp, mean, rstd, weight, bias, N, C, HW, G, 1,
                       work);
}
