/* The power decomposition (src/diag/power.h): exact on hand-computed data,
 * the four terms add up to the power, IN and BN zero the terms they must, the
 * random network is deterministic and behaves as the paper says (LN collapses,
 * BN and LN+PN do not), CSV and gnuplot output, and the CLI if it is built. */
#include <stdint.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "diag/power.h"
#include "harness.h"

/* Naive reference: the definition, term by term, in double. */
static void ref_terms(double t[5], const float *y, int N, int C, int HW)
{
    for (int i = 0; i < 5; i++) t[i] = 0;
    for (int c = 0; c < C; c++) {
        double Em = 0, Es = 0, Em2 = 0, Es2 = 0, P = 0;
        for (int n = 0; n < N; n++) {
            const float *x = y + ((size_t)n * C + c) * HW;
            double m = 0, v = 0;
            for (int i = 0; i < HW; i++) m += x[i];
            m /= HW;
            for (int i = 0; i < HW; i++) {
                v += (x[i] - m) * (x[i] - m);
                P += (double)x[i] * x[i];
            }
            double s = sqrt(v / HW);
            Em += m;
            Es += s;
            Em2 += m * m;
            Es2 += s * s;
        }
        Em /= N;
        Es /= N;
        t[0] += Em * Em;
        t[1] += Em2 / N - Em * Em;
        t[2] += Es * Es;
        t[3] += Es2 / N - Es * Es;
        t[4] += P / ((double)N * HW);
    }
    for (int i = 0; i < 5; i++) t[i] /= C;
}

static double term_sum(const pn_power_decomp *t)
{
    return t->sq_mean + t->var_mean + t->sq_std + t->var_std;
}

/* N=2 inputs, C=2 channels, HW=2 positions:
 *   channel 0: x1 = (1, 3): mu 2, sigma 1;  x2 = (-2, 2): mu 0, sigma 2
 *     (E mu)^2 = 1, Var mu = 1, (E sigma)^2 = 2.25, Var sigma = 0.25, E[y^2] = 18/4 = 4.5
 *   channel 1: (3, 3) twice: mu 3, sigma 0 -> 9, 0, 0, 0, E[y^2] = 9
 * averaged over the channels: 5, 0.5, 1.125, 0.125; power 6.75. */
TEST(test_hand_computed)
{
    const float y[8] = { 1, 3, 3, 3, -2, 2, 3, 3 }; /* (n, c, hw) */
    pn_power_decomp t;
    CHECK(pn_power_terms(&t, y, 2, 2, 2) == PN_OK, "%s", pn_last_error());
    CHECK_NEAR(t.sq_mean, 5.0, 1e-12);
    CHECK_NEAR(t.var_mean, 0.5, 1e-12);
    CHECK_NEAR(t.sq_std, 1.125, 1e-12);
    CHECK_NEAR(t.var_std, 0.125, 1e-12);
    CHECK_NEAR(t.power, 6.75, 1e-12);
    /* one input: nothing varies over x */
    CHECK(pn_power_terms(&t, y, 1, 2, 2) == PN_OK, "%s", pn_last_error());
    CHECK_NEAR(t.sq_mean, (4.0 + 9.0) / 2, 1e-12);
    CHECK_NEAR(t.var_mean, 0.0, 0);
    CHECK_NEAR(t.sq_std, 0.5, 1e-12);
    CHECK_NEAR(t.var_std, 0.0, 0);
    /* one position: sigma = 0, the power is all in the means */
    const float z[4] = { 1, -1, 3, 5 }; /* N=2, C=2, HW=1: channel 0 (1,3), channel 1 (-1,5) */
    CHECK(pn_power_terms(&t, z, 2, 2, 1) == PN_OK, "%s", pn_last_error());
    CHECK_NEAR(t.sq_mean, (4.0 + 4.0) / 2, 1e-12);
    CHECK_NEAR(t.var_mean, (1.0 + 9.0) / 2, 1e-12);
    CHECK_NEAR(t.sq_std + t.var_std, 0.0, 0);
}

