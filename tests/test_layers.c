/* Tests for src/kernels/{conv,linear,pool,loss}.c:
 *   - finite-difference gradient checks (random projection loss L = sum(R * out),
 *     central differences, every element of every input and parameter);
 *   - golden vectors from PyTorch (tests/golden/gen_layers.py -> layers_*.txt);
 *   - a naive double-precision reference for larger convolutions (OpenMP paths);
 *   - argument validation, gradient accumulation (+=) and determinism.
 * The golden files are read from tests/golden/ (run from the repository root) or
 * from $PN_GOLDEN_DIR. Set LAYERS_VERBOSE=1 to print the observed errors. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "golden.h"
#include "harness.h"
#include "fdcheck.h"
#include "kernels/common.h"
#include "kernels/layers.h"


/* -------------------------------------------------------- conv cases */
typedef struct {
    const char *name;
    pn_conv_shape s;
    int bias;
} conv_case;

/* Same table as tests/golden/gen_layers.py (the golden test checks the cfg tensors). */
static const conv_case CONV_CASES[] = {
    /*              N Cin H  W Cout KH KW st pad groups      bias */
    { "k3s1p1",   { 2, 3, 5, 6, 4, 3, 3, 1, 1, 1 }, 1 },
    { "k3s1p1nb", { 1, 3, 5, 5, 4, 3, 3, 1, 1, 1 }, 0 },
    { "k3s2p1",   { 2, 3, 7, 5, 5, 3, 3, 2, 1, 1 }, 1 },
    { "k1s1",     { 2, 3, 5, 5, 4, 1, 1, 1, 0, 1 }, 0 },
    { "k1s1b",    { 1, 5, 3, 4, 3, 1, 1, 1, 0, 1 }, 1 },
    { "k1s2",     { 2, 4, 5, 6, 3, 1, 1, 2, 0, 1 }, 1 },
    { "g2k3",     { 2, 4, 5, 5, 6, 3, 3, 1, 1, 2 }, 1 },
    { "g2k1",     { 1, 4, 3, 5, 6, 1, 1, 1, 0, 2 }, 0 },
    { "dwk3s1",   { 2, 3, 5, 6, 3, 3, 3, 1, 1, 3 }, 1 },
    { "dwk3s2",   { 1, 4, 6, 5, 4, 3, 3, 2, 1, 4 }, 0 },
    { "mult2",    { 1, 3, 5, 5, 6, 3, 3, 1, 1, 3 }, 1 },
    { "k32p0",    { 1, 3, 5, 7, 2, 3, 2, 1, 0, 1 }, 0 },
    { "k7s2p3",   { 1, 3, 9, 8, 2, 7, 7, 2, 3, 1 }, 1 },
};
#define N_CONV_CASES (int)(sizeof CONV_CASES / sizeof CONV_CASES[0])

typedef struct {
    pn_conv_shape s;
    size_t nx, nw, ny;
    float *x, *w, *b, *y, *r, *work;
} conv_ctx;

static int conv_ctx_init(conv_ctx *c, const pn_conv_shape *s, int bias)
{
    memset(c, 0, sizeof *c);
    c->s = *s;
    int Ho, Wo;
    if (pn_conv_out_hw(s, &Ho, &Wo) != PN_OK) return -1;
    c->nx = (size_t)s->N * s->Cin * s->H * s->W;
    c->nw = (size_t)s->Cout * (s->Cin / s->groups) * s->KH * s->KW;
    c->ny = (size_t)s->N * s->Cout * Ho * Wo;
    c->x = fnew(c->nx);
    c->w = fnew(c->nw);
    c->b = bias ? fnew((size_t)s->Cout) : NULL;
    c->y = fnew(c->ny);
    c->r = fnew(c->ny);
    c->work = fnew(pn_conv2d_workspace(s));
    return 0;
}
static void conv_ctx_free(conv_ctx *c)
{
    free(c->x); free(c->w); free(c->b); free(c->y); free(c->r); free(c->work);
}
static double conv_loss(void *p)
{
    conv_ctx *c = p;
    if (pn_conv2d_forward(c->y, c->x, c->w, c->b, &c->s, c->work) != PN_OK) return NAN;
    return dot(c->y, c->r, c->ny);
}

/* Convolution is linear in x, w and b, so central differences have no truncation
 * error at any step; the only error is float rounding of the outputs y that the
 * perturbed element touches (up to N*Ho*Wo ~ 60 of them for a weight). Each y is a
 * sum of K <= 147 products of size ~0.5, rounded with typical error
 * ~sqrt(K)*u*sum|terms| ~ 2e-6; over ~60 outputs with random-sign R that gives
 * ~2e-5 in L(+h) - L(-h), divided by 2h = 1 (h = 0.5). atol 1e-4 + rtol 1e-4 is
 * ~5x above that; indexing or accumulation bugs change gradients by O(0.1..1).
 * Observed: max |err| 6.8e-6 (7x7 weights), worst error ratio 0.03. */
TEST(conv_fd)
{
    harness_seed(11);
    for (int ci = 0; ci < N_CONV_CASES; ci++) {
        const conv_case *cc = &CONV_CASES[ci];
        conv_ctx c;
        CHECK(conv_ctx_init(&c, &cc->s, cc->bias) == 0, "%s: init", cc->name);
        harness_fill_normal(c.x, c.nx, 0, 1);
        harness_fill_normal(c.w, c.nw, 0, 0.5);
        if (c.b) harness_fill_normal(c.b, (size_t)cc->s.Cout, 0, 0.5);
        harness_fill_normal(c.r, c.ny, 0, 1);
        float *dx = fnew(c.nx), *dw = fnew(c.nw), *db = fnew((size_t)cc->s.Cout);
        ffill(dx, c.nx, NAN);  /* written, must be overwritten entirely */
        ffill(dw, c.nw, 0.25f); /* accumulated */
        ffill(db, (size_t)cc->s.Cout, -0.5f);
        CHECK(pn_conv2d_forward(c.y, c.x, c.w, c.b, &c.s, c.work) == PN_OK, "%s fwd", cc->name);
        CHECK(pn_conv2d_backward(dx, dw, c.b ? db : NULL, c.r, c.x, c.w, &c.s, c.work) == PN_OK,
              "%s bwd: %s", cc->name, pn_last_error());
        CHECK(all_finite(dx, c.nx), "%s: dinp not fully written", cc->name);
        for (size_t i = 0; i < c.nw; i++) dw[i] -= 0.25f;
        for (int i = 0; i < cc->s.Cout; i++) db[i] += 0.5f;
        char what[64];
        snprintf(what, sizeof what, "conv %s dx", cc->name);
        fd_check(what, c.x, c.nx, dx, 0.5, 1e-4, 1e-4, conv_loss, &c);
        snprintf(what, sizeof what, "conv %s dw", cc->name);
        fd_check(what, c.w, c.nw, dw, 0.5, 1e-4, 1e-4, conv_loss, &c);
        if (c.b) {
            snprintf(what, sizeof what, "conv %s db", cc->name);
            fd_check(what, c.b, (size_t)cc->s.Cout, db, 0.5, 1e-4, 1e-4, conv_loss, &c);
        }
        /* dinp NULL: same parameter gradients, bit for bit */
        float *dw2 = fnew(c.nw), *db2 = fnew((size_t)cc->s.Cout);
        ffill(dw2, c.nw, 0.25f);
        ffill(db2, (size_t)cc->s.Cout, -0.5f);
        CHECK(pn_conv2d_backward(NULL, dw2, c.b ? db2 : NULL, c.r, c.x, c.w, &c.s, c.work) == PN_OK,
              "%s bwd NULL dinp", cc->name);
        for (size_t i = 0; i < c.nw; i++) dw2[i] -= 0.25f;
        for (int i = 0; i < cc->s.Cout; i++) db2[i] += 0.5f;
        CHECK(memcmp(dw, dw2, c.nw * sizeof(float)) == 0, "%s: dweight differs with dinp NULL", cc->name);
        if (c.b)
            CHECK(memcmp(db, db2, (size_t)cc->s.Cout * sizeof(float)) == 0,
                  "%s: dbias differs with dinp NULL", cc->name);
        free(dw2); free(db2);
        free(dx); free(dw); free(db);
        conv_ctx_free(&c);
    }
}

/* -------------------------------------------------------- golden helpers */
static int golden_open(golden_file *g, const char *file)
{
    const char *dir = getenv("PN_GOLDEN_DIR");
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir ? dir : "tests/golden", file);
    int rc = golden_load(g, path);
    CHECK(rc == 0, "cannot load %s", path);
    return rc;
}
static const float *gv(const golden_file *g, const char *pre, const char *name, size_t n)
{
    char full[64];
    snprintf(full, sizeof full, "%s%s", pre, name);
    const golden_tensor *t = golden_get(g, full);
    CHECK(t != NULL, "missing golden tensor %s", full);
    if (!t) return NULL;
    CHECK(t->n == n, "golden tensor %s has %zu values, expected %zu", full, t->n, n);
    return t->n == n ? t->v : NULL;
}
/* got vs golden: |got - ref| <= atol + rtol*|ref| everywhere. */
static void gcmp(const golden_file *g, const char *pre, const char *name, const float *got,
                 size_t n, double atol, double rtol)
{
    const float *ref = gv(g, pre, name, n);
    if (!ref) return;
    double worst = 0;
    for (size_t i = 0; i < n; i++) worst = fmax(worst, fabs((double)got[i] - ref[i]));
    /* atol = rtol = 0: bit-exact (up to the sign of zero) */
    double e = (atol == 0 && rtol == 0) ? (worst == 0 ? 0 : INFINITY)
                                        : harness_max_err(got, ref, n, atol, rtol);
    CHECK(e <= 1.0, "%s%s: max |diff| %.3g, error ratio %.3g (atol %g rtol %g)", pre, name, worst, e,
          atol, rtol);
    if (verbose)
        printf("  golden %s%-8s n %4zu max |diff| %.3g (ratio %.3g)\n", pre, name, n, worst, e);
}

/* Tolerances vs PyTorch (float32 both sides, different summation orders):
 * outputs and gradients are sums of at most 147 (7x7x3) products of values ~1, of
 * magnitude up to ~10; float rounding is ~sqrt(K)*u*sum|terms| ~ 1e-5 at worst.
 * Observed max |diff| 5.7e-6 (7x7 output ~6), error ratio <= 0.1 with
 * atol 1e-5 + rtol 1e-5; any indexing or accumulation error is O(0.1..1). */
#define CONV_ATOL 1e-5
#define CONV_RTOL 1e-5

TEST(conv_golden)
{
    golden_file g;
    if (golden_open(&g, "layers_conv.txt")) return;
    for (int ci = 0; ci < N_CONV_CASES; ci++) {
        const conv_case *cc = &CONV_CASES[ci];
        const pn_conv_shape *s = &cc->s;
        char pre[48];
        snprintf(pre, sizeof pre, "conv.%s.", cc->name);
        const float *cfg = gv(&g, pre, "cfg", 11);
        if (!cfg) continue;
        const int want[11] = { s->N, s->Cin, s->H, s->W, s->Cout, s->KH, s->KW, s->stride, s->pad,
                               s->groups, cc->bias };
        int same = 1;
        for (int i = 0; i < 11; i++) same &= (int)cfg[i] == want[i];
        CHECK(same, "%s: golden cfg differs from the C table (regenerate?)", cc->name);
        if (!same) continue;
        conv_ctx c;
        conv_ctx_init(&c, s, cc->bias);
        const float *x = gv(&g, pre, "x", c.nx), *w = gv(&g, pre, "w", c.nw);
        const float *b = cc->bias ? gv(&g, pre, "b", (size_t)s->Cout) : NULL;
        const float *dout = gv(&g, pre, "dout", c.ny);
        if (x && w && dout && (b || !cc->bias)) {
            float *dx = fnew(c.nx), *dw = fnew(c.nw), *db = fnew((size_t)s->Cout);
            CHECK(pn_conv2d_forward(c.y, x, w, b, s, c.work) == PN_OK, "%s fwd", cc->name);
            CHECK(pn_conv2d_backward(dx, dw, b ? db : NULL, dout, x, w, s, c.work) == PN_OK, "%s bwd",
                  cc->name);
            gcmp(&g, pre, "out", c.y, c.ny, CONV_ATOL, CONV_RTOL);
            gcmp(&g, pre, "dx", dx, c.nx, CONV_ATOL, CONV_RTOL);
            gcmp(&g, pre, "dw", dw, c.nw, CONV_ATOL, CONV_RTOL);
            if (b) gcmp(&g, pre, "db", db, (size_t)s->Cout, CONV_ATOL, CONV_RTOL);
            free(dx); free(dw); free(db);
        }
        conv_ctx_free(&c);
    }
    golden_free(&g);
}

