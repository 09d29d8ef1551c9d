/* IDX (MNIST / Fashion-MNIST) file loader: gzip or plain, fully validated. */
#ifndef FMNIST_IDX_H_
#define FMNIST_IDX_H_

#include <stddef.h>

typedef struct {
  size_t n;               /* number of items */
  size_t rows, cols;      /* 28 x 28 for images; 1 x 1 for labels */
  unsigned char* data;    /* n * rows * cols bytes */
} idxData_t;

/* Reads an IDX file of unsigned bytes.  ndims: 3 (images) or 1 (labels).  Checks the magic
 * (0x00000803 / 0x00000801), the dimensions (rows and cols when nonzero are required), the
 * exact payload size (a truncated file and trailing bytes are both refused) and the gzip
 * stream's integrity.  Returns 0, or -1 with a message in err (errlen bytes). */
int idxLoad(const char* path, int ndims, size_t wantRows, size_t wantCols, idxData_t* out,
            char* err, size_t errlen);
void idxFree(idxData_t* d);

/* Loads images and labels of one split and checks them against each other (same count,
 * labels < 10).  Returns 0 or -1 with err. */
int idxLoadPair(const char* images, const char* labels, idxData_t* img, idxData_t* lab,
                char* err, size_t errlen);

#endif
