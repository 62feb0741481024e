/* Golden tests: the normalization kernels of include/proxynorm.h against PyTorch.
 *
 * The vectors are written by tests/golden/gen_norm.py (PyTorch 1.13, references in float64
 * from float32 inputs, gradients by autograd with a random upstream gradient) into
 * tests/golden/norm_*.txt. Each file has a scalar `ncases` and tensors "k.NAME" for case k;
 * every case here is one test named after its op and shape. A missing file, a missing tensor
 * or a wrong shape is a failure, never a skip. The directory is tests/golden relative to the
 * working directory (make test runs from the repository root), or $PN_GOLDEN_DIR.
 *
 * Tolerances, per element, with scale = max(1, max_i |ref_i|) of the reference tensor:
 *     |got - ref| <= atol * scale + rtol * |ref|
 *   forward outputs, saved statistics, running stats, w_hat, m, s      atol 1e-5  rtol 1e-4
 *   activation values and derivatives                                  atol 1e-6  rtol 1e-5
 *   gradients of GN/LN/IN/BN/WS (input and parameters)                 atol 2e-5  rtol 1e-4
 *   gradients through PN-Act and fused GN+PN-Act (via the proxy's s^3) atol 5e-5  rtol 5e-4
 *   proxy points z_i (double -> float, so 1 ulp)                       atol 1e-7  rtol 2e-7
 * Parameter gradients are checked to ACCUMULATE (buffers start at 0.25); input gradients to
 * be WRITTEN (buffers start as NaN). Each test prints its worst tensor (error / tolerance),
 * and the program ends with the worst ratio of every op family. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "golden.h"
#include "harness.h"
#include "proxynorm.h"

#define TOL_OUT 1e-5, 1e-4
#define TOL_ACT 1e-6, 1e-5
#define TOL_GRAD 2e-5, 1e-4
#define TOL_PNGRAD 5e-5, 5e-4
#define ACC0 0.25f /* initial value of accumulated parameter gradients */

/* ------------------------------------------------------------------ plumbing */
static const golden_file *cur_file;
static int cur_case;
static double case_worst;
static char case_worst_name[96];

enum { FAM_GN, FAM_LN, FAM_IN, FAM_BN, FAM_WS, FAM_ACT, FAM_PN, FAM_GNPN, FAM_COUNT };
static const char *fam_name[FAM_COUNT] = {"groupnorm", "layernorm", "instancenorm", "batchnorm",
                                          "weight-std", "activations", "pn-act", "gn+pn-act"};
static double fam_worst[FAM_COUNT];
static int fam_cases[FAM_COUNT];

/* Tensor "k.name" of the current case; NULL (and a failure) if absent. */
static const golden_tensor *gt(const char *name)
{
    char full[64];
    snprintf(full, sizeof full, "%d.%s", cur_case, name);
    const golden_tensor *t = golden_get(cur_file, full);
    CHECK(t != NULL, "golden tensor %s missing", full);
    return t;
}

static double gscalar(const char *name, int *ok)
{
    const golden_tensor *t = gt(name);
    if (!t || t->n != 1) { *ok = 0; return 0; }
    return t->v[0];
}

static float *alloc_fill(size_t n, float v)
{
    float *p = malloc((n ? n : 1) * sizeof *p);
    if (p)
        for (size_t i = 0; i < n; i++) p[i] = v;
    return p;
}

static float *alloc_copy(const golden_tensor *t)
{
    float *p = malloc((t->n ? t->n : 1) * sizeof *p);
    if (p) memcpy(p, t->v, t->n * sizeof *p);
    return p;
}

