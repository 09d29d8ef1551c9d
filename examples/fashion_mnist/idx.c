/* IDX loader (see idx.h).  zlib's gzread reads gzip and uncompressed files alike. */
#include "idx.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define IDX_MAX_BYTES ((size_t)1 << 31) /* 2 GiB: far above any MNIST-like file */

static int fail(char* err, size_t errlen, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  if (err != NULL && errlen > 0) vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
  return -1;
}

/* Reads exactly len bytes; returns the number read, or -1 on a stream error (msg set). */
/* gzerror's text lives in the gzFile, which gzclose frees: keep a copy. */
static char zmsg_[256];
static const char* keepMsg(const char* m) {
  snprintf(zmsg_, sizeof zmsg_, "%s", m != NULL && m[0] ? m : "unknown zlib error");
  return zmsg_;
}

static long long readFull(gzFile f, unsigned char* buf, size_t len, const char** msg) {
  size_t got = 0;
  while (got < len) {
    size_t chunk = len - got;
    int r, errnum;
    if (chunk > (1u << 24)) chunk = 1u << 24;
    r = gzread(f, buf + got, (unsigned)chunk);
    if (r < 0) {
      *msg = keepMsg(gzerror(f, &errnum));
      return -1;
    }
    if (r == 0) {
      /* End of input: a gzip stream cut short reports Z_BUF_ERROR here. */
      const char* m = gzerror(f, &errnum);
      if (errnum != Z_OK) {
        *msg = keepMsg(m);
        return -1;
      }
      break;
    }
    got += (size_t)r;
  }
  return (long long)got;
}

int idxLoad(const char* path, int ndims, size_t wantRows, size_t wantCols, idxData_t* out,
            char* err, size_t errlen) {
  gzFile f;
  unsigned char hdr[16], extra;
  const char* msg = "";
  size_t dims[3] = {0, 0, 0}, total, hlen;
  long long got;
  int i;
  memset(out, 0, sizeof(*out));
  if (ndims != 1 && ndims != 3) return fail(err, errlen, "%s: unsupported ndims %d", path, ndims);
  f = gzopen(path, "rb");
  if (f == NULL)
    return fail(err, errlen, "%s: cannot open: %s", path, errno ? strerror(errno) : "zlib error");
  hlen = 4 + 4 * (size_t)ndims;
  got = readFull(f, hdr, hlen, &msg);
  if (got < 0) {
    gzclose(f);
    return fail(err, errlen, "%s: truncated or corrupt (zlib: %s)", path, msg);
  }
  if ((size_t)got < hlen) {
    gzclose(f);
    return fail(err, errlen, "%s: truncated header (%lld of %zu bytes)", path, got, hlen);
  }
  if (hdr[0] != 0 || hdr[1] != 0 || hdr[2] != 0x08 || hdr[3] != (unsigned char)ndims) {
    gzclose(f);
    return fail(err, errlen,
                "%s: bad IDX magic 0x%02x%02x%02x%02x (want 0x000008%02x: unsigned bytes, %d dims)",
                path, hdr[0], hdr[1], hdr[2], hdr[3], ndims, ndims);
  }
  total = 1;
  for (i = 0; i < ndims; i++) {
    const unsigned char* p = hdr + 4 + 4 * i;
    dims[i] = ((size_t)p[0] << 24) | ((size_t)p[1] << 16) | ((size_t)p[2] << 8) | (size_t)p[3];
    if (dims[i] == 0) {
      gzclose(f);
      return fail(err, errlen, "%s: dimension %d is 0", path, i);
    }
    if (dims[i] > IDX_MAX_BYTES / total) {
      gzclose(f);
      return fail(err, errlen, "%s: dimensions too large", path);
    }
    total *= dims[i];
  }
  if (ndims == 3 && ((wantRows && dims[1] != wantRows) || (wantCols && dims[2] != wantCols))) {
    gzclose(f);
    return fail(err, errlen, "%s: images are %zux%zu, expected %zux%zu", path, dims[1], dims[2],
                wantRows, wantCols);
  }
  out->data = (unsigned char*)malloc(total);
  if (out->data == NULL) {
    gzclose(f);
    return fail(err, errlen, "%s: out of memory (%zu bytes)", path, total);
  }
  got = readFull(f, out->data, total, &msg);
  if (got < 0) {
    gzclose(f);
    idxFree(out);
    return fail(err, errlen, "%s: truncated or corrupt (zlib: %s)", path, msg);
  }
  if ((size_t)got < total) {
    gzclose(f);
    idxFree(out);
    return fail(err, errlen, "%s: truncated: %lld of %zu payload bytes", path, got, total);
  }
  /* Nothing may follow the payload, and the gzip trailer (CRC, length) must check out. */
  got = readFull(f, &extra, 1, &msg);
  if (got != 0) {
    gzclose(f);
    idxFree(out);
    if (got < 0) return fail(err, errlen, "%s: truncated or corrupt (zlib: %s)", path, msg);
    return fail(err, errlen, "%s: trailing bytes after %zu payload bytes", path, total);
  }
  if (gzclose(f) != Z_OK) {
    idxFree(out);
    return fail(err, errlen, "%s: corrupt file (gzclose failed)", path);
  }
  out->n = dims[0];
  out->rows = ndims == 3 ? dims[1] : 1;
  out->cols = ndims == 3 ? dims[2] : 1;
  return 0;
}

void idxFree(idxData_t* d) {
  free(d->data);
  memset(d, 0, sizeof(*d));
}

int idxLoadPair(const char* images, const char* labels, idxData_t* img, idxData_t* lab,
                char* err, size_t errlen) {
  size_t i;
  if (idxLoad(images, 3, 28, 28, img, err, errlen) != 0) return -1;
  if (idxLoad(labels, 1, 0, 0, lab, err, errlen) != 0) {
    idxFree(img);
    return -1;
  }
  if (img->n != lab->n) {
    fail(err, errlen, "%s has %zu images but %s has %zu labels", images, img->n, labels, lab->n);
    idxFree(img);
    idxFree(lab);
    return -1;
  }
  for (i = 0; i < lab->n; i++) {
    if (lab->data[i] > 9) {
      fail(err, errlen, "%s: label %u at item %zu is out of range 0..9", labels,
           (unsigned)lab->data[i], i);
      idxFree(img);
      idxFree(lab);
      return -1;
    }
  }
  return 0;
}
