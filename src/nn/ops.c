/* The built-in op kinds of the model engine (see nn/build.h) and their builder calls:
 * convolution (optionally weight-standardized), norm + activation / norm + PN-Act,
 * norm without activation, residual add, max pooling, global average pooling, linear. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/common.h"
#include "kernels/norm_internal.h"
#include "nn/build.h"

/* Elementwise loops of the plain norms: OpenMP only above ~64K elements (fork/join costs
 * more than the loop below that); omp simd because the compiler will not vectorize a
 * select through pointers that may alias. */
#define EW_PAR_MIN 65536

static void relu_inplace(float *x, size_t n)
{
    #pragma omp parallel for simd schedule(static) if (n >= EW_PAR_MIN)
    for (size_t i = 0; i < n; i++) x[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

/* dy = out > 0 ? dout : 0 (dy may be dout). */
static void relu_mask(float *dy, const float *dout, const float *out, size_t n)
{
    #pragma omp parallel for simd schedule(static) if (n >= EW_PAR_MIN)
    for (size_t i = 0; i < n; i++) dy[i] = out[i] > 0.0f ? dout[i] : 0.0f;
}

static int is_pn(pn_norm_kind k) { return k == PN_NORM_GN_PN || k == PN_NORM_LN_PN; }

/* ------------------------------------------------------------ convolution */
static size_t conv_work(const pn_model *m, pn_op *op, int B)
{
    (void)m;
    op->cs.N = B;
    return pn_conv2d_workspace(&op->cs);
}

static const float *conv_weight(const pn_model *m, const pn_op *op)
{
    return op->what ? op->what : m->params + op->p[0];
}

static int conv_fwd(pn_model *m, pn_op *op, const pn_fwd_args *a)
{
    op->cs.N = a->B;
    PN_CHECK(pn_conv2d_workspace(&op->cs) <= m->work_floats,
             "model: thread count changed since the arena was planned (pn_set_threads between forward and backward?)");
    const float *w = op->fw ? op->fw : conv_weight(m, op), *bias = op->fb ? op->fb : pn_op_param(m, op, 1);
    if (a->src[0]) return pn_conv2d_forward_src(a->out, a->src[0], w, bias, &op->cs, m->work);
    return pn_conv2d_forward(a->out, a->in[0], w, bias, &op->cs, m->work);
}

/* The backward from the stored input or from its planes (a->src[0]). */
static int conv_backward_in(pn_model *m, pn_op *op, const pn_bwd_args *a, float *dweight, const float *w)
{
    if (a->src[0])
        return pn_conv2d_backward_src(a->din[0], dweight, pn_op_grad(m, op, 1), a->dout, a->src[0], w,
                                      &op->cs, m->work);
    return pn_conv2d_backward(a->din[0], dweight, pn_op_grad(m, op, 1), a->dout, a->in[0], w, &op->cs,
                              m->work);
}

/* Its input as planes: the direct kernel's shapes (not a folded, inference-only conv). */
static int conv_accepts_src(const pn_model *m, const pn_op *op, int k)
{
    (void)m;
    return k == 0 && !op->fw && pn_conv2d_src_ok(&op->cs);
}

static int conv_bwd(pn_model *m, pn_op *op, const pn_bwd_args *a)
{
    op->cs.N = a->B;
    PN_CHECK(pn_conv2d_workspace(&op->cs) <= m->work_floats,
             "model: thread count changed since the arena was planned (pn_set_threads between forward and backward?)");
    if (!op->what) return conv_backward_in(m, op, a, m->grads + op->p[0], m->params + op->p[0]);
    const int O = op->cs.Cout, K = op->cs.Cin / op->cs.groups * op->cs.KH * op->cs.KW;
    memset(m->dwhat, 0, (size_t)O * (size_t)K * sizeof(float));
    int rc = conv_backward_in(m, op, a, m->dwhat, op->what);
    if (rc != PN_OK) return rc;
    return pn_ws_backward(m->grads + op->p[0], m->dwhat, m->params + op->p[0], op->wmean,
                          op->wrstd, O, K);
}

static double conv_macs(const pn_model *m, const pn_op *op)
{
    (void)m;
    int ho, wo;
    pn_conv_shape s = op->cs;
    s.N = 1;
    if (pn_conv_out_hw(&s, &ho, &wo) != PN_OK) return 0;
    return (double)ho * wo * (double)s.Cout * (double)(s.Cin / s.groups) * s.KH * s.KW;
}

const pn_op_vt pn_op_conv = { .kind = "conv", .work = conv_work, .forward = conv_fwd,
                              .backward = conv_bwd, .macs = conv_macs, .flags = PN_OP_IS_CONV,
                              .accepts_src = conv_accepts_src };

pn_val pn_b_conv(pn_builder *b, pn_val x, const char *name, int cout, int k, int stride,
                 int groups, unsigned flags)
{
    int C, H, W;
    if (pn_b_shape(b, x, &C, &H, &W) != 0) return -1;
    if (cout < 1 || k < 1 || stride < 1 || groups < 1)
        return pn_b_fail(b, PN_ERR_ARG, "model: %s: bad convolution (cout %d, kernel %d, stride %d, groups %d)",
                         name, cout, k, stride, groups);
    if (C % groups || cout % groups)
        return pn_b_fail(b, PN_ERR_ARG, "model: %s: %d input and %d output channels are not divisible into %d groups",
                         name, C, cout, groups);
    const int pad = k / 2;
    const int Ho = (H + 2 * pad - k) / stride + 1, Wo = (W + 2 * pad - k) / stride + 1;
    if (H + 2 * pad < k || W + 2 * pad < k || Ho < 1 || Wo < 1)
        return pn_b_fail(b, PN_ERR_ARG, "model: %s: a %dx%d input is too small for a %dx%d convolution",
                         name, H, W, k, k);
    pn_op *op;
    pn_val y = pn_b_op(b, &pn_op_conv, &x, 1, cout, Ho, Wo, name, &op);
    if (y < 0) return -1;
    op->cs = (pn_conv_shape){ .N = 1, .Cin = C, .H = H, .W = W, .Cout = cout, .KH = k, .KW = k,
                              .stride = stride, .pad = pad, .groups = groups };
    op->iattr[0] = pn_b_cfg(b)->norm == PN_NORM_LN_WS && !(flags & PN_CONV_NO_WS); /* standardized */
    const int fan_in = C / groups * k * k;
    int shape[4] = { cout, C / groups, k, k };
    size_t w = pn_b_param(b, name, "weight", 4, shape, 1, PN_INIT_HE, fan_in);
    size_t bias = PN_NONE;
    if (flags & PN_CONV_BIAS) bias = pn_b_param(b, name, "bias", 1, &cout, 0, PN_INIT_UNIFORM, fan_in);
    if (w == PN_NONE || ((flags & PN_CONV_BIAS) && bias == PN_NONE)) return -1;
    op->p[0] = w; /* op stays valid until the next pn_b_op */
    op->p[1] = bias;
    return y;
}

/* ------------------------------------------------------------ norms */
/* iattr[0]: 1 = norm + activation `act`, 0 = norm only (no activation).
 * Saved: mean, rstd (statistics: BN (B/g, C), GN family (B, G)), BN's multiplier
 * rstd*weight (B/g, C) (for the recomputation), PN's m, s (C), and for an activation
 * other than ReLU after a plain norm, the pre-activation (B, C, HW). mean and rstd come
 * first (pn_model_visit_norms and pn_model_norm_output read them there). */
static size_t norm_stat_floats(const pn_model *m, const pn_op *op, int B)
{
    if (m->cfg.norm == PN_NORM_NONE) return 0;
    if (m->cfg.norm == PN_NORM_BN)
        return (size_t)(B / (m->cfg.norm_batch > 0 ? m->cfg.norm_batch : B)) * (size_t)op->C;
    return (size_t)B * (size_t)op->G;
}

static int norm_has_act(const pn_op *op) { return op->iattr[0]; }
static int norm_fused_pn(const pn_model *m, const pn_op *op) { return is_pn(m->cfg.norm) && norm_has_act(op); }
static int norm_saves_pre(const pn_model *m, const pn_op *op)
{
    return norm_has_act(op) && !is_pn(m->cfg.norm) && m->cfg.norm != PN_NORM_NONE &&
           op->act != PN_ACT_RELU && op->act != PN_ACT_IDENTITY;
}

typedef struct { float *mean, *rstd, *scale, *pm, *ps, *pre; } norm_save;

static norm_save norm_layout(const pn_model *m, const pn_op *op, int B, float *base, size_t *total)
{
    norm_save s = { 0 };
    size_t off = 0, g = norm_stat_floats(m, op, B);
#define TK(p, n) do { if (base) s.p = base + off; off += (n); } while (0)
    if (g) { TK(mean, g); TK(rstd, g); }
    if (g && m->cfg.norm == PN_NORM_BN) TK(scale, g);
    if (norm_fused_pn(m, op)) { TK(pm, (size_t)op->C); TK(ps, (size_t)op->C); }
    if (norm_saves_pre(m, op)) TK(pre, (size_t)B * (size_t)op->C * (size_t)op->HW);
#undef TK
    if (total) *total = off;
    return s;
}

static size_t norm_saved(const pn_model *m, const pn_op *op, int B)
{
    size_t t;
    norm_layout(m, op, B, NULL, &t);
    return t;
}

/* Shared scratch (m->work) of the backward: the per-(sample, channel) double sums of the
 * GroupNorm family's parameter gradients (BN needs none). In floats. */
static size_t norm_work(const pn_model *m, pn_op *op, int B)
{
    if (m->cfg.norm == PN_NORM_NONE || m->cfg.norm == PN_NORM_BN) return 0;
    const size_t d = norm_fused_pn(m, op) ? pn_gn_pnact_backward_work(B, op->C)
                                          : pn_groupnorm_backward_work(B, op->C);
    return d * (sizeof(double) / sizeof(float));
}

/* BN whose training forward and backward go through the override hooks (sync-BN). */
static int bn_hooked(const pn_model *m, const pn_op *op)
{
    (void)op;
    return m->cfg.norm == PN_NORM_BN && m->bn_ovr.forward != NULL;
}

/* The training forward of an unstored output (a->virt_out, norm_can_unstore): the
 * statistics and running statistics the forward would compute, no output pass (the
 * consumers read the output through norm_plane). */
static int norm_stats_only(pn_model *m, pn_op *op, const pn_fwd_args *a, norm_save s)
{
    const int B = a->B;
    PN_CHECK(a->training && op->fold_mode == 0, "model: %s: an unstored output outside training", op->name);
    if (norm_fused_pn(m, op)) {
        pn_pnact_params p = { pn_op_param(m, op, 0), pn_op_param(m, op, 1), pn_op_param(m, op, 2),
                              pn_op_param(m, op, 3) };
        return pn_gn_pnact_stats(s.mean, s.rstd, s.pm, s.ps, a->in[0], p, B, op->C, op->HW, op->G,
                                 PN_GN_EPS, op->act, PN_PROXY_EPS);
    }
    if (m->cfg.norm == PN_NORM_BN)
        return pn_batchnorm_forward_train_save(NULL, s.mean, s.rstd, s.scale, m->buffers + op->buf[0],
                                               m->buffers + op->buf[1], a->in[0], pn_op_param(m, op, 0),
                                               pn_op_param(m, op, 1), B, op->C, op->HW,
                                               m->cfg.norm_batch, PN_BN_MOMENTUM, PN_BN_EPS, 1);
    pn_group_stats(s.mean, s.rstd, a->in[0], B, op->C, op->HW, op->G, PN_GN_EPS);
    return PN_OK;
}

static int norm_fwd(pn_model *m, pn_op *op, const pn_fwd_args *a)
{
    const int B = a->B;
    const size_t n = (size_t)B * (size_t)op->C * (size_t)op->HW;
    norm_save s = norm_layout(m, op, B, op->save, NULL);
    const float *inp = a->in[0];
    float *out = a->out;
    const pn_norm_kind k = m->cfg.norm;
    if (op->fold_mode == 1) { /* BN folded into the conv before: the activation only */
        if (op->act == PN_ACT_RELU) relu_mask(out, inp, inp, n);
        else if (op->act == PN_ACT_IDENTITY) memcpy(out, inp, n * sizeof(float));
        else return pn_act_forward(out, inp, n, op->act);
        return PN_OK;
    }
    if (op->fold_mode == 2) { /* GN/LN with the folded affine (s gamma, s beta), ReLU, - shift */
        const float *fa = op->fold, *fbias = op->fold + op->C, *fd = op->fold + 2 * op->C;
        int rc = pn_groupnorm_forward_ex(out, s.mean, s.rstd, inp, fa, fbias, B, op->C, op->HW, op->G,
                                         PN_GN_EPS, 1);
        if (rc != PN_OK) return rc;
        if (op->iattr[2]) { /* the shift was not folded forward */
            for (int b = 0; b < B; b++)
                for (int c = 0; c < op->C; c++) {
                    float *o = out + ((size_t)b * op->C + c) * (size_t)op->HW;
                    for (int i = 0; i < op->HW; i++) o[i] -= fd[c];
                }
        }
        return PN_OK;
    }
    if (a->virt_out) return norm_stats_only(m, op, a, s);
    if (norm_fused_pn(m, op)) {
        pn_pnact_params p = { pn_op_param(m, op, 0), pn_op_param(m, op, 1), pn_op_param(m, op, 2),
                              pn_op_param(m, op, 3) };
        return pn_gn_pnact_forward(out, s.mean, s.rstd, s.pm, s.ps, inp, p, B, op->C, op->HW, op->G,
                                   PN_GN_EPS, op->act, PN_PROXY_EPS);
    }
    const int act = norm_has_act(op) ? (int)op->act : (int)PN_ACT_IDENTITY;
    if (k == PN_NORM_NONE) {
        if (act == PN_ACT_RELU) relu_mask(out, inp, inp, n);
        else if (act == PN_ACT_IDENTITY) memcpy(out, inp, n * sizeof(float));
        else return pn_act_forward(out, inp, n, (pn_act)act);
        return PN_OK;
    }
    float *y = s.pre ? s.pre : out;
    /* ReLU in the normalize pass of the kernels; a separate pass after the sync-BN hook */
    const int relu = act == PN_ACT_RELU, sep_relu = relu && a->training && bn_hooked(m, op);
    int rc;
    if (k == PN_NORM_BN) {
        float *rm = m->buffers + op->buf[0], *rv = m->buffers + op->buf[1];
        if (a->training && m->bn_ovr.forward)
            rc = m->bn_ovr.forward(m->bn_ovr.ctx, y, s.mean, s.rstd, rm, rv, inp, pn_op_param(m, op, 0),
                                   pn_op_param(m, op, 1), B, op->C, op->HW, PN_BN_MOMENTUM, PN_BN_EPS);
        else if (a->training)
            rc = pn_batchnorm_forward_train_save(y, s.mean, s.rstd, s.scale, rm, rv, inp,
                                                 pn_op_param(m, op, 0), pn_op_param(m, op, 1), B,
                                                 op->C, op->HW, m->cfg.norm_batch, PN_BN_MOMENTUM,
                                                 PN_BN_EPS, relu);
        else
            rc = pn_batchnorm_forward_eval_ex(y, inp, rm, rv, pn_op_param(m, op, 0),
                                              pn_op_param(m, op, 1), B, op->C, op->HW, PN_BN_EPS, relu);
    } else {
        rc = pn_groupnorm_forward_ex(y, s.mean, s.rstd, inp, pn_op_param(m, op, 0),
                                     pn_op_param(m, op, 1), B, op->C, op->HW, op->G, PN_GN_EPS, relu);
    }
    if (rc != PN_OK) return rc;
    if (sep_relu) relu_inplace(out, n);
    else if (s.pre) return pn_act_forward(out, s.pre, n, (pn_act)act);
    return PN_OK;
}

/* Recomputation (nn/build.h): the output of the last forward again from the input and
 * the saved state, by the same apply passes the forward ran (norm_internal.h), so the
 * same bits. Not for a folded norm (inference only), nor BN through the sync-BN hooks
 * (they normalize in their own code), nor BN after an evaluation forward (no backward). */
static int norm_can_recompute(const pn_model *m, const pn_op *op)
{
    return op->fold_mode == 0 && !bn_hooked(m, op);
}

static int norm_recompute(pn_model *m, pn_op *op, const pn_fwd_args *a)
{
    const int B = a->B;
    const size_t n = (size_t)B * (size_t)op->C * (size_t)op->HW;
    norm_save s = norm_layout(m, op, B, op->save, NULL);
    const float *inp = a->in[0];
    float *out = a->out;
    const pn_norm_kind k = m->cfg.norm;
    /* (BN made hooked after the forward is fine: the forward saved what the apply needs) */
    if (op->fold_mode != 0 || (k == PN_NORM_BN && !a->training))
        return pn_error(PN_ERR_ARG, "model: %s: the output cannot be recomputed", op->name);
    if (norm_fused_pn(m, op)) {
        pn_pnact_params p = { pn_op_param(m, op, 0), pn_op_param(m, op, 1), pn_op_param(m, op, 2),
                              pn_op_param(m, op, 3) };
        return pn_gn_pnact_apply(out, inp, s.mean, s.rstd, s.pm, s.ps, p, B, op->C, op->HW, op->G,
                                 op->act);
    }
    const int act = norm_has_act(op) ? (int)op->act : (int)PN_ACT_IDENTITY;
    if (k == PN_NORM_NONE) { /* the forward's calls again */
        if (act == PN_ACT_RELU) relu_mask(out, inp, inp, n);
        else if (act == PN_ACT_IDENTITY) memcpy(out, inp, n * sizeof(float));
        else return pn_act_forward(out, inp, n, (pn_act)act);
        return PN_OK;
    }
    if (s.pre) return pn_act_forward(out, s.pre, n, (pn_act)act); /* the pre-activation is saved */
    const int relu = act == PN_ACT_RELU;
    if (k == PN_NORM_BN)
        return pn_batchnorm_apply(out, inp, s.mean, s.scale, pn_op_param(m, op, 1), B, op->C, op->HW,
                                  m->cfg.norm_batch, relu);
    return pn_groupnorm_apply(out, inp, s.mean, s.rstd, pn_op_param(m, op, 0), pn_op_param(m, op, 1),
                              B, op->C, op->HW, op->G, relu);
}

/* dinp = norm^T(dout); dout is used as scratch (the activation's derivative is applied to
 * it in place). */
static int norm_bwd(pn_model *m, pn_op *op, const pn_bwd_args *a)
{
    const int B = a->B;
    const size_t n = (size_t)B * (size_t)op->C * (size_t)op->HW;
    norm_save s = norm_layout(m, op, B, op->save, NULL);
    const float *inp = a->in[0];
    float *dinp = a->din[0], *dout = a->dout;
    const pn_norm_kind k = m->cfg.norm;
    if (!dinp) return pn_error(PN_ERR_ARG, "model: %s: a norm of the model input", op->name);
    if (norm_fused_pn(m, op)) {
        pn_pnact_params p = { pn_op_param(m, op, 0), pn_op_param(m, op, 1), pn_op_param(m, op, 2),
                              pn_op_param(m, op, 3) };
        pn_pnact_grads g = { pn_op_grad(m, op, 0), pn_op_grad(m, op, 1), pn_op_grad(m, op, 2),
                             pn_op_grad(m, op, 3) };
        PN_CHECK(norm_work(m, op, B) <= m->work_floats, "model: %s: workspace not planned for batch %d",
                 op->name, B);
        return pn_gn_pnact_backward_ex(dinp, g, dout, inp, s.mean, s.rstd, s.pm, s.ps, p, B, op->C,
                                       op->HW, op->G, op->act, (double *)(void *)m->work);
    }
    const int act = norm_has_act(op) ? (int)op->act : (int)PN_ACT_IDENTITY;
    double *work = NULL;
    if (k != PN_NORM_NONE && k != PN_NORM_BN) {
        PN_CHECK(norm_work(m, op, B) <= m->work_floats, "model: %s: workspace not planned for batch %d",
                 op->name, B);
        work = (double *)(void *)m->work;
    }
    /* norm + ReLU: the mask out > 0 applied inside the kernels' backward (not after the hook) */
    if (act == PN_ACT_RELU && k != PN_NORM_NONE && !bn_hooked(m, op)) {
        if (k == PN_NORM_BN) /* the mask from x and the saved multiplier: out is not read */
            return pn_batchnorm_backward_relux(dinp, pn_op_grad(m, op, 0), pn_op_grad(m, op, 1), dout,
                                               inp, s.mean, s.rstd, s.scale, pn_op_param(m, op, 1),
                                               pn_op_param(m, op, 0), B, op->C, op->HW,
                                               m->cfg.norm_batch);
        return pn_groupnorm_backward_relux(dinp, pn_op_grad(m, op, 0), pn_op_grad(m, op, 1), dout, inp,
                                           s.mean, s.rstd, pn_op_param(m, op, 0), pn_op_param(m, op, 1),
                                           B, op->C, op->HW, op->G, work);
    }
    /* ReLU: out > 0 exactly where the pre-activation is > 0 (derivative 0 at 0, as PyTorch). */
    float *dy = k == PN_NORM_NONE ? dinp : dout;
    int rc = PN_OK;
    if (act == PN_ACT_RELU) relu_mask(dy, dout, a->out, n);
    else if (act == PN_ACT_IDENTITY) { if (dy != dout) memcpy(dy, dout, n * sizeof(float)); }
    else rc = pn_act_backward(dy, dout, k == PN_NORM_NONE ? inp : s.pre, n, (pn_act)act);
    if (rc != PN_OK || k == PN_NORM_NONE) return rc;
    if (k == PN_NORM_BN) {
        if (m->bn_ovr.backward)
            return m->bn_ovr.backward(m->bn_ovr.ctx, dinp, pn_op_grad(m, op, 0), pn_op_grad(m, op, 1), dy,
                                      inp, s.mean, s.rstd, pn_op_param(m, op, 0), B, op->C, op->HW);
        return pn_batchnorm_backward(dinp, pn_op_grad(m, op, 0), pn_op_grad(m, op, 1), dy, inp, s.mean,
                                     s.rstd, pn_op_param(m, op, 0), B, op->C, op->HW, m->cfg.norm_batch);
    }
    return pn_groupnorm_backward_ex(dinp, pn_op_grad(m, op, 0), pn_op_grad(m, op, 1), dy, inp, s.mean,
                                    s.rstd, pn_op_param(m, op, 0), B, op->C, op->HW, op->G, work);
}

/* Unstored (src/nn/model.c): norm + ReLU of every kind but none and sync-BN; the backward
 * then recomputes the ReLU mask from x (pn_*_backward_relux, gn+pn needs no output). ReLU
 * only: its planes give the forward's floats whatever the row length (an elementwise
 * expression, no contraction); vectorized SiLU/GELU might not. */
static int norm_can_unstore(const pn_model *m, const pn_op *op)
{
    return norm_can_recompute(m, op) && m->cfg.norm != PN_NORM_NONE && norm_has_act(op) &&
           op->act == PN_ACT_RELU && !norm_saves_pre(m, op);
}

/* Plane (n, c) of the output of the last training forward, from its input in0 and the saved
 * statistics: the forward's own per-element expressions (pn_affine_plane, pn_gn_pnact_plane). */
static void norm_plane(const pn_model *m, const pn_op *op, const float *in0, int B, int n, int c, int H,
                       int W, float *dst, int ld)
{
    norm_save s = norm_layout(m, op, B, op->save, NULL);
    const float *src = in0 + ((size_t)n * op->C + c) * (size_t)op->HW;
    const float *w = pn_op_param(m, op, 0), *b = pn_op_param(m, op, 1);
    if (m->cfg.norm == PN_NORM_BN) {
        const int g = m->cfg.norm_batch > 0 ? m->cfg.norm_batch : B;
        const size_t kc = (size_t)(n / g) * op->C + c;
        pn_affine_plane(dst, ld, src, H, W, s.mean[kc], s.scale[kc], b ? b[c] : 0.0f, 1);
        return;
    }
    const size_t ng = (size_t)n * op->G + c / (op->C / op->G);
    if (norm_fused_pn(m, op)) {
        pn_gn_pnact_plane(dst, ld, src, H, W, s.mean[ng], s.rstd[ng], w[c], b[c], s.pm[c], s.ps[c], op->act);
        return;
    }
    const float a = w ? s.rstd[ng] * w[c] : s.rstd[ng];
    pn_affine_plane(dst, ld, src, H, W, s.mean[ng], a, b ? b[c] : 0.0f, 1);
}

const pn_op_vt pn_op_norm = { .kind = "norm", .saved = norm_saved, .work = norm_work,
                              .forward = norm_fwd, .backward = norm_bwd,
                              .flags = PN_OP_CLOBBERS_DOUT | PN_OP_IS_NORM, .can_unstore = norm_can_unstore,
                              .plane = norm_plane,
                              .can_recompute = norm_can_recompute, .recompute = norm_recompute };

/* Groups of the GroupNorm family for C channels (0 for BN/none). */
static int norm_groups(const pn_model_config *c, int C)
{
    switch (c->norm) {
    case PN_NORM_GN: case PN_NORM_GN_PN: return c->groups < C ? c->groups : C;
    case PN_NORM_LN: case PN_NORM_LN_PN: case PN_NORM_LN_WS: return 1;
    case PN_NORM_IN: return C;
    default: return 0;
    }
}

static pn_val add_norm(pn_builder *b, pn_val x, const char *name, int with_act, pn_act act)
{
    const pn_model_config *c = pn_b_cfg(b);
    int C, H, W;
    if (pn_b_shape(b, x, &C, &H, &W) != 0) return -1;
    if (c->norm == PN_NORM_NONE && !with_act) return x;
    const int G = norm_groups(c, C);
    if (G > 0 && C % G != 0)
        return pn_b_fail(b, PN_ERR_ARG,
                         "model: %s: %d channels are not divisible into %d groups (--groups %d; "
                         "GroupNorm uses min(groups, channels) groups, which must divide the channels)",
                         name, C, G, c->groups);
    pn_op *op;
    pn_val y = pn_b_op(b, &pn_op_norm, &x, 1, C, H, W, name, &op);
    if (y < 0) return -1;
    op->C = C;
    op->HW = H * W;
    op->G = G;
    op->act = with_act ? act : PN_ACT_IDENTITY;
    op->iattr[0] = with_act;
    size_t p[4] = { PN_NONE, PN_NONE, PN_NONE, PN_NONE }, rm = PN_NONE, rv = PN_NONE;
    int np = 0;
    if (c->norm == PN_NORM_NONE) {
        /* activation only */
    } else if (is_pn(c->norm) && with_act) {
        p[0] = pn_b_param(b, name, "gamma", 1, &C, 0, PN_INIT_ONE, 0);
        p[1] = pn_b_param(b, name, "beta", 1, &C, 0, PN_INIT_ZERO, 0);
        p[2] = pn_b_param(b, name, "gamma_t", 1, &C, 1, PN_INIT_ZERO, 0);
        p[3] = pn_b_param(b, name, "beta_t", 1, &C, 1, PN_INIT_ZERO, 0);
        np = 4;
    } else if (is_pn(c->norm)) {
        p[0] = pn_b_param(b, name, "weight", 1, &C, 0, PN_INIT_ONE, 0); /* scale, no shift */
        np = 1;
    } else {
        p[0] = pn_b_param(b, name, "weight", 1, &C, 0, PN_INIT_ONE, 0);
        p[1] = pn_b_param(b, name, "bias", 1, &C, 0, PN_INIT_ZERO, 0);
        np = 2;
        if (c->norm == PN_NORM_BN) {
            rm = pn_b_buffer(b, name, "running_mean", C, PN_INIT_ZERO);
            rv = pn_b_buffer(b, name, "running_var", C, PN_INIT_ONE);
            if (rm == PN_NONE || rv == PN_NONE) return -1;
        }
    }
    for (int i = 0; i < np; i++)
        if (p[i] == PN_NONE) return -1;
    for (int i = 0; i < 4; i++) op->p[i] = p[i];
    op->buf[0] = rm;
    op->buf[1] = rv;
    return y;
}

pn_val pn_b_norm_act(pn_builder *b, pn_val x, const char *name, pn_act act)
{
    return add_norm(b, x, name, 1, act);
}

pn_val pn_b_norm(pn_builder *b, pn_val x, const char *name) { return add_norm(b, x, name, 0, PN_ACT_IDENTITY); }

/* ------------------------------------------------------------ residual add */
static int add_fwd(pn_model *m, pn_op *op, const pn_fwd_args *a)
{
    const pn_value *v = &m->vals[op->out];
    const size_t n = (size_t)a->B * (size_t)v->C * (size_t)v->H * (size_t)v->W;
    if (a->out == a->in[0]) pn_add_inplace(a->out, a->in[1], n);
    else pn_add(a->out, a->in[0], a->in[1], n);
    return PN_OK;
}

const pn_op_vt pn_op_add = { .kind = "add", .forward = add_fwd, .flags = PN_OP_PASS_GRAD };

pn_val pn_b_add(pn_builder *b, pn_val x, pn_val y)
{
    int C, H, W, C2, H2, W2;
    if (pn_b_shape(b, x, &C, &H, &W) != 0 || pn_b_shape(b, y, &C2, &H2, &W2) != 0) return -1;
    if (C != C2 || H != H2 || W != W2)
        return pn_b_fail(b, PN_ERR_ARG, "model: residual add of (%d,%d,%d) and (%d,%d,%d)", C, H, W, C2, H2, W2);
    pn_val in[2] = { x, y };
    return pn_b_op(b, &pn_op_add, in, 2, C, H, W, "add", NULL);
}

/* ------------------------------------------------------------ activation */
static size_t val_n(const pn_model *m, int v, int B)
{
    const pn_value *x = &m->vals[v];
    return (size_t)B * (size_t)x->C * (size_t)x->H * (size_t)x->W;
}

static int act_fwd(pn_model *m, pn_op *op, const pn_fwd_args *a)
{
    return pn_act_forward(a->out, a->in[0], val_n(m, op->out, a->B), op->act);
}

static int act_bwd(pn_model *m, pn_op *op, const pn_bwd_args *a)
{
    if (!a->din[0]) return PN_OK;
    return pn_act_backward(a->din[0], a->dout, a->in[0], val_n(m, op->out, a->B), op->act);
}

const pn_op_vt pn_op_act = { .kind = "act", .forward = act_fwd, .backward = act_bwd };

pn_val pn_b_act(pn_builder *b, pn_val x, pn_act act)
{
    int C, H, W;
    if (pn_b_shape(b, x, &C, &H, &W) != 0) return -1;
    if (strcmp(pn_act_name(act), "unknown") == 0)
        return pn_b_fail(b, PN_ERR_ARG, "model: unknown activation %d", (int)act);
    pn_op *op;
    pn_val y = pn_b_op(b, &pn_op_act, &x, 1, C, H, W, "act", &op);
    if (y < 0) return -1;
    op->act = act;
    return y;
}

/* ------------------------------------------------------------ pooling */
/* iattr: k, stride, pad. Saved: argmax (B, C, Ho, Wo) int32 in float slots. */
static size_t maxpool_saved(const pn_model *m, const pn_op *op, int B)
{
    const pn_value *v = &m->vals[op->out];
    return (size_t)B * (size_t)v->C * (size_t)v->H * (size_t)v->W;
}

static int maxpool_fwd(pn_model *m, pn_op *op, const pn_fwd_args *a)
{
    const pn_value *v = &m->vals[op->in[0]];
    return pn_maxpool_forward(a->out, (int32_t *)(void *)op->save, a->in[0], a->B, v->C, v->H, v->W,
                              op->iattr[0], op->iattr[1], op->iattr[2]);
}

static int maxpool_bwd(pn_model *m, pn_op *op, const pn_bwd_args *a)
{
    const pn_value *v = &m->vals[op->in[0]];
    if (!a->din[0]) return PN_OK;
    return pn_maxpool_backward(a->din[0], a->dout, (const int32_t *)(const void *)op->save, a->B, v->C,
                               v->H, v->W, op->iattr[0], op->iattr[1], op->iattr[2]);
}

const pn_op_vt pn_op_maxpool = { .kind = "maxpool", .saved = maxpool_saved, .forward = maxpool_fwd,
                                 .backward = maxpool_bwd };

_Static_assert(sizeof(int32_t) == sizeof(float), "argmax is stored in float slots");

pn_val pn_b_maxpool(pn_builder *b, pn_val x, int k, int stride, int pad)
{
    int C, H, W;
    if (pn_b_shape(b, x, &C, &H, &W) != 0) return -1;
    if (k < 1 || stride < 1 || pad < 0 || 2 * pad >= k + 1 || H + 2 * pad < k || W + 2 * pad < k)
        return pn_b_fail(b, PN_ERR_ARG, "model: max pooling %dx%d stride %d pad %d of a %dx%d input", k, k,
                         stride, pad, H, W);
    pn_op *op;
    pn_val y = pn_b_op(b, &pn_op_maxpool, &x, 1, C, (H + 2 * pad - k) / stride + 1,
                       (W + 2 * pad - k) / stride + 1, "maxpool", &op);
    if (y < 0) return -1;
    op->iattr[0] = k;
    op->iattr[1] = stride;
    op->iattr[2] = pad;
    return y;
}

static int gap_fwd(pn_model *m, pn_op *op, const pn_fwd_args *a)
{
    const pn_value *v = &m->vals[op->in[0]];
    return pn_gap_forward(a->out, a->in[0], a->B, v->C, v->H * v->W);
}

static int gap_bwd(pn_model *m, pn_op *op, const pn_bwd_args *a)
{
    const pn_value *v = &m->vals[op->in[0]];
    if (!a->din[0]) return PN_OK;
    return pn_gap_backward(a->din[0], a->dout, a->B, v->C, v->H * v->W);
}

const pn_op_vt pn_op_gap = { .kind = "gap", .forward = gap_fwd, .backward = gap_bwd };

pn_val pn_b_gap(pn_builder *b, pn_val x)
{
    int C, H, W;
    if (pn_b_shape(b, x, &C, &H, &W) != 0) return -1;
    return pn_b_op(b, &pn_op_gap, &x, 1, C, 1, 1, "gap", NULL);
}

/* ------------------------------------------------------------ linear */
static int linear_fwd(pn_model *m, pn_op *op, const pn_fwd_args *a)
{
    return pn_linear_forward(a->out, a->in[0], op->fw ? op->fw : m->params + op->p[0],
                             op->fb ? op->fb : pn_op_param(m, op, 1), a->B, op->iattr[0], op->iattr[1]);
}

static int linear_bwd(pn_model *m, pn_op *op, const pn_bwd_args *a)
{
    return pn_linear_backward(a->din[0], m->grads + op->p[0], pn_op_grad(m, op, 1), a->dout, a->in[0],
                              m->params + op->p[0], a->B, op->iattr[0], op->iattr[1]);
}

static double linear_macs(const pn_model *m, const pn_op *op)
{
    (void)m;
    return (double)op->iattr[0] * (double)op->iattr[1];
}

const pn_op_vt pn_op_linear = { .kind = "linear", .forward = linear_fwd, .backward = linear_bwd,
                                .macs = linear_macs, .flags = PN_OP_IS_LINEAR };

pn_val pn_b_linear(pn_builder *b, pn_val x, const char *name, int out)
{
    int C, H, W;
    if (pn_b_shape(b, x, &C, &H, &W) != 0) return -1;
    if (out < 1) return pn_b_fail(b, PN_ERR_ARG, "model: %s: %d outputs", name, out);
    pn_op *op;
    pn_val y = pn_b_op(b, &pn_op_linear, &x, 1, out, 1, 1, name, &op);
    if (y < 0) return -1;
    const int F = C * H * W;
    op->iattr[0] = F;
    op->iattr[1] = out;
    int ws[2] = { out, F };
    size_t w = pn_b_param(b, name, "weight", 2, ws, 1, PN_INIT_UNIFORM, F);
    size_t bias = pn_b_param(b, name, "bias", 1, &out, 0, PN_INIT_UNIFORM, F);
    if (w == PN_NONE || bias == PN_NONE) return -1;
    op->p[0] = w;
    op->p[1] = bias;
    return y;
}
