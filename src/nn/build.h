/* Internal model-building API (not part of the public header).
 *
 * A model is a list of ops over values. A value is an activation tensor of shape
 * (C, H, W) per sample; value 0 is the input image. Each op reads up to
 * PN_OP_MAX_IN values and writes one new value. The engine (src/nn/model.c) plans
 * one arena for all values and every op's saved state once per batch size, runs
 * the ops in order for the forward and in reverse for the backward, and plans the
 * gradient buffers (a small pool, reused as values die).
 *
 * An architecture is one builder function in its own file (src/nn/arch_*.c),
 * listed once in src/nn/arch_registry.c:
 *
 *     static int build(pn_builder *b, const pn_model_config *c)
 *     {
 *         pn_val x = pn_b_input(b);
 *         x = pn_b_conv(b, x, "stem.conv", c->width, 3, 1, 1, 0);
 *         x = pn_b_norm_act(b, x, "final.norm", PN_ACT_RELU);
 *         x = pn_b_gap(b, x);
 *         x = pn_b_linear(b, x, "fc", c->classes);
 *         return pn_b_status(b);
 *     }
 *     const pn_arch pn_arch_mynet = { "mynet", "mynet (a one-layer example)", match, build, NULL };
 *
 * Builder calls register parameters in call order (the order of the parameter
 * table, of the checkpoint, and of the initialization random stream) and create
 * ops in call order (the order of the forward). On an error a builder call
 * records it (pn_b_status) and returns -1; later calls given -1 return -1, so an
 * architecture can check once at the end. The last value must be (classes, 1, 1).
 *
 * New kinds of op (squeeze-excitation, drop-path, ...) need no change to the
 * engine: define a pn_op_vt and create the op with pn_b_op (see its comment). */
#ifndef PN_NN_BUILD_H
#define PN_NN_BUILD_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/layers.h"
#include "nn/arena.h"
#include "nn/model.h"
#include "proxynorm.h"

#define PN_NONE ((size_t)-1)
#define PN_OP_MAX_IN 3
#define PN_OP_MAX_P 8

typedef int pn_val;        /* index of a value; -1 after an error */
typedef struct pn_builder pn_builder;
typedef struct pn_op pn_op;
typedef struct pn_arch pn_arch;

/* Parameter initializations (pn_b_param). */
enum {
    PN_INIT_HE,      /* N(0, 2 / fan_in), fan_in = numel / shape[0] (convolutions) */
    PN_INIT_UNIFORM, /* U(-1/sqrt(fan), 1/sqrt(fan)), fan given (PyTorch's Linear default) */
    PN_INIT_ONE,
    PN_INIT_ZERO,
};

/* Flags of pn_b_conv. */
enum {
    PN_CONV_BIAS = 1,  /* a bias "<name>.bias" (init U(+-1/sqrt(fan_in)), no decay) */
    PN_CONV_NO_WS = 2, /* never weight-standardized (ln+ws standardizes every other conv) */
};

/* Arguments of an op's forward and backward. in[k] are the input values (B, C_k, H_k, W_k),
 * out the output value. In the backward, din[k] is NULL when input k needs no gradient
 * (the model input); otherwise the op WRITES it (the engine accumulates when a value has
 * several consumers). dout may be used as scratch only by ops with PN_OP_CLOBBERS_DOUT.
 * Unstored values (training only, see pn_op_vt.can_unstore): src[k] non-NULL means input
 * k is given by its producer's planes (in[k] is NULL); virt_out: this forward computes
 * what its output needs (statistics) but does not write the output. */
typedef struct {
    const float *in[PN_OP_MAX_IN];
    const pn_conv_src *src[PN_OP_MAX_IN];
    float *out;
    int B, training, virt_out;
} pn_fwd_args;

typedef struct {
    float *din[PN_OP_MAX_IN];
    float *dout;
    const float *in[PN_OP_MAX_IN];
    const pn_conv_src *src[PN_OP_MAX_IN];
    const float *out; /* NULL when the output is unstored */
    int B;
} pn_bwd_args;

enum {
    PN_OP_CLOBBERS_DOUT = 1, /* backward overwrites dout */
    PN_OP_PASS_GRAD = 2,     /* the gradient of every input is dout (residual add): no backward call */
    PN_OP_IS_CONV = 4,       /* counted by pn_model_macs / conv_linear_params, WS applies */
    PN_OP_IS_NORM = 8,       /* visited by pn_model_visit_norms */
    PN_OP_IS_LINEAR = 16,
};

