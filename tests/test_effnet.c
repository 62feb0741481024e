/* Tests for EfficientNet (src/nn/arch_effnet.c):
 *   - convolution + linear parameter counts at 3x224x224, 1000 classes equal torchvision's
 *     efficientnet_b0..b2 (tests/golden/param_counts.txt, gen_param_counts.py); with bn the
 *     total equals torchvision's too;
 *   - one training step of a tiny effnet_b0 against PyTorch (tests/golden/gen_effnet.py:
 *     parameters and input from a hash both sides compute), bn and gn+pn;
 *   - whole-model finite-difference gradient checks of a tiny effnet_b0 (bn, gn+pn), with
 *     drop path active (the masks fixed by pn_model_set_step);
 *   - inference folding (pn_model_fold): same logits and predictions, bn and gn+pn;
 *   - drop path: evaluation ignores it, the masks follow (seed, step), small-image strides,
 *     bad configurations.
 * Golden files are read from tests/golden/ (run from the repository root) or from
 * $PN_GOLDEN_DIR. EFFNET_VERBOSE=1 prints the observed errors. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <limits.h>

#include "golden.h"
#include "harness.h"
#include "kernels/common.h"
#include "nn/build.h"
#include "nn/model.h"

static int verbose;

static pn_model_config eff_cfg(const char *arch, pn_norm_kind k, int width, int in, int image,
                               int classes)
{
    pn_model_config c;
    pn_model_config_default(&c);
    snprintf(c.arch, sizeof c.arch, "%s", arch);
    c.norm = k;
    c.groups = 4;
    c.norm_batch = 0;
    c.width = width;
    c.in_channels = in;
    c.image = image;
    c.classes = classes;
    return c;
}

static const char *golden_dir(void)
{
    const char *d = getenv("PN_GOLDEN_DIR");
    return d ? d : "tests/golden";
}

/* ------------------------------------------------------------ parameter counts */
/* conv+linear and total parameters of a torchvision model from param_counts.txt
 * ("NAME CONV_LINEAR TOTAL" lines); 0 if found. */
static int read_counts(const char *model, long long *conv_lin, long long *total)
{
    char path[512], line[256];
    snprintf(path, sizeof path, "%s/param_counts.txt", golden_dir());
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    int rc = -1;
    while (rc != 0 && fgets(line, sizeof line, f)) {
        char name[64];
        long long cl, tot;
        if (line[0] != '#' && sscanf(line, "%63s %lld %lld", name, &cl, &tot) == 3 && strcmp(name, model) == 0) {
            *conv_lin = cl;
            *total = tot;
            rc = 0;
        }
    }
    fclose(f);
    return rc;
}

TEST(effnet_param_counts)
{
    for (int v = 0; v < 3; v++) {
        char model[32], arch[32];
        snprintf(model, sizeof model, "efficientnet_b%d", v);
        snprintf(arch, sizeof arch, "effnet_b%d", v);
        long long want = -2, total = -2;
        CHECK(read_counts(model, &want, &total) == 0,
              "%s missing from %s/param_counts.txt (run from the repository root, or set PN_GOLDEN_DIR)",
              model, golden_dir());
        for (int pass = 0; pass < 2; pass++) {
            pn_norm_kind k = pass ? PN_NORM_GN_PN : PN_NORM_BN;
            pn_model_config c = eff_cfg(arch, k, 32, 3, 224, 1000);
            pn_model *m = NULL;
            CHECK(pn_model_create(&m, &c, 1) == PN_OK, "%s %s: %s", arch, pn_norm_name(k), pn_last_error());
            if (!m) continue;
            size_t cl = pn_model_conv_linear_params(m);
            CHECK((long long)cl == want, "%s %s: %zu conv+linear parameters, torchvision %lld", arch,
                  pn_norm_name(k), cl, want);
            if (k == PN_NORM_BN)
                CHECK((long long)pn_model_num_params(m) == total, "%s bn: %zu parameters, torchvision %lld",
                      arch, pn_model_num_params(m), total);
            if (verbose)
                printf("  %s %s: conv+linear %zu (torchvision %lld), all %zu\n", arch, pn_norm_name(k), cl, want,
                       pn_model_num_params(m));
            pn_model_free(m);
        }
    }
}

