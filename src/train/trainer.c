/* Training loop, evaluation, log and checkpoints (see trainer.h). */
#include "train/trainer.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "dist/syncbn.h"
#include "kernels/common.h"
#include "kernels/rng.h"

#define CKPT_FORMAT "proxynorm-checkpoint"
#define VELOCITY_PREFIX "optim.velocity."

struct pn_trainer {
    pn_train_config cfg;
    const pn_dataset *train, *test;
    pn_model *model;
    float *velocity;       /* (num_params) */
    float *xbuf;           /* (cap, c, h, w): micro-batches of this process's share of a batch */
    int *ybuf;             /* (cap) */
    int cap;               /* images xbuf holds: a micro-batch per thread (pn_model_train_pass) */
    int *perm;             /* (n_train) order of the current epoch */
    long perm_epoch;       /* epoch perm was drawn for, -1: none */
    long step, total, spe, warmup_steps;
    int pad, flip;
    double loss_sum;       /* summed loss of the images since the last evaluation */
    long loss_count;
    double prior_seconds;  /* elapsed time of earlier (resumed) sessions */
    double t_start;        /* this session */
    double train_time;     /* seconds spent in updates this session */
    long session_steps;
    float last_lr;
    double last_loss;
    FILE *log;
    pn_dist dist;          /* size 1: one process */
    double comm_bytes;     /* per update and rank */
    double comm_base;      /* the part that does not depend on sync-BN */
    pn_syncbn *syncbn;     /* NULL: no synchronized BN */
    volatile int *stop_flag; /* the run's stop request (shared across ranks) */
    int stop_any;          /* a rank asked to stop (set by the last update) */
};

static double peak_rss_mb(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return 0.0;
    return (double)ru.ru_maxrss / 1024.0; /* ru_maxrss is in KiB on Linux */
}

void pn_train_config_default(pn_train_config *c)
{
    memset(c, 0, sizeof *c);
    pn_model_config_default(&c->model);
    c->epochs = 1;
    c->batch = 128;
    c->micro_batch = 128;
    c->lr = 0.1f;
    c->wd = 5e-4f;
    c->momentum = 0.9f;
    c->nesterov = 1;
    c->warmup = 0.5f;
    c->label_smoothing = 0.0f;
    c->augment = 1;
    c->seed = 0;
}

int pn_train_config_check(const pn_train_config *c, long n_train)
{
    PN_CHECK_PTR(c);
    PN_CHECK(c->epochs >= 1, "epochs must be >= 1 (got %d)", c->epochs);
    PN_CHECK(c->batch >= 1, "batch must be >= 1 (got %d)", c->batch);
    PN_CHECK(c->micro_batch >= 1, "micro-batch must be >= 1 (got %d)", c->micro_batch);
    PN_CHECK(c->batch % c->micro_batch == 0, "micro-batch %d does not divide batch %d",
             c->micro_batch, c->batch);
    PN_CHECK(isfinite(c->lr) && c->lr >= 0.0f, "lr must be finite and >= 0 (got %g)", (double)c->lr);
    PN_CHECK(isfinite(c->wd) && c->wd >= 0.0f, "wd must be finite and >= 0 (got %g)", (double)c->wd);
    PN_CHECK(c->momentum >= 0.0f && c->momentum < 1.0f, "momentum must be in [0, 1) (got %g)",
             (double)c->momentum);
    PN_CHECK(isfinite(c->warmup) && c->warmup >= 0.0f && c->warmup <= (float)c->epochs,
             "warmup must be in [0, epochs] (got %g)", (double)c->warmup);
    PN_CHECK(c->label_smoothing >= 0.0f && c->label_smoothing < 1.0f,
             "label smoothing must be in [0, 1) (got %g)", (double)c->label_smoothing);
    PN_CHECK(c->limit_train >= 0, "limit-train must be >= 0 (got %ld)", c->limit_train);
    PN_CHECK(c->eval_every >= 0, "eval-every must be >= 0 (got %ld)", c->eval_every);
    PN_CHECK(c->save_every >= 0, "save-every must be >= 0 (got %ld)", c->save_every);
    PN_CHECK(c->stop_at >= 0, "stop-at must be >= 0 (got %ld)", c->stop_at);
    PN_CHECK(c->model.groups >= 1, "groups must be >= 1 (got %d)", c->model.groups);
    PN_CHECK(c->model.width >= 1, "width must be >= 1 (got %d)", c->model.width);
    PN_CHECK(c->model.norm_batch >= 0, "norm-batch must be >= 0 (got %d)", c->model.norm_batch);
    if (c->model.norm == PN_NORM_BN && c->model.norm_batch > 0)
        PN_CHECK(c->micro_batch % c->model.norm_batch == 0,
                 "norm-batch %d does not divide micro-batch %d", c->model.norm_batch,
                 c->micro_batch);
    if (n_train > 0)
        PN_CHECK(n_train >= c->batch, "batch %d is larger than the training set (%ld images)",
                 c->batch, n_train);
    return PN_OK;
}

static int check_data(const pn_model_config *mc, const pn_dataset *d, const char *what)
{
    if (!d) return PN_OK;
    if (d->n <= 0 || !d->images || !d->labels)
        return pn_error(PN_ERR_ARG, "%s set is empty", what);
    if (d->c != mc->in_channels || d->h != mc->image || d->w != mc->image ||
        d->classes != mc->classes)
        return pn_error(PN_ERR_ARG,
                        "%s set has images %dx%dx%d and %d classes, the model expects %dx%dx%d and %d",
                        what, d->c, d->h, d->w, d->classes, mc->in_channels, mc->image, mc->image,
                        mc->classes);
    return PN_OK;
}

