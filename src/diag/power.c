/* Power decomposition of normalized activations and the paper's random network
 * (docs/proxy-norm.md, "Diagnostics"; docs/power.md). */
#include "power.h"

#include <errno.h>
#include <math.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kernels/common.h"
#include "kernels/layers.h"
#include "kernels/norm_internal.h"
#include "kernels/rng.h"

extern char **environ;

/* Loops over fewer elements than this run on one thread (an OpenMP region costs
 * more than the work, and much more when the cores are shared). */
#define POWER_PAR_MIN 32768

/* ------------------------------------------------------------ the four terms */
/* Moments over the N inputs of channel c of the per-input statistics mu, sd, pw (N,C):
 * m = { mean of mu, sum of squared deviations of mu, mean of sd, the same of sd, sum of pw }
 * (two passes). */
static void channel_moments(double m[5], const double *mu, const double *sd, const double *pw,
                            int N, int C, int c)
{
    double em = 0, es = 0, ep = 0;
    for (int n = 0; n < N; n++) {
        em += mu[(long)n * C + c];
        es += sd[(long)n * C + c];
        ep += pw[(long)n * C + c];
    }
    em /= N;
    es /= N;
    double vm = 0, vs = 0;
    for (int n = 0; n < N; n++) {
        double dm = mu[(long)n * C + c] - em, ds = sd[(long)n * C + c] - es;
        vm += dm * dm;
        vs += ds * ds;
    }
    m[0] = em;
    m[1] = vm;
    m[2] = es;
    m[3] = vs;
    m[4] = ep;
}

/* Why the four terms add up to the power, exactly. Fix a channel c. For one
 * input x, over its HW positions p (population moments):
 *     (1/HW) sum_p y_p^2 = mu(x)^2 + sigma(x)^2,
 * since sigma^2 = (1/HW) sum_p (y_p - mu)^2 = (1/HW) sum_p y_p^2 - mu^2.
 * Averaging over the N inputs, E[y^2] = E_x[mu^2] + E_x[sigma^2], and for any
 * quantity q, E_x[q^2] = (E_x q)^2 + Var_x q with the population variance
 * (Var_x q = E_x[(q - E_x q)^2] = E_x[q^2] - (E_x q)^2). Applying this to q = mu
 * and q = sigma:
 *     E[y^2] = (E_x mu)^2 + Var_x mu + (E_x sigma)^2 + Var_x sigma.
 * Averaging both sides over the channels keeps the equality (it is linear).
 * Numerically every moment is taken about its own mean (two passes, double), so
 * the terms are non-negative and their sum matches the direct mean of y^2 up to
 * double rounding of float data. */

/* The decomposition from its five per-channel sums t (squared mean, mean variance, squared
 * std, std variance, power), averaged over the C channels. */
static void set_channel_average(pn_power_decomp *out, const double t[5], int C)
{
    out->sq_mean = t[0] / C;
    out->var_mean = t[1] / C;
    out->sq_std = t[2] / C;
    out->var_std = t[3] / C;
    out->power = t[4] / C;
}

/* Instance statistics of every (input, channel) row of y (N,C,HW): one allocation of
 * 3*N*C doubles, mean at [nc], std at [N*C + nc], mean square at [2*N*C + nc] (the
 * caller frees it); NULL with the error set (under fn's name) when out of memory. */
static double *row_stats(const float *y, int N, int C, int HW, const char *fn)
{
    const long NC = (long)N * C;
    double *mu = malloc(3 * (size_t)NC * sizeof *mu);
    if (!mu) {
        pn_error(PN_ERR_NOMEM, "%s: out of memory (%ld rows)", fn, NC);
        return NULL;
    }
    double *sd = mu + NC, *pw = sd + NC;
    #pragma omp parallel for schedule(static) if (NC * HW >= POWER_PAR_MIN)
    for (long nc = 0; nc < NC; nc++) {
        const float *x = y + (size_t)nc * HW;
        double m, m2;
        pn_mean_m2(x, (size_t)HW, &m, &m2);
        mu[nc] = m;
        sd[nc] = sqrt(m2 / HW);
        pw[nc] = pn_sum_sqdev(x, (size_t)HW, 0.0) / HW;
    }
    return mu;
}

