/* Pre-activation ResNet v2 for small images (see nn/model.h).
 *
 *   stem   conv3x3(in -> w)
 *   stage1..3 (widths w, 2w, 4w; n blocks each; first block of stages 2, 3 has stride 2)
 *     block  h = NA1(x); sc = projection ? conv1x1(h, stride) : x
 *            out = conv2(NA2(conv1(h))) + sc
 *   final  NA -> global average pool -> linear(4w -> classes)
 *
 * NA = norm + ReLU, or GroupNorm(no affine) + PN-Act for the "+pn" kinds (fused kernel).
 *
 * Memory: parameters, gradients and buffers are three allocations laid out by the
 * tensor tables built at create. Activations live in one arena planned for the batch
 * size B of the forward; it is reallocated only when a plan needs more bytes than the
 * arena holds (a larger B), so a step at a fixed B never allocates.
 *
 * Saved for the backward: the input image, every conv output (NA input), every NA
 * output (conv input; for plain norms its sign is the ReLU mask), the norm
 * statistics (mean/rstd; PN's m/s), the pooled features, and the softmax probabilities.
 * The backward works in four scratch gradient buffers of the largest activation size. */
#include "nn/model.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/common.h"
#include "kernels/layers.h"
#include "kernels/rng.h"

#define GN_EPS 1e-3f
#define BN_EPS 1e-5f
#define BN_MOMENTUM 0.1f
#define WS_EPS 1e-5f
#define NONE ((size_t)-1)
#define ALIGN_FLOATS 16 /* 64-byte alignment of every arena buffer */

enum { INIT_HE, INIT_FC, INIT_ONE, INIT_ZERO };

typedef struct {
    pn_conv_shape s;   /* N is set to the batch size of the plan */
    size_t w;          /* parameter offset of the weight */
    size_t O, K;       /* weight rows (Cout) and fan-in (Cin/groups*KH*KW) */
    float *what;       /* ln+ws: standardized weight (O,K), mean, rstd (O) */
    float *wmean, *wrstd;
} conv_layer;

typedef struct {
    int C, HW, G;      /* G: groups (GN family) */
    size_t p[4];       /* weight,bias (plain) or gamma,beta,gamma_t,beta_t (PN); NONE if absent */
    size_t rm, rv;     /* BN buffer offsets */
    float *mean, *rstd, *pm, *ps; /* arena: statistics of the last forward */
} norm_layer;

typedef struct {
    norm_layer n1, n2;
    conv_layer c1, c2, sc;
    int has_sc;
    int cin, cout, hin, hout; /* channels and spatial size (square) */
    float *x, *h1, *c1o, *h2, *out; /* arena (x aliases the previous block's out) */
} res_block;

struct pn_model {
    pn_model_config cfg;
    int depth, n, nblocks;
    conv_layer stem;
    res_block *blocks;
    norm_layer fnorm;
    size_t fc_w, fc_b;
    int feat, hw_final; /* 4w and the final H*W */

    pn_tensor_info *ptab, *btab;
    unsigned char *pinit;
    int np, nb;
    size_t nparams, nbuffers;
    float *params, *grads, *buffers;

    /* ln+ws: standardized weights etc. for every conv, and a dw_hat scratch */
    float *ws_mem, *dwhat;
    size_t max_conv_numel;

    /* activation arena */
    float *arena;
    size_t arena_bytes;
    int plan_B;
    int plan_threads; /* pn_get_threads() the conv workspace was sized for */
    size_t work_floats;
    float *input, *hf, *pooled, *logits, *probs, *dlogits, *dpooled, *work;
    int *labels;
    float *gbuf[4];

    /* state of the last forward/loss */
    int fwd_B, fwd_training, have_loss;
    float smoothing;
    pn_bn_override bn_ovr; /* forward NULL: built-in BN */
};

int pn_model_set_bn_override(pn_model *m, const pn_bn_override *o)
{
    PN_CHECK_PTR(m);
    if (o) {
        PN_CHECK(o->forward && o->backward, "BN override: forward and backward are required");
        PN_CHECK(m->cfg.norm_batch == 0, "BN override: needs norm-batch 0 (got %d)", m->cfg.norm_batch);
        m->bn_ovr = *o;
    } else {
        memset(&m->bn_ovr, 0, sizeof m->bn_ovr);
    }
    return PN_OK;
}

/* ------------------------------------------------------------ names */
static const char *norm_names[] = { "none", "bn", "gn", "ln", "in", "gn+pn", "ln+pn", "ln+ws" };

const char *pn_norm_name(pn_norm_kind k)
{
    if ((int)k < 0 || (int)k >= (int)(sizeof norm_names / sizeof *norm_names)) return "unknown";
    return norm_names[k];
}

int pn_norm_parse(const char *s)
{
    if (!s) return -1;
    for (int i = 0; i < (int)(sizeof norm_names / sizeof *norm_names); i++)
        if (strcmp(s, norm_names[i]) == 0) return i;
    return -1;
}

void pn_model_config_default(pn_model_config *c)
{
    if (!c) return;
    memset(c, 0, sizeof *c);
    snprintf(c->arch, sizeof c->arch, "resnet20");
    c->norm = PN_NORM_GN_PN;
    c->groups = 4;
    c->norm_batch = 0;
    c->width = 16;
    c->in_channels = 1;
    c->image = 28;
    c->classes = 10;
}