int pn_trainer_create(pn_trainer **out, const pn_train_config *cfg, const pn_dataset *train,
                      const pn_dataset *test)
{
    PN_CHECK_PTR(out);
    *out = NULL;
    PN_CHECK_PTR(cfg);
    PN_CHECK_PTR(train);
    int rc = pn_train_config_check(cfg, train->n);
    if (rc) return rc;
    if ((rc = check_data(&cfg->model, train, "training"))) return rc;
    if ((rc = check_data(&cfg->model, test, "test"))) return rc;

    pn_trainer *t = calloc(1, sizeof *t);
    if (!t) return pn_error(PN_ERR_NOMEM, "trainer: out of memory");
    t->cfg = *cfg;
    t->train = train;
    t->test = test;
    t->perm_epoch = -1;
    t->dist.size = 1;
    rc = pn_model_create(&t->model, &cfg->model, cfg->seed);
    if (rc) { t->model = NULL; pn_trainer_free(t); return rc; }
    size_t np = pn_model_num_params(t->model);
    size_t img = (size_t)train->c * train->h * train->w;
    t->velocity = calloc(np ? np : 1, sizeof(float));
    t->cap = cfg->micro_batch; /* grown at the first step to a micro-batch per thread */
    t->xbuf = malloc((size_t)t->cap * img * sizeof(float));
    t->ybuf = malloc((size_t)t->cap * sizeof(int));
    t->perm = malloc((size_t)train->n * sizeof(int));
    if (!t->velocity || !t->xbuf || !t->ybuf || !t->perm) {
        pn_trainer_free(t);
        return pn_error(PN_ERR_NOMEM, "trainer: out of memory");
    }
    t->spe = train->n / cfg->batch;
    t->total = t->spe * cfg->epochs;
    t->warmup_steps = (long)floor((double)cfg->warmup * (double)t->spe + 0.5);
    t->pad = train->h >= 32 ? 4 : train->h >= 8 ? 2 : train->h / 4;
    t->flip = strcmp(train->name, "mnist") != 0; /* digits are not mirror-symmetric */
    t->last_lr = pn_lr_at(cfg->lr, 0, t->warmup_steps, t->total);
    t->last_loss = NAN;
    t->t_start = pn_now_s();
    *out = t;
    return PN_OK;
}

void pn_trainer_free(pn_trainer *t)
{
    if (!t) return;
    if (t->log) fclose(t->log);
    pn_model_free(t->model);
    pn_syncbn_free(t->syncbn);
    free(t->syncbn);
    free(t->velocity);
    free(t->xbuf);
    free(t->ybuf);
    free(t->perm);
    free(t);
}

pn_model *pn_trainer_model(pn_trainer *t) { return t ? t->model : NULL; }
const pn_train_config *pn_trainer_config(const pn_trainer *t) { return t ? &t->cfg : NULL; }
long pn_trainer_step_count(const pn_trainer *t) { return t ? t->step : 0; }
long pn_trainer_total_steps(const pn_trainer *t) { return t ? t->total : 0; }
float *pn_trainer_velocity(pn_trainer *t) { return t ? t->velocity : NULL; }
double pn_trainer_comm_bytes(const pn_trainer *t) { return t ? t->comm_bytes : 0.0; }

int pn_trainer_set_dist(pn_trainer *t, const pn_dist *d)
{
    PN_CHECK_PTR(t);
    PN_CHECK_PTR(d);
    PN_CHECK(d->size >= 1 && d->rank >= 0 && d->rank < d->size, "distributed: rank %d of %d",
             d->rank, d->size);
    PN_CHECK(d->size == 1 || (d->allreduce_f32 && d->allreduce_f64 && d->bcast_f32),
             "distributed: missing collectives");
    const int B = t->cfg.batch, b = t->cfg.micro_batch, K = d->size;
    PN_CHECK(B % K == 0 && (B / K) % b == 0,
             "batch %d cannot be split over %d ranks in whole micro-batches of %d: the batch must "
             "be a multiple of ranks x micro-batch (%d)", B, K, b, K * b);
    if (d->sync_bn) {
        PN_CHECK(t->cfg.model.norm == PN_NORM_BN && t->cfg.model.norm_batch == 0,
                 "sync-bn needs --norm bn without --norm-batch (got %s, norm-batch %d)",
                 pn_norm_name(t->cfg.model.norm), t->cfg.model.norm_batch);
        if (!t->syncbn && !(t->syncbn = calloc(1, sizeof *t->syncbn)))
            return pn_error(PN_ERR_NOMEM, "trainer: out of memory");
        pn_bn_override o;
        pn_syncbn_override(t->syncbn, d, &o);
        int rc = pn_model_set_bn_override(t->model, &o);
        if (rc) return rc;
    }
    t->dist = *d;
    t->comm_bytes = t->comm_base = 0.0;
    if (K == 1) return PN_OK;
    size_t np = pn_model_num_params(t->model), nb = pn_model_num_buffers(t->model);
    int rc;
    if ((rc = d->bcast_f32(d->ctx, pn_model_params(t->model), np))) return rc;
    if ((rc = d->bcast_f32(d->ctx, t->velocity, np))) return rc;
    if (nb && (rc = d->bcast_f32(d->ctx, pn_model_buffers(t->model), nb))) return rc;
    /* Per update: the gradients, the BN running statistics and 4 doubles (loss, flags). */
    t->comm_bytes = t->comm_base =
        (double)np * sizeof(float) + (double)nb * sizeof(float) + 4.0 * sizeof(double);
    return PN_OK;
}

/* Consumes the random numbers pn_augment_batch would draw for n images. */
static void skip_augment(pn_rng *r, long n, int pad, int flip)
{
    for (long i = 0; i < n; i++) {
        if (pad > 0) {
            pn_rng_below(r, 2u * (uint32_t)pad + 1);
            pn_rng_below(r, 2u * (uint32_t)pad + 1);
        }
        if (flip) pn_rng_below(r, 2);
    }
}

