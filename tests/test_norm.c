/* Tests of the GroupNorm/LayerNorm/InstanceNorm and BatchNorm kernels:
 * finite-difference gradients, naive references, batch (in)dependence,
 * precision, running statistics, determinism, argument checking. */
#include <float.h>
#include <stdint.h>

#include "harness.h"
#include "kernels/common.h"
#include "kernels/norm_internal.h"
#include "proxynorm.h"

static float *fbuf(size_t n) { return calloc(n ? n : 1, sizeof(float)); }
static float *randn(size_t n, double mean, double std)
{
    float *x = fbuf(n);
    harness_fill_normal(x, n, mean, std);
    return x;
}
static int bits_equal(const float *a, const float *b, size_t n)
{
    return memcmp(a, b, n * sizeof(float)) == 0;
}

/* ------------------------------------------------ finite-difference checks */
/* One normalization layer under test: GN (norm_batch 0) or BN train; relu: followed by
 * a ReLU fused into the kernels (the internal _ex variants of norm_internal.h). */
typedef struct {
    int bn, N, C, HW, G, norm_batch, affine;
    float eps;
    int relu;
} layer;

static size_t n_stats(const layer *L)
{
    if (!L->bn) return (size_t)L->N * L->G;
    int g = L->norm_batch <= 0 ? L->N : L->norm_batch;
    return (size_t)(L->N / g) * L->C;
}

/* scale: BN's saved multiplier (for the backward of BN + ReLU), or NULL. */
static int layer_fwd(const layer *L, float *out, float *mean, float *rstd, float *scale,
                     const float *x, const float *w, const float *b)
{
    if (L->relu && L->bn)
        return pn_batchnorm_forward_train_save(out, mean, rstd, scale, NULL, NULL, x, w, b, L->N, L->C,
                                               L->HW, L->norm_batch, 0.1f, L->eps, 1);
    if (L->relu)
        return pn_groupnorm_forward_ex(out, mean, rstd, x, w, b, L->N, L->C, L->HW, L->G, L->eps, 1);
    if (L->bn)
        return pn_batchnorm_forward_train(out, mean, rstd, NULL, NULL, x, w, b, L->N, L->C, L->HW,
                                          L->norm_batch, 0.1f, L->eps);
    return pn_groupnorm_forward(out, mean, rstd, x, w, b, L->N, L->C, L->HW, L->G, L->eps);
}

/* With L->relu, the backward of norm + ReLU (the mask recomputed from x: b, and BN's scale
 * from layer_fwd). */
static int layer_bwd(const layer *L, float *dx, float *dw, float *db, const float *dy,
                     const float *x, const float *mean, const float *rstd, const float *w,
                     const float *b, const float *scale)
{
    if (L->relu && L->bn)
        return pn_batchnorm_backward_relux(dx, dw, db, dy, x, mean, rstd, scale, b, w, L->N, L->C,
                                           L->HW, L->norm_batch);
    if (L->relu)
        return pn_groupnorm_backward_relux(dx, dw, db, dy, x, mean, rstd, w, b, L->N, L->C, L->HW,
                                           L->G, NULL);
    if (L->bn)
        return pn_batchnorm_backward(dx, dw, db, dy, x, mean, rstd, w, L->N, L->C, L->HW,
                                     L->norm_batch);
    return pn_groupnorm_backward(dx, dw, db, dy, x, mean, rstd, w, L->N, L->C, L->HW, L->G);
}

/* L = sum(r * out) in double. */
static double layer_loss(const layer *L, const float *x, const float *w, const float *b,
                         const float *r)
{
    size_t n = (size_t)L->N * L->C * L->HW, ns = n_stats(L);
    float *out = fbuf(n), *mean = fbuf(ns), *rstd = fbuf(ns);
    layer_fwd(L, out, mean, rstd, NULL, x, w, b);
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)r[i] * out[i];
    free(out);
    free(mean);
    free(rstd);
    return s;
}

/* Central difference of L along v[i] with step h (the steps actually taken in float). */
static double central_diff(const layer *L, float *v, size_t i, double h, float *x, float *w,
                           float *b, const float *r)
{
    float v0 = v[i];
    v[i] = (float)(v0 + h);
    double hp = v[i] - (double)v0;
    double lp = layer_loss(L, x, w, b, r);
    v[i] = (float)(v0 - h);
    double hm = (double)v0 - v[i];
    double lm = layer_loss(L, x, w, b, r);
    v[i] = v0;
    return (lp - lm) / (hp + hm);
}

/* Largest |fd - analytic| over the vector, relative to max(max |analytic|, 1). fd is the
 * Richardson extrapolation (4 D(h/2) - D(h)) / 3 of central differences, whose truncation
 * error is O(h^4): groups of 2-3 values (HW = 1) have a large third derivative, and plain
 * central differences at h = 1e-2 are off by ~2e-3 there. */
static double fd_error(const layer *L, float *v, size_t nv, const float *analytic, float *x,
                       float *w, float *b, const float *r, double h)
{
    double worst = 0, scale = 1;
    for (size_t i = 0; i < nv; i++) scale = fmax(scale, fabs(analytic[i]));
    for (size_t i = 0; i < nv; i++) {
        double d1 = central_diff(L, v, i, h, x, w, b, r);
        double d2 = central_diff(L, v, i, h / 2, x, w, b, r);
        double fd = (4 * d2 - d1) / 3;
        worst = fmax(worst, fabs(fd - analytic[i]) / scale);
    }
    return worst;
}

/* Tolerance: the forward is float32, so L carries a rounding error of about
 * sqrt(#out) * 6e-8 ~ 1e-6; divided by the steps (2h = 1e-2 for D(h/2), weighted 4/3)
 * that is ~1e-4 of the (unit-scale) gradient; the O(h^4) truncation is below that.
 * Observed errors are <= 7e-5; 2e-3 leaves a >20x margin while any wrong term of the
 * backward (missing mean or variance path, wrong group) gives errors of order 1e-1..1. */
#define FD_H 1e-2
#define FD_TOL 2e-3

/* With a ReLU the loss has kinks where a pre-activation is 0: inputs are redrawn until
 * every pre-activation is at least RELU_GAP from 0, which no step of the differences
 * (|d out| <= ~2.5 h) crosses. */
#define RELU_GAP 0.05

