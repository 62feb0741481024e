/* MPI back end of data-parallel training (see dist.h). */
#include "dist/dist.h"

#include <limits.h>
#include <stdlib.h>

#include "kernels/common.h"

#ifdef PN_HAVE_MPI
#include <mpi.h>
#endif

static int inited;

int pn_dist_launched_size(void)
{
    const char *vars[] = { "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "PMI_SIZE" };
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        const char *v = getenv(vars[i]);
        if (v && *v) {
            long n = strtol(v, NULL, 10);
            if (n >= 1 && n < INT_MAX) return (int)n;
        }
    }
    return 0;
}

#ifdef PN_HAVE_MPI

int pn_dist_built_with_mpi(void) { return 1; }

/* MPI counts are ints: large buffers go in chunks. */
#define CHUNK (1 << 30)

static int mpi_fail(int err, const char *what)
{
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(err, msg, &len) != MPI_SUCCESS) len = 0;
    msg[len] = '\0';
    return pn_error(PN_ERR_IO, "MPI %s failed: %s", what, msg);
}

static int allreduce_f32(void *ctx, float *buf, size_t n)
{
    (void)ctx;
    for (size_t o = 0; o < n; o += CHUNK) {
        int c = (int)(n - o < CHUNK ? n - o : CHUNK);
        int e = MPI_Allreduce(MPI_IN_PLACE, buf + o, c, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        if (e != MPI_SUCCESS) return mpi_fail(e, "Allreduce");
    }
    return PN_OK;
}

static int allreduce_f64(void *ctx, double *buf, size_t n)
{
    (void)ctx;
    for (size_t o = 0; o < n; o += CHUNK) {
        int c = (int)(n - o < CHUNK ? n - o : CHUNK);
        int e = MPI_Allreduce(MPI_IN_PLACE, buf + o, c, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
        if (e != MPI_SUCCESS) return mpi_fail(e, "Allreduce");
    }
    return PN_OK;
}

static int bcast_f32(void *ctx, float *buf, size_t n)
{
    (void)ctx;
    for (size_t o = 0; o < n; o += CHUNK) {
        int c = (int)(n - o < CHUNK ? n - o : CHUNK);
        int e = MPI_Bcast(buf + o, c, MPI_FLOAT, 0, MPI_COMM_WORLD);
        if (e != MPI_SUCCESS) return mpi_fail(e, "Bcast");
    }
    return PN_OK;
}

int pn_dist_init(pn_dist *d)
{
    PN_CHECK_PTR(d);
    int e;
    if (!inited) {
        int already = 0;
        MPI_Initialized(&already);
        if (!already && (e = MPI_Init(NULL, NULL)) != MPI_SUCCESS) return mpi_fail(e, "Init");
        /* Errors come back as codes (turned into messages) rather than aborting. */
        MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
        inited = 1;
    }
    d->ctx = NULL;
    MPI_Comm_rank(MPI_COMM_WORLD, &d->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &d->size);
    d->allreduce_f32 = allreduce_f32;
    d->allreduce_f64 = allreduce_f64;
    d->bcast_f32 = bcast_f32;
    return PN_OK;
}

int pn_dist_agree(uint64_t h, int *same)
{
    PN_CHECK_PTR(same);
    uint64_t lo = h, hi = h;
    int e = MPI_Allreduce(MPI_IN_PLACE, &lo, 1, MPI_UINT64_T, MPI_MIN, MPI_COMM_WORLD);
    if (e == MPI_SUCCESS) e = MPI_Allreduce(MPI_IN_PLACE, &hi, 1, MPI_UINT64_T, MPI_MAX, MPI_COMM_WORLD);
    if (e != MPI_SUCCESS) return mpi_fail(e, "Allreduce");
    *same = lo == hi;
    return PN_OK;
}

void pn_dist_abort(int code)
{
    if (inited) MPI_Abort(MPI_COMM_WORLD, code);
    exit(code);
}

void pn_dist_finalize(void)
{
    if (inited) MPI_Finalize();
    inited = 0;
}

#else /* no MPI */

int pn_dist_built_with_mpi(void) { return 0; }

int pn_dist_init(pn_dist *d)
{
    (void)d;
    return pn_error(PN_ERR_ARG, "this build has no MPI (install Open MPI: scripts/install-deps.sh "
                                "--mpi, then rebuild: make clean all)");
}

int pn_dist_agree(uint64_t h, int *same)
{
    (void)h;
    PN_CHECK_PTR(same);
    *same = 1;
    return PN_OK;
}

void pn_dist_abort(int code) { exit(code); }
void pn_dist_finalize(void) { (void)inited; }

#endif