/* `proxynorm info` (build/proxynorm next to build/tests/, or $PROXYNORM_BIN) prints the
 * same conv_linear_params as torchvision's efficientnet_b0..b2. */
TEST(effnet_cli_info)
{
    char bin[PATH_MAX + 32], self[PATH_MAX];
    const char *env = getenv("PROXYNORM_BIN");
    if (env && *env) {
        snprintf(bin, sizeof bin, "%s", env);
    } else {
        ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
        CHECK(n > 0, "readlink /proc/self/exe");
        if (n <= 0) return;
        self[n] = '\0';
        char *sl = strrchr(self, '/');
        if (sl) *sl = '\0';
        sl = strrchr(self, '/');
        if (sl) *sl = '\0';
        snprintf(bin, sizeof bin, "%s/proxynorm", self);
    }
    CHECK(access(bin, X_OK) == 0, "%s not found (the Makefile builds it before the tests)", bin);
    for (int v = 0; v < 3; v++) {
        long long want = -2, total = -2;
        char model[32], cmd[PATH_MAX + 160], out[1024] = "";
        snprintf(model, sizeof model, "efficientnet_b%d", v);
        CHECK(read_counts(model, &want, &total) == 0, "%s missing from param_counts.txt", model);
        snprintf(cmd, sizeof cmd, "'%s' info --model effnet_b%d --norm bn --channels 3 --image 224 --classes 1000 2>&1",
                 bin, v);
        FILE *p = popen(cmd, "r");
        CHECK(p != NULL, "popen %s", cmd);
        if (!p) continue;
        size_t got = fread(out, 1, sizeof out - 1, p);
        out[got] = '\0';
        int rc = pclose(p);
        CHECK(rc == 0, "%s: exit status %d: %s", cmd, rc, out);
        const char *k = strstr(out, "\"conv_linear_params\":");
        long long cl = k ? atoll(k + strlen("\"conv_linear_params\":")) : -1;
        CHECK(cl == want, "effnet_b%d: proxynorm info says %lld conv+linear parameters, torchvision %lld (%s)", v,
              cl, want, out);
        const char *pp = strstr(out, "\"params\":");
        long long all = pp ? atoll(pp + strlen("\"params\":")) : -1;
        CHECK(all == total, "effnet_b%d bn: %lld parameters, torchvision %lld", v, all, total);
    }
}

/* ------------------------------------------------------------ hashed parameters */
/* The hash of tests/golden/gen_effnet.py (golden_hash_u): u_i in [-1, 1). */
static uint64_t fnv1a(const char *s)
{
    uint64_t h = 0xCBF29CE484222325ULL;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 0x100000001B3ULL;
    return h;
}
static uint64_t splitmix(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ULL;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
    return x ^ (x >> 31);
}
static double hash_u(uint64_t h, size_t i) { return (double)(splitmix(h + i) >> 40) / 8388608.0 - 1.0; }

static void hashed_params(pn_model *m)
{
    int nt;
    const pn_tensor_info *t = pn_model_param_table(m, &nt);
    float *p = pn_model_params(m);
    for (int a = 0; a < nt; a++) {
        const char *last = strrchr(t[a].name, '.');
        last = last ? last + 1 : t[a].name;
        const uint64_t h = fnv1a(t[a].name);
        double scale = 0.2, base = 0.0;
        if (strcmp(last, "weight") == 0 && t[a].ndim >= 2)
            scale = sqrt(3.0 / (double)(t[a].numel / (size_t)t[a].shape[0]));
        else if (strcmp(last, "bias") == 0 &&
                 (strstr(t[a].name, "conv") || strncmp(t[a].name, "fc", 2) == 0 || strstr(t[a].name, ".se.")))
            scale = 0.2;
        else if (strcmp(last, "weight") == 0 || strcmp(last, "gamma") == 0)
            base = 1.0;
        for (size_t i = 0; i < t[a].numel; i++)
            p[t[a].offset + i] = (float)(base + scale * hash_u(h, i));
    }
}