/* Random data with channel offsets, per-input scales and shifts: every term is
 * far from 0, matches the naive definition, and the four add up to E[y^2]. */
TEST(test_sum_is_power)
{
    const int shapes[][3] = { { 7, 5, 9 }, { 1, 3, 16 }, { 16, 4, 1 }, { 3, 33, 50 } };
    harness_seed(11);
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        const int N = shapes[s][0], C = shapes[s][1], HW = shapes[s][2];
        float *y = malloc((size_t)N * C * HW * sizeof *y);
        for (int n = 0; n < N; n++)
            for (int c = 0; c < C; c++) {
                double shift = 0.5 * c - 1 + 0.3 * harness_normal(), scale = 0.5 + harness_uniform();
                harness_fill_normal(y + ((size_t)n * C + c) * HW, (size_t)HW, shift, scale);
            }
        pn_power_decomp t;
        double r[5];
        CHECK(pn_power_terms(&t, y, N, C, HW) == PN_OK, "%s", pn_last_error());
        ref_terms(r, y, N, C, HW);
        CHECK_NEAR(t.sq_mean, r[0], 1e-9 * (1 + r[0]));
        CHECK_NEAR(t.var_mean, r[1], 1e-9 * (1 + r[1]));
        CHECK_NEAR(t.sq_std, r[2], 1e-9 * (1 + r[2]));
        CHECK_NEAR(t.var_std, r[3], 1e-9 * (1 + r[3]));
        CHECK_NEAR(t.power, r[4], 1e-12 * r[4]);
        CHECK_NEAR(term_sum(&t), t.power, 1e-12 * t.power);
        CHECK(t.sq_mean > 0.05, "shape %zu: sq_mean %g", s, t.sq_mean);
        if (HW > 1) CHECK(t.sq_std > 0.05, "shape %zu: sq_std %g", s, t.sq_std);
        else CHECK(t.sq_std == 0 && t.var_std == 0, "shape %zu: one position has no spread", s);
        if (N > 1) CHECK(t.var_mean > 0.01, "shape %zu: var_mean %g", s, t.var_mean);
        if (N > 1 && HW > 1) CHECK(t.var_std > 1e-3, "shape %zu: var_std %g", s, t.var_std);
        free(y);
    }
}

/* Large mean, small spread: the two-pass moments keep the small terms. */
TEST(test_large_offset)
{
    const int N = 8, C = 2, HW = 64;
    float y[8 * 2 * 64];
    harness_seed(5);
    harness_fill_normal(y, sizeof y / sizeof *y, 1000.0, 0.01);
    pn_power_decomp t;
    double r[5];
    CHECK(pn_power_terms(&t, y, N, C, HW) == PN_OK, "%s", pn_last_error());
    ref_terms(r, y, N, C, HW);
    CHECK_NEAR(t.sq_std, 1e-4, 2e-5);
    CHECK(t.var_mean >= 0 && t.var_std >= 0, "negative variance term");
    CHECK_NEAR(t.sq_mean, r[0], 1e-9 * r[0]);
    CHECK_NEAR(term_sum(&t), t.power, 1e-12 * t.power);
}

/* InstanceNorm output: every instance has mean 0 and std ~1, so both variance
 * terms vanish (to rounding), even though the input's are large. */