static void grad_check(const layer *L)
{
    size_t n = (size_t)L->N * L->C * L->HW, ns = n_stats(L);
    float *x = NULL, *r = randn(n, 0, 1), *w = NULL, *b = NULL;
    float *out = fbuf(n), *mean = fbuf(ns), *rstd = fbuf(ns), *scale = fbuf(ns);
    float *dx = fbuf(n), *dw = fbuf(L->C), *db = fbuf(L->C);
    for (int tries = 0;; tries++) {
        free(x), free(w), free(b);
        x = randn(n, 0.3, 1.0);
        w = L->affine ? randn(L->C, 1.0, 0.5) : NULL;
        b = L->affine ? randn(L->C, 0.0, 0.5) : NULL;
        if (!L->relu) break;
        layer P = *L;
        P.relu = 0;
        CHECK(layer_fwd(&P, out, mean, rstd, NULL, x, w, b) == PN_OK, "forward: %s", pn_last_error());
        double gap = INFINITY;
        for (size_t i = 0; i < n; i++) gap = fmin(gap, fabs(out[i]));
        if (gap >= RELU_GAP) break;
        if (tries == 1000) {
            CHECK(0, "no input with pre-activations away from 0 in 1000 draws");
            break;
        }
    }
    CHECK(layer_fwd(L, out, mean, rstd, scale, x, w, b) == PN_OK, "forward: %s", pn_last_error());
    CHECK(layer_bwd(L, dx, dw, db, r, x, mean, rstd, w, b, scale) == PN_OK, "backward: %s", pn_last_error());
    /* The ~10^4 forward calls of the differences run on one thread: cheap either way,
     * and under valgrind an OpenMP team's barrier spinning would take minutes. */
    int threads = pn_get_threads();
    pn_set_threads(1);
    double ex = fd_error(L, x, n, dx, x, w, b, r, FD_H);
    CHECK(ex <= FD_TOL, "%s N=%d C=%d HW=%d G=%d g=%d affine=%d relu=%d: dinp rel err %.3g",
          L->bn ? "BN" : "GN", L->N, L->C, L->HW, L->G, L->norm_batch, L->affine, L->relu, ex);
    double ew = 0, eb = 0;
    if (L->affine) {
        ew = fd_error(L, w, L->C, dw, x, w, b, r, FD_H);
        eb = fd_error(L, b, L->C, db, x, w, b, r, FD_H);
        CHECK(ew <= FD_TOL && eb <= FD_TOL, "%s N=%d C=%d HW=%d G=%d g=%d: dweight %.3g dbias %.3g",
              L->bn ? "BN" : "GN", L->N, L->C, L->HW, L->G, L->norm_batch, ew, eb);
    }
    pn_set_threads(threads);
    if (getenv("NORM_VERBOSE"))
        printf("  %s N=%d C=%d HW=%d G=%d g=%d affine=%d relu=%d: rel err dinp %.2g dweight %.2g dbias %.2g\n",
               L->bn ? "BN" : "GN", L->N, L->C, L->HW, L->G, L->norm_batch, L->affine, L->relu, ex, ew, eb);
    free(x), free(r), free(w), free(b), free(out), free(mean), free(rstd), free(scale), free(dx),
        free(dw), free(db);
}

TEST(gn_gradients)
{
    harness_seed(11);
    static const int shapes[][4] = { /* N, C, HW, G */
        { 2, 3, 5, 1 }, { 2, 3, 5, 3 }, { 2, 6, 5, 2 }, { 3, 6, 1, 2 }, { 3, 3, 1, 1 },
        { 2, 3, 1, 3 }, { 1, 6, 7, 3 }, { 2, 4, 9, 4 },
    };
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int affine = 0; affine <= 1; affine++) {
            layer L = { 0, shapes[s][0], shapes[s][1], shapes[s][2], shapes[s][3], 0, affine, 1e-5f, 0 };
            grad_check(&L);
        }
}

TEST(bn_gradients)
{
    harness_seed(12);
    static const int shapes[][4] = { /* N, C, HW, norm_batch */
        { 4, 3, 5, 0 }, { 4, 3, 5, 4 }, { 4, 3, 5, 2 }, { 6, 2, 3, 3 }, { 4, 3, 1, 0 },
        { 4, 3, 1, 2 }, { 3, 2, 4, 1 },
    };
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int affine = 0; affine <= 1; affine++) {
            layer L = { 1, shapes[s][0], shapes[s][1], shapes[s][2], 0, shapes[s][3], affine, 1e-5f, 0 };
            grad_check(&L);
        }
}

/* The backward of norm + ReLU fused into the kernels (the mask recomputed from x) against
 * finite differences of max(norm(x), 0). */
TEST(norm_relu_gradients)
{
    harness_seed(13);
    static const int shapes[][5] = { /* bn, N, C, HW, G or norm_batch */
        { 0, 2, 3, 5, 1 }, { 0, 2, 6, 4, 2 }, { 0, 3, 4, 6, 4 }, { 1, 4, 3, 5, 0 },
        { 1, 4, 3, 5, 2 }, { 1, 6, 2, 3, 3 },
    };
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int affine = 0; affine <= 1; affine++) {
            const int *h = shapes[s];
            layer L = { h[0], h[1], h[2], h[3], h[0] ? 0 : h[4], h[0] ? h[4] : 0, affine, 1e-5f, 1 };
            grad_check(&L);
        }
}

/* The fused variants give exactly the unfused norm followed by the model's ReLU
 * (forward: max(., 0), NaN -> 0; backward: dout masked by out > 0, the mask recomputed
 * from x), and the GN backward
 * with caller scratch exactly the one that allocates. */
static void relu_ref(float *y, size_t n)
{
    for (size_t i = 0; i < n; i++) y[i] = y[i] > 0.0f ? y[i] : 0.0f;
}

