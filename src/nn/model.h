/* CNN models built from the kernels: pre-activation ResNets (basic blocks for small
 * images, bottleneck ResNet-50/101, ResNeXt), one engine for every architecture
 * (src/nn/build.h: the builder API; src/nn/arch_*.c: the architectures).
 *
 * All parameters live in one allocation (params), gradients in a second of the
 * same layout (grads); a table names every tensor ("stage2.block0.conv1.weight")
 * so that the optimizer, gradient norms and checkpoints are flat loops. Buffers
 * (BN running statistics) live in a third allocation with their own table.
 * Activations are allocated once for the largest batch seen (no allocation
 * inside a step at a fixed batch size). */
#ifndef PN_MODEL_H
#define PN_MODEL_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    PN_NORM_NONE, PN_NORM_BN, PN_NORM_GN, PN_NORM_LN, PN_NORM_IN,
    PN_NORM_GN_PN, PN_NORM_LN_PN, PN_NORM_LN_WS,
} pn_norm_kind;

/* "none" "bn" "gn" "ln" "in" "gn+pn" "ln+pn" "ln+ws"; parse returns -1 if unknown. */
const char *pn_norm_name(pn_norm_kind k);
int pn_norm_parse(const char *s);

typedef struct {
    char arch[32];      /* "resnet20" (6n+2, basic blocks), "resnet50", "resnext50_32x4d", ...
                         * (pn_arch_valid; the list: pn_arch_help) */
    pn_norm_kind norm;
    int groups;         /* GN groups (capped at the channel count); default 4 */
    int norm_batch;     /* BN normalization batch (0: the whole micro-batch) */
    int width;          /* base width (channels of stage 1); default 16 */
    int in_channels, image, classes;
} pn_model_config;

/* Fills defaults: resnet20, gn+pn, groups 4, width 16, 1x28x28, 10 classes. */
void pn_model_config_default(pn_model_config *c);

/* 1 if some architecture builds this name. */
int pn_arch_valid(const char *arch);
/* The names accepted, for messages ("resnetD with D = 6n+2 ...; resnet50, ..."). */
const char *pn_arch_help(void);
/* The default width of arch at this image size (e.g. 64 for resnet50 at >= 64 px, else 16). */
int pn_model_default_width(const char *arch, int image);

typedef struct {
    char name[80];
    int ndim;
    int shape[4];
    size_t offset, numel; /* in floats, into params/grads (or buffers) */
    int decay;            /* 1: weight decay applies (conv/linear weights, PN beta_t/gamma_t) */
} pn_tensor_info;

typedef struct pn_model pn_model;

/* Builds the model and initializes parameters from seed (He init for convolutions,
 * PyTorch's default for the linear layer, norms at identity, PN at its init). Errors
 * (PN_ERR_ARG with a message): unknown arch, a GroupNorm group count that does not
 * divide a layer's channels, an image too small for the architecture, ... */
int pn_model_create(pn_model **out, const pn_model_config *cfg, uint64_t seed);
void pn_model_free(pn_model *m);
const pn_model_config *pn_model_cfg(const pn_model *m);

/* Flat parameters and gradients (same layout), and their table. */
float *pn_model_params(pn_model *m);
float *pn_model_grads(pn_model *m);
size_t pn_model_num_params(const pn_model *m);
const pn_tensor_info *pn_model_param_table(const pn_model *m, int *count);
/* Buffers (BN running mean/var), not trained by SGD. */
float *pn_model_buffers(pn_model *m);
size_t pn_model_num_buffers(const pn_model *m);
const pn_tensor_info *pn_model_buffer_table(const pn_model *m, int *count);

/* Multiply-accumulates per image of the forward pass (convolutions and linear). */
double pn_model_macs(const pn_model *m);
/* Parameters of the convolutions and linear layers (weights and biases), no norms. */
size_t pn_model_conv_linear_params(const pn_model *m);

/* Norm layers, in forward order. After a forward, input/output point to the layer's
 * input and output of the last batch (batch images, (C, H, W) each; output is NULL when
 * the engine recomputes it in the backward instead of keeping it, pn_model_set_recompute), mean/rstd to its
 * statistics (nstat floats: (batch, groups) for the GroupNorm family, (batch/g, C) for
 * BatchNorm with normalization batch g; NULL for --norm none). Before any forward
 * those pointers are NULL and batch is 0. The visitor returns 0 to go on; anything
 * else stops the walk and is returned. */
