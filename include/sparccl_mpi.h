/* sparccl on host buffers, exchanging over MPI (SPEC.md section 8). */
#ifndef SPARCCL_MPI_H_
#define SPARCCL_MPI_H_

#include <mpi.h>
#include "sparccl.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Collective over mpiComm.  A host comm: buffers in host memory, exchange by MPI.  The
 * caller keeps ownership of mpiComm (sparccl works on a duplicate of it).  config may be
 * NULL (environment, then defaults). */
sparcclResult_t sparcclCommInitMpi(sparcclComm_t* comm, MPI_Comm mpiComm,
                                   const sparcclConfig_t* config);

#ifdef __cplusplus
}
#endif

#endif /* SPARCCL_MPI_H_ */
