/* Activations: identity, ReLU, SiLU, GELU (exact erf form), element-wise forward
 * and backward. The element functions live in act_impl.h so that the PN-Act
 * kernels inline the same ones. */
#include <math.h>
#include <strings.h>

#include "act_impl.h"
#include "common.h"

static const char *const act_names[] = { "identity", "relu", "silu", "gelu" };
#define N_ACTS ((int)(sizeof act_names / sizeof act_names[0]))

const char *pn_act_name(pn_act act)
{
    int a = (int)act;
    return a >= 0 && a < N_ACTS ? act_names[a] : "unknown";
}

int pn_act_parse(const char *name)
{
    if (!name) return -1;
    for (int a = 0; a < N_ACTS; a++)
        if (strcasecmp(name, act_names[a]) == 0) return a;
    return -1;
}

float pn_act_f(pn_act act, float x)
{
    switch (act) {
    case PN_ACT_IDENTITY: return pn_identity_f(x);
    case PN_ACT_RELU: return pn_relu_f(x);
    case PN_ACT_SILU: return pn_silu_f(x);
    case PN_ACT_GELU: return pn_gelu_f(x);
    }
    return NAN;
}

float pn_act_df(pn_act act, float x)
{
    switch (act) {
    case PN_ACT_IDENTITY: return pn_identity_df(x);
    case PN_ACT_RELU: return pn_relu_df(x);
    case PN_ACT_SILU: return pn_silu_df(x);
    case PN_ACT_GELU: return pn_gelu_df(x);
    }
    return NAN;
}

/* Blocks of this many elements per OpenMP iteration (static partition). */
#define ACT_BLOCK 4096

// out, inp are (n); out may alias inp
#define ACT_FWD_LOOP(F)                                                        \
    _Pragma("omp parallel for schedule(static)")                               \
    for (size_t b = 0; b < nb; b++) {                                          \
        size_t lo = b * ACT_BLOCK, hi = lo + ACT_BLOCK < n ? lo + ACT_BLOCK : n; \
        _Pragma("omp simd") for (size_t i = lo; i < hi; i++) out[i] = F(inp[i]);                   \
    }

int pn_act_forward(float *out, const float *inp, size_t n, pn_act act)
{
    PN_CHECK_PTR(out);
    PN_CHECK_PTR(inp);
    PN_CHECK(n > 0, "pn_act_forward: n must be > 0");
    PN_CHECK((int)act >= 0 && (int)act < N_ACTS, "pn_act_forward: unknown activation %d", (int)act);
    const size_t nb = (n + ACT_BLOCK - 1) / ACT_BLOCK;
    switch (act) {
    case PN_ACT_IDENTITY:
        if (out != inp) { ACT_FWD_LOOP(pn_identity_f) }
        break;
    case PN_ACT_RELU: ACT_FWD_LOOP(pn_relu_f) break;
    case PN_ACT_SILU: ACT_FWD_LOOP(pn_silu_f) break;
    case PN_ACT_GELU: ACT_FWD_LOOP(pn_gelu_f) break;
    }
    return PN_OK;
}

// dinp, dout, inp are (n); dinp may alias dout (each element is read before it is written)
#define ACT_BWD_LOOP(DF)                                                       \
    _Pragma("omp parallel for schedule(static)")                               \
    for (size_t b = 0; b < nb; b++) {                                          \
        size_t lo = b * ACT_BLOCK, hi = lo + ACT_BLOCK < n ? lo + ACT_BLOCK : n; \
        _Pragma("omp simd") for (size_t i = lo; i < hi; i++) dinp[i] = dout[i] * DF(inp[i]);       \
    }

int pn_act_backward(float *dinp, const float *dout, const float *inp, size_t n, pn_act act)
{
    PN_CHECK_PTR(dinp);
    PN_CHECK_PTR(dout);
    PN_CHECK_PTR(inp);
    PN_CHECK(n > 0, "pn_act_backward: n must be > 0");
    PN_CHECK((int)act >= 0 && (int)act < N_ACTS, "pn_act_backward: unknown activation %d",
             (int)act);
    const size_t nb = (n + ACT_BLOCK - 1) / ACT_BLOCK;
    switch (act) {
    case PN_ACT_IDENTITY:
        if (dinp != dout) { ACT_BWD_LOOP(pn_identity_df) }
        break;
    case PN_ACT_RELU: ACT_BWD_LOOP(pn_relu_df) break;
    case PN_ACT_SILU: ACT_BWD_LOOP(pn_silu_df) break;
    case PN_ACT_GELU: ACT_BWD_LOOP(pn_gelu_df) break;
    }
    return PN_OK;
}
