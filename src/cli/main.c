/* proxynorm: the command line.
 *   proxynorm train ...   train a ResNet (micro-batches, checkpoints, resume, log)
 *   proxynorm eval ...    test loss and accuracy of a checkpoint
 *   proxynorm info ...    parameters and MACs of a model, as JSON
 * Exit status: 0 success, 1 error (data, files, checkpoints), 2 usage error,
 * 3 training stopped on a non-finite loss. */
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "args.h"
#include "commands.h"
#include "data/data.h"
#include "diag/power.h"
#include "dist/dist.h"
#include "nn/model.h"
#include "proxynorm.h"
#include "train/trainer.h"

#define EXIT_USAGE 2
#define EXIT_DIVERGED 3

int pn_cli_parse_only; /* see commands.h */

static const char *usage_main =
    "usage: proxynorm COMMAND [OPTIONS]\n"
    "\n"
    "Train CNNs with batch-independent normalization (GroupNorm/LayerNorm + Proxy Norm).\n"
    "\n"
    "commands:\n"
    "  train   train a model (proxynorm train --help)\n"
    "  eval    test loss and accuracy of a checkpoint (proxynorm eval --help)\n"
    "  info    parameters and MACs per image of a model, as JSON (proxynorm info --help)\n"
    "  power   power decomposition of normalized activations, power plots (proxynorm power --help)\n"
    "\n"
    "  --help      this text\n"
    "  --version   print the version\n"
    "\n"
    "exit status: 0 success, 1 error, 2 usage error, 3 training diverged (NaN/Inf loss)\n";

static const char *usage_train =
    "usage: proxynorm train [OPTIONS]\n"
    "\n"
    "data and model:\n"
    "  --data DIR            data set directory (IDX Fashion-MNIST/MNIST or CIFAR-10 binary);\n"
    "                        default $PROXYNORM_DATA or /usr/share/datasets/fashion-mnist\n"
    "  --model M             resnetN with N = 6n+2 (resnet8, resnet20, resnet56, ...; basic\n"
    "                        blocks), resnet50, resnet101, resnet152, resnext50_32x4d,\n"
    "                        resnext101_32x8d, resnext101_64x4d (pre-activation bottleneck;\n"
    "                        stem conv7x7/2 + max pool at >= 64 px, else conv3x3), or\n"
    "                        bottleneck_A-B-C-D / resnext_A-B-C-D_GxDd (blocks per stage),\n"
    "                        effnet_b0, effnet_b1, effnet_b2 (EfficientNet, SiLU) [resnet20]\n"
    "  --norm N              bn | gn | ln | in | gn+pn | ln+pn | ln+ws | none [gn+pn]\n"
    "  --groups G            GroupNorm groups [4]\n"
    "  --norm-batch g        BatchNorm normalization batch, divides the micro-batch [micro-batch]\n"
    "  --width W             base width: channels of the stem / first stage's planes [16;\n"
    "                        64 for the bottleneck models at >= 64 px; EfficientNet: the\n"
    "                        stem's channels before the b1/b2 multiplier, all scaled alike, 32]\n"
    "  --limit-train N       use only the first N training images [all]\n"
    "  --limit-test N        use only the first N test images [all]\n"
    "\n"
    "optimization:\n"
    "  --epochs E            epochs [1]\n"
    "  --batch B             images per SGD update [128]\n"
    "  --micro-batch b       images per forward/backward pass; b divides B [B]\n"
    "                        (memory grows with b; gradients of B/b passes are summed)\n"
    "  --lr LR               base learning rate, cosine schedule [0.1]\n"
    "  --warmup E            linear warm-up length in epochs, may be fractional [0.5]\n"
    "  --wd WD               weight decay (conv/linear weights) [5e-4]\n"
    "  --momentum M          SGD momentum [0.9]\n"
    "  --nesterov, --no-nesterov   Nesterov momentum [on]\n"
    "  --label-smoothing S   label smoothing [0]\n"
    "  --no-augment          no random crop + flip (pad 4 for 32x32 images, 2 for 28x28)\n"
    "  --seed S              initialization, shuffling and augmentation seed [0]\n"
    "  --threads T           threads [number of cores]\n"
    "\n"
    "data-parallel (mpirun -np K proxynorm train ..., see docs/DISTRIBUTED.md):\n"
    "  --distributed         require MPI (implied when started by mpirun); each of the K\n"
    "                        ranks computes B/K images of every batch (K x micro-batch\n"
    "                        must divide B); rank 0 evaluates, logs and saves\n"
    "  --sync-bn             --norm bn: normalize with the statistics of all ranks'\n"
    "                        micro-batches (K ranks x b = one process x K b)\n"
    "\n"
    "evaluation, logs, checkpoints:\n"
    "  --eval-every N        evaluate every N updates [each epoch end]\n"
    "  --log FILE            one JSON object per evaluation: epoch, step, lr, train_loss,\n"
    "                        test_loss, test_acc (fraction), img_per_s, seconds, peak_rss_mb\n"
    "  --save CKPT           checkpoint (safetensors) at each epoch end and at the end\n"
    "  --save-every N        checkpoint every N updates instead of each epoch end\n"
    "  --resume CKPT         continue a run from its checkpoint; the configuration is the\n"
    "                        checkpoint's (the losses are those of an uninterrupted run);\n"
    "                        it keeps saving to CKPT unless --save says otherwise\n"
    "  --stop-at N           stop after N updates (saving), keeping the full schedule\n"
    "\n"
    "diagnostics (docs/power.md):\n"
    "  --power-every N       every N updates (and before the first), the power decomposition\n"
    "                        of every normalized pre-activation on a fixed probe batch (the\n"
    "                        first 128 test images, inference mode: BN with its running\n"
    "                        statistics); does not change the training\n"
    "  --power-csv FILE      where its rows go: step,layer,name,sq_mean,var_mean,sq_std,\n"
    "                        var_std,power [LOG with .jsonl replaced by .power.csv, or\n"
    "                        power.csv]; appended to when resuming\n"
    "\n"
    "A non-finite loss stops the run (exit status 3) without saving. Ctrl-C (SIGINT) or\n"
    "SIGTERM finishes the current update, saves the checkpoint and exits (status 130).\n";

