/* Tests for src/kernels/se.c (squeeze-and-excitation) and src/kernels/droppath.c
 * (stochastic depth):
 *   - finite-difference gradient checks (L = sum(R * out), central differences,
 *     every element of the input and of every parameter);
 *   - golden vectors from PyTorch (tests/golden/gen_se.py -> se.txt; torchvision's
 *     SqueezeExcitation with SiLU as in EfficientNet, and with ReLU);
 *   - drop path: mask values and rate, determinism of the stream, evaluation = identity;
 *   - argument validation, gradient accumulation (+=), aliasing.
 * Golden files are read from tests/golden/ (run from the repository root) or from
 * $PN_GOLDEN_DIR. SE_VERBOSE=1 prints the observed errors. */
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


/* ------------------------------------------------------------------- SE */
typedef struct {
    int N, C, HW, Cr;
    pn_act act;
    size_t nx, nw;
    float *x, *w1, *b1, *w2, *b2, *y, *r, *s, *h, *rr, *g, *work;
} se_ctx;

static void se_init(se_ctx *c, int N, int C, int HW, int Cr, pn_act act)
{
    memset(c, 0, sizeof *c);
    c->N = N; c->C = C; c->HW = HW; c->Cr = Cr; c->act = act;
    c->nx = (size_t)N * C * HW;
    c->nw = (size_t)Cr * C;
    c->x = fnew(c->nx); c->y = fnew(c->nx); c->r = fnew(c->nx);
    c->w1 = fnew(c->nw); c->w2 = fnew(c->nw);
    c->b1 = fnew((size_t)Cr); c->b2 = fnew((size_t)C);
    c->s = fnew((size_t)N * C); c->g = fnew((size_t)N * C);
    c->h = fnew((size_t)N * Cr); c->rr = fnew((size_t)N * Cr);
    c->work = fnew(pn_se_workspace(N, C, Cr));
}
static void se_free(se_ctx *c)
{
    free(c->x); free(c->y); free(c->r); free(c->w1); free(c->w2); free(c->b1); free(c->b2);
    free(c->s); free(c->g); free(c->h); free(c->rr); free(c->work);
}
static int se_fwd(se_ctx *c)
{
    return pn_se_forward(c->y, c->s, c->h, c->rr, c->g, c->x, c->w1, c->b1, c->w2, c->b2, c->N,
                         c->C, c->HW, c->Cr, c->act);
}
static double se_loss(void *p)
{
    se_ctx *c = p;
    if (se_fwd(c) != PN_OK) return NAN;
    return dot(c->y, c->r, c->nx);
}

/* Gradients of L = sum(R * out) into dx (written) and the parameter gradients
 * (zeroed, then accumulated by the kernel). */
static int se_grads(se_ctx *c, float *dx, float *dw1, float *db1, float *dw2, float *db2)
{
    memset(dw1, 0, c->nw * sizeof(float)); memset(dw2, 0, c->nw * sizeof(float));
    memset(db1, 0, (size_t)c->Cr * sizeof(float)); memset(db2, 0, (size_t)c->C * sizeof(float));
    if (se_fwd(c) != PN_OK) return -1;
    return pn_se_backward(dx, dw1, db1, dw2, db2, c->r, c->x, c->s, c->h, c->rr, c->g, c->w1, c->w2,
                          c->N, c->C, c->HW, c->Cr, c->act, c->work);
}

/* SE is smooth for SiLU, GELU and identity: central differences with h = 1e-2 have a
 * truncation error ~h^2 * L''' / 6 ~ 1e-5 here; float rounding of L (~100 outputs of
 * size ~1, relative error ~1e-7) adds up to ~1e-5 / (2h) = 5e-4, typically far less.
 * A dropped term (the sigmoid's derivative, the GAP's 1/HW, the SiLU derivative, a
 * bias) changes gradients by O(0.1). Observed (SE_VERBOSE=1): max |err| 4.4e-5,
 * worst error ratio 0.08 with atol 5e-4 + rtol 5e-4. */