typedef struct {
    const char *name;     /* parameter prefix, e.g. "stage2.block0.norm1" */
    int index;            /* op index */
    int C, H, W, groups;  /* groups: GroupNorm family (LN 1, IN C); 0 for BN / none */
    int has_act;          /* 1: norm + activation (PN-Act for +pn), 0: norm only */
    int batch;
    const float *input, *output, *mean, *rstd;
    size_t nstat;
} pn_norm_info;
typedef int (*pn_norm_visitor)(void *ctx, const pn_norm_info *ni);
int pn_model_visit_norms(const pn_model *m, pn_norm_visitor fn, void *ctx);

/* Forward of B images x (B, in_channels, image, image). training = 1 uses batch
 * statistics for BN (and updates its running statistics), 0 the running ones.
 * Returns a pointer to the logits (B, classes), owned by the model. */
int pn_model_forward(pn_model *m, const float *x, int B, int training, const float **logits);
/* Cross-entropy of the last forward: *loss_sum = sum over the B samples, *correct
 * = number right. Saves what the backward needs. */
int pn_model_loss(pn_model *m, const int *labels, float smoothing, double *loss_sum, int *correct);
/* Backward of the last forward+loss; the loss is scaled by `scale` (1/B_total for a
 * mean over the optimization batch). Gradients ACCUMULATE into grads. */
int pn_model_backward(pn_model *m, float scale);
void pn_model_zero_grad(pn_model *m);
/* One training pass over B images in micro-batches of `micro` (micro divides B): for each
 * micro-batch pn_model_forward (training), pn_model_loss and pn_model_backward(scale), the
 * gradients accumulated into the model's; loss_sum and correct: sums over the B images.
 * With more than one thread (pn_get_threads) and pn_model_replicable, the work is split over
 * the threads, each running its own copy of the model (created at the first pass and kept;
 * the parameters copied in at every pass) with single-threaded kernels and no
 * synchronization: T contiguous runs of whole micro-batches when there are at least T of
 * them; else, for the per-sample norms (all but BN), each micro-batch's images in T
 * contiguous ranges (BN then stays on the one model). The copies' gradients are added in
 * thread order, and BN's running statistics combined as one run over the micro-batches in
 * order would have left them (the updates are linear): the same mathematics, other rounding
 * than one model with threaded kernels, deterministic for a given thread count. Otherwise
 * exactly the three calls per micro-batch. Afterwards the model's last forward is only that
 * of the first thread's last part (call pn_model_forward for outputs). */
int pn_model_train_pass(pn_model *m, const float *x, const int *labels, int B, int micro, float smoothing,
                        float scale, double *loss_sum, int *correct);
/* 1 when pn_model_train_pass may use copies of the model: every op one of the built-in kinds
 * (no stochastic layer such as EfficientNet's drop path), not folded, no sync-BN hooks, no
 * PROXYNORM_PROFILE (its op times are those of one model). */
int pn_model_replicable(const pn_model *m);
/* Bytes of activation memory currently allocated. */
size_t pn_model_activation_bytes(const pn_model *m);
/* Recomputation of activations in the backward (default on; PROXYNORM_RECOMPUTE=0 in the
 * environment when the model is created turns it off): the outputs of the norm layers
 * (norm + activation) are not kept from the forward to the backward but written again
 * from the norm's input and saved statistics just before the backward first reads them,
 * bit for bit as the forward wrote them (same gradients, same training), in memory that
 * buffers living at other times also use: less activation memory for one extra
 * normalize pass per norm. Not for BN through pn_model_set_bn_override, nor folded models.
 * Takes effect at the next forward. */
int pn_model_set_recompute(pn_model *m, int on);
/* Values the last forward's plan recomputes in the backward (0 before any forward). */
int pn_model_recomputed_values(const pn_model *m);
/* Unstored values (default on with recomputation; PROXYNORM_UNSTORE=0 when the model is
 * created turns it off): a recomputed norm + ReLU output whose readers are all direct 3x3
 * convolutions is not even written in training: the forward computes the statistics only,
 * and each reading convolution fills its padded input planes from the norm's input and
 * those statistics, in its forward and again in its backward (pn_conv_src), bit for bit the
 * same floats. Saves the output pass and the recomputation pass. Takes effect at the next
 * forward. */
int pn_model_set_unstore(pn_model *m, int on);
/* Values the last forward's plan leaves unstored in training (0 before any forward). */
int pn_model_unstored_values(const pn_model *m);
/* The activation arena (pn_model_activation_bytes) is planned over the timeline of a
 * training step: buffers live at different times share memory, so the backward's gradient
 * buffers and every op's workspace reuse the memory of activations whose backward is over.
 * As PyTorch frees its graph in the backward (unless retain_graph), a forward then allows
 * one backward: a second one fails, and pn_model_visit_norms / pn_model_norm_output find no
 * activations, until the next forward. Retaining them (on; PROXYNORM_RETAIN_ACTIVATIONS=1
 * when the model is created) keeps every activation until the next forward, for repeated
 * backwards, at the cost of that memory. Training is bit for bit the same either way.
 * Takes effect at the next forward. */
