/* Softmax cross-entropy with label smoothing.
 * Per sample with logits x (K), label y, eps = smoothing:
 *   lse = max + log(sum_k exp(x_k - max))              (double)
 *   p_k = exp(x_k - lse)
 *   target_k = (1 - eps) [k == y] + eps / K
 *   loss = -sum_k target_k (x_k - lse) = lse - (1 - eps) x_y - (eps/K) sum_k x_k
 *   dloss/dx_k = p_k - target_k
 * The forward loops over samples in order (the sum of per-sample losses is
 * therefore reproducible); the work is O(N*K), tiny next to the network. */
#include <math.h>

#include "common.h"
#include "layers.h"

static int xent_check(const char *fn, const int *labels, int N, int K, float smoothing)
{
    PN_CHECK(N > 0 && K > 0, "%s: N %d and K %d must be > 0", fn, N, K);
    PN_CHECK(smoothing >= 0.0f && smoothing < 1.0f, "%s: smoothing %g must be in [0, 1)", fn,
             (double)smoothing);
    for (int i = 0; i < N; i++)
        PN_CHECK(labels[i] >= 0 && labels[i] < K, "%s: label %d of sample %d not in [0, %d)", fn,
                 labels[i], i, K);
    return PN_OK;
}

// logits, probs (N,K); labels (N); *loss = sum over samples; *correct = argmax hits (or NULL)
int pn_xent_forward(double *loss, int *correct, float *probs, const float *logits,
                    const int *labels, int N, int K, float smoothing)
{
    PN_CHECK_PTR(loss);
    PN_CHECK_PTR(probs);
    PN_CHECK_PTR(logits);
    PN_CHECK_PTR(labels);
    int st = xent_check(__func__, labels, N, K, smoothing);
    if (st) return st;
    const double eps = smoothing, on = 1.0 - eps, off = eps / K;
    double total = 0.0;
    int hits = 0;
    for (int i = 0; i < N; i++) {
        const float *x = logits + (size_t)i * K;
        float *p = probs + (size_t)i * K;
        int am = 0;
        double mx = x[0], sx = 0.0;
        for (int k = 0; k < K; k++) {
            if (x[k] > mx) { mx = x[k]; am = k; }
            sx += x[k];
        }
        double se = 0.0;
        for (int k = 0; k < K; k++) se += exp((double)x[k] - mx);
        const double lse = mx + log(se);
        for (int k = 0; k < K; k++) p[k] = (float)exp((double)x[k] - lse);
        total += lse - on * x[labels[i]] - off * sx;
        hits += am == labels[i];
    }
    *loss = total;
    if (correct) *correct = hits;
    return PN_OK;
}

// dlogits (N,K) = scale * (probs - target)
int pn_xent_backward(float *dlogits, const float *probs, const int *labels,
                     int N, int K, float smoothing, float scale)
{
    PN_CHECK_PTR(dlogits);
    PN_CHECK_PTR(probs);
    PN_CHECK_PTR(labels);
    int st = xent_check(__func__, labels, N, K, smoothing);
    if (st) return st;
    const double eps = smoothing, on = 1.0 - eps, off = eps / K;
    #pragma omp parallel for schedule(static) if ((long)N * K >= 65536)
    for (int i = 0; i < N; i++) {
        const float *p = probs + (size_t)i * K;
        float *d = dlogits + (size_t)i * K;
        for (int k = 0; k < K; k++) {
            const double t = off + (k == labels[i] ? on : 0.0);
            d[k] = (float)((double)scale * ((double)p[k] - t));
        }
    }
    return PN_OK;
}