static int is_pn(pn_norm_kind k) { return k == PN_NORM_GN_PN || k == PN_NORM_LN_PN; }

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

/* "resnetD" with D = 6n + 2, n >= 1. Returns n, or -1. */
static int parse_arch(const char *arch)
{
    if (strncmp(arch, "resnet", 6) != 0) return -1;
    const char *p = arch + 6;
    if (*p < '1' || *p > '9') return -1;
    errno = 0;
    char *end;
    long d = strtol(p, &end, 10);
    if (errno || *end != '\0' || d < 8 || d > 6002 || (d - 2) % 6 != 0) return -1;
    return (int)((d - 2) / 6);
}

/* ------------------------------------------------------------ tables */
typedef struct {
    pn_tensor_info *t;
    unsigned char *init;
    int count, cap;
    size_t total;
} table_builder;

static size_t tb_add(table_builder *tb, const char *prefix, const char *name, int ndim,
                     const int *shape, int decay, int init)
{
    if (tb->count == tb->cap) {
        int cap = tb->cap ? 2 * tb->cap : 64;
        pn_tensor_info *nt = realloc(tb->t, (size_t)cap * sizeof *nt);
        if (!nt) return NONE;
        tb->t = nt;
        unsigned char *ni = realloc(tb->init, (size_t)cap);
        if (!ni) return NONE;
        tb->init = ni;
        tb->cap = cap;
    }
    pn_tensor_info *e = &tb->t[tb->count];
    memset(e, 0, sizeof *e);
    snprintf(e->name, sizeof e->name, "%s%s%s", prefix, *prefix ? "." : "", name);
    e->ndim = ndim;
    e->numel = 1;
    for (int i = 0; i < ndim; i++) {
        e->shape[i] = shape[i];
        e->numel *= (size_t)shape[i];
    }
    e->offset = tb->total;
    e->decay = decay;
    tb->init[tb->count] = (unsigned char)init;
    tb->total += e->numel;
    tb->count++;
    return e->offset;
}

typedef struct {
    table_builder p, b;
    int failed;
} builder;

static size_t add_p(builder *bd, const char *prefix, const char *name, int ndim, const int *shape,
                    int decay, int init)
{
    size_t off = tb_add(&bd->p, prefix, name, ndim, shape, decay, init);
    if (off == NONE) bd->failed = 1;
    return off;
}

static void build_conv(builder *bd, conv_layer *cv, const char *prefix, const char *name,
                       int cin, int cout, int k, int stride, int hin)
{
    memset(cv, 0, sizeof *cv);
    cv->s.Cin = cin;
    cv->s.Cout = cout;
    cv->s.H = cv->s.W = hin;
    cv->s.KH = cv->s.KW = k;
    cv->s.stride = stride;
    cv->s.pad = k / 2;
    cv->s.groups = 1;
    cv->O = (size_t)cout;
    cv->K = (size_t)cin * (size_t)k * (size_t)k;
    int shape[4] = { cout, cin, k, k };
    cv->w = add_p(bd, prefix, name, 4, shape, 1, INIT_HE);
}

static void build_norm(builder *bd, norm_layer *nl, const pn_model_config *c, const char *prefix,
                       int C, int HW)
{
    memset(nl, 0, sizeof *nl);
    nl->C = C;
    nl->HW = HW;
    nl->G = norm_groups(c, C);
    for (int i = 0; i < 4; i++) nl->p[i] = NONE;
    nl->rm = nl->rv = NONE;
    int shape[1] = { C };
    if (c->norm == PN_NORM_NONE) return;
    if (is_pn(c->norm)) {
        nl->p[0] = add_p(bd, prefix, "gamma", 1, shape, 0, INIT_ONE);
        nl->p[1] = add_p(bd, prefix, "beta", 1, shape, 0, INIT_ZERO);
        nl->p[2] = add_p(bd, prefix, "gamma_t", 1, shape, 1, INIT_ZERO);
        nl->p[3] = add_p(bd, prefix, "beta_t", 1, shape, 1, INIT_ZERO);
        return;
    }
    nl->p[0] = add_p(bd, prefix, "weight", 1, shape, 0, INIT_ONE);
    nl->p[1] = add_p(bd, prefix, "bias", 1, shape, 0, INIT_ZERO);
    if (c->norm == PN_NORM_BN) {
        nl->rm = tb_add(&bd->b, prefix, "running_mean", 1, shape, 0, INIT_ZERO);
        nl->rv = tb_add(&bd->b, prefix, "running_var", 1, shape, 0, INIT_ONE);
        if (nl->rm == NONE || nl->rv == NONE) bd->failed = 1;
    }
}

static void init_tensor(float *x, const pn_tensor_info *t, int init, const pn_tensor_info *all,
                        pn_rng *r)
{
    switch (init) {
    case INIT_HE: {
        size_t fan_in = t->numel / (size_t)t->shape[0];
        double std = sqrt(2.0 / (double)fan_in);
        for (size_t i = 0; i < t->numel; i++) x[i] = (float)(std * pn_rng_normal(r));
        break;
    }
    case INIT_FC: {
        /* PyTorch's nn.Linear default: U(-1/sqrt(in), 1/sqrt(in)) for weight and bias;
         * `in` is taken from fc.weight (all[0] is the weight for both). */
        double bound = 1.0 / sqrt((double)all->shape[1]);
        for (size_t i = 0; i < t->numel; i++) x[i] = (float)(bound * (2.0 * pn_rng_uniform(r) - 1.0));
        break;
    }
    case INIT_ONE:
        for (size_t i = 0; i < t->numel; i++) x[i] = 1.0f;
        break;
    default:
        for (size_t i = 0; i < t->numel; i++) x[i] = 0.0f;
        break;
    }
}

