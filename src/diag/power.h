/* Power decomposition of normalized activations (the paper's "power plots",
 * docs/proxy-norm.md, "Diagnostics") and the paper's random network.
 *
 * For a tensor y (N,C,HW) — N inputs x, C channels, HW spatial positions —
 * with mu_c(x), sigma_c(x) the mean and population standard deviation of
 * channel c over the HW positions of input x, the power of channel c splits as
 *
 *   E[y_c^2] = (E_x mu_c)^2 + Var_x mu_c + (E_x sigma_c)^2 + Var_x sigma_c
 *
 * (E_x, Var_x over the N inputs, population variance). Each term below is
 * averaged over the C channels. Same conventions as proxynorm.h: PN_OK or a
 * negative pn_status with pn_last_error() set; the library never prints. */
#ifndef PN_DIAG_POWER_H
#define PN_DIAG_POWER_H

#include <stdint.h>

#include "nn/model.h"
#include "proxynorm.h"

typedef struct {
    double sq_mean;  /* mean_c (E_x mu_c)^2      channel-wise squared mean          */
    double var_mean; /* mean_c Var_x mu_c        variance of instance means         */
    double sq_std;   /* mean_c (E_x sigma_c)^2   squared mean of instance stds      */
    double var_std;  /* mean_c Var_x sigma_c     variance of instance stds          */
    double power;    /* mean_c E[y_c^2], computed directly (equals the sum of the four) */
} pn_power_decomp;

/* The four terms (and the direct power) of y (N,C,HW), accumulated in double.
 * Needs N >= 1, C >= 1, HW >= 1. */
int pn_power_terms(pn_power_decomp *out, const float *y, int N, int C, int HW);

/* ------------------------------------------------------ the random network */
typedef enum {
    PN_POWER_BN = 0,   /* BatchNorm, statistics of the whole batch, random affine, ReLU */
    PN_POWER_LN,       /* LayerNorm (GN, G = 1), random affine, ReLU                   */
    PN_POWER_IN,       /* InstanceNorm (GN, G = C), random affine, ReLU                */
    PN_POWER_GN,       /* GroupNorm, G = min(groups, C), random affine, ReLU            */
    PN_POWER_LN_PN,    /* LN without affine, then PN-Act (ReLU) with the random affine  */
    PN_POWER_GN_PN,    /* GN without affine, then PN-Act (ReLU) with the random affine  */
    PN_POWER_LN_WS,    /* Weight Standardization of the conv, LN, random affine, ReLU   */
    PN_POWER_NONE,     /* no normalization: random affine and ReLU after the conv       */
    PN_POWER_NORM_COUNT
} pn_power_norm;

/* The norms of `--norm all` (every one but "none"), in this order. */
#define PN_POWER_NORM_ALL 7

/* "bn", "ln", "in", "gn", "ln+pn", "gn+pn", "ln+ws", "none"; parse: -1 if unknown. */
const char *pn_power_norm_name(pn_power_norm norm);
int pn_power_norm_parse(const char *name);

typedef struct {
    int width;     /* channels of every layer (and of the Gaussian input)   */
    int depth;     /* number of layers                                      */
    int image;     /* spatial size: inputs are image x image                */
    int batch;     /* number of inputs x                                    */
    int groups;    /* GN groups (G = min(groups, width); must divide width) */
    float eps;     /* epsilon of BN/LN/IN/GN                                */
    uint64_t seed; /* everything random derives from it                     */
} pn_power_net_config;

/* width 128, depth 50, image 16, batch 32, groups 4, eps 1e-5, seed 0. */
pn_power_net_config pn_power_net_default(void);

/* Runs the paper's random network with `norm` and writes terms[l] (depth
 * entries) for the normalized pre-activation of layer l (after the Norm,
 * before the affine). Each layer: 3x3 convolution with circular padding and
 * He weights N(0, 2/(9 width)), the Norm, the per-channel affine with
 * gamma ~ N(1, 0.2^2), beta ~ N(0, 0.2^2), then ReLU (or PN-Act(ReLU) with
 * that affine and beta_t = gamma_t = 0 for the +pn norms). The input is
 * N(0,1) of shape (batch, width, image, image). The input, the conv weights
 * and the affine of layer l are the same for every norm for a given seed, and
 * the result is the same run to run for a given thread count. */
int pn_power_random_net(pn_power_decomp *terms, const pn_power_net_config *cfg, pn_power_norm norm);

/* ------------------------------------------------- accumulating over batches */
/* The same terms as pn_power_terms over inputs that arrive in batches (the inputs
 * of all the batches together), for data sets too large to hold y at once: per
 * channel, the running mean and sum of squared deviations of the instance means
 * and stds (Chan et al.'s pairwise update, double) and the summed power. */
typedef struct {
    int C;
    long n;     /* inputs added so far */
    double *s;  /* (5, C): mean mu, M2 mu, mean sigma, M2 sigma, sum of E_p[y^2] */
} pn_power_acc;

int pn_power_acc_init(pn_power_acc *a, int C);
void pn_power_acc_free(pn_power_acc *a);
/* Adds the N inputs of y (N,C,HW); C must be the accumulator's. */
int pn_power_acc_add(pn_power_acc *a, const float *y, int N, int C, int HW);
/* The terms of everything added (needs at least one input). */
int pn_power_acc_result(const pn_power_acc *a, pn_power_decomp *out);

/* ------------------------------------------------------- a trained network */
/* The terms of every norm layer of the model (terms[l] for norm layer l, in
 * forward order; `layers` must be the model's norm count, pn_model_norm_output)
 * over the n images x (n, c, h, w), fed `batch` at a time. training = 0: the
 * forward of inference (BN with its running statistics); 1: BN normalizes with
 * the statistics of each batch (its normalization batches), and its running
 * statistics are restored afterwards. Parameters and buffers are left as they
 * were; the activations of the last forward are overwritten. */
int pn_power_model(pn_power_decomp *terms, int layers, pn_model *m, const float *x, long n,
                   int batch, int training);

/* ------------------------------------------------------------- CSV, plots */
/* Writes one row per (norm, layer): "norm,layer,sq_mean,var_mean,sq_std,var_std"
 * with layers numbered from 1. terms[k] holds `depth` entries for names[k].
 * With one norm and with_norm_column 0, the norm column is left out. */
int pn_power_write_csv(const char *path, const char *const *names,
                       const pn_power_decomp *const *terms, int n_norms, int depth,
                       int with_norm_column);

/* 1 if a gnuplot executable is found (PROXYNORM_GNUPLOT, or gnuplot on PATH). */
int pn_power_have_gnuplot(void);

/* Draws the CSV written by pn_power_write_csv (the same names, n_norms, depth
 * and with_norm_column) as stacked areas of the four terms against depth, one
 * panel per norm: writes the gnuplot script PREFIX.gp and runs gnuplot on it,
 * which writes PREFIX.png (1200x800) and PREFIX.svg. PN_ERR_IO if gnuplot is
 * missing or fails. */
int pn_power_plot(const char *csv_path, const char *prefix, const char *const *names,
                  int n_norms, int depth, int with_norm_column);
/* The same with a figure title (NULL: none); log_scale != 0 draws the four
 * terms as lines on a logarithmic axis (1e-8 .. 2) instead of stacked areas,
 * which shows the terms that are zero up to rounding (IN, BN). */
int pn_power_plot_titled(const char *csv_path, const char *prefix, const char *const *names,
                         int n_norms, int depth, int with_norm_column, const char *title,
                         int log_scale);

#endif