// y (N,C,HW)
int pn_power_terms(pn_power_decomp *out, const float *y, int N, int C, int HW)
{
    PN_CHECK_PTR(out);
    PN_CHECK_PTR(y);
    PN_CHECK_POS(N);
    PN_CHECK_POS(C);
    PN_CHECK_POS(HW);
    const long NC = (long)N * C;
    double *mu = row_stats(y, N, C, HW, __func__);
    if (!mu) return PN_ERR_NOMEM;
    double *sd = mu + NC, *pw = sd + NC;

    /* moments over the inputs of each channel, then the channel average in order */
    double t[5] = {0, 0, 0, 0, 0};
    for (int c = 0; c < C; c++) {
        double m[5];
        channel_moments(m, mu, sd, pw, N, C, c);
        const double em = m[0], vm = m[1], es = m[2], vs = m[3], ep = m[4] / N;
        t[0] += em * em;
        t[1] += vm / N;
        t[2] += es * es;
        t[3] += vs / N;
        t[4] += ep;
    }
    free(mu);
    set_channel_average(out, t, C);
    return PN_OK;
}

/* ------------------------------------------------- accumulating over batches */
int pn_power_acc_init(pn_power_acc *a, int C)
{
    PN_CHECK_PTR(a);
    memset(a, 0, sizeof *a);
    PN_CHECK_POS(C);
    a->s = calloc(5 * (size_t)C, sizeof *a->s);
    if (!a->s) return pn_error(PN_ERR_NOMEM, "%s: out of memory (%d channels)", __func__, C);
    a->C = C;
    return PN_OK;
}

void pn_power_acc_free(pn_power_acc *a)
{
    if (!a) return;
    free(a->s);
    memset(a, 0, sizeof *a);
}

// y (N,C,HW)
int pn_power_acc_add(pn_power_acc *a, const float *y, int N, int C, int HW)
{
    PN_CHECK_PTR(a);
    PN_CHECK_PTR(a->s);
    PN_CHECK_PTR(y);
    PN_CHECK_POS(N);
    PN_CHECK_POS(HW);
    PN_CHECK(C == a->C, "%s: %d channels, the accumulator has %d", __func__, C, a->C);
    const long NC = (long)N * C;
    double *mu = row_stats(y, N, C, HW, __func__);
    if (!mu) return PN_ERR_NOMEM;
    double *sd = mu + NC, *pw = sd + NC;
    /* the batch's moments per channel (two passes), merged into the running ones */
    const double na = (double)a->n, nb = (double)N, nt = na + nb;
    double *S = a->s;
    for (int c = 0; c < C; c++) {
        double m[5];
        channel_moments(m, mu, sd, pw, N, C, c);
        const double em = m[0], vm = m[1], es = m[2], vs = m[3], ep = m[4];
        const double dm = em - S[c], ds = es - S[2 * C + c];
        S[c] += dm * nb / nt;
        S[C + c] += vm + dm * dm * na * nb / nt;
        S[2 * C + c] += ds * nb / nt;
        S[3 * C + c] += vs + ds * ds * na * nb / nt;
        S[4 * C + c] += ep;
    }
    a->n += N;
    free(mu);
    return PN_OK;
}

int pn_power_acc_result(const pn_power_acc *a, pn_power_decomp *out)
{
    PN_CHECK_PTR(a);
    PN_CHECK_PTR(out);
    PN_CHECK(a->s && a->n > 0, "%s: no inputs added", __func__);
    const int C = a->C;
    const double n = (double)a->n, *S = a->s;
    double t[5] = { 0, 0, 0, 0, 0 };
    for (int c = 0; c < C; c++) {
        t[0] += S[c] * S[c];
        t[1] += S[C + c] / n;
        t[2] += S[2 * C + c] * S[2 * C + c];
        t[3] += S[3 * C + c] / n;
        t[4] += S[4 * C + c] / n;
    }
    set_channel_average(out, t, C);
    return PN_OK;
}