/* Sets the drop probability of every drop-path op (the golden steps run without). */
static int set_droppath(pn_model *m, float p)
{
    int n = 0;
    for (int i = 0; i < m->nops; i++)
        if (strcmp(m->ops[i].vt->kind, "droppath") == 0) {
            m->ops[i].fattr[0] = p;
            n++;
        }
    return n;
}

/* ------------------------------------------------------------ golden step */
static const float *gval(const golden_file *g, const char *pre, const char *name, size_t n)
{
    char full[160];
    snprintf(full, sizeof full, "%s%s", pre, name);
    for (int i = 0; i < g->count; i++)
        if (strcmp(g->t[i].name, full) == 0) {
            CHECK(g->t[i].n == n, "golden %s: %zu values, expected %zu", full, g->t[i].n, n);
            return g->t[i].n == n ? g->t[i].v : NULL;
        }
    CHECK(0, "golden tensor %s missing", full);
    return NULL;
}

/* Tolerances, float32 (C) against float64 (PyTorch) through ~50 layers at batch 4:
 * logits and loss within 2e-4 + 2e-4 relative; per tensor, sum g, sum g r and the first
 * values within 1e-3 of sum |g|, plus 1e-5: float rounding of the ~1e-7 relative kind,
 * amplified by the normalizations of small maps in the last stages, stays far below the
 * first term; the second covers gradients that are exactly 0 in exact arithmetic (with
 * bn, the bias of a projection norm that feeds the next block's 1x1 expand conv: the
 * next BatchNorm removes any per-channel shift) where float leaves ~3e-6, while other
 * tensors' gradients are 1e-3..1. A wrong term of a backward changes these by O(10%) of
 * sum |g|. Observed (EFFNET_VERBOSE=1): logits error ratio 0.13 (bn), 0.02 (gn+pn);
 * worst gradient error ratio 0.56 (bn: a depthwise conv of stage 6, on 1x1 maps), 0.07
 * (gn+pn). */
