/* The training loop: mini-batches split into micro-batches, SGD with a cosine
 * schedule, periodic evaluation, a JSON-lines log and exactly resumable
 * checkpoints.
 *
 * Determinism: for a given thread count, a run is a pure function of its
 * configuration and data. The epoch's order is a permutation drawn from
 * pn_rng_stream(seed, PN_STREAM_SHUFFLE, epoch), the augmentation of update
 * `step` from pn_rng_stream(seed, PN_STREAM_AUGMENT, step); a checkpoint holds
 * the parameters, BN buffers, momentum and step, so a resumed run computes the
 * same numbers as an uninterrupted one.
 *
 * Checkpoint (safetensors, written atomically):
 *   every parameter under its table name, every buffer under its table name,
 *   "optim.velocity.<name>" for every parameter (training checkpoints), and the
 *   metadata: format ("proxynorm-checkpoint"), version, arch, norm, groups,
 *   norm_batch, width, in_channels, image, classes, step, epoch, seed, batch,
 *   micro_batch, lr, wd, momentum, nesterov, warmup, epochs, label_smoothing,
 *   augment, limit_train, dataset, augment_pad, augment_flip, plus the
 *   running-loss accumulators and the elapsed seconds (so that a resumed log
 *   continues where it stopped).
 *
 * Log (one JSON object per line, flushed, at every evaluation):
 *   {"epoch": step/steps_per_epoch, "step", "lr", "train_loss" (mean over the
 *    images since the previous evaluation), "test_loss", "test_acc" (fraction in
 *    [0, 1]), "img_per_s", "seconds", "peak_rss_mb"}, and in data-parallel runs
 *    (pn_trainer_set_dist, K > 1) "ranks" and "comm_bytes" (per update and rank).
 *
 * The library never prints: progress goes through the callbacks. */
#ifndef PN_TRAINER_H
#define PN_TRAINER_H

#include <stdint.h>

#include "data/data.h"
#include "io/safetensors.h"
#include "nn/model.h"
#include "train/train.h"

#define PN_PATH_MAX 1024

typedef struct {
    pn_model_config model;  /* in_channels, image, classes must match the data */
    int epochs;             /* >= 1 */
    int batch;              /* optimization batch B: one SGD update per B images */
    int micro_batch;        /* b: B/b forward+backward passes per update; b | B */
    float lr, wd, momentum; /* base learning rate, weight decay, momentum */
    int nesterov;
    float warmup;           /* warm-up length in epochs (fractional allowed) */
    float label_smoothing;  /* in [0, 1) */
    int augment;            /* 1: random crop after zero padding (4 px for images of
                               >= 32 px, else 2) + horizontal flip (not for "mnist"
                               digits) */
    long limit_train;       /* > 0: only the first limit_train training images (recorded) */
    uint64_t seed;          /* model initialization, shuffling, augmentation */
    long eval_every;        /* evaluate every N updates (0: at each epoch end) */
    long save_every;        /* checkpoint every N updates (0: at each epoch end); needs save_path */
    long stop_at;           /* > 0: stop (after saving) once this many updates are done */
    char save_path[PN_PATH_MAX]; /* "" : no checkpoints */
    char log_path[PN_PATH_MAX];  /* "" : no log */
} pn_train_config;

/* Defaults: the model defaults, 1 epoch, batch 128, micro-batch 128, lr 0.1,
 * wd 5e-4, momentum 0.9, nesterov, warm-up 0.5 epoch, no smoothing, augment,
 * seed 0, evaluation and checkpoints at epoch ends. */
void pn_train_config_default(pn_train_config *c);
/* Validates the values (PN_ERR_ARG with a message naming the option). n_train
 * (> 0) is the training-set size, used to check that one batch fits. */
int pn_train_config_check(const pn_train_config *c, long n_train);

/* What the callbacks see. */
typedef struct {
    long step;            /* updates done */
    long total_steps;
    long steps_per_epoch;
    int epoch;            /* 0-based epoch of the last update */
    float lr;             /* rate used by the last update */
    double last_loss;     /* mean loss of the last update's batch */
    double train_loss;    /* mean loss over the images since the previous evaluation */
    double img_per_s;     /* training throughput (evaluations excluded) */
    double seconds;       /* elapsed wall time of the run, resumed runs included */
    double eta_s;         /* estimated seconds to the end */
    double test_loss, test_acc; /* valid in on_eval (test_acc a fraction) */
    double peak_rss_mb;
    double comm_bytes;    /* bytes each rank passes to collectives per update (0: one process) */
} pn_train_status;

typedef struct {
    void (*on_step)(void *user, const pn_train_status *s);  /* after every update */
    void (*on_eval)(void *user, const pn_train_status *s);  /* after every evaluation */
    void (*on_save)(void *user, const char *path, long step);
    void *user;
    /* If not NULL and non-zero after an update (e.g. set by a SIGINT handler), the
     * run saves a checkpoint (if save_path is set) and returns PN_OK early. */
    volatile int *stop;
} pn_train_callbacks;