/* ------------------------------------------------------- a trained network */
int pn_power_model(pn_power_decomp *terms, int layers, pn_model *m, const float *x, long n,
                   int batch, int training)
{
    PN_CHECK_PTR(terms);
    PN_CHECK_PTR(m);
    PN_CHECK_PTR(x);
    PN_CHECK(n > 0 && batch > 0, "%s: n and batch must be > 0 (got %ld, %d)", __func__, n, batch);
    pn_norm_layer_info info;
    int rc = pn_model_norm_output(m, 0, &info, NULL);
    if (rc) return rc;
    PN_CHECK(layers == info.count, "%s: the model has %d norm layers, not %d", __func__, info.count,
             layers);
    const pn_model_config *cfg = pn_model_cfg(m);
    const size_t img = (size_t)cfg->in_channels * cfg->image * cfg->image;
    const int b_max = n < batch ? (int)n : batch;
    size_t ymax = 0;
    for (int l = 0; l < layers; l++) {
        if ((rc = pn_model_norm_output(m, l, &info, NULL))) return rc;
        size_t sz = (size_t)b_max * info.C * info.HW;
        if (sz > ymax) ymax = sz;
    }
    pn_power_acc *acc = calloc((size_t)layers, sizeof *acc);
    float *y = malloc(ymax * sizeof *y);
    /* a training-mode forward moves BN's running statistics: keep a copy */
    const size_t nbuf = pn_model_num_buffers(m);
    float *saved = training && nbuf ? malloc(nbuf * sizeof *saved) : NULL;
    if (!acc || !y || (training && nbuf && !saved)) {
        rc = pn_error(PN_ERR_NOMEM, "%s: out of memory", __func__);
        goto done;
    }
    if (saved) memcpy(saved, pn_model_buffers(m), nbuf * sizeof *saved);
    for (int l = 0; l < layers && rc == PN_OK; l++) {
        if ((rc = pn_model_norm_output(m, l, &info, NULL)) == PN_OK)
            rc = pn_power_acc_init(&acc[l], info.C);
    }
    for (long i = 0; i < n && rc == PN_OK; i += batch) {
        const int B = (int)(n - i < batch ? n - i : batch);
        if ((rc = pn_model_forward(m, x + (size_t)i * img, B, training, NULL))) break;
        for (int l = 0; l < layers && rc == PN_OK; l++) {
            rc = pn_model_norm_output(m, l, &info, y);
            if (rc == PN_OK) rc = pn_power_acc_add(&acc[l], y, B, info.C, info.HW);
        }
    }
    for (int l = 0; l < layers && rc == PN_OK; l++) rc = pn_power_acc_result(&acc[l], &terms[l]);
done:
    if (saved) {
        memcpy(pn_model_buffers(m), saved, nbuf * sizeof *saved);
        free(saved);
    }
    if (acc)
        for (int l = 0; l < layers; l++) pn_power_acc_free(&acc[l]);
    free(acc);
    free(y);
    return rc;
}

/* ------------------------------------------------------------------- norms */
static const char *const norm_names[PN_POWER_NORM_COUNT] = {
    "bn", "ln", "in", "gn", "ln+pn", "gn+pn", "ln+ws", "none",
};

const char *pn_power_norm_name(pn_power_norm norm)
{
    if ((int)norm < 0 || norm >= PN_POWER_NORM_COUNT) return "?";
    return norm_names[norm];
}

int pn_power_norm_parse(const char *name)
{
    if (!name) return -1;
    for (int k = 0; k < PN_POWER_NORM_COUNT; k++)
        if (strcmp(name, norm_names[k]) == 0) return k;
    return -1;
}

pn_power_net_config pn_power_net_default(void)
{
    pn_power_net_config c = {
        .width = 128, .depth = 50, .image = 16, .batch = 32, .groups = 4, .eps = 1e-5f, .seed = 0,
    };
    return c;
}

/* ------------------------------------------------------- the random network */
/* Stream purposes (rng.h numbers its own purposes 1..4; these stay clear of them). */
enum { STREAM_POWER_INPUT = 0x5057520, STREAM_POWER_CONV, STREAM_POWER_AFFINE };

#define AFFINE_STD 0.2

// src (P, H, H) -> dst (P, H+2, H+2) with a one-pixel periodic border
static void circular_pad(float *dst, const float *src, long P, int H)
{
    const int Hp = H + 2;
    #pragma omp parallel for schedule(static) if (P * Hp * Hp >= POWER_PAR_MIN)
    for (long p = 0; p < P; p++) {
        const float *s = src + (size_t)p * H * H;
        float *d = dst + (size_t)p * Hp * Hp;
        for (int i = 0; i < Hp; i++) {
            const float *row = s + (size_t)((i - 1 + H) % H) * H;
            float *o = d + (size_t)i * Hp;
            o[0] = row[H - 1];
            memcpy(o + 1, row, (size_t)H * sizeof *o);
            o[H + 1] = row[0];
        }
    }
}

