/* select_stream.c: the streaming selection's key-agnostic parts (sample bound, exact
 * top-k among the candidates); simd.c: the vectorised candidate pass. */
#ifndef SPARCCL_SELECT_STREAM_H_
#define SPARCCL_SELECT_STREAM_H_
#include <stddef.h>
#include <stdint.h>

#define SPARCCL_STREAM_SAMPLE_MAX 4096
/* The candidate pass checks its count every this many elements (a multiple of 4: Philox
 * blocks) and gives up once it exceeds the cap. */
#define SPARCCL_STREAM_BLOCK 4096

extern size_t sparcclStreamMinCount; /* layers below this take the exact path (tests lower it) */
extern int sparcclStreamVector;      /* 0: never the vectorised pass (tests) */
size_t sparcclStreamSampleSize(size_t d, size_t k);
size_t sparcclStreamSampleIndex(size_t d, size_t m, size_t j);
int sparcclStreamBound32(uint32_t* sample, size_t m, size_t d, size_t k, uint32_t* scratch,
                         uint32_t* bound, size_t* cap);
int sparcclStreamBound64(uint64_t* sample, size_t m, size_t d, size_t k, uint32_t* scratch,
                         uint64_t* bound, size_t* cap);
void sparcclStreamAmong32(const uint32_t* keys, const uint32_t* cand, size_t n, size_t k,
                          uint32_t* scratch, uint32_t* out);
void sparcclStreamAmong64(const uint64_t* keys, const uint32_t* cand, size_t n, size_t k,
                          uint32_t* scratch, uint32_t* out);

/* simd.c: the candidate pass for magnitude keys, vectorised (any gradient dtype).
 * x = g, or momentum * u + g (u non-NULL, dgc); then e + x (e non-NULL) or x - h (h
 * non-NULL); key = |x|, or |w * x| (w non-NULL).  As compress.c's candidate pass: returns
 * the count or cap + 1, *nonfinite when an x is NaN or Inf (valid when the pass ended). */
typedef struct {
  const void* g; /* dtype (SPARCCL_DT_*); the state is float32 */
  int dtype;
  const float *e, *h, *u, *w;
  float momentum;
  size_t d, cap;
  uint32_t bound;
  uint32_t *keys, *cand;
} sparcclStreamF32Args;
int sparcclStreamF32Available(void); /* the machine has the vectorised pass */
size_t sparcclStreamF32(const sparcclStreamF32Args* a, int* nonfinite);

#endif
