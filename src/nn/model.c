/* The model engine (see nn/model.h, nn/build.h).
 *
 * A model is a list of ops over values, built once by an architecture's builder
 * (src/nn/arch_*.c, found through src/nn/arch_registry.c).
 *
 * Memory: parameters, gradients and buffers are three allocations laid out by the
 * tensor tables built at create. Activations live in one arena planned for the batch
 * size B of the forward (plan): every value (each op's output; an in-place residual add
 * shares its input's storage), every op's saved state (norm statistics, PN's m and s,
 * max-pool argmax), the softmax probabilities, the backward's gradient buffers and each
 * op's workspace, each with its lifetime on the step's timeline; buffers never live at
 * the same time share memory (src/nn/arena.h). The arena is reallocated only when a plan
 * needs more bytes than it holds (a larger B), so a step at a fixed B never allocates.
 *
 * Value lifetimes: a value lives from its producer's forward to its producer's backward
 * (the whole step with pn_model_set_retain_activations), except the outputs that their op
 * can recompute (pn_op_vt.recompute: the norm op) when recomputation is on (default;
 * PROXYNORM_RECOMPUTE=0 or pn_model_set_recompute(m, 0) turn it off). Those live only
 * while read in the forward and in the backward (plan_recompute, rec_intervals) and are
 * written again from the norm's input and saved statistics just before the first
 * backward that reads them (ensure_value in run_backward), bit for bit as the forward
 * wrote them.
 *
 * Backward: ops run in reverse. A value's gradient buffer is taken when its first
 * consumer (in reverse order) writes it and given back after its producer's backward. A
 * residual add passes its output gradient to both inputs without a copy (shared buffer,
 * reference counted); a second gradient reaching a value is written to a scratch buffer
 * and added. The schedule is simulated once at create to record each buffer's size and
 * lifetime. */
#include "nn/model.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "kernels/common.h"

#ifdef _OPENMP
#include <omp.h>
#else
static int omp_get_thread_num(void) { return 0; }
static int omp_get_num_threads(void) { return 1; }
#endif

/* The most threads pn_model_train_pass spreads a batch over. */
#define PN_MAX_REPLICAS 64
#include "kernels/layers.h"
#include "kernels/rng.h"
#include "nn/build.h"

#define ALIGN_FLOATS 16 /* 64-byte alignment of every arena buffer */

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
    m->plan_B = 0; /* BN through the hooks is not recomputed: plan again at the next forward */
    return PN_OK;
}

int pn_model_set_recompute(pn_model *m, int on)
{
    PN_CHECK_PTR(m);
    m->recompute = on ? 1 : 0;
    m->plan_B = 0; /* plan again at the next forward */
    return PN_OK;
}

int pn_model_set_unstore(pn_model *m, int on)
{
    PN_CHECK_PTR(m);
    m->unstore = on ? 1 : 0;
    m->plan_B = 0; /* plan again at the next forward */
    return PN_OK;
}

int pn_model_set_retain_activations(pn_model *m, int on)
{
    PN_CHECK_PTR(m);
    m->retain = on ? 1 : 0;
    m->plan_B = 0; /* plan again at the next forward */
    return PN_OK;
}

int pn_model_unstored_values(const pn_model *m)
{
    if (!m) return 0;
    int n = 0;
    for (int v = 0; v < m->nvals; v++) n += m->vals[v].unstored;
    return n;
}

int pn_model_recomputed_values(const pn_model *m)
{
    if (!m) return 0;
    int n = 0;
    for (int v = 0; v < m->nvals; v++) n += m->vals[v].recomp;
    return n;
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

int pn_arch_valid(const char *arch) { return arch && pn_arch_find(arch) != NULL; }

int pn_model_default_width(const char *arch, int image)
{
    const pn_arch *a = arch ? pn_arch_find(arch) : NULL;
    return a && a->default_width ? a->default_width(arch, image) : 16;
}

const char *pn_arch_help(void)
{
    static char buf[1024];
    if (buf[0]) return buf;
    size_t off = 0;
    for (int i = 0; i < pn_arch_count() && off < sizeof buf; i++) {
        int n = snprintf(buf + off, sizeof buf - off, "%s%s", i ? "; " : "", pn_arch_get(i)->help);
        if (n < 0) break;
        off += (size_t)n;
    }
    return buf;
}

/* ------------------------------------------------------------ builder */
struct pn_builder {
    pn_model *m;
    int status;
    int cap_ops, cap_vals;
    /* tables */
    int pcap, bcap;
};

const pn_model_config *pn_b_cfg(const pn_builder *b) { return &b->m->cfg; }
int pn_b_status(const pn_builder *b) { return b->status; }

pn_val pn_b_fail(pn_builder *b, int status, const char *fmt, ...)
{
    if (b->status == PN_OK) {
        char msg[512];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        b->status = pn_error(status, "%s", msg);
    }
    return -1;
}

int pn_b_shape(const pn_builder *b, pn_val v, int *C, int *H, int *W)
{
    if (b->status != PN_OK || v < 0 || v >= b->m->nvals) return -1;
    const pn_value *x = &b->m->vals[v];
    if (C) *C = x->C;
    if (H) *H = x->H;
    if (W) *W = x->W;
    return 0;
}

pn_val pn_b_input(pn_builder *b) { return b->status == PN_OK ? 0 : -1; }

static pn_val new_value(pn_builder *b, int C, int H, int W, int producer)
{
    pn_model *m = b->m;
    if (C < 1 || H < 1 || W < 1)
        return pn_b_fail(b, PN_ERR_ARG, "model: a value of shape (%d, %d, %d)", C, H, W);
    if ((double)C * H * W > (double)INT_MAX)
        return pn_b_fail(b, PN_ERR_ARG, "model: a value of shape (%d, %d, %d) is too large", C, H, W);
    if (m->nvals == b->cap_vals) {
        int cap = b->cap_vals ? 2 * b->cap_vals : 64;
        pn_value *nv = realloc(m->vals, (size_t)cap * sizeof *nv);
        if (!nv) return pn_b_fail(b, PN_ERR_NOMEM, "model: out of memory");
        m->vals = nv;
        b->cap_vals = cap;
    }
    pn_value *v = &m->vals[m->nvals];
    memset(v, 0, sizeof *v);
    v->C = C;
    v->H = H;
    v->W = W;
    v->producer = producer;
    v->alias = -1;
    v->last_use = v->last_bwd = -1;
    v->recomp = 0;
    return m->nvals++;
}

pn_val pn_b_op(pn_builder *b, const pn_op_vt *vt, const pn_val *in, int nin, int C, int H, int W,
               const char *name, pn_op **opp)
{
    if (opp) *opp = NULL;
    if (b->status != PN_OK) return -1;
    pn_model *m = b->m;
    if (!vt || !vt->forward || nin < 1 || nin > PN_OP_MAX_IN || !in)
        return pn_b_fail(b, PN_ERR_ARG, "model: bad op");
    if (!(vt->flags & PN_OP_PASS_GRAD) && !vt->backward)
        return pn_b_fail(b, PN_ERR_ARG, "model: op %s has no backward", vt->kind);
    for (int k = 0; k < nin; k++) {
        if (in[k] < 0 || in[k] >= m->nvals) return -1;
        if (m->vals[in[k]].dead)
            return pn_b_fail(b, PN_ERR_ARG, "model: %s reads a value overwritten by an in-place add",
                             name ? name : vt->kind);
    }
    if (m->nops == b->cap_ops) {
        int cap = b->cap_ops ? 2 * b->cap_ops : 64;
        pn_op *no = realloc(m->ops, (size_t)cap * sizeof *no);
        if (!no) return pn_b_fail(b, PN_ERR_NOMEM, "model: out of memory");
        m->ops = no;
        b->cap_ops = cap;
    }
    pn_val y = new_value(b, C, H, W, m->nops);
    if (y < 0) return -1;
    pn_op *op = &m->ops[m->nops++];
    memset(op, 0, sizeof *op);
    op->vt = vt;
    snprintf(op->name, sizeof op->name, "%s", name ? name : vt->kind);
    op->nin = nin;
    for (int k = 0; k < nin; k++) {
        pn_value *x = &m->vals[in[k]];
        op->in[k] = in[k];
        x->consumers++;
        x->last_use = m->nops - 1;
        if (!(vt->flags & PN_OP_PASS_GRAD)) x->last_bwd = m->nops - 1;
        if (vt->flags & PN_OP_IS_NORM) x->norm_in = 1;
    }
    op->out = y;
    for (int i = 0; i < PN_OP_MAX_P; i++) op->p[i] = PN_NONE;
    op->buf[0] = op->buf[1] = PN_NONE;
    /* A residual add over a convolution's output that nothing else reads: in place. */
    if ((vt->flags & PN_OP_PASS_GRAD) && nin == 2 && in[0] != in[1]) {
        pn_value *x = &m->vals[in[0]];
        if (x->producer >= 0 && (m->ops[x->producer].vt->flags & PN_OP_IS_CONV) && x->consumers == 1) {
            m->vals[y].alias = x->alias >= 0 ? x->alias : in[0];
            m->vals[m->vals[y].alias].aliased = 1;
            x->dead = 1;
        }
    }
    if (opp) *opp = op;
    return y;
}

static size_t tab_add(pn_builder *b, int buffer, const char *prefix, const char *name, int ndim,
                      const int *shape, int decay, int init, double fan)
{
    if (b->status != PN_OK) return PN_NONE;
    pn_model *m = b->m;
    pn_tensor_info **tab = buffer ? &m->btab : &m->ptab;
    int *count = buffer ? &m->nb : &m->np, *cap = buffer ? &b->bcap : &b->pcap;
    size_t *total = buffer ? &m->nbuffers : &m->nparams;
    if (ndim < 1 || ndim > 4) {
        pn_b_fail(b, PN_ERR_ARG, "model: tensor %s.%s has %d dimensions", prefix, name, ndim);
        return PN_NONE;
    }
    if (*count == *cap) {
        int nc = *cap ? 2 * *cap : 64;
        pn_tensor_info *nt = realloc(*tab, (size_t)nc * sizeof *nt);
        if (!nt) { pn_b_fail(b, PN_ERR_NOMEM, "model: out of memory"); return PN_NONE; }
        *tab = nt;
        if (!buffer) {
            unsigned char *ni = realloc(m->pinit, (size_t)nc);
            if (!ni) { pn_b_fail(b, PN_ERR_NOMEM, "model: out of memory"); return PN_NONE; }
            m->pinit = ni;
            double *nf = realloc(m->pfan, (size_t)nc * sizeof *nf);
            if (!nf) { pn_b_fail(b, PN_ERR_NOMEM, "model: out of memory"); return PN_NONE; }
            m->pfan = nf;
        } else {
            unsigned char *ni = realloc(m->binit, (size_t)nc);
            if (!ni) { pn_b_fail(b, PN_ERR_NOMEM, "model: out of memory"); return PN_NONE; }
            m->binit = ni;
        }
        *cap = nc;
    }
    pn_tensor_info *e = &(*tab)[*count];
    memset(e, 0, sizeof *e);
    int n = snprintf(e->name, sizeof e->name, "%s%s%s", prefix, *prefix ? "." : "", name);
    if (n < 0 || (size_t)n >= sizeof e->name) {
        pn_b_fail(b, PN_ERR_ARG, "model: tensor name %s.%s is too long", prefix, name);
        return PN_NONE;
    }
    e->ndim = ndim;
    e->numel = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 1) {
            pn_b_fail(b, PN_ERR_ARG, "model: tensor %s has a dimension %d", e->name, shape[i]);
            return PN_NONE;
        }
        e->shape[i] = shape[i];
        e->numel *= (size_t)shape[i];
    }
    e->offset = *total;
    e->decay = decay;
    if (!buffer) {
        m->pinit[*count] = (unsigned char)init;
        m->pfan[*count] = fan;
    } else {
        m->binit[*count] = (unsigned char)init;
    }
    *total += e->numel;
    (*count)++;
    return e->offset;
}

