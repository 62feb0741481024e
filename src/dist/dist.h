/* Data-parallel training across processes with MPI (Open MPI), optional at
 * build time: compiled with -DPN_HAVE_MPI (the Makefile does so when
 * `pkg-config ompi-c` is found) these functions use MPI, otherwise
 * pn_dist_init returns PN_ERR_ARG ("this build has no MPI") and the others do
 * nothing. The trainer itself only sees the pn_dist callbacks (trainer.h). */
#ifndef PN_DIST_H
#define PN_DIST_H

#include <stdint.h>

#include "train/trainer.h"

/* 1 if this build has MPI. */
int pn_dist_built_with_mpi(void);
/* World size announced by a launcher's environment (mpirun/srun set
 * OMPI_COMM_WORLD_SIZE, PMIX_SIZE or PMI_SIZE); 0 when not launched by one. */
int pn_dist_launched_size(void);
/* MPI_Init (once) and fills d with this process's rank, the world size and the
 * MPI-backed callbacks. */
int pn_dist_init(pn_dist *d);
/* *same = 1 if every rank passed the same value h (MPI_Allreduce MIN and MAX). */
int pn_dist_agree(uint64_t h, int *same);
/* Ends every rank's process with the given exit status (MPI_Abort). */
void pn_dist_abort(int code);
/* MPI_Finalize if pn_dist_init succeeded. */
void pn_dist_finalize(void);

#endif