/* ------------------------------------------------------------ create */
int pn_model_create(pn_model **out, const pn_model_config *cfg, uint64_t seed)
{
    PN_CHECK_PTR(out);
    *out = NULL;
    PN_CHECK_PTR(cfg);
    if (memchr(cfg->arch, '\0', sizeof cfg->arch) == NULL)
        return pn_error(PN_ERR_ARG, "model: arch is not a terminated string");
    int n = parse_arch(cfg->arch);
    if (n < 1)
        return pn_error(PN_ERR_ARG, "model: unknown arch '%s' (expected resnetD, D = 6n+2 >= 8)",
                        cfg->arch);
    if ((int)cfg->norm < 0 || (int)cfg->norm > PN_NORM_LN_WS)
        return pn_error(PN_ERR_ARG, "model: unknown norm %d", (int)cfg->norm);
    if (cfg->width < 1 || cfg->width > 4096)
        return pn_error(PN_ERR_ARG, "model: width must be in [1, 4096] (got %d)", cfg->width);
    if (cfg->in_channels < 1 || cfg->in_channels > 4096)
        return pn_error(PN_ERR_ARG, "model: in_channels must be in [1, 4096] (got %d)",
                        cfg->in_channels);
    if (cfg->image < 1 || cfg->image > 4096)
        return pn_error(PN_ERR_ARG, "model: image must be in [1, 4096] (got %d)", cfg->image);
    if (cfg->classes < 1 || cfg->classes > 1000000)
        return pn_error(PN_ERR_ARG, "model: classes must be in [1, 1000000] (got %d)", cfg->classes);
    if (cfg->norm_batch < 0)
        return pn_error(PN_ERR_ARG, "model: norm_batch must be >= 0 (got %d)", cfg->norm_batch);
    if ((cfg->norm == PN_NORM_GN || cfg->norm == PN_NORM_GN_PN) && cfg->groups < 1)
        return pn_error(PN_ERR_ARG, "model: groups must be >= 1 (got %d)", cfg->groups);
    const int w = cfg->width;
    for (int k = 1; k <= 4; k *= 2) {
        int G = norm_groups(cfg, k * w);
        if (G > 0 && (k * w) % G != 0)
            return pn_error(PN_ERR_ARG, "model: %d channels are not divisible into %d groups",
                            k * w, G);
    }

    pn_model *m = calloc(1, sizeof *m);
    if (!m) return pn_error(PN_ERR_NOMEM, "model: out of memory");
    m->cfg = *cfg;
    m->n = n;
    m->depth = 6 * n + 2;
    m->nblocks = 3 * n;
    m->blocks = calloc((size_t)m->nblocks, sizeof *m->blocks);
    builder bd;
    memset(&bd, 0, sizeof bd);
    if (!m->blocks) goto nomem;

    int hw = cfg->image;
    build_conv(&bd, &m->stem, "stem.conv", "weight", cfg->in_channels, w, 3, 1, hw);
    int cin = w;
    for (int st = 0; st < 3; st++) {
        int cout = w << st;
        for (int b = 0; b < n; b++) {
            res_block *bl = &m->blocks[st * n + b];
            int stride = (st > 0 && b == 0) ? 2 : 1;
            char prefix[64], sub[80];
            snprintf(prefix, sizeof prefix, "stage%d.block%d", st + 1, b);
            bl->cin = cin;
            bl->cout = cout;
            bl->hin = hw;
            bl->hout = (hw + 2 - 3) / stride + 1;
            bl->has_sc = stride != 1 || cin != cout;
            snprintf(sub, sizeof sub, "%s.norm1", prefix);
            build_norm(&bd, &bl->n1, cfg, sub, cin, hw * hw);
            build_conv(&bd, &bl->c1, prefix, "conv1.weight", cin, cout, 3, stride, hw);
            snprintf(sub, sizeof sub, "%s.norm2", prefix);
            build_norm(&bd, &bl->n2, cfg, sub, cout, bl->hout * bl->hout);
            build_conv(&bd, &bl->c2, prefix, "conv2.weight", cout, cout, 3, 1, bl->hout);
            if (bl->has_sc)
                build_conv(&bd, &bl->sc, prefix, "shortcut.weight", cin, cout, 1, stride, hw);
            cin = cout;
            hw = bl->hout;
        }
    }
    m->feat = cin;
    m->hw_final = hw * hw;
    build_norm(&bd, &m->fnorm, cfg, "final.norm", cin, hw * hw);
    {
        int ws[2] = { cfg->classes, cin }, bs[1] = { cfg->classes };
        m->fc_w = add_p(&bd, "", "fc.weight", 2, ws, 1, INIT_FC);
        m->fc_b = add_p(&bd, "", "fc.bias", 1, bs, 0, INIT_FC);
    }
    if (bd.failed) goto nomem;
    m->ptab = bd.p.t;
    m->pinit = bd.p.init;
    m->np = bd.p.count;
    m->nparams = bd.p.total;
    m->btab = bd.b.t;
    m->nb = bd.b.count;
    m->nbuffers = bd.b.total;
    free(bd.b.init);
    memset(&bd, 0, sizeof bd);

    m->params = calloc(m->nparams, sizeof(float));
    m->grads = calloc(m->nparams, sizeof(float));
    m->buffers = calloc(m->nbuffers ? m->nbuffers : 1, sizeof(float));
    if (!m->params || !m->grads || !m->buffers) goto nomem;

    pn_rng r = pn_rng_stream(seed, PN_STREAM_INIT, 0);
    const pn_tensor_info *fcw = NULL;
    for (int i = 0; i < m->np; i++)
        if (m->ptab[i].offset == m->fc_w) fcw = &m->ptab[i];
    for (int i = 0; i < m->np; i++)
        init_tensor(m->params + m->ptab[i].offset, &m->ptab[i], m->pinit[i], fcw, &r);
    for (int i = 0; i < m->nb; i++) {
        const char *nm = m->btab[i].name;
        float v = strstr(nm, "running_var") ? 1.0f : 0.0f;
        for (size_t j = 0; j < m->btab[i].numel; j++) m->buffers[m->btab[i].offset + j] = v;
    }

    if (cfg->norm == PN_NORM_LN_WS) {
        /* every conv: w_hat (O,K) + mean, rstd (O) */
        size_t total = 0, maxn = 0;
#define WS_SIZE(cv) do { size_t nn_ = (cv)->O * (cv)->K; total += nn_ + 2 * (cv)->O; \
                         if (nn_ > maxn) maxn = nn_; } while (0)
        WS_SIZE(&m->stem);
        for (int i = 0; i < m->nblocks; i++) {
            WS_SIZE(&m->blocks[i].c1);
            WS_SIZE(&m->blocks[i].c2);
            if (m->blocks[i].has_sc) WS_SIZE(&m->blocks[i].sc);
        }
#undef WS_SIZE
        m->ws_mem = malloc((total + maxn) * sizeof(float));
        if (!m->ws_mem) goto nomem;
        m->max_conv_numel = maxn;
        float *p = m->ws_mem;
#define WS_SET(cv) do { (cv)->what = p; p += (cv)->O * (cv)->K; (cv)->wmean = p; p += (cv)->O; \
                        (cv)->wrstd = p; p += (cv)->O; } while (0)
        WS_SET(&m->stem);
        for (int i = 0; i < m->nblocks; i++) {
            WS_SET(&m->blocks[i].c1);
            WS_SET(&m->blocks[i].c2);
            if (m->blocks[i].has_sc) WS_SET(&m->blocks[i].sc);
        }