// y (N,C,HW) -> out = relu(gamma_c * y + beta_c)
static void affine_relu(float *out, const float *y, const float *gamma, const float *beta,
                        int N, int C, int HW)
{
    #pragma omp parallel for schedule(static) if ((long)N * C * HW >= POWER_PAR_MIN)
    for (long nc = 0; nc < (long)N * C; nc++) {
        const float g = gamma[nc % C], b = beta[nc % C];
        const float *x = y + (size_t)nc * HW;
        float *o = out + (size_t)nc * HW;
        for (int i = 0; i < HW; i++) {
            float a = g * x[i] + b;
            o[i] = a > 0.0f ? a : 0.0f;
        }
    }
}

int pn_power_random_net(pn_power_decomp *terms, const pn_power_net_config *cfg, pn_power_norm norm)
{
    PN_CHECK_PTR(terms);
    PN_CHECK_PTR(cfg);
    PN_CHECK((int)norm >= 0 && norm < PN_POWER_NORM_COUNT, "%s: unknown norm %d", __func__, (int)norm);
    const int N = cfg->batch, C = cfg->width, H = cfg->image, depth = cfg->depth;
    PN_CHECK(N > 0 && C > 0 && H > 0 && depth > 0,
             "%s: batch, width, image, depth must be > 0 (got %d, %d, %d, %d)", __func__, N, C, H,
             depth);
    PN_CHECK(cfg->groups > 0, "%s: groups must be > 0 (got %d)", __func__, cfg->groups);
    PN_CHECK(cfg->eps >= 0.0f && isfinite(cfg->eps), "%s: eps must be finite and >= 0", __func__);
    PN_CHECK((double)N * C * (H + 2) * (H + 2) < 2e9, "%s: network too large", __func__);
    const int HW = H * H, Hp = H + 2, K = 9 * C;
    const int G = cfg->groups < C ? cfg->groups : C;
    if ((norm == PN_POWER_GN || norm == PN_POWER_GN_PN) && C % G != 0)
        return pn_error(PN_ERR_ARG, "%s: width %d is not divisible by %d groups", __func__, C, G);
    if (norm == PN_POWER_BN && (long)N * HW < 2)
        return pn_error(PN_ERR_ARG, "%s: BatchNorm needs batch * image^2 >= 2", __func__);

    const pn_conv_shape shape = {
        .N = N, .Cin = C, .H = Hp, .W = Hp, .Cout = C, .KH = 3, .KW = 3, .stride = 1, .pad = 0,
        .groups = 1,
    };
    const size_t n_act = (size_t)N * C * HW, n_pad = (size_t)N * C * Hp * Hp;
    const size_t n_w = (size_t)C * K, n_work = pn_conv2d_workspace(&shape);
    const size_t n_stat = (size_t)N * C; /* GN/IN (N,G), BN (1,C) */
    const size_t total = 2 * n_act + n_pad + 2 * n_w + n_work + 2 * n_stat + 7 * (size_t)C;
    float *mem = calloc(total, sizeof *mem);
    if (!mem) return pn_error(PN_ERR_NOMEM, "%s: out of memory (%zu floats)", __func__, total);
    float *act = mem, *z = act + n_act, *pad = z + n_act, *w = pad + n_pad, *w_hat = w + n_w;
    float *work = w_hat + n_w, *mean = work + n_work, *rstd = mean + n_stat;
    float *ws_mean = rstd + n_stat, *ws_rstd = ws_mean + C;
    float *gamma = ws_rstd + C, *beta = gamma + C, *zeros = beta + C, *pm = zeros + C, *ps = pm + C;
    float *y, *ybuf = NULL;
    int rc = PN_OK;

    /* the normalized tensor needs its own buffer except without a norm */
    if (norm != PN_POWER_NONE) {
        ybuf = malloc(n_act * sizeof *ybuf);
        if (!ybuf) {
            free(mem);
            return pn_error(PN_ERR_NOMEM, "%s: out of memory", __func__);
        }
        y = ybuf;
    } else {
        y = z;
    }

    pn_rng r = pn_rng_stream(cfg->seed, STREAM_POWER_INPUT, 0);
    for (size_t i = 0; i < n_act; i++) act[i] = (float)pn_rng_normal(&r);

    const double w_std = sqrt(2.0 / K);
    const pn_pnact_params pp = { .gamma = gamma, .beta = beta, .gamma_t = zeros, .beta_t = zeros };
    for (int l = 0; l < depth && rc == PN_OK; l++) {
        circular_pad(pad, act, (long)N * C, H);

        r = pn_rng_stream(cfg->seed, STREAM_POWER_CONV, (uint64_t)l);
        for (size_t i = 0; i < n_w; i++) w[i] = (float)(w_std * pn_rng_normal(&r));
        const float *wc = w;
        if (norm == PN_POWER_LN_WS) {
            rc = pn_ws_forward(w_hat, ws_mean, ws_rstd, w, C, K, cfg->eps);
            if (rc) break;
            wc = w_hat;
        }
        rc = pn_conv2d_forward(z, pad, wc, NULL, &shape, work);
        if (rc) break;

        switch (norm) {
        case PN_POWER_BN:
            rc = pn_batchnorm_forward_train(y, mean, rstd, NULL, NULL, z, NULL, NULL, N, C, HW, N,
                                            0.1f, cfg->eps);
            break;
        case PN_POWER_LN:
        case PN_POWER_LN_PN:
        case PN_POWER_LN_WS:
            rc = pn_groupnorm_forward(y, mean, rstd, z, NULL, NULL, N, C, HW, 1, cfg->eps);
            break;
        case PN_POWER_IN:
            rc = pn_groupnorm_forward(y, mean, rstd, z, NULL, NULL, N, C, HW, C, cfg->eps);
            break;
        case PN_POWER_GN:
        case PN_POWER_GN_PN:
            rc = pn_groupnorm_forward(y, mean, rstd, z, NULL, NULL, N, C, HW, G, cfg->eps);
            break;
        default: /* none: y is z */
            break;
        }
        if (rc) break;

        rc = pn_power_terms(&terms[l], y, N, C, HW);
        if (rc) break;
        const pn_power_decomp *t = &terms[l];
        if (!isfinite(t->sq_mean + t->var_mean + t->sq_std + t->var_std + t->power)) {
            rc = pn_error(PN_ERR_NUMERIC, "%s: %s: non-finite power at layer %d", __func__,
                          norm_names[norm], l + 1);
            break;
        }

        r = pn_rng_stream(cfg->seed, STREAM_POWER_AFFINE, (uint64_t)l);
        for (int c = 0; c < C; c++) gamma[c] = (float)(1.0 + AFFINE_STD * pn_rng_normal(&r));
        for (int c = 0; c < C; c++) beta[c] = (float)(AFFINE_STD * pn_rng_normal(&r));
        if (norm == PN_POWER_LN_PN || norm == PN_POWER_GN_PN)
            rc = pn_pnact_forward(act, pm, ps, y, pp, N, C, HW, PN_ACT_RELU, PN_PROXY_EPS);
        else
            affine_relu(act, y, gamma, beta, N, C, HW);
    }
    free(ybuf);
    free(mem);
    return rc;
}

