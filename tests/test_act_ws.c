/* Activations (values against double-precision libm, derivatives exact and by
 * finite differences, the array kernels) and Weight Standardization (forward
 * properties, finite-difference gradient check, accumulation). */
#include "harness.h"
#include "kernels/common.h" /* pn_clear_error */
#include "proxynorm.h"

#include "ref_act.h"

TEST(act_names)
{
    const char *names[] = { "identity", "relu", "silu", "gelu" };
    for (int a = 0; a < N_ACTS; a++) {
        CHECK(strcmp(pn_act_name(ACTS[a]), names[a]) == 0, "name of %d: %s", a,
              pn_act_name(ACTS[a]));
        CHECK(pn_act_parse(names[a]) == (int)ACTS[a], "parse %s", names[a]);
        CHECK(pn_act_parse(pn_act_name(ACTS[a])) == (int)ACTS[a], "round trip %d", a);
    }
    CHECK(pn_act_parse("ReLU") == PN_ACT_RELU, "parse is case-insensitive");
    CHECK(pn_act_parse("tanh") == -1, "unknown name");
    CHECK(pn_act_parse("") == -1, "empty name");
    CHECK(pn_act_parse("relu ") == -1, "trailing space");
    CHECK(pn_act_parse(NULL) == -1, "NULL name");
    CHECK(strcmp(pn_act_name((pn_act)17), "unknown") == 0, "name of an invalid value");
    CHECK(isnan(pn_act_f((pn_act)17, 1.0f)) && isnan(pn_act_df((pn_act)17, 1.0f)),
          "invalid act gives NaN");
}

/* Values against libm in double. The float kernels use branch-free vectorizable
 * approximations (src/kernels/act_impl.h): tolerances are a few float ulps:
 * silu 4e-7 relative; gelu 3e-7 |x| + 1e-6 |gelu| (its Phi has an absolute error
 * below 2e-7, relative below 1.2e-6 for x >= -3 and growing in the far left tail
 * where gelu itself is below 1e-8); derivatives 5e-7 absolute. identity and
 * relu are exact. Measured worst cases are about half of these. */
TEST(act_values_against_libm)
{
    double worst[N_ACTS][2] = { { 0 } };
    for (int k = -200000; k <= 200000; k++) {
        float x = (float)(k * 6e-5); /* [-12, 12] */
        for (int a = 0; a < N_ACTS; a++) {
            pn_act act = ACTS[a];
            double f = ref_f(act, x), df = ref_df(act, x);
            double tf = act == PN_ACT_SILU ? 4e-7 * fabs(f) + 1e-30
                : act == PN_ACT_GELU       ? 3e-7 * fabs(x) + 1e-6 * fabs(f) + 1e-30
                                           : 0;
            double tdf = act == PN_ACT_SILU || act == PN_ACT_GELU ? 5e-7 : 0;
            double ef = fabs(pn_act_f(act, x) - f), edf = fabs(pn_act_df(act, x) - df);
            if (tf > 0 && ef / tf > worst[a][0]) worst[a][0] = ef / tf;
            if (tdf > 0 && edf / tdf > worst[a][1]) worst[a][1] = edf / tdf;
            if (ef > tf || edf > tdf) {
                CHECK(ef <= tf, "%s(%.9g) = %.9g, libm %.9g", pn_act_name(act), x, pn_act_f(act, x),
                      f);
                CHECK(edf <= tdf, "%s'(%.9g) = %.9g, libm %.9g", pn_act_name(act), x,
                      pn_act_df(act, x), df);
                return;
            }
        }
    }
    printf("  worst error / tolerance: silu %.2f, %.2f; gelu %.2f, %.2f\n", worst[2][0],
           worst[2][1], worst[3][0], worst[3][1]);
}