/* Compare got[0..n) (minus `offset`, for accumulated gradients) with ref[0..n). */
static void cmp_arr(const char *name, const float *got, const float *ref, size_t n, float offset,
                    double atol, double rtol)
{
    double scale = 1.0;
    for (size_t i = 0; i < n; i++)
        if (fabs(ref[i]) > scale) scale = fabs(ref[i]);
    double worst = 0, worst_diff = 0;
    size_t wi = 0;
    for (size_t i = 0; i < n; i++) {
        double g = (double)got[i] - offset, r = ref[i];
        double d = fabs(g - r), tol = atol * scale + rtol * fabs(r);
        double e = d / tol;
        if (!(e == e)) e = INFINITY;
        if (e > worst) { worst = e; worst_diff = d; wi = i; }
    }
    CHECK(worst <= 1.0, "%s[%zu]: got %.9g, want %.9g, |diff| %.3g = %.3g x tolerance", name, wi,
          (double)got[wi] - offset, (double)ref[wi], worst_diff, worst);
    if (worst > case_worst || case_worst_name[0] == 0) {
        case_worst = worst;
        snprintf(case_worst_name, sizeof case_worst_name, "%s (|diff| %.2g)", name, worst_diff);
    }
}

/* Same, against the golden tensor "k.name" of the current case. */
static void cmp(const char *name, const float *got, size_t n, float offset, double atol, double rtol)
{
    const golden_tensor *ref = gt(name);
    if (!ref) return;
    CHECK(ref->n == n, "%s: reference has %zu elements, kernel output %zu", name, ref->n, n);
    if (ref->n != n || !got) return;
    cmp_arr(name, got, ref->v, n, offset, atol, rtol);
}

static void check_rc(int rc, const char *what)
{
    CHECK(rc == PN_OK, "%s returned %d (%s): %s", what, rc, pn_status_str(rc), pn_last_error());
}

typedef void (*case_fn)(char *name, size_t cap, int *family);

/* One test per case, named by the case function (op and shape). */
static void run_case(case_fn fn)
{
    static char name[128];
    int family = -1;
    snprintf(name, sizeof name, "case_%d", cur_case);
    harness_cur = name;
    harness_cur_failed = 0;
    case_worst = 0;
    case_worst_name[0] = 0;
    fn(name, sizeof name, &family);
    if (family >= 0) {
        fam_cases[family]++;
        if (case_worst > fam_worst[family]) fam_worst[family] = case_worst;
    }
    printf("  %-34s worst %s: %.3f of tolerance\n", name, case_worst_name[0] ? case_worst_name : "-",
           case_worst);
    if (harness_cur_failed) harness_failed++;
    else { harness_passed++; printf("ok %s\n", name); }
    fflush(stdout);
}

/* Loads tests/golden/FILE and runs fn on each of its cases (at least min_cases). */
static void run_file(const char *file, int min_cases, case_fn fn)
{
    static char lname[96];
    const char *dir = getenv("PN_GOLDEN_DIR");
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir && *dir ? dir : "tests/golden", file);
    snprintf(lname, sizeof lname, "load_%s", file);
    harness_cur = lname;
    harness_cur_failed = 0;
    golden_file g;
    int rc = golden_load(&g, path);
    CHECK(rc == 0, "cannot load %s (run from the repository root, or set PN_GOLDEN_DIR)", path);
    int ncases = 0;
    if (rc == 0) {
        const golden_tensor *t = golden_get(&g, "ncases");
        CHECK(t && t->n == 1, "%s: no ncases", path);
        if (t && t->n == 1) ncases = (int)t->v[0];
        CHECK(ncases >= min_cases, "%s: %d cases, expected at least %d", path, ncases, min_cases);
    }
    if (harness_cur_failed) { harness_failed++; printf("FAIL %s\n", lname); }
    else harness_passed++;
    cur_file = &g;
    for (cur_case = 0; rc == 0 && cur_case < ncases; cur_case++) run_case(fn);
    cur_file = NULL;
    if (rc == 0) golden_free(&g);
}