/* ------------------------------------------------------------------- CSV */
int pn_power_write_csv(const char *path, const char *const *names,
                       const pn_power_decomp *const *terms, int n_norms, int depth,
                       int with_norm_column)
{
    PN_CHECK_PTR(path);
    PN_CHECK_PTR(names);
    PN_CHECK_PTR(terms);
    PN_CHECK_POS(n_norms);
    PN_CHECK_POS(depth);
    PN_CHECK(with_norm_column || n_norms == 1,
             "%s: several norms need the norm column", __func__);
    for (int k = 0; k < n_norms; k++) {
        PN_CHECK(names[k] && terms[k], "%s: names[%d] or terms[%d] is NULL", __func__, k, k);
        PN_CHECK(!strpbrk(names[k], ",\"\n\r"), "%s: norm name '%s' would break the CSV",
                 __func__, names[k]);
    }
    FILE *f = fopen(path, "w");
    if (!f) return pn_error(PN_ERR_IO, "%s: cannot open %s: %s", __func__, path, strerror(errno));
    fprintf(f, "%slayer,sq_mean,var_mean,sq_std,var_std\n", with_norm_column ? "norm," : "");
    for (int k = 0; k < n_norms; k++)
        for (int l = 0; l < depth; l++) {
            const pn_power_decomp *t = &terms[k][l];
            if (with_norm_column) fprintf(f, "%s,", names[k]);
            fprintf(f, "%d,%.9g,%.9g,%.9g,%.9g\n", l + 1, t->sq_mean, t->var_mean, t->sq_std,
                    t->var_std);
        }
    int bad = ferror(f);
    if (fclose(f) != 0 || bad)
        return pn_error(PN_ERR_IO, "%s: write to %s failed", __func__, path);
    return PN_OK;
}

