/* Logging check (SPEC 6): the logger reads SPARCCL_DEBUG / SPARCCL_DEBUG_FILE once per
 * process, so tests/log_check.sh runs this tiny program under different environments.
 * It makes one failing call (a WARN) and prints nothing itself. */
#include "sparccl.h"

int main(void) {
  return sparcclGetVersion(NULL) == sparcclInvalidArgument ? 0 : 1;
}