/* "2x6x5x5" from a 4-d tensor. */
static void shape_str(char *buf, size_t cap, const golden_tensor *t)
{
    buf[0] = 0;
    for (int d = 0; d < t->ndim; d++) {
        size_t l = strlen(buf);
        snprintf(buf + l, cap - l, d ? "x%d" : "%d", t->shape[d]);
    }
}

/* x is (N,C,H,W) in every norm case. */
static int get_nchw(const golden_tensor *x, int *N, int *C, int *HW)
{
    CHECK(x->ndim == 4, "x must be 4-d");
    if (x->ndim != 4) return 0;
    *N = x->shape[0];
    *C = x->shape[1];
    *HW = x->shape[2] * x->shape[3];
    return 1;
}

/* ------------------------------------------------------------- GroupNorm / LN / IN */
static void case_gn(char *name, size_t cap, int *family)
{
    int ok = 1;
    int kind = (int)gscalar("kind", &ok), G = (int)gscalar("G", &ok), affine = (int)gscalar("affine", &ok);
    float eps = (float)gscalar("eps", &ok);
    const golden_tensor *x = gt("x"), *dout = gt("dout");
    const golden_tensor *w = affine ? gt("weight") : NULL, *b = affine ? gt("bias") : NULL;
    int N, C, HW;
    if (!ok || !x || !dout || (affine && (!w || !b)) || !get_nchw(x, &N, &C, &HW)) return;
    char sh[64];
    shape_str(sh, sizeof sh, x);
    static const char *kn[] = {"gn", "ln", "in"};
    if (kind == 0) snprintf(name, cap, "gn_G%d%s_%s", G, affine ? "" : "_noaffine", sh);
    else snprintf(name, cap, "%s%s_%s", kn[kind == 1 ? 1 : 2], affine ? "" : "_noaffine", sh);
    *family = kind == 0 ? FAM_GN : kind == 1 ? FAM_LN : FAM_IN;

    size_t n = x->n;
    float *out = alloc_fill(n, NAN), *dinp = alloc_fill(n, NAN);
    float *mean = alloc_fill((size_t)N * G, NAN), *rstd = alloc_fill((size_t)N * G, NAN);
    float *dw = alloc_fill(C, ACC0), *db = alloc_fill(C, ACC0);
    if (out && dinp && mean && rstd && dw && db) {
        int rc = pn_groupnorm_forward(out, mean, rstd, x->v, w ? w->v : NULL, b ? b->v : NULL,
                                      N, C, HW, G, eps);
        check_rc(rc, "pn_groupnorm_forward");
        cmp("out", out, n, 0, TOL_OUT);
        cmp("mean", mean, (size_t)N * G, 0, TOL_OUT);
        cmp("rstd", rstd, (size_t)N * G, 0, TOL_OUT);
        rc = pn_groupnorm_backward(dinp, affine ? dw : NULL, affine ? db : NULL, dout->v, x->v,
                                   mean, rstd, w ? w->v : NULL, N, C, HW, G);
        check_rc(rc, "pn_groupnorm_backward");
        cmp("dinp", dinp, n, 0, TOL_GRAD);
        if (affine) {
            cmp("dweight", dw, C, ACC0, TOL_GRAD);
            cmp("dbias", db, C, ACC0, TOL_GRAD);
        }
    } else CHECK(0, "out of memory");
    free(out); free(dinp); free(mean); free(rstd); free(dw); free(db);
}