#undef WS_SET
        m->dwhat = p;
    }
    *out = m;
    return PN_OK;

nomem:
    free(bd.p.t);
    free(bd.p.init);
    free(bd.b.t);
    free(bd.b.init);
    pn_model_free(m);
    return pn_error(PN_ERR_NOMEM, "model: out of memory");
}

void pn_model_free(pn_model *m)
{
    if (!m) return;
    free(m->blocks);
    free(m->ptab);
    free(m->pinit);
    free(m->btab);
    free(m->params);
    free(m->grads);
    free(m->buffers);
    free(m->ws_mem);
    free(m->arena);
    free(m);
}

const pn_model_config *pn_model_cfg(const pn_model *m) { return m ? &m->cfg : NULL; }
float *pn_model_params(pn_model *m) { return m ? m->params : NULL; }
float *pn_model_grads(pn_model *m) { return m ? m->grads : NULL; }
size_t pn_model_num_params(const pn_model *m) { return m ? m->nparams : 0; }
float *pn_model_buffers(pn_model *m) { return m ? m->buffers : NULL; }
size_t pn_model_num_buffers(const pn_model *m) { return m ? m->nbuffers : 0; }
size_t pn_model_activation_bytes(const pn_model *m) { return m ? m->arena_bytes : 0; }

const pn_tensor_info *pn_model_param_table(const pn_model *m, int *count)
{
    if (count) *count = m ? m->np : 0;
    return m ? m->ptab : NULL;
}

const pn_tensor_info *pn_model_buffer_table(const pn_model *m, int *count)
{
    if (count) *count = m ? m->nb : 0;
    return m ? m->btab : NULL;
}

void pn_model_zero_grad(pn_model *m)
{
    if (m) memset(m->grads, 0, m->nparams * sizeof(float));
}

static double conv_macs(const conv_layer *cv)
{
    int ho, wo;
    pn_conv_shape s = cv->s;
    s.N = 1;
    if (pn_conv_out_hw(&s, &ho, &wo) != PN_OK) {
        ho = (s.H + 2 * s.pad - s.KH) / s.stride + 1;
        wo = (s.W + 2 * s.pad - s.KW) / s.stride + 1;
    }
    return (double)ho * wo * (double)cv->O * (double)cv->K;
}

double pn_model_macs(const pn_model *m)
{
    if (!m) return 0;
    double t = conv_macs(&m->stem);
    for (int i = 0; i < m->nblocks; i++) {
        const res_block *b = &m->blocks[i];
        t += conv_macs(&b->c1) + conv_macs(&b->c2);
        if (b->has_sc) t += conv_macs(&b->sc);
    }
    return t + (double)m->feat * (double)m->cfg.classes;
}

/* ------------------------------------------------------------ arena */
static size_t align_up(size_t n) { return (n + ALIGN_FLOATS - 1) / ALIGN_FLOATS * ALIGN_FLOATS; }

