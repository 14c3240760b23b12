/*
 * npy.h — a small reader and writer for NumPy .npy files of float32 matrices, used by
 * moe-run, the tests and the fuzz target. Independent of the library's state: it needs only
 * the bounded reader src/file.c, which every user compiles in alongside npy.c.
 */
#ifndef MOE_TOOLS_NPY_H
#define MOE_TOOLS_NPY_H

#include <stddef.h>
#include <stdint.h>

#define NPY_MAX_DIMS 8
/* The largest header dict read: version 1.0's own limit. A float32 matrix's is ~120 bytes
 * (numpy itself refuses headers over 10,000 bytes by default). */
#define NPY_MAX_HEADER 65535
#define NPY_PATH_MAX   4096

typedef struct npy_array {
    char descr[32]; /* the dtype string, e.g. "<f4" */
    int fortran_order;
    int rank;
    int64_t shape[NPY_MAX_DIMS];
    const uint8_t *data; /* inside the parsed buffer */
    size_t data_bytes;   /* bytes after the header */
} npy_array;

/* Parses an .npy file held in memory (format versions 1.0, 2.0, 3.0). Returns 0, or -1 with
 * a message in err[0..n) (which does not name the file; the caller adds it). */
int npy_parse(const uint8_t *buf, size_t size, npy_array *out, char *err, size_t n);
/* The same for the preamble and header dict alone, at the start of buf[0..size): fills *out
 * but its data and data_bytes, and *data_offset with where the data starts. */
int npy_parse_header(const uint8_t *buf, size_t size, npy_array *out, size_t *data_offset, char *err,
                     size_t n);

/* Checks that a parsed array is a little-endian float32 C-order matrix [rows, width] whose
 * data is all there; width <= 0 accepts any width. 0 or -1 with a message. */
int npy_check_f32_matrix(const npy_array *a, int64_t width, char *err, size_t n);

/* Reads `path` as a float32 [rows, width] matrix into malloc'd memory. 0 or -1 with a message
 * that names the file. `path` must be a regular file (never a FIFO or a device; nothing
 * blocks), holding exactly the header and the bytes its shape needs. */
int npy_read_f32_matrix(const char *path, int64_t width, float **data, int64_t *rows, int64_t *cols,
                        char *err, size_t n);

/* Where writing `path` puts the data, into target[0..cap): `path` itself when it is absent
 * (its directory must exist) or a regular file; for a symbolic link, the file the chain of
 * links ends at, existing or not. Anything else (a directory, FIFO, device, socket; a link to
 * one) is refused. *exists says whether the target is an existing regular file. 0 or -1 with
 * a message naming `path`. */
int npy_output_target(const char *path, char *target, size_t cap, int *exists, char *err, size_t n);

/* Writes a float32 C-order [rows, cols] .npy file to npy_output_target(path), atomically: a
 * temporary file next to the target (target.partial-XXXXXX), written and synced, then renamed
 * over it, keeping an existing file's mode (and owner, where allowed). A failure leaves no
 * file and the target untouched. */
int npy_write_f32_matrix(const char *path, const float *data, int64_t rows, int64_t cols, char *err,
                         size_t n);

#endif
