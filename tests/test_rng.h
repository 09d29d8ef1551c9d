/* The tests' one random generator, splitmix64: the suites (the GPU suite too), the
 * emulator's scheduler and the preload checks draw from it (examples/: example_splitmix64). */
#ifndef SPARCCL_TESTS_TEST_RNG_H_
#define SPARCCL_TESTS_TEST_RNG_H_

#include <stdint.h>

/* The next 64-bit word of the stream *s. */
static inline uint64_t test_random_u64(uint64_t* s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

#endif