TEST(fused_relu_equals_unfused)
{
    harness_seed(17);
    const int N = 4, C = 6, HW = 29; /* HW not a multiple of the vector width */
    const size_t n = (size_t)N * C * HW;
    float *x = randn(n, 0.2, 1.0), *dy = randn(n, 0, 1), *w = randn(C, 1, 0.5), *b = randn(C, 0, 0.5);
    float *o1 = fbuf(n), *o2 = fbuf(n), *d1 = fbuf(n), *d2 = fbuf(n), *dm = fbuf(n);
    float *m1 = fbuf((size_t)N * C), *r1 = fbuf((size_t)N * C), *m2 = fbuf((size_t)N * C),
          *r2 = fbuf((size_t)N * C);
    float dw1[6], db1[6], dw2[6], db2[6], rm1[6], rv1[6], rm2[6], rv2[6];
    double *work = calloc(pn_groupnorm_backward_work(N, C), sizeof *work);
    for (int bn = 0; bn <= 1; bn++)
        for (int v = 0; v < 3; v++) { /* GN: G = 1, 2, 6; BN: norm_batch 0, 2, 1 */
            const int G = v == 0 ? 1 : v == 1 ? 2 : 6, g = v == 0 ? 0 : v == 1 ? 2 : 1;
            const char *what = bn ? "BN" : "GN";
            for (int c = 0; c < C; c++) rm1[c] = rm2[c] = 0.1f * c, rv1[c] = rv2[c] = 1 + 0.2f * c;
            int rc1, rc2;
            if (bn) {
                rc1 = pn_batchnorm_forward_train(o1, m1, r1, rm1, rv1, x, w, b, N, C, HW, g, 0.1f, 1e-5f);
                rc2 = pn_batchnorm_forward_train_ex(o2, m2, r2, rm2, rv2, x, w, b, N, C, HW, g, 0.1f,
                                                    1e-5f, 1);
            } else {
                rc1 = pn_groupnorm_forward(o1, m1, r1, x, w, b, N, C, HW, G, 1e-5f);
                rc2 = pn_groupnorm_forward_ex(o2, m2, r2, x, w, b, N, C, HW, G, 1e-5f, 1);
            }
            CHECK(rc1 == PN_OK && rc2 == PN_OK, "%s %d forward: %s", what, v, pn_last_error());
            size_t zeros = 0;
            for (size_t i = 0; i < n; i++) zeros += o1[i] <= 0.0f;
            CHECK(zeros > n / 10 && zeros < n - n / 10, "%s %d: %zu of %zu outputs <= 0", what, v, zeros, n);
            relu_ref(o1, n);
            const size_t ns = bn ? (size_t)(N / (g ? g : N)) * C : (size_t)N * G;
            CHECK(bits_equal(o1, o2, n), "%s %d: fused forward differs", what, v);
            CHECK(bits_equal(m1, m2, ns) && bits_equal(r1, r2, ns), "%s %d: statistics differ", what, v);
            if (bn)
                CHECK(bits_equal(rm1, rm2, C) && bits_equal(rv1, rv2, C), "%s %d: running stats differ", what, v);
            /* backward: unfused on the masked dout, fused with the mask recomputed from x
             * (BN: with the multiplier the forward saved, the same bits as o2's) */
            float sc[24], m3[24], r3[24];
            if (bn) {
                for (int c = 0; c < C; c++) rm2[c] = 0.1f * c, rv2[c] = 1 + 0.2f * c;
                rc2 = pn_batchnorm_forward_train_save(o2, m3, r3, sc, rm2, rv2, x, w, b, N, C, HW, g,
                                                      0.1f, 1e-5f, 1);
                CHECK(rc2 == PN_OK && bits_equal(o1, o2, n) && bits_equal(m2, m3, ns), "BN %d: save forward", v);
            }
            for (size_t i = 0; i < n; i++) dm[i] = o2[i] > 0.0f ? dy[i] : 0.0f;
            for (int c = 0; c < C; c++) dw1[c] = dw2[c] = 0.5f, db1[c] = db2[c] = -0.25f;
            if (bn) {
                rc1 = pn_batchnorm_backward(d1, dw1, db1, dm, x, m1, r1, w, N, C, HW, g);
                rc2 = pn_batchnorm_backward_relux(d2, dw2, db2, dy, x, m3, r3, sc, b, w, N, C, HW, g);
            } else {
                rc1 = pn_groupnorm_backward(d1, dw1, db1, dm, x, m1, r1, w, N, C, HW, G);
                rc2 = pn_groupnorm_backward_relux(d2, dw2, db2, dy, x, m2, r2, w, b, N, C, HW, G, work);
            }
            CHECK(rc1 == PN_OK && rc2 == PN_OK, "%s %d backward: %s", what, v, pn_last_error());
            CHECK(bits_equal(d1, d2, n), "%s %d: fused dinp differs", what, v);
            CHECK(bits_equal(dw1, dw2, C) && bits_equal(db1, db2, C), "%s %d: fused dweight/dbias differ",
                  what, v);
            /* in place: dinp aliasing dout, as the model may run it */
            memcpy(d2, dy, n * sizeof *d2);
            rc2 = bn ? pn_batchnorm_backward_relux(d2, NULL, NULL, d2, x, m3, r3, sc, b, w, N, C, HW, g)
                     : pn_groupnorm_backward_relux(d2, NULL, NULL, d2, x, m2, r2, w, b, N, C, HW, G, NULL);
            CHECK(rc2 == PN_OK && bits_equal(d1, d2, n), "%s %d: in-place fused dinp differs", what, v);
            if (!bn) { /* unfused GN backward with caller scratch */
                for (int c = 0; c < C; c++) dw2[c] = 0.5f, db2[c] = -0.25f;
                rc2 = pn_groupnorm_backward_ex(d2, dw2, db2, dm, x, m1, r1, w, N, C, HW, G, work);
                CHECK(rc2 == PN_OK && bits_equal(d1, d2, n) && bits_equal(dw1, dw2, C) &&
                          bits_equal(db1, db2, C), "GN %d: backward with caller scratch differs", v);
            }
        }
    /* BN eval, and NaN -> 0 as the model's separate ReLU */
    x[5] = NAN;
    CHECK(pn_batchnorm_forward_eval(o1, x, rm1, rv1, w, b, N, C, HW, 1e-5f) == PN_OK &&
              pn_batchnorm_forward_eval_ex(o2, x, rm1, rv1, w, b, N, C, HW, 1e-5f, 1) == PN_OK,
          "eval: %s", pn_last_error());
    relu_ref(o1, n);
    CHECK(bits_equal(o1, o2, n) && o2[5] == 0.0f, "BN eval: fused forward differs");
    free(x), free(dy), free(w), free(b), free(o1), free(o2), free(d1), free(d2), free(dm);
    free(m1), free(r1), free(m2), free(r2), free(work);
}

/* The one-pass statistics (shifted by the first value of each group / chunk) stay exact
 * when that first value is far out: against two-pass double references. */
TEST(stats_first_value_outlier)
{
    harness_seed(19);
    const int N = 4, C = 4, HW = 50;
    const size_t n = (size_t)N * C * HW;
    float *x = randn(n, 3.0, 0.01), *out = fbuf(n), *m = fbuf((size_t)N * C), *r = fbuf((size_t)N * C);
    for (int nc = 0; nc < N * C; nc++) x[(size_t)nc * HW] = nc % 2 ? 3e4f : -2e3f;
    for (int G = 1; G <= C; G *= 2) {
        CHECK(pn_groupnorm_forward(out, m, r, x, NULL, NULL, N, C, HW, G, 0.0f) == PN_OK, "gn");
        const size_t gs = (size_t)(C / G) * HW;
        for (int ng = 0; ng < N * G; ng++) {
            const float *xg = x + (size_t)ng * gs;
            double s = 0, q = 0;
            for (size_t i = 0; i < gs; i++) s += xg[i];
            const double mu = s / gs;
            for (size_t i = 0; i < gs; i++) q += (xg[i] - mu) * (xg[i] - mu);
            CHECK_NEAR(m[ng], mu, 1e-6 * fabs(mu) + 1e-6);
            CHECK_NEAR(r[ng], 1 / sqrt(q / gs), 1e-6 / sqrt(q / gs));
        }
    }
    CHECK(pn_batchnorm_forward_train(out, m, r, NULL, NULL, x, NULL, NULL, N, C, HW, 2, 0.1f, 0.0f) ==
              PN_OK, "bn");
    for (int k = 0; k < N / 2; k++)
        for (int c = 0; c < C; c++) {
            double s = 0, q = 0;
            for (int j = 0; j < 2; j++)
                for (int i = 0; i < HW; i++) s += x[((size_t)(2 * k + j) * C + c) * HW + i];
            const double mu = s / (2 * HW);
            for (int j = 0; j < 2; j++)
                for (int i = 0; i < HW; i++) {
                    const double d = x[((size_t)(2 * k + j) * C + c) * HW + i] - mu;
                    q += d * d;
                }
            CHECK_NEAR(m[k * C + c], mu, 1e-6 * fabs(mu) + 1e-6);
            CHECK_NEAR(r[k * C + c], 1 / sqrt(q / (2 * HW)), 1e-6 / sqrt(q / (2 * HW)));
        }
    free(x), free(out), free(m), free(r);
}