int pn_trainer_step(pn_trainer *t, double *loss)
{
    PN_CHECK_PTR(t);
    PN_CHECK(t->step < t->total, "training is finished (%ld of %ld updates done)", t->step,
             t->total);
    const pn_train_config *c = &t->cfg;
    double t0 = pn_now_s();
    long epoch = t->step / t->spe, pos = t->step % t->spe;
    if (t->perm_epoch != epoch) {
        pn_rng r = pn_rng_stream(c->seed, PN_STREAM_SHUFFLE, (uint64_t)epoch);
        pn_permutation(t->perm, t->train->n, &r);
        t->perm_epoch = epoch;
    }
    pn_rng aug = pn_rng_stream(c->seed, PN_STREAM_AUGMENT, (uint64_t)t->step);
    const int B = c->batch, b = c->micro_batch, K = t->dist.size;
    const int shard = B / K, off = t->dist.rank * shard; /* this rank's images of the batch */
    const float scale = 1.0f / (float)B;
    double total_loss = 0.0;
    int bad = 0; /* 1: NaN loss, 2: infinite loss (distributed: reported after the exchange) */
    if (c->augment && off > 0) skip_augment(&aug, off, t->pad, t->flip);
    const double sbn0 = t->syncbn ? t->syncbn->bytes : 0.0;
    pn_model_zero_grad(t->model);
    const size_t img = (size_t)t->train->c * t->train->h * t->train->w;
    const int nmb = shard / b;
    /* Groups of as many micro-batches as threads go through pn_model_train_pass together,
     * each on its own copy of the model when the model allows (pn_model_replicable); else one
     * micro-batch at a time (EfficientNet's drop path: its masks are drawn per micro-batch,
     * pn_model_set_step). The micro-batches are gathered in order (augmentation stream). */
    int group = pn_model_replicable(t->model) ? pn_get_threads() : 1;
    if (group > nmb) group = nmb;
    if (group < 1) group = 1;
    if (group * b > t->cap) {
        float *nx = realloc(t->xbuf, (size_t)group * b * img * sizeof(float));
        if (!nx) return pn_error(PN_ERR_NOMEM, "trainer: out of memory");
        t->xbuf = nx;
        int *ny = realloc(t->ybuf, (size_t)group * b * sizeof(int));
        if (!ny) return pn_error(PN_ERR_NOMEM, "trainer: out of memory");
        t->ybuf = ny;
        t->cap = group * b;
    }
    for (int k0 = 0; k0 < nmb && !bad; k0 += group) {
        const int nk = nmb - k0 < group ? nmb - k0 : group;
        for (int k = 0; k < nk; k++) {
            const int *idx = t->perm + (size_t)pos * B + (size_t)off + (size_t)(k0 + k) * b;
            float *xk = t->xbuf + (size_t)k * b * img;
            int *yk = t->ybuf + (size_t)k * b;
            int rc = c->augment ? pn_augment_batch(xk, yk, t->train, idx, b, t->pad, t->flip, &aug)
                                : pn_gather_batch(xk, yk, t->train, idx, b);
            if (rc) return rc;
        }
        /* drop path (EfficientNet): masks from (seed, update, micro-batch of the global
         * batch), the same for any number of processes and after a resume (groups of one
         * micro-batch there) */
        pn_model_set_step(t->model, c->seed, (uint64_t)t->step * 65536u + (uint64_t)((off + k0 * b) / b));
        double ls = 0.0;
        int correct = 0;
        int rc = pn_model_train_pass(t->model, t->xbuf, t->ybuf, nk * b, b, c->label_smoothing, scale, &ls, &correct);
        if (rc) return rc;
        if (!isfinite(ls)) bad = isnan(ls) ? 1 : 2; /* (the gradients are not used: the step stops below) */
        else total_loss += ls;
    }
    float *g = pn_model_grads(t->model);
    size_t np = pn_model_num_params(t->model);
    if (t->syncbn && K > 1) t->comm_bytes = t->comm_base + (t->syncbn->bytes - sbn0);
    if (K > 1) {
        /* Every rank takes part in every exchange, so that all stop together. */
        double red[4] = { total_loss, bad == 1, bad == 2,
                          t->stop_flag && *t->stop_flag ? 1.0 : 0.0 };
        int rc = t->dist.allreduce_f64(t->dist.ctx, red, 4);
        if (rc) return rc;
        total_loss = red[0];
        bad = red[1] > 0 ? 1 : red[2] > 0 ? 2 : 0;
        t->stop_any = red[3] > 0;
        if (!bad && (rc = t->dist.allreduce_f32(t->dist.ctx, g, np))) return rc;
    }
    if (bad)
        return pn_error(PN_ERR_NUMERIC, "loss is %s at step %ld (epoch %ld)",
                        bad == 1 ? "NaN" : "infinite", t->step + 1, epoch + 1);
    double gsq = 0.0;
    for (size_t i = 0; i < np; i++) gsq += (double)g[i] * g[i];
    if (!isfinite(gsq))
        return pn_error(PN_ERR_NUMERIC, "gradient is not finite at step %ld (epoch %ld)",
                        t->step + 1, epoch + 1);
    int ntab = 0;
    const pn_tensor_info *tab = pn_model_param_table(t->model, &ntab);
    pn_sgd_config sc = { c->lr, c->momentum, c->wd, c->nesterov };
    float lr = pn_lr_at(c->lr, t->step, t->warmup_steps, t->total);
    pn_sgd_step(pn_model_params(t->model), g, t->velocity, tab, ntab, &sc, lr);
    size_t nbuf = pn_model_num_buffers(t->model);
    if (K > 1 && nbuf) {
        /* BN running statistics: the mean over the ranks. */
        float *bu = pn_model_buffers(t->model);
        int rc = t->dist.allreduce_f32(t->dist.ctx, bu, nbuf);
        if (rc) return rc;
        for (size_t i = 0; i < nbuf; i++) bu[i] /= (float)K;
    }
    t->step++;
    t->last_lr = lr;
    t->last_loss = total_loss / B;
    t->loss_sum += total_loss;
    t->loss_count += B;
    t->session_steps++;
    t->train_time += pn_now_s() - t0;
    if (loss) *loss = t->last_loss;
    return PN_OK;
}

int pn_evaluate(pn_model *m, const pn_dataset *d, int batch, double *loss, double *acc)
{
    PN_CHECK_PTR(m);
    PN_CHECK_PTR(d);
    PN_CHECK_POS(batch);
    int rc = check_data(pn_model_cfg(m), d, "test");
    if (rc) return rc;
    if (batch > d->n) batch = d->n;
    size_t img = (size_t)d->c * d->h * d->w;
    float *x = malloc((size_t)batch * img * sizeof(float));
    int *y = malloc((size_t)batch * sizeof(int));
    int *idx = malloc((size_t)batch * sizeof(int));
    if (!x || !y || !idx) {
        free(x); free(y); free(idx);
        return pn_error(PN_ERR_NOMEM, "evaluate: out of memory");
    }
    double loss_sum = 0.0;
    long correct = 0;
    for (int i = 0; i < d->n && rc == PN_OK; i += batch) {
        int nb = d->n - i < batch ? d->n - i : batch;
        for (int j = 0; j < nb; j++) idx[j] = i + j;
        const float *logits;
        double ls = 0.0;
        int cor = 0;
        if ((rc = pn_gather_batch(x, y, d, idx, nb))) break;
        if ((rc = pn_model_forward(m, x, nb, 0, &logits))) break;
        if ((rc = pn_model_loss(m, y, 0.0f, &ls, &cor))) break;
        loss_sum += ls;
        correct += cor;
    }
    free(x); free(y); free(idx);
    if (rc) return rc;
    if (loss) *loss = loss_sum / d->n;
    if (acc) *acc = (double)correct / d->n;
    return PN_OK;
}