/* ------------------------------------------------------------------ gnuplot */
/* The gnuplot executable: $PROXYNORM_GNUPLOT if set (a path), else gnuplot on $PATH. */
static int find_gnuplot(char *buf, size_t n)
{
    const char *env = getenv("PROXYNORM_GNUPLOT");
    if (env && *env) {
        if (access(env, X_OK) != 0 || strlen(env) >= n) return 0;
        strcpy(buf, env);
        return 1;
    }
    const char *path = getenv("PATH");
    if (!path || !*path) path = "/usr/local/bin:/usr/bin:/bin";
    while (*path) {
        size_t len = strcspn(path, ":");
        if (len > 0 && len + sizeof "/gnuplot" <= n) {
            memcpy(buf, path, len);
            strcpy(buf + len, "/gnuplot");
            struct stat st;
            if (stat(buf, &st) == 0 && S_ISREG(st.st_mode) && access(buf, X_OK) == 0) return 1;
        }
        path += len;
        if (*path == ':') path++;
    }
    return 0;
}

int pn_power_have_gnuplot(void)
{
    char buf[4096];
    return find_gnuplot(buf, sizeof buf);
}

/* s as a gnuplot single-quoted string ('' stands for '). */
static void gp_string(FILE *f, const char *s)
{
    fputc('\'', f);
    for (; *s; s++) {
        if (*s == '\'') fputc('\'', f);
        fputc(*s, f);
    }
    fputc('\'', f);
}

static const char *const term_titles[4] = {
    "(E_x μ_c)^2  channel-wise squared mean",
    "Var_x μ_c  variance of instance means",
    "(E_x σ_c)^2  squared mean of instance stds",
    "Var_x σ_c  variance of instance stds",
};
static const char *const term_colors[4] = { "#b2182b", "#f4a582", "#4393c3", "#053061" };

// one multiplot: a panel per norm (stacked areas, or lines on a log scale), then the legend
static void gp_multiplot(FILE *f, const char *const *names, int n_norms, int depth, int o,
                         const char *title, int log_scale)
{
    const int slots = n_norms > 1 ? n_norms + 1 : 1;
    const int cols = slots < 4 ? slots : 4, rows = (slots + cols - 1) / cols;
    fprintf(f, "set multiplot layout %d,%d", rows, cols);
    if (title && *title) {
        fputs(" title ", f);
        gp_string(f, title);
        fputs(" noenhanced font ',13'", f);
    }
    fputs("\n", f);
    /* columns: layer at 1+o, the four terms at 2+o .. 5+o */
    const int cl = 1 + o, c1 = 2 + o, c2 = 3 + o, c3 = 4 + o, c4 = 5 + o;
    for (int k = 0; k < n_norms; k++) {
        fputs("set title ", f);
        gp_string(f, names[k]);
        fprintf(f, " noenhanced font ',12'\n%s\n",
                n_norms == 1 ? "set key outside right top vertical Left reverse samplen 2 spacing 1.5"
                             : "unset key");
        const int a = k * depth, b = a + depth - 1;
        if (log_scale)
            fprintf(f,
                    "plot for [i=1:4] csv skip 1 every ::%d::%d using %d:(column(%d+i)) "
                    "with lines lw 2 lc rgb value('c'.i) title value('t'.i)\n",
                    a, b, cl, c1 - 1);
        else
            fprintf(f,
                    "plot csv skip 1 every ::%d::%d using %d:(0):%d with filledcurves lc rgb c1 title t1, \\\n"
                    "     csv skip 1 every ::%d::%d using %d:%d:($%d+$%d) with filledcurves lc rgb c2 title t2, \\\n"
                    "     csv skip 1 every ::%d::%d using %d:($%d+$%d):($%d+$%d+$%d) with filledcurves lc rgb c3 title t3, \\\n"
                    "     csv skip 1 every ::%d::%d using %d:($%d+$%d+$%d):($%d+$%d+$%d+$%d) with filledcurves lc rgb c4 title t4\n",
                    a, b, cl, c1, a, b, cl, c1, c1, c2, a, b, cl, c1, c2, c1, c2, c3, a, b, cl, c1,
                    c2, c3, c1, c2, c3, c4);
    }
    if (n_norms > 1) {
        fputs("unset title\nunset border\nunset tics\nunset xlabel\nunset ylabel\nunset grid\n"
              "unset logscale y\nset xrange [0:1]\nset yrange [0:1]\n"
              "set key center center vertical Left reverse samplen 2 spacing 1.5 font ',11'\n", f);
        if (log_scale)
            fputs("plot for [i=1:4] NaN with lines lw 2 lc rgb value('c'.i) title value('t'.i)\n", f);
        else
            fputs("plot for [i=1:4] NaN with filledcurves x1 lc rgb value('c'.i) title value('t'.i)\n", f);
    }
    fputs("unset multiplot\nset output\n", f);
}