size_t pn_b_param(pn_builder *b, const char *prefix, const char *name, int ndim, const int *shape,
                  int decay, int init, double fan)
{
    return tab_add(b, 0, prefix ? prefix : "", name, ndim, shape, decay, init, fan);
}

size_t pn_b_buffer(pn_builder *b, const char *prefix, const char *name, int C, int init)
{
    return tab_add(b, 1, prefix ? prefix : "", name, 1, &C, 0, init, 0);
}

static void init_tensor(float *x, const pn_tensor_info *t, int init, double fan, pn_rng *r)
{
    switch (init) {
    case PN_INIT_HE: {
        size_t fan_in = t->numel / (size_t)t->shape[0];
        double std = sqrt(2.0 / (double)fan_in);
        for (size_t i = 0; i < t->numel; i++) x[i] = (float)(std * pn_rng_normal(r));
        break;
    }
    case PN_INIT_UNIFORM: {
        /* PyTorch's nn.Linear default: U(-1/sqrt(fan), 1/sqrt(fan)) */
        double bound = 1.0 / sqrt(fan);
        for (size_t i = 0; i < t->numel; i++) x[i] = (float)(bound * (2.0 * pn_rng_uniform(r) - 1.0));
        break;
    }
    case PN_INIT_ONE:
        for (size_t i = 0; i < t->numel; i++) x[i] = 1.0f;
        break;
    default:
        for (size_t i = 0; i < t->numel; i++) x[i] = 0.0f;
        break;
    }
}

/* ------------------------------------------------------------ profile */
/* Per op kind (convolutions by shape): forward and backward seconds, and their share. */
static void prof_report(const pn_model *m)
{
    double total = 0;
    for (int i = 0; i < 2 * m->nops; i++) total += m->prof_t[i];
    if (total <= 0) return;
    fprintf(stderr, "proxynorm profile (PROXYNORM_PROFILE): %.3f s in ops\n", total);
    fprintf(stderr, "  %-34s %4s %9s %9s %6s\n", "op", "n", "fwd s", "bwd s", "share");
    char *done = calloc((size_t)m->nops, 1);
    if (!done) return;
    for (int i = 0; i < m->nops; i++) {
        if (done[i]) continue;
        char key[64];
        const pn_op *op = &m->ops[i];
        if (op->vt == &pn_op_conv)
            snprintf(key, sizeof key, "conv %dx%d s%d %d->%d %dx%d", op->cs.KH, op->cs.KW, op->cs.stride,
                     op->cs.Cin, op->cs.Cout, op->cs.H, op->cs.W);
        else
            snprintf(key, sizeof key, "%s", op->vt->kind);
        double f = 0, b = 0;
        int n = 0;
        for (int j = i; j < m->nops; j++) {
            const pn_op *q = &m->ops[j];
            if (done[j] || q->vt != op->vt) continue;
            if (op->vt == &pn_op_conv && memcmp(&q->cs, &op->cs, sizeof q->cs) != 0) continue;
            done[j] = 1;
            f += m->prof_t[2 * j];
            b += m->prof_t[2 * j + 1];
            n++;
        }
        fprintf(stderr, "  %-34s %4d %9.3f %9.3f %5.1f%%\n", key, n, f, b, 100.0 * (f + b) / total);
    }
    free(done);
}

/* ------------------------------------------------------------ backward schedule */
/* Runs (exec) or simulates (!exec) the backward of the ops; the gradient of the last
 * value is buffer 0, which the caller has filled (exec). Buffers are numbered in the order
 * they are taken, the same in every run: the simulation at create records each one's
 * floats per image and lifetime (m->ev_numel, m->ev_t) for the arena plan, which gives it
 * its own place (m->pool[k]). Needs m->gb (nvals) and m->gref, m->ev_* (m->gcap). *used:
 * buffers taken so far, which is also the number of the next one. */
static size_t val_numel(const pn_model *m, int v, int B)
{
    const pn_value *x = &m->vals[v];
    return (size_t)B * (size_t)x->C * (size_t)x->H * (size_t)x->W;
}

/* A buffer for the gradient of value v, taken at time t. */
static int take_buf(pn_model *m, int v, int t, int exec, int *used)
{
    const int k = *used;
    if (k >= m->gcap || (exec && k >= m->nev)) return -1; /* cannot happen: the schedule is fixed */
    m->gref[k] = 1;
    if (!exec) {
        m->ev_numel[k] = val_numel(m, v, 1);
        m->ev_t[2 * k] = t;
        m->ev_t[2 * k + 1] = 2 * m->nops; /* (not given back: the end of the step) */
    }
    *used = k + 1;
    return k;
}