/* ------------------------------------------------------------ references */
/* Naive double-precision normalization of x over blocks: LN (one block per sample of
 * C*HW) or IN (one block per (n,c) of HW), with per-channel affine. */
static void naive_norm(double *out, const float *x, const float *w, const float *b, int N, int C,
                       int HW, int per_channel, double eps)
{
    size_t block = per_channel ? (size_t)HW : (size_t)C * HW;
    size_t nblocks = (size_t)N * C * HW / block;
    for (size_t k = 0; k < nblocks; k++) {
        const float *xb = x + k * block;
        double mu = 0, var = 0;
        for (size_t i = 0; i < block; i++) mu += xb[i];
        mu /= block;
        for (size_t i = 0; i < block; i++) var += (xb[i] - mu) * (xb[i] - mu);
        var /= block;
        for (size_t i = 0; i < block; i++) {
            size_t idx = k * block + i;
            int c = (int)(idx / HW % C);
            out[idx] = (xb[i] - mu) / sqrt(var + eps) * w[c] + b[c];
        }
    }
}

TEST(gn_matches_layernorm_and_instancenorm)
{
    harness_seed(21);
    const int N = 3, C = 6, HW = 10;
    const size_t n = (size_t)N * C * HW;
    float *x = randn(n, 2.0, 3.0), *w = randn(C, 1, 0.5), *b = randn(C, 0, 0.5);
    float *out = fbuf(n), *mean = fbuf((size_t)N * C), *rstd = fbuf((size_t)N * C);
    double *ref = calloc(n, sizeof *ref);
    for (int per_channel = 0; per_channel <= 1; per_channel++) {
        int G = per_channel ? C : 1;
        CHECK(pn_groupnorm_forward(out, mean, rstd, x, w, b, N, C, HW, G, 1e-5f) == PN_OK, "fwd");
        naive_norm(ref, x, w, b, N, C, HW, per_channel, 1e-5);
        double worst = 0;
        for (size_t i = 0; i < n; i++) worst = fmax(worst, fabs(out[i] - ref[i]) / (1 + fabs(ref[i])));
        CHECK(worst < 2e-6, "G=%d vs naive %s: max rel err %.3g", G, per_channel ? "IN" : "LN", worst);
    }
    free(x), free(w), free(b), free(out), free(mean), free(rstd), free(ref);
}

/* --------------------------------------------------------- batch (in)dependence */
TEST(batch_independence)
{
    harness_seed(31);
    const int N = 4, C = 6, HW = 7, i = 1, j = 2;
    const size_t n = (size_t)N * C * HW, per = (size_t)C * HW;
    float *x = randn(n, 0.5, 2), *x2 = fbuf(n), *dy = randn(n, 0, 1);
    float *w = randn(C, 1, 0.3), *b = randn(C, 0, 0.3);
    float *o1 = fbuf(n), *o2 = fbuf(n), *d1 = fbuf(n), *d2 = fbuf(n);
    float *m = fbuf((size_t)N * C), *r = fbuf((size_t)N * C), *dw = fbuf(C), *db = fbuf(C);
    memcpy(x2, x, n * sizeof *x);
    harness_fill_normal(x2 + j * per, per, -3, 0.1); /* a very different sample j */
    static const int groups[] = { 1, 2, 3, 6 };
    for (int t = 0; t < 4; t++) {
        int G = groups[t];
        pn_groupnorm_forward(o1, m, r, x, w, b, N, C, HW, G, 1e-5f);
        pn_groupnorm_backward(d1, dw, db, dy, x, m, r, w, N, C, HW, G);
        pn_groupnorm_forward(o2, m, r, x2, w, b, N, C, HW, G, 1e-5f);
        pn_groupnorm_backward(d2, dw, db, dy, x2, m, r, w, N, C, HW, G);
        CHECK(bits_equal(o1 + i * per, o2 + i * per, per), "GN G=%d: sample %d output changed", G, i);
        CHECK(bits_equal(d1 + i * per, d2 + i * per, per), "GN G=%d: sample %d dinp changed", G, i);
        CHECK(!bits_equal(o1 + j * per, o2 + j * per, per), "GN G=%d: sample %d unchanged", G, j);
    }
    /* BN with g = N: sample i depends on sample j. */
    pn_batchnorm_forward_train(o1, m, r, NULL, NULL, x, w, b, N, C, HW, 0, 0.1f, 1e-5f);
    pn_batchnorm_forward_train(o2, m, r, NULL, NULL, x2, w, b, N, C, HW, 0, 0.1f, 1e-5f);
    CHECK(!bits_equal(o1 + i * per, o2 + i * per, per), "BN g=N: sample %d did not change", i);
    /* Ghost batches of 2: samples 0,1 | 2,3. Sample 1 (chunk 0) ignores sample 2 (chunk 1),
     * sample 3 (same chunk as 2) does not. */
    pn_batchnorm_forward_train(o1, m, r, NULL, NULL, x, w, b, N, C, HW, 2, 0.1f, 1e-5f);
    pn_batchnorm_forward_train(o2, m, r, NULL, NULL, x2, w, b, N, C, HW, 2, 0.1f, 1e-5f);
    CHECK(bits_equal(o1 + i * per, o2 + i * per, per), "BN g=2: sample %d changed", i);
    CHECK(!bits_equal(o1 + 3 * per, o2 + 3 * per, per), "BN g=2: sample 3 did not change");
    free(x), free(x2), free(dy), free(w), free(b), free(o1), free(o2), free(d1), free(d2);
    free(m), free(r), free(dw), free(db);
}

/* ------------------------------------------------------------- precision */
/* Mean and variance (biased, double) of out over blocks of HW of the given (n,c) set. */
static void moments(const float *out, size_t start, size_t stride, int count, int HW, double *mu,
                    double *var)
{
    double s = 0, q = 0;
    for (int k = 0; k < count; k++)
        for (int i = 0; i < HW; i++) s += out[start + k * stride + i];
    *mu = s / ((double)count * HW);
    for (int k = 0; k < count; k++)
        for (int i = 0; i < HW; i++) {
            double d = out[start + k * stride + i] - *mu;
            q += d * d;
        }
    *var = q / ((double)count * HW);
}

