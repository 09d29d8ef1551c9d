/*
 * Helpers shared by the example programs (examples/fashion_mnist, examples/theory): error
 * exits that name the program, command-line values, the method names
 * "dense | [ef-|ef21-|scam-]{topk,randk,impk_c,impk_s}", a splitmix64 generator, CSV files
 * that get a header when new, the sparccl configuration a method implies, a dense averaging
 * all-reduce and one AdamW step.  Every function runs under MPI (after MPI_Init).
 */
#ifndef SPARCCL_EXAMPLE_UTIL_H
#define SPARCCL_EXAMPLE_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <sparccl.h>

/* A parsed --method: dense (plain MPI_Allreduce), or a sparccl compressor, feedback and
 * importance solver (sparcclCompressor_t, sparcclFeedback_t, sparcclImportance_t). */
typedef struct {
  int dense;
  int compressor, feedback, importance;
} example_method_t;

/* Once, after MPI_Init: the program's name (the prefix of every message), the message for an
 * option given without its value (one %s, the option; NULL: "%s needs a value"); stores this
 * process' rank and the rank count in *rank and *nranks (either may be NULL). */
void example_init(const char* prog, const char* missingValueFmt, int* rank, int* nranks);

/* For --help: usage() on rank 0, then MPI_Finalize and exit(0). */
void example_help_exit(void (*usage)(void));

/* "<prog>: " fmt (with a) on stderr from rank 0, then MPI_Abort with code 2. */
void example_die(const char* fmt, const char* a);

/* Aborts (code 3) with "<prog>: rank R: <call> failed: <error>" unless call succeeded. */
void example_check_failed(sparcclResult_t r, const char* call);
#define EXAMPLE_CHECK(call)                                                                \
  do {                                                                                     \
    sparcclResult_t r_ = (call);                                                           \
    if (r_ != sparcclSuccess) example_check_failed(r_, #call);                             \
  } while (0)

/* argv[*i] is an option that takes a value: returns argv[*i + 1] (as a string, a number, or a
 * count >= 0) and advances *i; dies when the value is missing or malformed. */
const char* example_arg_str(int argc, char** argv, int* i);
double example_arg_double(int argc, char** argv, int* i);
long long example_arg_count(int argc, char** argv, int* i);

/* "dense" or [ef-|ef21-|scam-]{topk,randk,impk_c,impk_s}; 0, or -1 for another name.  A
 * program that supports fewer methods checks the result itself. */
int example_parse_method(const char* s, example_method_t* m);

/* sparccl's configuration for method m: density, compressor, feedback, importance, float32
 * on the wire, minSparseCount and seed; the other fields are left as they are. */
void example_config(sparcclConfig_t* cfg, const example_method_t* m, double density,
                    size_t minSparseCount, unsigned long long seed);

/* splitmix64: the next 64-bit word of the stream *state; a uniform double in (0, 1). */
uint64_t example_splitmix64(uint64_t* state);
double example_uniform01(uint64_t* state);

/* Opens path for appending (dies with "cannot open <path>" when it cannot); header (when not
 * NULL) is written first if the file did not exist or, with headerIfEmpty, was empty. */
FILE* example_open_append(const char* path, const char* header, int headerIfEmpty);

/* g <- the mean of g over the nranks ranks of MPI_COMM_WORLD (MPI_Allreduce, then / nranks). */
void example_dense_average(float* g, size_t n, int nranks);

/* One AdamW step (decoupled weight decay) at step t >= 1, in float32 as the examples train:
 * m, v are the moments, updated in place with the parameters p from the gradient g. */
void example_adamw_step(float* p, const float* g, float* m, float* v, size_t n, long long t,
                        double lr, double beta1, double beta2, double wd, double eps);

#endif