/* Lays the arena out for batch B. With base == NULL only counts; returns floats. */
static size_t plan(pn_model *m, int B, float *base)
{
    size_t off = 0;
    const size_t Bz = (size_t)B;
#define TAKE(ptr, nfl) do { size_t n_ = align_up(nfl); if (base) (ptr) = base + off; off += n_; } while (0)
    const pn_model_config *c = &m->cfg;
    size_t img = (size_t)c->in_channels * (size_t)c->image * (size_t)c->image;
    TAKE(m->input, Bz * img);
    float *x = NULL;
    size_t x_sz = (size_t)c->width * (size_t)c->image * (size_t)c->image;
    TAKE(x, Bz * x_sz);
    size_t maxact = x_sz;
    size_t work = 0;
    m->stem.s.N = B;
    size_t ws = pn_conv2d_workspace(&m->stem.s);
    if (ws > work) work = ws;
#define TAKE_NORM(nl) do { \
        size_t g_ = (m->cfg.norm == PN_NORM_BN) \
            ? (size_t)(B / (m->cfg.norm_batch > 0 ? m->cfg.norm_batch : B)) * (size_t)(nl)->C \
            : (size_t)B * (size_t)(nl)->G; \
        if (m->cfg.norm != PN_NORM_NONE) { TAKE((nl)->mean, g_); TAKE((nl)->rstd, g_); } \
        if (is_pn(m->cfg.norm)) { TAKE((nl)->pm, (size_t)(nl)->C); TAKE((nl)->ps, (size_t)(nl)->C); } \
    } while (0)
    for (int i = 0; i < m->nblocks; i++) {
        res_block *b = &m->blocks[i];
        size_t in_sz = (size_t)b->cin * (size_t)b->hin * (size_t)b->hin;
        size_t out_sz = (size_t)b->cout * (size_t)b->hout * (size_t)b->hout;
        if (in_sz > maxact) maxact = in_sz;
        if (out_sz > maxact) maxact = out_sz;
        if (base) b->x = x;
        TAKE(b->h1, Bz * in_sz);
        TAKE(b->c1o, Bz * out_sz);
        TAKE(b->h2, Bz * out_sz);
        TAKE(b->out, Bz * out_sz);
        x = b->out;
        TAKE_NORM(&b->n1);
        TAKE_NORM(&b->n2);
        conv_layer *cs[3] = { &b->c1, &b->c2, b->has_sc ? &b->sc : NULL };
        for (int k = 0; k < 3; k++) {
            if (!cs[k]) continue;
            cs[k]->s.N = B;
            ws = pn_conv2d_workspace(&cs[k]->s);
            if (ws > work) work = ws;
        }
    }
    TAKE_NORM(&m->fnorm);
    size_t f = (size_t)m->feat, K = (size_t)c->classes;
    TAKE(m->hf, Bz * f * (size_t)m->hw_final);
    TAKE(m->pooled, Bz * f);
    TAKE(m->dpooled, Bz * f);
    TAKE(m->logits, Bz * K);
    TAKE(m->probs, Bz * K);
    TAKE(m->dlogits, Bz * K);
    {
        float *lab = NULL;
        TAKE(lab, Bz); /* sizeof(int) == sizeof(float) is checked below */
        if (base) m->labels = (int *)(void *)lab;
    }
    for (int k = 0; k < 4; k++) TAKE(m->gbuf[k], Bz * maxact);
    TAKE(m->work, work);
    if (base) m->work_floats = work;
#undef TAKE_NORM
#undef TAKE
    return off;
}

_Static_assert(sizeof(int) == sizeof(float), "labels are stored in float slots");

static int ensure_arena(pn_model *m, int B)
{
    /* the conv workspace holds a slice per thread: re-plan after pn_set_threads */
    if (m->plan_B == B && m->arena && m->plan_threads == pn_get_threads()) return PN_OK;
    size_t need = plan(m, B, NULL);
    if (need > SIZE_MAX / sizeof(float)) return pn_error(PN_ERR_NOMEM, "model: batch too large");
    size_t bytes = need * sizeof(float);
    if (bytes > m->arena_bytes || !m->arena) {
        free(m->arena);
        m->arena = NULL;
        m->arena_bytes = 0;
        m->plan_B = 0;
        m->fwd_B = 0;
        void *p = NULL;
        if (posix_memalign(&p, 64, bytes ? bytes : 64) != 0)
            return pn_error(PN_ERR_NOMEM, "model: cannot allocate %zu bytes of activations", bytes);
        m->arena = p;
        m->arena_bytes = bytes;
    }
    plan(m, B, m->arena);
    m->plan_B = B;
    m->plan_threads = pn_get_threads();
    return PN_OK;
}

/* ------------------------------------------------------------ layers */
static const float *conv_weight(const pn_model *m, const conv_layer *cv)
{
    return cv->what ? cv->what : m->params + cv->w;
}

static int conv_fwd(pn_model *m, conv_layer *cv, float *out, const float *inp, int B)
{
    cv->s.N = B;
    PN_CHECK(pn_conv2d_workspace(&cv->s) <= m->work_floats,
             "model: thread count changed since the arena was planned (pn_set_threads between forward and backward?)");
    return pn_conv2d_forward(out, inp, conv_weight(m, cv), NULL, &cv->s, m->work);
}

