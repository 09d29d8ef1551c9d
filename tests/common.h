/* Helpers shared by the test suites. */
#ifndef SPARCCL_TESTS_COMMON_H_
#define SPARCCL_TESTS_COMMON_H_

#include <check.h>
#include <mpi.h>
#include <stdint.h>
#include <stddef.h>
#include "sparccl.h"
#include "sparccl_mpi.h"

/* A config from the initializer with the main fields set (others: env, then defaults). */
sparcclConfig_t test_config(int compressor, int feedback, double density, size_t minSparse);
/* A comm over MPI_COMM_SELF (unit suites) or MPI_COMM_WORLD (multi-rank suites). */
sparcclComm_t test_comm_self(const sparcclConfig_t* config);
sparcclComm_t test_comm_world(const sparcclConfig_t* config);

/* Deterministic random numbers for test inputs (splitmix64). */
uint64_t test_random_u64(uint64_t* state);
float test_random_normal(uint64_t* state); /* roughly N(0, 1) */
void test_fill_normal(float* x, size_t n, uint64_t seed);

/* Bitwise comparison of float arrays; returns the first differing index or -1. */
long test_first_difference(const float* a, const float* b, size_t n);

#define ck_assert_bitwise_eq(a, b, n)                                                   \
  do {                                                                                  \
    long at_ = test_first_difference((a), (b), (n));                                    \
    ck_assert_msg(at_ < 0, "arrays differ at %ld: %a vs %a", at_,                        \
                  at_ < 0 ? 0.0 : (double)(a)[at_], at_ < 0 ? 0.0 : (double)(b)[at_]);   \
  } while (0)

#endif