TEST(test_instancenorm_zeroes_variances)
{
    const int N = 6, C = 8, HW = 49;
    const size_t n = (size_t)N * C * HW;
    float *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y);
    float mean[6 * 8], rstd[6 * 8];
    harness_seed(3);
    for (int i = 0; i < N * C; i++)
        harness_fill_normal(x + (size_t)i * HW, (size_t)HW, 2 * harness_normal(), 0.5 + 2 * harness_uniform());
    pn_power_decomp tx, ty;
    CHECK(pn_power_terms(&tx, x, N, C, HW) == PN_OK, "%s", pn_last_error());
    CHECK(tx.var_mean > 0.5 && tx.var_std > 0.05, "input: var_mean %g var_std %g", tx.var_mean, tx.var_std);
    CHECK(pn_groupnorm_forward(y, mean, rstd, x, NULL, NULL, N, C, HW, C, 1e-5f) == PN_OK, "%s",
          pn_last_error());
    CHECK(pn_power_terms(&ty, y, N, C, HW) == PN_OK, "%s", pn_last_error());
    CHECK(ty.var_mean < 1e-12, "IN var_mean %g", ty.var_mean);
    CHECK(ty.var_std < 1e-10, "IN var_std %g", ty.var_std);
    CHECK(ty.sq_mean < 1e-12, "IN sq_mean %g", ty.sq_mean);
    CHECK_NEAR(ty.sq_std, 1.0, 1e-4);
    CHECK_NEAR(term_sum(&ty), ty.power, 1e-6);
    /* LayerNorm of the same input keeps them */
    CHECK(pn_groupnorm_forward(y, mean, rstd, x, NULL, NULL, N, C, HW, 1, 1e-5f) == PN_OK, "%s",
          pn_last_error());
    CHECK(pn_power_terms(&ty, y, N, C, HW) == PN_OK, "%s", pn_last_error());
    CHECK(ty.var_mean > 0.05 && ty.var_std > 0.005, "LN var_mean %g var_std %g", ty.var_mean, ty.var_std);
    free(x);
    free(y);
}

/* BatchNorm (statistics of the whole batch): every channel has mean 0 over
 * the batch, so (E_x mu_c)^2 = 0 (to rounding), and the power is ~1. */
TEST(test_batchnorm_zeroes_sq_mean)
{
    const int N = 5, C = 6, HW = 36;
    const size_t n = (size_t)N * C * HW;
    float *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y);
    float mean[6], rstd[6];
    harness_seed(4);
    for (int i = 0; i < N * C; i++)
        harness_fill_normal(x + (size_t)i * HW, (size_t)HW, 3.0 + (i % C), 1.0 + 0.1 * (i % C));
    pn_power_decomp tx, ty;
    CHECK(pn_power_terms(&tx, x, N, C, HW) == PN_OK, "%s", pn_last_error());
    CHECK(tx.sq_mean > 5, "input sq_mean %g", tx.sq_mean);
    CHECK(pn_batchnorm_forward_train(y, mean, rstd, NULL, NULL, x, NULL, NULL, N, C, HW, N, 0.1f,
                                     1e-5f) == PN_OK, "%s", pn_last_error());
    CHECK(pn_power_terms(&ty, y, N, C, HW) == PN_OK, "%s", pn_last_error());
    CHECK(ty.sq_mean < 1e-12, "BN sq_mean %g", ty.sq_mean);
    CHECK_NEAR(ty.power, 1.0, 1e-4);
    CHECK_NEAR(term_sum(&ty), ty.power, 1e-6);
    CHECK(ty.var_mean > 1e-3, "BN var_mean %g", ty.var_mean);
    free(x);
    free(y);
}

