/* Helpers of the kernel gradient-check tests: float buffers and a central
 * finite-difference check of a scalar loss against an analytic gradient.
 * Include after harness.h; the including test sets `verbose` to print the errors. */
#ifndef PN_TEST_FDCHECK_H
#define PN_TEST_FDCHECK_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static int verbose;

static inline float *fnew(size_t n) { return calloc(n ? n : 1, sizeof(float)); }
static inline float *frandn(size_t n, double std)
{
    float *x = fnew(n);
    harness_fill_normal(x, n, 0.0, std);
    return x;
}
static inline void ffill(float *x, size_t n, float v)
{
    for (size_t i = 0; i < n; i++) x[i] = v;
}
static inline double dot(const float *a, const float *r, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * r[i];
    return s;
}
static inline int all_finite(const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return 0;
    return 1;
}

/* ------------------------------------------------ finite differences */
/* Central differences of loss() with respect to every element of p (n), compared
 * with analytic (n): |a - fd| <= atol + rtol*|fd|. The step actually taken is
 * (float)(v+h) - (float)(v-h), so the representation of the perturbed value adds
 * no error. Returns the worst error ratio (<= 1 passes). */
typedef double (*loss_fn)(void *ctx);
static inline double fd_check(const char *what, float *p, size_t n, const float *analytic, double h,
                       double atol, double rtol, loss_fn loss, void *ctx)
{
    double worst = 0, worst_abs = 0;
    for (size_t i = 0; i < n; i++) {
        const float v = p[i];
        const float vp = (float)(v + h), vm = (float)(v - h);
        p[i] = vp;
        const double lp = loss(ctx);
        p[i] = vm;
        const double lm = loss(ctx);
        p[i] = v;
        const double fd = (lp - lm) / ((double)vp - (double)vm);
        const double err = fabs((double)analytic[i] - fd);
        const double ratio = err / (atol + rtol * fabs(fd));
        if (!(ratio <= 1.0)) {
            CHECK(0, "%s[%zu]: analytic %.9g, finite difference %.9g", what, i, analytic[i], fd);
            return INFINITY;
        }
        if (ratio > worst) worst = ratio;
        if (err > worst_abs) worst_abs = err;
    }
    if (verbose) printf("  fd %-28s n %4zu max |err| %.3g (ratio %.3g)\n", what, n, worst_abs, worst);
    return worst;
}

#endif