// the axes of the data panels (set again after the legend panel changed them)
static void gp_axes(FILE *f, int depth, int log_scale)
{
    fputs("set border\nset tics\nset tics front\nset xlabel 'layer'\nset grid front lc rgb '#dddddd'\n", f);
    fprintf(f, "set xrange [1:%d]\n", depth > 1 ? depth : 2);
    if (log_scale)
        fputs("set ylabel 'power (log scale)'\nset logscale y\nset format y '10^{%L}'\n"
              "set yrange [1e-8:2]\n", f);
    else
        fputs("set ylabel 'power'\nunset logscale y\nset format y '%g'\nset yrange [0:*]\n", f);
}

static int gp_write_script(const char *gp_path, const char *csv_path, const char *prefix,
                           const char *const *names, int n_norms, int depth, int o,
                           const char *title, int log_scale)
{
    char *tmp = malloc(strlen(prefix) + 8);
    if (!tmp) return pn_error(PN_ERR_NOMEM, "pn_power_plot: out of memory");
    FILE *f = fopen(gp_path, "w");
    if (!f) {
        free(tmp);
        return pn_error(PN_ERR_IO, "pn_power_plot: cannot open %s: %s", gp_path, strerror(errno));
    }
    fputs("# Power decomposition of normalized pre-activations against depth (written by\n"
          "# `proxynorm power --plot`; docs/power.md). Run again with: gnuplot THIS_FILE\n", f);
    fputs("set encoding utf8\nset datafile separator ','\ncsv = ", f);
    gp_string(f, csv_path);
    fputs("\n", f);
    for (int i = 0; i < 4; i++) {
        fprintf(f, "c%d = '%s'\nt%d = ", i + 1, term_colors[i], i + 1);
        gp_string(f, term_titles[i]);
        fputs("\n", f);
    }
    fputs("set style fill solid 0.95 noborder\n", f);
    /* PNG (cairo when available) then SVG: the same figure twice */
    fputs("if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) {\n"
          "    set terminal pngcairo size 1200,800 enhanced font ',10' background rgb 'white'\n"
          "} else {\n"
          "    set terminal png size 1200,800 enhanced font ',10' background rgb 'white'\n"
          "}\nset output ", f);
    sprintf(tmp, "%s.png", prefix);
    gp_string(f, tmp);
    fputs("\n", f);
    gp_axes(f, depth, log_scale);
    gp_multiplot(f, names, n_norms, depth, o, title, log_scale);
    fputs("set terminal svg size 1200,800 enhanced font 'Helvetica,10' background rgb 'white'\n"
          "set output ", f);
    sprintf(tmp, "%s.svg", prefix);
    gp_string(f, tmp);
    fputs("\n", f);
    free(tmp);
    gp_axes(f, depth, log_scale);
    gp_multiplot(f, names, n_norms, depth, o, title, log_scale);
    int bad = ferror(f);
    if (fclose(f) != 0 || bad) return pn_error(PN_ERR_IO, "pn_power_plot: write to %s failed", gp_path);
    return PN_OK;
}