TEST(test_invalid_arguments)
{
    float y[4] = { 0 };
    pn_power_decomp t;
    CHECK(pn_power_terms(NULL, y, 1, 1, 4) == PN_ERR_ARG, "NULL out");
    CHECK(pn_power_terms(&t, NULL, 1, 1, 4) == PN_ERR_ARG, "NULL y");
    CHECK(pn_power_terms(&t, y, 0, 1, 4) == PN_ERR_ARG, "N = 0");
    CHECK(pn_power_terms(&t, y, 1, -1, 4) == PN_ERR_ARG, "C < 0");
    CHECK(pn_power_terms(&t, y, 1, 1, 0) == PN_ERR_ARG, "HW = 0");
    CHECK(strlen(pn_last_error()) > 0, "no message");

    pn_power_decomp terms[4];
    pn_power_net_config c = pn_power_net_default();
    c.width = 6;
    c.depth = 2;
    c.image = 4;
    c.batch = 2;
    c.groups = 4; /* 6 channels, 4 groups */
    CHECK(pn_power_random_net(terms, &c, PN_POWER_GN) == PN_ERR_ARG, "GN groups must divide width");
    CHECK(pn_power_random_net(terms, &c, PN_POWER_LN) == PN_OK, "LN ignores groups: %s", pn_last_error());
    CHECK(pn_power_random_net(terms, &c, PN_POWER_NORM_COUNT) == PN_ERR_ARG, "unknown norm");
    CHECK(pn_power_random_net(terms, NULL, PN_POWER_LN) == PN_ERR_ARG, "NULL config");
    c.depth = 0;
    CHECK(pn_power_random_net(terms, &c, PN_POWER_LN) == PN_ERR_ARG, "depth 0");
    c.depth = 2;
    c.eps = -1;
    CHECK(pn_power_random_net(terms, &c, PN_POWER_LN) == PN_ERR_ARG, "negative eps");

    CHECK(pn_power_norm_parse("ln+pn") == PN_POWER_LN_PN, "parse ln+pn");
    CHECK(pn_power_norm_parse("gn") == PN_POWER_GN, "parse gn");
    CHECK(pn_power_norm_parse("LN") == -1 && pn_power_norm_parse(NULL) == -1, "parse unknown");
    for (int k = 0; k < PN_POWER_NORM_COUNT; k++)
        CHECK(pn_power_norm_parse(pn_power_norm_name((pn_power_norm)k)) == k, "round trip %d", k);
}

static pn_power_net_config small_net(int depth)
{
    pn_power_net_config c = pn_power_net_default();
    c.width = 16;
    c.depth = depth;
    c.image = 6;
    c.batch = 6;
    c.seed = 1234;
    return c;
}

/* Same seed, same numbers, bit for bit; another seed, other numbers. The
 * input, convolutions and affine are shared by the norms: layer 1 of ln and
 * ln+pn see the same LN of the same convolution. */
TEST(test_net_deterministic)
{
    enum { D = 4 };
    pn_power_net_config c = small_net(D);
    pn_power_decomp a[D], b[D], d[D];
    for (int k = 0; k < PN_POWER_NORM_COUNT; k++) {
        memset(a, 0, sizeof a);
        memset(b, 0xff, sizeof b);
        CHECK(pn_power_random_net(a, &c, (pn_power_norm)k) == PN_OK, "%s", pn_last_error());
        CHECK(pn_power_random_net(b, &c, (pn_power_norm)k) == PN_OK, "%s", pn_last_error());
        CHECK(memcmp(a, b, sizeof a) == 0, "%s differs run to run", pn_power_norm_name((pn_power_norm)k));
        for (int l = 0; l < D; l++)
            CHECK_NEAR(term_sum(&a[l]), a[l].power, 1e-9 * (1 + a[l].power));
    }
    CHECK(pn_power_random_net(a, &c, PN_POWER_LN) == PN_OK, "%s", pn_last_error());
    CHECK(pn_power_random_net(b, &c, PN_POWER_LN_PN) == PN_OK, "%s", pn_last_error());
    c.seed = 1235;
    CHECK(pn_power_random_net(d, &c, PN_POWER_LN) == PN_OK, "%s", pn_last_error());
    CHECK(d[D - 1].sq_mean != a[D - 1].sq_mean, "seed has no effect");
    CHECK(memcmp(&a[0], &b[0], sizeof a[0]) == 0, "layer 1 of ln and ln+pn differ");
    CHECK(a[1].sq_mean != b[1].sq_mean, "PN-Act had no effect on layer 2");
}