static void golden_step(const char *file, pn_norm_kind k)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", golden_dir(), file);
    golden_file g;
    CHECK(golden_load(&g, path) == 0, "cannot load %s", path);
    if (g.count == 0) return;
    const float *Bv = gval(&g, "", "B", 1), *Wv = gval(&g, "", "width", 1), *Iv = gval(&g, "", "image", 1);
    const float *Cv = gval(&g, "", "classes", 1), *Inv = gval(&g, "", "in_channels", 1);
    const float *NPv = gval(&g, "", "nparams", 1);
    if (!Bv || !Wv || !Iv || !Cv || !Inv || !NPv) { golden_free(&g); return; }
    const int B = (int)*Bv, image = (int)*Iv, classes = (int)*Cv, in = (int)*Inv;
    pn_model_config c = eff_cfg("effnet_b0", k, (int)*Wv, in, image, classes);
    pn_model *m = NULL;
    CHECK(pn_model_create(&m, &c, 7) == PN_OK, "%s: create: %s", file, pn_last_error());
    if (!m) { golden_free(&g); return; }
    CHECK((double)pn_model_num_params(m) == (double)*NPv, "%s: %zu parameters, PyTorch %.0f", file,
          pn_model_num_params(m), (double)*NPv);
    hashed_params(m);
    CHECK(set_droppath(m, 0.0f) > 0, "%s: no drop-path op", file);
    const size_t nx = (size_t)B * in * image * image;
    float *x = malloc(nx * sizeof(float));
    int *lab = malloc((size_t)B * sizeof(int));
    const uint64_t hx = fnv1a("x");
    for (size_t i = 0; i < nx; i++) x[i] = (float)hash_u(hx, i);
    for (int i = 0; i < B; i++) lab[i] = (i * 7 + 1) % classes;
    const float *logits;
    double loss = NAN;
    pn_model_zero_grad(m);
    CHECK(pn_model_forward(m, x, B, 1, &logits) == PN_OK, "%s: forward: %s", file, pn_last_error());
    CHECK(pn_model_loss(m, lab, 0.1f, &loss, NULL) == PN_OK, "%s: loss: %s", file, pn_last_error());
    CHECK(pn_model_backward(m, 1.0f / B) == PN_OK, "%s: backward: %s", file, pn_last_error());
    const float *rl = gval(&g, "", "logits", (size_t)B * classes), *rloss = gval(&g, "", "loss", 1);
    double worst = 0;
    if (rl) {
        for (int i = 0; i < B * classes; i++) {
            double e = fabs((double)logits[i] - rl[i]) / (2e-4 + 2e-4 * fabs(rl[i]));
            worst = fmax(worst, e);
        }
        CHECK(worst <= 1, "%s: logits differ (error ratio %.3g)", file, worst);
    }
    if (rloss) CHECK_NEAR(loss / B, *rloss, 2e-4 + 2e-4 * fabs(*rloss));
    if (verbose) printf("  %s: loss %.7f (PyTorch %.7f), logits error ratio %.3g\n", file, loss / B,
                        rloss ? *rloss : NAN, worst);
    int nt;
    const pn_tensor_info *t = pn_model_param_table(m, &nt);
    const float *gr = pn_model_grads(m);
    double worst_g = 0;
    const char *worst_name = "";
    for (int a = 0; a < nt; a++) {
        char pre[120];
        const float *gabs, *gsum, *gdot, *gfirst;
        const size_t nf = t[a].numel < 4 ? t[a].numel : 4;
        snprintf(pre, sizeof pre, "gabs.%s", t[a].name);
        gabs = gval(&g, pre, "", 1);
        snprintf(pre, sizeof pre, "gsum.%s", t[a].name);
        gsum = gval(&g, pre, "", 1);
        snprintf(pre, sizeof pre, "gdot.%s", t[a].name);
        gdot = gval(&g, pre, "", 1);
        snprintf(pre, sizeof pre, "gfirst.%s", t[a].name);
        gfirst = gval(&g, pre, "", nf);
        if (!gabs || !gsum || !gdot || !gfirst) continue;
        char rname[128];
        snprintf(rname, sizeof rname, "%s#", t[a].name);
        const uint64_t hr = fnv1a(rname);
        double s = 0, d = 0;
        for (size_t i = 0; i < t[a].numel; i++) {
            const double v = gr[t[a].offset + i];
            s += v;
            d += v * hash_u(hr, i);
        }
        /* BN at batch B on 8x8 images is ill-conditioned in float32: multiplying two thirds
         * of the input entries by 1 +- 2^-23 (one ulp) put stage3.block0.project_norm.bias
         * 1.7e-5 from the float64 reference (its exact value is 0), and replacing the stem's
         * GEMM by the direct kernel (another rounding order) the SE gradients of stage 3 by
         * 1.1e-3 of their absolute sums; so BN gets 3e-3 relative and 5e-5 absolute. */
        const double tol = k == PN_NORM_BN ? 3e-3 * *gabs + 5e-5 : 1e-3 * *gabs + 1e-5;
        double e = fmax(fabs(s - *gsum), fabs(d - *gdot));
        for (size_t i = 0; i < nf; i++) e = fmax(e, fabs((double)gr[t[a].offset + i] - gfirst[i]));
        CHECK(e <= tol, "%s: gradient of %s: |diff| %.3g > %.3g (sum %.6g vs %.6g, proj %.6g vs %.6g)",
              file, t[a].name, e, tol, s, (double)*gsum, d, (double)*gdot);
        if (e / tol > worst_g) {
            worst_g = e / tol;
            worst_name = t[a].name;
        }
    }
    if (verbose) printf("  %s: %d gradient tensors, worst error ratio %.3g (%s)\n", file, nt, worst_g, worst_name);
    if (k == PN_NORM_BN) {
        int nb;
        const pn_tensor_info *bt = pn_model_buffer_table(m, &nb);
        const float *buf = pn_model_buffers(m);
        int checked = 0;
        for (int a = 0; a < nb; a++) {
            char nm[128];
            const char *dot = strrchr(bt[a].name, '.');
            if (!dot) continue;
            const int is_mean = strcmp(dot, ".running_mean") == 0;
            snprintf(nm, sizeof nm, "%s.%.*s", is_mean ? "rmean" : "rvar", (int)(dot - bt[a].name), bt[a].name);
            const float *ref = gval(&g, nm, "", 1);
            if (!ref) continue;
            double s = 0;
            for (size_t i = 0; i < bt[a].numel; i++) s += buf[bt[a].offset + i];
            CHECK(fabs(s - *ref) <= 1e-4 * (fabs(*ref) + bt[a].numel), "%s: %s sum %.7g, PyTorch %.7g", file,
                  bt[a].name, s, (double)*ref);
            checked++;
        }
        CHECK(checked == nb && nb > 0, "%s: %d of %d buffers checked", file, checked, nb);
    }
    free(x);
    free(lab);
    pn_model_free(m);
    golden_free(&g);
}

