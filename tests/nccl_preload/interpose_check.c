/*
 * interpose_check: libsparccl_nccl_preload.so as a loader and an unmodified NCCL program
 * see it -- with no GPU (CI).  `make ncclpreloadtest` runs it twice:
 *
 *   interpose_check --dlopen LIB
 *       dlopen(LIB, RTLD_NOW | RTLD_LOCAL) succeeds (every symbol it needs resolves now);
 *       every interposed NCCL entry point is exported, sparccl's own API is not.
 *   LD_PRELOAD=LIB SPARCCL_DEBUG=INFO interpose_check
 *       this program's own ncclAllReduce / ncclGroupStart / ncclGroupEnd / ncclCommDestroy
 *       calls (it links libnccl like any NCCL program) reach the preload, which passes them
 *       to the real NCCL: on a NULL communicator NCCL answers ncclInvalidArgument before it
 *       touches a GPU -- not a crash, and not the preload's ncclInternalError for a real
 *       function it could not find.  The decision lines on stderr are checked by the make
 *       rule (decisions below the threshold, inside a group, on a NULL communicator).
 *
 * Without the preload the same calls give the same results and print no decision line.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>
#include <nccl.h>

static const char* interposed[] = {
    "ncclAllReduce", "ncclGroupStart", "ncclGroupEnd", "ncclGroupSimulateEnd",
    "ncclCommInitRank", "ncclCommInitRankConfig", "ncclCommInitAll",
    "ncclCommInitRankScalable", "ncclCommSplit", "ncclCommShrink", "ncclCommDestroy",
    "ncclCommAbort"};
static const char* privateNames[] = {"sparcclAllReduce", "sparcclCommInitNccl",
                                     "sparcclCommDestroy", "sparcclGetErrorString",
                                     "cudaMalloc", "cudaStreamIsCapturing"};

static int checkDlopen(const char* path) {
  size_t i, n = sizeof(interposed) / sizeof(interposed[0]);
  int fail = 0;
  void* lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (lib == NULL) {
    printf("FAIL: dlopen(RTLD_NOW): %s\n", dlerror());
    return 1;
  }
  printf("   ok: dlopen(%s, RTLD_NOW) resolved every symbol\n", path);
  for (i = 0; i < n; i++)
    if (dlsym(lib, interposed[i]) == NULL) {
      printf("FAIL: %s is not exported\n", interposed[i]);
      fail = 1;
    }
  if (!fail) printf("   ok: the %zu interposed entry points are exported\n", n);
  for (i = 0; i < sizeof(privateNames) / sizeof(privateNames[0]); i++)
    if (dlsym(lib, privateNames[i]) != NULL) {
      printf("FAIL: %s is exported (sparccl and its CUDA runtime must stay private)\n",
             privateNames[i]);
      fail = 1;
    }
  if (!fail) printf("   ok: sparccl's API and its static CUDA runtime stay private\n");
  dlclose(lib);
  return fail;
}

static int expect(const char* what, ncclResult_t got, ncclResult_t want) {
  printf("   %s: %s -> %d (%s)\n", got == want ? "ok" : "FAIL", what, (int)got,
         ncclGetErrorString(got));
  return got != want;
}

int main(int argc, char** argv) {
  static float buf[1];
  int fail = 0;
  if (argc == 3 && strcmp(argv[1], "--dlopen") == 0) return checkDlopen(argv[2]);
  if (argc != 1) {
    fprintf(stderr, "usage: %s [--dlopen libsparccl_nccl_preload.so]\n", argv[0]);
    return 2;
  }
  /* The buffers are never touched: NCCL refuses the NULL communicator first. */
  fail |= expect("ncclAllReduce count 1 (below the threshold)",
                 ncclAllReduce(buf, buf, 1, ncclFloat32, ncclSum, NULL, NULL),
                 ncclInvalidArgument);
  fail |= expect("ncclAllReduce count 2^20 float32 sum, NULL comm",
                 ncclAllReduce(buf, buf, 1u << 20, ncclFloat32, ncclSum, NULL, NULL),
                 ncclInvalidArgument);
  fail |= expect("ncclAllReduce count 2^20 float64 sum",
                 ncclAllReduce(buf, buf, 1u << 20, ncclFloat64, ncclSum, NULL, NULL),
                 ncclInvalidArgument);
  fail |= expect("ncclAllReduce count 2^20 bfloat16 max",
                 ncclAllReduce(buf, buf, 1u << 20, ncclBfloat16, ncclMax, NULL, NULL),
                 ncclInvalidArgument);
  fail |= expect("ncclGroupStart", ncclGroupStart(), ncclSuccess);
  fail |= expect("grouped ncclAllReduce count 2^19 float16 avg",
                 ncclAllReduce(buf, buf, 1u << 19, ncclFloat16, ncclAvg, NULL, NULL),
                 ncclInvalidArgument);
  printf("   ok: ncclGroupEnd -> %d (the group's error)\n", (int)ncclGroupEnd());
  /* After the group: counted back to depth 0, so a call is judged on its own again. */
  fail |= expect("ncclAllReduce count 2^18 float32 avg, NULL comm, after the group",
                 ncclAllReduce(buf, buf, 1u << 18, ncclFloat32, ncclAvg, NULL, NULL),
                 ncclInvalidArgument);
  printf("   ok: ncclCommDestroy(NULL) -> %d\n", (int)ncclCommDestroy(NULL));
  return fail;
}
