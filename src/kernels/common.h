/* Internal helpers shared by every module: error reporting and small utilities. */
#ifndef PN_COMMON_H
#define PN_COMMON_H

#include "proxynorm.h"

#if defined(__GNUC__)
#define PN_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define PN_PRINTF(a, b)
#endif

/* Record a message for pn_last_error() and return `status` (a negative pn_status). */
int pn_error(int status, const char *fmt, ...) PN_PRINTF(2, 3);
/* Clear the thread's error message. */
void pn_clear_error(void);

/* Seconds on the monotonic clock (for timings and progress). */
double pn_now_s(void);

/* Argument checks used at the top of kernels: return PN_ERR_ARG with a message. */
#define PN_CHECK(cond, ...) \
    do { if (!(cond)) return pn_error(PN_ERR_ARG, __VA_ARGS__); } while (0)
#define PN_CHECK_PTR(p) PN_CHECK((p) != NULL, "%s: %s is NULL", __func__, #p)
#define PN_CHECK_POS(x) PN_CHECK((x) > 0, "%s: %s must be > 0 (got %d)", __func__, #x, (int)(x))

#endif