static void give_buf(pn_model *m, int i, int t, int exec)
{
    if (i >= 0 && m->gref[i] > 0 && --m->gref[i] == 0 && !exec) m->ev_t[2 * i + 1] = t;
}

/* A second gradient (in buffer src) reaches value v: add it to v's buffer (in place when
 * v alone holds that buffer, else into a new one). */
static int accumulate(pn_model *m, int v, int src, int B, int t, int exec, int *used)
{
    int dst = m->gb[v];
    size_t n = val_numel(m, v, B);
    if (m->gref[dst] == 1) {
        if (exec) pn_add_inplace(m->pool[dst], m->pool[src], n);
        return PN_OK;
    }
    int nb = take_buf(m, v, t, exec, used);
    if (nb < 0) return pn_error(PN_ERR_ARG, "model: gradient schedule overrun");
    if (exec) pn_add(m->pool[nb], m->pool[dst], m->pool[src], n);
    give_buf(m, dst, t, exec);
    m->gb[v] = nb;
    return PN_OK;
}

/* An unstored value as a convolution input: its producer's planes from the producer's
 * input 0 (stored) and saved statistics. */
typedef struct {
    pn_conv_src src;
    const pn_model *m;
    const pn_op *op;
    const float *in0;
    int B, H, W;
} unstored_src;

static void unstored_plane(const void *ctx, int n, int c, float *dst, int ld)
{
    const unstored_src *u = ctx;
    u->op->vt->plane(u->m, u->op, u->in0, u->B, n, c, u->H, u->W, dst, ld);
}

/* u describes value v for batch B (v unstored). */
static const pn_conv_src *unstored_init(unstored_src *u, const pn_model *m, int v, int B)
{
    const pn_value *x = &m->vals[v];
    u->m = m;
    u->op = &m->ops[x->producer];
    u->in0 = m->vals[u->op->in[0]].data;
    u->B = B;
    u->H = x->H;
    u->W = x->W;
    u->src.plane = unstored_plane;
    u->src.ctx = u;
    return &u->src;
}

/* Value v is unstored in this step: the last forward was a training one and never wrote it
 * (the readers take its planes; after a forward outside training it is recomputed as any
 * other recomputed value). */
static int unstored(const pn_model *m, int v) { return m->fwd_training && m->vals[v].unstored; }

/* Before a backward reads value v: a value recomputed in the backward (recomp) is
 * rewritten by its producer's recompute the first time (exec only). */
static int ensure_value(pn_model *m, int v, int B)
{
    pn_value *x = &m->vals[v];
    if (!x->recomp || x->fresh || unstored(m, v)) return PN_OK;
    const int p = x->producer;
    pn_op *op = &m->ops[p];
    pn_fwd_args a;
    memset(&a, 0, sizeof a);
    for (int k = 0; k < op->nin; k++) a.in[k] = m->vals[op->in[k]].data;
    a.out = x->data;
    a.B = B;
    a.training = m->fwd_training;
    const double t0 = m->prof_t ? pn_now_s() : 0.0;
    int rc = op->vt->recompute(m, op, &a);
    if (m->prof_t) m->prof_t[2 * p + 1] += pn_now_s() - t0; /* counted as the producer's backward */
    x->fresh = rc == PN_OK;
    return rc;
}

static int run_backward(pn_model *m, int B, int exec, int *used)
{
    for (int v = 0; v < m->nvals; v++) {
        m->gb[v] = -1;
        m->vals[v].fresh = 0;
    }
    memset(m->gref, 0, (size_t)m->gcap * sizeof *m->gref);
    *used = 0;
    const int n = m->nops;
    m->gb[m->nvals - 1] = take_buf(m, m->nvals - 1, n, exec, used); /* 0: the logits' gradient */
    int rc = PN_OK;
    for (int i = m->nops - 1; i >= 0 && rc == PN_OK; i--) {
        pn_op *op = &m->ops[i];
        const int go = m->gb[op->out], t = 2 * n - 1 - i;
        if (go < 0) continue; /* nothing downstream: no gradient */
        int dbuf = go, copy = -1;
        if ((op->vt->flags & PN_OP_CLOBBERS_DOUT) && m->gref[go] > 1) {
            copy = take_buf(m, op->out, t, exec, used);
            if (copy < 0) return pn_error(PN_ERR_ARG, "model: gradient schedule overrun");
            if (exec) memcpy(m->pool[copy], m->pool[go], val_numel(m, op->out, B) * sizeof(float));
            dbuf = copy;
        }
        if (op->vt->flags & PN_OP_PASS_GRAD) {
            for (int k = 0; k < op->nin && rc == PN_OK; k++) {
                const int v = op->in[k];
                if (v == 0) continue;
                if (m->gb[v] < 0) {
                    m->gb[v] = go;
                    m->gref[go]++;
                } else {
                    rc = accumulate(m, v, go, B, t, exec, used);
                }
            }
        } else {
            int tmp[PN_OP_MAX_IN];
            pn_bwd_args a;
            unstored_src us[PN_OP_MAX_IN];
            memset(&a, 0, sizeof a);
            for (int k = 0; k < op->nin; k++) {
                const int v = op->in[k];
                tmp[k] = -1;
                if (exec && unstored(m, v)) a.src[k] = unstored_init(&us[k], m, v, B);
                else if (exec) a.in[k] = m->vals[v].data;
                if (v == 0) continue; /* the model input: no gradient */
                int bi;
                if (m->gb[v] < 0) {
                    bi = m->gb[v] = take_buf(m, v, t, exec, used);
                } else {
                    bi = tmp[k] = take_buf(m, v, t, exec, used);
                }
                if (bi < 0) return pn_error(PN_ERR_ARG, "model: gradient schedule overrun");
                if (exec) a.din[k] = m->pool[bi];
            }
            if (exec) {
                for (int k = 0; k < op->nin && rc == PN_OK; k++) rc = ensure_value(m, op->in[k], B);
                if (rc == PN_OK) rc = ensure_value(m, op->out, B);
                if (rc != PN_OK) break;
                a.dout = m->pool[dbuf];
                a.out = unstored(m, op->out) ? NULL : m->vals[op->out].data;
                a.B = B;
                m->work = op->wk[1];
                m->work_floats = op->wkn;
                const double t0 = m->prof_t ? pn_now_s() : 0.0;
                rc = op->vt->backward(m, op, &a);
                if (m->prof_t) m->prof_t[2 * i + 1] += pn_now_s() - t0;
            }
            for (int k = 0; k < op->nin && rc == PN_OK; k++)
                if (tmp[k] >= 0) {
                    rc = accumulate(m, op->in[k], tmp[k], B, t, exec, used);
                    give_buf(m, tmp[k], t, exec);
                }
        }
        give_buf(m, copy, t, exec);
        give_buf(m, go, t, exec);
    }
    return rc;
}

/* ------------------------------------------------------------ create */
static void free_contents(pn_model *m)
{
    for (int i = 0; i < m->nops; i++) {
        free(m->ops[i].fw);
        free(m->ops[i].fb);
        free(m->ops[i].fold);
    }
    free(m->ops);
    free(m->vals);
    free(m->ptab);
    free(m->pinit);
    free(m->pfan);
    free(m->btab);
    free(m->binit);
    if (!m->params_shared) free(m->params);
    free(m->grads);
    free(m->buffers);
    free(m->ws_mem);
    free(m->arena);
    free(m->prof_t);
    free(m->pool);
    free(m->ev_numel);
    free(m->ev_t);
    free(m->items);
    free(m->item_kind);
    free(m->item_idx);
    free(m->item_order);
    free(m->item_iv);
    free(m->gb);
    free(m->gref);
    for (int i = 0; i < m->nreplicas; i++) pn_model_free(m->replicas[i]);
    free(m->replicas);
}

int pn_model_create(pn_model **out, const pn_model_config *cfg, uint64_t seed)
{
    PN_CHECK_PTR(out);
    *out = NULL;
    PN_CHECK_PTR(cfg);
    if (memchr(cfg->arch, '\0', sizeof cfg->arch) == NULL)
        return pn_error(PN_ERR_ARG, "model: arch is not a terminated string");
    const pn_arch *arch = pn_arch_find(cfg->arch);
    if (!arch)
        return pn_error(PN_ERR_ARG, "model: unknown arch '%s' (expected %s)", cfg->arch, pn_arch_help());
    return pn_model_create_arch(out, cfg, arch, seed);
}