TEST(se_fd)
{
    static const struct { int N, C, HW, Cr; pn_act act; } cases[] = {
        { 2, 6, 5, 2, PN_ACT_SILU }, { 3, 4, 4, 1, PN_ACT_SILU }, { 2, 5, 1, 3, PN_ACT_SILU },
        { 2, 4, 6, 2, PN_ACT_GELU }, { 1, 3, 7, 2, PN_ACT_IDENTITY },
    };
    harness_seed(5);
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        se_ctx c;
        se_init(&c, cases[k].N, cases[k].C, cases[k].HW, cases[k].Cr, cases[k].act);
        harness_fill_normal(c.x, c.nx, 0, 1.5);
        harness_fill_normal(c.w1, c.nw, 0, 0.7);
        harness_fill_normal(c.w2, c.nw, 0, 0.7);
        harness_fill_normal(c.b1, (size_t)c.Cr, 0, 0.5);
        harness_fill_normal(c.b2, (size_t)c.C, 0, 0.5);
        harness_fill_normal(c.r, c.nx, 0, 1);
        float *dx = fnew(c.nx), *dw1 = fnew(c.nw), *dw2 = fnew(c.nw);
        float *db1 = fnew((size_t)c.Cr), *db2 = fnew((size_t)c.C);
        ffill(dx, c.nx, NAN); /* written: must be overwritten entirely */
        CHECK(se_grads(&c, dx, dw1, db1, dw2, db2) == PN_OK, "case %zu: %s", k, pn_last_error());
        CHECK(all_finite(dx, c.nx), "case %zu: dinp not fully written", k);
        char what[48];
        snprintf(what, sizeof what, "se %zu dx", k);
        fd_check(what, c.x, c.nx, dx, 1e-2, 5e-4, 5e-4, se_loss, &c);
        snprintf(what, sizeof what, "se %zu dw1", k);
        fd_check(what, c.w1, c.nw, dw1, 1e-2, 5e-4, 5e-4, se_loss, &c);
        snprintf(what, sizeof what, "se %zu db1", k);
        fd_check(what, c.b1, (size_t)c.Cr, db1, 1e-2, 5e-4, 5e-4, se_loss, &c);
        snprintf(what, sizeof what, "se %zu dw2", k);
        fd_check(what, c.w2, c.nw, dw2, 1e-2, 5e-4, 5e-4, se_loss, &c);
        snprintf(what, sizeof what, "se %zu db2", k);
        fd_check(what, c.b2, (size_t)c.C, db2, 1e-2, 5e-4, 5e-4, se_loss, &c);
        free(dx); free(dw1); free(dw2); free(db1); free(db2);
        se_free(&c);
    }
}

/* Parameter gradients accumulate (+=); dinp may alias dout (same result). */
TEST(se_accumulate_alias)
{
    harness_seed(6);
    se_ctx c;
    se_init(&c, 2, 5, 6, 2, PN_ACT_SILU);
    harness_fill_normal(c.x, c.nx, 0, 1);
    harness_fill_normal(c.w1, c.nw, 0, 0.5);
    harness_fill_normal(c.w2, c.nw, 0, 0.5);
    harness_fill_normal(c.b1, 2, 0, 0.5);
    harness_fill_normal(c.b2, 5, 0, 0.5);
    harness_fill_normal(c.r, c.nx, 0, 1);
    float *dx = fnew(c.nx), *dw1 = fnew(c.nw), *dw2 = fnew(c.nw), *db1 = fnew(2), *db2 = fnew(5);
    float *dx2 = fnew(c.nx), *ew1 = fnew(c.nw), *ew2 = fnew(c.nw), *eb1 = fnew(2), *eb2 = fnew(5);
    CHECK(se_grads(&c, dx, dw1, db1, dw2, db2) == PN_OK, "grads");
    /* second backward into the same buffers: exactly twice the first (x + x is exact) */
    memcpy(ew1, dw1, c.nw * sizeof(float)); memcpy(ew2, dw2, c.nw * sizeof(float));
    memcpy(eb1, db1, 2 * sizeof(float)); memcpy(eb2, db2, 5 * sizeof(float));
    memcpy(dx2, c.r, c.nx * sizeof(float)); /* dinp aliases dout */
    CHECK(pn_se_backward(dx2, ew1, eb1, ew2, eb2, dx2, c.x, c.s, c.h, c.rr, c.g, c.w1, c.w2, 2, 5, 6,
                         2, PN_ACT_SILU, c.work) == PN_OK, "aliased backward: %s", pn_last_error());
    CHECK(memcmp(dx, dx2, c.nx * sizeof(float)) == 0, "dinp aliasing dout changes the result");
    int ok = 1;
    for (size_t i = 0; i < c.nw; i++) ok &= ew1[i] == 2 * dw1[i] && ew2[i] == 2 * dw2[i];
    for (int i = 0; i < 2; i++) ok &= eb1[i] == 2 * db1[i];
    for (int i = 0; i < 5; i++) ok &= eb2[i] == 2 * db2[i];
    CHECK(ok, "parameter gradients are not accumulated");
    free(dx); free(dw1); free(dw2); free(db1); free(db2);
    free(dx2); free(ew1); free(ew2); free(eb1); free(eb2);
    se_free(&c);
}

