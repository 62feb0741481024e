/* Recomputation of norm outputs in the backward (src/nn/model.c, plan_recompute;
 * pn_model_set_recompute): training with it is bit for bit training without it (logits,
 * losses, gradients, parameters, BN running statistics), for every norm and the three
 * architecture families, and it lowers the activation memory by about the norm outputs'
 * size. */
#include "harness.h"

#include "nn/build.h"
#include "nn/model.h"

static pn_model_config cfg_of(const char *arch, pn_norm_kind k, int norm_batch, int width, int image)
{
    pn_model_config c;
    pn_model_config_default(&c);
    snprintf(c.arch, sizeof c.arch, "%s", arch);
    c.norm = k;
    c.groups = 2;
    c.norm_batch = norm_batch;
    c.width = width;
    c.in_channels = 3;
    c.image = image;
    c.classes = 5;
    return c;
}

static int count_norm(void *ctx, const pn_norm_info *ni)
{
    (void)ni;
    ++*(int *)ctx;
    return 0;
}

/* Norm outputs of a model after a forward: how many, how many not kept (output NULL). */
typedef struct { int n, dropped; } norm_outputs;
static int visit_outputs(void *ctx, const pn_norm_info *ni)
{
    norm_outputs *o = ctx;
    o->n++;
    o->dropped += ni->output == NULL;
    return 0;
}

static int same(const float *a, const float *b, size_t n) { return memcmp(a, b, n * sizeof(float)) == 0; }

/* steps SGD steps on two models of config c (same seed), recompute on in a and off in b,
 * activations retained (pn_model_set_retain_activations) in b, and in a if retain:
 * everything equal to the bit. Returns the recomputed values of a (checked > 0 by the caller where the model
 * has norms). */
