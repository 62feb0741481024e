/* Minimal test harness: each tests/test_*.c is one program.
 *
 *   TEST(name) { ... CHECK(cond, "fmt", ...); CHECK_NEAR(a, b, tol); ... }
 *   int main(void) { RUN(name); ...; return harness_summary(); }
 *
 * Each test prints "ok NAME" or "FAIL NAME: message" lines; the program ends with
 * "RESULT <passed> <failed>", which tests/run.sh adds up. */
#ifndef PN_HARNESS_H
#define PN_HARNESS_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int harness_passed, harness_failed, harness_cur_failed;
static const char *harness_cur;

#define TEST(name) static void name(void)

#define CHECK(cond, ...)                                                        \
    do {                                                                        \
        if (!(cond)) {                                                          \
            harness_cur_failed = 1;                                             \
            printf("FAIL %s (%s:%d): ", harness_cur, __FILE__, __LINE__);      \
            printf(__VA_ARGS__);                                                \
            printf("\n");                                                       \
        }                                                                       \
    } while (0)

/* |a - b| <= tol, and neither is NaN. */
#define CHECK_NEAR(a, b, tol)                                                   \
    do {                                                                        \
        double ha_ = (double)(a), hb_ = (double)(b), ht_ = (double)(tol);       \
        CHECK(fabs(ha_ - hb_) <= ht_, "%s = %.9g, %s = %.9g, |diff| %.3g > %.3g", \
              #a, ha_, #b, hb_, fabs(ha_ - hb_), ht_);                          \
    } while (0)

#define RUN(fn)                                                                 \
    do {                                                                        \
        harness_cur = #fn;                                                      \
        harness_cur_failed = 0;                                                 \
        fn();                                                                   \
        if (harness_cur_failed) harness_failed++;                               \
        else { harness_passed++; printf("ok %s\n", #fn); }                      \
        fflush(stdout);                                                         \
    } while (0)

static inline int harness_summary(void)
{
    printf("RESULT %d %d\n", harness_passed, harness_failed);
    return harness_failed ? 1 : 0;
}

/* Deterministic pseudo-random numbers for tests (xorshift64*, Box-Muller). */
static unsigned long long harness_rng = 0x9E3779B97F4A7C15ULL;
static inline void harness_seed(unsigned long long s) { harness_rng = s ? s : 1; }
static inline double harness_uniform(void)
{
    harness_rng ^= harness_rng >> 12;
    harness_rng ^= harness_rng << 25;
    harness_rng ^= harness_rng >> 27;
    return ((harness_rng * 0x2545F4914F6CDD1DULL) >> 11) * (1.0 / 9007199254740992.0);
}
static inline double harness_normal(void)
{
    double u1 = harness_uniform(), u2 = harness_uniform();
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}
static inline void harness_fill_normal(float *x, size_t n, double mean, double std)
{
    for (size_t i = 0; i < n; i++) x[i] = (float)(mean + std * harness_normal());
}

/* Largest |a_i - b_i| / (atol + rtol*|b_i|), <= 1 means within tolerance. */
static inline double harness_max_err(const float *a, const float *b, size_t n, double atol, double rtol)
{
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]) / (atol + rtol * fabs((double)b[i]));
        if (!(d == d)) return INFINITY;
        if (d > worst) worst = d;
    }
    return worst;
}

#endif
