/* proxynorm power: the power decomposition of the normalized pre-activations,
 * layer by layer, of the paper's random network for one or several norms, or of
 * trained checkpoints on a data set (docs/power.md). Progress goes to stderr,
 * the summary table to stdout. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/commands.h"
#include "data/data.h"
#include "diag/power.h"
#include "kernels/common.h"
#include "nn/model.h"
#include "train/trainer.h"

static void power_usage(FILE *f)
{
    pn_power_net_config d = pn_power_net_default();
    fprintf(f,
            "usage: proxynorm power [options]\n"
            "\n"
            "Power decomposition of the normalized pre-activations (after the Norm, before\n"
            "the affine) of the paper's random network: Gaussian input, then per layer a 3x3\n"
            "convolution with circular padding and He weights, the Norm, a random affine\n"
            "gamma ~ N(1, 0.2^2), beta ~ N(0, 0.2^2) and ReLU (PN-Act(ReLU) for the +pn norms).\n"
            "Per layer, averaged over channels: sq_mean = (E_x mu_c)^2, var_mean = Var_x mu_c,\n"
            "sq_std = (E_x sigma_c)^2, var_std = Var_x sigma_c (they add up to E[y^2]).\n"
            "\n"
            "  --net random      the network (only the random network so far)\n"
            "  --norm LIST       all (default: bn,ln,in,gn,ln+pn,gn+pn,ln+ws), or a comma-\n"
            "                    separated list of those names and none\n"
            "  --width N         channels (default %d)\n"
            "  --depth N         layers (default %d)\n"
            "  --image N         inputs are N x N (default %d)\n"
            "  --batch N         number of inputs (default %d)\n"
            "  --groups N        GroupNorm groups, min(N, width) (default %d)\n"
            "  --eps X           epsilon of BN/LN/IN/GN (default %g)\n"
            "  --seed N          random seed (default %llu)\n"
            "  --threads N       threads (default: all cores)\n"
            "  --csv FILE        write the terms, one row per norm and layer\n"
            "  --plot PREFIX     draw PREFIX.png and PREFIX.svg with gnuplot (script in\n"
            "                    PREFIX.gp; the CSV goes to PREFIX.csv unless --csv is given)\n"
            "  --log             plot the four terms as lines on a log scale instead of\n"
            "                    stacked areas (shows the terms that vanish: IN, BN)\n"
            "  -h, --help        this text\n"
            "\n"
            "trained networks (instead of --net random and its options):\n"
            "  --checkpoint CKPT a checkpoint of proxynorm train; repeat it for one panel per\n"
            "                    checkpoint (same architecture), named after the file\n"
            "  --data DIR        data set (default $PROXYNORM_DATA or\n"
            "                    /usr/share/datasets/fashion-mnist)\n"
            "  --split S         test (default) or train: which images are fed\n"
            "  --limit-test N    only the first N images of the split (default all)\n"
            "  --batch N         images per forward (default 100)\n"
            "  --bn-stats S      running (default: the network of inference, BN with its\n"
            "                    running statistics) or batch (BN normalizes over each\n"
            "                    batch of --batch images, as in training)\n"
            "The layers are the norm layers in forward order (stage1.block0.norm1, ...,\n"
            "final.norm); y is the norm's output before its affine (GN inside GN+PN).\n",
            d.width, d.depth, d.image, d.batch, d.groups, (double)d.eps,
            (unsigned long long)d.seed);
}

static int parse_int(const char *opt, const char *s, int lo, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > INT_MAX) {
        fprintf(stderr, "proxynorm power: %s needs an integer >= %d (got '%s')\n", opt, lo, s);
        return -1;
    }
    *out = (int)v;
    return 0;
}

/* "all" or "a,b,c" -> norms[], returns the count or -1 */
static int parse_norms(const char *s, int *norms)
{
    if (strcmp(s, "all") == 0) {
        for (int k = 0; k < PN_POWER_NORM_ALL; k++) norms[k] = k;
        return PN_POWER_NORM_ALL;
    }
    int n = 0;
    while (*s) {
        size_t len = strcspn(s, ",");
        char name[32];
        if (len == 0 || len >= sizeof name) goto bad;
        memcpy(name, s, len);
        name[len] = '\0';
        int k = pn_power_norm_parse(name);
        if (k < 0) {
            fprintf(stderr, "proxynorm power: unknown norm '%s' (bn, ln, in, gn, ln+pn, gn+pn, "
                            "ln+ws, none, all)\n", name);
            return -1;
        }
        for (int i = 0; i < n; i++)
            if (norms[i] == k) {
                fprintf(stderr, "proxynorm power: norm '%s' given twice\n", name);
                return -1;
            }
        norms[n++] = k;
        s += len;
        if (*s == ',') {
            s++;
            if (!*s) goto bad;
        }
    }
    if (n > 0) return n;
bad:
    fprintf(stderr, "proxynorm power: bad --norm list\n");
    return -1;
}

