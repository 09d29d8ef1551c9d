/*
 * Ranks that disagree (SPEC 2, 4, 5): calls that differ once inside the exchange, and
 * state files that are not of one save, are refused on every rank, with no crash and no
 * state change: every following good call gives the bits of a twin comm that never saw
 * the bad one.  Needs two ranks or more (make_trust_suite registers nothing with one).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "common.h"

static int t_rank, t_size;

#define TCHECK(cond)                                                                     \
  ck_assert_msg(test_agree_all((cond) ? 1 : 0, #cond, "test_trust.c", __LINE__),         \
                "failed on some rank: %s", #cond)

enum { D = 20000 };

typedef struct {
  sparcclComm_t comm, twin; /* twin: the same good calls, never a bad one */
  float *g, *out, *want;
} pair_t;

static void pair_init(pair_t* p, int feedback) {
  sparcclConfig_t c = test_config(sparcclTopK, feedback, 0.01, 100);
  TCHECK(sparcclCommInitMpi(&p->comm, MPI_COMM_WORLD, &c) == sparcclSuccess);
  TCHECK(sparcclCommInitMpi(&p->twin, MPI_COMM_WORLD, &c) == sparcclSuccess);
  p->g = (float*)malloc(D * sizeof(float));
  p->out = (float*)malloc(D * sizeof(float));
  p->want = (float*)malloc(D * sizeof(float));
  TCHECK(p->g && p->out && p->want);
}

static void pair_free(pair_t* p) {
  TCHECK(sparcclCommDestroy(p->comm) == sparcclSuccess);
  TCHECK(sparcclCommDestroy(p->twin) == sparcclSuccess);
  free(p->g); free(p->out); free(p->want);
}

/* One good call on both comms (tag 0: the pointer key (g, D); else that tag): equal bits
 * on every rank and between the two comms. */
static void pair_step(pair_t* p, int step, unsigned long long tag) {
  float* all = (float*)malloc((size_t)t_size * D * sizeof(float));
  int r, same = 1;
  test_fill_normal(p->g, D, 900u + 31u * (uint64_t)step + (uint64_t)t_rank);
  if (tag == 0) {
    TCHECK(sparcclAllReduce(p->g, p->out, D, sparcclFloat32, sparcclSum, p->comm, NULL) == sparcclSuccess);
    TCHECK(sparcclAllReduce(p->g, p->want, D, sparcclFloat32, sparcclSum, p->twin, NULL) == sparcclSuccess);
  } else {
    TCHECK(sparcclAllReduceTagged(p->g, p->out, D, sparcclFloat32, sparcclSum, tag, p->comm, NULL) == sparcclSuccess);
    TCHECK(sparcclAllReduceTagged(p->g, p->want, D, sparcclFloat32, sparcclSum, tag, p->twin, NULL) == sparcclSuccess);
  }
  TCHECK(memcmp(p->out, p->want, D * sizeof(float)) == 0);
  MPI_Allgather(p->out, D, MPI_FLOAT, all, D, MPI_FLOAT, MPI_COMM_WORLD);
  for (r = 0; r < t_size; r++) same &= memcmp(all + (size_t)r * D, p->out, D * sizeof(float)) == 0;
  TCHECK(same);
  free(all);
}

/* The probe: key (g, D) live everywhere; the odd ranks then call (g, D - 1000), a
 * new key (its 8-byte layout exchange), while the even ranks call the live key (the
 * block exchange).  The MPI transport agrees each exchange's size first, so every rank
 * refuses it before any data moves (src/mpi.c); nobody writes outside a buffer or hangs. */