/* ------------------------------------------ larger convs vs a naive reference */
/* Double-precision direct convolution, forward and backward, with the sums of
 * absolute values of the terms (for a rigorous rounding bound). */
static void ref_conv(const pn_conv_shape *s, int Ho, int Wo, const float *x, const float *w,
                     const float *b, const float *dy, double *y, double *ya, double *dx, double *dxa,
                     double *dw, double *dwa)
{
    const int G = s->groups, Cig = s->Cin / G, Cog = s->Cout / G;
    size_t nx = (size_t)s->N * s->Cin * s->H * s->W, nw = (size_t)s->Cout * Cig * s->KH * s->KW;
    memset(dx, 0, nx * sizeof(double)); memset(dxa, 0, nx * sizeof(double));
    memset(dw, 0, nw * sizeof(double)); memset(dwa, 0, nw * sizeof(double));
    for (int n = 0; n < s->N; n++)
        for (int co = 0; co < s->Cout; co++)
            for (int oh = 0; oh < Ho; oh++)
                for (int ow = 0; ow < Wo; ow++) {
                    size_t yi = (((size_t)n * s->Cout + co) * Ho + oh) * Wo + ow;
                    double acc = b ? b[co] : 0, aa = b ? fabs(b[co]) : 0;
                    for (int ci = 0; ci < Cig; ci++) {
                        int c = (co / Cog) * Cig + ci;
                        for (int kh = 0; kh < s->KH; kh++)
                            for (int kw = 0; kw < s->KW; kw++) {
                                int ih = oh * s->stride - s->pad + kh, iw = ow * s->stride - s->pad + kw;
                                if (ih < 0 || ih >= s->H || iw < 0 || iw >= s->W) continue;
                                size_t xi = (((size_t)n * s->Cin + c) * s->H + ih) * s->W + iw;
                                size_t wi = (((size_t)co * Cig + ci) * s->KH + kh) * s->KW + kw;
                                acc += (double)w[wi] * x[xi];
                                aa += fabs((double)w[wi] * x[xi]);
                                dx[xi] += (double)w[wi] * dy[yi];
                                dxa[xi] += fabs((double)w[wi] * dy[yi]);
                                dw[wi] += (double)x[xi] * dy[yi];
                                dwa[wi] += fabs((double)x[xi] * dy[yi]);
                            }
                    }
                    y[yi] = acc;
                    ya[yi] = aa;
                }
}
/* |got - ref| <= 2 * (K+1) * u * sum|terms| + 1e-30 (recursive summation bound
 * gamma_K with a factor 2 for the rounding of the final float conversion). */
static void bound_cmp(const char *what, const float *got, const double *ref, const double *abs_,
                      size_t n, int K)
{
    const double u = 5.96e-8;
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double tol = 2.0 * (K + 1) * u * abs_[i] + 1e-30;
        double r = fabs(got[i] - ref[i]) / tol;
        if (!(r <= 1.0)) {
            CHECK(0, "%s[%zu]: got %.9g, reference %.9g, tol %.3g", what, i, got[i], ref[i], tol);
            return;
        }
        if (r > worst) worst = r;
    }
    if (verbose) printf("  ref %-30s n %6zu worst error / bound %.3g\n", what, n, worst);
}

TEST(conv_reference_large)
{
    static const conv_case cases[] = {
        { "big_k3s1p1", { 3, 16, 12, 11, 24, 3, 3, 1, 1, 1 }, 1 },
        { "big_k3s2p1_g4", { 2, 16, 13, 12, 32, 3, 3, 2, 1, 4 }, 1 },
        { "big_dw_k3s1", { 3, 32, 12, 12, 32, 3, 3, 1, 1, 32 }, 1 },
        { "big_dw_k5s2p2", { 2, 24, 15, 14, 24, 5, 5, 2, 2, 24 }, 0 },
        { "big_k1s1", { 3, 24, 12, 12, 40, 1, 1, 1, 0, 1 }, 0 },
        { "big_k1s2", { 2, 24, 12, 13, 16, 1, 1, 2, 0, 1 }, 1 },
        /* the direct 3x3 kernel (conv_direct.c): 16/32/64 output channels (two vectors
         * per block), 8 (one), pads 0 and 2, pixel counts not a multiple of 6 */
        { "direct_c16_p1", { 3, 16, 9, 7, 16, 3, 3, 1, 1, 1 }, 0 },
        { "direct_c8_p0", { 2, 8, 8, 11, 8, 3, 3, 1, 0, 1 }, 1 },
        { "direct_c32_p2", { 2, 24, 5, 6, 32, 3, 3, 1, 2, 1 }, 0 },
        { "direct_c64_7x7", { 3, 64, 7, 7, 64, 3, 3, 1, 1, 1 }, 1 },
        /* stride 2 (input gradient by phases; by GEMM + col2im when the input channels
         * are not a multiple of 8, as in the stem) */
        { "direct_s2_c16", { 3, 16, 13, 12, 32, 3, 3, 2, 1, 1 }, 1 },
        { "direct_s2_c3_p0", { 2, 3, 8, 9, 8, 3, 3, 2, 0, 1 }, 0 },
        { "direct_s1_c1", { 2, 1, 9, 8, 16, 3, 3, 1, 1, 1 }, 1 },
        /* fewer than 8 input channels at stride 1 (core_px: 8 pixels a vector), rows of
         * 8 + 7 and 24 + 4 outputs */
        { "direct_s1_c3_p2", { 2, 3, 10, 13, 8, 3, 3, 1, 2, 1 }, 0 },
        { "direct_s1_c5_28", { 1, 5, 6, 28, 16, 3, 3, 1, 1, 1 }, 1 },
    };
    /* the direct kernel's bound: Winograd off here (conv_winograd_reference checks it) */
    pn_dconv_winograd_enable(0);
    harness_seed(21);
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const conv_case *cc = &cases[ci];
        const pn_conv_shape *s = &cc->s;
        int Ho, Wo;
        pn_conv_out_hw(s, &Ho, &Wo);
        conv_ctx c;
        conv_ctx_init(&c, s, cc->bias);
        harness_fill_normal(c.x, c.nx, 0, 1);
        harness_fill_normal(c.w, c.nw, 0, 0.2);
        if (c.b) harness_fill_normal(c.b, (size_t)s->Cout, 0, 0.5);
        harness_fill_normal(c.r, c.ny, 0, 1);
        double *y = calloc(c.ny, 8), *ya = calloc(c.ny, 8), *dx = calloc(c.nx, 8),
               *dxa = calloc(c.nx, 8), *dw = calloc(c.nw, 8), *dwa = calloc(c.nw, 8);
        ref_conv(s, Ho, Wo, c.x, c.w, c.b, c.r, y, ya, dx, dxa, dw, dwa);
        float *gx = fnew(c.nx), *gw = fnew(c.nw), *gb = fnew((size_t)s->Cout);
        CHECK(pn_conv2d_forward(c.y, c.x, c.w, c.b, s, c.work) == PN_OK, "%s fwd", cc->name);
        CHECK(pn_conv2d_backward(gx, gw, c.b ? gb : NULL, c.r, c.x, c.w, s, c.work) == PN_OK, "%s bwd",
              cc->name);
        const int Kf = s->Cin / s->groups * s->KH * s->KW;
        char what[64];
        snprintf(what, sizeof what, "%s out", cc->name);
        bound_cmp(what, c.y, y, ya, c.ny, Kf);
        snprintf(what, sizeof what, "%s dx", cc->name);
        bound_cmp(what, gx, dx, dxa, c.nx, (s->Cout / s->groups) * s->KH * s->KW);
        snprintf(what, sizeof what, "%s dw", cc->name);
        bound_cmp(what, gw, dw, dwa, c.nw, s->N * Ho * Wo);
        if (c.b) {
            double *rb = calloc((size_t)s->Cout, 8), *rba = calloc((size_t)s->Cout, 8);
            for (size_t i = 0; i < c.ny; i++) {
                int co = (int)(i / ((size_t)Ho * Wo) % s->Cout);
                rb[co] += c.r[i];
                rba[co] += fabs(c.r[i]);
            }
            snprintf(what, sizeof what, "%s db", cc->name);
            bound_cmp(what, gb, rb, rba, (size_t)s->Cout, s->N * Ho * Wo);
            free(rb); free(rba);
        }
        /* Determinism: a second run gives the same bits. */
        float *y2 = fnew(c.ny), *gx2 = fnew(c.nx), *gw2 = fnew(c.nw), *gb2 = fnew((size_t)s->Cout);
        pn_conv2d_forward(y2, c.x, c.w, c.b, s, c.work);
        pn_conv2d_backward(gx2, gw2, c.b ? gb2 : NULL, c.r, c.x, c.w, s, c.work);
        CHECK(memcmp(y2, c.y, c.ny * 4) == 0 && memcmp(gx2, gx, c.nx * 4) == 0 &&
                  memcmp(gw2, gw, c.nw * 4) == 0 && memcmp(gb2, gb, (size_t)s->Cout * 4) == 0,
              "%s: second run differs", cc->name);
        free(y2); free(gx2); free(gw2); free(gb2);
        free(gx); free(gw); free(gb);
        free(y); free(ya); free(dx); free(dxa); free(dw); free(dwa);
        conv_ctx_free(&c);
    }
    pn_dconv_winograd_enable(1);
}

/* ------------------------------------------ the stride-2 paths vs the reference */
/* The 3x3 stride-2 input gradient by phases and the 1x1 strided kernels (conv_direct.c,
 * pn_conv_stride2_enable): resnet20's planes (28, 14, 7) and odd ones (15, 9), 8 to 64
 * channels, pads 0 to 2 (other phase tap sets), strides 2 and 3 (1x1), 1 and 2 threads,
 * against the double reference with the rounding bound of conv_reference_large; per image
 * the output and dinp do not depend on the thread count (bit for bit), the weight gradient
 * within the bound; dinp NULL leaves the weight gradient as it was with dinp; the old paths
 * (pn_conv_stride2_enable(0)) agree within the bound too. */