TEST(effnet_golden_bn) { golden_step("effnet_bn.txt", PN_NORM_BN); }
TEST(effnet_golden_gn_pn) { golden_step("effnet_gnpn.txt", PN_NORM_GN_PN); }

/* ------------------------------------------------------------ gradient check */
/* Whole-model central differences in float on a tiny effnet_b0 (width 8, 1 channel, 3
 * classes, batch 3), drop path at p = 0.5 in every residual block with the masks fixed by
 * pn_model_set_step before each forward. Images: 16 px for bn, so that the last stages
 * see 2x2 maps (BatchNorm over the 3 values of a 1x1 map is nearly singular), 8 px for
 * gn+pn (no batch statistics; 4x cheaper).
 * The loss (~1) is known to ~1e-7 in float: the quotient's rounding error is ~1e-7/h.
 * SiLU, sigmoid and the norms are smooth (no kinks), but the stem's weights (fan-in 9,
 * feeding every layer) have a large third derivative: measured, one stem weight with
 * gradient -1.8e-3 gave central quotients -3.5e-2, -3.7e-3, -2.6e-3, -1.4e-3 at h = 1e-2,
 * 2.5e-3, 6.25e-4, 1.56e-4: truncation, converging. So each element is tried at up to
 * four steps h = 1e-2 / 4^k and passes when one agrees within atol(h) = 4e-7/h + 5% of
 * |g| (a dropped term of a backward is wrong at every step). Sampled: one element of
 * every tensor of gc_sampled(); plus the directional derivative along a random unit
 * direction of all parameters (2% + atol). Observed (EFFNET_VERBOSE=1): worst err/tol 0.69 (bn), 0.58
 * (gn+pn); directional 0.07, 0.03. */
#define GC_B 3
#define GC_IMG_MAX 16
static double gc_loss(pn_model *m, const float *x, const int *lab)
{
    const float *lg;
    double l = NAN;
    pn_model_set_step(m, 99, 5);
    if (pn_model_forward(m, x, GC_B, 1, &lg) != PN_OK) return NAN;
    if (pn_model_loss(m, lab, 0.1f, &l, NULL) != PN_OK) return NAN;
    return l / GC_B;
}

static double gc_one(pn_model *m, const float *p0, const float *d, size_t idx, double an, double rtol,
                     const float *x, const int *lab, double *fd_out)
{
    static const double H[4] = { 1e-2, 2.5e-3, 6.25e-4, 1.5625e-4 };
    float *p = pn_model_params(m);
    const size_t np = pn_model_num_params(m);
    double best = INFINITY;
    for (int k = 0; k < 4; k++) {
        double l[2], taken[2];
        for (int sgn = 0; sgn < 2; sgn++) {
            const double t = sgn ? -H[k] : H[k];
            if (d) {
                for (size_t i = 0; i < np; i++) p[i] = p0[i] + (float)t * d[i];
                taken[sgn] = t;
            } else {
                p[idx] = p0[idx] + (float)t;
                taken[sgn] = (double)p[idx] - (double)p0[idx];
            }
            l[sgn] = gc_loss(m, x, lab);
            memcpy(p, p0, np * sizeof(float));
        }
        const double fd = (l[0] - l[1]) / (taken[0] - taken[1]);
        if (k == 0 && fd_out) *fd_out = fd;
        if (verbose > 1) printf("    h %g: l+ %.9g l- %.9g fd %.9g an %.9g\n", H[k], l[0], l[1], fd, an);
        best = fmin(best, fabs(fd - an) / (4e-7 / H[k] + rtol * fabs(an)));
        if (best <= 1) break;
    }
    return best;
}