int pn_model_set_retain_activations(pn_model *m, int on);

/* Inference folding (exact up to float rounding; the model becomes inference-only:
 * training-mode forwards and the backward are refused):
 *   bn:           a BN whose input is a convolution's output read by nothing else is folded
 *                 into that convolution (weight * a, bias a * b0 + b per output channel, from
 *                 the running statistics); the norm becomes the bare ReLU. The other BNs (the
 *                 pre-activation norms after residual adds) stay per-channel affines + ReLU.
 *   gn+pn, ln+pn: PN-Act's post-activation affine s * relu(u) - s * m (s > 0) becomes
 *                 relu(s * u) - s * m, folded into the norm's affine (GN with weight s*gamma,
 *                 bias s*beta: the proxy statistics disappear), and the shift -s*m is folded
 *                 into the biases of the consumers when every consumer is a 1x1 convolution
 *                 (no padding: exact) or a global average pool feeding linear layers; before a
 *                 padded 3x3 convolution it stays (zero padding would make it inexact).
 *   Other norms (and PN with an activation other than ReLU) have nothing to fold.
 * *nfolded (may be NULL): norm layers folded. Parameters and buffers are not changed
 * (folded copies are kept), so a checkpoint saved afterwards is the unfolded model. */
int pn_model_fold(pn_model *m, int *nfolded);

/* Replaces BatchNorm's training forward and backward (same arguments as
 * pn_batchnorm_forward_train with norm_batch = the whole batch, and
 * pn_batchnorm_backward), e.g. by synchronized BN across processes
 * (src/dist/syncbn.h). Evaluation keeps the running statistics. NULL restores
 * the built-in kernels. Needs norm_batch 0. */
typedef struct {
    int (*forward)(void *ctx, float *out, float *mean, float *rstd, float *running_mean,
                   float *running_var, const float *inp, const float *weight, const float *bias,
                   int N, int C, int HW, float momentum, float eps);
    int (*backward)(void *ctx, float *dinp, float *dweight, float *dbias, const float *dout,
                    const float *inp, const float *mean, const float *rstd, const float *weight,
                    int N, int C, int HW);
    void *ctx;
} pn_bn_override;
int pn_model_set_bn_override(pn_model *m, const pn_bn_override *o);

/* ---- Diagnostics: the normalized pre-activations of the last forward ----
 * (used by the power decomposition, src/diag/power.h). Norm layers are numbered
 * in forward order: stage1.block0.norm1, stage1.block0.norm2, ..., final.norm. */
typedef struct {
    char name[80];  /* "stage1.block0.norm1", ..., "final.norm" */
    int count;      /* number of norm layers of the model */
    int C, HW;      /* channels and positions (H*W) of the layer */
    int B;          /* batch of the last forward (0: no forward yet) */
    int G;          /* groups of the GroupNorm family (LN 1, IN C); 0 for BN and none */
    int training;   /* 1: the last forward used batch statistics (BN), 0: running ones */
} pn_norm_layer_info;
/* Fills *info (may be NULL) for norm layer i (0 <= i < info->count) and, if y is
 * not NULL, writes y (B, C, HW): the layer's input after the Norm and before any
 * affine, computed from the input and the statistics of the last forward:
 * GN family (gn, ln, in, ln+ws, and the GN inside gn+pn, ln+pn) (x - mean) * rstd
 * over its groups; BN (x - mean) * rstd over its normalization batches after a
 * training forward, (x - running_mean) / sqrt(running_var + eps) after an
 * evaluation forward; none: the input itself. y needs a forward first. */
int pn_model_norm_output(const pn_model *m, int i, pn_norm_layer_info *info, float *y);

/* The random stream of the model's stochastic layers (EfficientNet's drop path,
 * src/nn/arch_effnet.c) for the next training forwards: the masks are drawn from
 * (seed, step, layer, k), k counting the training forwards since this call. The
 * trainer calls it before every micro-batch with step = update * 65536 + the index of
 * the micro-batch in the global batch, so the masks are the same for any number of
 * processes and a resumed run draws the same masks as an uninterrupted one. Without
 * a call: seed 0, step 0. Models without stochastic layers ignore it. */
int pn_model_set_step(pn_model *m, uint64_t seed, uint64_t step);

#endif