TEST(conv_stride2_reference)
{
    static const pn_conv_shape cases[] = {
        { 3, 16, 28, 28, 32, 3, 3, 2, 1, 1 }, { 2, 32, 14, 14, 64, 3, 3, 2, 1, 1 },
        { 3, 64, 7, 7, 8, 3, 3, 2, 1, 1 },    { 2, 8, 15, 15, 16, 3, 3, 2, 1, 1 },
        { 2, 24, 9, 14, 40, 3, 3, 2, 1, 1 },  { 2, 8, 9, 10, 16, 3, 3, 2, 0, 1 },
        { 2, 16, 7, 8, 8, 3, 3, 2, 2, 1 },    { 2, 16, 15, 14, 24, 3, 3, 2, 2, 1 },
        { 3, 16, 28, 28, 32, 1, 1, 2, 0, 1 }, { 2, 32, 14, 14, 64, 1, 1, 2, 0, 1 },
        { 3, 8, 7, 7, 16, 1, 1, 2, 0, 1 },    { 2, 24, 15, 14, 8, 1, 1, 2, 0, 1 },
        { 2, 64, 9, 9, 64, 1, 1, 2, 0, 1 },   { 3, 16, 10, 11, 16, 1, 1, 3, 0, 1 },
        /* tests/test_mpi.c's resnet8 width 4 on 12x12 images: 6x6 -> 3x3 */
        { 4, 8, 6, 6, 16, 3, 3, 2, 1, 1 },    { 4, 8, 6, 6, 16, 1, 1, 2, 0, 1 },
    };
    const int threads0 = pn_get_threads();
    const int have = pn_dconv_ok(&cases[0]); /* built with AVX2 + FMA */
    pn_dconv_winograd_enable(0);
    harness_seed(31);
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        const pn_conv_shape *s = &cases[k];
        int Ho, Wo;
        pn_conv_out_hw(s, &Ho, &Wo);
        const size_t nx = (size_t)s->N * s->Cin * s->H * s->W, nw = (size_t)s->Cout * s->Cin * s->KH * s->KW;
        const size_t ny = (size_t)s->N * s->Cout * Ho * Wo;
        pn_conv_stride2_enable(1);
        if (have)
            CHECK(s->KH == 3 ? pn_dconv_dinp_ok(s) : pn_dconv_pw_ok(s), "case %zu: stride-2 path not taken", k);
        float *x = frandn(nx, 1), *w = frandn(nw, 0.2), *dy = frandn(ny, 1);
        double *y = calloc(ny, 8), *ya = calloc(ny, 8), *dx = calloc(nx, 8), *dxa = calloc(nx, 8),
               *dw = calloc(nw, 8), *dwa = calloc(nw, 8);
        ref_conv(s, Ho, Wo, x, w, NULL, dy, y, ya, dx, dxa, dw, dwa);
        float *gy[3], *gx[3], *gw[3];
        for (int v = 0; v < 3; v++) { /* 1 thread, 2 threads, 2 threads without the new paths */
            pn_set_threads(v == 0 ? 1 : 2);
            pn_conv_stride2_enable(v < 2);
            float *work = fnew(pn_conv2d_workspace(s)), *gwn = fnew(nw);
            gy[v] = fnew(ny); gx[v] = fnew(nx); gw[v] = fnew(nw);
            CHECK(pn_conv2d_forward(gy[v], x, w, NULL, s, work) == PN_OK, "case %zu fwd: %s", k, pn_last_error());
            CHECK(pn_conv2d_backward(gx[v], gw[v], NULL, dy, x, w, s, work) == PN_OK, "case %zu bwd", k);
            CHECK(pn_conv2d_backward(NULL, gwn, NULL, dy, x, w, s, work) == PN_OK, "case %zu bwd NULL", k);
            CHECK(memcmp(gwn, gw[v], nw * 4) == 0, "case %zu/%d: dinp NULL changes dweight", k, v);
            char what[64];
            snprintf(what, sizeof what, "s2 case %zu/%d out", k, v);
            bound_cmp(what, gy[v], y, ya, ny, s->Cin * s->KH * s->KW);
            snprintf(what, sizeof what, "s2 case %zu/%d dx", k, v);
            bound_cmp(what, gx[v], dx, dxa, nx, s->Cout * s->KH * s->KW);
            snprintf(what, sizeof what, "s2 case %zu/%d dw", k, v);
            bound_cmp(what, gw[v], dw, dwa, nw, s->N * Ho * Wo);
            free(work); free(gwn);
        }
        CHECK(memcmp(gy[0], gy[1], ny * 4) == 0 && memcmp(gx[0], gx[1], nx * 4) == 0,
              "case %zu: out or dinp depends on the thread count", k);
        for (int v = 0; v < 3; v++) { free(gy[v]); free(gx[v]); free(gw[v]); }
        free(x); free(w); free(dy);
        free(y); free(ya); free(dx); free(dxa); free(dw); free(dwa);
    }
    pn_conv_stride2_enable(1);
    pn_dconv_winograd_enable(1);
    pn_set_threads(threads0);
}

/* ------------------------------------------ Winograd F(2x2, 3x3) vs the reference */
/* V (Ci, 16) = |B^T| |d| |B| for the 4x4 input patch d of tile (ti, tj) of image n of x
 * (N, Ci, Hi, Wi) padded by pad: the input transform on absolute values (the bounds of
 * the Winograd forward and weight gradient). */
static void abs_itrans(double *V, const float *x, int n, int Ci, int Hi, int Wi, int pad, int ti, int tj)
{
    static const double BT[4][4] = { { 1, 0, 1, 0 }, { 0, 1, 1, 0 }, { 0, 1, 1, 0 }, { 0, 1, 0, 1 } };
    for (int i = 0; i < Ci; i++)
        for (int a = 0; a < 4; a++)
            for (int b = 0; b < 4; b++) {
                double acc = 0;
                for (int r = 0; r < 4; r++)
                    for (int c = 0; c < 4; c++) {
                        const int h = 2 * ti - pad + r, w = 2 * tj - pad + c;
                        if (h < 0 || h >= Hi || w < 0 || w >= Wi) continue;
                        acc += BT[a][r] * BT[b][c] * fabs(x[(((size_t)n * Ci + i) * Hi + h) * Wi + w]);
                    }
                V[(size_t)i * 16 + a * 4 + b] = acc;
            }
}

/* The bound of the Winograd path (conv_direct.c): for each output, Wabs = the same
 * algorithm on absolute values, |A^T| (sum over ci of (|G| |g| |G^T|) .* (|B^T| |d| |B|)) |A|,
 * over the output's 2x2 tile (d the 4x4 input patch, zero outside the input). Each computed
 * value is the exact one of the absolute-value pipeline's terms with relative perturbations
 * (1 + delta)^k, |delta| <= u, along at most k = Ci + 7 roundings: 2 in the input transform
 * (one add per pass), 1 for U (computed in double, rounded once), Ci in the GEMM's
 * multiply-add chain, 4 in the output transform (two adds per pass). So
 * |got - exact| <= gamma_k * Wabs <= 2 (k + 1) u Wabs, the form of bound_cmp with
 * K = Ci + 7 and abs = Wabs. Wabs is larger than the direct kernel's sum |w x| (the
 * transforms add terms that cancel in exact arithmetic), which is why the Winograd path
 * gets its own bound.
 * wabs (N, Co, Ho, Wo) for an input x (N, Ci, Hi, Wi), padding pad, weights g (Co, Ci, 3, 3). */
static void wino_abs(double *wabs, const float *x, const float *g, int N, int Ci, int Co, int Hi, int Wi,
                     int pad)
{
    static const double G[4][3] = { { 1, 0, 0 }, { .5, .5, .5 }, { .5, .5, .5 }, { 0, 0, 1 } };
    static const double AT[2][4] = { { 1, 1, 1, 0 }, { 0, 1, 1, 1 } };
    const int Ho = Hi + 2 * pad - 2, Wo = Wi + 2 * pad - 2, th = (Ho + 1) / 2, tw = (Wo + 1) / 2;
    double *U = malloc((size_t)Co * Ci * 16 * sizeof(double));
    for (int o = 0; o < Co; o++)
        for (int i = 0; i < Ci; i++) {
            const float *gg = g + ((size_t)o * Ci + i) * 9;
            for (int a = 0; a < 4; a++)
                for (int b = 0; b < 4; b++) {
                    double acc = 0;
                    for (int k = 0; k < 3; k++)
                        for (int l = 0; l < 3; l++) acc += G[a][k] * G[b][l] * fabs(gg[k * 3 + l]);
                    U[((size_t)o * Ci + i) * 16 + a * 4 + b] = acc;
                }
        }
    double *V = malloc((size_t)Ci * 16 * sizeof(double));
    for (int n = 0; n < N; n++)
        for (int ti = 0; ti < th; ti++)
            for (int tj = 0; tj < tw; tj++) {
                abs_itrans(V, x, n, Ci, Hi, Wi, pad, ti, tj);
                for (int o = 0; o < Co; o++) {
                    double m[16] = { 0 };
                    for (int i = 0; i < Ci; i++)
                        for (int e = 0; e < 16; e++) m[e] += U[((size_t)o * Ci + i) * 16 + e] * V[(size_t)i * 16 + e];
                    for (int r = 0; r < 2; r++)
                        for (int s = 0; s < 2; s++) {
                            const int oh = 2 * ti + r, ow = 2 * tj + s;
                            if (oh >= Ho || ow >= Wo) continue;
                            double acc = 0;
                            for (int a = 0; a < 4; a++)
                                for (int b = 0; b < 4; b++) acc += AT[r][a] * AT[s][b] * m[a * 4 + b];
                            wabs[(((size_t)n * Co + o) * Ho + oh) * Wo + ow] = acc;
                        }
                }
            }
    free(U);
    free(V);
}

/* The bound of the Winograd weight gradient (conv_direct.c, wino_dw):
 * dW = G^T (sum over tiles of (A dy A^T) .* (B^T d B)) G, dy the tile's 2x2 output gradient
 * (zero past Ho, Wo), d its 4x4 input patch. dwabs = the same on absolute values. Roundings
 * along each term: 2 in the input transform, 2 in dy's, 1 in the product, at most one per
 * tile and one per chunk (at most th chunks an image) in the float sums over a thread's
 * images, then the threads' sums and G^T . G in double and one rounding to float: with
 * K = N th (tw + 1) + 8, |got - exact| <= 2 (K + 1) u dwabs (bound_cmp).
 * dwabs (Co, Ci, 3, 3) for x (N, Ci, Hi, Wi), dy (N, Co, Ho, Wo), padding pad. */
static void wino_dw_abs(double *dwabs, const float *x, const float *dy, int N, int Ci, int Co, int Hi,
                        int Wi, int pad)
{
    static const double G[4][3] = { { 1, 0, 0 }, { .5, .5, .5 }, { .5, .5, .5 }, { 0, 0, 1 } };
    static const double A[4][2] = { { 1, 0 }, { 1, 1 }, { 1, 1 }, { 0, 1 } };
    const int Ho = Hi + 2 * pad - 2, Wo = Wi + 2 * pad - 2, th = (Ho + 1) / 2, tw = (Wo + 1) / 2;
    double *M = calloc((size_t)Co * Ci * 16, sizeof(double));
    double *V = malloc((size_t)Ci * 16 * sizeof(double)), *Y = malloc((size_t)Co * 16 * sizeof(double));
    for (int n = 0; n < N; n++)
        for (int ti = 0; ti < th; ti++)
            for (int tj = 0; tj < tw; tj++) {
                abs_itrans(V, x, n, Ci, Hi, Wi, pad, ti, tj);
                for (int o = 0; o < Co; o++)
                    for (int a = 0; a < 4; a++)
                        for (int b = 0; b < 4; b++) {
                            double acc = 0;
                            for (int r = 0; r < 2; r++)
                                for (int c = 0; c < 2; c++) {
                                    const int h = 2 * ti + r, w = 2 * tj + c;
                                    if (h >= Ho || w >= Wo) continue;
                                    acc += A[a][r] * A[b][c] * fabs(dy[(((size_t)n * Co + o) * Ho + h) * Wo + w]);
                                }
                            Y[(size_t)o * 16 + a * 4 + b] = acc;
                        }
                for (int o = 0; o < Co; o++)
                    for (int i = 0; i < Ci; i++)
                        for (int e = 0; e < 16; e++)
                            M[((size_t)o * Ci + i) * 16 + e] += Y[(size_t)o * 16 + e] * V[(size_t)i * 16 + e];
            }
    for (size_t oi = 0; oi < (size_t)Co * Ci; oi++)
        for (int k = 0; k < 3; k++)
            for (int l = 0; l < 3; l++) {
                double acc = 0;
                for (int a = 0; a < 4; a++)
                    for (int b = 0; b < 4; b++) acc += G[a][k] * G[b][l] * M[oi * 16 + a * 4 + b];
                dwabs[oi * 9 + k * 3 + l] = acc;
            }
    free(M);
    free(V);
    free(Y);
}

