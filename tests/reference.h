/*
 * An independent, deliberately naive model of SPEC.md sections 1, 2 and 3: n ranks
 * simulated in one process, one layer set (a key's layout), every rank's state kept
 * separately.  It shares only the primitives of src/sparccl_math.h with the library
 * (Philox, float16/bfloat16 conversions, log); keys are compared as doubles and the
 * selection is a qsort of every index (key descending, ties to the lower index), so it
 * checks the library's radix select, key maps and wire packing independently.
 *
 * Importance weights stay at 1 (no solver, no online mode), restarts are off.  Section 9
 * too: dgc's momentum and warm-up's dense calls.
 */
#ifndef SPARCCL_TESTS_REFERENCE_H_
#define SPARCCL_TESTS_REFERENCE_H_

#include <stddef.h>
#include <stdint.h>

typedef struct {
  int compressor;          /* sparcclCompressor_t */
  int feedback;            /* sparcclFeedback_t */
  double density;
  size_t minSparseCount;
  int wireType;            /* sparcclDataType_t */
  unsigned long long seed;
  int sharedRandomness;
  int op;                  /* sparcclSum or sparcclAvg */
  int dtype;               /* sparcclDataType_t of the gradients and of the output */
  double momentum;         /* dgc (SPEC 9) */
  size_t warmupSteps;      /* the first calls are dense (SPEC 9) */
} ref_config_t;

typedef struct ref_model ref_model_t;

/* nlayers == 0 or counts == NULL: one layer of `count` elements.  firstLayerId: the id of
 * the layout's first layer in its comm (layer sets created earlier on the comm hold the
 * ids below it). */
ref_model_t* ref_create(const ref_config_t* config, int nranks, size_t count, size_t nlayers,
                        const size_t* counts, uint32_t firstLayerId);
ref_model_t* ref_clone(const ref_model_t* m);
void ref_destroy(ref_model_t* m);

/* One call on every rank: grads[r] is rank r's gradient (count elements of dtype); out
 * receives the output (count elements of dtype), the same on every rank. */
void ref_step(ref_model_t* m, const void* const* grads, void* out);

/* Inspection. */
size_t ref_nlayers(const ref_model_t* m);
size_t ref_layer_count(const ref_model_t* m, size_t layer);
size_t ref_layer_k(const ref_model_t* m, size_t layer);
int ref_layer_sparse(const ref_model_t* m, size_t layer);
uint64_t ref_layer_step(const ref_model_t* m, size_t layer);
int ref_layer_skipped(const ref_model_t* m, size_t layer); /* in the last ref_step */
/* A rank's state of a sparse layer (NULL where the scheme keeps none). */
const float* ref_error(const ref_model_t* m, int rank, size_t layer);
const float* ref_h(const ref_model_t* m, int rank, size_t layer);
const float* ref_H(const ref_model_t* m, int rank, size_t layer);
const float* ref_momentum(const ref_model_t* m, int rank, size_t layer); /* dgc, any layer */
/* The selected set of a rank's sparse layer in the last completed step (ascending). */
const uint32_t* ref_selected(const ref_model_t* m, int rank, size_t layer);

#endif
