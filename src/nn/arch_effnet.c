/* EfficientNet b0, b1, b2 (Tan & Le 2019) as torchvision builds them, with every --norm.
 *
 * Names: effnet_b0, effnet_b1, effnet_b2 (width / depth multipliers 1.0/1.0, 1.0/1.1,
 * 1.1/1.2). --width w (default 32, torchvision's) is the stem's channel count before the
 * width multiplier: every channel count c of the table below becomes
 * make_divisible(c * mult * w / 32) (the nearest multiple of 8, at least 8, never more
 * than 10% below; torchvision's _make_divisible), every repeat count r becomes
 * ceil(r * depth multiplier).
 *
 *   stem   conv3x3 stride 2 (in -> c(32)), Norm + SiLU
 *   stage  expand ratio e, kernel k, stride s, out channels, repeats (b0):
 *            1: 1 3 1  16 1   2: 6 3 2  24 2   3: 6 5 2  40 2   4: 6 3 2  80 3
 *            5: 6 5 1 112 3   6: 6 5 2 192 4   7: 6 3 1 320 1
 *          (stride s at the first block of a stage, 1 after)
 *   MBConv cin -> cout, ce = make_divisible(cin * e):
 *            h = x
 *            if ce != cin: h = conv1x1(h, ce) -> Norm + SiLU        (expand_conv, expand_norm)
 *            h = depthwise conv kxk stride s (groups ce) -> Norm + SiLU  (dw_conv, dw_norm)
 *            h = SE(h, squeeze max(1, cin / 4), SiLU, sigmoid)        (se.fc1, se.fc2)
 *            h = conv1x1(h, cout) -> Norm without activation          (project_conv, project_norm)
 *            out = drop_path(h) + x   when s = 1 and cin = cout, else h
 *   head   conv1x1 (-> 4 * last channels, 1280 for b0), Norm + SiLU; global average pool;
 *          linear (no classifier dropout here; torchvision has Dropout(0.2) before it)
 *
 * Small images (< 64 px): the stem has stride 1 and stage 2 stride 1 (total stride 8
 * instead of 32: 28x28 -> 4x4 at the head, as 224 -> 7x7). Larger images: torchvision's.
 *
 * Norms (docs/ARCHITECTURE.md, "EfficientNet"): Norm + SiLU is the configured norm with
 * SiLU, i.e. GroupNorm/LayerNorm without affine followed by PN-Act with SiLU for gn+pn and
 * ln+pn; the projection's norm has no activation: a plain norm, and for the +pn kinds
 * GroupNorm/LayerNorm with a scale and no shift (pn_b_norm). There is no norm inside SE:
 * its input is already normalized (dw_norm) and its output is a per-sample channel gate in
 * (0, 1) that the next conv and project_norm see; as in the paper and the reference.
 *
 * Stochastic depth: block i of the n blocks (counted over all stages from 0) drops its
 * residual branch with probability 0.2 * i / n in training (torchvision's
 * stochastic_depth_prob = 0.2, StochasticDepth "row"), scaling kept branches by
 * 1 / (1 - p); identity in evaluation. The masks come from the stream
 * pn_droppath_stream(seed, step, block * 1024 + k) with (seed, step) set by
 * pn_model_set_step (the trainer calls it once per optimizer step) and k counting the
 * training forwards since (the micro-batches of a step): a resumed run draws the same
 * masks as an uninterrupted one.
 *
 * Parameter names: stem.conv.weight, stem.norm.*, stageS.blockB.{expand_conv.weight,
 * expand_norm.*, dw_conv.weight, dw_norm.*, se.fc1.weight (Cr,C,1,1), se.fc1.bias,
 * se.fc2.weight (C,Cr,1,1), se.fc2.bias, project_conv.weight, project_norm.*},
 * head.conv.weight, head.norm.*, fc.weight, fc.bias; torchvision's order (its state dict
 * maps tensor by tensor, tests/golden/gen_effnet.py). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "kernels/common.h"
#include "kernels/rng.h"
#include "nn/build.h"

#define EFFNET_SD_PROB 0.2

/* ------------------------------------------------------------ SE op */
/* p: fc1.weight (Cr,C), fc1.bias (Cr), fc2.weight (C,Cr), fc2.bias (C); C, HW, iattr[0] = Cr.
 * Saved: s (B,C), h (B,Cr), r (B,Cr), g (B,C). Work: the kernel's backward scratch. */
