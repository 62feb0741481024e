/* Element-wise activation functions and derivatives, inlined into the kernels'
 * inner loops (act.c, pnact.c). Branch-free and made of plain float arithmetic,
 * so that GCC vectorizes the loops that call them without -ffast-math (libm's
 * expf/erff calls would keep those loops scalar).
 *
 * Accuracy (measured in tests/test_act_ws.c against double-precision libm):
 *   pn_exp_f       relative error < 1e-7 (2 ulp) on [-87, 88]; 0 below -87
 *                  (e^-87 = 1.6e-38), e^88 above 88 (never inf).
 *   pn_normcdf_f   Phi(x): absolute error < 2e-7; relative error < 1.2e-6 for
 *                  x >= -3, < 2e-5 for x >= -13 (the argument of exp, -x^2/2,
 *                  carries a float rounding error that grows with x^2).
 *   gelu, silu     relative error < 1.2e-6 for x >= -3 (gelu), < 2.5e-7 (silu);
 *   derivatives    absolute error < 3e-7.
 * Callers switch on the activation OUTSIDE their loops and call one of the
 * pn_<act>_f / pn_<act>_df below inside, under `#pragma omp simd` (GCC's -O2
 * cost model does not vectorize loops of unknown trip count otherwise).
 *
 * Without -ffast-math GCC treats an ordered float compare (x < 0) as a possibly
 * trapping operation and refuses to if-convert `c ? a : b` around it, which
 * leaves the loop scalar. So every selection is pn_sel_f: a quiet compare
 * (isless/isgreater..., which never trap) turned into an integer mask that
 * picks the bits of one of two already computed values. */
#ifndef PN_ACT_IMPL_H
#define PN_ACT_IMPL_H

#include <math.h>
#include <stdint.h>
#include <string.h>

/* A call left in a loop (GCC stops inlining a plain `static inline` once it is
 * used at many sites) keeps the loop scalar: force inlining. */
#if defined(__GNUC__)
#define PN_ACT_INLINE static inline __attribute__((always_inline))
#else
#define PN_ACT_INLINE static inline
#endif

/* cond ? a : b, without a branch (both a and b are evaluated). */
PN_ACT_INLINE float pn_sel_f(int cond, float a, float b)
{
    int32_t ia, ib, m = cond ? -1 : 0;
    memcpy(&ia, &a, sizeof ia);
    memcpy(&ib, &b, sizeof ib);
    int32_t r = (ia & m) | (ib & ~m);
    float f;
    memcpy(&f, &r, sizeof f);
    return f;
}

/* e^x: x = n ln2 + r with |r| <= ln2/2 (Cody-Waite split of ln2 so that n*ln2_hi
 * is exact), e^r by its Taylor polynomial of degree 7 (truncation error
 * |r|^8/8! < 5e-9 relative), 2^n built in the exponent bits. */
PN_ACT_INLINE float pn_exp_f(float x)
{
    float xc = pn_sel_f(isless(x, -87.0f), -87.0f, x); /* NaN passes through */
    xc = pn_sel_f(isgreater(xc, 88.0f), 88.0f, xc);
    const float shifter = 12582912.0f;              /* 1.5 * 2^23: rounds to integer */
    float n = (xc * 1.44269504088896341f + shifter) - shifter; /* round(x / ln2) */
    float r = xc - n * 0.693145751953125f;          /* ln2_hi: 15 significant bits */
    r = r - n * 1.428606820309417232e-6f;           /* ln2_lo = ln2 - ln2_hi */
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;        /* n in [-126, 127] */
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return pn_sel_f(isless(x, -87.0f), 0.0f, p * scale); /* flush below e^-87 */
}