TEST(act_special_values)
{
    CHECK(pn_act_f(PN_ACT_RELU, 0.0f) == 0.0f && pn_act_df(PN_ACT_RELU, 0.0f) == 0.0f, "relu at 0");
    CHECK(pn_act_df(PN_ACT_RELU, -0.0f) == 0.0f, "relu' at -0");
    CHECK(pn_act_df(PN_ACT_RELU, 1e-30f) == 1.0f && pn_act_df(PN_ACT_RELU, -1e-30f) == 0.0f,
          "relu' near 0");
    CHECK(pn_act_f(PN_ACT_RELU, -3.0f) == 0.0f && pn_act_f(PN_ACT_RELU, 2.5f) == 2.5f, "relu");
    CHECK(isnan(pn_act_f(PN_ACT_RELU, NAN)), "relu propagates NaN");
    CHECK_NEAR(pn_act_df(PN_ACT_SILU, 0.0f), 0.5, 1e-7);
    CHECK_NEAR(pn_act_df(PN_ACT_GELU, 0.0f), 0.5, 2e-7);
    CHECK(pn_act_f(PN_ACT_SILU, 0.0f) == 0.0f && pn_act_f(PN_ACT_GELU, 0.0f) == 0.0f, "f(0) = 0");
    /* saturation far outside the approximations' core range: finite and right */
    const float big[] = { 30.0f, 100.0f, 1e4f, 1e30f };
    for (int i = 0; i < 4; i++) {
        for (int a = 2; a < 4; a++) {
            pn_act act = ACTS[a];
            float fp = pn_act_f(act, big[i]), fm = pn_act_f(act, -big[i]);
            float dp = pn_act_df(act, big[i]), dm = pn_act_df(act, -big[i]);
            CHECK(fp == big[i], "%s(%g) = %.9g", pn_act_name(act), big[i], fp);
            CHECK(fabsf(fm) < 1e-10f, "%s(-%g) = %.9g", pn_act_name(act), big[i], fm);
            CHECK(dp == 1.0f, "%s'(%g) = %.9g", pn_act_name(act), big[i], dp);
            CHECK(fabsf(dm) < 1e-10f, "%s'(-%g) = %.9g", pn_act_name(act), big[i], dm);
        }
    }
}

/* pn_act_df against central differences of pn_act_f itself, in float, h = 1e-2:
 * truncation h^2/6 |f'''| <= 2e-5 (|f'''| < 1 for silu and gelu), rounding
 * 2 ulp(f) / (2h) <= 1.2e-7 |f| / 1e-2 < 1e-4 on [-8, 8]. Tolerance 2e-4. ReLU
 * is skipped within h of its kink. */
TEST(act_derivative_finite_difference)
{
    const float h = 1e-2f;
    for (int a = 0; a < N_ACTS; a++)
        for (int k = -800; k <= 800; k++) {
            float x = k * 0.01f + 0.003f, xp = x + h, xm = x - h;
            if (ACTS[a] == PN_ACT_RELU && fabsf(x) <= h) continue;
            double fd = ((double)pn_act_f(ACTS[a], xp) - pn_act_f(ACTS[a], xm)) / ((double)xp - xm);
            double an = pn_act_df(ACTS[a], x);
            if (fabs(an - fd) > 2e-4) {
                CHECK(0, "%s'(%g): analytic %.9g, finite difference %.9g", pn_act_name(ACTS[a]), x,
                      an, fd);
                break;
            }
        }
}

/* The array kernels compute exactly the scalar functions (same inline code);
 * n = 10007 covers several OpenMP blocks, a partial block and the vector tails. */
TEST(act_kernels_match_scalar)
{
    const size_t n = 10007;
    float *x = malloc(n * 4), *y = malloc(n * 4), *g = malloc(n * 4), *dx = malloc(n * 4),
          *z = malloc(n * 4);
    harness_seed(11);
    harness_fill_normal(x, n, 0, 3);
    harness_fill_normal(g, n, 0, 1);
    x[5] = 0.0f;
    for (int a = 0; a < N_ACTS; a++) {
        pn_act act = ACTS[a];
        CHECK(pn_act_forward(y, x, n, act) == PN_OK, "forward");
        CHECK(pn_act_backward(dx, g, x, n, act) == PN_OK, "backward");
        int bad = 0;
        for (size_t i = 0; i < n; i++) {
            bad += fabsf(y[i] - pn_act_f(act, x[i])) > 1e-6f * (fabsf(y[i]) + 1e-30f);
            bad += fabsf(dx[i] - g[i] * pn_act_df(act, x[i])) > 1e-6f * (fabsf(dx[i]) + 1e-30f);
        }
        CHECK(bad == 0, "%s: %d elements differ from the scalar functions", pn_act_name(act), bad);
        /* in place */
        memcpy(z, x, n * 4);
        CHECK(pn_act_forward(z, z, n, act) == PN_OK && memcmp(z, y, n * 4) == 0, "%s in place fwd",
              pn_act_name(act));
        memcpy(z, g, n * 4);
        CHECK(pn_act_backward(z, z, x, n, act) == PN_OK && memcmp(z, dx, n * 4) == 0,
              "%s in place bwd", pn_act_name(act));
    }
    free(x);
    free(y);
    free(g);
    free(dx);
    free(z);
}