/* The tensors sampled: all outside the blocks (stem, head, fc) and those of 7 of the 16
 * blocks: the first (no expansion), a non-residual and a residual block with 3x3 and with
 * 5x5 depthwise convs, the last block (sampling every tensor costs ~2x the time for blocks
 * of the same kinds; the directional derivative covers all parameters). */
static int gc_sampled(const char *name)
{
    static const char *const blocks[] = { "stage1.block0.", "stage2.block0.", "stage2.block1.",
                                          "stage3.block1.", "stage6.block0.", "stage6.block3.",
                                          "stage7.block0." };
    if (strncmp(name, "stage", 5) != 0) return 1;
    for (size_t i = 0; i < sizeof blocks / sizeof *blocks; i++)
        if (strncmp(name, blocks[i], strlen(blocks[i])) == 0) return 1;
    return 0;
}

static void gradcheck(pn_norm_kind k)
{
    const char *nn = pn_norm_name(k);
    const int img = k == PN_NORM_BN ? 16 : 8;
    pn_model_config c = eff_cfg("effnet_b0", k, 8, 1, img, 3);
    pn_model *m = NULL;
    CHECK(pn_model_create(&m, &c, 31) == PN_OK, "%s: create: %s", nn, pn_last_error());
    if (!m) return;
    hashed_params(m);
    CHECK(set_droppath(m, 0.5f) > 0, "no drop-path op");
    harness_seed(77 + (unsigned)k);
    float x[GC_B * GC_IMG_MAX * GC_IMG_MAX];
    harness_fill_normal(x, (size_t)GC_B * img * img, 0, 1);
    int lab[GC_B] = { 2, 0, 1 };
    const size_t np = pn_model_num_params(m);
    float *g = malloc(np * sizeof(float)), *p0 = malloc(np * sizeof(float)), *d = malloc(np * sizeof(float));
    pn_model_zero_grad(m);
    const double l0 = gc_loss(m, x, lab);
    CHECK(isfinite(l0), "%s: loss %g (%s)", nn, l0, pn_last_error());
    CHECK(pn_model_backward(m, 1.0f / GC_B) == PN_OK, "%s: backward: %s", nn, pn_last_error());
    memcpy(g, pn_model_grads(m), np * sizeof(float));
    memcpy(p0, pn_model_params(m), np * sizeof(float));
    int nt, checked = 0;
    const pn_tensor_info *t = pn_model_param_table(m, &nt);
    double worst = 0;
    for (int a = 0; a < nt; a++) {
        const size_t pick = (size_t)(harness_uniform() * t[a].numel);
        if (gc_sampled(t[a].name)) {
            const size_t idx = t[a].offset + pick;
            double fd = 0, e = gc_one(m, p0, NULL, idx, g[idx], 0.05, x, lab, &fd);
            CHECK(e <= 1, "%s %s[%zu]: analytic %.6g, finite difference %.6g", nn, t[a].name,
                  idx - t[a].offset, g[idx], fd);
            worst = fmax(worst, e);
            checked++;
        }
    }
    double gd = 0, dn = 0;
    for (size_t i = 0; i < np; i++) {
        d[i] = (float)harness_normal();
        dn += (double)d[i] * d[i];
    }
    for (size_t i = 0; i < np; i++) {
        d[i] = (float)(d[i] / sqrt(dn));
        gd += (double)g[i] * d[i];
    }
    double fdd = 0, ed = gc_one(m, p0, d, 0, gd, 0.02, x, lab, &fdd);
    CHECK(ed <= 1, "%s: directional derivative %.6g, g.d %.6g", nn, fdd, gd);
    if (verbose)
        printf("  %s: loss %.6f, %d elements, worst err/tol %.3f; g.d %.6g fd %.6g (err/tol %.3g)\n", nn, l0,
               checked, worst, gd, fdd, ed);
    free(g);
    free(p0);
    free(d);
    pn_model_free(m);
}

TEST(effnet_gradcheck_bn) { gradcheck(PN_NORM_BN); }
TEST(effnet_gradcheck_gn_pn) { gradcheck(PN_NORM_GN_PN); }