static const char *usage_eval =
    "usage: proxynorm eval --checkpoint CKPT [--data DIR] [--limit-test N] [--batch B] [--threads T]\n"
    "                      [--fold]\n"
    "\n"
    "Prints the test loss and accuracy of a checkpoint; the model is the one described\n"
    "by the checkpoint's metadata.\n"
    "  --fold   fold the norms' per-channel affines into the neighbouring layers first\n"
    "           (bn: into the convolution before it; gn+pn / ln+pn: PN's post-activation\n"
    "           scale into the norm's affine, its shift into following 1x1 convolutions and\n"
    "           the classifier); same predictions, up to float rounding in the logits\n";

static const char *usage_info =
    "usage: proxynorm info --model M --norm N --channels C --image H --classes K [--width W] [--groups G]\n"
    "\n"
    "Prints {\"model\", \"norm\", \"width\", \"params\" (all trained parameters),\n"
    "\"conv_linear_params\" (weights and biases of the convolutions and linear layers only),\n"
    "\"buffers\" (BN running statistics), \"macs\" (multiply-accumulates per image of the\n"
    "forward pass)}. --width defaults to the model's default at that image size (64 for the\n"
    "bottleneck ResNets / ResNeXts at >= 64 px, else 16). Models: see proxynorm train --help.\n";

static int usage_error(const char *cmd, const char *msg)
{
    fprintf(stderr, "proxynorm%s%s: %s\n(try: proxynorm%s%s --help)\n", cmd ? " " : "", cmd ? cmd : "",
            msg, cmd ? " " : "", cmd ? cmd : "");
    return EXIT_USAGE;
}

static int fail(const char *what, int rc)
{
    const char *m = pn_last_error();
    fprintf(stderr, "proxynorm: %s: %s\n", what, m && *m ? m : pn_status_str(rc));
    return EXIT_FAILURE;
}

static int default_threads(void)
{
#ifdef _OPENMP
    int n = omp_get_num_procs();
    return n > 0 ? n : 1;
#else
    return 1;
#endif
}


static int load_data(pn_dataset *d, const char *dir, int train, long limit)
{
    int rc = pn_dataset_load(d, dir, train, limit);
    if (rc) {
        char what[64];
        snprintf(what, sizeof what, "cannot load the %s set", train ? "training" : "test");
        return fail(what, rc);
    }
    if (d->h != d->w) {
        fprintf(stderr, "proxynorm: %s: images are %dx%d, only square images are supported\n", dir,
                d->h, d->w);
        pn_dataset_free(d);
        return EXIT_FAILURE;
    }
    return 0;
}

/* ------------------------------------------------------------- progress */

typedef struct {
    int tty;
    int epochs;
    long report_every; /* non-terminal: plain line every ~10% of an epoch */
    double last_print;
    int line_open;     /* a \r line is on screen */
} progress;

static void fmt_time(char *buf, size_t n, double s)
{
    if (!(s >= 0) || s > 1e7) { snprintf(buf, n, "--"); return; }
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, n, "%ldh%02ldm", t / 3600, (t / 60) % 60);
    else snprintf(buf, n, "%ldm%02lds", t / 60, t % 60);
}

static void on_step(void *user, const pn_train_status *s)
{
    progress *p = user;
    char eta[32];
    fmt_time(eta, sizeof eta, s->eta_s);
    if (p->tty) {
        int last = s->step == s->total_steps;
        if (!last && s->seconds - p->last_print < 0.1 && s->step > 1) return;
        p->last_print = s->seconds;
        fprintf(stderr, "\repoch %d/%d  step %ld/%ld  loss %.4f  lr %.4f  %.0f img/s  ETA %s   ",
                s->epoch + 1, p->epochs, s->step, s->total_steps, s->train_loss, (double)s->lr,
                s->img_per_s, eta);
        fflush(stderr);
        p->line_open = 1;
    } else if (s->step % p->report_every == 0) {
        fprintf(stderr, "epoch %d/%d  step %ld/%ld  loss %.4f  lr %.4f  %.0f img/s  ETA %s\n",
                s->epoch + 1, p->epochs, s->step, s->total_steps, s->train_loss, (double)s->lr,
                s->img_per_s, eta);
    }
}