static size_t se_saved(const pn_model *m, const pn_op *op, int B)
{
    (void)m;
    return (size_t)B * (2 * (size_t)op->C + 2 * (size_t)op->iattr[0]);
}

static size_t se_work(const pn_model *m, pn_op *op, int B)
{
    (void)m;
    return pn_se_workspace(B, op->C, op->iattr[0]);
}

typedef struct { float *s, *h, *r, *g; } se_save;

static se_save se_layout(const pn_op *op, int B)
{
    const size_t C = (size_t)op->C, Cr = (size_t)op->iattr[0];
    se_save v;
    v.s = op->save;
    v.h = v.s + (size_t)B * C;
    v.r = v.h + (size_t)B * Cr;
    v.g = v.r + (size_t)B * Cr;
    return v;
}

static int se_fwd(pn_model *m, pn_op *op, const pn_fwd_args *a)
{
    se_save v = se_layout(op, a->B);
    return pn_se_forward(a->out, v.s, v.h, v.r, v.g, a->in[0], pn_op_param(m, op, 0),
                         pn_op_param(m, op, 1), pn_op_param(m, op, 2), pn_op_param(m, op, 3), a->B,
                         op->C, op->HW, op->iattr[0], op->act);
}

static int se_bwd(pn_model *m, pn_op *op, const pn_bwd_args *a)
{
    if (!a->din[0]) return pn_error(PN_ERR_ARG, "model: %s: squeeze-excitation of the model input", op->name);
    PN_CHECK(pn_se_workspace(a->B, op->C, op->iattr[0]) <= m->work_floats,
             "model: %s: workspace not planned for batch %d", op->name, a->B);
    se_save v = se_layout(op, a->B);
    return pn_se_backward(a->din[0], pn_op_grad(m, op, 0), pn_op_grad(m, op, 1), pn_op_grad(m, op, 2),
                          pn_op_grad(m, op, 3), a->dout, a->in[0], v.s, v.h, v.r, v.g,
                          pn_op_param(m, op, 0), pn_op_param(m, op, 2), a->B, op->C, op->HW,
                          op->iattr[0], op->act, m->work);
}

static double se_macs(const pn_model *m, const pn_op *op)
{
    (void)m;
    return 2.0 * op->C * op->iattr[0] + 2.0 * op->C * op->HW; /* two 1x1 convs, pool + gate */
}

/* PN_OP_IS_LINEAR: counted with the convolutions and linear layers (torchvision's SE is
 * two 1x1 convolutions with bias); never weight-standardized. */
static const pn_op_vt op_se = { .kind = "se", .saved = se_saved, .work = se_work, .forward = se_fwd,
                         .backward = se_bwd, .macs = se_macs, .flags = PN_OP_IS_LINEAR };

static pn_val b_se(pn_builder *b, pn_val x, const char *name, int Cr)
{
    int C, H, W;
    if (pn_b_shape(b, x, &C, &H, &W) != 0) return -1;
    if (Cr < 1) return pn_b_fail(b, PN_ERR_ARG, "model: %s: %d squeeze channels", name, Cr);
    pn_op *op;
    pn_val y = pn_b_op(b, &op_se, &x, 1, C, H, W, name, &op);
    if (y < 0) return -1;
    op->C = C;
    op->HW = H * W;
    op->act = PN_ACT_SILU;
    op->iattr[0] = Cr;
    char pre[112];
    snprintf(pre, sizeof pre, "%.100s.fc1", name);
    int s1[4] = { Cr, C, 1, 1 }, s2[4] = { C, Cr, 1, 1 };
    size_t w1 = pn_b_param(b, pre, "weight", 4, s1, 1, PN_INIT_HE, C);
    size_t b1 = pn_b_param(b, pre, "bias", 1, &Cr, 0, PN_INIT_ZERO, 0);
    snprintf(pre, sizeof pre, "%.100s.fc2", name);
    size_t w2 = pn_b_param(b, pre, "weight", 4, s2, 1, PN_INIT_HE, Cr);
    size_t b2 = pn_b_param(b, pre, "bias", 1, &C, 0, PN_INIT_ZERO, 0);
    if (w1 == PN_NONE || b1 == PN_NONE || w2 == PN_NONE || b2 == PN_NONE) return -1;
    op->p[0] = w1;
    op->p[1] = b1;
    op->p[2] = w2;
    op->p[3] = b2;
    return y;
}

