/* Logging check (SPEC 6): the logger reads SPARCCL_DEBUG / SPARCCL_DEBUG_FILE once per
 * process, so tests/log_check.sh runs this tiny program under different environments.
 * With no argument it makes one failing call (a WARN); with "config" it resolves a config
 * from the environment and succeeds only if that is refused.  It prints nothing itself. */
#include <string.h>
#include "core.h"

int main(int argc, char** argv) {
  if (argc > 1 && strcmp(argv[1], "config") == 0) {
    sparcclConfig_t init = SPARCCL_CONFIG_INITIALIZER, resolved;
    return sparcclConfigResolve(&init, &resolved) == sparcclInvalidArgument ? 0 : 1;
  }
  return sparcclGetVersion(NULL) == sparcclInvalidArgument ? 0 : 1;
}
