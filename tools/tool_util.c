/* What the benchmark tools share; see tool_util.h. */
#include "tool_util.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <mpi.h>

#include "sparccl.h"
#include "sparccl_math.h" /* float16 / bfloat16 conversions */

/* ------------------------------------------------------------------ layouts */

int tool_readLayout(const char* path, tool_Layout* layout) {
  FILE* f = fopen(path, "r");
  char line[4096];
  size_t cap = 0;
  int status = TOOL_LAYOUT_OK;
  layout->counts = NULL;
  layout->nlayers = layout->total = 0;
  layout->openErrno = 0;
  layout->bad[0] = '\0';
  if (f == NULL) {
    layout->openErrno = errno;
    return TOOL_LAYOUT_OPEN;
  }
  while (status == TOOL_LAYOUT_OK && fgets(line, sizeof(line), f)) {
    char *hash = strchr(line, '#'), *tok, *last = NULL, *save = NULL, *end;
    unsigned long long v;
    if (hash) *hash = '\0';
    for (tok = strtok_r(line, " \t\r\n", &save); tok; tok = strtok_r(NULL, " \t\r\n", &save))
      last = tok;
    if (last == NULL) continue;
    v = strtoull(last, &end, 10);
    if (*end != '\0' || v == 0) {
      snprintf(layout->bad, sizeof(layout->bad), "%s", last);
      status = TOOL_LAYOUT_BAD_COUNT;
    } else if (layout->nlayers == cap) {
      size_t* grown;
      cap = cap ? 2 * cap : 64;
      grown = (size_t*)realloc(layout->counts, cap * sizeof(size_t));
      if (grown == NULL) status = TOOL_LAYOUT_NOMEM;
      else layout->counts = grown;
    }
    if (status == TOOL_LAYOUT_OK) {
      layout->counts[layout->nlayers++] = (size_t)v;
      layout->total += (size_t)v;
    }
  }
  fclose(f);
  if (status == TOOL_LAYOUT_OK && layout->nlayers == 0) status = TOOL_LAYOUT_EMPTY;
  if (status != TOOL_LAYOUT_OK) {
    free(layout->counts);
    layout->counts = NULL;
    layout->nlayers = layout->total = 0;
  }
  return status;
}

void tool_layoutError(int status, const char* path, const tool_Layout* layout, char* msg,
                      size_t size) {
  switch (status) {
    case TOOL_LAYOUT_OK: snprintf(msg, size, "ok"); break;
    case TOOL_LAYOUT_OPEN:
      snprintf(msg, size, "cannot open layout %s: %s", path, strerror(layout->openErrno));
      break;
    case TOOL_LAYOUT_BAD_COUNT: snprintf(msg, size, "layout %s: bad count '%s'", path, layout->bad); break;
    case TOOL_LAYOUT_EMPTY: snprintf(msg, size, "layout %s has no layers", path); break;
    default: snprintf(msg, size, "out of memory"); break;
  }
}

void tool_layoutLabel(const char* path, char* label, size_t size) {
  const char* base = strrchr(path, '/');
  size_t len;
  snprintf(label, size, "%s", base ? base + 1 : path);
  len = strlen(label);
  if (len > 4 && !strcmp(label + len - 4, ".txt")) label[len - 4] = '\0';
}

/* ------------------------------------------------------------------ gradients */

uint64_t tool_splitmix64(uint64_t* state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

void tool_fillNormal(void* buf, size_t count, int dtype, uint64_t seed) {
  const double twoPi = 6.283185307179586;
  uint64_t s = seed;
  size_t i;
  for (i = 0; i < count; i += 2) {
    uint64_t r = tool_splitmix64(&s);
    double u1 = ((double)(r >> 11) + 1.0) * (1.0 / 9007199254740992.0); /* (0, 1] */
    double u2 = (double)(tool_splitmix64(&s) >> 11) * (1.0 / 9007199254740992.0);
    double rad = sqrt(-2.0 * log(u1));
    float v[2];
    size_t j;
    v[0] = (float)(rad * cos(twoPi * u2));
    v[1] = (float)(rad * sin(twoPi * u2));
    for (j = 0; j < 2 && i + j < count; j++) {
      if (dtype == sparcclFloat32) ((float*)buf)[i + j] = v[j];
      else if (dtype == sparcclFloat16) ((uint16_t*)buf)[i + j] = sparccl_float_to_half(v[j], 1);
      else ((uint16_t*)buf)[i + j] = sparccl_float_to_bfloat16(v[j], 1);
    }
  }
}

/* ------------------------------------------------------------------ statistics */

int tool_compareDouble(const void* a, const void* b) {
  double x = *(const double*)a, y = *(const double*)b;
  return x < y ? -1 : x > y;
}

double tool_median(double* v, int n) {
  qsort(v, (size_t)n, sizeof(double), tool_compareDouble);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double tool_minimum(const double* v, int n) {
  double m = v[0];
  int i;
  for (i = 1; i < n; i++) m = v[i] < m ? v[i] : m;
  return m;
}

double tool_rankMean(double v) {
  double s = 0.0;
  int nranks = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &nranks);
  MPI_Allreduce(&v, &s, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
  return s / nranks;
}

/* ------------------------------------------------------------------ methods */

static const char* const compressorNames[] = {"topk", "randk", "impk", "impk_select", "impk_random"};
static const char* const feedbackNames[] = {"none", "ef", "ef21", "scam"};
#define NCOMPRESSORS ((int)(sizeof(compressorNames) / sizeof(compressorNames[0])))
#define NFEEDBACKS ((int)(sizeof(feedbackNames) / sizeof(feedbackNames[0])))

static int lookup(const char* s, size_t len, const char* const* names, int n) {
  int i;
  for (i = 0; i < n; i++)
    if (strlen(names[i]) == len && strncmp(s, names[i], len) == 0) return i;
  return -1;
}

int tool_parseMethod(const char* s, int* compressor, int* feedback) {
  const char* dash = strchr(s, '-');
  int c, f;
  if (dash == NULL) {
    c = lookup(s, strlen(s), compressorNames, NCOMPRESSORS);
    f = 0;
  } else {
    f = lookup(s, (size_t)(dash - s), feedbackNames, NFEEDBACKS);
    c = lookup(dash + 1, strlen(dash + 1), compressorNames, NCOMPRESSORS);
    if (f < 0 || c < 0) {
      c = lookup(s, (size_t)(dash - s), compressorNames, NCOMPRESSORS);
      f = lookup(dash + 1, strlen(dash + 1), feedbackNames, NFEEDBACKS);
    }
  }
  if (c < 0 || f < 0) return -1;
  *compressor = c;
  *feedback = f;
  return 0;
}

void tool_methodName(int compressor, int feedback, char* name, size_t size) {
  if (compressor < 0 || compressor >= NCOMPRESSORS || feedback < 0 || feedback >= NFEEDBACKS)
    snprintf(name, size, "?");
  else if (feedback == 0) snprintf(name, size, "%s", compressorNames[compressor]);
  else snprintf(name, size, "%s-%s", feedbackNames[feedback], compressorNames[compressor]);
}