START_TEST(test_live_key_against_new_key) {
  pair_t p;
  sparcclResult_t r;
  float* before = (float*)malloc(D * sizeof(float));
  pair_init(&p, sparcclFeedbackEF);
  pair_step(&p, 0, 0);
  pair_step(&p, 1, 0);
  memcpy(before, p.out, D * sizeof(float));
  test_fill_normal(p.g, D, 555u + (uint64_t)t_rank);
  r = sparcclAllReduce(p.g, p.out, t_rank % 2 ? D - 1000 : D, sparcclFloat32, sparcclSum, p.comm, NULL);
  TCHECK(r == sparcclInvalidUsage && memcmp(before, p.out, D * sizeof(float)) == 0);
  pair_step(&p, 2, 0);
  pair_step(&p, 3, 0);
  pair_free(&p);
  free(before);
}
END_TEST

/* Sum on the even ranks, avg on the odd ones, on a live key; then float32 against
 * bfloat16 on the same tag and count.  Both refused on every rank, output untouched. */
START_TEST(test_op_and_dtype_disagree) {
  pair_t p;
  const unsigned long long tag = 42;
  float* before = (float*)malloc(D * sizeof(float));
  sparcclResult_t r;
  int dtype;
  pair_init(&p, _i == 0 ? sparcclFeedbackSCAM : sparcclFeedbackEF21);
  pair_step(&p, 0, tag);
  memcpy(before, p.out, D * sizeof(float));
  r = sparcclAllReduceTagged(p.g, p.out, D, sparcclFloat32, t_rank % 2 ? sparcclAvg : sparcclSum,
                             tag, p.comm, NULL);
  TCHECK(r == sparcclInvalidUsage);
  TCHECK(memcmp(before, p.out, D * sizeof(float)) == 0);
  pair_step(&p, 1, tag);
  /* bfloat16 output on the odd ranks (their g read as bfloat16: D elements fit in g) */
  memcpy(before, p.out, D * sizeof(float));
  dtype = t_rank % 2 ? sparcclBfloat16 : sparcclFloat32;
  r = sparcclAllReduceTagged(p.g, p.out, D, (sparcclDataType_t)dtype, sparcclSum, tag, p.comm, NULL);
  TCHECK(r == sparcclInvalidUsage);
  TCHECK(memcmp(before, p.out, D * sizeof(float)) == 0);
  pair_step(&p, 2, tag);
  pair_free(&p);
  free(before);
}
END_TEST

static void unique_paths(char* a, char* b, size_t n, const char* what) {
  int tag = t_rank == 0 ? (int)getpid() : 0;
  MPI_Bcast(&tag, 1, MPI_INT, 0, MPI_COMM_WORLD);
  snprintf(a, n, "/tmp/sparccl_trust_%d_%s_a_%d.state", tag, what, t_rank);
  snprintf(b, n, "/tmp/sparccl_trust_%d_%s_b_%d.state", tag, what, t_rank);
}

/* A fresh twin that has made the good calls 0 .. steps-1: what a comm loaded from a save
 * taken after them must equal. */
static void twin_replay(pair_t* p, int feedback, int steps) {
  sparcclConfig_t c = test_config(sparcclTopK, feedback, 0.01, 100);
  int step;
  TCHECK(sparcclCommDestroy(p->twin) == sparcclSuccess);
  TCHECK(sparcclCommInitMpi(&p->twin, MPI_COMM_WORLD, &c) == sparcclSuccess);
  for (step = 0; step < steps; step++) {
    test_fill_normal(p->g, D, 900u + 31u * (uint64_t)step + (uint64_t)t_rank);
    TCHECK(sparcclAllReduce(p->g, p->want, D, sparcclFloat32, sparcclSum, p->twin, NULL) == sparcclSuccess);
  }
}

/* ef21 (H a replica): every rank saves after step 0 (file a) and after step 1 (file b);
 * rank 0 then loads a while the others load b.  Refused on every rank with nothing
 * applied; loading b everywhere works and goes on as a twin that made steps 0 and 1. */