/* ------------------------------------------------------------ checkpoints */

typedef struct {
    pn_st_meta *m;
    char (*buf)[2][64];
    int n, cap;
} meta_list;

static int meta_add(meta_list *l, const char *key, const char *fmt, ...) PN_PRINTF(3, 4);
static int meta_add(meta_list *l, const char *key, const char *fmt, ...)
{
    if (l->n >= l->cap) return pn_error(PN_ERR_ARG, "checkpoint: too many metadata entries");
    snprintf(l->buf[l->n][0], sizeof l->buf[l->n][0], "%s", key);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(l->buf[l->n][1], sizeof l->buf[l->n][1], fmt, ap);
    va_end(ap);
    l->m[l->n].key = l->buf[l->n][0];
    l->m[l->n].value = l->buf[l->n][1];
    l->n++;
    return PN_OK;
}

int pn_checkpoint_save(const char *path, pn_model *m, const float *velocity,
                       const pn_st_meta *extra, int nextra)
{
    PN_CHECK_PTR(path);
    PN_CHECK_PTR(m);
    PN_CHECK(nextra >= 0 && (nextra == 0 || extra), "checkpoint: bad extra metadata");
    int np = 0, nb = 0;
    const pn_tensor_info *pt = pn_model_param_table(m, &np);
    const pn_tensor_info *bt = pn_model_buffer_table(m, &nb);
    const float *params = pn_model_params(m), *bufs = pn_model_buffers(m);
    int nt = np + nb + (velocity ? np : 0);
    pn_st_tensor *ts = calloc((size_t)(nt ? nt : 1), sizeof *ts);
    char (*vnames)[sizeof VELOCITY_PREFIX + 80] = velocity ? calloc((size_t)(np ? np : 1), sizeof *vnames) : NULL;
    enum { NMODEL = 12 };
    meta_list ml = { 0 };
    ml.cap = NMODEL;
    ml.m = calloc((size_t)(NMODEL + nextra), sizeof *ml.m);
    ml.buf = calloc(NMODEL, sizeof *ml.buf);
    int rc = PN_OK;
    if (!ts || !ml.m || !ml.buf || (velocity && !vnames)) {
        rc = pn_error(PN_ERR_NOMEM, "checkpoint: out of memory");
        goto done;
    }
    int k = 0;
    for (int i = 0; i < np; i++, k++) {
        ts[k].name = pt[i].name;
        ts[k].ndim = pt[i].ndim;
        for (int d = 0; d < pt[i].ndim; d++) ts[k].shape[d] = pt[i].shape[d];
        ts[k].data = params + pt[i].offset;
    }
    for (int i = 0; i < nb; i++, k++) {
        ts[k].name = bt[i].name;
        ts[k].ndim = bt[i].ndim;
        for (int d = 0; d < bt[i].ndim; d++) ts[k].shape[d] = bt[i].shape[d];
        ts[k].data = bufs + bt[i].offset;
    }
    if (velocity) {
        for (int i = 0; i < np; i++, k++) {
            snprintf(vnames[i], sizeof vnames[i], VELOCITY_PREFIX "%s", pt[i].name);
            ts[k] = ts[i];
            ts[k].name = vnames[i];
            ts[k].data = velocity + pt[i].offset;
        }
    }
    const pn_model_config *mc = pn_model_cfg(m);
    meta_add(&ml, "format", CKPT_FORMAT);
    meta_add(&ml, "version", "%s", PN_VERSION);
    meta_add(&ml, "arch", "%s", mc->arch);
    meta_add(&ml, "norm", "%s", pn_norm_name(mc->norm));
    meta_add(&ml, "groups", "%d", mc->groups);
    meta_add(&ml, "norm_batch", "%d", mc->norm_batch);
    meta_add(&ml, "width", "%d", mc->width);
    meta_add(&ml, "in_channels", "%d", mc->in_channels);
    meta_add(&ml, "image", "%d", mc->image);
    meta_add(&ml, "classes", "%d", mc->classes);
    for (int i = 0; i < nextra; i++) ml.m[ml.n + i] = extra[i];
    rc = pn_safetensors_write(path, ts, nt, ml.m, ml.n + nextra);
done:
    free(ts);
    free(vnames);
    free(ml.m);
    free(ml.buf);
    return rc;
}

/* Metadata parsing: every value must parse completely. */
static int meta_str(const pn_st_file *f, const char *path, const char *key, const char **v)
{
    *v = pn_safetensors_meta(f, key);
    if (!*v) return pn_error(PN_ERR_FORMAT, "checkpoint %s: metadata \"%s\" is missing", path, key);
    return PN_OK;
}

static int meta_long(const pn_st_file *f, const char *path, const char *key, long lo, long hi,
                     long *out)
{
    const char *v;
    int rc = meta_str(f, path, key, &v);
    if (rc) return rc;
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi)
        return pn_error(PN_ERR_FORMAT, "checkpoint %s: metadata \"%s\" = \"%s\" is invalid", path,
                        key, v);
    *out = x;
    return PN_OK;
}

static int meta_int(const pn_st_file *f, const char *path, const char *key, int lo, int hi, int *out)
{
    long x;
    int rc = meta_long(f, path, key, lo, hi, &x);
    if (rc == PN_OK) *out = (int)x;
    return rc;
}

static int meta_double(const pn_st_file *f, const char *path, const char *key, double *out)
{
    const char *v;
    int rc = meta_str(f, path, key, &v);
    if (rc) return rc;
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || end == v || *end || !isfinite(x))
        return pn_error(PN_ERR_FORMAT, "checkpoint %s: metadata \"%s\" = \"%s\" is invalid", path,
                        key, v);
    *out = x;
    return PN_OK;
}

