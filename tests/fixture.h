/*
 * fixture.h — writers for the test suite's own Hugging Face style model directories:
 * safetensors files (8-byte little-endian header length, JSON header, data) in F32, F16 or
 * BF16, raw (deliberately broken) safetensors bytes, text files, and the files a loader must
 * refuse (FIFOs, links to devices, huge sparse files). Every path written is remembered so
 * fx_cleanup() can remove it. Independent of the library's loader.
 */
#ifndef MOE_TEST_FIXTURE_H
#define MOE_TEST_FIXTURE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum fx_dtype { FX_F32, FX_F16, FX_BF16, FX_I32 } fx_dtype;

typedef struct fx_tensor {
    char name[192];
    fx_dtype dtype;
    int n_dims;
    int64_t shape[2];
    const float *data; /* rows*cols floats (converted to dtype when written) */
} fx_tensor;

const char *fx_dtype_name(fx_dtype dt);
/* v as a reader of the file sees it after a round trip through dtype (round to nearest even). */
float fx_round(fx_dtype dt, float v);
void fx_round_array(fx_dtype dt, float *v, size_t n);

/* A fresh directory under the system temp dir (or under `parent` when non-NULL). */
char *fx_mkdir(const char *parent, const char *name);
/* Writes a safetensors file. misalign: the data section starts at an offset that is 1 mod 8,
 * so no tensor in it is aligned to its element size. Returns 0 or -1. */
int fx_write_safetensors(const char *path, const fx_tensor *t, size_t n, bool misalign);
/* Writes hlen as the 8-byte header length, then `header` (header_bytes of it), then data. */
int fx_write_raw(const char *path, uint64_t hlen, const char *header, size_t header_bytes, const void *data,
                 size_t data_bytes);
int fx_write_text(const char *path, const char *text);
/* A file of `size` bytes that reads as zeros and takes no disk space (ftruncate). */
int fx_write_sparse(const char *path, uint64_t size);
/* A FIFO, and a symbolic link at `path` to `target`, both removed by fx_cleanup(); 0, -1 on a
 * failure, or FX_UNSUPPORTED where the platform has no such thing (Windows). */
#define FX_UNSUPPORTED 1
int fx_mkfifo(const char *path);
int fx_symlink(const char *target, const char *path);
/* Removes every file and directory written through this module. */
void fx_cleanup(void);

#endif