/* ------------------------------------------------------------ drop-path op */
/* fattr[0] = drop probability; iattr[0] = block index; iattr[1] = training forwards since
 * the last pn_model_set_step; iattr[2..3] = seed, iattr[4..5] = step (uint64 halves).
 * Saved: the mask (B). */
static void dp_get(const pn_op *op, uint64_t *seed, uint64_t *step)
{
    *seed = (uint64_t)(uint32_t)op->iattr[2] << 32 | (uint32_t)op->iattr[3];
    *step = (uint64_t)(uint32_t)op->iattr[4] << 32 | (uint32_t)op->iattr[5];
}

static void dp_set(pn_op *op, uint64_t seed, uint64_t step)
{
    op->iattr[1] = 0;
    op->iattr[2] = (int)(uint32_t)(seed >> 32);
    op->iattr[3] = (int)(uint32_t)seed;
    op->iattr[4] = (int)(uint32_t)(step >> 32);
    op->iattr[5] = (int)(uint32_t)step;
}

static size_t dp_saved(const pn_model *m, const pn_op *op, int B)
{
    (void)m;
    (void)op;
    return (size_t)B;
}

static int dp_fwd(pn_model *m, pn_op *op, const pn_fwd_args *a)
{
    const pn_value *v = &m->vals[op->out];
    const size_t D = (size_t)v->C * (size_t)v->H * (size_t)v->W;
    uint64_t seed, step;
    dp_get(op, &seed, &step);
    pn_rng r = pn_droppath_stream(seed, step, (uint64_t)op->iattr[0] * 1024u + (uint32_t)op->iattr[1]);
    int rc = pn_droppath_mask(op->save, a->B, op->fattr[0], a->training, &r);
    if (rc != PN_OK) return rc;
    if (a->training) op->iattr[1]++;
    return pn_droppath_forward(a->out, a->in[0], NULL, op->save, a->B, D);
}

static int dp_bwd(pn_model *m, pn_op *op, const pn_bwd_args *a)
{
    const pn_value *v = &m->vals[op->out];
    if (!a->din[0]) return PN_OK;
    return pn_droppath_backward(a->din[0], a->dout, op->save, a->B,
                                (size_t)v->C * (size_t)v->H * (size_t)v->W);
}

static const pn_op_vt op_droppath = { .kind = "droppath", .saved = dp_saved, .forward = dp_fwd,
                               .backward = dp_bwd };

static pn_val b_droppath(pn_builder *b, pn_val x, const char *name, double p, int block)
{
    int C, H, W;
    if (pn_b_shape(b, x, &C, &H, &W) != 0) return -1;
    pn_op *op;
    pn_val y = pn_b_op(b, &op_droppath, &x, 1, C, H, W, name, &op);
    if (y < 0) return -1;
    op->fattr[0] = (float)p;
    op->iattr[0] = block;
    dp_set(op, 0, 0);
    return y;
}

int pn_model_set_step(pn_model *m, uint64_t seed, uint64_t step)
{
    PN_CHECK_PTR(m);
    for (int i = 0; i < m->nops; i++)
        if (m->ops[i].vt == &op_droppath) dp_set(&m->ops[i], seed, step);
    return PN_OK;
}

/* ------------------------------------------------------------ the network */
static const struct { int e, k, s, cout, n; } STAGES[7] = {
    { 1, 3, 1, 16, 1 }, { 6, 3, 2, 24, 2 }, { 6, 5, 2, 40, 2 }, { 6, 3, 2, 80, 3 },
    { 6, 5, 1, 112, 3 }, { 6, 5, 2, 192, 4 }, { 6, 3, 1, 320, 1 },
};

static int variant(const char *arch, double *wm, double *dm)
{
    static const struct { const char *name; double w, d; } V[] = {
        { "effnet_b0", 1.0, 1.0 }, { "effnet_b1", 1.0, 1.1 }, { "effnet_b2", 1.1, 1.2 },
    };
    for (size_t i = 0; i < sizeof V / sizeof *V; i++)
        if (strcmp(arch, V[i].name) == 0) {
            *wm = V[i].w;
            *dm = V[i].d;
            return 0;
        }
    return -1;
}