static int golden_open(golden_file *g, const char *file)
{
    const char *dir = getenv("PN_GOLDEN_DIR");
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir ? dir : "tests/golden", file);
    int rc = golden_load(g, path);
    CHECK(rc == 0, "cannot load %s (run from the repository root, or set PN_GOLDEN_DIR)", path);
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
static void gcmp(const golden_file *g, const char *pre, const char *name, const float *got,
                 size_t n, double atol, double rtol)
{
    const float *ref = gv(g, pre, name, n);
    if (!ref) return;
    double worst = 0;
    for (size_t i = 0; i < n; i++) worst = fmax(worst, fabs((double)got[i] - ref[i]));
    double e = harness_max_err(got, ref, n, atol, rtol);
    CHECK(e <= 1.0, "%s%s: max |diff| %.3g, error ratio %.3g (atol %g rtol %g)", pre, name, worst, e,
          atol, rtol);
    if (verbose) printf("  golden %s%-5s n %4zu max |diff| %.3g (ratio %.3g)\n", pre, name, n, worst, e);
}

/* Same table as tests/golden/gen_se.py (checked against the stored cfg). */
static const struct { const char *name; int N, C, H, W, Cr; pn_act act; } SE_GOLDEN[] = {
    { "silu", 2, 8, 5, 6, 2, PN_ACT_SILU },
    { "silu1", 3, 6, 3, 3, 1, PN_ACT_SILU },
    { "relu", 2, 5, 4, 4, 3, PN_ACT_RELU },
    { "hw1", 4, 7, 1, 1, 2, PN_ACT_SILU },
};

/* Tolerances vs PyTorch (float32 both sides, different summation orders and
 * exp implementations): values are sums of <= 30 terms of size ~1..5 (the GAP,
 * the dout*x sums of the gate gradient) passed through sigmoid/SiLU whose float
 * evaluations differ by a few ulp; expected differences ~1e-6 relative.
 * atol 1e-5 + rtol 1e-5 is well above that; a wrong term is O(0.1).
 * Observed (SE_VERBOSE=1): max |diff| 9.5e-7, worst error ratio 0.03. */