static int train_pair_s(const pn_model_config *c, int B, int steps, const pn_bn_override *ovr, int unstore,
                        int retain, int *unstored)
{
    pn_model *a = NULL, *b = NULL;
    int recomputed = -1, fwd_dropped = 0;
    const char *what = c->arch;
    const char *nn = pn_norm_name(c->norm);
    if (pn_model_create(&a, c, 7) != PN_OK || pn_model_create(&b, c, 7) != PN_OK) {
        CHECK(0, "%s %s: create: %s", what, nn, pn_last_error());
        goto done;
    }
    pn_model_set_recompute(a, 1);
    pn_model_set_recompute(b, 0);
    pn_model_set_unstore(a, unstore);
    pn_model_set_retain_activations(a, retain);
    pn_model_set_retain_activations(b, 1);
    if (ovr) {
        CHECK(pn_model_set_bn_override(a, ovr) == PN_OK && pn_model_set_bn_override(b, ovr) == PN_OK,
              "override: %s", pn_last_error());
    }
    const size_t np = pn_model_num_params(a), nb = pn_model_num_buffers(a);
    const size_t nx = (size_t)B * c->in_channels * c->image * c->image;
    const size_t nl = (size_t)B * c->classes;
    float *x = malloc(nx * sizeof *x), *g1 = malloc(np * sizeof *g1);
    int *lab = malloc((size_t)B * sizeof *lab);
    if (!x || !g1 || !lab) {
        CHECK(0, "oom");
        free(x); free(g1); free(lab);
        goto done;
    }
    harness_seed(1234);
    for (int s = 0; s < steps; s++) {
        harness_fill_normal(x, nx, 0.2, 1.0);
        for (int i = 0; i < B; i++) lab[i] = (int)(harness_uniform() * c->classes) % c->classes;
        const float *la = NULL, *lb = NULL;
        double lossa = 0, lossb = 0;
        int ok = pn_model_forward(a, x, B, 1, &la) == PN_OK && pn_model_forward(b, x, B, 1, &lb) == PN_OK;
        CHECK(ok, "%s %s: forward: %s", what, nn, pn_last_error());
        if (!ok) break;
        CHECK(same(la, lb, nl), "%s %s step %d: logits differ", what, nn, s);
        if (s == 0) { /* after the forward: the norm outputs recomputed in the backward are not kept */
            const int rec = pn_model_recomputed_values(a);
            norm_outputs o = { 0, 0 };
            pn_model_visit_norms(a, visit_outputs, &o);
            fwd_dropped = o.dropped;
            CHECK(o.dropped <= rec && (rec == 0 || o.dropped > 0 || o.n == 0),
                  "%s %s: %d of %d norm outputs reported dropped, %d values recomputed", what, nn, o.dropped, o.n,
                  rec);
        }
        ok = pn_model_loss(a, lab, 0.1f, &lossa, NULL) == PN_OK &&
             pn_model_loss(b, lab, 0.1f, &lossb, NULL) == PN_OK;
        CHECK(ok && memcmp(&lossa, &lossb, sizeof lossa) == 0, "%s %s step %d: losses %.17g %.17g", what, nn,
              s, lossa, lossb);
        pn_model_zero_grad(a);
        pn_model_zero_grad(b);
        ok = pn_model_backward(a, 1.0f / B) == PN_OK && pn_model_backward(b, 1.0f / B) == PN_OK;
        CHECK(ok, "%s %s: backward: %s", what, nn, pn_last_error());
        if (!ok) break;
        CHECK(same(pn_model_grads(a), pn_model_grads(b), np), "%s %s step %d: gradients differ", what, nn, s);
        if (s == 0) {
            /* a second backward of the same forward recomputes again: the same gradients;
             * without retained activations it is refused (the first reused their memory) */
            memcpy(g1, pn_model_grads(a), np * sizeof *g1);
            if (!retain) {
                CHECK(pn_model_backward(a, 1.0f / B) == PN_ERR_ARG && same(pn_model_grads(a), g1, np),
                      "%s %s: a second backward without retained activations not refused", what, nn);
            } else {
                pn_model_zero_grad(a);
                CHECK(pn_model_backward(a, 1.0f / B) == PN_OK && same(pn_model_grads(a), g1, np),
                      "%s %s: a second backward differs", what, nn);
            }
            recomputed = pn_model_recomputed_values(a);
            if (unstored) *unstored = pn_model_unstored_values(a);
            CHECK(unstore || pn_model_unstored_values(a) == 0, "%s %s: unstored values with unstore off", what, nn);
            CHECK(pn_model_recomputed_values(b) == 0, "%s %s: recomputed with recompute off", what, nn);
            norm_outputs o = { 0, 0 };
            pn_model_visit_norms(a, visit_outputs, &o);
            CHECK(o.dropped == (retain ? fwd_dropped : o.n), "%s %s: %d of %d norm outputs after the backward",
                  what, nn, o.dropped, o.n);
        }
        float *pa = pn_model_params(a), *pb = pn_model_params(b);
        const float *ga = pn_model_grads(a), *gb = pn_model_grads(b);
        for (size_t i = 0; i < np; i++) {
            pa[i] -= 0.1f * ga[i];
            pb[i] -= 0.1f * gb[i];
        }
    }
    CHECK(same(pn_model_params(a), pn_model_params(b), np), "%s %s: parameters differ", what, nn);
    CHECK(same(pn_model_buffers(a), pn_model_buffers(b), nb), "%s %s: buffers differ", what, nn);
    {   /* an evaluation forward through the recomputed values' memory */
        const float *la = NULL, *lb = NULL;
        int ok = pn_model_forward(a, x, B, 0, &la) == PN_OK && pn_model_forward(b, x, B, 0, &lb) == PN_OK;
        CHECK(ok && same(la, lb, nl), "%s %s: evaluation logits differ", what, nn);
    }
    free(x);
    free(g1);
    free(lab);
done:
    pn_model_free(a);
    pn_model_free(b);
    return recomputed;
}

static int train_pair_u(const pn_model_config *c, int B, int steps, const pn_bn_override *ovr, int unstore,
                        int *unstored)
{
    return train_pair_s(c, B, steps, ovr, unstore, 0, unstored);
}

static int train_pair(const pn_model_config *c, int B, int steps, const pn_bn_override *ovr)
{
    return train_pair_u(c, B, steps, ovr, 1, NULL);
}

