/*
 * file.h — the one bounded way every file moe reads is opened (file.c): config.json, the shard
 * index, safetensors shards, cache files, and the tools' .npy inputs. A path that names a FIFO,
 * a device, a directory or a socket is refused before a byte is read, a file over the limit
 * the caller states is refused before anything is allocated, and exactly the size fstat gave
 * is read, so nothing blocks and nothing grows.
 *
 * Plain POSIX, no library state (no moe_fail, no moe_malloc): the tools, which link only the
 * public API, compile this file too. Callers turn the error code and message into their own.
 */
#ifndef MOE_FILE_H
#define MOE_FILE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef enum moe_file_error {
    MOE_FILE_OK = 0,
    MOE_FILE_CANNOT_OPEN, /* open() failed: missing, no permission, a dangling link, ... */
    MOE_FILE_NOT_REGULAR, /* a directory, FIFO, device or socket */
    MOE_FILE_TOO_LARGE,   /* larger than the caller's limit */
    MOE_FILE_READ_FAILED, /* a read error, or the file shrank while it was read */
    MOE_FILE_NO_MEMORY,   /* the caller's allocator returned NULL */
    MOE_FILE_WRITE_FAILED /* moe_file_write_atomic: a write, close or rename failed */
} moe_file_error;

typedef struct moe_file {
    int fd;        /* -1 when closed */
    uint64_t size; /* st_size at open: what moe_file_read_all reads, never more */
} moe_file;

/* Opens `path` read-only without blocking (O_NONBLOCK, so a FIFO cannot hold the open) and
 * close-on-exec, and checks the opened file: a regular file of at most `limit` bytes. `what`
 * names the kind of file in a size message ("a config.json"). On failure `f->fd` is -1 and
 * err[0..n) holds one line naming `path` and the cause. */
moe_file_error moe_file_open(moe_file *f, const char *path, uint64_t limit, const char *what, char *err,
                             size_t n);

/* Reads `bytes` bytes at `offset`, retrying short reads; a file that ends early is
 * MOE_FILE_READ_FAILED ("shrank while being read"). */
moe_file_error moe_file_pread(const moe_file *f, const char *path, uint64_t offset, void *buf, size_t bytes,
                              char *err, size_t n);

void moe_file_close(moe_file *f);

/* What a file of this st_mode is, for messages: "a directory", "a FIFO", "a character
 * device", ... */
const char *moe_file_kind(mode_t mode);

/* The whole file (open, check, read f.size bytes, close) in a buffer from `alloc_fn` (one
 * byte more than the file, set to 0, so text can be read as a C string; the caller frees it
 * with its own free). */
moe_file_error moe_file_read_all(const char *path, uint64_t limit, const char *what,
                                 void *(*alloc_fn)(size_t), void (*free_fn)(void *), uint8_t **out,
                                 size_t *size, char *err, size_t n);

/* head then data written to a new temporary file beside `path` (created with O_EXCL: never
 * through a file or a link someone else put there), then renamed over `path`: readers see the
 * old file or the whole new one. On failure nothing is left behind and err[0..n) names `path`
 * and the cause. */
moe_file_error moe_file_write_atomic(const char *path, const void *head, size_t head_size, const void *data,
                                     size_t size, char *err, size_t n);

#endif /* MOE_FILE_H */