/* An op kind. saved: floats of arena memory the op keeps for batch B (its statistics
 * etc.; op->save points to them during forward and backward). work: floats of the
 * shared scratch (m->work) it needs at batch B. Either may be NULL (0). macs: per image
 * (NULL: 0).
 * recompute (optional, with can_recompute): rewrites a->out, the op's output of the last
 * forward, from its inputs a->in, op->save and the parameters, bit for bit as the forward
 * wrote it, without new statistics or other side effects (a->training: that forward's
 * mode). The engine then keeps the output only while the forward needs it and calls
 * recompute in the backward before the output's first reader there (src/nn/model.c).
 * can_recompute: 1 when recompute works for this op in the model's present state (it is
 * asked again whenever the arena is planned). Both NULL: the output is always stored.
 * Unstored outputs (optional; training only): a recomputed output whose every reader takes
 * it as planes (accepts_src) need not be written at all: can_unstore(m, op) says the op
 * can skip it (its forward with a->virt_out computes statistics only, its backward does
 * not read the output); plane(m, op, in0, B, n, c, H, W, dst, ld) writes plane (n, c) of
 * the output of the last training forward (H rows of W, ld apart) from in0 (its input
 * 0) and op->save, bit for bit as the forward would have. accepts_src(m, op, k): the op
 * takes input k as planes (a->src[k]) in its forward and backward. */
typedef struct {
    const char *kind;
    size_t (*saved)(const pn_model *m, const pn_op *op, int B);
    size_t (*work)(const pn_model *m, pn_op *op, int B);
    int (*forward)(pn_model *m, pn_op *op, const pn_fwd_args *a);
    int (*backward)(pn_model *m, pn_op *op, const pn_bwd_args *a);
    double (*macs)(const pn_model *m, const pn_op *op);
    unsigned flags;
    int (*can_recompute)(const pn_model *m, const pn_op *op);
    int (*recompute)(pn_model *m, pn_op *op, const pn_fwd_args *a);
    int (*can_unstore)(const pn_model *m, const pn_op *op);
    void (*plane)(const pn_model *m, const pn_op *op, const float *in0, int B, int n, int c, int H,
                  int W, float *dst, int ld);
    int (*accepts_src)(const pn_model *m, const pn_op *op, int k);
} pn_op_vt;

/* One op. Fields below `attributes` are free for the op kind to use. */
struct pn_op {
    const pn_op_vt *vt;
    char name[72];             /* parameter prefix, e.g. "stage1.block0.norm1" */
    int nin, in[PN_OP_MAX_IN], out;
    size_t p[PN_OP_MAX_P];     /* parameter offsets into params/grads (PN_NONE if absent) */
    size_t buf[2];             /* buffer offsets (BN running mean, var) */
    float *save;               /* arena: vt->saved(B) floats, valid after a forward */
    float *wk[2];              /* arena: this op's workspace in its forward, its backward */
    size_t wkn;                /* floats of each (vt->work(B)) */
    /* attributes */
    pn_conv_shape cs;          /* convolution (N set per call) */
    float *what, *wmean, *wrstd; /* ln+ws: standardized weight (O,K), mean, rstd (O) */
    int C, HW, G;              /* norms: channels, H*W, groups (0: BatchNorm / none) */
    pn_act act;
    int iattr[8];
    float fattr[4];
    /* inference folding (pn_model_fold; owned by the op, NULL until folded): folded weight
     * and bias of a conv / linear, and a norm's folded per-channel affine and shift */
    float *fw, *fb, *fold;
    int fold_mode; /* norms: 0 unfolded, 1 activation only (BN folded into the conv before),
                    * 2 GN/LN + folded affine + ReLU (- shift unless folded forward) */
};