#define EXPECT_ARG(call)                                                                           \
    do {                                                                                           \
        pn_clear_error();                                                                          \
        int rc_ = (call);                                                                          \
        CHECK(rc_ == PN_ERR_ARG, "%s returned %d", #call, rc_);                                    \
        CHECK(pn_last_error()[0] != '\0', "%s: no message", #call);                                \
    } while (0)

TEST(act_invalid_arguments)
{
    float x[4] = { 1, 2, 3, 4 }, y[4] = { 0 };
    EXPECT_ARG(pn_act_forward(NULL, x, 4, PN_ACT_RELU));
    EXPECT_ARG(pn_act_forward(y, NULL, 4, PN_ACT_RELU));
    EXPECT_ARG(pn_act_forward(y, x, 0, PN_ACT_RELU));
    EXPECT_ARG(pn_act_forward(y, x, 4, (pn_act)4));
    EXPECT_ARG(pn_act_forward(y, x, 4, (pn_act)-1));
    EXPECT_ARG(pn_act_backward(NULL, x, x, 4, PN_ACT_SILU));
    EXPECT_ARG(pn_act_backward(y, NULL, x, 4, PN_ACT_SILU));
    EXPECT_ARG(pn_act_backward(y, x, NULL, 4, PN_ACT_SILU));
    EXPECT_ARG(pn_act_backward(y, x, x, 0, PN_ACT_SILU));
    EXPECT_ARG(pn_act_backward(y, x, x, 4, (pn_act)9));
    for (int i = 0; i < 4; i++) CHECK(y[i] == 0.0f, "written on error");
}

/* ------------------------------------------------------ Weight Standardization */
/* Each row of w_hat has mean 0 and variance var/(var + eps) (biased var of the
 * row), mean and rstd are the row's statistics; checked in double. */
TEST(ws_forward_properties)
{
    const int O = 5, K = 27;
    const float eps = 1e-4f;
    float w[5 * 27], wh[5 * 27], mean[5], rstd[5];
    harness_seed(21);
    for (int o = 0; o < O; o++) harness_fill_normal(w + o * K, K, 0.3 * (o - 2), 0.05 * (o + 1));
    CHECK(pn_ws_forward(wh, mean, rstd, w, O, K, eps) == PN_OK, "forward");
    for (int o = 0; o < O; o++) {
        double mu = 0, var = 0, hm = 0, hv = 0;
        for (int k = 0; k < K; k++) mu += w[o * K + k];
        mu /= K;
        for (int k = 0; k < K; k++) var += (w[o * K + k] - mu) * (w[o * K + k] - mu);
        var /= K;
        for (int k = 0; k < K; k++) hm += wh[o * K + k];
        hm /= K;
        for (int k = 0; k < K; k++) hv += (wh[o * K + k] - hm) * (wh[o * K + k] - hm);
        hv /= K;
        CHECK_NEAR(mean[o], mu, 1e-7 * (1 + fabs(mu)));
        CHECK_NEAR(rstd[o], 1.0 / sqrt(var + eps), 1e-6 / sqrt(var + eps));
        CHECK_NEAR(hm, 0.0, 1e-6);
        CHECK_NEAR(hv, var / (var + eps), 1e-5);
        CHECK(var / (var + eps) < 0.99 || o > 0, "eps should matter for the narrow row");
    }
    /* in place, and K = 1 (a constant row: all zeros) */
    float w2[5 * 27];
    memcpy(w2, w, sizeof w2);
    CHECK(pn_ws_forward(w2, mean, rstd, w2, O, K, eps) == PN_OK && memcmp(w2, wh, sizeof w2) == 0,
          "in place");
    CHECK(pn_ws_forward(wh, mean, rstd, w, 3, 1, eps) == PN_OK, "K = 1");
    CHECK(wh[0] == 0.0f && wh[1] == 0.0f && wh[2] == 0.0f, "K = 1 gives zeros");
}

/* L = sum r * w_hat. Analytic dw (accumulated onto 0.5) against (a) central
 * differences of the float kernel with h = 1e-2 * row std (truncation ~h^2 rstd^3
 * ~ 1e-4 relative, rounding ~ sqrt(K) 1e-7 / (h rstd) ~ 1e-4 relative):
 * tolerance 2e-3 |fd| + 2e-3 rms(fd); (b) central differences of a double
 * reference with h = 1e-7 * row std: tolerance 2e-5 (|fd| + rms(fd)). */
static double ws_loss_f(const float *w, const float *r, int O, int K, float eps)
{
    float *wh = malloc((size_t)O * K * 4), mean[8], rstd[8];
    pn_ws_forward(wh, mean, rstd, w, O, K, eps);
    double L = 0;
    for (int i = 0; i < O * K; i++) L += (double)r[i] * wh[i];
    free(wh);
    return L;
}

static double ws_loss_d(const double *w, const float *r, int O, int K, double eps)
{
    double L = 0;
    for (int o = 0; o < O; o++) {
        const double *x = w + o * K;
        double mu = 0, var = 0;
        for (int k = 0; k < K; k++) mu += x[k];
        mu /= K;
        for (int k = 0; k < K; k++) var += (x[k] - mu) * (x[k] - mu);
        var /= K;
        for (int k = 0; k < K; k++) L += r[o * K + k] * (x[k] - mu) / sqrt(var + eps);
    }
    return L;
}

TEST(ws_gradcheck)
{
    const int O = 4, K = 9;
    const float eps = 1e-5f;
    float w[36], r[36], wh[36], mean[4], rstd[4], dw[36];
    double wd[36], worst_a = 0, worst_b = 0;
    harness_seed(31);
    harness_fill_normal(w, 36, 0.05, 0.2);
    harness_fill_normal(r, 36, 0, 1);
    for (int i = 0; i < 36; i++) {
        dw[i] = 0.5f;
        wd[i] = w[i];
    }
    CHECK(pn_ws_forward(wh, mean, rstd, w, O, K, eps) == PN_OK, "forward");
    CHECK(pn_ws_backward(dw, r, w, mean, rstd, O, K) == PN_OK, "backward");
    double fa[36], fb[36];
    for (int i = 0; i < 36; i++) {
        float sd = 1.0f / rstd[i / K];
        float v0 = w[i], vp = v0 + 1e-2f * sd, vm = v0 - 1e-2f * sd;
        w[i] = vp;
        double lp = ws_loss_f(w, r, O, K, eps);
        w[i] = vm;
        double lm = ws_loss_f(w, r, O, K, eps);
        w[i] = v0;
        fa[i] = (lp - lm) / ((double)vp - vm);
        double hd = 1e-7 * sd;
        wd[i] = v0 + hd;
        lp = ws_loss_d(wd, r, O, K, eps);
        wd[i] = v0 - hd;
        lm = ws_loss_d(wd, r, O, K, eps);
        wd[i] = v0;
        fb[i] = (lp - lm) / (2 * hd);
    }
    double ra = 0, rb = 0;
    for (int i = 0; i < 36; i++) {
        ra += fa[i] * fa[i];
        rb += fb[i] * fb[i];
    }
    ra = sqrt(ra / 36);
    rb = sqrt(rb / 36);
    for (int i = 0; i < 36; i++) {
        double an = (double)dw[i] - 0.5;
        double ta = 2e-3 * (fabs(fa[i]) + ra), tb = 2e-5 * (fabs(fb[i]) + rb);
        worst_a = fmax(worst_a, fabs(an - fa[i]) / ta);
        worst_b = fmax(worst_b, fabs(an - fb[i]) / tb);
        CHECK(fabs(an - fa[i]) <= ta, "dw[%d] %.9g, kernel finite difference %.9g", i, an, fa[i]);
        CHECK(fabs(an - fb[i]) <= tb, "dw[%d] %.9g, reference finite difference %.9g", i, an,
              fb[i]);
    }
    printf("  worst error / tolerance: kernel fd %.3f, reference fd %.3f\n", worst_a, worst_b);
}

TEST(ws_invalid_arguments)
{
    float w[6] = { 1, 2, 3, 4, 5, 6 }, wh[6] = { 0 }, m[2], r[2];
    EXPECT_ARG(pn_ws_forward(NULL, m, r, w, 2, 3, 1e-5f));
    EXPECT_ARG(pn_ws_forward(wh, NULL, r, w, 2, 3, 1e-5f));
    EXPECT_ARG(pn_ws_forward(wh, m, NULL, w, 2, 3, 1e-5f));
    EXPECT_ARG(pn_ws_forward(wh, m, r, NULL, 2, 3, 1e-5f));
    EXPECT_ARG(pn_ws_forward(wh, m, r, w, 0, 3, 1e-5f));
    EXPECT_ARG(pn_ws_forward(wh, m, r, w, 2, -3, 1e-5f));
    EXPECT_ARG(pn_ws_forward(wh, m, r, w, 2, 3, -1e-5f));
    EXPECT_ARG(pn_ws_forward(wh, m, r, w, 2, 3, NAN));
    for (int i = 0; i < 6; i++) CHECK(wh[i] == 0.0f, "written on error");
    EXPECT_ARG(pn_ws_backward(NULL, w, w, m, r, 2, 3));
    EXPECT_ARG(pn_ws_backward(wh, NULL, w, m, r, 2, 3));
    EXPECT_ARG(pn_ws_backward(wh, w, NULL, m, r, 2, 3));
    EXPECT_ARG(pn_ws_backward(wh, w, w, NULL, r, 2, 3));
    EXPECT_ARG(pn_ws_backward(wh, w, w, m, NULL, 2, 3));
    EXPECT_ARG(pn_ws_backward(wh, w, w, m, r, 2, 0));
    for (int i = 0; i < 6; i++) CHECK(wh[i] == 0.0f, "written on error");
}

int main(void)
{
    RUN(act_names);
    RUN(act_values_against_libm);
    RUN(act_special_values);
    RUN(act_derivative_finite_difference);
    RUN(act_kernels_match_scalar);
    RUN(act_invalid_arguments);
    RUN(ws_forward_properties);
    RUN(ws_gradcheck);
    RUN(ws_invalid_arguments);
    return harness_summary();
}