/* ---------------------------------------------------------------------- BatchNorm */
static void case_bn(char *name, size_t cap, int *family)
{
    int ok = 1;
    int train = (int)gscalar("train", &ok), g = (int)gscalar("norm_batch", &ok);
    int affine = (int)gscalar("affine", &ok);
    float eps = (float)gscalar("eps", &ok), momentum = (float)gscalar("momentum", &ok);
    const golden_tensor *x = gt("x"), *rm0 = gt("running_mean_in"), *rv0 = gt("running_var_in");
    const golden_tensor *w = affine ? gt("weight") : NULL, *b = affine ? gt("bias") : NULL;
    int N, C, HW;
    if (!ok || !x || !rm0 || !rv0 || (affine && (!w || !b)) || !get_nchw(x, &N, &C, &HW)) return;
    *family = FAM_BN;
    char sh[64];
    shape_str(sh, sizeof sh, x);
    /* Ordinary BN (g = N) is requested alternately as g = N and as g = 0 ("N"). */
    int g_arg = (train && g == N && cur_case % 2 == 0) ? 0 : g;
    if (train) snprintf(name, cap, "bn_train_g%d%s_%s", g_arg, affine ? "" : "_noaffine", sh);
    else snprintf(name, cap, "bn_eval%s_%s", affine ? "" : "_noaffine", sh);

    size_t n = x->n;
    int chunks = train ? N / g : 0;
    float *out = alloc_fill(n, NAN), *dinp = alloc_fill(n, NAN);
    float *mean = alloc_fill((size_t)(chunks ? chunks : 1) * C, NAN);
    float *rstd = alloc_fill((size_t)(chunks ? chunks : 1) * C, NAN);
    float *rm = alloc_copy(rm0), *rv = alloc_copy(rv0);
    float *dw = alloc_fill(C, ACC0), *db = alloc_fill(C, ACC0);
    if (out && dinp && mean && rstd && rm && rv && dw && db) {
        if (!train) {
            int rc = pn_batchnorm_forward_eval(out, x->v, rm, rv, w ? w->v : NULL, b ? b->v : NULL,
                                               N, C, HW, eps);
            check_rc(rc, "pn_batchnorm_forward_eval");
            cmp("out", out, n, 0, TOL_OUT);
        } else {
            const golden_tensor *dout = gt("dout");
            int rc = pn_batchnorm_forward_train(out, mean, rstd, rm, rv, x->v, w ? w->v : NULL,
                                                b ? b->v : NULL, N, C, HW, g_arg, momentum, eps);
            check_rc(rc, "pn_batchnorm_forward_train");
            cmp("out", out, n, 0, TOL_OUT);
            cmp("mean", mean, (size_t)chunks * C, 0, TOL_OUT);
            cmp("rstd", rstd, (size_t)chunks * C, 0, TOL_OUT);
            cmp("running_mean", rm, C, 0, TOL_OUT);
            cmp("running_var", rv, C, 0, TOL_OUT);
            if (dout) {
                rc = pn_batchnorm_backward(dinp, affine ? dw : NULL, affine ? db : NULL, dout->v, x->v,
                                           mean, rstd, w ? w->v : NULL, N, C, HW, g_arg);
                check_rc(rc, "pn_batchnorm_backward");
                cmp("dinp", dinp, n, 0, TOL_GRAD);
                if (affine) {
                    cmp("dweight", dw, C, ACC0, TOL_GRAD);
                    cmp("dbias", db, C, ACC0, TOL_GRAD);
                }
            }
        }
    } else CHECK(0, "out of memory");
    free(out); free(dinp); free(mean); free(rstd); free(rm); free(rv); free(dw); free(db);
}

/* ------------------------------------------------------------ Weight Standardization */
static void case_ws(char *name, size_t cap, int *family)
{
    int ok = 1;
    float eps = (float)gscalar("eps", &ok);
    const golden_tensor *w = gt("w"), *dwh = gt("dw_hat");
    if (!ok || !w || !dwh) return;
    CHECK(w->ndim == 2, "w must be (O,K)");
    if (w->ndim != 2) return;
    int O = w->shape[0], K = w->shape[1];
    snprintf(name, cap, "ws_O%d_K%d", O, K);
    *family = FAM_WS;
    float *wh = alloc_fill(w->n, NAN), *mean = alloc_fill(O, NAN), *rstd = alloc_fill(O, NAN);
    float *dw = alloc_fill(w->n, ACC0);
    if (wh && mean && rstd && dw) {
        check_rc(pn_ws_forward(wh, mean, rstd, w->v, O, K, eps), "pn_ws_forward");
        cmp("w_hat", wh, w->n, 0, TOL_OUT);
        cmp("mean", mean, O, 0, TOL_OUT);
        cmp("rstd", rstd, O, 0, TOL_OUT);
        check_rc(pn_ws_backward(dw, dwh->v, w->v, mean, rstd, O, K), "pn_ws_backward");
        cmp("dw", dw, w->n, ACC0, TOL_GRAD);
    } else CHECK(0, "out of memory");
    free(wh); free(mean); free(rstd); free(dw);
}