/* resnet20's planes (28x28, 14x14, 7x7: odd, partial tiles), pads 0 to 2, 8 to 64 channels
 * (Cout 8 and 24: one vector of output channels in a block), in the forward, in the input
 * gradient (the Winograd convolution of dout by the rotated weights) and in the weight
 * gradient (wino_dw: 8 to 64 input channels, groups of 6 ragged), with 1 and 2 threads
 * (N = 3: images split 2 + 1), each deterministic. Paths: 0 Winograd for all three, 1 the
 * direct kernel, 2 Winograd forward and input gradient with the direct weight gradient. */
TEST(conv_winograd_reference)
{
    static const pn_conv_shape cases[] = {
        { 2, 16, 28, 28, 16, 3, 3, 1, 1, 1 }, { 2, 32, 14, 14, 32, 3, 3, 1, 1, 1 },
        { 2, 64, 7, 7, 64, 3, 3, 1, 1, 1 },   { 2, 8, 7, 9, 24, 3, 3, 1, 1, 1 },
        { 2, 64, 5, 6, 8, 3, 3, 1, 2, 1 },    { 3, 24, 10, 11, 16, 3, 3, 1, 0, 1 },
        { 2, 8, 13, 6, 64, 3, 3, 1, 1, 1 },
        /* the output transform's groups of 8 tiles a row: widths 17 (a last group of 1
         * tile, 1 valid pixel), 13, 31 (15 valid pixels of 16), 16 at pad 2 */
        { 2, 8, 9, 17, 16, 3, 3, 1, 1, 1 },   { 2, 16, 6, 13, 8, 3, 3, 1, 1, 1 },
        { 1, 24, 5, 33, 8, 3, 3, 1, 0, 1 },   { 2, 8, 4, 14, 8, 3, 3, 1, 2, 1 },
        /* the weight gradient at resnet20's shapes, more images; 40 channels: 16 + 16 + 8 */
        { 3, 32, 14, 14, 32, 3, 3, 1, 1, 1 }, { 3, 64, 7, 7, 64, 3, 3, 1, 1, 1 },
        { 3, 32, 7, 7, 64, 3, 3, 1, 1, 1 },   { 3, 40, 9, 8, 40, 3, 3, 1, 1, 1 },
    };
    const double u = 5.96e-8;
    const int threads0 = pn_get_threads();
    harness_seed(33);
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        const pn_conv_shape *s = &cases[k];
        pn_dconv_winograd_enable(2); /* also below 32 channels */
        if (!pn_dconv_wino_ok(s)) { /* a build without AVX2 + FMA */
            CHECK(!pn_dconv_ok(s), "case %zu: direct kernel but no Winograd", k);
            continue;
        }
        CHECK(pn_dconv_wino_dw_ok(s), "case %zu: no Winograd weight gradient by default", k);
        int Ho, Wo;
        pn_conv_out_hw(s, &Ho, &Wo);
        const size_t nx = (size_t)s->N * s->Cin * s->H * s->W, nw = (size_t)s->Cout * s->Cin * 9,
                     ny = (size_t)s->N * s->Cout * Ho * Wo;
        float *x = fnew(nx), *w = fnew(nw), *dy = fnew(ny), *wr = fnew(nw);
        harness_fill_normal(x, nx, 0, 1);
        harness_fill_normal(w, nw, 0, 0.2);
        harness_fill_normal(dy, ny, 0, 1);
        /* wr (Cin, Cout, 3, 3): the weights of the input gradient's convolution */
        for (int co = 0; co < s->Cout; co++)
            for (int ci = 0; ci < s->Cin; ci++)
                for (int t = 0; t < 9; t++)
                    wr[((size_t)ci * s->Cout + co) * 9 + t] = w[((size_t)co * s->Cin + ci) * 9 + 8 - t];
        double *y = calloc(ny, 8), *ya = calloc(ny, 8), *dx = calloc(nx, 8), *dxa = calloc(nx, 8),
               *dw = calloc(nw, 8), *dwa = calloc(nw, 8), *yw = calloc(ny, 8), *dxw = calloc(nx, 8),
               *dww = calloc(nw, 8);
        ref_conv(s, Ho, Wo, x, w, NULL, dy, y, ya, dx, dxa, dw, dwa);
        wino_abs(yw, x, w, s->N, s->Cin, s->Cout, s->H, s->W, s->pad);
        wino_abs(dxw, dy, wr, s->N, s->Cout, s->Cin, Ho, Wo, 2 - s->pad);
        wino_dw_abs(dww, x, dy, s->N, s->Cin, s->Cout, s->H, s->W, s->pad);
        const int Kdw = s->N * ((Ho + 1) / 2) * ((Wo + 1) / 2 + 1) + 8;
        /* [path][threads] */
        float *gy[3][2], *gx[3][2], *gw[3][2];
        for (int p = 0; p < 3; p++)
            for (int t = 0; t < 2; t++) {
                pn_dconv_winograd_enable(p == 1 ? 0 : 2);
                pn_dconv_winograd_dw_enable(p == 0);
                pn_set_threads(t + 1);
                float *work = fnew(pn_conv2d_workspace(s)), *gw2 = fnew(nw);
                gy[p][t] = fnew(ny);
                gx[p][t] = fnew(nx);
                gw[p][t] = fnew(nw);
                CHECK(pn_conv2d_forward(gy[p][t], x, w, NULL, s, work) == PN_OK, "case %zu fwd", k);
                CHECK(pn_conv2d_backward(gx[p][t], gw[p][t], NULL, dy, x, w, s, work) == PN_OK, "case %zu bwd",
                      k);
                /* a second call (the workspace as the first left it) gives the same bits */
                CHECK(pn_conv2d_backward(NULL, gw2, NULL, dy, x, w, s, work) == PN_OK, "case %zu bwd 2", k);
                CHECK(memcmp(gw2, gw[p][t], nw * 4) == 0, "case %zu path %d threads %d: dw not deterministic",
                      k, p, t + 1);
                free(work);
                free(gw2);
            }
        pn_dconv_winograd_enable(1);
        pn_dconv_winograd_dw_enable(1);
        pn_set_threads(threads0);
        char what[64];
        snprintf(what, sizeof what, "wino %d,%d,%d,%d,%d p%d out", s->N, s->Cin, s->H, s->W, s->Cout, s->pad);
        bound_cmp(what, gy[0][0], y, yw, ny, s->Cin + 7);
        snprintf(what, sizeof what, "wino %d,%d,%d,%d,%d p%d dx", s->N, s->Cin, s->H, s->W, s->Cout, s->pad);
        bound_cmp(what, gx[0][0], dx, dxw, nx, s->Cout + 7);
        for (int t = 0; t < 2; t++) {
            snprintf(what, sizeof what, "wino %d,%d,%d,%d,%d p%d dw t%d", s->N, s->Cin, s->H, s->W, s->Cout,
                     s->pad, t + 1);
            bound_cmp(what, gw[0][t], dw, dww, nw, Kdw);
            snprintf(what, sizeof what, "direct %d,%d,%d,%d,%d p%d dw t%d", s->N, s->Cin, s->H, s->W, s->Cout,
                     s->pad, t + 1);
            bound_cmp(what, gw[2][t], dw, dwa, nw, s->N * Ho * Wo);
        }
        /* Winograd vs the direct kernel: within the sum of the two bounds; the paths differ
         * (some outputs must differ in their last bits, else the switch did nothing) */
        double worst = 0;
        size_t ndiff = 0, ndiffw = 0;
        for (size_t i = 0; i < ny; i++) {
            const double tol = 2.0 * (s->Cin + 8) * u * (yw[i] + ya[i]);
            const double e = fabs((double)gy[0][0][i] - gy[1][0][i]) / tol;
            ndiff += gy[0][0][i] != gy[1][0][i];
            if (!(e <= worst)) worst = e;
        }
        for (size_t i = 0; i < nx; i++) {
            const double tol = 2.0 * (s->Cout + 8) * u * (dxw[i] + dxa[i]);
            const double e = fabs((double)gx[0][0][i] - gx[1][0][i]) / tol;
            ndiff += gx[0][0][i] != gx[1][0][i];
            if (!(e <= worst)) worst = e;
        }
        for (size_t i = 0; i < nw; i++) {
            const double tol = 2.0 * (Kdw + 1) * u * dww[i] + 2.0 * (s->N * Ho * Wo + 1) * u * dwa[i];
            const double e = fabs((double)gw[0][0][i] - gw[1][0][i]) / tol;
            ndiffw += gw[0][0][i] != gw[1][0][i];
            if (!(e <= worst)) worst = e;
        }
        CHECK(worst <= 1.0, "case %zu: Winograd vs direct: worst error / bound %.3g", k, worst);
        CHECK(ndiff > 0 && ndiffw > 0, "case %zu: Winograd and direct give the same bits", k);
        if (verbose) printf("  wino vs direct case %zu: worst error / bound %.3g, %zu differ\n", k, worst, ndiff);
        /* threads vs serial: the same bits for out and dx (images are independent; the
         * weight gradient's float sums follow the images' split among the threads); path 2
         * has path 0's out and dx and path 1's dw */
        for (int p = 0; p < 3; p++)
            CHECK(memcmp(gy[p][0], gy[p][1], ny * 4) == 0 && memcmp(gx[p][0], gx[p][1], nx * 4) == 0,
                  "case %zu path %d: 2 threads differ from 1", k, p);
        for (int t = 0; t < 2; t++)
            CHECK(memcmp(gx[2][t], gx[0][t], nx * 4) == 0 && memcmp(gw[2][t], gw[1][t], nw * 4) == 0,
                  "case %zu threads %d: Winograd dx with the direct dw differs", k, t + 1);
        for (int p = 0; p < 3; p++)
            for (int t = 0; t < 2; t++) {
                free(gy[p][t]);
                free(gx[p][t]);
                free(gw[p][t]);
            }
        free(x); free(w); free(dy); free(wr);
        free(y); free(ya); free(dx); free(dxa); free(dw); free(dwa); free(yw); free(dxw); free(dww);
    }
    pn_dconv_winograd_enable(1);
    pn_dconv_winograd_dw_enable(1);
}

/* Images in parallel (2 threads) against one image at a time (1 thread): same values up to
 * float rounding of the dweight sums, dweight accumulated (+=), dinp NULL allowed. N = 5
 * splits 3 + 2 over the threads. */