typedef struct pn_trainer pn_trainer;

/* Data-parallel training (src/dist/ provides an MPI implementation). Every rank
 * runs the same configuration; rank r of K computes the gradients of images
 * [r B/K, (r+1) B/K) of every global batch B (in micro-batches of b, so b must
 * divide B/K), the gradients are summed over the ranks (one flat all-reduce),
 * and every rank applies the same SGD update: the parameters follow the
 * single-process run up to the floating-point summation order. The
 * augmentation of each image is the one a single process would draw. BN
 * running statistics are averaged over the ranks after every update (BN
 * normalizes with each rank's own micro-batch statistics, unless sync_bn:
 * then with those of the micro-batches of all ranks). Each rank evaluates a
 * contiguous K-th of the test set (the sums are all-reduced; every rank must
 * have the same test set, or none). Rank 0 alone writes the log and saves
 * checkpoints;
 * checkpoints do not depend on K. Callbacks return 0 on success and must give
 * the same result on every rank. */
typedef struct {
    int rank, size;  /* 0 <= rank < size */
    int sync_bn;     /* 1: BatchNorm statistics over all ranks (src/dist/syncbn.h) */
    void *ctx;
    int (*allreduce_f32)(void *ctx, float *buf, size_t n);   /* in-place sum */
    int (*allreduce_f64)(void *ctx, double *buf, size_t n);  /* in-place sum */
    int (*bcast_f32)(void *ctx, float *buf, size_t n);       /* rank 0's buf to all */
} pn_dist;

/* Creates a trainer (model initialized from cfg->seed) over the given data sets;
 * the data sets are borrowed and must outlive the trainer. test may be NULL (no
 * evaluation). Validates the configuration and the data against the model. */
int pn_trainer_create(pn_trainer **out, const pn_train_config *cfg, const pn_dataset *train,
                      const pn_dataset *test);
void pn_trainer_free(pn_trainer *t);
pn_model *pn_trainer_model(pn_trainer *t);
const pn_train_config *pn_trainer_config(const pn_trainer *t);
long pn_trainer_step_count(const pn_trainer *t);
long pn_trainer_total_steps(const pn_trainer *t);
float *pn_trainer_velocity(pn_trainer *t);
/* Makes t one rank of a data-parallel run (after pn_trainer_create and
 * pn_trainer_load, before pn_train_run): checks that B/K is a multiple of the
 * micro-batch, then broadcasts rank 0's parameters, buffers and momentum.
 * d is copied. Collective: every rank must call it. */
int pn_trainer_set_dist(pn_trainer *t, const pn_dist *d);
/* Bytes each rank passes to collectives per update (0 for one process; with
 * sync_bn, measured over the last update). */
double pn_trainer_comm_bytes(const pn_trainer *t);

/* One SGD update on the next batch (B/b micro-batches, gradients scaled by 1/B).
 * *loss (may be NULL) receives the batch's mean loss. A non-finite loss or
 * gradient returns PN_ERR_NUMERIC with a message naming the step; the
 * parameters, momentum and step count are left as they were. */
int pn_trainer_step(pn_trainer *t, double *loss);

/* Runs updates until the end of the schedule (or cfg->stop_at, or cb->stop), evaluating,
 * logging and saving as configured; the last evaluation's results go to
 * *final (may be NULL; test_loss/test_acc are NaN when there is no test set or
 * the run stopped early). Never saves after a non-finite loss. */
int pn_train_run(pn_trainer *t, const pn_train_callbacks *cb, pn_train_status *final);

/* Loss (mean) and accuracy (fraction) of the model on d in inference mode,
 * batch images at a time. */
int pn_evaluate(pn_model *m, const pn_dataset *d, int batch, double *loss, double *acc);

/* Writes the trainer's full state to path (atomic). */
int pn_trainer_save(pn_trainer *t, const char *path);
/* Restores parameters, buffers, momentum, step and running accumulators from a
 * checkpoint written by pn_trainer_save for the same configuration. */
int pn_trainer_load(pn_trainer *t, const char *path);

/* Reads a checkpoint's configuration (model and training) and step. */
int pn_checkpoint_read_config(const char *path, pn_train_config *cfg, long *step);
/* Saves a model's parameters and buffers (velocity may be NULL) with the given
 * extra metadata, and the model configuration. */
int pn_checkpoint_save(const char *path, pn_model *m, const float *velocity,
                       const pn_st_meta *extra, int nextra);
/* Copies the parameters and buffers (and, if velocity is not NULL, the momentum)
 * of an open checkpoint into m. A missing tensor, a shape mismatch or a tensor
 * the model does not have returns PN_ERR_FORMAT with a message naming it. */
int pn_checkpoint_load_into(const pn_st_file *f, const char *path, pn_model *m, float *velocity);
/* Builds the model described by a checkpoint's metadata and loads it. */
int pn_checkpoint_load_model(pn_model **out, const char *path);

#endif