/* The paper's observations, with a margin, on a 10-layer network. */
TEST(test_net_paper_behaviour)
{
    enum { D = 10 };
    pn_power_net_config c = small_net(D);
    c.width = 32;
    c.image = 8;
    c.batch = 8;
    pn_power_decomp t[PN_POWER_NORM_COUNT][D];
    for (int k = 0; k < PN_POWER_NORM_COUNT; k++)
        CHECK(pn_power_random_net(t[k], &c, (pn_power_norm)k) == PN_OK, "%s: %s",
              pn_power_norm_name((pn_power_norm)k), pn_last_error());
    const pn_power_decomp *bn = &t[PN_POWER_BN][D - 1], *ln = &t[PN_POWER_LN][D - 1];
    const pn_power_decomp *gn = &t[PN_POWER_GN][D - 1], *in = &t[PN_POWER_IN][D - 1];
    const pn_power_decomp *lnpn = &t[PN_POWER_LN_PN][D - 1], *gnpn = &t[PN_POWER_GN_PN][D - 1];
    printf("  layer %d sq_mean: bn %.3g ln %.3g gn %.3g in %.3g ln+pn %.3g gn+pn %.3g ln+ws %.3g none %.3g\n",
           D, bn->sq_mean, ln->sq_mean, gn->sq_mean, in->sq_mean, lnpn->sq_mean, gnpn->sq_mean,
           t[PN_POWER_LN_WS][D - 1].sq_mean, t[PN_POWER_NONE][D - 1].sq_mean);
    /* BN: no channel-wise mean at any layer; LN and GN: it dominates at the end */
    for (int l = 0; l < D; l++) CHECK(t[PN_POWER_BN][l].sq_mean < 1e-10, "bn layer %d", l + 1);
    CHECK(ln->sq_mean > 0.3 && ln->sq_mean > 1e3 * bn->sq_mean, "ln %g vs bn %g", ln->sq_mean, bn->sq_mean);
    CHECK(gn->sq_mean > 0.3, "gn %g", gn->sq_mean);
    CHECK(t[PN_POWER_LN][D - 1].sq_mean > 5 * t[PN_POWER_LN][0].sq_mean, "ln does not grow with depth");
    /* IN: both variance terms zero at every layer */
    for (int l = 0; l < D; l++)
        CHECK(t[PN_POWER_IN][l].var_mean < 1e-10 && t[PN_POWER_IN][l].var_std < 1e-8,
              "in layer %d: %g %g", l + 1, t[PN_POWER_IN][l].var_mean, t[PN_POWER_IN][l].var_std);
    CHECK(bn->var_mean > 1e-3 && bn->var_std > 1e-3, "bn keeps instance variability");
    /* PN: close to BN, far from LN/GN */
    CHECK(lnpn->sq_mean < 0.05 && lnpn->sq_mean < ln->sq_mean / 10, "ln+pn %g", lnpn->sq_mean);
    CHECK(gnpn->sq_mean < 0.05 && gnpn->sq_mean < gn->sq_mean / 10, "gn+pn %g", gnpn->sq_mean);
    /* every normalized net has power ~1 */
    for (int k = 0; k < PN_POWER_NORM_ALL; k++) CHECK_NEAR(t[k][D - 1].power, 1.0, 1e-3);
}

static char tmpdir[64];

static long file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

static int file_contains(const char *path, const char *needle)
{
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    static char buf[1 << 20];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    return strstr(buf, needle) != NULL;
}

static void make_terms(pn_power_decomp *t, int depth, double base)
{
    for (int l = 0; l < depth; l++) {
        double f = (double)l / depth;
        t[l] = (pn_power_decomp){ base * f, 0.05, (1 - base * f) * 0.9, 0.05 - 0.01 * f, 1.0 };
    }
}