static int conv_bwd(pn_model *m, conv_layer *cv, float *dinp, const float *dout, const float *inp,
                    int B)
{
    cv->s.N = B;
    PN_CHECK(pn_conv2d_workspace(&cv->s) <= m->work_floats,
             "model: thread count changed since the arena was planned (pn_set_threads between forward and backward?)");
    if (!cv->what)
        return pn_conv2d_backward(dinp, m->grads + cv->w, NULL, dout, inp, m->params + cv->w,
                                  &cv->s, m->work);
    size_t n = cv->O * cv->K;
    memset(m->dwhat, 0, n * sizeof(float));
    int rc = pn_conv2d_backward(dinp, m->dwhat, NULL, dout, inp, cv->what, &cv->s, m->work);
    if (rc != PN_OK) return rc;
    return pn_ws_backward(m->grads + cv->w, m->dwhat, m->params + cv->w, cv->wmean, cv->wrstd,
                          (int)cv->O, (int)cv->K);
}

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

static const float *P(const pn_model *m, size_t off) { return off == NONE ? NULL : m->params + off; }
static float *D(pn_model *m, size_t off) { return off == NONE ? NULL : m->grads + off; }

/* out = NA(inp); inp, out (B, C, HW). */
static int na_fwd(pn_model *m, norm_layer *nl, float *out, const float *inp, int B, int training)
{
    const size_t n = (size_t)B * (size_t)nl->C * (size_t)nl->HW;
    int rc = PN_OK;
    switch (m->cfg.norm) {
    case PN_NORM_NONE:
        relu_mask(out, inp, inp, n);
        return PN_OK;
    case PN_NORM_BN:
        if (training && m->bn_ovr.forward)
            rc = m->bn_ovr.forward(m->bn_ovr.ctx, out, nl->mean, nl->rstd, m->buffers + nl->rm,
                                   m->buffers + nl->rv, inp, P(m, nl->p[0]), P(m, nl->p[1]), B,
                                   nl->C, nl->HW, BN_MOMENTUM, BN_EPS);
        else if (training)
            rc = pn_batchnorm_forward_train(out, nl->mean, nl->rstd, m->buffers + nl->rm,
                                            m->buffers + nl->rv, inp, P(m, nl->p[0]), P(m, nl->p[1]),
                                            B, nl->C, nl->HW, m->cfg.norm_batch, BN_MOMENTUM, BN_EPS);
        else
            rc = pn_batchnorm_forward_eval(out, inp, m->buffers + nl->rm, m->buffers + nl->rv,
                                           P(m, nl->p[0]), P(m, nl->p[1]), B, nl->C, nl->HW, BN_EPS);
        break;
    case PN_NORM_GN_PN:
    case PN_NORM_LN_PN: {
        pn_pnact_params p = { P(m, nl->p[0]), P(m, nl->p[1]), P(m, nl->p[2]), P(m, nl->p[3]) };
        return pn_gn_pnact_forward(out, nl->mean, nl->rstd, nl->pm, nl->ps, inp, p, B, nl->C,
                                   nl->HW, nl->G, GN_EPS, PN_ACT_RELU, PN_PROXY_EPS);
    }
    default:
        rc = pn_groupnorm_forward(out, nl->mean, nl->rstd, inp, P(m, nl->p[0]), P(m, nl->p[1]), B,
                                  nl->C, nl->HW, nl->G, GN_EPS);
        break;
    }
    if (rc != PN_OK) return rc;
    relu_inplace(out, n);
    return PN_OK;
}

/* dinp = NA^T(dout). dout (the NA output gradient) is used as scratch (the ReLU mask is
 * applied to it in place); out is the NA output of the forward, inp its input. */
static int na_bwd(pn_model *m, norm_layer *nl, float *dinp, float *dout, const float *inp,
                  const float *out, int B)
{
    const size_t n = (size_t)B * (size_t)nl->C * (size_t)nl->HW;
    if (is_pn(m->cfg.norm)) {
        pn_pnact_params p = { P(m, nl->p[0]), P(m, nl->p[1]), P(m, nl->p[2]), P(m, nl->p[3]) };
        pn_pnact_grads g = { D(m, nl->p[0]), D(m, nl->p[1]), D(m, nl->p[2]), D(m, nl->p[3]) };
        return pn_gn_pnact_backward(dinp, g, dout, inp, nl->mean, nl->rstd, nl->pm, nl->ps, p, B,
                                    nl->C, nl->HW, nl->G, PN_ACT_RELU);
    }
    /* ReLU: out > 0 exactly where the pre-activation is > 0 (derivative 0 at 0, as PyTorch). */
    float *dy = m->cfg.norm == PN_NORM_NONE ? dinp : dout;
    relu_mask(dy, dout, out, n);
    switch (m->cfg.norm) {
    case PN_NORM_NONE:
        return PN_OK;
    case PN_NORM_BN:
        if (m->bn_ovr.backward)
            return m->bn_ovr.backward(m->bn_ovr.ctx, dinp, D(m, nl->p[0]), D(m, nl->p[1]), dy, inp,
                                      nl->mean, nl->rstd, P(m, nl->p[0]), B, nl->C, nl->HW);
        return pn_batchnorm_backward(dinp, D(m, nl->p[0]), D(m, nl->p[1]), dy, inp, nl->mean,
                                     nl->rstd, P(m, nl->p[0]), B, nl->C, nl->HW, m->cfg.norm_batch);
    default:
        return pn_groupnorm_backward(dinp, D(m, nl->p[0]), D(m, nl->p[1]), dy, inp, nl->mean,
                                     nl->rstd, P(m, nl->p[0]), B, nl->C, nl->HW, nl->G);
    }
}