/* ------------------------------------------------------------ inference folding */
/* pn_model_fold (proxynorm eval --fold) on effnet: with bn every BatchNorm follows a
 * convolution read by nothing else and folds into it (stem, expand, depthwise, project,
 * head: 1 + 16 * 3 - 1 + 1 = 49 in b0, whose first block has no expand conv); PN-Act with
 * SiLU has nothing to fold. The folded model gives the same logits (float rounding of the
 * folded weights: 2e-5 of the largest logit + 1e-4 relative, as tests/test_model.c) and
 * the same predictions. */
static void fold_check(pn_norm_kind k, int want)
{
    pn_model_config c = eff_cfg("effnet_b0", k, 8, 1, 16, 3);
    pn_model *m = NULL;
    CHECK(pn_model_create(&m, &c, 3) == PN_OK, "%s: %s", pn_norm_name(k), pn_last_error());
    if (!m) return;
    hashed_params(m);
    enum { B = 4 };
    float x[B * 256], l0[B * 3];
    const float *lg;
    harness_seed(91);
    for (int r = 0; r < 3; r++) { /* BN: move the running statistics */
        harness_fill_normal(x, B * 256, 0.2 * r, 1 + 0.3 * r);
        CHECK(pn_model_forward(m, x, B, 1, &lg) == PN_OK, "%s", pn_last_error());
    }
    harness_fill_normal(x, B * 256, 0, 1);
    CHECK(pn_model_forward(m, x, B, 0, &lg) == PN_OK, "%s", pn_last_error());
    memcpy(l0, lg, sizeof l0);
    int nf = -1;
    CHECK(pn_model_fold(m, &nf) == PN_OK, "%s: fold: %s", pn_norm_name(k), pn_last_error());
    CHECK(nf == want, "%s: %d norms folded, expected %d", pn_norm_name(k), nf, want);
    CHECK(pn_model_forward(m, x, B, 0, &lg) == PN_OK, "%s: folded forward: %s", pn_norm_name(k), pn_last_error());
    double lmax = 0;
    for (int i = 0; i < B * 3; i++) lmax = fmax(lmax, fabs(l0[i]));
    double e = harness_max_err(lg, l0, B * 3, 2e-5 * fmax(lmax, 1), 1e-4);
    CHECK(e <= 1, "%s: folded logits differ (err/tol %.3g)", pn_norm_name(k), e);
    for (int b = 0; b < B; b++) {
        int a0 = 0, a1 = 0;
        for (int j = 1; j < 3; j++) {
            if (l0[b * 3 + j] > l0[b * 3 + a0]) a0 = j;
            if (lg[b * 3 + j] > lg[b * 3 + a1]) a1 = j;
        }
        CHECK(a0 == a1, "%s: sample %d predicted %d unfolded, %d folded", pn_norm_name(k), b, a0, a1);
    }
    if (verbose) printf("  fold %s: %d norms folded, err/tol %.3g\n", pn_norm_name(k), nf, e);
    pn_model_free(m);
}

TEST(effnet_fold)
{
    fold_check(PN_NORM_BN, 49);
    fold_check(PN_NORM_GN_PN, 0);
}

/* ------------------------------------------------------------ drop path, shapes */
static int head_hw(void *ctx, const pn_norm_info *ni)
{
    if (strcmp(ni->name, "head.norm") == 0) *(int *)ctx = ni->H * 1000 + ni->W;
    return 0;
}