/* ------------------------------------------------------- trained networks */
#define MAX_CKPTS 16

typedef struct {
    const char *const *ckpts;
    int n_ckpts;
    const char *data, *split, *bn_stats;
    long limit;
    int batch, threads;
    const char *csv, *plot;
    int log_scale;
} ckpt_opts;

/* The panel name of a checkpoint: its file name without directory and .safetensors
 * (commas, which the CSV cannot hold, become '_'). */
static void ckpt_label(char *out, size_t n, const char *path)
{
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    snprintf(out, n, "%s", b);
    size_t len = strlen(out);
    const char *ext = ".safetensors";
    if (len > strlen(ext) && strcmp(out + len - strlen(ext), ext) == 0) out[len - strlen(ext)] = '\0';
    for (char *p = out; *p; p++)
        if (*p == ',' || *p == '\n' || *p == '\r') *p = '_';
    if (!*out) snprintf(out, n, "checkpoint");
}

static int power_checkpoints(const ckpt_opts *o)
{
    int train_split;
    if (strcmp(o->split, "test") == 0) train_split = 0;
    else if (strcmp(o->split, "train") == 0) train_split = 1;
    else {
        fprintf(stderr, "proxynorm power: --split must be test or train (got '%s')\n", o->split);
        return 2;
    }
    int training;
    if (strcmp(o->bn_stats, "running") == 0) training = 0;
    else if (strcmp(o->bn_stats, "batch") == 0) training = 1;
    else {
        fprintf(stderr, "proxynorm power: --bn-stats must be running or batch (got '%s')\n",
                o->bn_stats);
        return 2;
    }
    if ((o->csv && !*o->csv) || (o->plot && !*o->plot)) {
        fprintf(stderr, "proxynorm power: empty --csv path or --plot prefix\n");
        return 2;
    }
    if (o->threads > 0) pn_set_threads(o->threads);
    const char *dir = o->data ? o->data : pn_default_data_dir();
    const int n = o->n_ckpts;
    pn_model *models[MAX_CKPTS] = { 0 };
    pn_power_decomp *terms[MAX_CKPTS] = { 0 };
    char labels[MAX_CKPTS][64];
    const char *names[MAX_CKPTS];
    pn_dataset d;
    memset(&d, 0, sizeof d);
    char *csv_buf = NULL;
    const char *csv = o->csv;
    int ret = 1, layers = 0, rc;

    /* every checkpoint first: a bad one fails before any work */
    for (int k = 0; k < n; k++) {
        if ((rc = pn_checkpoint_load_model(&models[k], o->ckpts[k]))) {
            fprintf(stderr, "proxynorm power: cannot load the checkpoint %s: %s\n", o->ckpts[k],
                    pn_last_error());
            goto done;
        }
        pn_norm_layer_info info;
        if ((rc = pn_model_norm_output(models[k], 0, &info, NULL))) {
            fprintf(stderr, "proxynorm power: %s\n", pn_last_error());
            goto done;
        }
        if (k > 0 && info.count != layers) {
            fprintf(stderr, "proxynorm power: %s has %d norm layers, %s has %d: one plot needs the "
                            "same architecture\n", o->ckpts[k], info.count, o->ckpts[0], layers);
            ret = 2;
            goto done;
        }
        layers = info.count;
        ckpt_label(labels[k], sizeof labels[k], o->ckpts[k]);
        names[k] = labels[k];
        for (int j = 0; j < k; j++)
            if (strcmp(labels[j], labels[k]) == 0) {
                fprintf(stderr, "proxynorm power: two checkpoints named %s\n", labels[k]);
                ret = 2;
                goto done;
            }
        terms[k] = calloc((size_t)layers, sizeof *terms[k]);
        if (!terms[k]) {
            fprintf(stderr, "proxynorm power: out of memory\n");
            goto done;
        }
    }
    if ((rc = pn_dataset_load(&d, dir, train_split, o->limit))) {
        fprintf(stderr, "proxynorm power: cannot load the %s set: %s\n", o->split, pn_last_error());
        goto done;
    }
    for (int k = 0; k < n; k++) {
        const pn_model_config *mc = pn_model_cfg(models[k]);
        if (d.c != mc->in_channels || d.h != mc->image || d.w != mc->image ||
            d.classes != mc->classes) {
            fprintf(stderr, "proxynorm power: %s expects %dx%dx%d images in %d classes, the data "
                            "set %s has %dx%dx%d images in %d classes\n", o->ckpts[k],
                    mc->in_channels, mc->image, mc->image, mc->classes, dir, d.c, d.h, d.w,
                    d.classes);
            goto done;
        }
    }
    fprintf(stderr, "power: %d checkpoint(s), %d %s images of %s (%s), batch %d, BN with %s "
                    "statistics, %d thread(s)\n",
            n, d.n, o->split, dir, d.name, o->batch, training ? "batch" : "running",
            pn_get_threads());
    for (int k = 0; k < n; k++) {
        double t0 = pn_now_s();
        const pn_model_config *mc = pn_model_cfg(models[k]);
        if ((rc = pn_power_model(terms[k], layers, models[k], d.images, d.n, o->batch, training))) {
            fprintf(stderr, "proxynorm power: %s: %s\n", o->ckpts[k], pn_last_error());
            goto done;
        }
        fprintf(stderr, "power: %-12s (%s %s) done in %6.1f s\n", labels[k], mc->arch,
                pn_norm_name(mc->norm), pn_now_s() - t0);
    }

    /* the table: one row per (checkpoint, layer) */
    printf("%-12s %-5s %-22s %10s %10s %10s %10s %10s\n", "checkpoint", "layer", "name", "sq_mean",
           "var_mean", "sq_std", "var_std", "power");
    for (int k = 0; k < n; k++)
        for (int l = 0; l < layers; l++) {
            pn_norm_layer_info info;
            pn_model_norm_output(models[k], l, &info, NULL);
            const pn_power_decomp *t = &terms[k][l];
            printf("%-12s %-5d %-22s %10.4g %10.4g %10.4g %10.4g %10.4g\n", labels[k], l + 1,
                   info.name, t->sq_mean, t->var_mean, t->sq_std, t->var_std, t->power);
        }
    fflush(stdout);

    const int with_norm = n > 1;
    if (o->plot && !csv) {
        csv_buf = malloc(strlen(o->plot) + 5);
        if (!csv_buf) {
            fprintf(stderr, "proxynorm power: out of memory\n");
            goto done;
        }
        sprintf(csv_buf, "%s.csv", o->plot);
        csv = csv_buf;
    }
    if (csv) {
        if ((rc = pn_power_write_csv(csv, names, (const pn_power_decomp *const *)terms, n, layers,
                                     with_norm))) {
            fprintf(stderr, "proxynorm power: %s\n", pn_last_error());
            goto done;
        }
        fprintf(stderr, "power: wrote %s\n", csv);
    }
    if (o->plot) {
        if (!pn_power_have_gnuplot()) {
            fprintf(stderr, "power: gnuplot not found, no plot drawn (install the gnuplot-nox "
                            "package, e.g. apt-get install gnuplot-nox); the CSV %s has the data\n",
                    csv);
        } else {
            char title[200];
            const pn_model_config *mc = pn_model_cfg(models[0]);
            snprintf(title, sizeof title,
                     "Power of the normalized pre-activations, trained %s, %d %s images of %s, "
                     "BN %s statistics%s",
                     mc->arch, d.n, o->split, d.name, training ? "batch" : "running",
                     o->log_scale ? ", log scale" : "");
            if ((rc = pn_power_plot_titled(csv, o->plot, names, n, layers, with_norm, title,
                                           o->log_scale))) {
                fprintf(stderr, "proxynorm power: %s\n", pn_last_error());
                goto done;
            }
            fprintf(stderr, "power: wrote %s.png, %s.svg (script %s.gp)\n", o->plot, o->plot,
                    o->plot);
        }
    }
    ret = 0;
done:
    for (int k = 0; k < n; k++) {
        pn_model_free(models[k]);
        free(terms[k]);
    }
    pn_dataset_free(&d);
    free(csv_buf);
    return ret;
}