static void on_eval(void *user, const pn_train_status *s)
{
    progress *p = user;
    if (p->line_open) { fprintf(stderr, "\n"); p->line_open = 0; }
    char el[32];
    fmt_time(el, sizeof el, s->seconds);
    if (isfinite(s->test_acc))
        fprintf(stderr, "epoch %.2f  step %ld/%ld  train loss %.4f  test loss %.4f  test acc %.2f%%  "
                        "%.0f img/s  %s  peak %.0f MB\n",
                (double)s->step / s->steps_per_epoch, s->step, s->total_steps, s->train_loss,
                s->test_loss, 100.0 * s->test_acc, s->img_per_s, el, s->peak_rss_mb);
    else
        fprintf(stderr, "epoch %.2f  step %ld/%ld  train loss %.4f  %.0f img/s  %s\n",
                (double)s->step / s->steps_per_epoch, s->step, s->total_steps, s->train_loss,
                s->img_per_s, el);
    fflush(stderr);
}

static void on_save(void *user, const char *path, long step)
{
    progress *p = user;
    if (p->tty) return; /* keep the terminal line clean */
    fprintf(stderr, "saved %s (step %ld)\n", path, step);
}

/* ------------------------------------------------- power during training */
/* --power-every N: after every N-th update (and before the first), the power
 * decomposition of every norm layer on a fixed probe batch (the first
 * POWER_PROBE test images), appended to a CSV. An inference-mode forward only
 * reads the parameters and BN buffers, so the training is unchanged (tested in
 * tests/test_power.c); it runs in chunks of the micro-batch, so the activation
 * memory does not grow. */
#define POWER_PROBE 128

typedef struct {
    progress *p;          /* the progress display it wraps */
    pn_model *model;
    const float *x;       /* probe images */
    int n, chunk, layers;
    long every;
    FILE *csv;
    const char *path;
    pn_power_decomp *terms;
    int failed;
} power_probe;

static int power_probe_row(power_probe *pp, long step)
{
    if (pp->failed) return -1;
    int rc = pn_power_model(pp->terms, pp->layers, pp->model, pp->x, pp->n, pp->chunk, 0);
    if (rc) {
        fprintf(stderr, "\nproxynorm: power at step %ld: %s; no more power rows\n", step,
                pn_last_error());
        pp->failed = 1;
        return -1;
    }
    for (int l = 0; l < pp->layers; l++) {
        pn_norm_layer_info info;
        pn_model_norm_output(pp->model, l, &info, NULL);
        const pn_power_decomp *t = &pp->terms[l];
        fprintf(pp->csv, "%ld,%d,%s,%.9g,%.9g,%.9g,%.9g,%.9g\n", step, l + 1, info.name, t->sq_mean,
                t->var_mean, t->sq_std, t->var_std, t->power);
    }
    if (fflush(pp->csv) != 0 || ferror(pp->csv)) {
        fprintf(stderr, "\nproxynorm: cannot write %s; no more power rows\n", pp->path);
        pp->failed = 1;
        return -1;
    }
    return 0;
}

static void on_step_power(void *user, const pn_train_status *s)
{
    power_probe *pp = user;
    on_step(pp->p, s);
    if (s->step % pp->every == 0) power_probe_row(pp, s->step);
}
static void on_eval_power(void *user, const pn_train_status *s) { on_eval(((power_probe *)user)->p, s); }
static void on_save_power(void *user, const char *path, long step)
{
    on_save(((power_probe *)user)->p, path, step);
}

/* ---------------------------------------------------------- distributed */

static pn_dist g_dist = { 0, 1, 0, NULL, NULL, NULL, NULL };
static int dist_active;  /* MPI initialized */
static int dist_clean;   /* every rank fails the same way: finalize rather than abort */

/* Starts MPI when asked (--distributed) or when launched by mpirun. Returns 0 or
 * an exit status. */
static int dist_start(int want)
{
    int launched = pn_dist_launched_size();
    if (!want && launched == 0) return 0;
    if (!pn_dist_built_with_mpi()) {
        if (!want && launched == 1) return 0; /* mpirun -np 1: one process, nothing to share */
        fprintf(stderr, "proxynorm train: %s, but this build has no MPI (install Open MPI with "
                        "scripts/install-deps.sh --mpi, then rebuild: make clean all)\n",
                want ? "--distributed" : "started by mpirun");
        return EXIT_USAGE;
    }
    int rc = pn_dist_init(&g_dist);
    if (rc) return fail("cannot start MPI", rc);
    dist_active = 1;
    return 0;
}