static int match(const char *arch)
{
    double w, d;
    return variant(arch, &w, &d) == 0;
}

static int default_width(const char *arch, int image)
{
    (void)arch;
    (void)image;
    return 32;
}

/* torchvision's _make_divisible(v, 8): nearest multiple of 8, at least 8, and not more
 * than 10% below v. */
static long make_div(double v)
{
    long n = (long)(v + 4.0) / 8 * 8;
    if (n < 8) n = 8;
    if ((double)n < 0.9 * v) n += 8;
    return n;
}

static int build(pn_builder *b, const pn_model_config *c)
{
    double wm, dm;
    if (variant(c->arch, &wm, &dm) != 0) return pn_b_fail(b, PN_ERR_ARG, "model: unknown arch '%s'", c->arch);
    if (c->width < 1 || c->width > 4096)
        return pn_b_fail(b, PN_ERR_ARG, "model: %s: width %d out of range [1, 4096]", c->arch, c->width);
    wm = wm * c->width / 32.0; /* the order of tests/golden/torch_models.py */
    const int small = c->image < 64;
    int reps[7], total = 0;
    for (int s = 0; s < 7; s++) {
        reps[s] = (int)ceil(STAGES[s].n * dm);
        total += reps[s];
    }
    int cin = (int)make_div(32 * wm);
    pn_val x = pn_b_conv(b, pn_b_input(b), "stem.conv", cin, 3, small ? 1 : 2, 1, 0);
    x = pn_b_norm_act(b, x, "stem.norm", PN_ACT_SILU);
    int id = 0;
    for (int s = 0; s < 7; s++) {
        const int cout = (int)make_div(STAGES[s].cout * wm);
        const int st = (small && s == 1) ? 1 : STAGES[s].s, k = STAGES[s].k;
        for (int i = 0; i < reps[s]; i++, id++) {
            const int stride = i == 0 ? st : 1;
            const int ce = (int)make_div((double)cin * STAGES[s].e);
            char pre[48], nm[96];
            snprintf(pre, sizeof pre, "stage%d.block%d", s + 1, i);
            pn_val h = x;
            if (ce != cin) {
                snprintf(nm, sizeof nm, "%s.expand_conv", pre);
                h = pn_b_conv(b, h, nm, ce, 1, 1, 1, 0);
                snprintf(nm, sizeof nm, "%s.expand_norm", pre);
                h = pn_b_norm_act(b, h, nm, PN_ACT_SILU);
            }
            snprintf(nm, sizeof nm, "%s.dw_conv", pre);
            h = pn_b_conv(b, h, nm, ce, k, stride, ce, 0);
            snprintf(nm, sizeof nm, "%s.dw_norm", pre);
            h = pn_b_norm_act(b, h, nm, PN_ACT_SILU);
            snprintf(nm, sizeof nm, "%s.se", pre);
            h = b_se(b, h, nm, cin / 4 > 1 ? cin / 4 : 1);
            snprintf(nm, sizeof nm, "%s.project_conv", pre);
            h = pn_b_conv(b, h, nm, cout, 1, 1, 1, 0);
            snprintf(nm, sizeof nm, "%s.project_norm", pre);
            h = pn_b_norm(b, h, nm);
            if (stride == 1 && cin == cout) {
                const double p = EFFNET_SD_PROB * id / total;
                if (p > 0) {
                    snprintf(nm, sizeof nm, "%s.droppath", pre);
                    h = b_droppath(b, h, nm, p, id);
                }
                x = pn_b_add(b, h, x);
            } else {
                x = h;
            }
            cin = cout;
        }
    }
    x = pn_b_conv(b, x, "head.conv", 4 * cin, 1, 1, 1, 0);
    x = pn_b_norm_act(b, x, "head.norm", PN_ACT_SILU);
    x = pn_b_gap(b, x);
    pn_b_linear(b, x, "fc", c->classes);
    return pn_b_status(b);
}

const pn_arch pn_arch_effnet = {
    "effnet",
    "effnet_b0, effnet_b1, effnet_b2 (EfficientNet: MBConv, squeeze-excitation, SiLU, "
    "stochastic depth; --width 32 is torchvision's)",
    match, build, default_width,
};
