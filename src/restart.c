/* Restarts (SPEC 7; the restart slides' criteria (4), (5), (6)). */
#include <math.h>
#include <stdlib.h>
#include "core.h"
#include "backend.h"

/* On a device backend ordered after the set's enqueued work, and counted on the device. */
sparcclResult_t sparcclRestartSet(sparcclComm_t comm, sparcclLayerSet_t* set) {
  sparcclResult_t res = comm->backend->restartSet(comm, set);
  if (res != sparcclSuccess)
    WARN("restart of key 0x%llx could not be enqueued", (unsigned long long)set->key);
  return res;
}

SPARCCL_API sparcclResult_t sparcclRestart(sparcclComm_t comm) {
  size_t i;
  SPARCCLCHECK(sparcclCheckComm(comm, "sparcclRestart"));
  /* a device comm refuses during a CUDA graph capture: the call says so */
  for (i = 0; i < comm->nsets; i++) SPARCCLCHECK(sparcclRestartSet(comm, comm->sets[i]));
  INFO("sparcclRestart: %zu layer sets reset", comm->nsets);
  return sparcclSuccess;
}


/* After every call on a set; normSquared is the blocked sum of the output's squares. */
void sparcclRestartPolicyAfterCall(sparcclComm_t comm, sparcclLayerSet_t* set,
                                   double normSquared, int completed) {
  const sparcclConfig_t* c = &comm->config;
  int restart = 0;
  if (!completed) return; /* skipped steps do not count */
  if (sparccl_restart_every_due(c->restartEvery, set->steps)) {
    restart = 1;
    INFO("restart policy: key 0x%llx reached step %llu (every %lld)",
         (unsigned long long)set->key, (unsigned long long)set->steps, c->restartEvery);
  }
  if (c->restartRatio > 0.0) {
    double norm = sparccl_restart_norm(normSquared);
    double before = sparccl_history_push(set->normHistory, set->normCount++, c->restartLag, norm);
    if (sparccl_norm_jumped(norm, before, c->restartRatio)) {
      restart = 1;
      INFO("restart policy: key 0x%llx output norm %g / %g > %g", (unsigned long long)set->key,
           norm, before, c->restartRatio);
    }
  }
  if (restart) (void)sparcclRestartSet(comm, set); /* the host backend's cannot fail */
}

SPARCCL_API sparcclResult_t sparcclReportLoss(sparcclComm_t comm, double loss) {
  double* all;
  double mean = 0.0, before;
  int r, finite = 1;
  sparcclResult_t res;
  SPARCCLCHECK(sparcclCheckComm(comm, "sparcclReportLoss"));
  if (!comm->config.restartOnLoss) return sparcclSuccess; /* the same on every rank */
  all = (double*)malloc(sizeof(double) * (size_t)comm->nranks);
  if (all == NULL) return sparcclSystemError;
  /* Every rank takes part even with a non-finite loss, so no rank is left waiting. */
  res = comm->transport->allgather(comm->transport, &loss, all, sizeof(double));
  if (res != sparcclSuccess) { free(all); return res; }
  for (r = 0; r < comm->nranks; r++) {
    finite &= isfinite(all[r]) != 0;
    mean += all[r];
  }
  free(all);
  if (!finite) {
    WARN("sparcclReportLoss: a rank reported a non-finite loss; not recorded");
    return sparcclSuccess;
  }
  mean /= (double)comm->nranks;
  before = sparccl_history_push(comm->lossHistory, comm->lossCount++, comm->config.restartLag, mean);
  if (mean > before) {
    size_t i;
    INFO("restart policy: mean loss %g rose from %g; %zu layer sets reset", mean, before, comm->nsets);
    for (i = 0; i < comm->nsets; i++) SPARCCLCHECK(sparcclRestartSet(comm, comm->sets[i]));
  }
  return sparcclSuccess;
}