TEST(precision_large_mean)
{
    harness_seed(41);
    const int N = 4, C = 4, HW = 256, G = 2;
    const size_t n = (size_t)N * C * HW;
    float *x = randn(n, 100.0, 0.01), *out = fbuf(n), *m = fbuf(N * C), *r = fbuf(N * C);
    CHECK(pn_groupnorm_forward(out, m, r, x, NULL, NULL, N, C, HW, G, 0.0f) == PN_OK, "gn");
    double worst_mu = 0, worst_var = 0, mu, var;
    for (int ng = 0; ng < N * G; ng++) {
        moments(out, (size_t)ng * (C / G) * HW, HW, C / G, HW, &mu, &var);
        worst_mu = fmax(worst_mu, fabs(mu));
        worst_var = fmax(worst_var, fabs(var - 1));
    }
    CHECK(worst_mu < 1e-3 && worst_var < 1e-3, "GN: |mean| %.3g |var-1| %.3g", worst_mu, worst_var);
    CHECK(pn_batchnorm_forward_train(out, m, r, NULL, NULL, x, NULL, NULL, N, C, HW, 2, 0.1f, 0.0f) ==
              PN_OK, "bn");
    worst_mu = worst_var = 0;
    for (int k = 0; k < N / 2; k++)
        for (int c = 0; c < C; c++) {
            moments(out, ((size_t)k * 2 * C + c) * HW, (size_t)C * HW, 2, HW, &mu, &var);
            worst_mu = fmax(worst_mu, fabs(mu));
            worst_var = fmax(worst_var, fabs(var - 1));
        }
    CHECK(worst_mu < 1e-3 && worst_var < 1e-3, "BN: |mean| %.3g |var-1| %.3g", worst_mu, worst_var);
    free(x), free(out), free(m), free(r);
}

TEST(constant_input)
{
    const int N = 2, C = 4, HW = 9, G = 2;
    const size_t n = (size_t)N * C * HW;
    float *x = fbuf(n), *out = fbuf(n), *dy = fbuf(n), *dx = fbuf(n);
    float *m = fbuf(N * C), *r = fbuf(N * C), *dw = fbuf(C), *db = fbuf(C);
    float w[4] = { 1, 2, -1, 0.5f }, b[4] = { 0, 0, 0, 0 };
    for (size_t i = 0; i < n; i++) x[i] = 3.7f, dy[i] = (float)((i % 5) - 2);
    for (int bn = 0; bn <= 1; bn++) {
        int rc = bn ? pn_batchnorm_forward_train(out, m, r, NULL, NULL, x, w, b, N, C, HW, 0, 0.1f, 1e-5f)
                    : pn_groupnorm_forward(out, m, r, x, w, b, N, C, HW, G, 1e-5f);
        CHECK(rc == PN_OK, "fwd");
        int zeros = 1, finite = 1;
        for (size_t i = 0; i < n; i++) zeros &= out[i] == 0.0f;
        rc = bn ? pn_batchnorm_backward(dx, dw, db, dy, x, m, r, w, N, C, HW, 0)
                : pn_groupnorm_backward(dx, dw, db, dy, x, m, r, w, N, C, HW, G);
        CHECK(rc == PN_OK, "bwd");
        for (size_t i = 0; i < n; i++) finite &= isfinite(dx[i]);
        for (int c = 0; c < C; c++) finite &= isfinite(dw[c]) && isfinite(db[c]);
        CHECK(zeros, "%s: constant input does not give zeros", bn ? "BN" : "GN");
        CHECK(finite, "%s: non-finite gradient for constant input", bn ? "BN" : "GN");
    }
    free(x), free(out), free(dy), free(dx), free(m), free(r), free(dw), free(db);
}

/* ------------------------------------------------------------- BatchNorm */
TEST(bn_running_stats_two_chunks)
{
    harness_seed(51);
    const int N = 4, C = 2, HW = 3, g = 2;
    const float mom = 0.1f, eps = 1e-5f;
    const size_t n = (size_t)N * C * HW;
    float *x = randn(n, 1.0, 2.0), *out = fbuf(n), *m = fbuf(4), *r = fbuf(4);
    float rm[2] = { 0.5f, -1.0f }, rv[2] = { 2.0f, 0.3f };
    double erm[2] = { 0.5, -1.0 }, erv[2] = { 2.0, 0.3 };
    CHECK(pn_batchnorm_forward_train(out, m, r, rm, rv, x, NULL, NULL, N, C, HW, g, mom, eps) == PN_OK,
          "%s", pn_last_error());
    for (int k = 0; k < 2; k++)
        for (int c = 0; c < C; c++) {
            double s = 0, q = 0;
            for (int s_ = 0; s_ < g; s_++)
                for (int i = 0; i < HW; i++) s += x[((size_t)(k * g + s_) * C + c) * HW + i];
            double mu = s / (g * HW);
            for (int s_ = 0; s_ < g; s_++)
                for (int i = 0; i < HW; i++) {
                    double d = x[((size_t)(k * g + s_) * C + c) * HW + i] - mu;
                    q += d * d;
                }
            CHECK_NEAR(m[k * C + c], mu, 1e-6 * (1 + fabs(mu)));
            CHECK_NEAR(r[k * C + c], 1 / sqrt(q / (g * HW) + eps), 1e-6 * r[k * C + c]);
            erm[c] = (1 - mom) * erm[c] + mom * mu;
            erv[c] = (1 - mom) * erv[c] + mom * q / (g * HW - 1);
        }
    for (int c = 0; c < C; c++) {
        CHECK_NEAR(rm[c], erm[c], 1e-6 * (1 + fabs(erm[c])));
        CHECK_NEAR(rv[c], erv[c], 1e-6 * (1 + fabs(erv[c])));
    }
    free(x), free(out), free(m), free(r);
}

TEST(bn_eval_formula)
{
    harness_seed(52);
    const int N = 3, C = 3, HW = 5;
    const size_t n = (size_t)N * C * HW;
    const float eps = 1e-3f, rm[3] = { 0.5f, -2, 10 }, rv[3] = { 0.25f, 4, 1e-4f };
    float *x = randn(n, 1, 2), *out = fbuf(n), w[3] = { 1.5f, -0.5f, 2 }, b[3] = { 0.1f, 0.2f, -3 };
    CHECK(pn_batchnorm_forward_eval(out, x, rm, rv, w, b, N, C, HW, eps) == PN_OK, "eval");
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        int c = (int)(i / HW % C);
        double ref = (x[i] - (double)rm[c]) / sqrt((double)rv[c] + eps) * w[c] + b[c];
        worst = fmax(worst, fabs(out[i] - ref) / (1 + fabs(ref)));
    }
    CHECK(worst < 1e-6, "eval vs formula: %.3g", worst);
    CHECK(pn_batchnorm_forward_eval(out, x, rm, rv, NULL, NULL, N, C, HW, eps) == PN_OK, "eval");
    worst = 0;
    for (size_t i = 0; i < n; i++) {
        int c = (int)(i / HW % C);
        double ref = (x[i] - (double)rm[c]) / sqrt((double)rv[c] + eps);
        worst = fmax(worst, fabs(out[i] - ref) / (1 + fabs(ref)));
    }
    CHECK(worst < 1e-6, "eval (no affine) vs formula: %.3g", worst);
    free(x), free(out);
}