static int meta_float(const pn_st_file *f, const char *path, const char *key, float *out)
{
    double x;
    int rc = meta_double(f, path, key, &x);
    if (rc == PN_OK) *out = (float)x;
    return rc;
}

/* The model a checkpoint describes is built before its tensors are compared with
 * it, so a few bytes of metadata (width 4096, resnet9998) must not make us
 * allocate and initialize gigabytes: the file must hold at least as many values
 * as the largest tensors of that model (stage-3 conv2 of every block, the stem and
 * the classifier); the exact check follows when the tensors are loaded. */
static int check_model_size(const pn_st_file *f, const char *path, const pn_model_config *mc)
{
    double have = 0;
    int count = pn_safetensors_count(f);
    for (int i = 0; i < count; i++) {
        int ndim = 0;
        int64_t shape[PN_ST_MAX_DIMS];
        if (pn_safetensors_get(f, pn_safetensors_name(f, i), &ndim, shape, NULL) != PN_OK)
            continue;
        double numel = 1;
        for (int d = 0; d < ndim; d++) numel *= (double)shape[d];
        have += numel;
    }
    /* A lower bound of the parameter count of the model the metadata describe, for
     * width w: every architecture has a stem of >= 9*in*w weights and a classifier of
     * >= w*classes. resnetD: n = (D-2)/6 stage-3 blocks, each with a 3x3 convolution
     * 4w -> 4w (the bottleneck resnet50/101/152 have at least as many values in their
     * stages 3-4). Other families (bottleneck_/resnext_ layouts, effnet): at least one
     * 1x1 convolution w -> 4w (the first block's projection; EfficientNet's head is
     * larger). The depth itself is capped by each architecture's parser. */
    const double w = mc->width;
    double need = 9.0 * mc->in_channels * w + w * mc->classes;
    if (strncmp(mc->arch, "resnet", 6) == 0) {
        double depth = strtod(mc->arch + 6, NULL), blocks = 1;
        if (isfinite(depth) && depth >= 8) blocks = floor((depth - 2) / 6);
        need += blocks * 9 * (4 * w) * (4 * w);
    } else {
        need += 4 * w * w;
    }
    if (have < need)
        return pn_error(PN_ERR_FORMAT, "checkpoint %s: its metadata describe a %s of width %d "
                        "(at least %.0f parameters) but the file holds only %.0f values", path,
                        mc->arch, mc->width, need, have);
    return PN_OK;
}

static int read_model_config(const pn_st_file *f, const char *path, pn_model_config *mc)
{
    const char *v;
    int rc;
    pn_model_config_default(mc);
    if ((rc = meta_str(f, path, "format", &v))) return rc;
    if (strcmp(v, CKPT_FORMAT) != 0)
        return pn_error(PN_ERR_FORMAT, "%s is not a proxynorm checkpoint (format \"%s\")", path, v);
    if ((rc = meta_str(f, path, "arch", &v))) return rc;
    if (strlen(v) >= sizeof mc->arch)
        return pn_error(PN_ERR_FORMAT, "checkpoint %s: arch \"%s\" is too long", path, v);
    strcpy(mc->arch, v);
    if ((rc = meta_str(f, path, "norm", &v))) return rc;
    int norm = pn_norm_parse(v);
    if (norm < 0) return pn_error(PN_ERR_FORMAT, "checkpoint %s: unknown norm \"%s\"", path, v);
    mc->norm = (pn_norm_kind)norm;
    if ((rc = meta_int(f, path, "groups", 1, 1 << 20, &mc->groups))) return rc;
    if ((rc = meta_int(f, path, "norm_batch", 0, 1 << 20, &mc->norm_batch))) return rc;
    if ((rc = meta_int(f, path, "width", 1, 1 << 16, &mc->width))) return rc;
    if ((rc = meta_int(f, path, "in_channels", 1, 1 << 16, &mc->in_channels))) return rc;
    if ((rc = meta_int(f, path, "image", 1, 1 << 16, &mc->image))) return rc;
    if ((rc = meta_int(f, path, "classes", 1, 1 << 20, &mc->classes))) return rc;
    return check_model_size(f, path, mc);
}

static int read_train_config(const pn_st_file *f, const char *path, pn_train_config *c, long *step)
{
    int rc;
    pn_train_config_default(c);
    if ((rc = read_model_config(f, path, &c->model))) return rc;
    const char *v;
    if ((rc = meta_str(f, path, "step", &v)))
        return pn_error(PN_ERR_FORMAT, "checkpoint %s has no training state (metadata \"step\")", path);
    long s = 0, lt = 0;
    int nest = 0, aug = 0;
    if ((rc = meta_long(f, path, "step", 0, LONG_MAX, &s))) return rc;
    if ((rc = meta_int(f, path, "epochs", 1, 1 << 30, &c->epochs))) return rc;
    if ((rc = meta_int(f, path, "batch", 1, 1 << 30, &c->batch))) return rc;
    if ((rc = meta_int(f, path, "micro_batch", 1, 1 << 30, &c->micro_batch))) return rc;
    if ((rc = meta_float(f, path, "lr", &c->lr))) return rc;
    if ((rc = meta_float(f, path, "wd", &c->wd))) return rc;
    if ((rc = meta_float(f, path, "momentum", &c->momentum))) return rc;
    if ((rc = meta_int(f, path, "nesterov", 0, 1, &nest))) return rc;
    if ((rc = meta_float(f, path, "warmup", &c->warmup))) return rc;
    if ((rc = meta_float(f, path, "label_smoothing", &c->label_smoothing))) return rc;
    if ((rc = meta_int(f, path, "augment", 0, 1, &aug))) return rc;
    if ((rc = meta_long(f, path, "limit_train", 0, LONG_MAX, &lt))) return rc;
    if ((rc = meta_str(f, path, "seed", &v))) return rc;
    char *end;
    errno = 0;
    unsigned long long seed = strtoull(v, &end, 10);
    if (errno || end == v || *end || v[0] == '-')
        return pn_error(PN_ERR_FORMAT, "checkpoint %s: metadata \"seed\" = \"%s\" is invalid", path, v);
    c->seed = (uint64_t)seed;
    c->nesterov = nest;
    c->augment = aug;
    c->limit_train = lt;
    if (pn_train_config_check(c, 0) != PN_OK)
        return pn_error(PN_ERR_FORMAT, "checkpoint %s: inconsistent training configuration: %s", path,
                        pn_last_error());
    if (step) *step = s;
    return PN_OK;
}