/* Runs gnuplot with its stdout and stderr in a temporary file (the library
 * does not print); on failure the start of what it said goes into the error. */
static int run_gnuplot(const char *gnuplot, char *const argv[], const char *script)
{
    FILE *log = tmpfile();
    if (!log) return pn_error(PN_ERR_IO, "pn_power_plot: tmpfile: %s", strerror(errno));
    posix_spawn_file_actions_t fa;
    int rc = PN_OK, err = posix_spawn_file_actions_init(&fa);
    if (err == 0) {
        err = posix_spawn_file_actions_adddup2(&fa, fileno(log), STDOUT_FILENO);
        if (err == 0) err = posix_spawn_file_actions_adddup2(&fa, fileno(log), STDERR_FILENO);
        pid_t pid;
        if (err == 0) err = posix_spawn(&pid, gnuplot, &fa, NULL, argv, environ);
        posix_spawn_file_actions_destroy(&fa);
        if (err == 0) {
            int status = 0;
            pid_t w;
            while ((w = waitpid(pid, &status, 0)) < 0 && errno == EINTR) {}
            if (w < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
                char msg[240] = "";
                rewind(log);
                size_t n = fread(msg, 1, sizeof msg - 1, log);
                msg[n] = '\0';
                for (size_t i = 0; i < n; i++)
                    if (msg[i] == '\n' || msg[i] == '\r') msg[i] = ' ';
                rc = pn_error(PN_ERR_IO, "pn_power_plot: gnuplot failed on %s: %s", script, msg);
            }
        }
    }
    if (err != 0) rc = pn_error(PN_ERR_IO, "pn_power_plot: cannot run %s: %s", gnuplot, strerror(err));
    fclose(log);
    return rc;
}

static int file_nonempty(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0;
}

int pn_power_plot_titled(const char *csv_path, const char *prefix, const char *const *names,
                         int n_norms, int depth, int with_norm_column, const char *title,
                         int log_scale)
{
    PN_CHECK_PTR(csv_path);
    PN_CHECK_PTR(prefix);
    PN_CHECK_PTR(names);
    PN_CHECK_POS(n_norms);
    PN_CHECK_POS(depth);
    PN_CHECK(*prefix, "pn_power_plot: empty prefix");
    PN_CHECK(with_norm_column || n_norms == 1, "pn_power_plot: several norms need the norm column");
    PN_CHECK(!strpbrk(csv_path, "\n\r") && !strpbrk(prefix, "\n\r") && (!title || !strpbrk(title, "\n\r")),
             "pn_power_plot: paths and title must not contain newlines");
    for (int k = 0; k < n_norms; k++) {
        PN_CHECK_PTR(names[k]);
        PN_CHECK(!strpbrk(names[k], "\n\r"), "pn_power_plot: norm name with a newline");
    }
    char gnuplot[4096];
    if (!find_gnuplot(gnuplot, sizeof gnuplot))
        return pn_error(PN_ERR_IO, "gnuplot not found (install the gnuplot-nox package, "
                                   "or set PROXYNORM_GNUPLOT to its path)");
    const size_t plen = strlen(prefix) + 8;
    char *gp = malloc(3 * plen);
    if (!gp) return pn_error(PN_ERR_NOMEM, "pn_power_plot: out of memory");
    char *png = gp + plen, *svg = png + plen;
    sprintf(gp, "%s.gp", prefix);
    sprintf(png, "%s.png", prefix);
    sprintf(svg, "%s.svg", prefix);
    int rc = gp_write_script(gp, csv_path, prefix, names, n_norms, depth, with_norm_column ? 1 : 0,
                             title, log_scale);
    if (rc == PN_OK) {
        remove(png);
        remove(svg);
        char *argv[] = { gnuplot, gp, NULL };
        rc = run_gnuplot(gnuplot, argv, gp);
        if (rc == PN_OK && (!file_nonempty(png) || !file_nonempty(svg)))
            rc = pn_error(PN_ERR_IO, "pn_power_plot: gnuplot did not write %s and %s", png, svg);
    }
    free(gp);
    return rc;
}

int pn_power_plot(const char *csv_path, const char *prefix, const char *const *names,
                  int n_norms, int depth, int with_norm_column)
{
    return pn_power_plot_titled(csv_path, prefix, names, n_norms, depth, with_norm_column, NULL, 0);
}