/* ---------------------------------------------------- accumulation, determinism */
TEST(param_grads_accumulate)
{
    harness_seed(61);
    const int N = 3, C = 4, HW = 6, G = 2;
    const size_t n = (size_t)N * C * HW;
    float *x = randn(n, 0, 1), *dy = randn(n, 0, 1), *w = randn(C, 1, 0.2), *b = randn(C, 0, 0.2);
    float *out = fbuf(n), *dx1 = fbuf(n), *dx2 = fbuf(n), *m = fbuf(N * C), *r = fbuf(N * C);
    float dw1[4] = { 0 }, db1[4] = { 0 }, dw2[4] = { 0 }, db2[4] = { 0 };
    for (int bn = 0; bn <= 1; bn++) {
        memset(dw1, 0, sizeof dw1), memset(db1, 0, sizeof db1);
        if (bn) {
            pn_batchnorm_forward_train(out, m, r, NULL, NULL, x, w, b, N, C, HW, 0, 0.1f, 1e-5f);
            pn_batchnorm_backward(dx1, dw1, db1, dy, x, m, r, w, N, C, HW, 0);
            memcpy(dw2, dw1, sizeof dw1), memcpy(db2, db1, sizeof db1);
            pn_batchnorm_backward(dx2, dw2, db2, dy, x, m, r, w, N, C, HW, 0);
        } else {
            pn_groupnorm_forward(out, m, r, x, w, b, N, C, HW, G, 1e-5f);
            pn_groupnorm_backward(dx1, dw1, db1, dy, x, m, r, w, N, C, HW, G);
            memcpy(dw2, dw1, sizeof dw1), memcpy(db2, db1, sizeof db1);
            pn_groupnorm_backward(dx2, dw2, db2, dy, x, m, r, w, N, C, HW, G);
        }
        int ok = 1;
        for (int c = 0; c < C; c++) ok &= dw2[c] == 2 * dw1[c] && db2[c] == 2 * db1[c] && dw1[c] != 0;
        CHECK(ok, "%s: second backward did not double dweight/dbias", bn ? "BN" : "GN");
        CHECK(bits_equal(dx1, dx2, n), "%s: dinp is not overwritten", bn ? "BN" : "GN");
        /* NULL parameter gradients are allowed and give the same dinp */
        if (bn) pn_batchnorm_backward(dx2, NULL, NULL, dy, x, m, r, w, N, C, HW, 0);
        else pn_groupnorm_backward(dx2, NULL, NULL, dy, x, m, r, w, N, C, HW, G);
        CHECK(bits_equal(dx1, dx2, n), "%s: dinp differs without parameter gradients", bn ? "BN" : "GN");
    }
    free(x), free(dy), free(w), free(b), free(out), free(dx1), free(dx2), free(m), free(r);
}

/* Forward + backward of GN and BN into fresh buffers; input copied at a float offset
 * `shift` so that the two runs see differently aligned data. */
static void run_all(float *res, const float *x0, const float *dy0, const float *w, const float *b,
                    int N, int C, int HW, int shift)
{
    const size_t n = (size_t)N * C * HW;
    float *xb = fbuf(n + 8), *dyb = fbuf(n + 8), *m = fbuf((size_t)N * C), *r = fbuf((size_t)N * C);
    float *x = xb + shift, *dy = dyb + shift, rm[64] = { 0 }, rv[64];
    memcpy(x, x0, n * sizeof *x), memcpy(dy, dy0, n * sizeof *dy);
    for (int c = 0; c < C; c++) rv[c] = 1;
    float *o = res, *dx = res + n, *dw = res + 2 * n, *db = dw + C; /* res: 4n + 4C */
    memset(dw, 0, 2 * C * sizeof *dw);
    pn_groupnorm_forward(o, m, r, x, w, b, N, C, HW, 4, 1e-5f);
    pn_groupnorm_backward(dx, dw, db, dy, x, m, r, w, N, C, HW, 4);
    o += 2 * n + 2 * C, dx = o + n, dw = dx + n, db = dw + C;
    memset(dw, 0, 2 * C * sizeof *dw);
    pn_batchnorm_forward_train(o, m, r, rm, rv, x, w, b, N, C, HW, 2, 0.1f, 1e-5f);
    pn_batchnorm_backward(dx, dw, db, dy, x, m, r, w, N, C, HW, 2);
    memcpy(db + C, rm, C * sizeof *rm), memcpy(db + 2 * C, rv, C * sizeof *rv);
    free(xb), free(dyb), free(m), free(r);
}

TEST(determinism)
{
    harness_seed(71);
    const int N = 8, C = 16, HW = 37;
    const size_t n = (size_t)N * C * HW, nres = 4 * n + 6 * C;
    float *x = randn(n, 0.2, 1), *dy = randn(n, 0, 1), *w = randn(C, 1, .2), *b = randn(C, 0, .2);
    float *a = fbuf(nres), *c = fbuf(nres), *d = fbuf(nres);
    run_all(a, x, dy, w, b, N, C, HW, 0);
    run_all(c, x, dy, w, b, N, C, HW, 3);
    CHECK(bits_equal(a, c, nres), "two runs (different alignment) differ");
    /* the implementation splits work so that no sum depends on the thread count */
    int threads = pn_get_threads();
    pn_set_threads(1);
    run_all(d, x, dy, w, b, N, C, HW, 1);
    pn_set_threads(threads);
    CHECK(bits_equal(a, d, nres), "1 thread and %d threads differ", threads);
    free(x), free(dy), free(w), free(b), free(a), free(c), free(d);
}

/* ---------------------------------------------------------- invalid arguments */
#define SENT 12345.0f
static float o[64], m[8], r[8], x[64], w[4], dx[64], dw[4], db[4], rm[4], rv[4];

static int untouched(void)
{
    const float *bufs[] = { o, m, r, dx, dw, db, rm, rv };
    const size_t lens[] = { 64, 8, 8, 64, 4, 4, 4, 4 };
    for (int k = 0; k < 8; k++)
        for (size_t i = 0; i < lens[k]; i++)
            if (bufs[k][i] != SENT) return 0;
    return 1;
}