int pn_checkpoint_read_config(const char *path, pn_train_config *cfg, long *step)
{
    PN_CHECK_PTR(path);
    PN_CHECK_PTR(cfg);
    pn_st_file *f = NULL;
    int rc = pn_safetensors_read(&f, path);
    if (rc) return rc;
    rc = read_train_config(f, path, cfg, step);
    pn_safetensors_close(f);
    return rc;
}

static void fmt_shape(char *buf, size_t n, int ndim, const int64_t *shape)
{
    size_t o = 0;
    o += (size_t)snprintf(buf + o, n - o, "[");
    for (int d = 0; d < ndim && o < n; d++)
        o += (size_t)snprintf(buf + o, n - o, "%s%" PRId64, d ? ", " : "", shape[d]);
    if (o < n) snprintf(buf + o, n - o, "]");
}

/* Looks up name and checks its shape against the table entry. */
static int get_checked(const pn_st_file *f, const char *path, const char *name,
                       const pn_tensor_info *ti, const float **data)
{
    int ndim = 0;
    int64_t shape[PN_ST_MAX_DIMS];
    if (pn_safetensors_get(f, name, &ndim, shape, data) != PN_OK)
        return pn_error(PN_ERR_FORMAT, "checkpoint %s has no tensor \"%s\" (another model?)", path,
                        name);
    int same = ndim == ti->ndim;
    for (int d = 0; same && d < ndim; d++) same = shape[d] == ti->shape[d];
    if (!same) {
        char a[128], b[128];
        int64_t want[4];
        for (int d = 0; d < ti->ndim; d++) want[d] = ti->shape[d];
        fmt_shape(a, sizeof a, ndim, shape);
        fmt_shape(b, sizeof b, ti->ndim, want);
        return pn_error(PN_ERR_FORMAT, "checkpoint %s: tensor \"%s\" has shape %s, the model expects %s",
                        path, name, a, b);
    }
    return PN_OK;
}

static int in_table(const pn_tensor_info *t, int n, const char *name)
{
    for (int i = 0; i < n; i++)
        if (strcmp(t[i].name, name) == 0) return 1;
    return 0;
}

int pn_checkpoint_load_into(const pn_st_file *f, const char *path, pn_model *m, float *velocity)
{
    PN_CHECK_PTR(f);
    PN_CHECK_PTR(m);
    if (!path) path = "(checkpoint)";
    int np = 0, nb = 0;
    const pn_tensor_info *pt = pn_model_param_table(m, &np);
    const pn_tensor_info *bt = pn_model_buffer_table(m, &nb);
    char vname[sizeof VELOCITY_PREFIX + 80];
    const float *data;
    int rc;
    /* Validate everything before touching the model. */
    int nfile = pn_safetensors_count(f);
    for (int i = 0; i < nfile; i++) {
        const char *name = pn_safetensors_name(f, i);
        const size_t lp = strlen(VELOCITY_PREFIX);
        int known = in_table(pt, np, name) || in_table(bt, nb, name) ||
                    (strncmp(name, VELOCITY_PREFIX, lp) == 0 && in_table(pt, np, name + lp));
        if (!known)
            return pn_error(PN_ERR_FORMAT,
                            "checkpoint %s: tensor \"%s\" does not exist in this model (%s, %s)", path,
                            name, pn_model_cfg(m)->arch, pn_norm_name(pn_model_cfg(m)->norm));
    }
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < np; i++) {
            if ((rc = get_checked(f, path, pt[i].name, &pt[i], &data))) return rc;
            if (pass) memcpy(pn_model_params(m) + pt[i].offset, data, pt[i].numel * sizeof(float));
            if (velocity) {
                snprintf(vname, sizeof vname, VELOCITY_PREFIX "%s", pt[i].name);
                if ((rc = get_checked(f, path, vname, &pt[i], &data))) return rc;
                if (pass) memcpy(velocity + pt[i].offset, data, pt[i].numel * sizeof(float));
            }
        }
        for (int i = 0; i < nb; i++) {
            if ((rc = get_checked(f, path, bt[i].name, &bt[i], &data))) return rc;
            if (pass) memcpy(pn_model_buffers(m) + bt[i].offset, data, bt[i].numel * sizeof(float));
        }
    }
    return PN_OK;
}

int pn_checkpoint_load_model(pn_model **out, const char *path)
{
    PN_CHECK_PTR(out);
    *out = NULL;
    PN_CHECK_PTR(path);
    pn_st_file *f = NULL;
    int rc = pn_safetensors_read(&f, path);
    if (rc) return rc;
    pn_model_config mc;
    pn_model *m = NULL;
    uint64_t seed = 0;
    if ((rc = read_model_config(f, path, &mc))) goto done;
    if ((rc = pn_model_create(&m, &mc, seed))) {
        rc = pn_error(rc, "checkpoint %s: cannot build its model: %s", path, pn_last_error());
        m = NULL;
        goto done;
    }
    if ((rc = pn_checkpoint_load_into(f, path, m, NULL))) goto done;
    *out = m;
    m = NULL;
done:
    pn_model_free(m);
    pn_safetensors_close(f);
    return rc;
}