TEST(resnet_all_norms_bit_identical)
{
    static const pn_norm_kind norms[] = { PN_NORM_BN, PN_NORM_GN, PN_NORM_LN, PN_NORM_IN,
                                          PN_NORM_GN_PN, PN_NORM_LN_PN, PN_NORM_LN_WS, PN_NORM_NONE };
    for (size_t i = 0; i < sizeof norms / sizeof *norms; i++) {
        pn_model_config c = cfg_of("resnet20", norms[i], 0, 4, 8);
        int r = train_pair(&c, 4, 3, NULL);
        CHECK(r > 0, "resnet20 %s: nothing recomputed", pn_norm_name(norms[i]));
        if (i == 0 || norms[i] == PN_NORM_GN_PN) /* recompute with retained activations */
            CHECK(train_pair_s(&c, 4, 2, NULL, 1, 1, NULL) > 0, "resnet20 %s: nothing recomputed",
                  pn_norm_name(norms[i]));
    }
    /* ghost BN: statistics (and the saved multipliers) per normalization batch of 2 */
    pn_model_config c = cfg_of("resnet20", PN_NORM_BN, 2, 4, 8);
    CHECK(train_pair(&c, 4, 3, NULL) > 0, "ghost BN: nothing recomputed");
}

TEST(bottleneck_and_effnet_bit_identical)
{
    static const struct { const char *arch; pn_norm_kind k; } cases[] = {
        { "resnet50", PN_NORM_BN }, { "resnet50", PN_NORM_GN_PN }, { "resnet50", PN_NORM_NONE },
        { "effnet_b0", PN_NORM_BN },      /* SiLU after BN: the saved pre-activation */
        { "effnet_b0", PN_NORM_GN },
        { "effnet_b0", PN_NORM_GN_PN },   /* fused GN + PN-Act with SiLU */
        { "effnet_b0", PN_NORM_LN_PN },
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        pn_model_config c = cfg_of(cases[i].arch, cases[i].k, 0, 8, 8);
        int r = train_pair(&c, 2, 2, NULL);
        CHECK(r > 0, "%s %s: nothing recomputed", cases[i].arch, pn_norm_name(cases[i].k));
    }
}

/* BN through the override hooks (here the built-in kernels again) is not recomputed. */
static int ovr_fwd(void *ctx, float *out, float *mean, float *rstd, float *rm, float *rv, const float *inp,
                   const float *w, const float *b, int N, int C, int HW, float mom, float eps)
{
    (void)ctx;
    return pn_batchnorm_forward_train(out, mean, rstd, rm, rv, inp, w, b, N, C, HW, 0, mom, eps);
}
static int ovr_bwd(void *ctx, float *dinp, float *dw, float *db, const float *dout, const float *inp,
                   const float *mean, const float *rstd, const float *w, int N, int C, int HW)
{
    (void)ctx;
    return pn_batchnorm_backward(dinp, dw, db, dout, inp, mean, rstd, w, N, C, HW, 0);
}

/* Width 8: every 3x3 convolution has 8 to 32 channels, the direct kernel's shapes, so the
 * norm + ReLU outputs they read are never written in training (unstored); without the
 * direct kernel (no AVX2 at build time) nothing is unstored. Bit for bit as storing them,
 * and as recomputing them into memory. */
TEST(unstored_bit_identical)
{
    static const pn_norm_kind norms[] = { PN_NORM_BN, PN_NORM_GN, PN_NORM_LN, PN_NORM_IN,
                                          PN_NORM_GN_PN, PN_NORM_LN_PN, PN_NORM_LN_WS };
    const int direct = pn_conv2d_src_ok(&(pn_conv_shape){ 1, 8, 8, 8, 8, 3, 3, 1, 1, 1 });
    for (size_t i = 0; i <= sizeof norms / sizeof *norms; i++) {
        const int ghost = i == sizeof norms / sizeof *norms; /* and ghost BN */
        pn_model_config c = cfg_of("resnet20", ghost ? PN_NORM_BN : norms[i], ghost ? 2 : 0, 8, 8);
        int u = -1, u0 = -1;
        const int r = train_pair_u(&c, 4, 3, NULL, 1, &u);
        CHECK(r > 0 && (direct ? u > 0 && u < r : u == 0), "resnet20 %s%s: %d unstored of %d recomputed",
              pn_norm_name(c.norm), ghost ? " ghost" : "", u, r);
        train_pair_u(&c, 4, 2, NULL, 0, &u0); /* recomputed into memory instead: the same bits */
        CHECK(u0 == 0, "unstore off: %d unstored", u0);
        if (i == 0) printf("  resnet20 w8 bn: %d of %d recomputed values unstored\n", u, r);
    }
}

