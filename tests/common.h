/* Helpers shared by the test suites. */
#ifndef SPARCCL_TESTS_COMMON_H_
#define SPARCCL_TESTS_COMMON_H_

#include <check.h>
#include <mpi.h>
#include <stdint.h>
#include <stddef.h>
#include "sparccl.h"
#include "sparccl_mpi.h"
#include "test_rng.h"

/* A config from the initializer with the main fields set (others: env, then defaults). */
sparcclConfig_t test_config(int compressor, int feedback, double density, size_t minSparse);
/* A comm over MPI_COMM_SELF (unit suites) or MPI_COMM_WORLD (multi-rank suites). */
sparcclComm_t test_comm_self(const sparcclConfig_t* config);
sparcclComm_t test_comm_world(const sparcclConfig_t* config);
/* A multi-rank check's verdict on every rank (MPI_COMM_WORLD): 1 if it held everywhere;
 * the failing rank prints what failed, at file:line. */
int test_agree_all(int ok, const char* what, const char* file, int line);
/* The last rank's call disagrees (kind 0: AVG against SUM; 1: another key of the same size)
 * on a comm of `config` over MPI_COMM_WORLD: refused on every rank, nothing written, and the
 * next call equals a twin comm's that never saw it.  1 if all held everywhere (>= 2 ranks). */
int test_disagreeing_call(const sparcclConfig_t* config, int kind, const char* file);

/* Deterministic random numbers for test inputs (test_random_u64: test_rng.h). */
float test_random_normal(uint64_t* state); /* roughly N(0, 1) */
void test_fill_normal(float* x, size_t n, uint64_t seed);

/* Bitwise comparison of float arrays; returns the first differing index or -1. */
long test_first_difference(const float* a, const float* b, size_t n);

/* Elements of a dtype (float32, float16, bfloat16). */
size_t test_dtype_size(int dtype);
void test_store_value(void* p, size_t i, int dtype, float v);
/* Element i of p (in dtype) is a NaN. */
int test_is_nan(const void* p, size_t i, int dtype);
/* First element whose bits differ, any NaN matching any NaN (the reference model's NaNs
 * need not carry the library's payload), or -1. */
long test_mismatch(const void* a, const void* b, size_t n, int dtype);

/* Check's ck_assert* records every passing assertion with a write(2) in no-fork mode;
 * these only call into Check on failure, so sweeps of millions of checks stay fast. */
#define REQUIRE(e) \
  do { if (!(e)) ck_abort_msg("Assertion '%s' failed", #e); } while (0)
#define REQUIRE_MSG(e, ...) \
  do { if (!(e)) ck_abort_msg(__VA_ARGS__); } while (0)
#define REQUIRE_OP(a, op, b)                                                                \
  do {                                                                                      \
    unsigned long long a_ = (unsigned long long)(a), b_ = (unsigned long long)(b);          \
    if (!(a_ op b_))                                                                        \
      ck_abort_msg("Assertion '%s %s %s' failed: 0x%llx vs 0x%llx", #a, #op, #b, a_, b_);   \
  } while (0)
#define REQUIRE_EQ(a, b) REQUIRE_OP(a, ==, b)
#define REQUIRE_NE(a, b) REQUIRE_OP(a, !=, b)
#define REQUIRE_LT(a, b) REQUIRE_OP(a, <, b)

#define ck_assert_bitwise_eq(a, b, n)                                                   \
  do {                                                                                  \
    long at_ = test_first_difference((a), (b), (n));                                    \
    ck_assert_msg(at_ < 0, "arrays differ at %ld: %a vs %a", at_,                        \
                  at_ < 0 ? 0.0 : (double)(a)[at_], at_ < 0 ? 0.0 : (double)(b)[at_]);   \
  } while (0)

#endif
