/* The method tables (docs/ARCHITECTURE.md, "The method tables"): one X-macro row per
 * compressor and per feedback scheme, from which the enum codes, the config's names, the
 * state arrays a layer allocates and the dispatch's properties follow, on host and device.
 * The per-element rules of each row live in sparccl_math.h.  Host-and-device; C99. */
#ifndef SPARCCL_METHODS_H_
#define SPARCCL_METHODS_H_

/* Compressor properties. */
#define SPARCCL_C_RANDOM 1u         /* draws Philox words (SPEC 3) */
#define SPARCCL_C_WEIGHTS 2u        /* keeps importance weights w (the ImpK family, SPEC 7) */
#define SPARCCL_C_WIDE_KEY 4u       /* 64-bit keys (impk_random's log(u) / w) */

/*        code                 name           properties                                   */
#define SPARCCL_COMPRESSOR_TABLE(X)                                                         \
  X(SPARCCL_TOPK,        0, "topk",        0u)                                              \
  X(SPARCCL_RANDK,       1, "randk",       SPARCCL_C_RANDOM)                                \
  X(SPARCCL_IMPK,        2, "impk",        SPARCCL_C_WEIGHTS)                               \
  X(SPARCCL_IMPK_SELECT, 3, "impk_select", SPARCCL_C_WEIGHTS)                               \
  X(SPARCCL_IMPK_RANDOM, 4, "impk_random", SPARCCL_C_WEIGHTS | SPARCCL_C_RANDOM | SPARCCL_C_WIDE_KEY)

/* Feedback state arrays (float32, one per element of a layer that has them). */
#define SPARCCL_S_ERROR 1u          /* e */
#define SPARCCL_S_H 2u              /* ef21's h and its replica H */
#define SPARCCL_S_MOMENTUM 4u       /* dgc's u */
/* Feedback properties. */
#define SPARCCL_F_SMALL_STATE 8u    /* layers below minSparseCount keep the momentum too (SPEC 9) */

/*        code              name    state arrays and properties                            */
#define SPARCCL_FEEDBACK_TABLE(X)                                                           \
  X(SPARCCL_FB_NONE, 0, "none", 0u)                                                         \
  X(SPARCCL_FB_EF,   1, "ef",   SPARCCL_S_ERROR)                                            \
  X(SPARCCL_FB_EF21, 2, "ef21", SPARCCL_S_H)                                                \
  X(SPARCCL_FB_SCAM, 3, "scam", SPARCCL_S_ERROR)                                            \
  X(SPARCCL_FB_DGC,  4, "dgc",  SPARCCL_S_ERROR | SPARCCL_S_MOMENTUM | SPARCCL_F_SMALL_STATE)

#define SPARCCL_METHOD_ENUM(code, value, name, props) code = value,
enum { SPARCCL_COMPRESSOR_TABLE(SPARCCL_METHOD_ENUM) SPARCCL_NUM_COMPRESSORS };
enum { SPARCCL_FEEDBACK_TABLE(SPARCCL_METHOD_ENUM) SPARCCL_NUM_FEEDBACKS };
#undef SPARCCL_METHOD_ENUM

#if defined(__CUDACC__)
#define SPARCCL_METHODS_HD __host__ __device__ __forceinline__
#else
#define SPARCCL_METHODS_HD static inline
#endif

#define SPARCCL_METHOD_CASE(code, value, name, props) case code: return props;
SPARCCL_METHODS_HD unsigned sparccl_compressor_props(int compressor) {
  switch (compressor) { SPARCCL_COMPRESSOR_TABLE(SPARCCL_METHOD_CASE) }
  return 0u;
}
SPARCCL_METHODS_HD unsigned sparccl_feedback_props(int feedback) {
  switch (feedback) { SPARCCL_FEEDBACK_TABLE(SPARCCL_METHOD_CASE) }
  return 0u;
}
#undef SPARCCL_METHOD_CASE

SPARCCL_METHODS_HD int sparccl_has_weights(int compressor) {
  return (sparccl_compressor_props(compressor) & SPARCCL_C_WEIGHTS) != 0;
}
SPARCCL_METHODS_HD int sparccl_has_error(int feedback) {
  return (sparccl_feedback_props(feedback) & SPARCCL_S_ERROR) != 0;
}
SPARCCL_METHODS_HD int sparccl_has_momentum(int feedback) {
  return (sparccl_feedback_props(feedback) & SPARCCL_S_MOMENTUM) != 0;
}

#endif /* SPARCCL_METHODS_H_ */
