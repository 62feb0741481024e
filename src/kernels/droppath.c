/* Stochastic depth ("drop path", Huang et al. 2016, as torchvision's
 * StochasticDepth(mode="row")): in training each sample's residual branch is kept
 * with probability keep = 1 - drop and scaled by 1/keep, else zeroed; in evaluation
 * it is the identity. The per-sample factors live in a mask (N) that the forward and
 * backward share: mask[n] = 1/keep or 0 (training), 1 (evaluation). */
#include <stdint.h>

#include "common.h"
#include "layers.h"

#define PN_PAR_MIN 16384

pn_rng pn_droppath_stream(uint64_t seed, uint64_t step, uint64_t block)
{
    return pn_rng_stream(seed, (uint64_t)PN_STREAM_DROPPATH | (block << 8), step);
}

// mask (N); one uniform draw per sample from rng (advanced by N draws in training)
int pn_droppath_mask(float *mask, int N, float drop_prob, int training, pn_rng *rng)
{
    PN_CHECK_PTR(mask);
    PN_CHECK_POS(N);
    PN_CHECK(drop_prob >= 0.0f && drop_prob <= 1.0f,
             "%s: drop probability %g must be in [0, 1]", __func__, (double)drop_prob);
    if (!training || drop_prob == 0.0f) {
        for (int n = 0; n < N; n++) mask[n] = 1.0f;
        return PN_OK;
    }
    PN_CHECK_PTR(rng);
    const double keep = 1.0 - (double)drop_prob;
    const float scale = keep > 0.0 ? (float)(1.0 / keep) : 0.0f;
    for (int n = 0; n < N; n++) mask[n] = pn_rng_uniform(rng) < keep ? scale : 0.0f;
    return PN_OK;
}

// branch (N,D), mask (N), residual (N,D) or NULL -> out (N,D) = residual + branch * mask[n]
// (out may alias branch or residual)
int pn_droppath_forward(float *out, const float *branch, const float *residual,
                        const float *mask, int N, size_t D)
{
    PN_CHECK_PTR(out);
    PN_CHECK_PTR(branch);
    PN_CHECK_PTR(mask);
    PN_CHECK_POS(N);
    PN_CHECK(D > 0, "%s: D must be > 0", __func__);
    #pragma omp parallel for schedule(static) if ((long)N * (long)D >= PN_PAR_MIN)
    for (int n = 0; n < N; n++) {
        const float m = mask[n];
        const float *b = branch + (size_t)n * D;
        float *y = out + (size_t)n * D;
        if (residual) {
            const float *x = residual + (size_t)n * D;
            for (size_t i = 0; i < D; i++) y[i] = x[i] + b[i] * m;
        } else {
            for (size_t i = 0; i < D; i++) y[i] = b[i] * m;
        }
    }
    return PN_OK;
}

// dout (N,D), mask (N) -> dbranch (N,D) = dout * mask[n] written (may alias dout).
// The residual's gradient is dout itself.
int pn_droppath_backward(float *dbranch, const float *dout, const float *mask, int N, size_t D)
{
    PN_CHECK_PTR(dbranch);
    PN_CHECK_PTR(dout);
    PN_CHECK_PTR(mask);
    PN_CHECK_POS(N);
    PN_CHECK(D > 0, "%s: D must be > 0", __func__);
    #pragma omp parallel for schedule(static) if ((long)N * (long)D >= PN_PAR_MIN)
    for (int n = 0; n < N; n++) {
        const float m = mask[n];
        const float *dy = dout + (size_t)n * D;
        float *db = dbranch + (size_t)n * D;
        for (size_t i = 0; i < D; i++) db[i] = dy[i] * m;
    }
    return PN_OK;
}
