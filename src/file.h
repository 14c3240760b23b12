/*
 * file.h — the one bounded way every file moe reads is opened (file.c): config.json, the shard
 * index, safetensors shards, cache files, and the tools' .npy inputs. A path that names a FIFO,
 * a device, a directory or a socket is refused before a byte is read, a file over the limit
 * the caller states is refused before anything is allocated, and exactly the size fstat gave
 * is read, so nothing blocks and nothing grows.
 *
 * The platform's own calls (POSIX, or Windows' with UTF-8 paths turned into its UTF-16 ones),
 * and no library state (no moe_fail, no moe_malloc): the tools, which link only the public API,
 * compile this file too. Callers turn the error code and message into their own. Besides
 * reading, the few other file-system calls the library makes (mapping, what a path is, making
 * and listing the cache directory, removing a file) are here, so no other file needs an #ifdef.
 */
#ifndef MOE_FILE_H
#define MOE_FILE_H

#include <stdbool.h>
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
#if defined(_WIN32)
    void *handle; /* a HANDLE; NULL when closed */
#else
    int fd; /* -1 when closed */
#endif
    uint64_t size; /* the size at open: what moe_file_read_all reads, never more */
} moe_file;

/* Opens `path` read-only without blocking (O_NONBLOCK, so a FIFO cannot hold the open) and
 * close-on-exec, and checks the opened file: a regular file of at most `limit` bytes. `what`
 * names the kind of file in a size message ("a config.json"). On failure `f` is closed and
 * err[0..n) holds one line naming `path` and the cause. (On Windows: opened for reading with
 * others' reads, writes and deletes shared, as POSIX allows; a device or pipe is refused.) */
moe_file_error moe_file_open(moe_file *f, const char *path, uint64_t limit, const char *what, char *err,
                             size_t n);

/* Reads `bytes` bytes at `offset`, retrying short reads; a file that ends early is
 * MOE_FILE_READ_FAILED ("shrank while being read"). */
moe_file_error moe_file_pread(const moe_file *f, const char *path, uint64_t offset, void *buf, size_t bytes,
                              char *err, size_t n);

void moe_file_close(moe_file *f);

/* The open file's f->size bytes (> 0) mapped read-only and private (mmap, or a Windows file
 * mapping), or NULL where that is not possible: the caller reads the file instead. The mapping
 * outlives moe_file_close; moe_file_unmap releases it. */
void *moe_file_map(const moe_file *f);
void moe_file_unmap(void *map, size_t bytes);

/* What a path names, without opening it; a symbolic link is followed when `follow` is true.
 * MOE_PATH_NONE when nothing can be found there (why[0..n) then holds the system's reason),
 * MOE_PATH_OTHER for a FIFO, device, socket (or an unfollowed link): *kind says which ("a
 * FIFO"). */
typedef enum moe_path_type {
    MOE_PATH_NONE,
    MOE_PATH_REGULAR,
    MOE_PATH_DIRECTORY,
    MOE_PATH_OTHER
} moe_path_type;
moe_path_type moe_file_path_type(const char *path, bool follow, const char **kind, char *why, size_t n);

/* Makes the directory `path` and any missing parents (mode 0755 on POSIX); true when a
 * directory (or a link to one) is there afterwards, else why[0..n) says what is there instead
 * or why it could not be made. `path` is modified while the parents are made and restored. */
bool moe_file_make_dirs(char *path, char *why, size_t n);

/* Calls fn for each regular file of `dir` (links are not followed) with its name, size and
 * modification time (ns since an epoch of the platform's); false when `dir` cannot be read. */
bool moe_file_list_dir(const char *dir,
                       void (*fn)(void *user, const char *name, uint64_t bytes, uint64_t mtime_ns),
                       void *user);

/* Removes the file `path`; true when it was removed. */
bool moe_file_remove(const char *path);

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