static void reset(void)
{
    float *bufs[] = { o, m, r, dx, dw, db, rm, rv };
    const size_t lens[] = { 64, 8, 8, 64, 4, 4, 4, 4 };
    for (int k = 0; k < 8; k++)
        for (size_t i = 0; i < lens[k]; i++) bufs[k][i] = SENT;
    for (int i = 0; i < 64; i++) x[i] = (float)i;
    for (int i = 0; i < 4; i++) w[i] = 1;
    pn_clear_error();
}

/* The plane writers (the model's unstored norm outputs, read by convolutions) give the
 * floats of the row passes they stand for, for every row length (AVX2 tails of 1 to 7),
 * into rows with a stride, NaN, -0 and values at the ReLU kink included, and leave the
 * gaps between rows alone. */
TEST(plane_writers_equal_row_passes)
{
    harness_seed(31);
    for (int W = 1; W <= 20; W++) {
        const int H = 3, ld = W + 3, n = H * W;
        float *x = randn((size_t)n, 0.0, 1.0), *ref = fbuf((size_t)n), *dst = fbuf((size_t)H * ld);
        x[0] = NAN;
        if (n > 1) x[1] = -0.0f;
        if (n > 2) x[2] = 0.25f; /* (x - m) * a + b = 0 exactly below */
        const float m = 0.25f, a = 1.5f, b = 0.0f;
        for (int relu = 0; relu <= 1; relu++) {
            for (int i = 0; i < H * ld; i++) dst[i] = 7.0f;
            pn_affine_row(ref, x, n, m, a, b, relu);
            pn_affine_plane(dst, ld, x, H, W, m, a, b, relu);
            int ok = 1;
            for (int h = 0; h < H; h++) {
                ok &= bits_equal(dst + h * ld, ref + h * W, (size_t)W);
                for (int g = W; g < ld; g++) ok &= dst[h * ld + g] == 7.0f;
            }
            CHECK(ok, "pn_affine_plane W=%d relu=%d differs from pn_affine_row", W, relu);
        }
        /* the fused GN + PN-Act's output pass, one (sample, channel) plane */
        const float gm = 1.25f, bt = -0.5f;
        float pm = 0.3f, ps = 1.7f, g1 = gm, b1 = bt, z = 0.0f;
        pn_pnact_params p = { &g1, &b1, &z, &z };
        float mu = 0.1f, rs = 0.9f;
        for (int i = 0; i < H * ld; i++) dst[i] = 7.0f;
        CHECK(pn_gn_pnact_apply(ref, x, &mu, &rs, &pm, &ps, p, 1, 1, n, 1, PN_ACT_RELU) == PN_OK, "apply");
        pn_gn_pnact_plane(dst, ld, x, H, W, mu, rs, gm, bt, pm, ps, PN_ACT_RELU);
        int ok = 1;
        for (int h = 0; h < H; h++) {
            ok &= bits_equal(dst + h * ld, ref + h * W, (size_t)W);
            for (int g = W; g < ld; g++) ok &= dst[h * ld + g] == 7.0f;
        }
        CHECK(ok, "pn_gn_pnact_plane W=%d differs from the apply pass", W);
        free(x), free(ref), free(dst);
    }
}