int pn_model_create_arch(pn_model **out, const pn_model_config *cfg, const pn_arch *arch, uint64_t seed)
{
    PN_CHECK_PTR(out);
    *out = NULL;
    PN_CHECK_PTR(cfg);
    PN_CHECK(arch && arch->build, "model: no architecture");
    if (memchr(cfg->arch, '\0', sizeof cfg->arch) == NULL)
        return pn_error(PN_ERR_ARG, "model: arch is not a terminated string");
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

    pn_model *m = calloc(1, sizeof *m);
    if (!m) return pn_error(PN_ERR_NOMEM, "model: out of memory");
    m->cfg = *cfg;
    m->arch = arch;
    pn_builder bd;
    memset(&bd, 0, sizeof bd);
    bd.m = m;
    int rc;
    if (new_value(&bd, cfg->in_channels, cfg->image, cfg->image, -1) != 0) goto fail;
    rc = arch->build(&bd, cfg);
    if (rc == PN_OK) rc = bd.status;
    if (rc != PN_OK) {
        if (bd.status == PN_OK) bd.status = rc;
        goto fail;
    }
    {
        const pn_value *last = &m->vals[m->nvals - 1];
        if (m->nops < 1 || last->C != cfg->classes || last->H != 1 || last->W != 1) {
            pn_b_fail(&bd, PN_ERR_ARG, "model: architecture %s does not end in (classes, 1, 1)",
                      cfg->arch);
            goto fail;
        }
    }
    m->params = calloc(m->nparams ? m->nparams : 1, sizeof(float));
    m->grads = calloc(m->nparams ? m->nparams : 1, sizeof(float));
    m->buffers = calloc(m->nbuffers ? m->nbuffers : 1, sizeof(float));
    if (!m->params || !m->grads || !m->buffers) goto nomem;

    pn_rng r = pn_rng_stream(seed, PN_STREAM_INIT, 0);
    for (int i = 0; i < m->np; i++)
        init_tensor(m->params + m->ptab[i].offset, &m->ptab[i], m->pinit[i], m->pfan[i], &r);
    for (int i = 0; i < m->nb; i++) {
        float v = m->binit[i] == PN_INIT_ONE ? 1.0f : 0.0f;
        for (size_t j = 0; j < m->btab[i].numel; j++) m->buffers[m->btab[i].offset + j] = v;
    }

    /* ln+ws: w_hat (O,K) + mean, rstd (O) for every standardized conv, and one dw_hat */
    {
        size_t total = 0, maxn = 0;
        for (int i = 0; i < m->nops; i++) {
            pn_op *op = &m->ops[i];
            if (!(op->vt->flags & PN_OP_IS_CONV) || !op->iattr[0]) continue;
            size_t O = (size_t)op->cs.Cout, nn = O * (size_t)(op->cs.Cin / op->cs.groups) * op->cs.KH * op->cs.KW;
            total += nn + 2 * O;
            if (nn > maxn) maxn = nn;
        }
        if (total) {
            m->ws_mem = malloc((total + maxn) * sizeof(float));
            if (!m->ws_mem) goto nomem;
            float *p = m->ws_mem;
            for (int i = 0; i < m->nops; i++) {
                pn_op *op = &m->ops[i];
                if (!(op->vt->flags & PN_OP_IS_CONV) || !op->iattr[0]) continue;
                size_t O = (size_t)op->cs.Cout, nn = O * (size_t)(op->cs.Cin / op->cs.groups) * op->cs.KH * op->cs.KW;
                op->what = p;
                p += nn;
                op->wmean = p;
                p += O;
                op->wrstd = p;
                p += O;
            }
            m->dwhat = p;
        }
    }

    /* the gradient buffers (simulated backward): at most the logits', and per op one for
     * a clobbered dout and two per input (its gradient, and a sum) */
    m->gcap = 1;
    for (int i = 0; i < m->nops; i++) m->gcap += 1 + 2 * m->ops[i].nin;
    m->gb = malloc((size_t)m->nvals * sizeof *m->gb);
    m->gref = malloc((size_t)m->gcap * sizeof *m->gref);
    m->ev_numel = malloc((size_t)m->gcap * sizeof *m->ev_numel);
    m->ev_t = malloc(2 * (size_t)m->gcap * sizeof *m->ev_t);
    if (!m->gb || !m->gref || !m->ev_numel || !m->ev_t) goto nomem;
    rc = run_backward(m, 1, 0, &m->nev);
    if (rc != PN_OK) {
        bd.status = rc;
        goto fail;
    }
    m->pool = calloc((size_t)m->nev, sizeof *m->pool);
    {
        /* the plan's items: values (a recomputed one has two intervals), gradient buffers,
         * per op its saved state and two workspaces, probabilities, labels */
        const size_t nit = (size_t)m->nvals + (size_t)m->nev + 3 * (size_t)m->nops + 2;
        const size_t niv = 2 * (size_t)m->nvals + (size_t)m->nev + 3 * (size_t)m->nops + 2;
        m->items = malloc(nit * sizeof *m->items);
        m->item_kind = malloc(nit * sizeof *m->item_kind);
        m->item_idx = malloc(nit * sizeof *m->item_idx);
        m->item_order = malloc(nit * sizeof *m->item_order);
        m->item_iv = malloc(2 * niv * sizeof *m->item_iv);
        if (!m->items || !m->item_kind || !m->item_idx || !m->item_order || !m->item_iv) goto nomem;
    }
    if (!m->pool) goto nomem;
    {
        const char *e = getenv("PROXYNORM_RECOMPUTE");
        m->recompute = !(e && strcmp(e, "0") == 0);
        e = getenv("PROXYNORM_UNSTORE");
        m->unstore = !(e && strcmp(e, "0") == 0);
    }
    {
        const char *e = getenv("PROXYNORM_RETAIN_ACTIVATIONS");
        m->retain = e && strcmp(e, "1") == 0;
    }
    if (getenv("PROXYNORM_PROFILE") && !(m->prof_t = calloc(2 * (size_t)m->nops, sizeof *m->prof_t)))
        goto nomem;
    *out = m;
    return PN_OK;

nomem:
    pn_b_fail(&bd, PN_ERR_NOMEM, "model: out of memory");
fail:
    rc = bd.status != PN_OK ? bd.status : PN_ERR_NOMEM;
    free_contents(m);
    free(m);
    return rc;
}