typedef struct {
    int C, H, W;
    float *data;   /* arena; after a forward, the value of the last batch */
    int producer;  /* op index, -1 for the input */
    int alias;     /* storage shared with this earlier value (in-place add), or -1 */
    int consumers; /* number of op inputs reading it */
    int dead;      /* overwritten in place: may not be read again */
    int aliased;   /* a later value shares its storage */
    int norm_in;   /* read by a norm op (whose diagnostics read it after the forward) */
    int last_use;  /* last op reading it (forward order), -1 if none */
    int last_bwd;  /* last op with a backward call reading it (not PN_OP_PASS_GRAD), -1 if none */
    int recomp;    /* recomputed in the backward (plan_recompute) */
    int fresh;     /* backward: recomputed already (recomp) */
    int unstored;  /* training: never written, its readers take it as its producer's planes */
} pn_value;

/* The model (the engine's state; arch files and op kinds may read it). */
struct pn_model {
    pn_model_config cfg;

    pn_op *ops;
    int nops;
    pn_value *vals;
    int nvals;

    pn_tensor_info *ptab, *btab;
    unsigned char *pinit, *binit; /* PN_INIT_* of every parameter / buffer tensor */
    double *pfan;                 /* fan of PN_INIT_UNIFORM */
    int np, nb;
    size_t nparams, nbuffers;
    float *params, *grads, *buffers;

    /* ln+ws: standardized weights of every standardized conv, and a dw_hat scratch */
    float *ws_mem, *dwhat;

    /* activation arena */
    float *arena;
    size_t arena_bytes;
    int plan_B;
    int plan_threads; /* pn_get_threads() the workspace was sized for */
    size_t work_floats; /* of work: the running op's workspace (its wk[], set per call) */
    float *work, *probs;
    int *labels;
    int recompute;    /* recompute outputs in the backward (PROXYNORM_RECOMPUTE, default 1) */
    int unstore;      /* leave recomputed values read only as planes unstored (PROXYNORM_UNSTORE) */
    /* backward schedule (run_backward): gradient buffer of each value (gb), references of
     * each buffer (gref); every buffer taken in a backward is its own arena item: its
     * value's floats per image, live from the backward op that takes it to the one that
     * gives it back (simulated at create: nev buffers) */
    int nev, gcap;
    float **pool;
    int *gb, *gref;
    size_t *ev_numel;
    int *ev_t;        /* ev_t[2k], ev_t[2k+1]: the times buffer k is taken, given back */
    /* the plan's items (src/nn/arena.h; capacity at create), where each goes, scratch */
    pn_arena_item *items;
    int nitems, *item_iv, *item_kind, *item_idx, *item_order;
    int retain;       /* activations stay until the next forward, not only until their backward
                       * (pn_model_set_retain_activations) */
    int acts_stale;   /* a backward ran since the last forward: values may be overwritten */

    int folded; /* pn_model_fold was applied: inference only */

    /* state of the last forward/loss */
    int fwd_B, fwd_training, have_loss;
    float smoothing;
    pn_bn_override bn_ovr; /* forward NULL: built-in BN */

    /* PROXYNORM_PROFILE set at creation: seconds in each op's forward and backward
     * (prof_t[2*i], prof_t[2*i+1]), printed to stderr by pn_model_free */
    double *prof_t;

    /* pn_model_train_pass: the architecture (for the replicas), and the replicas of the
     * model that the threads after the first run (owned; created at the first pass) */
    const pn_arch *arch;
    pn_model **replicas;
    int nreplicas;
    int params_shared; /* a replica: params is its model's (read only in a pass), not owned */
};

/* Parameter / gradient / buffer pointers of an op (NULL when absent). */
static inline const float *pn_op_param(const pn_model *m, const pn_op *op, int i)
{
    return op->p[i] == PN_NONE ? NULL : m->params + op->p[i];
}
static inline float *pn_op_grad(pn_model *m, const pn_op *op, int i)
{
    return op->p[i] == PN_NONE ? NULL : m->grads + op->p[i];
}

/* The built-in op kinds (src/nn/ops.c). */
extern const pn_op_vt pn_op_conv, pn_op_norm, pn_op_add, pn_op_act, pn_op_maxpool, pn_op_gap,
    pn_op_linear;

/* ------------------------------------------------------------ builder */
const pn_model_config *pn_b_cfg(const pn_builder *b);
int pn_b_status(const pn_builder *b);
/* Records an error (PN_ERR_ARG with a message, as pn_error) unless one is recorded already;
 * returns -1 (a pn_val). */