int pn_trainer_save(pn_trainer *t, const char *path)
{
    PN_CHECK_PTR(t);
    PN_CHECK_PTR(path);
    /* Never write a checkpoint with non-finite parameters. */
    const float *p = pn_model_params(t->model);
    size_t np = pn_model_num_params(t->model);
    for (size_t i = 0; i < np; i++)
        if (!isfinite(p[i]))
            return pn_error(PN_ERR_NUMERIC, "parameters are not finite at step %ld; not saving",
                            t->step);
    const pn_train_config *c = &t->cfg;
    enum { N = 24 };
    pn_st_meta m[N];
    char buf[N][2][64];
    meta_list ml = { m, buf, 0, N };
    meta_add(&ml, "step", "%ld", t->step);
    meta_add(&ml, "epoch", "%ld", t->step / t->spe);
    meta_add(&ml, "seed", "%" PRIu64, c->seed);
    meta_add(&ml, "epochs", "%d", c->epochs);
    meta_add(&ml, "batch", "%d", c->batch);
    meta_add(&ml, "micro_batch", "%d", c->micro_batch);
    meta_add(&ml, "lr", "%.9g", (double)c->lr);
    meta_add(&ml, "wd", "%.9g", (double)c->wd);
    meta_add(&ml, "momentum", "%.9g", (double)c->momentum);
    meta_add(&ml, "nesterov", "%d", c->nesterov ? 1 : 0);
    meta_add(&ml, "warmup", "%.9g", (double)c->warmup);
    meta_add(&ml, "label_smoothing", "%.9g", (double)c->label_smoothing);
    meta_add(&ml, "augment", "%d", c->augment ? 1 : 0);
    meta_add(&ml, "limit_train", "%ld", c->limit_train);
    meta_add(&ml, "dataset", "%s", t->train->name);
    meta_add(&ml, "augment_pad", "%d", t->pad);
    meta_add(&ml, "augment_flip", "%d", t->flip);
    meta_add(&ml, "train_loss_sum", "%.17g", t->loss_sum);
    meta_add(&ml, "train_loss_count", "%ld", t->loss_count);
    meta_add(&ml, "seconds", "%.3f", t->prior_seconds + (pn_now_s() - t->t_start));
    return pn_checkpoint_save(path, t->model, t->velocity, m, ml.n);
}

