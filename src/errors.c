/* Result strings: one X-macro table (libuv's uv-common.c style). */
#include "core.h"

#define SPARCCL_RESULT_TABLE(X)                                                            \
  X(sparcclSuccess, "no error")                                                            \
  X(sparcclUnhandledCudaError, "unhandled cuda error (run with SPARCCL_DEBUG=INFO for details)") \
  X(sparcclSystemError, "unhandled system error (run with SPARCCL_DEBUG=INFO for details)") \
  X(sparcclInternalError, "internal error - please report this issue to the sparccl developers") \
  X(sparcclInvalidArgument, "invalid argument (run with SPARCCL_DEBUG=WARN for details)")   \
  X(sparcclInvalidUsage, "invalid usage (run with SPARCCL_DEBUG=WARN for details)")         \
  X(sparcclRemoteError, "remote process exited or there was a network error")              \
  X(sparcclInProgress, "sparccl operation in progress")                                    \
  X(sparcclNotSupported, "not supported by this build of sparccl (run with SPARCCL_DEBUG=WARN for details)")

SPARCCL_API const char* sparcclGetErrorString(sparcclResult_t result) {
  switch (result) {
#define X(code, text) \
  case code: return text;
    SPARCCL_RESULT_TABLE(X)
#undef X
    default: return "unknown result code";
  }
}

SPARCCL_API sparcclResult_t sparcclGetVersion(int* version) {
  if (version == NULL) {
    WARN("sparcclGetVersion: version is NULL");
    return sparcclInvalidArgument;
  }
  *version = SPARCCL_VERSION_CODE;
  return sparcclSuccess;
}