/* What every rank must agree on: the configuration, the data and the step. */
static uint64_t config_hash(const pn_train_config *c, const pn_dataset *tr, const pn_dataset *te,
                            long step)
{
    char buf[1024];
    int n = snprintf(buf, sizeof buf,
                     "%s|%d|%d|%d|%d|%d|%d|%d|%ld|%d|%d|%d|%.9g|%.9g|%.9g|%d|%.9g|%.9g|%d|%" PRIu64
                     "|%ld|%d|%s|%ld|%d|%d",
                     c->model.arch, (int)c->model.norm, c->model.groups, c->model.norm_batch,
                     c->model.width, c->model.in_channels, c->model.image, c->model.classes,
                     c->limit_train, c->epochs, c->batch, c->micro_batch, (double)c->lr,
                     (double)c->wd, (double)c->momentum, c->nesterov, (double)c->warmup,
                     (double)c->label_smoothing, c->augment, c->seed, c->stop_at, tr->n, tr->name,
                     step, g_dist.sync_bn, te->n);
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (int i = 0; i < n && i < (int)sizeof buf; i++) {
        h ^= (unsigned char)buf[i];
        h *= 1099511628211ull;
    }
    /* The data themselves: a sample of the images and labels. */
    size_t img = (size_t)tr->c * tr->h * tr->w, total = (size_t)tr->n * img;
    for (size_t i = 0; i < total; i += 1 + total / 4096) {
        uint32_t bits;
        memcpy(&bits, &tr->images[i], sizeof bits);
        h = (h ^ bits) * 1099511628211ull;
    }
    for (int i = 0; i < tr->n; i += 1 + tr->n / 4096) h = (h ^ (uint64_t)tr->labels[i]) * 1099511628211ull;
    return h;
}

/* ---------------------------------------------------------------- train */

/* First Ctrl-C: finish the current update, save, exit; a second one kills. */
static volatile int interrupted;
static void on_sigint(int sig)
{
    interrupted = 1;
    signal(sig, SIG_DFL);
}