static void threads_match_serial(const pn_conv_shape s)
{
    const int threads0 = pn_get_threads();
    int Ho, Wo;
    pn_conv_out_hw(&s, &Ho, &Wo);
    const size_t nx = (size_t)s.N * s.Cin * s.H * s.W, nw = (size_t)s.Cout * s.Cin * 9;
    const size_t ny = (size_t)s.N * s.Cout * Ho * Wo;
    harness_seed(55);
    float *x = frandn(nx, 1), *w = frandn(nw, 0.3), *dy = frandn(ny, 1);
    float *y[2], *dx[2], *dw[2], *dwn[2];
    for (int k = 0; k < 2; k++) {
        pn_set_threads(k == 0 ? 1 : 2);
        float *work = fnew(pn_conv2d_workspace(&s));
        y[k] = fnew(ny); dx[k] = fnew(nx); dw[k] = fnew(nw); dwn[k] = fnew(nw);
        for (size_t i = 0; i < nw; i++) dw[k][i] = dwn[k][i] = 1.0f;
        CHECK(pn_conv2d_forward(y[k], x, w, NULL, &s, work) == PN_OK, "fwd %d", k);
        CHECK(pn_conv2d_backward(dx[k], dw[k], NULL, dy, x, w, &s, work) == PN_OK, "bwd %d", k);
        CHECK(pn_conv2d_backward(NULL, dwn[k], NULL, dy, x, w, &s, work) == PN_OK, "bwd NULL dinp %d", k);
        free(work);
    }
    pn_set_threads(threads0);
    CHECK(harness_max_err(y[1], y[0], ny, 1e-5, 1e-5) <= 1.0, "out differs");
    CHECK(harness_max_err(dx[1], dx[0], nx, 1e-5, 1e-5) <= 1.0, "dinp differs");
    CHECK(harness_max_err(dw[1], dw[0], nw, 1e-4, 1e-5) <= 1.0, "dweight differs");
    CHECK(memcmp(dwn[1], dw[1], nw * sizeof(float)) == 0, "dinp NULL changes dweight");
    double d = 0;
    for (size_t i = 0; i < nw; i++) d += fabs(dw[0][i] - 1.0);
    CHECK(d > 1.0, "dweight not accumulated");
    for (int k = 0; k < 2; k++) { free(y[k]); free(dx[k]); free(dw[k]); free(dwn[k]); }
    free(x); free(w); free(dy);
}

TEST(conv_threads_match_serial)
{
    threads_match_serial((pn_conv_shape){ 5, 6, 9, 8, 10, 3, 3, 1, 1, 1 });  /* im2col + sgemm */
    threads_match_serial((pn_conv_shape){ 5, 16, 9, 8, 24, 3, 3, 1, 1, 1 }); /* direct kernel */
    threads_match_serial((pn_conv_shape){ 1, 16, 6, 5, 16, 3, 3, 1, 1, 1 }); /* direct, N < threads */
    threads_match_serial((pn_conv_shape){ 5, 16, 9, 8, 32, 3, 3, 2, 1, 1 }); /* direct, stride 2 */
    /* Winograd (32 channels), 7x7: the weight gradient 4 images a chunk (1 thread: 4 + 1;
     * 2 threads: 2 and 3) */
    threads_match_serial((pn_conv_shape){ 5, 32, 7, 7, 32, 3, 3, 1, 1, 1 });
}

/* pn_dconv_dw_reduce of Winograd sums takes whole groups of 8 output channels in double
 * vectors (input channels 16 at a time), and the channels of a group cut by [co_lo, co_hi)
 * one at a time: the same operations in the same order, so one call over all channels gives
 * the bits of one call per channel (scalar only), and of ranges that cut the groups. */
static void dw_reduce_case(int Cin, int Cout)
{
    pn_conv_shape s = { 1, Cin, 8, 8, Cout, 3, 3, 1, 1, 1 };
    const size_t nw = (size_t)Cout * Cin * 9, stride = pn_dconv_dw_floats(&s) + 8;
    const int nslices = 3;
    float *dwp = frandn(stride * nslices, 1), *a = frandn(nw, 0.5), *b = fnew(nw), *c = fnew(nw), *a0 = fnew(nw);
    memcpy(a0, a, nw * sizeof(float));
    memcpy(b, a, nw * sizeof(float));
    memcpy(c, a, nw * sizeof(float));
    pn_dconv_dw_reduce(a, dwp, stride, nslices, 0, Cout, &s);
    for (int co = 0; co < Cout; co++) pn_dconv_dw_reduce(b, dwp, stride, nslices, co, co + 1, &s);
    pn_dconv_dw_reduce(c, dwp, stride, nslices, 0, 1, &s);
    pn_dconv_dw_reduce(c, dwp, stride, nslices, 1, Cout - 1, &s);
    pn_dconv_dw_reduce(c, dwp, stride, nslices, Cout - 1, Cout, &s);
    CHECK(memcmp(a, b, nw * sizeof(float)) == 0, "%d -> %d: all channels at once != one channel a call", Cin, Cout);
    CHECK(memcmp(a, c, nw * sizeof(float)) == 0, "%d -> %d: all channels at once != ranges cutting the groups",
          Cin, Cout);
    size_t moved = 0; /* the reduce added something to (nearly) every weight */
    for (size_t i = 0; i < nw; i++) moved += a[i] != a0[i];
    CHECK(moved > nw * 9 / 10, "%d -> %d: only %zu of %zu weights changed", Cin, Cout, moved, nw);
    free(a0);
    free(dwp);
    free(a);
    free(b);
    free(c);
}

TEST(conv_dw_reduce_vector_matches_scalar)
{
    pn_dconv_winograd_enable(2); /* Winograd at 16 input channels too */
    pn_conv_shape s = { 1, 16, 8, 8, 24, 3, 3, 1, 1, 1 };
    if (pn_dconv_wino_dw_ok(&s)) { /* (a build without AVX2 + FMA has no Winograd) */
        dw_reduce_case(16, 24);
        dw_reduce_case(40, 16); /* input channels 16 + 16 + 8 */
    }
    pn_dconv_winograd_enable(1);
}

/* The input given by a function (pn_conv_src): the plane callback here applies
 * relu((x - 0.1) * 1.5 + 0.2) row by row into the kernel's padded plane, the reference is
 * the same transform materialized: forward, input and weight gradients bit for bit. */
typedef struct { const float *x; int C, H, W; } src_ctx;

static void src_plane(const void *ctx, int n, int c, float *dst, int ld)
{
    const src_ctx *k = ctx;
    const float *p = k->x + ((size_t)n * k->C + c) * k->H * k->W;
    for (int h = 0; h < k->H; h++)
        for (int w = 0; w < k->W; w++) {
            const float v = (p[h * k->W + w] - 0.1f) * 1.5f + 0.2f;
            dst[(size_t)h * ld + w] = v > 0.0f ? v : 0.0f;
        }
}

static void src_matches_tensor(const pn_conv_shape s, int threads)
{
    const int threads0 = pn_get_threads();
    pn_set_threads(threads);
    int Ho, Wo;
    pn_conv_out_hw(&s, &Ho, &Wo);
    const size_t nx = (size_t)s.N * s.Cin * s.H * s.W, nw = (size_t)s.Cout * s.Cin * 9;
    const size_t ny = (size_t)s.N * s.Cout * Ho * Wo;
    harness_seed(77);
    float *x = frandn(nx, 1), *w = frandn(nw, 0.3), *dy = frandn(ny, 1), *b = frandn((size_t)s.Cout, 1);
    float *xt = fnew(nx), *work = fnew(pn_conv2d_workspace(&s));
    src_ctx k = { x, s.Cin, s.H, s.W };
    for (int n = 0; n < s.N; n++)
        for (int c = 0; c < s.Cin; c++) src_plane(&k, n, c, xt + ((size_t)n * s.Cin + c) * s.H * s.W, s.W);
    const pn_conv_src src = { src_plane, &k };
    CHECK(pn_conv2d_src_ok(&s), "shape %dx%d not taken", s.Cin, s.Cout);
    float *y[2], *dx[2], *dw[2], *db[2];
    for (int v = 0; v < 2; v++) {
        y[v] = fnew(ny); dx[v] = fnew(nx); dw[v] = fnew(nw); db[v] = fnew((size_t)s.Cout);
        int rc = v ? pn_conv2d_forward_src(y[v], &src, w, b, &s, work) : pn_conv2d_forward(y[v], xt, w, b, &s, work);
        CHECK(rc == PN_OK, "forward %d: %s", v, pn_last_error());
        rc = v ? pn_conv2d_backward_src(dx[v], dw[v], db[v], dy, &src, w, &s, work)
               : pn_conv2d_backward(dx[v], dw[v], db[v], dy, xt, w, &s, work);
        CHECK(rc == PN_OK, "backward %d: %s", v, pn_last_error());
    }
    CHECK(memcmp(y[0], y[1], ny * 4) == 0, "src forward differs");
    CHECK(memcmp(dx[0], dx[1], nx * 4) == 0 && memcmp(dw[0], dw[1], nw * 4) == 0 &&
              memcmp(db[0], db[1], (size_t)s.Cout * 4) == 0, "src backward differs");
    double nz = 0;
    for (size_t i = 0; i < nw; i++) nz += fabs(dw[1][i]);
    CHECK(nz > 0, "weight gradient is zero");
    for (int v = 0; v < 2; v++) { free(y[v]); free(dx[v]); free(dw[v]); free(db[v]); }
    free(x); free(w); free(dy); free(b); free(xt); free(work);
    pn_set_threads(threads0);
}

TEST(conv_src_matches_tensor)
{
    if (!pn_conv2d_src_ok(&(pn_conv_shape){ 3, 16, 9, 8, 16, 3, 3, 1, 1, 1 })) {
        printf("no direct kernel in this build (no AVX2 + FMA): skipped\n");
        float z = 0;
        const pn_conv_src src = { src_plane, NULL };
        pn_conv_shape s = { 1, 16, 9, 8, 16, 3, 3, 1, 1, 1 };
        CHECK(pn_conv2d_forward_src(&z, &src, &z, NULL, &s, &z) == PN_ERR_ARG, "refused without the kernel");
        return;
    }
    src_matches_tensor((pn_conv_shape){ 3, 16, 9, 8, 16, 3, 3, 1, 1, 1 }, 1);
    src_matches_tensor((pn_conv_shape){ 5, 16, 9, 8, 24, 3, 3, 1, 1, 1 }, 2);
    src_matches_tensor((pn_conv_shape){ 5, 16, 9, 8, 32, 3, 3, 2, 1, 1 }, 2); /* stride 2: dinp by phases */
    src_matches_tensor((pn_conv_shape){ 3, 8, 15, 14, 16, 3, 3, 2, 1, 1 }, 1);
    src_matches_tensor((pn_conv_shape){ 3, 3, 14, 15, 8, 3, 3, 2, 1, 1 }, 2); /* Cin 3: dinp by GEMM + col2im */
    /* Winograd (32 and 64 channels): forward, input and weight gradients */
    src_matches_tensor((pn_conv_shape){ 3, 32, 14, 14, 32, 3, 3, 1, 1, 1 }, 1);
    src_matches_tensor((pn_conv_shape){ 3, 32, 14, 14, 32, 3, 3, 1, 1, 1 }, 2);
    src_matches_tensor((pn_conv_shape){ 5, 64, 7, 7, 64, 3, 3, 1, 1, 1 }, 2);
    /* refused: not a direct shape */
    float z = 0;
    src_ctx k = { &z, 1, 1, 1 };
    const pn_conv_src src = { src_plane, &k };
    pn_conv_shape s = { 1, 16, 9, 8, 16, 1, 1, 1, 0, 1 };
    CHECK(pn_conv2d_forward_src(&z, &src, &z, NULL, &s, &z) == PN_ERR_ARG, "1x1 accepted");
}