TEST(test_csv)
{
    enum { D = 5 };
    pn_power_decomp a[D], b[D];
    make_terms(a, D, 0.9);
    make_terms(b, D, 0.0);
    const char *names[2] = { "ln", "ln+pn" };
    const pn_power_decomp *terms[2] = { a, b };
    char path[128];
    snprintf(path, sizeof path, "%s/p.csv", tmpdir);
    CHECK(pn_power_write_csv(path, names, terms, 2, D, 1) == PN_OK, "%s", pn_last_error());
    FILE *f = fopen(path, "r");
    CHECK(f != NULL, "no CSV");
    if (!f) return;
    char line[256];
    int rows = 0;
    CHECK(fgets(line, sizeof line, f) && strcmp(line, "norm,layer,sq_mean,var_mean,sq_std,var_std\n") == 0,
          "header '%s'", line);
    while (fgets(line, sizeof line, f)) {
        char norm[16];
        int layer;
        double v[4];
        CHECK(sscanf(line, "%15[^,],%d,%lf,%lf,%lf,%lf", norm, &layer, &v[0], &v[1], &v[2], &v[3]) == 6,
              "row '%s'", line);
        const int k = rows / D, l = rows % D;
        CHECK(k < 2 && strcmp(norm, names[k]) == 0 && layer == l + 1, "row %d: '%s'", rows, line);
        if (k < 2) CHECK_NEAR(v[0], terms[k][l].sq_mean, 1e-8);
        rows++;
    }
    fclose(f);
    CHECK(rows == 2 * D, "rows %d", rows);
    /* one norm: no norm column */
    CHECK(pn_power_write_csv(path, names, terms, 1, D, 0) == PN_OK, "%s", pn_last_error());
    CHECK(file_contains(path, "layer,sq_mean,var_mean,sq_std,var_std\n1,0,0.05,0.9,0.05\n"), "single-norm CSV");
    CHECK(pn_power_write_csv(path, names, terms, 2, D, 0) == PN_ERR_ARG, "two norms need the column");
    snprintf(path, sizeof path, "%s/missing/p.csv", tmpdir);
    CHECK(pn_power_write_csv(path, names, terms, 1, D, 0) == PN_ERR_IO, "unwritable path");
    const char *bad[1] = { "a,b" };
    CHECK(pn_power_write_csv(path, bad, terms, 1, D, 1) == PN_ERR_ARG, "comma in name");
}

TEST(test_plot)
{
    enum { D = 6 };
    pn_power_decomp a[D], b[D];
    make_terms(a, D, 0.9);
    make_terms(b, D, 0.0);
    const char *names[2] = { "gn", "gn+pn" };
    const pn_power_decomp *terms[2] = { a, b };
    char csv[128], prefix[128], png[160], svg[160], gp[160];
    snprintf(csv, sizeof csv, "%s/q.csv", tmpdir);
    snprintf(prefix, sizeof prefix, "%s/it's", tmpdir); /* a quote in the path */
    snprintf(png, sizeof png, "%s.png", prefix);
    snprintf(svg, sizeof svg, "%s.svg", prefix);
    snprintf(gp, sizeof gp, "%s.gp", prefix);
    CHECK(pn_power_write_csv(csv, names, terms, 2, D, 1) == PN_OK, "%s", pn_last_error());

    /* without gnuplot: a clear error, nothing drawn */
    const char *saved = getenv("PROXYNORM_GNUPLOT");
    char *saved_copy = saved ? strdup(saved) : NULL;
    setenv("PROXYNORM_GNUPLOT", "/nonexistent/gnuplot", 1);
    CHECK(!pn_power_have_gnuplot(), "found a missing gnuplot");
    CHECK(pn_power_plot(csv, prefix, names, 2, D, 1) == PN_ERR_IO, "plot without gnuplot");
    CHECK(strstr(pn_last_error(), "gnuplot not found") != NULL, "message '%s'", pn_last_error());
    CHECK(file_size(png) < 0, "a PNG without gnuplot");
    if (saved_copy) setenv("PROXYNORM_GNUPLOT", saved_copy, 1);
    else unsetenv("PROXYNORM_GNUPLOT");
    free(saved_copy);

    if (!pn_power_have_gnuplot()) {
        printf("  note: gnuplot is not installed (apt-get install gnuplot-nox); plot output not checked\n");
        return;
    }
    for (int log_scale = 0; log_scale <= 1; log_scale++) {
        CHECK(pn_power_plot_titled(csv, prefix, names, 2, D, 1, "test", log_scale) == PN_OK, "%s",
              pn_last_error());
        FILE *f = fopen(png, "rb");
        unsigned char magic[8] = { 0 };
        CHECK(f && fread(magic, 1, 8, f) == 8 && memcmp(magic, "\x89PNG\r\n\x1a\n", 8) == 0, "not a PNG");
        if (f) fclose(f);
        CHECK(file_size(png) > 5000, "PNG too small (%ld bytes)", file_size(png));
        CHECK(file_contains(svg, "<svg") && file_contains(svg, "gn+pn"), "SVG content");
        CHECK(file_contains(gp, "set multiplot"), "script");
    }
    /* one norm, no norm column */
    CHECK(pn_power_write_csv(csv, names, terms, 1, D, 0) == PN_OK, "%s", pn_last_error());
    CHECK(pn_power_plot(csv, prefix, names, 1, D, 0) == PN_OK, "%s", pn_last_error());
    CHECK(file_size(png) > 5000, "single-norm PNG");
    /* gnuplot failing (a CSV that is not there) is an error, not a crash */
    snprintf(csv, sizeof csv, "%s/none.csv", tmpdir);
    CHECK(pn_power_plot(csv, prefix, names, 1, D, 0) == PN_ERR_IO, "missing CSV");
    CHECK(strstr(pn_last_error(), "none.csv") != NULL, "gnuplot's message: '%s'", pn_last_error());
    CHECK(pn_power_plot(csv, "", names, 1, D, 0) == PN_ERR_ARG, "empty prefix");
    remove(png);
    remove(svg);
    remove(gp);
}