START_TEST(test_files_of_different_saves) {
  pair_t p;
  char a[256], b[256];
  unique_paths(a, b, sizeof(a), "mixed");
  pair_init(&p, sparcclFeedbackEF21);
  pair_step(&p, 0, 0);
  TCHECK(sparcclSaveState(p.comm, a) == sparcclSuccess);
  pair_step(&p, 1, 0);
  TCHECK(sparcclSaveState(p.comm, b) == sparcclSuccess);
  TCHECK(sparcclLoadState(p.comm, t_rank == 0 ? a : b) == sparcclInvalidUsage);
  pair_step(&p, 2, 0); /* nothing was applied */
  TCHECK(sparcclLoadState(p.comm, b) == sparcclSuccess);
  twin_replay(&p, sparcclFeedbackEF21, 2);
  pair_step(&p, 2, 0);
  pair_step(&p, 3, 0);
  remove(a);
  remove(b);
  pair_free(&p);
}
END_TEST

/* FNV-1a, the checksum of src/checkpoint.c's files (its last 8 bytes). */
static void rechecksum(unsigned char* data, long size) {
  uint64_t h = 0xcbf29ce484222325ull;
  long i;
  for (i = 0; i < size - 8; i++) { h ^= data[i]; h *= 0x100000001b3ull; }
  memcpy(data + size - 8, &h, 8);
}

static unsigned char* slurp(const char* path, long* size) {
  FILE* f = fopen(path, "rb");
  unsigned char* data = NULL;
  if (f == NULL) return NULL;
  fseek(f, 0, SEEK_END);
  *size = ftell(f);
  fseek(f, 0, SEEK_SET);
  data = (unsigned char*)malloc((size_t)*size);
  if (data != NULL && fread(data, 1, (size_t)*size, f) != (size_t)*size) { free(data); data = NULL; }
  fclose(f);
  return data;
}

static int spill(const char* path, const unsigned char* data, long size) {
  FILE* f = fopen(path, "wb");
  int ok = f != NULL && fwrite(data, 1, (size_t)size, f) == (size_t)size;
  if (f != NULL) ok &= fclose(f) == 0;
  return ok;
}

/* Offsets in a state file of one set of one layer, restart lag 1 (src/checkpoint.c):
 * FileHeader 72 bytes (nextLayerId at 40, lossCount at 48), the loss history 16, the
 * SetHeader 56 (steps at +24, normCount at +32, calls at +48), the norm history 16, the LayerHeader 24
 * (id, step, havePrevGrad).  The test reads the values it expects there first. */
enum { NEXT_LAYER_ID = 40, LOSS_COUNT = 48, SET_STEPS = 72 + 16 + 24, SET_NORMS = 72 + 16 + 32,
       SET_CALLS = 72 + 16 + 48, LAYER_ID = 72 + 16 + 56 + 16, LAYER_STEP = LAYER_ID + 8,
       LAYER_PREV = LAYER_ID + 16 };

static uint64_t at(const unsigned char* data, int offset) {
  uint64_t v;
  memcpy(&v, data + offset, 8);
  return v;
}

/* A file edited on rank 0 with its checksum recomputed: a field that must agree across
 * ranks (counters, histories, ids) or that this comm cannot hold is refused on every
 * rank, every time. */