/* ------------------------------------------------------------ forward / backward */
int pn_model_forward(pn_model *m, const float *x, int B, int training, const float **logits)
{
    PN_CHECK_PTR(m);
    PN_CHECK_PTR(x);
    PN_CHECK(B > 0, "model_forward: batch size must be > 0 (got %d)", B);
    const pn_model_config *c = &m->cfg;
    if (c->norm == PN_NORM_BN && training && c->norm_batch > 0 && B % c->norm_batch != 0)
        return pn_error(PN_ERR_ARG, "model_forward: norm_batch %d does not divide the batch %d",
                        c->norm_batch, B);
    m->fwd_B = 0;
    m->have_loss = 0;
    int rc = ensure_arena(m, B);
    if (rc != PN_OK) return rc;
    if (c->norm == PN_NORM_LN_WS) {
        rc = pn_ws_forward(m->stem.what, m->stem.wmean, m->stem.wrstd, m->params + m->stem.w,
                           (int)m->stem.O, (int)m->stem.K, WS_EPS);
        for (int i = 0; i < m->nblocks && rc == PN_OK; i++) {
            res_block *b = &m->blocks[i];
            conv_layer *cs[3] = { &b->c1, &b->c2, b->has_sc ? &b->sc : NULL };
            for (int k = 0; k < 3 && rc == PN_OK; k++)
                if (cs[k])
                    rc = pn_ws_forward(cs[k]->what, cs[k]->wmean, cs[k]->wrstd,
                                       m->params + cs[k]->w, (int)cs[k]->O, (int)cs[k]->K, WS_EPS);
        }
        if (rc != PN_OK) return rc;
    }
    const size_t img = (size_t)c->in_channels * (size_t)c->image * (size_t)c->image;
    memcpy(m->input, x, (size_t)B * img * sizeof(float));
    if ((rc = conv_fwd(m, &m->stem, m->blocks[0].x, m->input, B)) != PN_OK) return rc;
    for (int i = 0; i < m->nblocks; i++) {
        res_block *b = &m->blocks[i];
        const size_t out_n = (size_t)B * (size_t)b->cout * (size_t)b->hout * (size_t)b->hout;
        if ((rc = na_fwd(m, &b->n1, b->h1, b->x, B, training)) != PN_OK) return rc;
        if ((rc = conv_fwd(m, &b->c1, b->c1o, b->h1, B)) != PN_OK) return rc;
        if ((rc = na_fwd(m, &b->n2, b->h2, b->c1o, B, training)) != PN_OK) return rc;
        if ((rc = conv_fwd(m, &b->c2, b->out, b->h2, B)) != PN_OK) return rc;
        if (b->has_sc) {
            float *sc = m->gbuf[0];
            if ((rc = conv_fwd(m, &b->sc, sc, b->h1, B)) != PN_OK) return rc;
            pn_add_inplace(b->out, sc, out_n);
        } else {
            pn_add_inplace(b->out, b->x, out_n);
        }
    }
    const float *xl = m->blocks[m->nblocks - 1].out;
    if ((rc = na_fwd(m, &m->fnorm, m->hf, xl, B, training)) != PN_OK) return rc;
    if ((rc = pn_gap_forward(m->pooled, m->hf, B, m->feat, m->hw_final)) != PN_OK) return rc;
    if ((rc = pn_linear_forward(m->logits, m->pooled, m->params + m->fc_w, m->params + m->fc_b, B,
                                m->feat, c->classes)) != PN_OK)
        return rc;
    m->fwd_B = B;
    m->fwd_training = training ? 1 : 0;
    if (logits) *logits = m->logits;
    return PN_OK;
}

int pn_model_loss(pn_model *m, const int *labels, float smoothing, double *loss_sum, int *correct)
{
    PN_CHECK_PTR(m);
    PN_CHECK_PTR(labels);
    PN_CHECK(m->fwd_B > 0, "model_loss: no forward pass to take the loss of");
    PN_CHECK(smoothing >= 0.0f && smoothing < 1.0f, "model_loss: smoothing must be in [0, 1) (got %g)",
             (double)smoothing);
    const int B = m->fwd_B, K = m->cfg.classes;
    for (int i = 0; i < B; i++)
        PN_CHECK(labels[i] >= 0 && labels[i] < K, "model_loss: label %d of sample %d not in [0, %d)",
                 labels[i], i, K);
    m->have_loss = 0;
    memcpy(m->labels, labels, (size_t)B * sizeof(int));
    double l = 0;
    int corr = 0;
    int rc = pn_xent_forward(&l, &corr, m->probs, m->logits, m->labels, B, K, smoothing);
    if (rc != PN_OK) return rc;
    m->smoothing = smoothing;
    m->have_loss = 1;
    if (loss_sum) *loss_sum = l;
    if (correct) *correct = corr;
    return PN_OK;
}

