/* Double-precision reference activations for the tests (straight from the definitions). */
#ifndef PN_REF_ACT_H
#define PN_REF_ACT_H

#include <math.h>

#include "proxynorm.h"

static const pn_act ACTS[] = { PN_ACT_IDENTITY, PN_ACT_RELU, PN_ACT_SILU, PN_ACT_GELU };
#define N_ACTS 4

static inline double ref_f(pn_act act, double x)
{
    switch (act) {
    case PN_ACT_IDENTITY: return x;
    case PN_ACT_RELU: return x > 0 ? x : 0;
    case PN_ACT_SILU: return x / (1.0 + exp(-x));
    case PN_ACT_GELU: return x * 0.5 * erfc(-x / sqrt(2.0));
    }
    return NAN;
}

static inline double ref_df(pn_act act, double x)
{
    switch (act) {
    case PN_ACT_IDENTITY: return 1;
    case PN_ACT_RELU: return x > 0 ? 1 : 0;
    case PN_ACT_SILU: {
        double sg = 1.0 / (1.0 + exp(-x));
        return sg * (1.0 + x * (1.0 - sg));
    }
    case PN_ACT_GELU:
        return 0.5 * erfc(-x / sqrt(2.0)) +
            x * exp(-0.5 * x * x) / sqrt(2.0 * 3.14159265358979323846);
    }
    return NAN;
}

#endif