TEST(conv_shapes_and_workspace)
{
    /* one thread: one image's column matrix (more threads: a slice per thread) */
    const int threads0 = pn_get_threads();
    pn_set_threads(1);
    pn_conv_shape s = { 2, 3, 32, 32, 6, 3, 3, 2, 1, 1 }; /* 6 outputs: not the direct kernel */
    int Ho = -1, Wo = -1;
    CHECK(pn_conv_out_hw(&s, &Ho, &Wo) == PN_OK && Ho == 16 && Wo == 16, "Ho %d Wo %d", Ho, Wo);
    CHECK(pn_conv2d_workspace(&s) == (size_t)3 * 9 * 16 * 16, "workspace %zu", pn_conv2d_workspace(&s));
    pn_conv_shape s7 = { 1, 3, 9, 8, 2, 7, 7, 2, 3, 1 };
    CHECK(pn_conv_out_hw(&s7, &Ho, &Wo) == PN_OK && Ho == 5 && Wo == 4, "7x7: Ho %d Wo %d", Ho, Wo);
    pn_conv_shape pw = { 4, 16, 8, 8, 32, 1, 1, 1, 0, 1 };
    CHECK(pn_conv2d_workspace(&pw) == 0, "1x1 s1 needs no workspace");
    pn_conv_shape dw = { 4, 16, 8, 8, 16, 3, 3, 1, 1, 16 };
    CHECK(pn_conv2d_workspace(&dw) == 0, "depthwise needs no workspace");
    pn_conv_shape g = { 4, 16, 8, 8, 32, 3, 3, 1, 1, 4 };
    CHECK(pn_conv2d_workspace(&g) == (size_t)16 * 9 * 64, "grouped workspace %zu", pn_conv2d_workspace(&g));
    pn_conv_shape bad = { 4, 16, 8, 8, 30, 3, 3, 1, 1, 4 };
    CHECK(pn_conv2d_workspace(&bad) == 0, "invalid shape -> 0");
    /* direct 3x3: packed weights, then padded input, dout transposed, padded dout and
     * the weight gradient */
    pn_conv_shape d = { 4, 16, 8, 8, 32, 3, 3, 1, 1, 1 };
    /* (a build without AVX2 + FMA has no direct kernel: im2col + sgemm's workspace);
     * 16 input channels: no Winograd by default, so first with it forced */
    pn_dconv_winograd_enable(2);
    CHECK(!pn_dconv_ok(&d) ? pn_conv2d_workspace(&d) == (size_t)16 * 32 * 9 + 32 * 9 * 64
          : pn_dconv_wino_ok(&d)
              /* Winograd (2x2 tiles: 4x4 of them, planes of 10x10, one chunk of all 16
               * tiles): U (16 per channel pair), then per thread the weight gradient's
               * Winograd scratch (the input's planes padded, planar and channels last; V
               * and Ydy for chunks of 5 images, 64K floats / (16 x 16 tiles x 48 channels);
               * dout channels last 8x8), the input gradient's (dout's planes padded,
               * planar and channels last; V and M) and the weight gradient (16 per pair) */
              ? pn_conv2d_workspace(&d) == (size_t)16 * 32 * 16 +
                                               (16 * 100 * 2 + 16 * (80 * 16 + 16) + 16 * (80 * 32 + 16) + 64 * 32) +
                                               (32 * 100 * 2 + 16 * (16 * 32 + 16) + 16 * (16 * 16 + 16)) + 32 * 16 * 16
              : pn_conv2d_workspace(&d) == (size_t)16 * 32 * 9 * 2 + 16 * 100 + 64 * 32 + 32 * 100,
          "direct workspace %zu", pn_conv2d_workspace(&d));
    /* Winograd forward and input gradient, the direct weight gradient: the padded input,
     * dout transposed, the input gradient's Winograd scratch and the packed gradient (9 per
     * pair) */
    pn_dconv_winograd_dw_enable(0);
    CHECK(!pn_dconv_wino_ok(&d) ||
              pn_conv2d_workspace(&d) == (size_t)16 * 32 * 16 + 16 * 100 + 64 * 32 +
                                             (32 * 100 * 2 + 16 * (16 * 32 + 16) + 16 * (16 * 16 + 16)) + 32 * 16 * 9,
          "direct dw workspace %zu", pn_conv2d_workspace(&d));
    pn_dconv_winograd_dw_enable(1);
    for (int m = 0; m < 2; m++) { /* off, and the default (16 channels: the direct kernel) */
        pn_dconv_winograd_enable(m);
        CHECK(!pn_dconv_ok(&d) || (!pn_dconv_wino_ok(&d) && pn_conv2d_workspace(&d) ==
                                   (size_t)16 * 32 * 9 * 2 + 16 * 100 + 64 * 32 + 32 * 100),
              "mode %d: direct workspace %zu", m, pn_conv2d_workspace(&d));
    }
    pn_conv_shape d32 = { 4, 32, 8, 8, 32, 3, 3, 1, 1, 1 };
    CHECK(pn_dconv_wino_ok(&d32) == pn_dconv_ok(&d32), "32 channels: Winograd by default");
    CHECK(pn_conv2d_workspace(NULL) == 0, "NULL shape -> 0");
    pn_set_threads(2);
    /* per thread: column matrix + dweight, each rounded up to 16 floats */
    CHECK(pn_conv2d_workspace(&s) == 2 * ((size_t)3 * 9 * 16 * 16 + 6 * 3 * 9 + 14),
          "2 threads: workspace %zu", pn_conv2d_workspace(&s));
    CHECK(pn_conv2d_workspace(&pw) == 2 * (size_t)32 * 16, "2 threads 1x1: %zu", pn_conv2d_workspace(&pw));
    CHECK(pn_conv2d_workspace(&dw) == 0, "2 threads: depthwise needs no workspace");
    pn_set_threads(threads0);
}

/* ------------------------------------------------------------- linear */
typedef struct {
    int N, In, Out;
    float *x, *w, *b, *y, *r;
} lin_ctx;
static double lin_loss(void *p)
{
    lin_ctx *c = p;
    if (pn_linear_forward(c->y, c->x, c->w, c->b, c->N, c->In, c->Out) != PN_OK) return NAN;
    return dot(c->y, c->r, (size_t)c->N * c->Out);
}

/* Linear in x, w, b: same argument as conv_fd (K <= 7 products per output). */
TEST(linear_fd)
{
    const int cfg[][4] = { { 3, 7, 5, 1 }, { 4, 6, 2, 0 }, { 1, 1, 1, 1 } };
    harness_seed(31);
    for (int t = 0; t < 3; t++) {
        lin_ctx c = { cfg[t][0], cfg[t][1], cfg[t][2], NULL, NULL, NULL, NULL, NULL };
        size_t nx = (size_t)c.N * c.In, nw = (size_t)c.Out * c.In, ny = (size_t)c.N * c.Out;
        c.x = frandn(nx, 1);
        c.w = frandn(nw, 0.5);
        c.b = cfg[t][3] ? frandn((size_t)c.Out, 0.5) : NULL;
        c.y = fnew(ny);
        c.r = frandn(ny, 1);
        float *dx = fnew(nx), *dw = fnew(nw), *db = fnew((size_t)c.Out);
        ffill(dx, nx, NAN);
        ffill(dw, nw, 1.0f);
        ffill(db, (size_t)c.Out, 1.0f);
        CHECK(pn_linear_backward(dx, dw, c.b ? db : NULL, c.r, c.x, c.w, c.N, c.In, c.Out) == PN_OK, "bwd");
        CHECK(all_finite(dx, nx), "dinp not written");
        for (size_t i = 0; i < nw; i++) dw[i] -= 1.0f;
        for (int i = 0; i < c.Out; i++) db[i] -= 1.0f;
        fd_check("linear dx", c.x, nx, dx, 0.5, 1e-4, 1e-4, lin_loss, &c);
        fd_check("linear dw", c.w, nw, dw, 0.5, 1e-4, 1e-4, lin_loss, &c);
        if (c.b) fd_check("linear db", c.b, (size_t)c.Out, db, 0.5, 1e-4, 1e-4, lin_loss, &c);
        /* dinp NULL is allowed */
        CHECK(pn_linear_backward(NULL, dw, NULL, c.r, c.x, c.w, c.N, c.In, c.Out) == PN_OK, "NULL dinp");
        free(dx); free(dw); free(db);
        free(c.x); free(c.w); free(c.b); free(c.y); free(c.r);
    }
}

TEST(linear_golden)
{
    golden_file g;
    if (golden_open(&g, "layers_linear.txt")) return;
    const char *names[] = { "b", "nb" };
    for (int t = 0; t < 2; t++) {
        char pre[32];
        snprintf(pre, sizeof pre, "linear.%s.", names[t]);
        const float *cfg = gv(&g, pre, "cfg", 4);
        if (!cfg) continue;
        int N = (int)cfg[0], In = (int)cfg[1], Out = (int)cfg[2], hb = (int)cfg[3];
        size_t nx = (size_t)N * In, nw = (size_t)Out * In, ny = (size_t)N * Out;
        const float *x = gv(&g, pre, "x", nx), *w = gv(&g, pre, "w", nw), *dout = gv(&g, pre, "dout", ny);
        const float *b = hb ? gv(&g, pre, "b", (size_t)Out) : NULL;
        if (!x || !w || !dout || (hb && !b)) continue;
        float *y = fnew(ny), *dx = fnew(nx), *dw = fnew(nw), *db = fnew((size_t)Out);
        CHECK(pn_linear_forward(y, x, w, b, N, In, Out) == PN_OK, "fwd");
        CHECK(pn_linear_backward(dx, dw, b ? db : NULL, dout, x, w, N, In, Out) == PN_OK, "bwd");
        gcmp(&g, pre, "out", y, ny, CONV_ATOL, CONV_RTOL);
        gcmp(&g, pre, "dx", dx, nx, CONV_ATOL, CONV_RTOL);
        gcmp(&g, pre, "dw", dw, nw, CONV_ATOL, CONV_RTOL);
        if (b) gcmp(&g, pre, "db", db, (size_t)Out, CONV_ATOL, CONV_RTOL);
        free(y); free(dx); free(dw); free(db);
    }
    golden_free(&g);
}

/* ------------------------------------------------------------ pooling */
typedef struct {
    int kind; /* 0 max, 1 avg, 2 gap */
    int N, C, H, W, k, stride, pad;
    size_t nx, ny;
    float *x, *y, *r;
    int32_t *am;
} pool_ctx;
static double pool_loss(void *p)
{
    pool_ctx *c = p;
    int st;
    if (c->kind == 0)
        st = pn_maxpool_forward(c->y, c->am, c->x, c->N, c->C, c->H, c->W, c->k, c->stride, c->pad);
    else if (c->kind == 1)
        st = pn_avgpool_forward(c->y, c->x, c->N, c->C, c->H, c->W, c->k, c->stride, c->pad);
    else
        st = pn_gap_forward(c->y, c->x, c->N, c->C, c->H * c->W);
    return st == PN_OK ? dot(c->y, c->r, c->ny) : NAN;
}

/* Max pooling is piecewise linear: inputs are a shuffled grid with spacing >= 0.08,
 * so a step h = 0.01 never changes a window's maximum and the central difference is
 * exact up to float rounding (tolerance as for conv). Average and global average
 * pooling are linear (h = 0.5). */
TEST(pool_fd)
{
    const int cfg[][7] = { { 2, 3, 7, 6, 3, 2, 1 }, { 1, 2, 6, 5, 2, 2, 0 }, { 1, 2, 5, 5, 3, 1, 1 },
                           { 1, 1, 4, 4, 4, 1, 0 } };
    harness_seed(41);
    for (int kind = 0; kind < 3; kind++) {
        for (int t = 0; t < (kind == 2 ? 1 : 4); t++) {
            pool_ctx c = { kind, cfg[t][0], cfg[t][1], cfg[t][2], cfg[t][3], cfg[t][4], cfg[t][5],
                           cfg[t][6], 0, 0, NULL, NULL, NULL, NULL };
            int Ho = (c.H + 2 * c.pad - c.k) / c.stride + 1, Wo = (c.W + 2 * c.pad - c.k) / c.stride + 1;
            c.nx = (size_t)c.N * c.C * c.H * c.W;
            c.ny = kind == 2 ? (size_t)c.N * c.C : (size_t)c.N * c.C * Ho * Wo;
            c.x = fnew(c.nx);
            for (size_t i = 0; i < c.nx; i++) c.x[i] = (float)(0.1 * ((double)i - c.nx / 2.0) + 0.02 * harness_uniform());
            for (size_t i = c.nx - 1; i > 0; i--) { /* shuffle */
                size_t j = (size_t)(harness_uniform() * (i + 1));
                float v = c.x[i]; c.x[i] = c.x[j]; c.x[j] = v;
            }
            c.y = fnew(c.ny);
            c.r = frandn(c.ny, 1);
            c.am = calloc(c.ny, sizeof(int32_t));
            float *dx = fnew(c.nx);
            ffill(dx, c.nx, NAN);
            int st;
            if (kind == 0) {
                pool_loss(&c);
                st = pn_maxpool_backward(dx, c.r, c.am, c.N, c.C, c.H, c.W, c.k, c.stride, c.pad);
            } else if (kind == 1) {
                st = pn_avgpool_backward(dx, c.r, c.N, c.C, c.H, c.W, c.k, c.stride, c.pad);
            } else {
                st = pn_gap_backward(dx, c.r, c.N, c.C, c.H * c.W);
            }
            CHECK(st == PN_OK, "pool %d bwd: %s", kind, pn_last_error());
            CHECK(all_finite(dx, c.nx), "pool %d: dinp not written", kind);
            char what[64];
            snprintf(what, sizeof what, "%s cfg%d dx", kind == 0 ? "maxpool" : kind == 1 ? "avgpool" : "gap", t);
            fd_check(what, c.x, c.nx, dx, kind == 0 ? 0.01 : 0.5, 1e-4, 1e-4, pool_loss, &c);
            free(dx); free(c.x); free(c.y); free(c.r); free(c.am);
        }
    }
}