/* ------------------------------------------------------------------- activations */
static void case_act(char *name, size_t cap, int *family)
{
    int ok = 1;
    int act = (int)gscalar("act", &ok);
    const golden_tensor *x = gt("x"), *dout = gt("dout");
    if (!ok || !x || !dout || x->n != dout->n) return;
    snprintf(name, cap, "act_%s_n%zu", pn_act_name((pn_act)act), x->n);
    *family = FAM_ACT;
    size_t n = x->n;
    float *out = alloc_fill(n, NAN), *dinp = alloc_fill(n, NAN), *buf = alloc_copy(x);
    float *f = alloc_fill(n, NAN), *df = alloc_fill(n, NAN);
    if (out && dinp && buf && f && df) {
        check_rc(pn_act_forward(out, x->v, n, (pn_act)act), "pn_act_forward");
        cmp("out", out, n, 0, TOL_ACT);
        check_rc(pn_act_forward(buf, buf, n, (pn_act)act), "pn_act_forward (in place)");
        cmp("out", buf, n, 0, TOL_ACT);
        check_rc(pn_act_backward(dinp, dout->v, x->v, n, (pn_act)act), "pn_act_backward");
        cmp("dinp", dinp, n, 0, TOL_ACT);
        memcpy(buf, dout->v, n * sizeof *buf);
        check_rc(pn_act_backward(buf, buf, x->v, n, (pn_act)act), "pn_act_backward (in place)");
        cmp("dinp", buf, n, 0, TOL_ACT);
        for (size_t i = 0; i < n; i++) {
            f[i] = pn_act_f((pn_act)act, x->v[i]);
            df[i] = pn_act_df((pn_act)act, x->v[i]);
        }
        cmp("out", f, n, 0, TOL_ACT);
        cmp("dphi", df, n, 0, TOL_ACT);
        CHECK(pn_act_parse(pn_act_name((pn_act)act)) == act, "pn_act_parse(pn_act_name(%d))", act);
    } else CHECK(0, "out of memory");
    free(out); free(dinp); free(buf); free(f); free(df);
}

/* ------------------------------------------------------------------------- PN-Act */
typedef struct {
    const golden_tensor *gamma, *beta, *gamma_t, *beta_t;
} pn_ref_params;

static int get_pn_params(pn_ref_params *r, pn_pnact_params *p, int C)
{
    r->gamma = gt("gamma");
    r->beta = gt("beta");
    r->gamma_t = gt("gamma_t");
    r->beta_t = gt("beta_t");
    if (!r->gamma || !r->beta || !r->gamma_t || !r->beta_t) return 0;
    int ok = r->gamma->n == (size_t)C && r->beta->n == (size_t)C && r->gamma_t->n == (size_t)C &&
             r->beta_t->n == (size_t)C;
    CHECK(ok, "PN parameters must have C = %d elements", C);
    p->gamma = r->gamma->v;
    p->beta = r->beta->v;
    p->gamma_t = r->gamma_t->v;
    p->beta_t = r->beta_t->v;
    return ok;
}

