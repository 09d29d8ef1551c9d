/* NCCL-style logging: SPARCCL_DEBUG=WARN|INFO|TRACE, SPARCCL_DEBUG_FILE (%h host, %p pid). */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include "core.h"

static pthread_once_t logOnce = PTHREAD_ONCE_INIT;
static pthread_mutex_t logLock = PTHREAD_MUTEX_INITIALIZER;
static int logLevel = SPARCCL_LOG_NONE;
static FILE* logFile = NULL;
static char logHost[64] = "unknown";

static void logInit(void) {
  const char* level = getenv("SPARCCL_DEBUG");
  const char* file = getenv("SPARCCL_DEBUG_FILE");
  gethostname(logHost, sizeof(logHost) - 1);
  if (level != NULL) {
    if (strcasecmp(level, "WARN") == 0) logLevel = SPARCCL_LOG_WARN;
    else if (strcasecmp(level, "INFO") == 0) logLevel = SPARCCL_LOG_INFO;
    else if (strcasecmp(level, "TRACE") == 0) logLevel = SPARCCL_LOG_TRACE;
    else if (strcasecmp(level, "VERSION") == 0 || strcasecmp(level, "NONE") == 0) logLevel = SPARCCL_LOG_NONE;
    else {
      logLevel = SPARCCL_LOG_WARN;
      fprintf(stderr, "sparccl: SPARCCL_DEBUG=%s is not one of WARN, INFO, TRACE; using WARN\n", level);
    }
  }
  logFile = stderr;
  if (file != NULL && logLevel != SPARCCL_LOG_NONE) {
    char path[4096];
    size_t n = 0;
    const char* c;
    for (c = file; *c && n + 64 < sizeof(path); c++) {
      if (c[0] == '%' && c[1] == 'h') { n += (size_t)snprintf(path + n, sizeof(path) - n, "%s", logHost); c++; }
      else if (c[0] == '%' && c[1] == 'p') { n += (size_t)snprintf(path + n, sizeof(path) - n, "%d", (int)getpid()); c++; }
      else path[n++] = *c;
    }
    path[n] = '\0';
    {
      FILE* f = fopen(path, "w");
      if (f != NULL) { logFile = f; setvbuf(f, NULL, _IOLBF, 0); }
      else fprintf(stderr, "sparccl: cannot open SPARCCL_DEBUG_FILE %s; logging to stderr\n", path);
    }
  }
}

int sparcclLogEnabled(sparcclLogLevel_t level) {
  pthread_once(&logOnce, logInit);
  return (int)level <= logLevel;
}

void sparcclLog(sparcclLogLevel_t level, const char* func, int line, const char* fmt, ...) {
  static const char* names[] = {"NONE", "WARN", "INFO", "TRACE"};
  char message[1024];
  va_list args;
  if (!sparcclLogEnabled(level)) return;
  va_start(args, fmt);
  vsnprintf(message, sizeof(message), fmt, args);
  va_end(args);
  pthread_mutex_lock(&logLock);
  if (level == SPARCCL_LOG_TRACE)
    fprintf(logFile, "%s:%d:%d SPARCCL %s %s:%d %s\n", logHost, (int)getpid(),
            (int)syscall(SYS_gettid), names[level], func, line, message);
  else
    fprintf(logFile, "%s:%d:%d SPARCCL %s %s\n", logHost, (int)getpid(),
            (int)syscall(SYS_gettid), names[level], message);
  fflush(logFile);
  pthread_mutex_unlock(&logLock);
}

double sparcclSeconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
