/* Helpers shared by the example programs; see example_util.h. */
#include "example_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <mpi.h>

static const char* prog_ = "example";
static const char* missingValueFmt_ = "%s needs a value";
static int rank_ = 0;

void example_init(const char* prog, const char* missingValueFmt, int* rank, int* nranks) {
  int n = 1;
  prog_ = prog;
  if (missingValueFmt != NULL) missingValueFmt_ = missingValueFmt;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &n);
  if (rank != NULL) *rank = rank_;
  if (nranks != NULL) *nranks = n;
}

void example_help_exit(void (*usage)(void)) {
  if (rank_ == 0) usage();
  MPI_Finalize();
  exit(0);
}

void example_die(const char* fmt, const char* a) {
  if (rank_ == 0) {
    fprintf(stderr, "%s: ", prog_);
    fprintf(stderr, fmt, a);
    fprintf(stderr, "\n");
  }
  MPI_Abort(MPI_COMM_WORLD, 2);
  exit(2);
}

void example_check_failed(sparcclResult_t r, const char* call) {
  fprintf(stderr, "%s: rank %d: %s failed: %s\n", prog_, rank_, call, sparcclGetErrorString(r));
  MPI_Abort(MPI_COMM_WORLD, 3);
}

const char* example_arg_str(int argc, char** argv, int* i) {
  if (*i + 1 >= argc) example_die(missingValueFmt_, argv[*i]);
  (*i)++;
  return argv[*i];
}

double example_arg_double(int argc, char** argv, int* i) {
  char* end;
  double v;
  if (*i + 1 >= argc) example_die(missingValueFmt_, argv[*i]);
  v = strtod(argv[*i + 1], &end);
  if (*end != '\0' || end == argv[*i + 1]) example_die("bad number for %s", argv[*i]);
  (*i)++;
  return v;
}

long long example_arg_count(int argc, char** argv, int* i) {
  char* end;
  long long v;
  if (*i + 1 >= argc) example_die(missingValueFmt_, argv[*i]);
  v = strtoll(argv[*i + 1], &end, 10);
  if (*end != '\0' || end == argv[*i + 1] || v < 0) example_die("bad count for %s", argv[*i]);
  (*i)++;
  return v;
}

int example_parse_method(const char* s, example_method_t* m) {
  const char* c = s;
  memset(m, 0, sizeof(*m));
  m->importance = sparcclImportanceNone;
  m->feedback = sparcclFeedbackNone;
  if (strcmp(s, "dense") == 0) {
    m->dense = 1;
    return 0;
  }
  if (strncmp(c, "ef21-", 5) == 0) {
    m->feedback = sparcclFeedbackEF21;
    c += 5;
  } else if (strncmp(c, "ef-", 3) == 0) {
    m->feedback = sparcclFeedbackEF;
    c += 3;
  } else if (strncmp(c, "scam-", 5) == 0) {
    m->feedback = sparcclFeedbackSCAM;
    c += 5;
  } else if (strncmp(c, "dgc-", 4) == 0) { /* SPEC 9: sparccl keeps the momentum */
    m->feedback = sparcclFeedbackDGC;
    c += 4;
  }
  if (strcmp(c, "topk") == 0) {
    m->compressor = sparcclTopK;
  } else if (strcmp(c, "randk") == 0) {
    m->compressor = sparcclRandK;
  } else if (strcmp(c, "impk_c") == 0) {
    m->compressor = sparcclImpK;
    m->importance = sparcclImportanceCube;
  } else if (strcmp(c, "impk_s") == 0) {
    m->compressor = sparcclImpK;
    m->importance = sparcclImportanceSimplex;
  } else {
    return -1;
  }
  return 0;
}

void example_config(sparcclConfig_t* cfg, const example_method_t* m, double density,
                    size_t minSparseCount, unsigned long long seed) {
  cfg->density = density;
  cfg->compressor = m->compressor;
  cfg->feedback = m->feedback;
  cfg->wireType = sparcclFloat32;
  cfg->minSparseCount = minSparseCount;
  cfg->seed = seed;
  cfg->importance = m->importance;
}

uint64_t example_splitmix64(uint64_t* state) {
  uint64_t z = (*state += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

double example_uniform01(uint64_t* state) {
  return ((double)(example_splitmix64(state) >> 11) + 0.5) / 9007199254740992.0;
}

FILE* example_open_append(const char* path, const char* header, int headerIfEmpty) {
  struct stat st;
  int fresh = stat(path, &st) != 0 || (headerIfEmpty && st.st_size == 0);
  FILE* f = fopen(path, "a");
  if (f == NULL) example_die("cannot open %s", path);
  if (fresh && header != NULL) fputs(header, f);
  return f;
}

void example_dense_average(float* g, size_t n, int nranks) {
  size_t i;
  MPI_Allreduce(MPI_IN_PLACE, g, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
  for (i = 0; i < n; i++) g[i] = g[i] / (float)nranks;
}

void example_adamw_step(float* p, const float* g, float* m, float* v, size_t n, long long t,
                        double lr, double beta1, double beta2, double wd, double eps) {
  const float l = (float)lr, b1 = (float)beta1, b2 = (float)beta2;
  const float w = (float)wd, e = (float)eps;
  const float c1 = (float)(1.0 - pow(beta1, (double)t));
  const float c2 = (float)(1.0 - pow(beta2, (double)t));
  size_t i;
  for (i = 0; i < n; i++) {
    float gi = g[i], mh, vh;
    m[i] = b1 * m[i] + (1.0f - b1) * gi;
    v[i] = b2 * v[i] + (1.0f - b2) * (gi * gi);
    mh = m[i] / c1;
    vh = v[i] / c2;
    p[i] = p[i] - l * (mh / (sqrtf(vh) + e) + w * p[i]);
  }
}
