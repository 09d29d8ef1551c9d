/* One runner for every unit suite (each tests/test_*.c defines make_<unit>_suite). */
#include <stdio.h>
#include <stdlib.h>
#include "common.h"

#define SUITE(f) Suite* f(void);
#include "suites.h"
#undef SUITE

int main(int argc, char** argv) {
  SRunner* runner = NULL;
  int failed;
  MPI_Init(&argc, &argv);
#define SUITE(f) \
  if (runner == NULL) runner = srunner_create(f()); else srunner_add_suite(runner, f());
#include "suites.h"
#undef SUITE
  /* No fork: MPI is initialised in this process. */
  srunner_set_fork_status(runner, CK_NOFORK);
  srunner_run_all(runner, CK_NORMAL);
  failed = srunner_ntests_failed(runner);
  srunner_free(runner);
  MPI_Finalize();
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
