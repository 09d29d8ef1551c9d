/*
 * tool_util: what the benchmark tools share (tools/sparccl_perf.c, tools/bandwidth_bench.c,
 * tools/gpu_perf.cu): the layout files of ../shared/layouts, the gradients (splitmix64,
 * Box-Muller normals), the statistics of the timed calls and the method names.  C99; the
 * declarations are extern "C" so that the C++ of gpu_perf.cu links the same object.
 */
#ifndef SPARCCL_TOOL_UTIL_H
#define SPARCCL_TOOL_UTIL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------ layouts */

/* What tool_readLayout returns. */
enum {
  TOOL_LAYOUT_OK = 0,
  TOOL_LAYOUT_OPEN,      /* fopen failed: openErrno */
  TOOL_LAYOUT_BAD_COUNT, /* a count that is not a positive decimal number: bad */
  TOOL_LAYOUT_EMPTY,     /* no layers */
  TOOL_LAYOUT_NOMEM
};

typedef struct {
  size_t* counts;  /* one per layer (malloc'd; NULL on failure) */
  size_t nlayers;
  size_t total;    /* the sum of counts */
  int openErrno;   /* TOOL_LAYOUT_OPEN: errno of fopen */
  char bad[4096];  /* TOOL_LAYOUT_BAD_COUNT: the token */
} tool_Layout;

/* Reads a layout file: lines `name count` (the count is the line's last token), '#' starts
 * a comment, blank lines are skipped.  Returns TOOL_LAYOUT_OK or the error; on an error
 * nothing is left allocated. */
int tool_readLayout(const char* path, tool_Layout* layout);

/* The message of a tool_readLayout error, without a newline:
 * "cannot open layout PATH: STRERROR", "layout PATH: bad count 'TOKEN'",
 * "layout PATH has no layers", "out of memory". */
void tool_layoutError(int status, const char* path, const tool_Layout* layout, char* msg,
                      size_t size);

/* A layout's label: PATH's last component without a ".txt" suffix. */
void tool_layoutLabel(const char* path, char* label, size_t size);

/* ------------------------------------------------------------------ gradients */

uint64_t tool_splitmix64(uint64_t* state);

/* count standard normal values (Box-Muller on splitmix64 from seed), in dtype:
 * sparcclFloat32, sparcclFloat16 or sparcclBfloat16 (rounded from float32, saturating). */
void tool_fillNormal(void* buf, size_t count, int dtype, uint64_t seed);

/* ------------------------------------------------------------------ statistics */

int tool_compareDouble(const void* a, const void* b); /* for qsort, ascending */
double tool_median(double* v, int n);                 /* sorts v; n >= 1 */
double tool_minimum(const double* v, int n);          /* n >= 1 */
double tool_rankMean(double v);                       /* the mean over MPI_COMM_WORLD */

/* ------------------------------------------------------------------ methods */

/* FEEDBACK-COMPRESSOR, COMPRESSOR-FEEDBACK or COMPRESSOR (feedback none), with the names
 * none|ef|ef21|scam and topk|randk|impk|impk_select|impk_random.  Sets sparccl's
 * compressor and feedback values; returns 0, or -1 for an unknown name. */
int tool_parseMethod(const char* s, int* compressor, int* feedback);

/* The canonical name: COMPRESSOR for feedback none, else FEEDBACK-COMPRESSOR. */
void tool_methodName(int compressor, int feedback, char* name, size_t size);

#ifdef __cplusplus
}
#endif

#endif /* SPARCCL_TOOL_UTIL_H */