static void cmp_pn_grads(pn_pnact_grads g, int C)
{
    cmp("dgamma", g.dgamma, C, ACC0, TOL_PNGRAD);
    cmp("dbeta", g.dbeta, C, ACC0, TOL_PNGRAD);
    cmp("dgamma_t", g.dgamma_t, C, ACC0, TOL_PNGRAD);
    cmp("dbeta_t", g.dbeta_t, C, ACC0, TOL_PNGRAD);
}

static void case_pnact(char *name, size_t cap, int *family)
{
    *family = FAM_PN;
    if (cur_case == 0) { /* the proxy points */
        snprintf(name, cap, "pn_proxy_points");
        const golden_tensor *z = gt("z");
        if (!z) return;
        CHECK(z->n == PN_PROXY_POINTS, "z has %zu points", z->n);
        const float *got = pn_proxy_points();
        CHECK(got != NULL, "pn_proxy_points() is NULL");
        if (got && z->n == PN_PROXY_POINTS) cmp("z", got, z->n, 0, 1e-7, 2e-7);
        return;
    }
    int ok = 1;
    int act = (int)gscalar("act", &ok);
    float eps = (float)gscalar("eps", &ok);
    const golden_tensor *x = gt("x"), *dout = gt("dout");
    int N, C, HW;
    if (!ok || !x || !dout || !get_nchw(x, &N, &C, &HW)) return;
    char sh[64];
    shape_str(sh, sizeof sh, x);
    snprintf(name, cap, "pnact_%s_%s", pn_act_name((pn_act)act), sh);
    CHECK(fabsf(eps - PN_PROXY_EPS) < 1e-9f, "eps %g != PN_PROXY_EPS", eps);
    pn_ref_params r;
    pn_pnact_params p;
    if (!get_pn_params(&r, &p, C)) return;

    size_t n = x->n;
    float *out = alloc_fill(n, NAN), *dinp = alloc_fill(n, NAN), *buf = alloc_copy(x);
    float *m = alloc_fill(C, NAN), *s = alloc_fill(C, NAN), *m2 = alloc_fill(C, NAN), *s2 = alloc_fill(C, NAN);
    float *gr = alloc_fill(4 * (size_t)C, ACC0);
    if (out && dinp && buf && m && s && m2 && s2 && gr) {
        pn_act a = (pn_act)act;
        check_rc(pn_pnact_stats(m2, s2, p, C, a, eps), "pn_pnact_stats");
        cmp("m", m2, C, 0, TOL_OUT);
        cmp("s", s2, C, 0, TOL_OUT);
        check_rc(pn_pnact_forward(out, m, s, x->v, p, N, C, HW, a, eps), "pn_pnact_forward");
        cmp("out", out, n, 0, TOL_OUT);
        cmp("m", m, C, 0, TOL_OUT);
        cmp("s", s, C, 0, TOL_OUT);
        check_rc(pn_pnact_forward(buf, m2, s2, buf, p, N, C, HW, a, eps), "pn_pnact_forward (in place)");
        cmp("out", buf, n, 0, TOL_OUT);
        /* fold: scale = s, shift = -s*m */
        check_rc(pn_pnact_fold(m2, s2, p, C, a, eps), "pn_pnact_fold");
        const golden_tensor *rm = gt("m"), *rs = gt("s");
        if (rm && rs && rm->n == (size_t)C && rs->n == (size_t)C) {
            float *shift = alloc_fill(C, 0);
            if (shift) {
                for (int c = 0; c < C; c++) shift[c] = (float)(-(double)rs->v[c] * rm->v[c]);
                cmp_arr("fold shift (-s*m)", s2, shift, C, 0, TOL_OUT);
            } else CHECK(0, "out of memory");
            free(shift);
            cmp("s", m2, C, 0, TOL_OUT); /* scale */
        }
        pn_pnact_grads g = {gr, gr + C, gr + 2 * C, gr + 3 * C};
        check_rc(pn_pnact_backward(dinp, g, dout->v, x->v, m, s, p, N, C, HW, a), "pn_pnact_backward");
        cmp("dinp", dinp, n, 0, TOL_PNGRAD);
        cmp_pn_grads(g, C);
        /* Any gradient may be NULL: the input gradient must not change. */
        pn_pnact_grads none = {NULL, NULL, NULL, NULL};
        for (size_t i = 0; i < n; i++) buf[i] = NAN;
        check_rc(pn_pnact_backward(buf, none, dout->v, x->v, m, s, p, N, C, HW, a),
                 "pn_pnact_backward (NULL grads)");
        cmp("dinp", buf, n, 0, TOL_PNGRAD);
    } else CHECK(0, "out of memory");
    free(out); free(dinp); free(buf); free(m); free(s); free(m2); free(s2); free(gr);
}