/* Standard normal CDF and density sharing one exponential E = exp(-x^2/2):
 *   pdf(x)    = E / sqrt(2 pi)
 *   Phi(-|x|) = erfc(z)/2 = t Q(t) E / 2,  z = |x|/sqrt2,  t = 1/(1 + z/2),
 * where Q(t) = erfcx(z)/t (erfcx(z) = exp(z^2) erfc(z)) is smooth on t in (0, 1]
 * (Q(1) = 1, Q -> 1/(2 sqrt(pi)) as t -> 0). Q is a degree-10 polynomial fitted
 * for this project: weighted least squares for the relative error on 2000
 * Chebyshev nodes of t in [0.12, 1] (|x| <= 20.7; beyond, E underflows to 0),
 * refined by Lawson's iteration towards minimax, against torch.special.erfcx in
 * double: relative error 5e-9 in double, 1.7e-7 evaluated in float. */
PN_ACT_INLINE float pn_erfcx_t_f(float t) /* Q(t) */
{
    float q = 4.096269161e-02f;
    q = q * t - 2.214079041e-01f;
    q = q * t + 4.590959857e-01f;
    q = q * t - 4.037203399e-01f;
    q = q * t + 8.443311226e-02f;
    q = q * t - 3.015028140e-02f;
    q = q * t + 8.183109580e-02f;
    q = q * t + 1.783168655e-01f;
    q = q * t + 2.464106531e-01f;
    q = q * t + 2.821348028e-01f;
    q = q * t + 2.820933239e-01f;
    return q;
}

/* Phi(x) and pdf(x) together. */
PN_ACT_INLINE void pn_normcdf_pdf_f(float x, float *cdf, float *pdf)
{
    float z = fabsf(x) * 0.70710678118654752f;  /* fabsf: a bit mask, vectorizes */
    float t = 1.0f / (1.0f + 0.5f * z);
    float e = pn_exp_f(-z * z);                 /* exp(-x^2/2) */
    float tail = 0.5f * t * pn_erfcx_t_f(t) * e; /* Phi(-|x|) */
    *cdf = pn_sel_f(isless(x, 0.0f), tail, 1.0f - tail);
    *pdf = 0.398942280401432678f * e;
}

PN_ACT_INLINE float pn_normcdf_f(float x)
{
    float c, p;
    pn_normcdf_pdf_f(x, &c, &p);
    return c;
}

/* identity */
PN_ACT_INLINE float pn_identity_f(float x) { return x; }
PN_ACT_INLINE float pn_identity_df(float x) { (void)x; return 1.0f; }

/* relu (NaN stays NaN); derivative 0 at 0 (as PyTorch) */
PN_ACT_INLINE float pn_relu_f(float x) { return pn_sel_f(islessequal(x, 0.0f), 0.0f, x); }
PN_ACT_INLINE float pn_relu_df(float x) { return pn_sel_f(isgreater(x, 0.0f), 1.0f, 0.0f); }

/* sigmoid(x) and 1 - sigmoid(x) from e = exp(-|x|) in (0, 1], without
 * cancellation and exactly 0 / 1 far out: 1/(1+e) is the one for the sign of x. */
PN_ACT_INLINE void pn_sigmoid2_f(float x, float *sg, float *one_minus_sg)
{
    float e = pn_exp_f(-fabsf(x)), big = 1.0f / (1.0f + e), small = e * big;
    int neg = isless(x, 0.0f);
    *sg = pn_sel_f(neg, small, big);
    *one_minus_sg = pn_sel_f(neg, big, small);
}

/* silu(x) = x * sigmoid(x); silu' = sig * (1 + x (1 - sig)) */
PN_ACT_INLINE float pn_silu_f(float x)
{
    float sg, om;
    pn_sigmoid2_f(x, &sg, &om);
    return x * sg;
}
PN_ACT_INLINE float pn_silu_df(float x)
{
    float sg, om;
    pn_sigmoid2_f(x, &sg, &om);
    return sg * (1.0f + x * om);
}

/* gelu(x) = x * Phi(x) (exact erf form); gelu' = Phi(x) + x * pdf(x) */
PN_ACT_INLINE float pn_gelu_f(float x) { return x * pn_normcdf_f(x); }
PN_ACT_INLINE float pn_gelu_df(float x)
{
    float c, p;
    pn_normcdf_pdf_f(x, &c, &p);
    return c + x * p;
}

#endif