pn_val pn_b_fail(pn_builder *b, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Shape of a value (all NULL-safe). */
int pn_b_shape(const pn_builder *b, pn_val v, int *C, int *H, int *W);

pn_val pn_b_input(pn_builder *b);
/* Convolution of x, weight "<name>.weight" (cout, C/groups, k, k), He init, decayed;
 * padding k/2 ("same" at stride 1). flags: PN_CONV_*. */
pn_val pn_b_conv(pn_builder *b, pn_val x, const char *name, int cout, int k, int stride,
                 int groups, unsigned flags);
/* The configured norm (--norm) followed by the activation act:
 *   plain norms (bn gn ln in ln+ws): norm with affine "<name>.weight", "<name>.bias", then act;
 *   gn+pn, ln+pn: GroupNorm/LayerNorm without affine, then PN-Act (affine, act, proxy norm)
 *                 "<name>.gamma", ".beta", ".gamma_t", ".beta_t";
 *   none: act only. */
pn_val pn_b_norm_act(pn_builder *b, pn_val x, const char *name, pn_act act);
/* A norm NOT followed by an activation (e.g. after a projection conv that feeds a residual
 * add): plain norms as above without act; gn+pn / ln+pn: GroupNorm/LayerNorm with a scale
 * "<name>.weight" and no shift (the reference's choice); none: x itself. */
pn_val pn_b_norm(pn_builder *b, pn_val x, const char *name);
/* x + y (same shape). x's storage is reused when it is a convolution's output read by
 * nothing else; x must not be used after this call. */
pn_val pn_b_add(pn_builder *b, pn_val x, pn_val y);
/* An activation alone (no norm), e.g. inside a squeeze-excitation branch. */
pn_val pn_b_act(pn_builder *b, pn_val x, pn_act act);
pn_val pn_b_maxpool(pn_builder *b, pn_val x, int k, int stride, int pad);
/* Global average pooling: (C, H, W) -> (C, 1, 1). */
pn_val pn_b_gap(pn_builder *b, pn_val x);
/* Fully connected on the flattened x: "<name>.weight" (out, C*H*W), "<name>.bias" (out),
 * PyTorch's default init; output (out, 1, 1). */
pn_val pn_b_linear(pn_builder *b, pn_val x, const char *name, int out);

/* A parameter "<prefix>.<name>" (or "<name>" with an empty prefix); returns its offset
 * into params/grads (PN_NONE on error). fan: for PN_INIT_UNIFORM. */
size_t pn_b_param(pn_builder *b, const char *prefix, const char *name, int ndim, const int *shape,
                  int decay, int init, double fan);
/* A buffer (running statistics; init 0 or 1 by PN_INIT_ZERO / PN_INIT_ONE). */
size_t pn_b_buffer(pn_builder *b, const char *prefix, const char *name, int C, int init);
/* A new op of kind vt reading in[0..nin-1] and writing a (C, H, W) value; *op (may be
 * NULL) points to it for the caller to fill (name, attributes, parameters with
 * pn_b_param). The pointer is valid until the next pn_b_op (pn_b_param does not move ops). */
pn_val pn_b_op(pn_builder *b, const pn_op_vt *vt, const pn_val *in, int nin, int C, int H, int W,
               const char *name, pn_op **op);

/* ------------------------------------------------------------ registry */
struct pn_arch {
    const char *family;   /* short name, e.g. "resnet" */
    const char *help;     /* the names it accepts, for usage texts */
    /* 1 if the family builds this arch name */
    int (*match)(const char *arch);
    int (*build)(pn_builder *b, const pn_model_config *c);
    /* default --width for this arch at this image size (NULL: 16) */
    int (*default_width)(const char *arch, int image);
};

/* pn_model_create with a given architecture instead of the registry's (cfg->arch is then
 * only a label): for tests of new ops and layouts before they are registered. */
int pn_model_create_arch(pn_model **out, const pn_model_config *cfg, const pn_arch *arch, uint64_t seed);

/* The family that builds arch (NULL if none); src/nn/arch_registry.c. */
const pn_arch *pn_arch_find(const char *arch);
/* Number of families and the i-th. */
int pn_arch_count(void);
const pn_arch *pn_arch_get(int i);

/* Norm epsilons of the engine (shared with op kinds defined elsewhere). */
#define PN_GN_EPS 1e-3f
#define PN_BN_EPS 1e-5f
#define PN_BN_MOMENTUM 0.1f
#define PN_WS_EPS 1e-5f

#endif
