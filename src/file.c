/*
 * file.c — the bounded reader (file.h). Careful tools check a path before they trust it: the
 * path is stat()ed first, so a device or FIFO is refused without being opened at all (opening
 * some devices has side effects); it is then opened with O_NONBLOCK | O_NOCTTY, so that if it
 * was swapped for a FIFO in between, the open still returns at once; and the descriptor
 * itself is fstat()ed, which is the check that counts. Only then is the size compared with
 * the caller's limit and exactly that many bytes read.
 */
#define _POSIX_C_SOURCE 200809L
#include "file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef O_CLOEXEC
#define O_CLOEXEC 0
#endif

static moe_file_error fail(moe_file_error e, char *err, size_t n, const char *fmt, ...)
{
    if (n) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, n, fmt, ap);
        va_end(ap);
    }
    return e;
}

const char *moe_file_kind(mode_t m)
{
    if (S_ISREG(m)) return "a regular file";
    if (S_ISDIR(m)) return "a directory";
    if (S_ISFIFO(m)) return "a FIFO";
    if (S_ISCHR(m)) return "a character device";
    if (S_ISBLK(m)) return "a block device";
#ifdef S_ISSOCK
    if (S_ISSOCK(m)) return "a socket";
#endif
    if (S_ISLNK(m)) return "a symbolic link";
    return "a special file";
}

static moe_file_error not_regular(const char *path, mode_t m, char *err, size_t n)
{
    return fail(MOE_FILE_NOT_REGULAR, err, n, "%s: is %s, not a regular file", path, moe_file_kind(m));
}

moe_file_error moe_file_open(moe_file *f, const char *path, uint64_t limit, const char *what, char *err,
                             size_t n)
{
    f->fd = -1;
    f->size = 0;
    struct stat sb;
    if (stat(path, &sb) == 0 && !S_ISREG(sb.st_mode)) return not_regular(path, sb.st_mode, err, n);
    int fd;
    do fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    while (fd < 0 && errno == EINTR);
    if (fd < 0) return fail(MOE_FILE_CANNOT_OPEN, err, n, "%s: cannot open: %s", path, strerror(errno));
    if (fstat(fd, &sb) != 0) {
        const int e = errno;
        close(fd);
        return fail(MOE_FILE_READ_FAILED, err, n, "%s: cannot stat the open file: %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return not_regular(path, sb.st_mode, err, n);
    }
    if (sb.st_size < 0 || (uint64_t)sb.st_size > limit) {
        close(fd);
        return fail(MOE_FILE_TOO_LARGE, err, n, "%s: %llu bytes, more than the %llu bytes allowed for %s",
                    path, (unsigned long long)sb.st_size, (unsigned long long)limit, what);
    }
    /* A regular file never blocks, but some file systems (FUSE, NFS) honour O_NONBLOCK with
     * EAGAIN on reads: plain blocking reads from here on. */
    const int flags = fcntl(fd, F_GETFL);
    if (flags != -1) (void)fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
    f->fd = fd;
    f->size = (uint64_t)sb.st_size;
    return MOE_FILE_OK;
}

moe_file_error moe_file_pread(const moe_file *f, const char *path, uint64_t offset, void *buf, size_t bytes,
                              char *err, size_t n)
{
    size_t done = 0;
    while (done < bytes) {
        const ssize_t r = pread(f->fd, (char *)buf + done, bytes - done, (off_t)(offset + done));
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return fail(MOE_FILE_READ_FAILED, err, n, "%s: cannot read: %s", path, strerror(errno));
        if (r == 0)
            return fail(
                MOE_FILE_READ_FAILED, err, n,
                "%s: the file shrank while being read (%llu bytes expected at offset %llu, %zu there)", path,
                (unsigned long long)bytes, (unsigned long long)offset, done);
        done += (size_t)r;
    }
    return MOE_FILE_OK;
}

void moe_file_close(moe_file *f)
{
    if (f->fd >= 0) close(f->fd);
    f->fd = -1;
}

moe_file_error moe_file_read_all(const char *path, uint64_t limit, const char *what,
                                 void *(*alloc_fn)(size_t), void (*free_fn)(void *), uint8_t **out,
                                 size_t *size, char *err, size_t n)
{
    moe_file f;
    if (limit > (uint64_t)SIZE_MAX - 1) limit = (uint64_t)SIZE_MAX - 1;
    moe_file_error e = moe_file_open(&f, path, limit, what, err, n);
    if (e != MOE_FILE_OK) return e;
    const size_t bytes = (size_t)f.size;
    uint8_t *buf = alloc_fn(bytes + 1);
    if (!buf) {
        moe_file_close(&f);
        return fail(MOE_FILE_NO_MEMORY, err, n, "%s: out of memory for %zu bytes", path, bytes + 1);
    }
    e = moe_file_pread(&f, path, 0, buf, bytes, err, n);
    moe_file_close(&f);
    if (e != MOE_FILE_OK) {
        free_fn(buf);
        return e;
    }
    buf[bytes] = 0;
    *out = buf;
    *size = bytes;
    return MOE_FILE_OK;
}

moe_file_error moe_file_write_atomic(const char *path, const void *head, size_t head_size, const void *data,
                                     size_t size, char *err, size_t n)
{
    static atomic_uint serial;
    char tmp[1200];
    if (snprintf(tmp, sizeof tmp, "%s.%ld.%u.tmp", path, (long)getpid(), atomic_fetch_add(&serial, 1u)) >=
        (int)sizeof tmp)
        return fail(MOE_FILE_CANNOT_OPEN, err, n, "%s: the path is too long", path);
    const int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) return fail(MOE_FILE_CANNOT_OPEN, err, n, "cannot create %s: %s", tmp, strerror(errno));
    /* errno of the first failure (EIO where a call set none): fclose reports what a buffered
     * write could not do. */
    int why = 0;
    FILE *f = fdopen(fd, "wb");
    if (!f) {
        why = errno ? errno : EIO;
        close(fd);
    }
    if (f && head_size && fwrite(head, 1, head_size, f) != head_size) why = errno ? errno : EIO;
    if (f && !why && size && fwrite(data, 1, size, f) != size) why = errno ? errno : EIO;
    if (f && fclose(f) != 0 && !why) why = errno ? errno : EIO;
    if (!why && rename(tmp, path) != 0) why = errno ? errno : EIO;
    if (why) {
        remove(tmp);
        return fail(MOE_FILE_WRITE_FAILED, err, n, "cannot write %s: %s", path, strerror(why));
    }
    return MOE_FILE_OK;
}