int pn_trainer_load(pn_trainer *t, const char *path)
{
    PN_CHECK_PTR(t);
    PN_CHECK_PTR(path);
    pn_st_file *f = NULL;
    int rc = pn_safetensors_read(&f, path);
    if (rc) return rc;
    pn_train_config a;
    long step = 0, count = 0;
    double lsum = 0.0, secs = 0.0;
    if ((rc = read_train_config(f, path, &a, &step))) goto done;
    if ((rc = meta_double(f, path, "train_loss_sum", &lsum))) goto done;
    if ((rc = meta_long(f, path, "train_loss_count", 0, LONG_MAX, &count))) goto done;
    if ((rc = meta_double(f, path, "seconds", &secs))) goto done;
    /* The augmentation the run started with (it depends on the data set's name). */
    int pad = t->pad, flip = t->flip;
    if (pn_safetensors_meta(f, "augment_pad") &&
        (rc = meta_int(f, path, "augment_pad", 0, 1 << 16, &pad)))
        goto done;
    if (pn_safetensors_meta(f, "augment_flip") &&
        (rc = meta_int(f, path, "augment_flip", 0, 1, &flip)))
        goto done;
    if (pad > t->train->h || pad > t->train->w) {
        rc = pn_error(PN_ERR_FORMAT, "checkpoint %s: augment_pad %d is larger than the images", path, pad);
        goto done;
    }
    {
        const pn_model_config *mc = &t->cfg.model;
        if (strcmp(a.model.arch, mc->arch) != 0 || a.model.norm != mc->norm ||
            a.model.groups != mc->groups || a.model.norm_batch != mc->norm_batch ||
            a.model.width != mc->width || a.model.in_channels != mc->in_channels ||
            a.model.image != mc->image || a.model.classes != mc->classes) {
            rc = pn_error(PN_ERR_ARG,
                          "checkpoint %s holds %s %s width %d groups %d norm-batch %d (%dx%dx%d, %d "
                          "classes), this run has %s %s width %d groups %d norm-batch %d (%dx%dx%d, "
                          "%d classes)",
                          path, a.model.arch, pn_norm_name(a.model.norm), a.model.width,
                          a.model.groups, a.model.norm_batch, a.model.in_channels, a.model.image,
                          a.model.image, a.model.classes, mc->arch, pn_norm_name(mc->norm),
                          mc->width, mc->groups, mc->norm_batch, mc->in_channels, mc->image,
                          mc->image, mc->classes);
            goto done;
        }
    }
    /* The training configuration must be the one of the checkpoint for an exact resume. */
    {
        int r2 = PN_OK;
#define CHK(field, fmt, cast)                                                                   \
        if (r2 == PN_OK && a.field != t->cfg.field)                                              \
            r2 = pn_error(PN_ERR_ARG, "checkpoint %s was trained with %s " fmt ", this run has " fmt, \
                          path, #field, (cast)a.field, (cast)t->cfg.field);
        CHK(epochs, "%d", int)
        CHK(batch, "%d", int)
        CHK(micro_batch, "%d", int)
        CHK(lr, "%g", double)
        CHK(wd, "%g", double)
        CHK(momentum, "%g", double)
        CHK(nesterov, "%d", int)
        CHK(warmup, "%g", double)
        CHK(label_smoothing, "%g", double)
        CHK(augment, "%d", int)
        CHK(limit_train, "%ld", long)
        CHK(seed, "%llu", unsigned long long)
#undef CHK
        if (r2) { rc = r2; goto done; }
    }
    if (step > t->total) {
        rc = pn_error(PN_ERR_FORMAT, "checkpoint %s is at step %ld, beyond the %ld steps of this run",
                      path, step, t->total);
        goto done;
    }
    if ((rc = pn_checkpoint_load_into(f, path, t->model, t->velocity))) goto done;
    t->step = step;
    t->pad = pad;
    t->flip = flip;
    t->loss_sum = lsum;
    t->loss_count = count;
    t->prior_seconds = secs;
    t->t_start = pn_now_s();
    t->train_time = 0.0;
    t->session_steps = 0;
    t->perm_epoch = -1;
    if (step > 0) t->last_lr = pn_lr_at(t->cfg.lr, step - 1, t->warmup_steps, t->total);
done:
    pn_safetensors_close(f);
    return rc;
}

/* ------------------------------------------------------------------ run */

/* The test set's loss and accuracy; with K ranks each evaluates a contiguous
 * K-th of it and the sums are all-reduced (every rank gets the result). */
static int evaluate_test(pn_trainer *t, double *loss, double *acc)
{
    const pn_dataset *d = t->test;
    const int K = t->dist.size, r = t->dist.rank, eb = t->cfg.micro_batch;
    if (K == 1) return pn_evaluate(t->model, d, eb, loss, acc);
    const long lo = (long)d->n * r / K, hi = (long)d->n * (r + 1) / K;
    double red[3] = { 0.0, 0.0, 0.0 }; /* loss sum, correct, failed ranks */
    int rc = PN_OK;
    if (hi > lo) {
        pn_dataset v = *d;
        size_t chw = (size_t)d->c * d->h * d->w;
        v.n = (int)(hi - lo);
        v.images = d->images + (size_t)lo * chw;
        v.labels = d->labels + lo;
        double l = 0.0, a = 0.0;
        rc = pn_evaluate(t->model, &v, eb, &l, &a);
        red[0] = l * v.n;
        red[1] = floor(a * v.n + 0.5);
    }
    red[2] = rc ? 1.0 : 0.0;
    int rc2 = t->dist.allreduce_f64(t->dist.ctx, red, 3);
    if (rc) return rc;
    if (rc2) return rc2;
    if (red[2] > 0) return pn_error(PN_ERR_ARG, "evaluation failed on another rank");
    *loss = red[0] / d->n;
    *acc = red[1] / d->n;
    return PN_OK;
}

static void fill_status(pn_trainer *t, pn_train_status *s)
{
    memset(s, 0, sizeof *s);
    s->step = t->step;
    s->total_steps = t->total;
    s->steps_per_epoch = t->spe;
    s->epoch = t->step > 0 ? (int)((t->step - 1) / t->spe) : 0;
    s->lr = t->last_lr;
    s->last_loss = t->last_loss;
    s->train_loss = t->loss_count ? t->loss_sum / (double)t->loss_count : NAN;
    s->img_per_s = t->train_time > 0 ? (double)t->session_steps * t->cfg.batch / t->train_time : 0.0;
    s->seconds = t->prior_seconds + (pn_now_s() - t->t_start);
    long end = t->cfg.stop_at > 0 && t->cfg.stop_at < t->total ? t->cfg.stop_at : t->total;
    long left = end > t->step ? end - t->step : 0;
    s->eta_s = t->session_steps ? (double)left * t->train_time / (double)t->session_steps : 0.0;
    s->test_loss = NAN;
    s->test_acc = NAN;
    s->peak_rss_mb = peak_rss_mb();
    s->comm_bytes = t->comm_bytes;
}

static int write_log(pn_trainer *t, const pn_train_status *s)
{
    if (!t->log) return PN_OK;
    FILE *f = t->log;
    fprintf(f, "{\"epoch\": %.4f, \"step\": %ld, \"lr\": %.6g, ", (double)s->step / (double)t->spe,
            s->step, (double)s->lr);
    if (isfinite(s->train_loss)) fprintf(f, "\"train_loss\": %.6f, ", s->train_loss);
    else fprintf(f, "\"train_loss\": null, ");
    if (isfinite(s->test_loss)) fprintf(f, "\"test_loss\": %.6f, \"test_acc\": %.6f, ", s->test_loss, s->test_acc);
    else fprintf(f, "\"test_loss\": null, \"test_acc\": null, ");
    fprintf(f, "\"img_per_s\": %.1f, \"seconds\": %.2f, \"peak_rss_mb\": %.1f", s->img_per_s,
            s->seconds, s->peak_rss_mb);
    if (t->dist.size > 1) fprintf(f, ", \"ranks\": %d, \"comm_bytes\": %.0f", t->dist.size, s->comm_bytes);
    fprintf(f, "}\n");
    if (fflush(f) != 0 || ferror(f))
        return pn_error(PN_ERR_IO, "cannot write the log %s: %s", t->cfg.log_path, strerror(errno));
    return PN_OK;
}

int pn_train_run(pn_trainer *t, const pn_train_callbacks *cb, pn_train_status *final)
{
    PN_CHECK_PTR(t);
    const pn_train_config *c = &t->cfg;
    pn_train_status st;
    int rc = PN_OK, evaluated_at_end = 0;
    if (final) { fill_status(t, final); }
    const int root = t->dist.rank == 0;
    t->stop_flag = cb ? cb->stop : NULL;
    t->stop_any = 0;
    if (root && c->log_path[0] && !t->log) {
        t->log = fopen(c->log_path, t->step > 0 ? "a" : "w");
        if (!t->log) return pn_error(PN_ERR_IO, "cannot open the log %s: %s", c->log_path, strerror(errno));
    }
    t->t_start = pn_now_s();
    t->train_time = 0.0;
    t->session_steps = 0;
    double last_test_loss = NAN, last_test_acc = NAN;
    while (t->step < t->total && !(c->stop_at > 0 && t->step >= c->stop_at)) {
        if ((rc = pn_trainer_step(t, NULL))) return rc;
        fill_status(t, &st);
        if (cb && cb->on_step) cb->on_step(cb->user, &st);
        int at_end = t->step == t->total;
        int interrupted = t->dist.size > 1 ? t->stop_any : cb && cb->stop && *cb->stop;
        int stop = (c->stop_at > 0 && t->step >= c->stop_at) || interrupted;
        int due_eval = (c->eval_every > 0 ? t->step % c->eval_every == 0 : t->step % t->spe == 0) || at_end;
        if (due_eval) {
            if (t->test) {
                double tl, ta;
                if ((rc = evaluate_test(t, &tl, &ta))) return rc;
                st.test_loss = last_test_loss = tl;
                st.test_acc = last_test_acc = ta;
                if (at_end) evaluated_at_end = 1;
            }
            st.seconds = t->prior_seconds + (pn_now_s() - t->t_start);
            st.peak_rss_mb = peak_rss_mb();
            if ((rc = write_log(t, &st))) return rc;
            if (cb && cb->on_eval) cb->on_eval(cb->user, &st);
            t->loss_sum = 0.0;
            t->loss_count = 0;
        }
        int due_save = root && c->save_path[0] &&
                       ((c->save_every > 0 ? t->step % c->save_every == 0 : t->step % t->spe == 0) ||
                        at_end || stop);
        if (due_save) {
            if ((rc = pn_trainer_save(t, c->save_path))) return rc;
            if (cb && cb->on_save) cb->on_save(cb->user, c->save_path, t->step);
        }
        if (interrupted) break;
    }
    if (t->step == t->total && !evaluated_at_end && t->test) {
        /* Resumed from a finished checkpoint: report its accuracy. */
        if ((rc = evaluate_test(t, &last_test_loss, &last_test_acc))) return rc;
    }
    if (final) {
        fill_status(t, final);
        final->test_loss = last_test_loss;
        final->test_acc = last_test_acc;
    }
    return PN_OK;
}