/* Pooling vs PyTorch: max pooling selects a value (exact: tolerance 0, indices equal);
 * its gradient sums at most k*k upstream values per pixel (3e-7 margin); average
 * pooling sums <= 9 values of ~1 (double here, float in PyTorch): atol 1e-6. */
TEST(pool_golden)
{
    golden_file g;
    if (golden_open(&g, "layers_pool.txt")) return;
    const char *maxn[] = { "k3s2p1", "k2s2p0", "k3s1p1neg", "k3s1p1ties" };
    const char *avgn[] = { "k3s2p1", "k2s2p0", "k3s1p0" };
    for (int kind = 0; kind < 2; kind++) {
        for (int t = 0; t < (kind == 0 ? 4 : 3); t++) {
            char pre[40];
            snprintf(pre, sizeof pre, "%s.%s.", kind == 0 ? "maxpool" : "avgpool", kind == 0 ? maxn[t] : avgn[t]);
            const float *cfg = gv(&g, pre, "cfg", 7);
            if (!cfg) continue;
            int N = (int)cfg[0], C = (int)cfg[1], H = (int)cfg[2], W = (int)cfg[3], k = (int)cfg[4],
                s = (int)cfg[5], p = (int)cfg[6];
            int Ho = (H + 2 * p - k) / s + 1, Wo = (W + 2 * p - k) / s + 1;
            size_t nx = (size_t)N * C * H * W, ny = (size_t)N * C * Ho * Wo;
            const float *x = gv(&g, pre, "x", nx), *dout = gv(&g, pre, "dout", ny);
            if (!x || !dout) continue;
            float *y = fnew(ny), *dx = fnew(nx);
            int32_t *am = calloc(ny, sizeof(int32_t));
            if (kind == 0) {
                CHECK(pn_maxpool_forward(y, am, x, N, C, H, W, k, s, p) == PN_OK, "max fwd");
                CHECK(pn_maxpool_backward(dx, dout, am, N, C, H, W, k, s, p) == PN_OK, "max bwd");
                gcmp(&g, pre, "out", y, ny, 0, 0);
                const float *idx = gv(&g, pre, "idx", ny);
                if (idx) {
                    size_t bad = 0;
                    for (size_t i = 0; i < ny; i++) bad += (float)am[i] != idx[i];
                    CHECK(bad == 0, "%s: %zu argmax indices differ from PyTorch", pre, bad);
                }
                gcmp(&g, pre, "dx", dx, nx, 3e-7, 1e-6);
            } else {
                CHECK(pn_avgpool_forward(y, x, N, C, H, W, k, s, p) == PN_OK, "avg fwd");
                CHECK(pn_avgpool_backward(dx, dout, N, C, H, W, k, s, p) == PN_OK, "avg bwd");
                gcmp(&g, pre, "out", y, ny, 1e-6, 1e-6);
                gcmp(&g, pre, "dx", dx, nx, 1e-6, 1e-6);
            }
            free(y); free(dx); free(am);
        }
    }
    /* global average pooling */
    const float *cfg = gv(&g, "gap.gap.", "cfg", 4);
    if (cfg) {
        int N = (int)cfg[0], C = (int)cfg[1], HW = (int)cfg[2] * (int)cfg[3];
        size_t nx = (size_t)N * C * HW, ny = (size_t)N * C;
        const float *x = gv(&g, "gap.gap.", "x", nx), *dout = gv(&g, "gap.gap.", "dout", ny);
        if (x && dout) {
            float *y = fnew(ny), *dx = fnew(nx);
            CHECK(pn_gap_forward(y, x, N, C, HW) == PN_OK, "gap fwd");
            CHECK(pn_gap_backward(dx, dout, N, C, HW) == PN_OK, "gap bwd");
            gcmp(&g, "gap.gap.", "out", y, ny, 1e-6, 1e-6);
            gcmp(&g, "gap.gap.", "dx", dx, nx, 1e-7, 1e-6);
            free(y); free(dx);
        }
    }
    golden_free(&g);
}

/* Padded positions never win: all-negative input, pad 1 -> every output < 0, and a
 * window with a NaN returns NaN (as PyTorch). */
TEST(maxpool_padding_and_nan)
{
    float x[16], y[16];
    int32_t am[16];
    for (int i = 0; i < 16; i++) x[i] = -1.0f - (float)i;
    CHECK(pn_maxpool_forward(y, am, x, 1, 1, 4, 4, 3, 1, 1) == PN_OK, "fwd");
    for (int i = 0; i < 16; i++) CHECK(y[i] < 0 && x[am[i]] == y[i], "out[%d] = %g", i, y[i]);
    CHECK(y[0] == -1.0f && am[0] == 0, "corner: %g at %d", y[0], am[0]);
    x[5] = NAN;
    CHECK(pn_maxpool_forward(y, am, x, 1, 1, 4, 4, 2, 2, 0) == PN_OK, "fwd nan");
    CHECK(isnan(y[0]) && am[0] == 5 && !isnan(y[1]), "NaN window: %g at %d", y[0], am[0]);
}

/* ---------------------------------------------------------------- xent */
typedef struct {
    int N, K;
    float eps;
    float *x, *p;
    int *lab;
} xent_ctx;
static double xent_loss(void *q)
{
    xent_ctx *c = q;
    double loss;
    if (pn_xent_forward(&loss, NULL, c->p, c->x, c->lab, c->N, c->K, c->eps) != PN_OK) return NAN;
    return loss;
}

/* The loss is computed in double from float logits, so the difference quotient has
 * rounding error ~1e-16/h and truncation error h^2/6 |f'''| <= 1e-7 for h = 1e-3
 * (|f'''| <= 1 for softmax). The analytic gradient is a float (error ~6e-8 * |g|).
 * atol 2e-6 + rtol 1e-5 is >10x above both. */
TEST(xent_fd)
{
    const float eps[] = { 0.0f, 0.1f, 0.3f };
    harness_seed(51);
    for (int t = 0; t < 3; t++) {
        xent_ctx c = { 6, 5, eps[t], NULL, NULL, NULL };
        size_t n = (size_t)c.N * c.K;
        c.x = frandn(n, 2);
        c.p = fnew(n);
        c.lab = calloc((size_t)c.N, sizeof(int));
        for (int i = 0; i < c.N; i++) c.lab[i] = (int)(harness_uniform() * c.K);
        float *d = fnew(n), *d2 = fnew(n);
        xent_loss(&c);
        CHECK(pn_xent_backward(d, c.p, c.lab, c.N, c.K, c.eps, 1.0f) == PN_OK, "bwd");
        char what[32];
        snprintf(what, sizeof what, "xent eps %g", (double)eps[t]);
        fd_check(what, c.x, n, d, 1e-3, 2e-6, 1e-5, xent_loss, &c);
        /* scale multiplies the gradient; each row sums to 0 (probs and target both sum to 1) */
        xent_loss(&c); /* fd_check left probs of a perturbed input */
        CHECK(pn_xent_backward(d2, c.p, c.lab, c.N, c.K, c.eps, 0.25f) == PN_OK, "bwd scale");
        for (size_t i = 0; i < n; i++) CHECK_NEAR(d2[i], 0.25 * d[i], 1e-7);
        for (int i = 0; i < c.N; i++) {
            double s = 0;
            for (int k = 0; k < c.K; k++) s += d[(size_t)i * c.K + k];
            CHECK_NEAR(s, 0.0, 1e-6);
        }
        free(d); free(d2); free(c.x); free(c.p); free(c.lab);
    }
}

/* Loss (sum) and probabilities vs PyTorch's float64 cross_entropy of the same float32
 * logits: our loss is double too, so only the float storage of the golden value
 * (relative 6e-8) remains: rtol 2e-7. Probabilities and gradients are floats: 2e-7 abs. */
TEST(xent_golden)
{
    golden_file g;
    if (golden_open(&g, "layers_xent.txt")) return;
    const char *names[] = { "s0", "s01", "s03big", "s0k1" };
    for (int t = 0; t < 4; t++) {
        char pre[32];
        snprintf(pre, sizeof pre, "xent.%s.", names[t]);
        const float *cfg = gv(&g, pre, "cfg", 3);
        if (!cfg) continue;
        int N = (int)cfg[0], K = (int)cfg[1];
        float eps = cfg[2];
        size_t n = (size_t)N * K;
        const float *x = gv(&g, pre, "logits", n), *lf = gv(&g, pre, "labels", (size_t)N);
        const float *rl = gv(&g, pre, "loss", 1), *rc = gv(&g, pre, "correct", 1);
        if (!x || !lf || !rl || !rc) continue;
        int *lab = calloc((size_t)N, sizeof(int));
        for (int i = 0; i < N; i++) lab[i] = (int)lf[i];
        float *p = fnew(n), *d = fnew(n);
        double loss = -1;
        int correct = -1;
        CHECK(pn_xent_forward(&loss, &correct, p, x, lab, N, K, eps) == PN_OK, "fwd");
        CHECK(pn_xent_backward(d, p, lab, N, K, eps, 1.0f) == PN_OK, "bwd");
        CHECK(fabs(loss - rl[0]) <= 2e-7 * fabs(rl[0]) + 1e-7, "%s loss %.9g vs %.9g", pre, loss, rl[0]);
        CHECK(correct == (int)rc[0], "%s correct %d vs %d", pre, correct, (int)rc[0]);
        if (verbose) printf("  golden %s loss %.9g vs %.9g\n", pre, loss, rl[0]);
        gcmp(&g, pre, "probs", p, n, 2e-7, 0);
        gcmp(&g, pre, "dlogits", d, n, 2e-7, 0);
        free(lab); free(p); free(d);
    }
    golden_free(&g);
}

/* Huge logits do not overflow; the loss of a confident correct prediction is ~0. */
TEST(xent_stable)
{
    float x[3] = { 1000.0f, -1000.0f, 0.0f }, p[3];
    int lab = 0, correct = 0;
    double loss = -1;
    CHECK(pn_xent_forward(&loss, &correct, p, x, &lab, 1, 3, 0.0f) == PN_OK, "fwd");
    CHECK(isfinite(loss) && loss >= 0 && loss < 1e-30 && correct == 1, "loss %g", loss);
    lab = 1;
    CHECK(pn_xent_forward(&loss, &correct, p, x, &lab, 1, 3, 0.0f) == PN_OK, "fwd");
    CHECK_NEAR(loss, 2000.0, 1e-9);
    CHECK(correct == 0 && p[0] == 1.0f && p[1] == 0.0f, "probs %g %g", p[0], p[1]);
}