START_TEST(test_rechecksummed_edits) {
  static const int offsets[] = {NEXT_LAYER_ID, LOSS_COUNT, SET_STEPS, SET_NORMS, SET_CALLS,
                                LAYER_ID, LAYER_STEP, LAYER_PREV};
  pair_t p;
  char a[256], b[256];
  unsigned char *saved, *edited;
  long size = 0;
  size_t e;
  uint64_t value;
  unique_paths(a, b, sizeof(a), "edit");
  pair_init(&p, sparcclFeedbackEF21);
  pair_step(&p, 0, 0);
  pair_step(&p, 1, 0);
  TCHECK(sparcclSaveState(p.comm, a) == sparcclSuccess);
  saved = slurp(a, &size);
  TCHECK(saved != NULL && size > LAYER_PREV + 8);
  /* the offsets are right: one layer (id 0), two completed calls */
  TCHECK(at(saved, NEXT_LAYER_ID) == 1 && at(saved, LAYER_ID) == 0 && at(saved, SET_STEPS) == 2 &&
         at(saved, SET_CALLS) == 2 &&
         at(saved, LAYER_STEP) == 2 && at(saved, LAYER_PREV) == 0);
  edited = (unsigned char*)malloc((size_t)size);
  for (e = 0; e < sizeof(offsets) / sizeof(offsets[0]); e++) {
    memcpy(edited, saved, (size_t)size);
    if (t_rank == 0) {
      memcpy(&value, edited + offsets[e], 8);
      value += 1;
      memcpy(edited + offsets[e], &value, 8);
      rechecksum(edited, size);
    }
    TCHECK(spill(a, edited, size));
    TCHECK(sparcclLoadState(p.comm, a) == sparcclInvalidUsage);
  }
  /* the unedited file still loads, and changes nothing (it is this very state) */
  TCHECK(spill(a, saved, size));
  TCHECK(sparcclLoadState(p.comm, a) == sparcclSuccess);
  pair_step(&p, 2, 0);
  free(saved);
  free(edited);
  remove(a);
  pair_free(&p);
}
END_TEST

/* A save that fails on the last rank (_i 0: its file cannot be written; _i 1: it cannot
 * replace its old one, a directory, after the others have replaced theirs) fails on
 * every rank and leaves every rank's file of the previous save in place, no temporary
 * beside it: the previous set still loads together. */
START_TEST(test_failed_save_keeps_previous_set) {
  pair_t p;
  char a[256], dir[256], tmp[300], inside[300];
  const int last = t_rank == t_size - 1;
  sparcclResult_t r;
  unique_paths(a, dir, sizeof(a), _i == 0 ? "fail0" : "fail1");
  pair_init(&p, sparcclFeedbackEF);
  pair_step(&p, 0, 0);
  TCHECK(sparcclSaveState(p.comm, a) == sparcclSuccess);
  pair_step(&p, 1, 0);
  snprintf(inside, sizeof(inside), "%s/keep", dir);
  if (last && _i == 1) TCHECK(mkdir(dir, 0700) == 0 && spill(inside, (const unsigned char*)"x", 1));
  else TCHECK(1);
  r = sparcclSaveState(p.comm, !last ? a : _i == 0 ? "/nonexistent-dir-sparccl/x.state" : dir);
  TCHECK(r == (last ? sparcclSystemError : sparcclRemoteError));
  snprintf(tmp, sizeof(tmp), "%s.tmp%d", last && _i == 1 ? dir : a, t_rank);
  TCHECK(access(tmp, F_OK) != 0);
  TCHECK(sparcclLoadState(p.comm, a) == sparcclSuccess); /* the save of step 0, everywhere */
  twin_replay(&p, sparcclFeedbackEF, 1);
  pair_step(&p, 1, 0);
  pair_step(&p, 2, 0);
  remove(a);
  if (last && _i == 1) { remove(inside); rmdir(dir); }
  pair_free(&p);
}
END_TEST

/* The phase API across ranks (SPEC 10): two keys compressed, their blocks gathered by the
 * caller in the other order (MPI_Allgather), decompressed in the first order: bitwise the
 * one-call twin, on every rank.  Then one rank gives the other key's blocks: refused on
 * that rank, nothing written; decompressed right, it goes on as the twin. */
