/* Error reporting and thread control. */
#include "common.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include <cblas.h>

static _Thread_local char pn_errbuf[512];

int pn_error(int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(pn_errbuf, sizeof pn_errbuf, fmt, ap);
    va_end(ap);
    return status;
}

void pn_clear_error(void) { pn_errbuf[0] = '\0'; }

const char *pn_last_error(void) { return pn_errbuf; }

const char *pn_status_str(int status)
{
    switch (status) {
    case PN_OK: return "ok";
    case PN_ERR_ARG: return "invalid argument";
    case PN_ERR_NOMEM: return "out of memory";
    case PN_ERR_IO: return "I/O error";
    case PN_ERR_FORMAT: return "malformed data";
    case PN_ERR_NUMERIC: return "non-finite value";
    default: return "unknown error";
    }
}

/* OpenBLAS exports these; declared here so that any cblas.h works. */
void openblas_set_num_threads(int num_threads);

static int pn_threads = 0;

void pn_set_threads(int n)
{
#ifdef _OPENMP
    if (n <= 0) n = omp_get_num_procs();
    omp_set_num_threads(n);
#else
    if (n <= 0) n = 1;
#endif
    /* Kernels run OpenMP regions and call sgemm from one thread: one BLAS pool
     * of n threads never runs at the same time as an OpenMP region. */
    openblas_set_num_threads(n);
    pn_threads = n;
}

int pn_get_threads(void)
{
#ifdef _OPENMP
    /* inside a parallel region (pn_model_train_pass's threads) a kernel's own regions are
     * nested, so inactive: it has this one thread, and sizes its workspace for it */
    if (omp_in_parallel() && omp_get_max_active_levels() <= omp_get_active_level()) return 1;
#endif
    if (pn_threads > 0) return pn_threads;
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

double pn_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