void pn_model_free(pn_model *m)
{
    if (!m) return;
    if (m->prof_t) prof_report(m);
    free_contents(m);
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

double pn_model_macs(const pn_model *m)
{
    if (!m) return 0;
    double t = 0;
    for (int i = 0; i < m->nops; i++)
        if (m->ops[i].vt->macs) t += m->ops[i].vt->macs(m, &m->ops[i]);
    return t;
}

size_t pn_model_conv_linear_params(const pn_model *m)
{
    if (!m) return 0;
    size_t t = 0;
    for (int i = 0; i < m->nops; i++) {
        const pn_op *op = &m->ops[i];
        if (!(op->vt->flags & (PN_OP_IS_CONV | PN_OP_IS_LINEAR))) continue;
        for (int j = 0; j < PN_OP_MAX_P; j++) {
            if (op->p[j] == PN_NONE) continue;
            for (int a = 0; a < m->np; a++)
                if (m->ptab[a].offset == op->p[j]) t += m->ptab[a].numel;
        }
    }
    return t;
}

int pn_model_visit_norms(const pn_model *m, pn_norm_visitor fn, void *ctx)
{
    PN_CHECK_PTR(m);
    PN_CHECK_PTR(fn);
    for (int i = 0; i < m->nops; i++) {
        const pn_op *op = &m->ops[i];
        if (!(op->vt->flags & PN_OP_IS_NORM)) continue;
        const pn_value *x = &m->vals[op->in[0]];
        pn_norm_info ni;
        memset(&ni, 0, sizeof ni);
        ni.name = op->name;
        ni.index = i;
        ni.C = x->C;
        ni.H = x->H;
        ni.W = x->W;
        ni.groups = op->G;
        ni.has_act = op->iattr[0];
        if (m->fwd_B > 0) {
            ni.batch = m->fwd_B;
            /* an output recomputed in the backward is not kept after the forward; after a
             * backward neither may be there */
            ni.input = m->acts_stale ? NULL : x->data;
            ni.output = m->vals[op->out].recomp || m->acts_stale ? NULL : m->vals[op->out].data;
            if (m->cfg.norm != PN_NORM_NONE) {
                size_t g = m->cfg.norm == PN_NORM_BN
                               ? (size_t)(m->fwd_B / (m->cfg.norm_batch > 0 ? m->cfg.norm_batch : m->fwd_B)) *
                                     (size_t)op->C
                               : (size_t)m->fwd_B * (size_t)op->G;
                ni.mean = op->save;
                ni.rstd = op->save + g;
                ni.nstat = g;
            }
        }
        int rc = fn(ctx, &ni);
        if (rc) return rc;
    }
    return PN_OK;
}

/* ------------------------------------------------------------ arena */
static size_t align_up(size_t n) { return (n + ALIGN_FLOATS - 1) / ALIGN_FLOATS * ALIGN_FLOATS; }

/* The two intervals of value v if it is recomputed in the backward (plan_recompute), on
 * the timeline of a step of n ops (forward op i at time i, backward op i at time 2n-1-i):
 * made by op p and read last by op c (forward order), it lives in the forward over
 * iv[0..1] = [p, c]; in the backward from the first backward that reads it, that of its
 * last reader with a backward call (c' = last_bwd), to the backward of p (which may read
 * its output, e.g. the ReLU mask): iv[2..3] = [2n-1-max(c',p), 2n-1-p]. */
static void rec_intervals(const pn_model *m, int v, int *iv)
{
    const int n = m->nops;
    const pn_value *x = &m->vals[v];
    const int p = x->producer;
    iv[0] = p;
    iv[1] = x->last_use > p ? x->last_use : p;
    iv[2] = 2 * n - 1 - (x->last_bwd > p ? x->last_bwd : p);
    iv[3] = 2 * n - 1 - p;
}

/* Marks the values recomputed in the backward (vals[].recomp; the arena plan gives each
 * its two intervals, rec_intervals): the output of an op that can recompute it
 * (vt->can_recompute), unless it is the model input or output, shares storage with another
 * value (in-place add), is read by a norm (pn_model_norm_output reads norm inputs after
 * the forward) or its producer reads a recomputed value (which may no longer be there).
 * Depends on the op list and the model's state only, not on B. */
static void plan_recompute(pn_model *m)
{
    for (int v = 0; v < m->nvals; v++) {
        pn_value *x = &m->vals[v];
        x->recomp = 0;
        x->fresh = 0;
        if (!m->recompute || v == 0 || v == m->nvals - 1 || x->producer < 0 || x->alias >= 0 || x->aliased ||
            x->dead || x->norm_in)
            continue;
        const pn_op *op = &m->ops[x->producer];
        if (!op->vt->recompute || !op->vt->can_recompute || !op->vt->can_recompute(m, op)) continue;
        int ok = 1; /* (inputs are earlier values: already marked) */
        for (int k = 0; k < op->nin; k++) ok = ok && !m->vals[op->in[k]].recomp;
        x->recomp = ok;
    }
}

/* Recomputed values that training never writes (vals[].unstored): their producer can skip
 * the output (vt->can_unstore: its forward then computes statistics only and its backward
 * does not read the output) and every op reading them takes them as planes
 * (vt->accepts_src: the direct convolution fills its padded input from the producer's
 * plane function). They keep their place for forwards outside training. */
static void plan_unstored(pn_model *m)
{
    for (int v = 0; v < m->nvals; v++) {
        pn_value *x = &m->vals[v];
        x->unstored = 0;
        if (!m->unstore || !x->recomp || x->consumers < 1) continue;
        const pn_op *p = &m->ops[x->producer];
        if (!p->vt->can_unstore || !p->vt->plane || !p->vt->can_unstore(m, p)) continue;
        int ok = 1;
        for (int i = 0; i < m->nops && ok; i++) {
            const pn_op *op = &m->ops[i];
            for (int k = 0; k < op->nin && ok; k++)
                if (op->in[k] == v) ok = op->vt->accepts_src && op->vt->accepts_src(m, op, k);
        }
        x->unstored = ok;
    }
}

/* The arena's items (pn_arena_pack) and where each one goes. */
enum { IT_VAL, IT_GRAD, IT_WORK_F, IT_WORK_B, IT_SAVE, IT_PROBS, IT_LABELS };

/* Lays the arena out for batch B (item offsets, m->nitems); returns its floats. Every
 * buffer of a step is an item with its lifetime on the step's timeline (forward op i at
 * time i, backward op i at time 2n-1-i; -1 and 2n: before and after the step), and items
 * live at no common time share memory (pn_arena_pack, src/nn/arena.h):
 *   - a value that has its own storage: from its producer's forward to its producer's
 *     backward (the last that may read it: consumers come after the producer, so their
 *     backwards before), an in-place add's output in its input's storage; the model
 *     input and the logits the whole step (the caller reads the logits after a backward);
 *   - a value recomputed in the backward (plan_recompute): its two intervals, at one
 *     address;
 *   - a gradient buffer (run_backward's simulation): from the backward op that takes it
 *     to the one that gives it back;
 *   - an op's workspace (vt->work): its forward, and its backward;
 *   - an op's saved state, the probabilities and the labels: the whole step.
 * So the gradients of the last stages' backward and the workspaces reuse the memory of
 * values whose backward is over. */
static size_t plan(pn_model *m, int B)
{
    const size_t Bz = (size_t)B;
    const int n = m->nops, end = 2 * n;
    pn_arena_item *it = m->items;
    int *iv = m->item_iv, ni = 0, niv = 0;
#define ITEM(kind_, idx_, nfl)                                                                   \
    do {                                                                                         \
        it[ni].size = align_up(nfl);                                                             \
        it[ni].iv = niv;                                                                         \
        it[ni].niv = 0;                                                                          \
        m->item_kind[ni] = (kind_);                                                              \
        m->item_idx[ni] = (idx_);                                                                \
        ni++;                                                                                    \
    } while (0)
#define SPAN(a_, b_)                                                                             \
    do {                                                                                         \
        iv[2 * niv] = (a_);                                                                      \
        iv[2 * niv + 1] = (b_);                                                                  \
        niv++;                                                                                   \
        it[ni - 1].niv++;                                                                        \
    } while (0)
    plan_recompute(m);
    plan_unstored(m);
    for (int v = 0; v < m->nvals; v++) {
        const pn_value *x = &m->vals[v];
        if (x->alias >= 0) continue;
        ITEM(IT_VAL, v, val_numel(m, v, B));
        if (x->recomp) { /* by its two intervals */
            int r[4];
            rec_intervals(m, v, r);
            SPAN(r[0], r[1]);
            SPAN(r[2], r[3]);
        } else if (v == 0 || v == m->nvals - 1 || x->producer < 0 || m->retain) {
            SPAN(-1, end);
        } else {
            SPAN(x->producer, 2 * n - 1 - x->producer);
        }
    }
    for (int k = 0; k < m->nev; k++) {
        ITEM(IT_GRAD, k, Bz * m->ev_numel[k]);
        SPAN(m->ev_t[2 * k], m->ev_t[2 * k + 1]);
    }
    for (int i = 0; i < n; i++) {
        pn_op *op = &m->ops[i];
        const size_t s = op->vt->saved ? op->vt->saved(m, op, B) : 0;
        const size_t w = op->vt->work ? op->vt->work(m, op, B) : 0;
        op->wkn = w;
        if (s) {
            ITEM(IT_SAVE, i, s);
            SPAN(-1, end);
        }
        if (w) {
            ITEM(IT_WORK_F, i, w);
            SPAN(i, i);
            ITEM(IT_WORK_B, i, w);
            SPAN(2 * n - 1 - i, 2 * n - 1 - i);
        }
    }
    ITEM(IT_PROBS, 0, Bz * (size_t)m->cfg.classes);
    SPAN(-1, end);
    ITEM(IT_LABELS, 0, Bz);
    SPAN(-1, end);
#undef ITEM
#undef SPAN
    m->nitems = ni;
    return pn_arena_pack(it, ni, iv, m->item_order);
}

/* The pointers into the arena at base of the last plan's items. */
static void place(pn_model *m, float *base)
{
    for (int i = 0; i < m->nops; i++) {
        m->ops[i].save = NULL;
        m->ops[i].wk[0] = m->ops[i].wk[1] = NULL;
    }
    for (int k = 0; k < m->nitems; k++) {
        float *p = base + m->items[k].off;
        const int j = m->item_idx[k];
        switch (m->item_kind[k]) {
        case IT_VAL: m->vals[j].data = p; break;
        case IT_GRAD: m->pool[j] = p; break;
        case IT_WORK_F: m->ops[j].wk[0] = p; break;
        case IT_WORK_B: m->ops[j].wk[1] = p; break;
        case IT_SAVE: m->ops[j].save = p; break;
        case IT_PROBS: m->probs = p; break;
        default: m->labels = (int *)(void *)p; break;
        }
    }
    for (int v = 0; v < m->nvals; v++)
        if (m->vals[v].alias >= 0) m->vals[v].data = m->vals[m->vals[v].alias].data;
    m->work = NULL;
    m->work_floats = 0;
}

_Static_assert(sizeof(int) == sizeof(float), "labels are stored in float slots");

static int ensure_arena(pn_model *m, int B)
{
    /* the conv workspace holds a slice per thread: re-plan after pn_set_threads */
    if (m->plan_B == B && m->arena && m->plan_threads == pn_get_threads()) return PN_OK;
    size_t need = plan(m, B);
    if (need > SIZE_MAX / sizeof(float)) return pn_error(PN_ERR_NOMEM, "model: batch too large");
    size_t bytes = need * sizeof(float);
    if (bytes > m->arena_bytes || !m->arena) {
        free(m->arena);
        m->arena = NULL;
        m->arena_bytes = 0;
        m->plan_B = 0;
        m->fwd_B = 0;
        void *p = NULL;
        /* Large arenas on 2 MiB boundaries, marked for transparent huge pages (where the
         * kernel gives them on request only, THP "madvise"): the activations of a step span
         * ~100 MB, far beyond what the TLB maps with 4 KiB pages. */
        const size_t align = bytes >= ((size_t)8 << 20) ? ((size_t)2 << 20) : 64;
        if (posix_memalign(&p, align, bytes ? bytes : 64) != 0)
            return pn_error(PN_ERR_NOMEM, "model: cannot allocate %zu bytes of activations", bytes);
#ifdef MADV_HUGEPAGE
        if (align > 64 && getenv("PROXYNORM_NO_HUGEPAGES") == NULL) (void)madvise(p, bytes, MADV_HUGEPAGE);
#endif
        m->arena = p;
        m->arena_bytes = bytes;
    }
    place(m, m->arena);
    m->plan_B = B;
    m->plan_threads = pn_get_threads();
    return PN_OK;
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
    PN_CHECK(!(m->folded && training), "model_forward: the model is folded (inference only)");
    m->fwd_B = 0;
    m->have_loss = 0;
    int rc = ensure_arena(m, B);
    if (rc != PN_OK) return rc;
    for (int i = 0; i < m->nops; i++) {
        pn_op *op = &m->ops[i];
        if (!op->what || op->fw) continue;
        const int O = op->cs.Cout, K = op->cs.Cin / op->cs.groups * op->cs.KH * op->cs.KW;
        rc = pn_ws_forward(op->what, op->wmean, op->wrstd, m->params + op->p[0], O, K, PN_WS_EPS);
        if (rc != PN_OK) return rc;
    }
    memcpy(m->vals[0].data, x, val_numel(m, 0, B) * sizeof(float));
    for (int i = 0; i < m->nops; i++) {
        pn_op *op = &m->ops[i];
        pn_fwd_args a;
        unstored_src us[PN_OP_MAX_IN];
        memset(&a, 0, sizeof a);
        for (int k = 0; k < op->nin; k++) {
            const int v = op->in[k];
            if (training && m->vals[v].unstored) a.src[k] = unstored_init(&us[k], m, v, B);
            else a.in[k] = m->vals[v].data;
        }
        a.virt_out = training && m->vals[op->out].unstored;
        a.out = a.virt_out ? NULL : m->vals[op->out].data;
        a.B = B;
        a.training = training ? 1 : 0;
        m->work = op->wk[0];
        m->work_floats = op->wkn;
        const double t0 = m->prof_t ? pn_now_s() : 0.0;
        if ((rc = op->vt->forward(m, op, &a)) != PN_OK) return rc;
        if (m->prof_t) m->prof_t[2 * i] += pn_now_s() - t0;
    }
    m->fwd_B = B;
    m->fwd_training = training ? 1 : 0;
    m->acts_stale = 0;
    if (logits) *logits = m->vals[m->nvals - 1].data;
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
    int rc = pn_xent_forward(&l, &corr, m->probs, m->vals[m->nvals - 1].data, m->labels, B, K, smoothing);
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
    PN_CHECK(!m->folded, "model_backward: the model is folded (inference only)");
    PN_CHECK(m->fwd_training || m->cfg.norm != PN_NORM_BN,
             "model_backward: BatchNorm needs a training-mode forward");
    PN_CHECK(!m->acts_stale, "model_backward: a backward of this forward has run, and its buffers reused the "
                             "activations' memory: run the forward again (or pn_model_set_retain_activations(m, 1))");
    const int B = m->fwd_B, K = m->cfg.classes;
    /* the schedule puts the logits' gradient in pool buffer 0 */
    int rc = pn_xent_backward(m->pool[0], m->probs, m->labels, B, K, m->smoothing, scale);
    if (rc != PN_OK) return rc;
    int used;
    m->acts_stale = !m->retain; /* the gradients and workspaces reuse values' memory */
    return run_backward(m, B, 1, &used);
}

/* ------------------------------------------------------------ inference folding */

/* Ops reading value v (up to max); returns the count. */
static int consumers_of(const pn_model *m, int v, int *out, int max)
{
    int n = 0;
    for (int i = 0; i < m->nops; i++)
        for (int k = 0; k < m->ops[i].nin; k++)
            if (m->ops[i].in[k] == v) {
                if (n < max) out[n] = i;
                n++;
                break;
            }
    return n;
}

static size_t conv_w_numel(const pn_op *op)
{
    return (size_t)op->cs.Cout * (size_t)(op->cs.Cin / op->cs.groups) * op->cs.KH * op->cs.KW;
}

/* Makes op's folded weight / bias copies (conv or linear) if not there yet. */
static int fold_copies(pn_model *m, pn_op *op)
{
    const int is_conv = op->vt == &pn_op_conv;
    const size_t nw = is_conv ? conv_w_numel(op) : (size_t)op->iattr[0] * (size_t)op->iattr[1];
    const int O = is_conv ? op->cs.Cout : op->iattr[1];
    if (!op->fw) {
        op->fw = malloc(nw * sizeof(float));
        if (!op->fw) return pn_error(PN_ERR_NOMEM, "model: out of memory");
        memcpy(op->fw, m->params + op->p[0], nw * sizeof(float));
    }
    if (!op->fb) {
        op->fb = calloc((size_t)O, sizeof(float));
        if (!op->fb) return pn_error(PN_ERR_NOMEM, "model: out of memory");
        if (op->p[1] != PN_NONE) memcpy(op->fb, m->params + op->p[1], (size_t)O * sizeof(float));
    }
    return PN_OK;
}

/* bias[o] -= sum over o's input channels c of W[o, c] * d[c]; op is a 1x1 conv or a linear
 * layer whose input has one feature per channel. */
static void fold_shift(pn_op *op, const float *d)
{
    const int is_conv = op->vt == &pn_op_conv;
    const int O = is_conv ? op->cs.Cout : op->iattr[1];
    const int Kin = is_conv ? op->cs.Cin / op->cs.groups : op->iattr[0];
    const int Og = is_conv ? O / op->cs.groups : O;
    for (int o = 0; o < O; o++) {
        const int c0 = (o / Og) * Kin;
        double acc = 0;
        for (int j = 0; j < Kin; j++) acc += (double)op->fw[(size_t)o * Kin + j] * d[c0 + j];
        op->fb[o] = (float)((double)op->fb[o] - acc);
    }
}

int pn_model_fold(pn_model *m, int *nfolded)
{
    PN_CHECK_PTR(m);
    if (nfolded) *nfolded = 0;
    PN_CHECK(!m->folded, "model_fold: the model is folded already");
    const pn_norm_kind k = m->cfg.norm;
    int count = 0, cons[64];
    for (int i = 0; i < m->nops; i++) {
        pn_op *op = &m->ops[i];
        if (!(op->vt->flags & PN_OP_IS_NORM)) continue;
        const int C = op->C;
        if (k == PN_NORM_BN) { /* with an activation or not (op->act is then the identity) */
            const pn_value *x = &m->vals[op->in[0]];
            if (x->producer < 0 || m->ops[x->producer].vt != &pn_op_conv || x->consumers != 1) continue;
            pn_op *cv = &m->ops[x->producer];
            int rc = fold_copies(m, cv);
            if (rc != PN_OK) return rc;
            const float *w = m->params + op->p[0], *b = m->params + op->p[1];
            const float *rm = m->buffers + op->buf[0], *rv = m->buffers + op->buf[1];
            const size_t per = conv_w_numel(cv) / (size_t)cv->cs.Cout;
            for (int o = 0; o < C; o++) {
                const double a = (double)w[o] / sqrt((double)rv[o] + (double)PN_BN_EPS);
                for (size_t j = 0; j < per; j++) cv->fw[(size_t)o * per + j] = (float)(a * cv->fw[(size_t)o * per + j]);
                cv->fb[o] = (float)(a * ((double)cv->fb[o] - rm[o]) + b[o]);
            }
            op->fold_mode = 1;
            count++;
        } else if ((k == PN_NORM_GN_PN || k == PN_NORM_LN_PN) && op->iattr[0] && op->act == PN_ACT_RELU) {
            op->fold = malloc(3 * (size_t)C * sizeof(float));
            float *pm = malloc(2 * (size_t)C * sizeof(float));
            if (!op->fold || !pm) { free(pm); return pn_error(PN_ERR_NOMEM, "model: out of memory"); }
            pn_pnact_params p = { m->params + op->p[0], m->params + op->p[1], m->params + op->p[2],
                                  m->params + op->p[3] };
            int rc = pn_pnact_stats(pm, pm + C, p, C, PN_ACT_RELU, PN_PROXY_EPS);
            if (rc != PN_OK) { free(pm); return rc; }
            float *fa = op->fold, *fbias = op->fold + C, *fd = op->fold + 2 * C;
            for (int c = 0; c < C; c++) {
                const double sc = pm[C + c];
                fa[c] = (float)(sc * p.gamma[c]);
                fbias[c] = (float)(sc * p.beta[c]);
                fd[c] = (float)(sc * pm[c]);
            }
            free(pm);
            /* the shift goes into the consumers when all are 1x1 convs or pools feeding linears */
            int nc = consumers_of(m, op->out, cons, 64), ok = nc >= 1 && nc <= 64;
            for (int j = 0; j < nc && ok; j++) {
                const pn_op *u = &m->ops[cons[j]];
                if (u->vt == &pn_op_conv) {
                    ok = u->cs.KH == 1 && u->cs.KW == 1 && u->cs.pad == 0;
                } else if (u->vt == &pn_op_gap) {
                    int c2[64], n2 = consumers_of(m, u->out, c2, 64);
                    ok = n2 >= 1 && n2 <= 64;
                    for (int t = 0; t < n2 && ok; t++) ok = m->ops[c2[t]].vt == &pn_op_linear;
                } else {
                    ok = 0;
                }
            }
            op->iattr[2] = 1; /* shift applied in the norm */
            if (ok) {
                for (int j = 0; j < nc; j++) {
                    pn_op *u = &m->ops[cons[j]];
                    if (u->vt == &pn_op_conv) {
                        if ((rc = fold_copies(m, u)) != PN_OK) return rc;
                        fold_shift(u, fd);
                    } else {
                        int c2[64], n2 = consumers_of(m, u->out, c2, 64);
                        for (int t = 0; t < n2; t++) {
                            if ((rc = fold_copies(m, &m->ops[c2[t]])) != PN_OK) return rc;
                            fold_shift(&m->ops[c2[t]], fd);
                        }
                    }
                }
                op->iattr[2] = 0;
            }
            op->fold_mode = 2;
            count++;
        }
    }
    m->folded = 1;
    m->fwd_B = 0;
    m->plan_B = 0; /* folded norms are not recomputed: plan again at the next forward */
    if (nfolded) *nfolded = count;
    return PN_OK;
}

/* ------------------------------------------------------------ diagnostics */
/* Read access to the normalized pre-activations of the last forward, for the power
 * decomposition (src/diag/power.c): recomputed from each norm op's saved input and
 * statistics (BN after an evaluation forward: its running statistics). Nothing here
 * is used by training. */
int pn_model_norm_output(const pn_model *m, int i, pn_norm_layer_info *info, float *y)
{
    PN_CHECK_PTR(m);
    int count = 0;
    const pn_op *op = NULL;
    for (int k = 0; k < m->nops; k++)
        if (m->ops[k].vt->flags & PN_OP_IS_NORM) {
            if (count == i) op = &m->ops[k];
            count++;
        }
    PN_CHECK(i >= 0 && i < count, "model_norm_output: layer %d not in [0, %d)", i, count);
    const pn_value *xv = &m->vals[op->in[0]];
    const pn_norm_kind k = m->cfg.norm;
    const int bn = k == PN_NORM_BN;
    pn_norm_layer_info inf;
    memset(&inf, 0, sizeof inf);
    snprintf(inf.name, sizeof inf.name, "%s", op->name);
    inf.count = count;
    inf.C = xv->C;
    inf.HW = xv->H * xv->W;
    inf.B = m->fwd_B;
    inf.G = bn || k == PN_NORM_NONE ? 0 : op->G;
    inf.training = m->fwd_training;
    if (info) *info = inf;
    if (!y) return PN_OK;
    PN_CHECK(m->fwd_B > 0, "model_norm_output: no forward pass yet");
    PN_CHECK(!m->acts_stale, "model_norm_output: a backward has run since the last forward (its buffers reuse "
                             "the activations' memory)");
    const int B = m->fwd_B, C = inf.C, HW = inf.HW;
    const float *x = xv->data;
    if (k == PN_NORM_NONE) {
        memcpy(y, x, (size_t)B * C * HW * sizeof(float));
        return PN_OK;
    }
    /* statistics as pn_model_visit_norms lays them out: GN family (B, G); BN after a
     * training forward (B/g, C) for normalization batch g (the sync-BN override
     * normalizes over the whole batch: norm_batch 0) */
    const int g = m->cfg.norm_batch > 0 ? m->cfg.norm_batch : B;
    const size_t nstat = bn ? (size_t)(B / g) * (size_t)C : (size_t)B * (size_t)op->G;
    const float *mean = op->save, *rstd = op->save + nstat;
    const float *rm = bn ? m->buffers + op->buf[0] : NULL, *rv = bn ? m->buffers + op->buf[1] : NULL;
    #pragma omp parallel for schedule(static) if ((size_t)B * C * HW >= 65536)
    for (long nc = 0; nc < (long)B * C; nc++) {
        const int n = (int)(nc / C), c = (int)(nc % C);
        float mu, r;
        if (!bn) {
            const int grp = n * op->G + c / (C / op->G);
            mu = mean[grp];
            r = rstd[grp];
        } else if (m->fwd_training) {
            mu = mean[(size_t)(n / g) * C + c];
            r = rstd[(size_t)(n / g) * C + c];
        } else {
            mu = rm[c];
            r = (float)(1.0 / sqrt((double)rv[c] + (double)PN_BN_EPS));
        }
        const float *xi = x + (size_t)nc * HW;
        float *yo = y + (size_t)nc * HW;
        for (int p = 0; p < HW; p++) yo[p] = (xi[p] - mu) * r;
    }
    return PN_OK;
}

/* ------------------------------------------------------------ training pass */

/* How pn_model_train_pass may use thread copies of the model: 2 with every op one of the
 * per-sample built-in kinds (every norm but BN: whole micro-batches or the images of one),
 * 1 with BN (whole micro-batches only: its statistics span a micro-batch; the running
 * statistics are combined afterwards), 0 not at all: EfficientNet's stochastic layers and
 * other op kinds, a folded model, sync-BN hooks, a profile (its times are per op of one
 * model). */
static int replica_mode(const pn_model *m)
{
    if (!m || m->folded || m->bn_ovr.forward || m->prof_t || !m->arch) return 0;
    for (int i = 0; i < m->nops; i++) {
        const pn_op_vt *vt = m->ops[i].vt;
        if (vt != &pn_op_conv && vt != &pn_op_norm && vt != &pn_op_add && vt != &pn_op_act &&
            vt != &pn_op_maxpool && vt != &pn_op_gap && vt != &pn_op_linear)
            return 0;
    }
    return m->cfg.norm == PN_NORM_BN ? 1 : 2;
}

int pn_model_replicable(const pn_model *m) { return replica_mode(m) != 0; }

/* The T - 1 replicas (created once, reading the model's parameters), with the model's
 * settings, zero gradients and zero buffers (BN's running statistics: each copy's updates
 * are added to the model's afterwards, combine_buffers). */
static int sync_replicas(pn_model *m, int T)
{
    if (m->nreplicas < T - 1) {
        pn_model **r = realloc(m->replicas, (size_t)(T - 1) * sizeof *r);
        if (!r) return pn_error(PN_ERR_NOMEM, "model: out of memory");
        m->replicas = r;
        while (m->nreplicas < T - 1) {
            pn_model *r = NULL;
            int rc = pn_model_create_arch(&r, &m->cfg, m->arch, 0);
            if (rc != PN_OK) return rc;
            /* the parameters are only read in a pass: the copy reads the model's own */
            free(r->params);
            r->params = m->params;
            r->params_shared = 1;
            m->replicas[m->nreplicas++] = r;
        }
    }
    for (int i = 0; i < T - 1; i++) {
        pn_model *r = m->replicas[i];
        memset(r->buffers, 0, m->nbuffers * sizeof(float));
        memset(r->grads, 0, m->nparams * sizeof(float));
        if (r->recompute != m->recompute) pn_model_set_recompute(r, m->recompute);
        if (r->unstore != m->unstore) pn_model_set_unstore(r, m->unstore);
        if (r->retain != m->retain) pn_model_set_retain_activations(r, m->retain);
    }
    return PN_OK;
}

/* BN's running statistics after the pass: an update is r = (1 - momentum) r + momentum s,
 * linear in r, so the copy of thread t, started from zero, holds the sum of its n_t updates
 * decayed as in one run, and the run over all micro-batches in order is
 * r = (1 - momentum)^n_t r + r_t for t = 1, 2, ... after thread 0's (in double). */
static void combine_buffers(pn_model *m, int T, const int *nupd)
{
    for (int t = 1; t < T; t++) {
        const double decay = pow(1.0 - (double)PN_BN_MOMENTUM, nupd[t]);
        const float *rb = m->replicas[t - 1]->buffers;
        for (size_t i = 0; i < m->nbuffers; i++) m->buffers[i] = (float)(decay * m->buffers[i] + rb[i]);
    }
}

/* Forward, loss and backward of B images on model r, loss and correct added. */
static int pass_part(pn_model *r, const float *x, const int *labels, int B, float smoothing, float scale,
                     double *loss_sum, int *correct)
{
    double ls = 0.0;
    int c = 0;
    int rc = pn_model_forward(r, x, B, 1, NULL);
    if (rc == PN_OK) rc = pn_model_loss(r, labels, smoothing, &ls, &c);
    if (rc == PN_OK) rc = pn_model_backward(r, scale);
    *loss_sum += ls;
    *correct += c;
    return rc;
}

int pn_model_train_pass(pn_model *m, const float *x, const int *labels, int B, int micro, float smoothing,
                        float scale, double *loss_sum, int *correct)
{
    PN_CHECK_PTR(m);
    PN_CHECK_PTR(x);
    PN_CHECK_PTR(labels);
    PN_CHECK_PTR(loss_sum);
    PN_CHECK_PTR(correct);
    PN_CHECK(B > 0 && micro > 0 && B % micro == 0,
             "model_train_pass: the micro-batch %d must divide the batch %d (both > 0)", micro, B);
    const size_t img = (size_t)m->cfg.in_channels * (size_t)m->cfg.image * (size_t)m->cfg.image;
    const int nmb = B / micro, mode = replica_mode(m);
    int T = pn_get_threads();
    if (T > PN_MAX_REPLICAS) T = PN_MAX_REPLICAS;
    if (nmb < T && T > micro) T = micro; /* at least one image per thread */
    *loss_sum = 0.0;
    *correct = 0;
    if (T < 2 || mode == 0 || (mode == 1 && nmb < T)) {
        for (int k = 0; k < nmb; k++) {
            int rc = pass_part(m, x + (size_t)k * micro * img, labels + (size_t)k * micro, micro, smoothing, scale,
                               loss_sum, correct);
            if (rc != PN_OK) return rc;
        }
        return PN_OK;
    }
    int rc = sync_replicas(m, T);
    if (rc != PN_OK) return rc;
    double ls[PN_MAX_REPLICAS];
    int cor[PN_MAX_REPLICAS], rcs[PN_MAX_REPLICAS], nupd[PN_MAX_REPLICAS];
    const int g = m->cfg.norm_batch > 0 ? m->cfg.norm_batch : micro, chunks = micro % g ? 1 : micro / g;
    char msg[PN_MAX_REPLICAS][256];
    /* Each thread runs its part through its own model with single-threaded kernels (their
     * regions are nested, so inactive) and no synchronization until the end: micro-batches
     * are independent of each other, and with the per-sample norms so are the images of
     * one. The parts: whole micro-batches, T contiguous runs of them, when there are at
     * least T of them (then each micro-batch's gradient is the 1-thread run's), else each
     * micro-batch's images in T contiguous ranges. (On the 2-core VM two single-threaded
     * processes at micro-batch 8 gave 1.5x the images/s of one process with 2 threads,
     * which synchronized about 190 times per micro-batch.) */
    int nt_used = T;
    #pragma omp parallel num_threads(T)
    {
        const int t = omp_get_thread_num(), nt = omp_get_num_threads();
        pn_model *r = t == 0 ? m : m->replicas[t - 1];
        ls[t] = 0.0;
        cor[t] = 0;
        rcs[t] = PN_OK;
        nupd[t] = 0;
        if (nmb >= nt) {
            const int k0 = (int)((long)nmb * t / nt), k1 = (int)((long)nmb * (t + 1) / nt);
            for (int k = k0; k < k1 && rcs[t] == PN_OK; k++)
                rcs[t] = pass_part(r, x + (size_t)k * micro * img, labels + (size_t)k * micro, micro, smoothing,
                                   scale, &ls[t], &cor[t]);
            nupd[t] = (k1 - k0) * chunks; /* BN: the running-statistics updates of this copy */
        } else {
            for (int k = 0; k < nmb && rcs[t] == PN_OK; k++) {
                const int lo = (int)((long)micro * t / nt), hi = (int)((long)micro * (t + 1) / nt);
                const size_t o = (size_t)k * micro + (size_t)lo;
                if (hi > lo)
                    rcs[t] = pass_part(r, x + o * img, labels + o, hi - lo, smoothing, scale, &ls[t], &cor[t]);
            }
        }
        if (rcs[t] != PN_OK) snprintf(msg[t], sizeof msg[t], "%s", pn_last_error());
        if (t == 0) nt_used = nt;
    }
    for (int t = 0; t < nt_used; t++)
        if (rcs[t] != PN_OK) return pn_error(rcs[t], "%s", msg[t]);
    /* the replicas' gradients added in thread order (deterministic for a thread count) */
    for (int t = 1; t < nt_used; t++) {
        const float *gr = m->replicas[t - 1]->grads;
        for (size_t i = 0; i < m->nparams; i++) m->grads[i] += gr[i];
    }
    if (m->nbuffers) combine_buffers(m, nt_used, nupd);
    for (int t = 0; t < nt_used; t++) {
        *loss_sum += ls[t];
        *correct += cor[t];
    }
    return PN_OK;
}