static void case_gnpn(char *name, size_t cap, int *family)
{
    *family = FAM_GNPN;
    int ok = 1;
    int act = (int)gscalar("act", &ok), G = (int)gscalar("G", &ok);
    float gn_eps = (float)gscalar("gn_eps", &ok), eps = (float)gscalar("eps", &ok);
    const golden_tensor *x = gt("x"), *dout = gt("dout");
    int N, C, HW;
    if (!ok || !x || !dout || !get_nchw(x, &N, &C, &HW)) return;
    char sh[64];
    shape_str(sh, sizeof sh, x);
    snprintf(name, cap, "gn_pnact_G%d_%s_%s", G, pn_act_name((pn_act)act), sh);
    pn_ref_params r;
    pn_pnact_params p;
    if (!get_pn_params(&r, &p, C)) return;

    size_t n = x->n;
    float *out = alloc_fill(n, NAN), *dinp = alloc_fill(n, NAN);
    float *mean = alloc_fill((size_t)N * G, NAN), *rstd = alloc_fill((size_t)N * G, NAN);
    float *m = alloc_fill(C, NAN), *s = alloc_fill(C, NAN), *gr = alloc_fill(4 * (size_t)C, ACC0);
    if (out && dinp && mean && rstd && m && s && gr) {
        pn_act a = (pn_act)act;
        check_rc(pn_gn_pnact_forward(out, mean, rstd, m, s, x->v, p, N, C, HW, G, gn_eps, a, eps),
                 "pn_gn_pnact_forward");
        cmp("out", out, n, 0, TOL_OUT);
        cmp("mean", mean, (size_t)N * G, 0, TOL_OUT);
        cmp("rstd", rstd, (size_t)N * G, 0, TOL_OUT);
        cmp("m", m, C, 0, TOL_OUT);
        cmp("s", s, C, 0, TOL_OUT);
        pn_pnact_grads g = {gr, gr + C, gr + 2 * C, gr + 3 * C};
        check_rc(pn_gn_pnact_backward(dinp, g, dout->v, x->v, mean, rstd, m, s, p, N, C, HW, G, a),
                 "pn_gn_pnact_backward");
        cmp("dinp", dinp, n, 0, TOL_PNGRAD);
        cmp_pn_grads(g, C);
    } else CHECK(0, "out of memory");
    free(out); free(dinp); free(mean); free(rstd); free(m); free(s); free(gr);
}

int main(void)
{
    /* Minimum case counts: a truncated or stale file fails instead of silently testing less. */
    run_file("norm_gn.txt", 12, case_gn);
    run_file("norm_bn.txt", 11, case_bn);
    run_file("norm_ws.txt", 4, case_ws);
    run_file("norm_act.txt", 4, case_act);
    run_file("norm_pnact.txt", 12, case_pnact);
    run_file("norm_gnpn.txt", 6, case_gnpn);
    printf("worst error / tolerance per op family:\n");
    for (int f = 0; f < FAM_COUNT; f++)
        printf("  %-13s %2d cases  worst %.3f\n", fam_name[f], fam_cases[f], fam_worst[f]);
    return harness_summary();
}