static int cmd_train(int argc, char **argv)
{
    pn_train_config cfg;
    pn_train_config_default(&cfg);
    const char *data = NULL, *model = NULL, *norm = NULL, *save = NULL, *log = NULL, *resume = NULL;
    const char *power_csv = NULL;
    long limit_test = 0, power_every = 0;
    int threads = 0;
    int mb = 0;
    int distributed = 0, sync_bn = 0;
    const double BIG = 1e9;
    arg_opt o[] = {
        { "--data", ARG_STR, &data, 0, 0, 0, 0, NULL },
        { "--model", ARG_STR, &model, 0, 0, 0, 0, NULL },
        { "--norm", ARG_STR, &norm, 0, 0, 0, 0, NULL },
        { "--groups", ARG_INT, &cfg.model.groups, 1, 65536, 0, 0, NULL },
        { "--norm-batch", ARG_INT, &cfg.model.norm_batch, 1, BIG, 0, 0, NULL },
        { "--width", ARG_INT, &cfg.model.width, 1, 4096, 0, 0, NULL },
        { "--limit-train", ARG_LONG, &cfg.limit_train, 1, BIG, 0, 0, NULL },
        { "--limit-test", ARG_LONG, &limit_test, 1, BIG, 0, 0, NULL },
        { "--epochs", ARG_INT, &cfg.epochs, 1, 1000000, 0, 0, NULL },
        { "--batch", ARG_INT, &cfg.batch, 1, 1 << 20, 0, 0, NULL },
        { "--micro-batch", ARG_INT, &mb, 1, 1 << 20, 0, 0, NULL },
        { "--lr", ARG_FLOAT, &cfg.lr, 0, 3e38, 0, 0, NULL },
        { "--warmup", ARG_FLOAT, &cfg.warmup, 0, 1e6, 0, 0, NULL },
        { "--wd", ARG_FLOAT, &cfg.wd, 0, 1e3, 0, 0, NULL },
        { "--momentum", ARG_FLOAT, &cfg.momentum, 0, 0.999999, 0, 0, NULL },
        { "--nesterov", ARG_FLAG, &cfg.nesterov, 0, 0, 1, 0, "nesterov" },
        { "--no-nesterov", ARG_FLAG, &cfg.nesterov, 0, 0, 0, 0, "nesterov" },
        { "--label-smoothing", ARG_FLOAT, &cfg.label_smoothing, 0, 0.999999, 0, 0, NULL },
        { "--no-augment", ARG_FLAG, &cfg.augment, 0, 0, 0, 0, NULL },
        { "--seed", ARG_U64, &cfg.seed, 0, 0, 0, 0, NULL },
        { "--threads", ARG_INT, &threads, 1, 4096, 0, 0, NULL },
        { "--eval-every", ARG_LONG, &cfg.eval_every, 1, BIG * BIG, 0, 0, NULL },
        { "--log", ARG_STR, &log, 0, 0, 0, 0, NULL },
        { "--save", ARG_STR, &save, 0, 0, 0, 0, NULL },
        { "--save-every", ARG_LONG, &cfg.save_every, 1, BIG * BIG, 0, 0, NULL },
        { "--resume", ARG_STR, &resume, 0, 0, 0, 0, NULL },
        { "--stop-at", ARG_LONG, &cfg.stop_at, 1, BIG * BIG, 0, 0, NULL },
        { "--distributed", ARG_FLAG, &distributed, 0, 0, 1, 0, NULL },
        { "--sync-bn", ARG_FLAG, &sync_bn, 0, 0, 1, 0, NULL },
        { "--power-every", ARG_LONG, &power_every, 1, BIG * BIG, 0, 0, NULL },
        { "--power-csv", ARG_STR, &power_csv, 0, 0, 0, 0, NULL },
    };
    const int no = (int)(sizeof o / sizeof o[0]);
    int help = 0;
    char err[256];
    if (args_parse(o, no, argc, argv, 2, &help, err, sizeof err)) return usage_error("train", err);
    if (help) { fputs(usage_train, stdout); return 0; }
    int drc = dist_start(distributed);
    if (drc) return drc;
    const int root = g_dist.rank == 0, K = g_dist.size;

    if (model) {
        if (!pn_arch_valid(model)) {
            fprintf(stderr, "proxynorm train: --model: unknown model \"%s\"\nmodels: %s\n", model, pn_arch_help());
            return usage_error("train", "unknown model (see the list above)");
        }
        snprintf(cfg.model.arch, sizeof cfg.model.arch, "%s", model);
    }
    if (norm) {
        int k = pn_norm_parse(norm);
        if (k < 0) {
            snprintf(err, sizeof err, "--norm: unknown norm \"%s\" (bn gn ln in gn+pn ln+pn ln+ws none)", norm);
            return usage_error("train", err);
        }
        cfg.model.norm = (pn_norm_kind)k;
    }
    if (cfg.nesterov && cfg.momentum == 0.0f && args_find(o, no, "--nesterov")->set)
        return usage_error("train", "--nesterov needs a momentum > 0");
    if (cfg.momentum == 0.0f) cfg.nesterov = 0;
    if (args_given(o, no, "--save-every") && !save && !resume)
        return usage_error("train", "--save-every needs --save");
    if (power_csv && !power_every) return usage_error("train", "--power-csv needs --power-every");
    if (power_csv && !*power_csv) return usage_error("train", "--power-csv: empty path");
    if (args_given(o, no, "--norm-batch") && cfg.model.norm != PN_NORM_BN && !resume)
        return usage_error("train", "--norm-batch only applies to --norm bn");

    if (resume) {
        /* The run's configuration is the checkpoint's; options that would change
         * it are refused rather than silently ignored. */
        pn_train_config ck;
        long step = 0;
        int rc = pn_checkpoint_read_config(resume, &ck, &step);
        if (rc) return fail("cannot resume", rc);
        const char *fixed[] = { "--model", "--norm", "--groups", "--norm-batch", "--width",
                                "--limit-train", "--epochs", "--batch", "--micro-batch", "--lr",
                                "--warmup", "--wd", "--momentum", "--nesterov", "--label-smoothing",
                                "--no-augment", "--seed" };
        pn_train_config mine = cfg;
        if (mb) mine.micro_batch = mb;
        for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) {
            if (!args_given(o, no, fixed[i])) continue;
            const char *f = fixed[i];
            int differs =
                (!strcmp(f, "--model") && strcmp(mine.model.arch, ck.model.arch)) ||
                (!strcmp(f, "--norm") && mine.model.norm != ck.model.norm) ||
                (!strcmp(f, "--groups") && mine.model.groups != ck.model.groups) ||
                (!strcmp(f, "--norm-batch") && mine.model.norm_batch != ck.model.norm_batch) ||
                (!strcmp(f, "--width") && mine.model.width != ck.model.width) ||
                (!strcmp(f, "--limit-train") && mine.limit_train != ck.limit_train) ||
                (!strcmp(f, "--epochs") && mine.epochs != ck.epochs) ||
                (!strcmp(f, "--batch") && mine.batch != ck.batch) ||
                (!strcmp(f, "--micro-batch") && mine.micro_batch != ck.micro_batch) ||
                (!strcmp(f, "--lr") && mine.lr != ck.lr) ||
                (!strcmp(f, "--warmup") && mine.warmup != ck.warmup) ||
                (!strcmp(f, "--wd") && mine.wd != ck.wd) ||
                (!strcmp(f, "--momentum") && mine.momentum != ck.momentum) ||
                (!strcmp(f, "--nesterov") && mine.nesterov != ck.nesterov) ||
                (!strcmp(f, "--label-smoothing") && mine.label_smoothing != ck.label_smoothing) ||
                (!strcmp(f, "--no-augment") && mine.augment != ck.augment) ||
                (!strcmp(f, "--seed") && mine.seed != ck.seed);
            if (differs) {
                snprintf(err, sizeof err,
                         "%s differs from the checkpoint %s (a resumed run keeps the checkpoint's configuration)",
                         f, resume);
                return usage_error("train", err);
            }
        }
        ck.eval_every = cfg.eval_every;
        ck.save_every = cfg.save_every;
        ck.stop_at = cfg.stop_at;
        cfg = ck;
        if (cfg.stop_at > 0 && cfg.stop_at <= step) {
            snprintf(err, sizeof err, "--stop-at %ld: the checkpoint is already at step %ld", cfg.stop_at, step);
            return usage_error("train", err);
        }
    } else {
        cfg.micro_batch = mb ? mb : cfg.batch;
    }
    if (resume && !save) save = resume; /* a resumed run keeps saving where it came from */
    if (save) {
        /* Fail now rather than after the first epoch if the checkpoint cannot be written. */
        char dir[PN_PATH_MAX];
        snprintf(dir, sizeof dir, "%s", save);
        char *slash = strrchr(dir, '/');
        if (slash == dir) dir[1] = '\0';
        else if (slash) *slash = '\0';
        else strcpy(dir, ".");
        if (root && access(dir, W_OK) != 0) {
            fprintf(stderr, "proxynorm: --save %s: directory %s is not writable\n", save, dir);
            return EXIT_FAILURE;
        }
    }
    if (save) snprintf(cfg.save_path, sizeof cfg.save_path, "%s", save);
    if (log) snprintf(cfg.log_path, sizeof cfg.log_path, "%s", log);
    if (save && strlen(save) >= sizeof cfg.save_path) return usage_error("train", "--save: path too long");
    if (log && strlen(log) >= sizeof cfg.log_path) return usage_error("train", "--log: path too long");
    if (pn_train_config_check(&cfg, 0) != PN_OK) return usage_error("train", pn_last_error());
    if (sync_bn && (cfg.model.norm != PN_NORM_BN || cfg.model.norm_batch != 0))
        return usage_error("train", "--sync-bn needs --norm bn (without --norm-batch)");
    if (pn_cli_parse_only) return 0;
    g_dist.sync_bn = sync_bn;
    if (K > 1 && cfg.batch % (K * cfg.micro_batch) != 0) {
        /* Same arguments on every rank (checked below): say it once. */
        snprintf(err, sizeof err,
                 "batch %d cannot be split over %d ranks in whole micro-batches of %d: the batch "
                 "must be a multiple of ranks x micro-batch (%d)",
                 cfg.batch, K, cfg.micro_batch, K * cfg.micro_batch);
        dist_clean = 1;
        if (!root) return EXIT_USAGE;
        return usage_error("train", err);
    }

    pn_set_threads(threads > 0 ? threads : default_threads());
    if (!data) data = pn_default_data_dir();
    pn_dataset tr, te;
    int rc;
    if ((rc = load_data(&tr, data, 1, cfg.limit_train))) return rc;
    if ((rc = load_data(&te, data, 0, limit_test))) { pn_dataset_free(&tr); return rc; }
    if (!resume) {
        cfg.model.in_channels = tr.c;
        cfg.model.image = tr.h;
        cfg.model.classes = tr.classes;
        if (!args_given(o, no, "--width")) cfg.model.width = pn_model_default_width(cfg.model.arch, tr.h);
    }
    int status = 0;
    pn_trainer *t = NULL;
    if ((rc = pn_trainer_create(&t, &cfg, &tr, &te))) { status = fail("cannot start training", rc); goto out; }
    if (resume && (rc = pn_trainer_load(t, resume))) { status = fail("cannot resume", rc); goto out; }
    if (dist_active) {
        int same = 0;
        uint64_t h = config_hash(&cfg, &tr, &te, pn_trainer_step_count(t));
        if ((rc = pn_dist_agree(h, &same))) { status = fail("distributed", rc); goto out; }
        if (!same) {
            if (root)
                fprintf(stderr, "proxynorm train: the %d ranks do not have the same configuration "
                                "(options, data or checkpoint step differ); every rank must run the "
                                "same command\n", K);
            dist_clean = 1;
            status = EXIT_USAGE;
            goto out;
        }
        if ((rc = pn_trainer_set_dist(t, &g_dist))) { status = fail("distributed", rc); goto out; }
    }

    pn_model *m = pn_trainer_model(t);
    long spe = pn_trainer_total_steps(t) / cfg.epochs;
    char ranks[96] = "";
    if (K > 1)
        snprintf(ranks, sizeof ranks, " x %d ranks (%d images each per update, %.0f bytes exchanged)",
                 K, cfg.batch / K, pn_trainer_comm_bytes(t));
    if (root)
    fprintf(stderr,
            "proxynorm: %s %s width %d (%zu params, %.1f MMACs/image) on %s: %d train / %d test "
            "images, %d epoch(s) x %ld steps, batch %d (micro-batch %d), lr %g, %d threads%s\n",
            cfg.model.arch, pn_norm_name(cfg.model.norm), cfg.model.width, pn_model_num_params(m),
            pn_model_macs(m) / 1e6, tr.name, tr.n, te.n, cfg.epochs, spe, cfg.batch,
            cfg.micro_batch, (double)cfg.lr, pn_get_threads(), ranks);
    if (resume && root)
        fprintf(stderr, "proxynorm: resuming %s at step %ld of %ld\n", resume, pn_trainer_step_count(t),
                pn_trainer_total_steps(t));

    progress p = { 0 };
    p.tty = isatty(fileno(stderr));
    p.epochs = cfg.epochs;
    p.report_every = spe >= 10 ? spe / 10 : 1;
    pn_train_callbacks cb = { on_step, on_eval, on_save, &p, &interrupted };
    power_probe pp = { 0 };
    char power_path[PN_PATH_MAX];
    if (power_every && root) {
        /* default path: the log's with .power.csv, or power.csv */
        if (power_csv) {
            snprintf(power_path, sizeof power_path, "%s", power_csv);
        } else if (log) {
            size_t len = strlen(log);
            if (len > 6 && strcmp(log + len - 6, ".jsonl") == 0) len -= 6;
            snprintf(power_path, sizeof power_path, "%.*s.power.csv", (int)len, log);
        } else {
            snprintf(power_path, sizeof power_path, "power.csv");
        }
        pn_norm_layer_info info;
        pn_model_norm_output(m, 0, &info, NULL);
        pp.p = &p;
        pp.model = m;
        pp.x = te.images;
        pp.n = te.n < POWER_PROBE ? te.n : POWER_PROBE;
        pp.chunk = cfg.micro_batch;
        pp.layers = info.count;
        pp.every = power_every;
        pp.path = power_path;
        pp.terms = calloc((size_t)info.count, sizeof *pp.terms);
        const long step0 = pn_trainer_step_count(t);
        FILE *old = step0 > 0 ? fopen(power_path, "r") : NULL;
        pp.csv = fopen(power_path, old ? "a" : "w");
        if (old) fclose(old);
        if (!pp.terms || !pp.csv) {
            fprintf(stderr, "proxynorm: cannot open %s for the power rows\n", power_path);
            free(pp.terms);
            if (pp.csv) fclose(pp.csv);
            status = EXIT_FAILURE;
            goto out;
        }
        if (!old) fprintf(pp.csv, "step,layer,name,sq_mean,var_mean,sq_std,var_std,power\n");
        if (step0 == 0) power_probe_row(&pp, 0);
        cb = (pn_train_callbacks){ on_step_power, on_eval_power, on_save_power, &pp, &interrupted };
        fprintf(stderr, "proxynorm: power of %d norm layers on %d probe images every %ld updates -> %s\n",
                pp.layers, pp.n, power_every, power_path);
    }
    if (!root) cb = (pn_train_callbacks){ NULL, NULL, NULL, NULL, &interrupted };
    pn_train_status fin;
    signal(SIGINT, on_sigint);
    signal(SIGTERM, on_sigint);
    rc = pn_train_run(t, &cb, &fin);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    if (p.line_open) fprintf(stderr, "\n");
    if (pp.csv) {
        if (fclose(pp.csv) != 0) pp.failed = 1;
        free(pp.terms);
        pp.csv = NULL;
        if (pp.failed && rc == PN_OK) {
            fprintf(stderr, "proxynorm: the power rows in %s are incomplete\n", power_path);
            status = EXIT_FAILURE;
        }
    }
    if (rc == PN_ERR_NUMERIC) {
        dist_clean = 1; /* every rank sees the same loss */
        if (root)
        fprintf(stderr, "proxynorm: training diverged: %s; stopped%s%s%s\n", pn_last_error(),
                save ? " (the last checkpoint " : "", save ? save : "", save ? " is left as it was)" : "");
        status = EXIT_DIVERGED;
        goto out;
    }
    if (rc) { status = fail("training failed", rc); goto out; }
    dist_clean = 1; /* the ranks ended at the same update (an interruption is shared) */
    if (!root) {
        if (interrupted) status = 130;
    } else if (pn_trainer_step_count(t) < pn_trainer_total_steps(t)) {
        printf("%s at step %ld of %ld%s%s\n", interrupted ? "interrupted" : "stopped",
               pn_trainer_step_count(t), pn_trainer_total_steps(t),
               save ? "; resume with --resume " : "", save ? save : "");
        fflush(stdout);
        if (interrupted) status = 130;
    } else if (isfinite(fin.test_acc)) {
        printf("test accuracy: %.2f%% (loss %.4f)\n", 100.0 * fin.test_acc, fin.test_loss);
    }