TEST(bn_override_not_recomputed)
{
    pn_bn_override o = { ovr_fwd, ovr_bwd, NULL };
    pn_model_config c = cfg_of("resnet20", PN_NORM_BN, 0, 4, 8);
    CHECK(train_pair(&c, 4, 2, &o) == 0, "BN through the override hooks was recomputed");
}

/* The activation memory of resnet20 bn at batch 128 (CIFAR shapes): with recompute it is
 * smaller than without by at least the norm outputs' bytes minus three times the largest
 * norm output (the recomputed outputs' own room; two suffice for this network). */
TEST(memory_resnet20_bn_batch128)
{
    const int B = 128;
    pn_model_config c = cfg_of("resnet20", PN_NORM_BN, 0, 16, 32);
    c.classes = 10;
    pn_model *on = NULL, *off = NULL;
    float *x = NULL;
    if (pn_model_create(&on, &c, 1) != PN_OK || pn_model_create(&off, &c, 1) != PN_OK) {
        CHECK(0, "create: %s", pn_last_error());
        goto done;
    }
    pn_model_set_recompute(on, 1);
    pn_model_set_recompute(off, 0);
    pn_model_set_retain_activations(on, 1); /* recomputation's own saving */
    pn_model_set_retain_activations(off, 1);
    /* the norm outputs' sizes: the model's norm layers (nn/build.h) */
    double norm_bytes = 0, largest = 0;
    int norms = 0;
    for (int i = 0; i < on->nops; i++) {
        const pn_op *op = &on->ops[i];
        if (!(op->vt->flags & PN_OP_IS_NORM)) continue;
        const pn_value *v = &on->vals[op->out];
        const double bytes = (double)B * v->C * v->H * v->W * sizeof(float);
        norm_bytes += bytes;
        if (bytes > largest) largest = bytes;
        norms++;
    }
    int visited = 0;
    pn_model_visit_norms(on, count_norm, &visited);
    CHECK(norms == visited && norms == 19, "%d norm ops, %d visited, resnet20 has 19", norms, visited);
    const size_t nx = (size_t)B * 3 * 32 * 32;
    x = malloc(nx * sizeof *x);
    if (!x) { CHECK(0, "oom"); goto done; }
    harness_seed(5);
    harness_fill_normal(x, nx, 0, 1);
    /* the arena is planned (and its bytes known) at the first forward of the batch */
    const float *lg;
    int ok = pn_model_forward(on, x, B, 1, &lg) == PN_OK && pn_model_forward(off, x, B, 1, &lg) == PN_OK;
    CHECK(ok, "forward: %s", pn_last_error());
    if (!ok) goto done;
    const double bon = (double)pn_model_activation_bytes(on), boff = (double)pn_model_activation_bytes(off);
    printf("  resnet20 bn B=128: activation bytes %.0f without recompute, %.0f with (norm outputs %.0f, "
           "%d values recomputed)\n", boff, bon, norm_bytes, pn_model_recomputed_values(on));
    CHECK(pn_model_recomputed_values(on) == norms, "%d values recomputed, %d norm outputs",
          pn_model_recomputed_values(on), norms);
    CHECK(boff - bon >= norm_bytes - 3 * largest, "saved %.0f bytes, expected >= %.0f", boff - bon,
          norm_bytes - 3 * largest);
done:
    free(x);
    pn_model_free(on);
    pn_model_free(off);
}

int main(void)
{
    RUN(resnet_all_norms_bit_identical);
    RUN(bottleneck_and_effnet_bit_identical);
    RUN(unstored_bit_identical);
    RUN(bn_override_not_recomputed);
    RUN(memory_resnet20_bn_batch128);
    return harness_summary();
}
