/*
 * npy.h — a small reader and writer for NumPy .npy files of float32 matrices, used by
 * moe-run, the tests and the fuzz target. Independent of the library: no moe symbol in it.
 */
#ifndef MOE_TOOLS_NPY_H
#define MOE_TOOLS_NPY_H

#include <stddef.h>
#include <stdint.h>

#define NPY_MAX_DIMS 8

typedef struct npy_array {
    char descr[32];           /* the dtype string, e.g. "<f4" */
    int fortran_order;
    int rank;
    int64_t shape[NPY_MAX_DIMS];
    const uint8_t *data;      /* inside the parsed buffer */
    size_t data_bytes;        /* bytes after the header */
} npy_array;

/* Parses an .npy file held in memory (format versions 1.0, 2.0, 3.0). Returns 0, or -1 with
 * a message in err[0..n) (which does not name the file; the caller adds it). */
int npy_parse(const uint8_t *buf, size_t size, npy_array *out, char *err, size_t n);

/* Checks that a parsed array is a little-endian float32 C-order matrix [rows, width] whose
 * data is all there; width <= 0 accepts any width. 0 or -1 with a message. */
int npy_check_f32_matrix(const npy_array *a, int64_t width, char *err, size_t n);

/* Reads `path` as a float32 [rows, width] matrix into malloc'd memory. 0 or -1 with a message
 * that names the file. */
int npy_read_f32_matrix(const char *path, int64_t width, float **data, int64_t *rows, int64_t *cols,
                        char *err, size_t n);

/* Writes a float32 C-order [rows, cols] .npy file: to path + ".partial" first, renamed over
 * `path` only once complete, so a failure never leaves a partial file at `path`. */
int npy_write_f32_matrix(const char *path, const float *data, int64_t rows, int64_t cols, char *err, size_t n);

#endif