TEST(effnet_droppath)
{
    pn_model_config c = eff_cfg("effnet_b0", PN_NORM_GN_PN, 8, 1, 8, 3);
    pn_model *m = NULL;
    CHECK(pn_model_create(&m, &c, 5) == PN_OK, "create: %s", pn_last_error());
    if (!m) return;
    hashed_params(m);
    const int B = 4, K = 3;
    float x[4 * 64];
    harness_seed(3);
    harness_fill_normal(x, 4 * 64, 0, 1);
    const float *lg;
    float a[12], b2[12], e0[12], e1[12];
    /* default probabilities (0.2 i / n): evaluation is the identity */
    CHECK(pn_model_forward(m, x, B, 0, &lg) == PN_OK, "eval: %s", pn_last_error());
    memcpy(e0, lg, sizeof e0);
    set_droppath(m, 0.0f);
    pn_model_forward(m, x, B, 0, &lg);
    memcpy(e1, lg, sizeof e1);
    CHECK(memcmp(e0, e1, sizeof e0) == 0, "evaluation depends on the drop probability");
    /* training: same (seed, step) -> same output; another step -> another one */
    set_droppath(m, 0.5f);
    pn_model_set_step(m, 11, 1);
    pn_model_forward(m, x, B, 1, &lg);
    memcpy(a, lg, sizeof a);
    pn_model_set_step(m, 11, 1);
    pn_model_forward(m, x, B, 1, &lg);
    memcpy(b2, lg, sizeof b2);
    CHECK(memcmp(a, b2, sizeof a) == 0, "same (seed, step), different drop-path masks");
    pn_model_set_step(m, 11, 2);
    pn_model_forward(m, x, B, 1, &lg);
    CHECK(memcmp(a, lg, (size_t)B * K * sizeof(float)) != 0, "another step, same masks");
    /* a second micro-batch of the same step draws new masks */
    pn_model_set_step(m, 11, 1);
    pn_model_forward(m, x, B, 1, &lg);
    pn_model_forward(m, x, B, 1, &lg);
    CHECK(memcmp(a, lg, (size_t)B * K * sizeof(float)) != 0, "second micro-batch, same masks");
    pn_model_free(m);
}

TEST(effnet_shapes)
{
    /* small images: total stride 8 (28 -> 4); ImageNet size: 32 (224 -> 7) */
    static const struct { int image, hw; } cases[] = { { 28, 4 }, { 8, 1 }, { 64, 2 }, { 224, 7 } };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        pn_model_config c = eff_cfg("effnet_b0", PN_NORM_BN, 8, 1, cases[i].image, 10);
        pn_model *m = NULL;
        CHECK(pn_model_create(&m, &c, 1) == PN_OK, "image %d: %s", cases[i].image, pn_last_error());
        if (!m) continue;
        int hw = -1;
        pn_model_visit_norms(m, head_hw, &hw);
        CHECK(hw == cases[i].hw * 1000 + cases[i].hw, "image %d: head map %dx%d, expected %dx%d",
              cases[i].image, hw / 1000, hw % 1000, cases[i].hw, cases[i].hw);
        pn_model_free(m);
    }
    CHECK(pn_model_default_width("effnet_b0", 28) == 32, "default width %d",
          pn_model_default_width("effnet_b0", 28));
}

TEST(effnet_bad_configs)
{
    const char *bad[] = { "effnet_b3", "effnet_b", "effnet", "effnet_b0x", "EFFNET_B0" };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        pn_model_config c = eff_cfg(bad[i], PN_NORM_BN, 8, 1, 8, 3);
        pn_model *m = NULL;
        CHECK(pn_model_create(&m, &c, 1) == PN_ERR_ARG, "arch %s accepted", bad[i]);
        pn_model_free(m);
    }
    pn_model_config c = eff_cfg("effnet_b1", PN_NORM_GN_PN, 0, 1, 8, 3);
    pn_model *m = NULL;
    CHECK(pn_model_create(&m, &c, 1) == PN_ERR_ARG, "width 0 accepted");
    pn_model_free(m);
    m = NULL;
    c = eff_cfg("effnet_b1", PN_NORM_GN, 8, 1, 8, 3);
    c.groups = 3; /* 8 channels are not divisible into 3 groups */
    CHECK(pn_model_create(&m, &c, 1) == PN_ERR_ARG, "gn groups 3 accepted");
    pn_model_free(m);
    CHECK(pn_model_set_step(NULL, 1, 1) == PN_ERR_ARG, "set_step(NULL) accepted");
}

int main(void)
{
    verbose = getenv("EFFNET_VERBOSE") ? atoi(getenv("EFFNET_VERBOSE")) : 0;
    /* tiny models (besides the parameter counts): thread synchronization would dominate */
    pn_set_threads(1);
    RUN(effnet_param_counts);
    RUN(effnet_cli_info);
    RUN(effnet_golden_bn);
    RUN(effnet_golden_gn_pn);
    RUN(effnet_gradcheck_bn);
    RUN(effnet_gradcheck_gn_pn);
    RUN(effnet_fold);
    RUN(effnet_droppath);
    RUN(effnet_shapes);
    RUN(effnet_bad_configs);
    return harness_summary();
}