int pn_cmd_power(int argc, char **argv)
{
    pn_power_net_config cfg = pn_power_net_default();
    const char *net = "random", *norm_list = "all", *csv = NULL, *plot = NULL;
    int threads = 0, log_scale = 0;
    /* trained networks */
    const char *ckpts[MAX_CKPTS], *data = NULL, *split = "test", *bn_stats = "running";
    const char *random_opt = NULL; /* an option of the random network, if given */
    int n_ckpts = 0, batch_given = 0;
    long limit = 0;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            power_usage(stdout);
            return 0;
        }
        if (strcmp(a, "--log") == 0) {
            log_scale = 1;
            continue;
        }
        if (strncmp(a, "--", 2) != 0) {
            fprintf(stderr, "proxynorm power: unexpected argument '%s' (see --help)\n", a);
            return 2;
        }
        /* --opt value or --opt=value */
        char opt[32];
        const char *val = NULL, *eq = strchr(a, '=');
        size_t olen = eq ? (size_t)(eq - a) : strlen(a);
        if (olen >= sizeof opt) {
            fprintf(stderr, "proxynorm power: unknown option '%s' (see --help)\n", a);
            return 2;
        }
        memcpy(opt, a, olen);
        opt[olen] = '\0';
        static const char *const known[] = {
            "--net", "--norm", "--width", "--depth", "--image", "--batch", "--groups",
            "--eps", "--seed", "--threads", "--csv", "--plot", "--checkpoint", "--data",
            "--split", "--limit-test", "--bn-stats",
        };
        int found = 0;
        for (size_t k = 0; k < sizeof known / sizeof *known; k++)
            if (strcmp(opt, known[k]) == 0) found = 1;
        if (!found) {
            fprintf(stderr, "proxynorm power: unknown option '%s' (see --help)\n", opt);
            return 2;
        }
        if (eq) {
            val = eq + 1;
        } else if (i + 1 < argc) {
            val = argv[++i];
        } else {
            fprintf(stderr, "proxynorm power: %s needs a value\n", opt);
            return 2;
        }
        int bad = 0;
        if (strcmp(opt, "--net") == 0 || strcmp(opt, "--norm") == 0 || strcmp(opt, "--width") == 0 ||
            strcmp(opt, "--depth") == 0 || strcmp(opt, "--image") == 0 ||
            strcmp(opt, "--groups") == 0 || strcmp(opt, "--eps") == 0 || strcmp(opt, "--seed") == 0)
            random_opt = argv[i - (eq ? 0 : 1)];
        if (strcmp(opt, "--batch") == 0) batch_given = 1;
        if (strcmp(opt, "--checkpoint") == 0) {
            if (n_ckpts == MAX_CKPTS) {
                fprintf(stderr, "proxynorm power: at most %d checkpoints\n", MAX_CKPTS);
                return 2;
            }
            ckpts[n_ckpts++] = val;
            continue;
        }
        if (strcmp(opt, "--data") == 0) { data = val; continue; }
        if (strcmp(opt, "--split") == 0) { split = val; continue; }
        if (strcmp(opt, "--bn-stats") == 0) { bn_stats = val; continue; }
        if (strcmp(opt, "--limit-test") == 0) {
            int v = 0;
            if (parse_int(opt, val, 1, &v)) return 2;
            limit = v;
            continue;
        }
        if (strcmp(opt, "--net") == 0) net = val;
        else if (strcmp(opt, "--norm") == 0) norm_list = val;
        else if (strcmp(opt, "--width") == 0) bad = parse_int(opt, val, 1, &cfg.width);
        else if (strcmp(opt, "--depth") == 0) bad = parse_int(opt, val, 1, &cfg.depth);
        else if (strcmp(opt, "--image") == 0) bad = parse_int(opt, val, 1, &cfg.image);
        else if (strcmp(opt, "--batch") == 0) bad = parse_int(opt, val, 1, &cfg.batch);
        else if (strcmp(opt, "--groups") == 0) bad = parse_int(opt, val, 1, &cfg.groups);
        else if (strcmp(opt, "--threads") == 0) bad = parse_int(opt, val, 0, &threads);
        else if (strcmp(opt, "--csv") == 0) csv = val;
        else if (strcmp(opt, "--plot") == 0) plot = val;
        else if (strcmp(opt, "--seed") == 0) {
            char *end;
            errno = 0;
            unsigned long long v = strtoull(val, &end, 10);
            if (errno || end == val || *end || val[0] == '-') {
                fprintf(stderr, "proxynorm power: --seed needs a non-negative integer (got '%s')\n", val);
                bad = 1;
            }
            cfg.seed = v;
        } else if (strcmp(opt, "--eps") == 0) {
            char *end;
            errno = 0;
            double v = strtod(val, &end);
            if (errno || end == val || *end || !(v >= 0) || v > 1) {
                fprintf(stderr, "proxynorm power: --eps needs a number in [0, 1] (got '%s')\n", val);
                bad = 1;
            }
            cfg.eps = (float)v;
        }
        if (bad) return 2;
    }
    if (n_ckpts > 0 || data || limit || strcmp(split, "test") || strcmp(bn_stats, "running")) {
        if (n_ckpts == 0) {
            fprintf(stderr, "proxynorm power: --data, --split, --limit-test and --bn-stats need "
                            "--checkpoint\n");
            return 2;
        }
        if (random_opt) {
            fprintf(stderr, "proxynorm power: %s is an option of the random network (--net random); "
                            "with --checkpoint the network is the checkpoint's\n", random_opt);
            return 2;
        }
        ckpt_opts co = { ckpts, n_ckpts, data, split, bn_stats, limit, batch_given ? cfg.batch : 100,
                         threads, csv, plot, log_scale };
        return power_checkpoints(&co);
    }
    if (strcmp(net, "random") != 0) {
        fprintf(stderr, "proxynorm power: --net %s: only the random network is implemented\n", net);
        return 2;
    }
    if (csv && !*csv) {
        fprintf(stderr, "proxynorm power: empty --csv path\n");
        return 2;
    }
    if (plot && !*plot) {
        fprintf(stderr, "proxynorm power: empty --plot prefix\n");
        return 2;
    }
    int norms[PN_POWER_NORM_COUNT];
    int n_norms = parse_norms(norm_list, norms);
    if (n_norms < 0) return 2;
    int G = cfg.groups < cfg.width ? cfg.groups : cfg.width;
    for (int k = 0; k < n_norms; k++)
        if ((norms[k] == PN_POWER_GN || norms[k] == PN_POWER_GN_PN) && cfg.width % G != 0) {
            fprintf(stderr, "proxynorm power: --width %d is not divisible by %d groups\n",
                    cfg.width, G);
            return 2;
        }
    if (pn_cli_parse_only) return 0;
    if (threads > 0) pn_set_threads(threads);

    const char *names[PN_POWER_NORM_COUNT];
    pn_power_decomp *terms[PN_POWER_NORM_COUNT] = {0};
    char *csv_buf = NULL;
    int ret = 1;
    for (int k = 0; k < n_norms; k++) {
        names[k] = pn_power_norm_name((pn_power_norm)norms[k]);
        terms[k] = calloc((size_t)cfg.depth, sizeof *terms[k]);
        if (!terms[k]) {
            fprintf(stderr, "proxynorm power: out of memory\n");
            goto done;
        }
    }

    fprintf(stderr, "power: random network, width %d, depth %d, image %dx%d, batch %d, groups %d, "
                    "seed %llu, %d thread(s)\n",
            cfg.width, cfg.depth, cfg.image, cfg.image, cfg.batch, G,
            (unsigned long long)cfg.seed, pn_get_threads());
    for (int k = 0; k < n_norms; k++) {
        double t0 = pn_now_s();
        int rc = pn_power_random_net(terms[k], &cfg, (pn_power_norm)norms[k]);
        if (rc) {
            fprintf(stderr, "proxynorm power: %s: %s\n", names[k], pn_last_error());
            goto done;
        }
        const pn_power_decomp *t = &terms[k][cfg.depth - 1];
        fprintf(stderr, "power: %-6s done in %6.1f s  (layer %d: sq_mean %.3g of power %.3g)\n",
                names[k], pn_now_s() - t0, cfg.depth, t->sq_mean, t->power);
    }

    printf("# power terms of the normalized pre-activation at layer %d (averaged over channels)\n",
           cfg.depth);
    printf("%-6s %10s %10s %10s %10s %10s\n", "norm", "sq_mean", "var_mean", "sq_std", "var_std",
           "power");
    for (int k = 0; k < n_norms; k++) {
        const pn_power_decomp *t = &terms[k][cfg.depth - 1];
        printf("%-6s %10.4g %10.4g %10.4g %10.4g %10.4g\n", names[k], t->sq_mean, t->var_mean,
               t->sq_std, t->var_std, t->power);
    }
    fflush(stdout);

    const int with_norm = n_norms > 1;
    if (plot && !csv) {
        csv_buf = malloc(strlen(plot) + 5);
        if (!csv_buf) {
            fprintf(stderr, "proxynorm power: out of memory\n");
            goto done;
        }
        sprintf(csv_buf, "%s.csv", plot);
        csv = csv_buf;
    }
    if (csv) {
        int rc = pn_power_write_csv(csv, names, (const pn_power_decomp *const *)terms, n_norms,
                                    cfg.depth, with_norm);
        if (rc) {
            fprintf(stderr, "proxynorm power: %s\n", pn_last_error());
            goto done;
        }
        fprintf(stderr, "power: wrote %s\n", csv);
    }
    if (plot) {
        if (!pn_power_have_gnuplot()) {
            fprintf(stderr, "power: gnuplot not found, no plot drawn (install the gnuplot-nox "
                            "package, e.g. apt-get install gnuplot-nox); the CSV %s has the data\n",
                    csv);
        } else {
            char title[160];
            snprintf(title, sizeof title,
                     "Power of the normalized pre-activations, random network (width %d, image %d, "
                     "batch %d, seed %llu)%s",
                     cfg.width, cfg.image, cfg.batch, (unsigned long long)cfg.seed,
                     log_scale ? ", log scale" : "");
            int rc = pn_power_plot_titled(csv, plot, names, n_norms, cfg.depth, with_norm, title,
                                          log_scale);
            if (rc) {
                fprintf(stderr, "proxynorm power: %s\n", pn_last_error());
                goto done;
            }
            fprintf(stderr, "power: wrote %s.png, %s.svg (script %s.gp)\n", plot, plot, plot);
        }
    }
    ret = 0;
done:
    for (int k = 0; k < n_norms; k++) free(terms[k]);
    free(csv_buf);
    return ret;
}