TEST(se_golden)
{
    golden_file g;
    if (golden_open(&g, "se.txt")) return;
    for (size_t k = 0; k < sizeof SE_GOLDEN / sizeof SE_GOLDEN[0]; k++) {
        const int N = SE_GOLDEN[k].N, C = SE_GOLDEN[k].C, HW = SE_GOLDEN[k].H * SE_GOLDEN[k].W;
        const int Cr = SE_GOLDEN[k].Cr;
        char pre[32];
        snprintf(pre, sizeof pre, "se.%s.", SE_GOLDEN[k].name);
        const float *cfg = gv(&g, pre, "cfg", 6);
        if (!cfg) continue;
        const int want[6] = { N, C, SE_GOLDEN[k].H, SE_GOLDEN[k].W, Cr, (int)SE_GOLDEN[k].act };
        int same = 1;
        for (int i = 0; i < 6; i++) same &= (int)cfg[i] == want[i];
        CHECK(same, "%s: golden cfg differs from the C table (regenerate?)", pre);
        if (!same) continue;
        se_ctx c;
        se_init(&c, N, C, HW, Cr, SE_GOLDEN[k].act);
        const float *x = gv(&g, pre, "x", c.nx), *w1 = gv(&g, pre, "w1", c.nw);
        const float *b1 = gv(&g, pre, "b1", (size_t)Cr), *w2 = gv(&g, pre, "w2", c.nw);
        const float *b2 = gv(&g, pre, "b2", (size_t)C), *dout = gv(&g, pre, "dout", c.nx);
        if (x && w1 && b1 && w2 && b2 && dout) {
            memcpy(c.x, x, c.nx * sizeof(float));
            memcpy(c.w1, w1, c.nw * sizeof(float));
            memcpy(c.w2, w2, c.nw * sizeof(float));
            memcpy(c.b1, b1, (size_t)Cr * sizeof(float));
            memcpy(c.b2, b2, (size_t)C * sizeof(float));
            memcpy(c.r, dout, c.nx * sizeof(float));
            float *dx = fnew(c.nx), *dw1 = fnew(c.nw), *dw2 = fnew(c.nw);
            float *db1 = fnew((size_t)Cr), *db2 = fnew((size_t)C);
            CHECK(se_grads(&c, dx, dw1, db1, dw2, db2) == PN_OK, "%s: %s", pre, pn_last_error());
            gcmp(&g, pre, "out", c.y, c.nx, 1e-5, 1e-5);
            gcmp(&g, pre, "dx", dx, c.nx, 1e-5, 1e-5);
            gcmp(&g, pre, "dw1", dw1, c.nw, 1e-5, 1e-5);
            gcmp(&g, pre, "db1", db1, (size_t)Cr, 1e-5, 1e-5);
            gcmp(&g, pre, "dw2", dw2, c.nw, 1e-5, 1e-5);
            gcmp(&g, pre, "db2", db2, (size_t)C, 1e-5, 1e-5);
            free(dx); free(dw1); free(dw2); free(db1); free(db2);
        }
        se_free(&c);
    }
    golden_free(&g);
}

TEST(se_bad_args)
{
    se_ctx c;
    se_init(&c, 2, 4, 3, 2, PN_ACT_SILU);
    float *d = fnew(c.nx);
    CHECK(pn_se_forward(c.y, c.s, c.h, c.rr, c.g, c.x, c.w1, c.b1, c.w2, c.b2, 2, 4, 3, 2,
                        PN_ACT_SILU) == PN_OK, "valid call fails: %s", pn_last_error());
    CHECK(pn_se_forward(NULL, c.s, c.h, c.rr, c.g, c.x, c.w1, c.b1, c.w2, c.b2, 2, 4, 3, 2,
                        PN_ACT_SILU) == PN_ERR_ARG, "NULL out accepted");
    CHECK(strstr(pn_last_error(), "out") != NULL, "message does not name out: %s", pn_last_error());
    CHECK(pn_se_forward(c.y, c.s, c.h, c.rr, c.g, c.x, c.w1, NULL, c.w2, c.b2, 2, 4, 3, 2,
                        PN_ACT_SILU) == PN_ERR_ARG, "NULL b1 accepted");
    CHECK(pn_se_forward(c.y, c.s, c.h, c.rr, c.g, c.x, c.w1, c.b1, c.w2, c.b2, 2, 4, 3, 0,
                        PN_ACT_SILU) == PN_ERR_ARG, "Cr 0 accepted");
    CHECK(pn_se_forward(c.y, c.s, c.h, c.rr, c.g, c.x, c.w1, c.b1, c.w2, c.b2, 2, -4, 3, 2,
                        PN_ACT_SILU) == PN_ERR_ARG, "C < 0 accepted");
    CHECK(pn_se_forward(c.y, c.s, c.h, c.rr, c.g, c.x, c.w1, c.b1, c.w2, c.b2, 2, 4, 3, 2,
                        (pn_act)7) == PN_ERR_ARG, "unknown activation accepted");
    CHECK(pn_se_forward(c.x, c.s, c.h, c.rr, c.g, c.x, c.w1, c.b1, c.w2, c.b2, 2, 4, 3, 2,
                        PN_ACT_SILU) == PN_ERR_ARG, "out aliasing inp accepted");
    CHECK(pn_se_backward(d, c.w1, c.b1, c.w2, c.b2, c.r, c.x, c.s, c.h, c.rr, c.g, c.w1, c.w2, 2, 4,
                         3, 2, PN_ACT_SILU, NULL) == PN_ERR_ARG, "NULL work accepted");
    CHECK(pn_se_backward(d, NULL, c.b1, c.w2, c.b2, c.r, c.x, c.s, c.h, c.rr, c.g, c.w1, c.w2, 2, 4,
                         3, 2, PN_ACT_SILU, c.work) == PN_ERR_ARG, "NULL dW1 accepted");
    CHECK(pn_se_backward(d, c.w1, c.b1, c.w2, c.b2, c.r, c.x, c.s, c.h, c.rr, c.g, c.w1, c.w2, 0, 4,
                         3, 2, PN_ACT_SILU, c.work) == PN_ERR_ARG, "N 0 accepted");
    CHECK(pn_se_workspace(0, 4, 2) == 0 && pn_se_workspace(2, 4, 2) == 12, "workspace size");
    free(d);
    se_free(&c);
}