/* The command line, when it is built (PROXYNORM_BIN or build/proxynorm). */
TEST(test_cli)
{
    const char *bin = getenv("PROXYNORM_BIN");
    if (!bin || !*bin) bin = "build/proxynorm";
    if (access(bin, X_OK) != 0) {
        printf("  note: %s not built; command line not checked\n", bin);
        return;
    }
    if (strchr(bin, '\'')) return;
    char csv[128], cmd[512], line[256];
    snprintf(csv, sizeof csv, "%s/cli.csv", tmpdir);
    snprintf(cmd, sizeof cmd,
             "'%s' power --width 8 --depth 3 --image 4 --batch 3 --norm bn,ln+pn --seed 7 --csv '%s' 2>/dev/null",
             bin, csv);
    FILE *p = popen(cmd, "r");
    CHECK(p != NULL, "popen");
    if (!p) return;
    int rows = 0, saw_bn = 0;
    while (fgets(line, sizeof line, p)) {
        rows++;
        if (strncmp(line, "bn ", 3) == 0) saw_bn = 1;
    }
    int st = pclose(p);
    CHECK(st == 0, "exit status %d", st);
    CHECK(saw_bn && rows == 4, "summary table (%d lines)", rows);
    CHECK(file_contains(csv, "norm,layer,sq_mean") && file_contains(csv, "ln+pn,3,"), "CLI CSV");
    remove(csv);
    snprintf(cmd, sizeof cmd, "'%s' power --norm nonsense >/dev/null 2>&1", bin);
    st = system(cmd);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 2, "usage error status %d", st);
}

int main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/pn_test_power_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    RUN(test_hand_computed);
    RUN(test_sum_is_power);
    RUN(test_large_offset);
    RUN(test_instancenorm_zeroes_variances);
    RUN(test_batchnorm_zeroes_sq_mean);
    RUN(test_invalid_arguments);
    RUN(test_net_deterministic);
    RUN(test_net_paper_behaviour);
    RUN(test_csv);
    RUN(test_plot);
    RUN(test_cli);
    rmdir(tmpdir);
    return harness_summary();
}