out:
    pn_trainer_free(t);
    pn_dataset_free(&tr);
    pn_dataset_free(&te);
    return status;
}

/* ----------------------------------------------------------------- eval */

static int cmd_eval(int argc, char **argv)
{
    const char *ckpt = NULL, *data = NULL;
    long limit = 0;
    int batch = 100, threads = 0, fold = 0;
    arg_opt o[] = {
        { "--checkpoint", ARG_STR, &ckpt, 0, 0, 0, 0, NULL },
        { "--data", ARG_STR, &data, 0, 0, 0, 0, NULL },
        { "--limit-test", ARG_LONG, &limit, 1, 1e9, 0, 0, NULL },
        { "--batch", ARG_INT, &batch, 1, 1 << 20, 0, 0, NULL },
        { "--threads", ARG_INT, &threads, 1, 4096, 0, 0, NULL },
        { "--fold", ARG_FLAG, &fold, 0, 0, 1, 0, NULL },
    };
    int help = 0;
    char err[256];
    if (args_parse(o, 6, argc, argv, 2, &help, err, sizeof err)) return usage_error("eval", err);
    if (help) { fputs(usage_eval, stdout); return 0; }
    if (!ckpt) return usage_error("eval", "--checkpoint is required");
    if (pn_cli_parse_only) return 0;
    pn_set_threads(threads > 0 ? threads : default_threads());
    pn_model *m = NULL;
    int rc = pn_checkpoint_load_model(&m, ckpt);
    if (rc) return fail("cannot load the checkpoint", rc);
    if (fold) {
        int nf = 0;
        if ((rc = pn_model_fold(m, &nf))) { pn_model_free(m); return fail("cannot fold the model", rc); }
        printf("folded norm layers: %d\n", nf);
    }
    pn_dataset te;
    if (!data) data = pn_default_data_dir();
    if ((rc = load_data(&te, data, 0, limit))) { pn_model_free(m); return rc; }
    double loss = 0, acc = 0;
    rc = pn_evaluate(m, &te, batch, &loss, &acc);
    int status = 0;
    if (rc) status = fail("evaluation failed", rc);
    else {
        printf("test images: %d\n", te.n);
        printf("test accuracy: %.2f%% (loss %.4f)\n", 100.0 * acc, loss);
    }
    pn_dataset_free(&te);
    pn_model_free(m);
    return status;
}