START_TEST(test_phase_across_ranks) {
  pair_t p;
  size_t bytes, one[1] = {D};
  unsigned char *blockA, *blockB, *allA, *allB;
  float *gb = (float*)malloc(D * sizeof(float)), *ob = (float*)malloc(D * sizeof(float));
  float *wb = (float*)malloc(D * sizeof(float)), *before = (float*)malloc(D * sizeof(float));
  int s;
  pair_init(&p, _i ? sparcclFeedbackEF21 : sparcclFeedbackSCAM);
  TCHECK(sparcclRegisterLayoutTagged(p.comm, 11, 1, one) == sparcclSuccess);
  TCHECK(sparcclRegisterLayoutTagged(p.comm, 12, 1, one) == sparcclSuccess);
  TCHECK(sparcclRegisterLayoutTagged(p.twin, 11, 1, one) == sparcclSuccess);
  TCHECK(sparcclRegisterLayoutTagged(p.twin, 12, 1, one) == sparcclSuccess);
  TCHECK(sparcclBlockBytesTagged(p.comm, 11, &bytes) == sparcclSuccess);
  blockA = (unsigned char*)malloc(bytes);
  blockB = (unsigned char*)malloc(bytes);
  allA = (unsigned char*)malloc(bytes * (size_t)t_size);
  allB = (unsigned char*)malloc(bytes * (size_t)t_size);
  for (s = 0; s < 4; s++) {
    int ok = 1;
    test_fill_normal(p.g, D, 1300u + 7u * (uint64_t)s + (uint64_t)t_rank);
    test_fill_normal(gb, D, 1500u + 7u * (uint64_t)s + (uint64_t)t_rank);
    TCHECK(sparcclCompressTagged(p.g, D, sparcclFloat32, 11, p.comm, blockA, NULL) == sparcclSuccess);
    TCHECK(sparcclCompressTagged(gb, D, sparcclFloat32, 12, p.comm, blockB, NULL) == sparcclSuccess);
    MPI_Allgather(blockB, (int)bytes, MPI_BYTE, allB, (int)bytes, MPI_BYTE, MPI_COMM_WORLD);
    MPI_Allgather(blockA, (int)bytes, MPI_BYTE, allA, (int)bytes, MPI_BYTE, MPI_COMM_WORLD);
    if (s == 2) { /* rank 0 mixes up the keys' blocks: refused there, nothing written */
      memcpy(before, p.out, D * sizeof(float));
      ok = t_rank != 0 || (sparcclDecompressTagged(allB, p.out, D, sparcclFloat32, sparcclSum, 11, p.comm, NULL) ==
                               sparcclInvalidUsage &&
                           memcmp(before, p.out, D * sizeof(float)) == 0);
    }
    TCHECK(ok);
    TCHECK(sparcclDecompressTagged(allA, p.out, D, sparcclFloat32, sparcclSum, 11, p.comm, NULL) == sparcclSuccess);
    TCHECK(sparcclDecompressTagged(allB, ob, D, sparcclFloat32, sparcclSum, 12, p.comm, NULL) == sparcclSuccess);
    TCHECK(sparcclAllReduceTagged(p.g, p.want, D, sparcclFloat32, sparcclSum, 11, p.twin, NULL) == sparcclSuccess);
    TCHECK(sparcclAllReduceTagged(gb, wb, D, sparcclFloat32, sparcclSum, 12, p.twin, NULL) == sparcclSuccess);
    TCHECK(memcmp(p.out, p.want, D * sizeof(float)) == 0 && memcmp(ob, wb, D * sizeof(float)) == 0);
  }
  free(blockA); free(blockB); free(allA); free(allB);
  free(gb); free(ob); free(wb); free(before);
  pair_free(&p);
}
END_TEST

Suite* make_trust_suite(int rank, int size) {
  Suite* s = suite_create("trust");
  TCase* tc = tcase_create("disagreeing ranks");
  t_rank = rank;
  t_size = size;
  if (size >= 2) {
    tcase_add_test(tc, test_live_key_against_new_key);
    tcase_add_loop_test(tc, test_op_and_dtype_disagree, 0, 2);
    tcase_add_test(tc, test_files_of_different_saves);
    tcase_add_test(tc, test_rechecksummed_edits);
    tcase_add_loop_test(tc, test_failed_save_keeps_previous_set, 0, 2);
    tcase_add_loop_test(tc, test_phase_across_ranks, 0, 2);
  } else if (rank == 0) {
    printf("trust suite: not run with 1 rank (its cases need ranks that disagree)\n");
  }
  suite_add_tcase(s, tc);
  return s;
}