/* ------------------------------------------------------------ drop path */
TEST(droppath_mask)
{
    float m[4096];
    pn_rng r = pn_droppath_stream(42, 7, 3);
    /* evaluation and p = 0: all ones, the stream is not needed */
    CHECK(pn_droppath_mask(m, 16, 0.3f, 0, NULL) == PN_OK, "eval: %s", pn_last_error());
    int ok = 1;
    for (int n = 0; n < 16; n++) ok &= m[n] == 1.0f;
    CHECK(ok, "evaluation mask is not all ones");
    CHECK(pn_droppath_mask(m, 16, 0.0f, 1, NULL) == PN_OK, "p=0: %s", pn_last_error());
    ok = 1;
    for (int n = 0; n < 16; n++) ok &= m[n] == 1.0f;
    CHECK(ok, "p = 0 mask is not all ones");
    /* p = 1: everything dropped */
    CHECK(pn_droppath_mask(m, 16, 1.0f, 1, &r) == PN_OK, "p=1: %s", pn_last_error());
    ok = 1;
    for (int n = 0; n < 16; n++) ok &= m[n] == 0.0f;
    CHECK(ok, "p = 1 mask is not all zeros");
    /* p = 0.25: values 0 or 1/0.75; kept fraction within 5 sigma of 0.75
     * (sigma = sqrt(0.75*0.25/4096) = 0.0068) */
    r = pn_droppath_stream(42, 7, 3);
    CHECK(pn_droppath_mask(m, 4096, 0.25f, 1, &r) == PN_OK, "p=.25: %s", pn_last_error());
    int kept = 0, vals = 1;
    for (int n = 0; n < 4096; n++) {
        kept += m[n] != 0.0f;
        vals &= m[n] == 0.0f || m[n] == (float)(1.0 / 0.75);
    }
    CHECK(vals, "mask values other than 0 and 1/keep");
    CHECK(fabs(kept / 4096.0 - 0.75) < 5 * 0.0068, "kept fraction %.4f, expected 0.75", kept / 4096.0);
    /* deterministic per (seed, step, block); another step or block gives another mask */
    float m2[4096];
    pn_rng r2 = pn_droppath_stream(42, 7, 3);
    pn_droppath_mask(m2, 4096, 0.25f, 1, &r2);
    CHECK(memcmp(m, m2, sizeof m) == 0, "same stream, different mask");
    r2 = pn_droppath_stream(42, 8, 3);
    pn_droppath_mask(m2, 4096, 0.25f, 1, &r2);
    CHECK(memcmp(m, m2, sizeof m) != 0, "another step gives the same mask");
    r2 = pn_droppath_stream(42, 7, 4);
    pn_droppath_mask(m2, 4096, 0.25f, 1, &r2);
    CHECK(memcmp(m, m2, sizeof m) != 0, "another block gives the same mask");
    /* bad arguments */
    CHECK(pn_droppath_mask(m, 4, 1.5f, 1, &r) == PN_ERR_ARG, "p > 1 accepted");
    CHECK(pn_droppath_mask(m, 4, -0.1f, 1, &r) == PN_ERR_ARG, "p < 0 accepted");
    CHECK(pn_droppath_mask(m, 4, NAN, 1, &r) == PN_ERR_ARG, "p NaN accepted");
    CHECK(pn_droppath_mask(m, 4, 0.5f, 1, NULL) == PN_ERR_ARG, "NULL rng accepted in training");
    CHECK(pn_droppath_mask(NULL, 4, 0.5f, 1, &r) == PN_ERR_ARG, "NULL mask accepted");
    CHECK(pn_droppath_mask(m, 0, 0.5f, 1, &r) == PN_ERR_ARG, "N 0 accepted");
}

