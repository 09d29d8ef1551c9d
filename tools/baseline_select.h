/* The plain SCAM-TopK baseline (tools/baseline_select.cc), callable from C. */
#ifndef SPARCCL_BASELINE_SELECT_H_
#define SPARCCL_BASELINE_SELECT_H_

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct plainScamTopk plainScamTopk;

/* State (e = 0) for a buffer of nlayers consecutive layers; layers with fewer than
 * minSparseCount elements are dense, as in sparccl.  NULL when out of memory. */
plainScamTopk* plainScamTopkCreate(size_t nlayers, const size_t* counts, double density,
                                   size_t minSparseCount);
/* One step on the float32 gradient: selection and packing (*compressSeconds), then the
 * error update e <- a - sent (*updateSeconds). */
void plainScamTopkCall(plainScamTopk* p, const float* grad, double* compressSeconds,
                       double* updateSeconds);
/* The dense vector this rank sent in the last call on grad (g itself on dense layers). */
void plainScamTopkSent(const plainScamTopk* p, const float* grad, float* sent);
void plainScamTopkDestroy(plainScamTopk* p);

#ifdef __cplusplus
}
#endif

#endif /* SPARCCL_BASELINE_SELECT_H_ */