/* ----------------------------------------------------------------- info */

static int cmd_info(int argc, char **argv)
{
    pn_model_config c;
    pn_model_config_default(&c);
    const char *model = NULL, *norm = NULL;
    arg_opt o[] = {
        { "--model", ARG_STR, &model, 0, 0, 0, 0, NULL },
        { "--norm", ARG_STR, &norm, 0, 0, 0, 0, NULL },
        { "--channels", ARG_INT, &c.in_channels, 1, 4096, 0, 0, NULL },
        { "--image", ARG_INT, &c.image, 1, 65536, 0, 0, NULL },
        { "--classes", ARG_INT, &c.classes, 1, 1 << 20, 0, 0, NULL },
        { "--width", ARG_INT, &c.width, 1, 4096, 0, 0, NULL },
        { "--groups", ARG_INT, &c.groups, 1, 65536, 0, 0, NULL },
    };
    int help = 0;
    char err[256];
    if (args_parse(o, 7, argc, argv, 2, &help, err, sizeof err)) return usage_error("info", err);
    if (help) { fputs(usage_info, stdout); return 0; }
    if (model) {
        if (!pn_arch_valid(model)) {
            fprintf(stderr, "proxynorm info: --model: unknown model \"%s\"\nmodels: %s\n", model, pn_arch_help());
            return usage_error("info", "unknown model (see the list above)");
        }
        snprintf(c.arch, sizeof c.arch, "%s", model);
    }
    if (norm) {
        int k = pn_norm_parse(norm);
        if (k < 0) {
            snprintf(err, sizeof err, "--norm: unknown norm \"%s\"", norm);
            return usage_error("info", err);
        }
        c.norm = (pn_norm_kind)k;
    }
    if (!args_given(o, 7, "--width")) c.width = pn_model_default_width(c.arch, c.image);
    if (pn_cli_parse_only) return 0;
    pn_model *m = NULL;
    int rc = pn_model_create(&m, &c, 0);
    if (rc) return fail("cannot build the model", rc);
    printf("{\"model\": \"%s\", \"norm\": \"%s\", \"width\": %d, \"params\": %zu, "
           "\"conv_linear_params\": %zu, \"buffers\": %zu, \"macs\": %.0f}\n",
           c.arch, pn_norm_name(c.norm), c.width, pn_model_num_params(m), pn_model_conv_linear_params(m),
           pn_model_num_buffers(m), pn_model_macs(m));
    pn_model_free(m);
    return 0;
}