TEST(invalid_arguments)
{
    const float nan = NAN;
    int rc, clean = 1, msg = 1;
    /* valid baseline: N=2 C=4 HW=8 G=2 */
#define BAD(call)                                          \
    do {                                                   \
        reset();                                           \
        rc = (call);                                    \
        if (!untouched()) clean = 0, printf("  wrote on error: %s\n", #call); \
        if (!pn_last_error()[0]) msg = 0, printf("  no message: %s\n", #call); \
        CHECK(rc == PN_ERR_ARG, "%s returned %d", #call, rc); \
    } while (0)
    BAD(pn_groupnorm_forward(NULL, m, r, x, w, NULL, 2, 4, 8, 2, 1e-5f));
    BAD(pn_groupnorm_forward(o, NULL, r, x, w, NULL, 2, 4, 8, 2, 1e-5f));
    BAD(pn_groupnorm_forward(o, m, NULL, x, w, NULL, 2, 4, 8, 2, 1e-5f));
    BAD(pn_groupnorm_forward(o, m, r, NULL, w, NULL, 2, 4, 8, 2, 1e-5f));
    BAD(pn_groupnorm_forward(o, m, r, x, w, NULL, 0, 4, 8, 2, 1e-5f));
    BAD(pn_groupnorm_forward(o, m, r, x, w, NULL, 2, -4, 8, 2, 1e-5f));
    BAD(pn_groupnorm_forward(o, m, r, x, w, NULL, 2, 4, 0, 2, 1e-5f));
    BAD(pn_groupnorm_forward(o, m, r, x, w, NULL, 2, 4, 8, 0, 1e-5f));
    BAD(pn_groupnorm_forward(o, m, r, x, w, NULL, 2, 4, 8, 3, 1e-5f));
    BAD(pn_groupnorm_forward(o, m, r, x, w, NULL, 2, 4, 8, 2, -1e-5f));
    BAD(pn_groupnorm_forward(o, m, r, x, w, NULL, 2, 4, 8, 2, nan));
    BAD(pn_groupnorm_backward(NULL, dw, db, x, x, m, r, w, 2, 4, 8, 2));
    BAD(pn_groupnorm_backward(dx, dw, db, NULL, x, m, r, w, 2, 4, 8, 2));
    BAD(pn_groupnorm_backward(dx, dw, db, x, NULL, m, r, w, 2, 4, 8, 2));
    BAD(pn_groupnorm_backward(dx, dw, db, x, x, NULL, r, w, 2, 4, 8, 2));
    BAD(pn_groupnorm_backward(dx, dw, db, x, x, m, NULL, w, 2, 4, 8, 2));
    BAD(pn_groupnorm_backward(dx, dw, db, x, x, m, r, w, -2, 4, 8, 2));
    BAD(pn_groupnorm_backward(dx, dw, db, x, x, m, r, w, 2, 0, 8, 2));
    BAD(pn_groupnorm_backward(dx, dw, db, x, x, m, r, w, 2, 4, -8, 2));
    BAD(pn_groupnorm_backward(dx, dw, db, x, x, m, r, w, 2, 4, 8, -2));
    BAD(pn_groupnorm_backward(dx, dw, db, x, x, m, r, w, 2, 4, 8, 8));
    /* BN train: N=4 C=2 HW=8 g=2 */
    BAD(pn_batchnorm_forward_train(NULL, m, r, rm, rv, x, w, NULL, 4, 2, 8, 2, 0.1f, 1e-5f));
    BAD(pn_batchnorm_forward_train(o, NULL, r, rm, rv, x, w, NULL, 4, 2, 8, 2, 0.1f, 1e-5f));
    BAD(pn_batchnorm_forward_train(o, m, NULL, rm, rv, x, w, NULL, 4, 2, 8, 2, 0.1f, 1e-5f));
    BAD(pn_batchnorm_forward_train(o, m, r, rm, rv, NULL, w, NULL, 4, 2, 8, 2, 0.1f, 1e-5f));
    BAD(pn_batchnorm_forward_train(o, m, r, rm, NULL, x, w, NULL, 4, 2, 8, 2, 0.1f, 1e-5f));
    BAD(pn_batchnorm_forward_train(o, m, r, rm, rv, x, w, NULL, 0, 2, 8, 2, 0.1f, 1e-5f));
    BAD(pn_batchnorm_forward_train(o, m, r, rm, rv, x, w, NULL, 4, 0, 8, 2, 0.1f, 1e-5f));
    BAD(pn_batchnorm_forward_train(o, m, r, rm, rv, x, w, NULL, 4, 2, 0, 2, 0.1f, 1e-5f));
    BAD(pn_batchnorm_forward_train(o, m, r, rm, rv, x, w, NULL, 4, 2, 8, 3, 0.1f, 1e-5f));
    BAD(pn_batchnorm_forward_train(o, m, r, rm, rv, x, w, NULL, 4, 2, 8, 8, 0.1f, 1e-5f));
    BAD(pn_batchnorm_forward_train(o, m, r, rm, rv, x, w, NULL, 4, 2, 1, 1, 0.1f, 1e-5f));
    BAD(pn_batchnorm_forward_train(o, m, r, rm, rv, x, w, NULL, 1, 2, 1, 0, 0.1f, 1e-5f));
    BAD(pn_batchnorm_forward_train(o, m, r, rm, rv, x, w, NULL, 4, 2, 8, 2, 0.1f, -1.0f));
    BAD(pn_batchnorm_forward_train(o, m, r, rm, rv, x, w, NULL, 4, 2, 8, 2, -0.1f, 1e-5f));
    BAD(pn_batchnorm_forward_train(o, m, r, rm, rv, x, w, NULL, 4, 2, 8, 2, 1.5f, 1e-5f));
    BAD(pn_batchnorm_forward_train(o, m, r, rm, rv, x, w, NULL, 4, 2, 8, 2, nan, 1e-5f));
    BAD(pn_batchnorm_forward_eval(NULL, x, rm, rv, w, NULL, 4, 2, 8, 1e-5f));
    BAD(pn_batchnorm_forward_eval(o, NULL, rm, rv, w, NULL, 4, 2, 8, 1e-5f));
    BAD(pn_batchnorm_forward_eval(o, x, NULL, rv, w, NULL, 4, 2, 8, 1e-5f));
    BAD(pn_batchnorm_forward_eval(o, x, rm, NULL, w, NULL, 4, 2, 8, 1e-5f));
    BAD(pn_batchnorm_forward_eval(o, x, rm, rv, w, NULL, 0, 2, 8, 1e-5f));
    BAD(pn_batchnorm_forward_eval(o, x, rm, rv, w, NULL, 4, 0, 8, 1e-5f));
    BAD(pn_batchnorm_forward_eval(o, x, rm, rv, w, NULL, 4, 2, 0, 1e-5f));
    BAD(pn_batchnorm_forward_eval(o, x, rm, rv, w, NULL, 4, 2, 8, -1e-5f));
    BAD(pn_batchnorm_backward(NULL, dw, db, x, x, m, r, w, 4, 2, 8, 2));
    BAD(pn_batchnorm_backward(dx, dw, db, NULL, x, m, r, w, 4, 2, 8, 2));
    BAD(pn_batchnorm_backward(dx, dw, db, x, NULL, m, r, w, 4, 2, 8, 2));
    BAD(pn_batchnorm_backward(dx, dw, db, x, x, NULL, r, w, 4, 2, 8, 2));
    BAD(pn_batchnorm_backward(dx, dw, db, x, x, m, NULL, w, 4, 2, 8, 2));
    BAD(pn_batchnorm_backward(dx, dw, db, x, x, m, r, w, 0, 2, 8, 2));
    BAD(pn_batchnorm_backward(dx, dw, db, x, x, m, r, w, 4, -2, 8, 2));
    BAD(pn_batchnorm_backward(dx, dw, db, x, x, m, r, w, 4, 2, 0, 2));
    BAD(pn_batchnorm_backward(dx, dw, db, x, x, m, r, w, 4, 2, 8, 3));
    BAD(pn_batchnorm_backward(dx, dw, db, x, x, m, r, w, 4, 2, 1, 1));
#undef BAD
    CHECK(clean, "an invalid call wrote to an output buffer");
    CHECK(msg, "an invalid call left pn_last_error() empty");
    /* the message is readable: names the function and the problem */
    reset();
    pn_groupnorm_forward(o, m, r, x, w, NULL, 2, 4, 8, 3, 1e-5f);
    CHECK(strstr(pn_last_error(), "pn_groupnorm_forward") && strstr(pn_last_error(), "divisible"),
          "message: \"%s\"", pn_last_error());
    /* and the valid baselines of the calls above succeed */
    reset();
    CHECK(pn_groupnorm_forward(o, m, r, x, w, NULL, 2, 4, 8, 2, 1e-5f) == PN_OK, "%s", pn_last_error());
    CHECK(pn_groupnorm_backward(dx, dw, db, x, x, m, r, w, 2, 4, 8, 2) == PN_OK, "%s", pn_last_error());
    CHECK(pn_batchnorm_forward_train(o, m, r, rm, rv, x, w, NULL, 4, 2, 8, 2, 0.1f, 1e-5f) == PN_OK,
          "%s", pn_last_error());
    CHECK(pn_batchnorm_backward(dx, dw, db, x, x, m, r, w, 4, 2, 8, 2) == PN_OK, "%s", pn_last_error());
    for (int i = 0; i < 4; i++) rv[i] = 1;
    CHECK(pn_batchnorm_forward_eval(o, x, rm, rv, w, NULL, 4, 2, 8, 1e-5f) == PN_OK, "%s", pn_last_error());
    CHECK(pn_batchnorm_forward_train(o, m, r, NULL, NULL, x, NULL, NULL, 2, 2, 1, 0, 0.0f, 0.0f) == PN_OK,
          "g*HW = 2 is valid: %s", pn_last_error());
}

int main(void)
{
    RUN(gn_gradients);
    RUN(bn_gradients);
    RUN(norm_relu_gradients);
    RUN(fused_relu_equals_unfused);
    RUN(stats_first_value_outlier);
    RUN(gn_matches_layernorm_and_instancenorm);
    RUN(batch_independence);
    RUN(precision_large_mean);
    RUN(constant_input);
    RUN(bn_running_stats_two_chunks);
    RUN(bn_eval_formula);
    RUN(param_grads_accumulate);
    RUN(determinism);
    RUN(plane_writers_equal_row_passes);
    RUN(invalid_arguments);
    return harness_summary();
}