typedef struct {
    int N;
    size_t D;
    float *b, *x, *mask, *y, *r;
} dp_ctx;
static double dp_loss(void *p)
{
    dp_ctx *c = p;
    if (pn_droppath_forward(c->y, c->b, c->x, c->mask, c->N, c->D) != PN_OK) return NAN;
    return dot(c->y, c->r, (size_t)c->N * c->D);
}

/* out = x + b * mask[n] is linear in b and x: central differences (h = 0.5) are exact
 * up to float rounding of the few outputs an element touches (~1e-6). */
TEST(droppath_fd)
{
    harness_seed(9);
    dp_ctx c = { 6, 10, NULL, NULL, NULL, NULL, NULL };
    const size_t n = (size_t)c.N * c.D;
    c.b = fnew(n); c.x = fnew(n); c.y = fnew(n); c.r = fnew(n); c.mask = fnew((size_t)c.N);
    harness_fill_normal(c.b, n, 0, 1);
    harness_fill_normal(c.x, n, 0, 1);
    harness_fill_normal(c.r, n, 0, 1);
    pn_rng rng = pn_droppath_stream(1, 2, 3);
    CHECK(pn_droppath_mask(c.mask, c.N, 0.5f, 1, &rng) == PN_OK, "mask");
    int kept = 0;
    for (int i = 0; i < c.N; i++) kept += c.mask[i] != 0;
    CHECK(kept > 0 && kept < c.N, "test needs kept and dropped samples (kept %d)", kept);
    float *db = fnew(n);
    ffill(db, n, NAN);
    CHECK(pn_droppath_backward(db, c.r, c.mask, c.N, c.D) == PN_OK, "bwd: %s", pn_last_error());
    fd_check("droppath dbranch", c.b, n, db, 0.5, 1e-5, 1e-5, dp_loss, &c);
    fd_check("droppath dresidual", c.x, n, c.r, 0.5, 1e-5, 1e-5, dp_loss, &c);
    /* no residual, aliasing: out = branch * mask in place */
    float *y2 = fnew(n);
    memcpy(y2, c.b, n * sizeof(float));
    CHECK(pn_droppath_forward(y2, y2, NULL, c.mask, c.N, c.D) == PN_OK, "in place");
    int ok = 1;
    for (size_t i = 0; i < n; i++) ok &= y2[i] == c.b[i] * c.mask[i / c.D];
    CHECK(ok, "in-place forward without residual");
    /* evaluation: identity on the branch */
    CHECK(pn_droppath_mask(c.mask, c.N, 0.5f, 0, NULL) == PN_OK, "eval mask");
    memcpy(y2, c.b, n * sizeof(float));
    pn_droppath_forward(y2, y2, NULL, c.mask, c.N, c.D);
    CHECK(memcmp(y2, c.b, n * sizeof(float)) == 0, "evaluation is not the identity");
    CHECK(pn_droppath_forward(NULL, c.b, NULL, c.mask, c.N, c.D) == PN_ERR_ARG, "NULL out");
    CHECK(pn_droppath_forward(y2, c.b, NULL, NULL, c.N, c.D) == PN_ERR_ARG, "NULL mask");
    CHECK(pn_droppath_forward(y2, c.b, NULL, c.mask, c.N, 0) == PN_ERR_ARG, "D 0");
    CHECK(pn_droppath_backward(y2, c.r, c.mask, 0, c.D) == PN_ERR_ARG, "N 0");
    CHECK(pn_droppath_backward(NULL, c.r, c.mask, c.N, c.D) == PN_ERR_ARG, "NULL dbranch");
    free(y2); free(db);
    free(c.b); free(c.x); free(c.y); free(c.r); free(c.mask);
}

int main(void)
{
    verbose = getenv("SE_VERBOSE") != NULL;
    RUN(se_fd);
    RUN(se_accumulate_alias);
    RUN(se_golden);
    RUN(se_bad_args);
    RUN(droppath_mask);
    RUN(droppath_fd);
    return harness_summary();
}