/* libgomp's threads spin between parallel regions by default. On 2 cores shared
 * with OpenBLAS's own worker threads (or with any other load), spinning threads
 * starve the one they wait for: a small model trained 50x slower with 2 threads
 * than with 1 in our measurements. Passive waiting avoids that, but libgomp reads
 * OMP_WAIT_POLICY only when it is loaded, so set it and re-execute ourselves once.
 * An explicit OMP_WAIT_POLICY in the environment is respected. */
static void ensure_passive_wait(char **argv)
{
    if (getenv("OMP_WAIT_POLICY")) return;
    /* Under valgrind the re-executed program would escape the checks. */
    const char *pre = getenv("LD_PRELOAD");
    if (pre && strstr(pre, "vgpreload")) return;
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0 || (size_t)n >= sizeof self - 1) return;
    self[n] = '\0';
    if (setenv("OMP_WAIT_POLICY", "passive", 1) != 0) return;
    execv(self, argv);
    /* exec failed: carry on with the default policy. */
    unsetenv("OMP_WAIT_POLICY");
}

int main(int argc, char **argv)
{
    ensure_passive_wait(argv);
    if (argc < 2) {
        fputs(usage_main, stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        fputs(usage_main, stdout);
        return 0;
    }
    if (!strcmp(cmd, "--version")) {
        printf("proxynorm %s\n", PN_VERSION);
        return 0;
    }
    if (!strcmp(cmd, "train")) {
        int status = cmd_train(argc, argv);
        if (dist_active) {
            /* An error on some ranks only would leave the others waiting: end the job. */
            if (status != 0 && !dist_clean && g_dist.size > 1) pn_dist_abort(status);
            pn_dist_finalize();
        }
        return status;
    }
    if (!strcmp(cmd, "eval")) return cmd_eval(argc, argv);
    if (!strcmp(cmd, "info")) return cmd_info(argc, argv);
    if (!strcmp(cmd, "power")) return pn_cmd_power(argc - 1, argv + 1);
    char err[128];
    snprintf(err, sizeof err, "unknown command \"%.60s\"", cmd);
    return usage_error(NULL, err);
}