/* --------------------------------------------------------------- add */
TEST(add)
{
    float a[5] = { 1, 2, 3, 4, 5 }, b[5] = { 10, 20, 30, 40, 50 }, o[5];
    pn_add(o, a, b, 5);
    for (int i = 0; i < 5; i++) CHECK(o[i] == a[i] + b[i], "add %d", i);
    pn_add(a, a, b, 5); /* out aliases a */
    for (int i = 0; i < 5; i++) CHECK(a[i] == o[i], "alias a %d", i);
    pn_add_inplace(b, o, 5);
    for (int i = 0; i < 5; i++) CHECK(b[i] == 10.0f * (i + 1) + o[i], "inplace %d", i);
    size_t n = 100003;
    float *x = frandn(n, 1), *y = frandn(n, 1), *z = fnew(n);
    pn_add(z, x, y, n);
    pn_add_inplace(x, y, n);
    CHECK(memcmp(x, z, n * sizeof(float)) == 0, "large add / add_inplace disagree");
    CHECK(z[n - 1] == x[n - 1] && z[n - 1] != 0.0f, "tail");
    free(x); free(y); free(z);
}

/* ------------------------------------------------------ invalid args */
#define EXPECT_ARG(call)                                                              \
    do {                                                                              \
        pn_clear_error();                                                             \
        int st_ = (call);                                                             \
        CHECK(st_ == PN_ERR_ARG && pn_last_error()[0] != '\0', "%s -> %d", #call, st_); \
    } while (0)

TEST(invalid_args)
{
    float buf[4096];
    float out[4096];
    int32_t am[1024];
    ffill(buf, 4096, 1.0f);
    ffill(out, 4096, 7.0f);
    const pn_conv_shape ok = { 1, 4, 5, 5, 4, 3, 3, 1, 1, 2 };
    pn_conv_shape s;
    int Ho, Wo;
    CHECK(pn_conv2d_forward(out, buf, buf, buf, &ok, buf + 2048) == PN_OK, "valid conv");
    ffill(out, 4096, 7.0f);
    EXPECT_ARG(pn_conv2d_forward(NULL, buf, buf, NULL, &ok, buf));
    EXPECT_ARG(pn_conv2d_forward(out, NULL, buf, NULL, &ok, buf));
    EXPECT_ARG(pn_conv2d_forward(out, buf, NULL, NULL, &ok, buf));
    EXPECT_ARG(pn_conv2d_forward(out, buf, buf, NULL, NULL, buf));
    EXPECT_ARG(pn_conv2d_forward(out, buf, buf, NULL, &ok, NULL)); /* work needed */
    EXPECT_ARG(pn_conv_out_hw(NULL, &Ho, &Wo));
    EXPECT_ARG(pn_conv_out_hw(&ok, NULL, &Wo));
    s = ok; s.N = 0;        EXPECT_ARG(pn_conv2d_forward(out, buf, buf, NULL, &s, buf));
    s = ok; s.Cin = -4;     EXPECT_ARG(pn_conv2d_forward(out, buf, buf, NULL, &s, buf));
    s = ok; s.H = 0;        EXPECT_ARG(pn_conv2d_forward(out, buf, buf, NULL, &s, buf));
    s = ok; s.KW = 0;       EXPECT_ARG(pn_conv2d_forward(out, buf, buf, NULL, &s, buf));
    s = ok; s.stride = 0;   EXPECT_ARG(pn_conv2d_forward(out, buf, buf, NULL, &s, buf));
    s = ok; s.pad = -1;     EXPECT_ARG(pn_conv2d_forward(out, buf, buf, NULL, &s, buf));
    s = ok; s.groups = 0;   EXPECT_ARG(pn_conv2d_forward(out, buf, buf, NULL, &s, buf));
    s = ok; s.groups = 3;   EXPECT_ARG(pn_conv2d_forward(out, buf, buf, NULL, &s, buf)); /* Cin 4 % 3 */
    s = ok; s.Cout = 5;     EXPECT_ARG(pn_conv2d_forward(out, buf, buf, NULL, &s, buf)); /* Cout 5 % 2 */
    s = ok; s.KH = 8;       EXPECT_ARG(pn_conv2d_forward(out, buf, buf, NULL, &s, buf)); /* 8 > 5+2 */
    s = ok; s.KW = 8;       EXPECT_ARG(pn_conv_out_hw(&s, &Ho, &Wo));
    s = ok; s.KH = 7;       CHECK(pn_conv_out_hw(&s, &Ho, &Wo) == PN_OK && Ho == 1 && Wo == 5, "7 = 5+2 is ok");
    EXPECT_ARG(pn_conv2d_backward(buf, NULL, NULL, buf, buf, buf, &ok, buf + 2048));
    EXPECT_ARG(pn_conv2d_backward(buf, out, NULL, NULL, buf, buf, &ok, buf + 2048));
    EXPECT_ARG(pn_conv2d_backward(buf, out, NULL, buf, NULL, buf, &ok, buf + 2048));
    EXPECT_ARG(pn_conv2d_backward(buf, out, NULL, buf, buf, NULL, &ok, buf + 2048));
    EXPECT_ARG(pn_conv2d_backward(buf, out, NULL, buf, buf, buf, &ok, NULL));
    s = ok; s.groups = 3;   EXPECT_ARG(pn_conv2d_backward(buf, out, NULL, buf, buf, buf, &s, buf + 2048));
    for (int i = 0; i < 4096; i++)
        if (out[i] != 7.0f) { CHECK(0, "a failed call wrote out[%d]", i); break; }

    EXPECT_ARG(pn_linear_forward(NULL, buf, buf, NULL, 2, 3, 4));
    EXPECT_ARG(pn_linear_forward(out, NULL, buf, NULL, 2, 3, 4));
    EXPECT_ARG(pn_linear_forward(out, buf, NULL, NULL, 2, 3, 4));
    EXPECT_ARG(pn_linear_forward(out, buf, buf, NULL, 0, 3, 4));
    EXPECT_ARG(pn_linear_forward(out, buf, buf, NULL, 2, -3, 4));
    EXPECT_ARG(pn_linear_forward(out, buf, buf, NULL, 2, 3, 0));
    EXPECT_ARG(pn_linear_backward(out, NULL, NULL, buf, buf, buf, 2, 3, 4));
    EXPECT_ARG(pn_linear_backward(out, out, NULL, NULL, buf, buf, 2, 3, 4));
    EXPECT_ARG(pn_linear_backward(out, out, NULL, buf, buf, buf, 2, 0, 4));

    EXPECT_ARG(pn_maxpool_forward(NULL, am, buf, 1, 1, 4, 4, 2, 2, 0));
    EXPECT_ARG(pn_maxpool_forward(out, NULL, buf, 1, 1, 4, 4, 2, 2, 0));
    EXPECT_ARG(pn_maxpool_forward(out, am, NULL, 1, 1, 4, 4, 2, 2, 0));
    EXPECT_ARG(pn_maxpool_forward(out, am, buf, 0, 1, 4, 4, 2, 2, 0));
    EXPECT_ARG(pn_maxpool_forward(out, am, buf, 1, 1, 4, 4, 0, 2, 0));
    EXPECT_ARG(pn_maxpool_forward(out, am, buf, 1, 1, 4, 4, 2, 0, 0));
    EXPECT_ARG(pn_maxpool_forward(out, am, buf, 1, 1, 4, 4, 3, 2, 2));  /* pad > k/2 */
    EXPECT_ARG(pn_maxpool_forward(out, am, buf, 1, 1, 4, 4, 3, 2, -1));
    EXPECT_ARG(pn_maxpool_forward(out, am, buf, 1, 1, 2, 4, 5, 1, 1));  /* 5 > 2+2 */
    EXPECT_ARG(pn_maxpool_backward(out, buf, NULL, 1, 1, 4, 4, 2, 2, 0));
    EXPECT_ARG(pn_maxpool_backward(out, buf, am, 1, 1, 4, 0, 2, 2, 0));
    EXPECT_ARG(pn_avgpool_forward(out, NULL, 1, 1, 4, 4, 2, 2, 0));
    EXPECT_ARG(pn_avgpool_forward(out, buf, 1, 1, 4, 4, 2, 2, 2));
    EXPECT_ARG(pn_avgpool_forward(out, buf, 1, 1, 4, 1, 3, 1, 0));      /* 3 > 1 */
    EXPECT_ARG(pn_avgpool_backward(NULL, buf, 1, 1, 4, 4, 2, 2, 0));
    EXPECT_ARG(pn_avgpool_backward(out, buf, 1, -1, 4, 4, 2, 2, 0));
    EXPECT_ARG(pn_gap_forward(out, NULL, 1, 1, 4));
    EXPECT_ARG(pn_gap_forward(out, buf, 1, 1, 0));
    EXPECT_ARG(pn_gap_backward(NULL, buf, 1, 1, 4));
    EXPECT_ARG(pn_gap_backward(out, buf, 1, 0, 4));

    int lab[3] = { 0, 1, 2 }, badlab[3] = { 0, 3, 1 }, neglab[3] = { 0, -1, 1 };
    double loss = 123.0;
    EXPECT_ARG(pn_xent_forward(NULL, NULL, out, buf, lab, 3, 3, 0.0f));
    EXPECT_ARG(pn_xent_forward(&loss, NULL, NULL, buf, lab, 3, 3, 0.0f));
    EXPECT_ARG(pn_xent_forward(&loss, NULL, out, NULL, lab, 3, 3, 0.0f));
    EXPECT_ARG(pn_xent_forward(&loss, NULL, out, buf, NULL, 3, 3, 0.0f));
    EXPECT_ARG(pn_xent_forward(&loss, NULL, out, buf, lab, 0, 3, 0.0f));
    EXPECT_ARG(pn_xent_forward(&loss, NULL, out, buf, lab, 3, 0, 0.0f));
    EXPECT_ARG(pn_xent_forward(&loss, NULL, out, buf, badlab, 3, 3, 0.0f));
    EXPECT_ARG(pn_xent_forward(&loss, NULL, out, buf, neglab, 3, 3, 0.0f));
    EXPECT_ARG(pn_xent_forward(&loss, NULL, out, buf, lab, 3, 3, 1.0f));
    EXPECT_ARG(pn_xent_forward(&loss, NULL, out, buf, lab, 3, 3, -0.1f));
    EXPECT_ARG(pn_xent_forward(&loss, NULL, out, buf, lab, 3, 3, NAN));
    EXPECT_ARG(pn_xent_backward(NULL, buf, lab, 3, 3, 0.0f, 1.0f));
    EXPECT_ARG(pn_xent_backward(out, NULL, lab, 3, 3, 0.0f, 1.0f));
    EXPECT_ARG(pn_xent_backward(out, buf, badlab, 3, 3, 0.0f, 1.0f));
    EXPECT_ARG(pn_xent_backward(out, buf, lab, 3, 3, 1.5f, 1.0f));
    CHECK(loss == 123.0, "failed xent wrote the loss");
    for (int i = 0; i < 4096; i++)
        if (out[i] != 7.0f) { CHECK(0, "a failed call wrote out[%d]", i); break; }
}

int main(void)
{
    verbose = getenv("LAYERS_VERBOSE") != NULL;
    RUN(conv_shapes_and_workspace);
    RUN(conv_threads_match_serial);
    RUN(conv_dw_reduce_vector_matches_scalar);
    RUN(conv_src_matches_tensor);
    RUN(conv_fd);
    RUN(conv_golden);
    RUN(conv_reference_large);
    RUN(conv_stride2_reference);
    RUN(conv_winograd_reference);
    RUN(linear_fd);
    RUN(linear_golden);
    RUN(pool_fd);
    RUN(pool_golden);
    RUN(maxpool_padding_and_nan);
    RUN(xent_fd);
    RUN(xent_golden);
    RUN(xent_stable);
    RUN(add);
    RUN(invalid_args);
    return harness_summary();
}