int pn_model_backward(pn_model *m, float scale)
{
    PN_CHECK_PTR(m);
    PN_CHECK(m->fwd_B > 0 && m->have_loss, "model_backward: needs a forward and a loss first");
    PN_CHECK(m->fwd_training || m->cfg.norm != PN_NORM_BN,
             "model_backward: BatchNorm needs a training-mode forward");
    const int B = m->fwd_B, K = m->cfg.classes;
    int rc = pn_xent_backward(m->dlogits, m->probs, m->labels, B, K, m->smoothing, scale);
    if (rc != PN_OK) return rc;
    rc = pn_linear_backward(m->dpooled, m->grads + m->fc_w, m->grads + m->fc_b, m->dlogits,
                            m->pooled, m->params + m->fc_w, B, m->feat, K);
    if (rc != PN_OK) return rc;
    float *G = m->gbuf[0], *A = m->gbuf[1], *T = m->gbuf[2], *S = m->gbuf[3];
    if ((rc = pn_gap_backward(A, m->dpooled, B, m->feat, m->hw_final)) != PN_OK) return rc;
    const float *xl = m->blocks[m->nblocks - 1].out;
    if ((rc = na_bwd(m, &m->fnorm, G, A, xl, m->hf, B)) != PN_OK) return rc;
    for (int i = m->nblocks - 1; i >= 0; i--) {
        res_block *b = &m->blocks[i];
        /* G = dL/d(out) */
        if ((rc = conv_bwd(m, &b->c2, A, G, b->h2, B)) != PN_OK) return rc;
        if ((rc = na_bwd(m, &b->n2, T, A, b->c1o, b->h2, B)) != PN_OK) return rc;
        if ((rc = conv_bwd(m, &b->c1, A, T, b->h1, B)) != PN_OK) return rc;
        const size_t in_n = (size_t)B * (size_t)b->cin * (size_t)b->hin * (size_t)b->hin;
        if (b->has_sc) {
            if ((rc = conv_bwd(m, &b->sc, S, G, b->h1, B)) != PN_OK) return rc;
            pn_add_inplace(A, S, in_n);
        }
        if ((rc = na_bwd(m, &b->n1, T, A, b->x, b->h1, B)) != PN_OK) return rc;
        if (!b->has_sc) pn_add_inplace(T, G, in_n);
        float *t = G;
        G = T;
        T = t;
    }
    return conv_bwd(m, &m->stem, NULL, G, m->input, B);
}

/* ------------------------------------------------------------ diagnostics */
/* Read access to the normalized pre-activations of the last forward, for the power
 * decomposition (src/diag/power.c). Self-contained: it only reads the layer tables,
 * the saved norm inputs (block x / c1o, the last block's out) and statistics, and the
 * BN buffers; nothing here is used by training. */

/* Norm layer i in forward order, its input in the arena and its name. */
static const norm_layer *norm_at(const pn_model *m, int i, const float **inp, char *name, size_t n)
{
    const int nb = m->nblocks;
    if (i == 2 * nb) {
        if (inp) *inp = m->blocks[nb - 1].out;
        if (name) snprintf(name, n, "final.norm");
        return &m->fnorm;
    }
    const res_block *b = &m->blocks[i / 2];
    if (inp) *inp = (i % 2 == 0) ? b->x : b->c1o;
    if (name) snprintf(name, n, "stage%d.block%d.norm%d", i / 2 / m->n + 1, i / 2 % m->n, i % 2 + 1);
    return (i % 2 == 0) ? &b->n1 : &b->n2;
}

int pn_model_norm_output(const pn_model *m, int i, pn_norm_info *info, float *y)
{
    PN_CHECK_PTR(m);
    const int count = 2 * m->nblocks + 1;
    PN_CHECK(i >= 0 && i < count, "model_norm_output: layer %d not in [0, %d)", i, count);
    const float *x = NULL;
    pn_norm_info inf;
    memset(&inf, 0, sizeof inf);
    const norm_layer *nl = norm_at(m, i, &x, inf.name, sizeof inf.name);
    const pn_norm_kind k = m->cfg.norm;
    inf.count = count;
    inf.C = nl->C;
    inf.HW = nl->HW;
    inf.B = m->fwd_B;
    inf.G = nl->G;
    inf.training = m->fwd_training;
    if (info) *info = inf;
    if (!y) return PN_OK;
    PN_CHECK(m->fwd_B > 0, "model_norm_output: no forward pass yet");
    const int B = m->fwd_B, C = nl->C, HW = nl->HW;
    if (k == PN_NORM_NONE) {
        memcpy(y, x, (size_t)B * C * HW * sizeof(float));
        return PN_OK;
    }
    const int bn = k == PN_NORM_BN;
    /* BN after a training forward: statistics (B/g, C) at [chunk * C + c]; the override
     * (sync-BN) normalizes over the whole batch (norm_batch 0). */
    const int g = m->cfg.norm_batch > 0 ? m->cfg.norm_batch : B;
    const float *rm = bn ? m->buffers + nl->rm : NULL, *rv = bn ? m->buffers + nl->rv : NULL;
    #pragma omp parallel for schedule(static) if ((size_t)B * C * HW >= EW_PAR_MIN)
    for (long nc = 0; nc < (long)B * C; nc++) {
        const int n = (int)(nc / C), c = (int)(nc % C);
        float mu, r;
        if (!bn) {
            const int grp = n * nl->G + c / (C / nl->G);
            mu = nl->mean[grp];
            r = nl->rstd[grp];
        } else if (m->fwd_training) {
            mu = nl->mean[(size_t)(n / g) * C + c];
            r = nl->rstd[(size_t)(n / g) * C + c];
        } else {
            mu = rm[c];
            r = (float)(1.0 / sqrt((double)rv[c] + (double)BN_EPS));
        }
        const float *xi = x + (size_t)nc * HW;
        float *yo = y + (size_t)nc * HW;
        for (int p = 0; p < HW; p++) yo[p] = (xi[p] - mu) * r;
    }
    return PN_OK;
}
