/*
 * file.c — the bounded reader (file.h). Careful tools check a path before they trust it: the
 * path is stat()ed first, so a device or FIFO is refused without being opened at all (opening
 * some devices has side effects); it is then opened with O_NONBLOCK | O_NOCTTY, so that if it
 * was swapped for a FIFO in between, the open still returns at once; and the descriptor
 * itself is fstat()ed, which is the check that counts. Only then is the size compared with
 * the caller's limit and exactly that many bytes read.
 *
 * On Windows the same steps use its own calls: the path's attributes first (a directory is
 * refused), CreateFileW, then GetFileType on the handle (a character device or pipe is
 * refused) and GetFileSizeEx. Paths are UTF-8 everywhere in the API and become UTF-16 here.
 */
#define _POSIX_C_SOURCE 200809L
#include "file.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#if defined(_WIN32)
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#include <windows.h>
#else
#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>
#endif

#ifndef O_CLOEXEC
#define O_CLOEXEC 0
#endif

static moe_file_error fail(moe_file_error e, char *err, size_t n, const char *fmt, ...)
#if defined(__MINGW32__)
    __attribute__((format(gnu_printf, 4, 5)))
#elif defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;
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
#ifdef S_ISLNK
    if (S_ISLNK(m)) return "a symbolic link";
#endif
    return "a special file";
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

#if defined(_WIN32)

/* ---- Windows ------------------------------------------------------------------------------ */

/* The system's message for a Win32 error code, one line. */
static const char *win_error(DWORD code, char *buf, size_t n)
{
    DWORD len = FormatMessageA(FORMAT_MESSAGE_FROM_SYSTEM | FORMAT_MESSAGE_IGNORE_INSERTS, NULL, code, 0, buf,
                               (DWORD)(n > 0xffff ? 0xffff : n), NULL);
    while (len &&
           (buf[len - 1] == '\n' || buf[len - 1] == '\r' || buf[len - 1] == '.' || buf[len - 1] == ' '))
        buf[--len] = '\0';
    if (!len) snprintf(buf, n, "Windows error %lu", (unsigned long)code);
    return buf;
}

/* `path` (UTF-8) as UTF-16, malloc'd; NULL when it is not valid UTF-8 or memory runs out. */
static wchar_t *widen(const char *path)
{
    const int n = MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, path, -1, NULL, 0);
    if (n <= 0) return NULL;
    wchar_t *w = malloc((size_t)n * sizeof *w);
    if (w && MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, path, -1, w, n) != n) {
        free(w);
        w = NULL;
    }
    return w;
}

/* What a handle's GetFileType says it is, when not a file on a disk. */
static const char *handle_kind(DWORD type)
{
    return type == FILE_TYPE_CHAR   ? "a character device"
           : type == FILE_TYPE_PIPE ? "a pipe"
                                    : "a special file";
}

moe_file_error moe_file_open(moe_file *f, const char *path, uint64_t limit, const char *what, char *err,
                             size_t n)
{
    f->handle = NULL;
    f->size = 0;
    char why[256];
    wchar_t *w = widen(path);
    if (!w)
        return fail(MOE_FILE_CANNOT_OPEN, err, n,
                    "%s: cannot open: not a valid UTF-8 path (or out of memory)", path);
    const DWORD attrs = GetFileAttributesW(w);
    if (attrs != INVALID_FILE_ATTRIBUTES && (attrs & FILE_ATTRIBUTE_DIRECTORY)) {
        free(w);
        return fail(MOE_FILE_NOT_REGULAR, err, n, "%s: is a directory, not a regular file", path);
    }
    HANDLE h = CreateFileW(w, GENERIC_READ, FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE, NULL,
                           OPEN_EXISTING, FILE_ATTRIBUTE_NORMAL, NULL);
    const DWORD code = GetLastError();
    free(w);
    if (h == INVALID_HANDLE_VALUE)
        return fail(MOE_FILE_CANNOT_OPEN, err, n, "%s: cannot open: %s", path,
                    win_error(code, why, sizeof why));
    const DWORD type = GetFileType(h);
    if (type != FILE_TYPE_DISK) {
        CloseHandle(h);
        return fail(MOE_FILE_NOT_REGULAR, err, n, "%s: is %s, not a regular file", path, handle_kind(type));
    }
    LARGE_INTEGER size;
    if (!GetFileSizeEx(h, &size)) {
        const DWORD e = GetLastError();
        CloseHandle(h);
        return fail(MOE_FILE_READ_FAILED, err, n, "%s: cannot stat the open file: %s", path,
                    win_error(e, why, sizeof why));
    }
    if (size.QuadPart < 0 || (uint64_t)size.QuadPart > limit) {
        CloseHandle(h);
        return fail(MOE_FILE_TOO_LARGE, err, n, "%s: %llu bytes, more than the %llu bytes allowed for %s",
                    path, (unsigned long long)size.QuadPart, (unsigned long long)limit, what);
    }
    f->handle = h;
    f->size = (uint64_t)size.QuadPart;
    return MOE_FILE_OK;
}

moe_file_error moe_file_pread(const moe_file *f, const char *path, uint64_t offset, void *buf, size_t bytes,
                              char *err, size_t n)
{
    char why[256];
    size_t done = 0;
    while (done < bytes) {
        /* ReadFile takes a DWORD count: 1 GiB at a time */
        const DWORD want = bytes - done > ((size_t)1 << 30) ? (DWORD)1 << 30 : (DWORD)(bytes - done);
        const uint64_t at = offset + done;
        OVERLAPPED o = {.Offset = (DWORD)at, .OffsetHigh = (DWORD)(at >> 32)};
        DWORD got = 0;
        if (!ReadFile(f->handle, (char *)buf + done, want, &got, &o)) {
            const DWORD e = GetLastError();
            if (e != ERROR_HANDLE_EOF)
                return fail(MOE_FILE_READ_FAILED, err, n, "%s: cannot read: %s", path,
                            win_error(e, why, sizeof why));
            got = 0;
        }
        if (got == 0)
            return fail(
                MOE_FILE_READ_FAILED, err, n,
                "%s: the file shrank while being read (%llu bytes expected at offset %llu, %zu there)", path,
                (unsigned long long)bytes, (unsigned long long)offset, done);
        done += got;
    }
    return MOE_FILE_OK;
}

void moe_file_close(moe_file *f)
{
    if (f->handle) CloseHandle(f->handle);
    f->handle = NULL;
}

void *moe_file_map(const moe_file *f)
{
    if (!f->handle || f->size == 0 || f->size > SIZE_MAX) return NULL;
    HANDLE m = CreateFileMappingW(f->handle, NULL, PAGE_READONLY, 0, 0, NULL);
    if (!m) return NULL;
    void *map = MapViewOfFile(m, FILE_MAP_READ, 0, 0, (SIZE_T)f->size);
    CloseHandle(m); /* the view keeps the mapping */
    return map;
}

void moe_file_unmap(void *map, size_t bytes)
{
    (void)bytes;
    if (map) UnmapViewOfFile(map);
}

moe_path_type moe_file_path_type(const char *path, bool follow, const char **kind, char *why, size_t n)
{
    *kind = "nothing";
    wchar_t *w = widen(path);
    if (!w) {
        if (n) snprintf(why, n, "not a valid UTF-8 path (or out of memory)");
        return MOE_PATH_NONE;
    }
    const DWORD attrs = GetFileAttributesW(w);
    const DWORD code = GetLastError();
    moe_path_type t = MOE_PATH_NONE;
    if (attrs == INVALID_FILE_ATTRIBUTES) {
        if (n) win_error(code, why, n);
    } else if ((attrs & FILE_ATTRIBUTE_REPARSE_POINT) && !follow) {
        *kind = "a symbolic link";
        t = MOE_PATH_OTHER;
    } else if (attrs & FILE_ATTRIBUTE_DIRECTORY) {
        *kind = "a directory";
        t = MOE_PATH_DIRECTORY;
    } else if (attrs & FILE_ATTRIBUTE_DEVICE) {
        *kind = "a device";
        t = MOE_PATH_OTHER;
    } else {
        *kind = "a regular file";
        t = MOE_PATH_REGULAR;
    }
    free(w);
    return t;
}

/* Makes one directory; when it was not made (one already there too: moe_file_make_dirs judges
 * what it is), the system's reason in why[0..n). */
static void make_dir(const char *path, char *why, size_t n)
{
    wchar_t *w = widen(path);
    if (!(w && CreateDirectoryW(w, NULL)) && n) {
        if (w)
            win_error(GetLastError(), why, n);
        else
            snprintf(why, n, "not a valid UTF-8 path (or out of memory)");
    }
    free(w);
}

/* Each parent after the root ("C:\\", "\\\\server\\share\\" or "/"), either separator, then the
 * directory itself; what is there afterwards is moe_file_make_dirs' to judge. */
static void make_dirs(char *path, char *why, size_t n)
{
    for (char *p = path + 1; *p; p++) {
        if ((*p != '/' && *p != '\\') || p[-1] == ':' || p[-1] == '/' || p[-1] == '\\') continue;
        const char c = *p;
        *p = '\0';
        make_dir(path, NULL, 0);
        *p = c;
    }
    make_dir(path, why, n);
}

bool moe_file_list_dir(const char *dir,
                       void (*fn)(void *user, const char *name, uint64_t bytes, uint64_t mtime_ns),
                       void *user)
{
    const size_t len = strlen(dir);
    char *pattern = malloc(len + 3);
    if (!pattern) return false;
    snprintf(pattern, len + 3, "%s\\*", dir);
    wchar_t *w = widen(pattern);
    free(pattern);
    if (!w) return false;
    WIN32_FIND_DATAW e;
    HANDLE h = FindFirstFileW(w, &e);
    free(w);
    if (h == INVALID_HANDLE_VALUE) return GetLastError() == ERROR_FILE_NOT_FOUND;
    do {
        if (e.dwFileAttributes &
            (FILE_ATTRIBUTE_DIRECTORY | FILE_ATTRIBUTE_REPARSE_POINT | FILE_ATTRIBUTE_DEVICE))
            continue;
        char name[MAX_PATH * 3];
        if (!WideCharToMultiByte(CP_UTF8, 0, e.cFileName, -1, name, (int)sizeof name, NULL, NULL)) continue;
        const uint64_t ticks =
            (uint64_t)e.ftLastWriteTime.dwHighDateTime << 32 | e.ftLastWriteTime.dwLowDateTime;
        fn(user, name, (uint64_t)e.nFileSizeHigh << 32 | e.nFileSizeLow, ticks * 100u); /* 100 ns ticks */
    } while (FindNextFileW(h, &e));
    FindClose(h);
    return true;
}

bool moe_file_remove(const char *path)
{
    wchar_t *w = widen(path);
    const bool ok = w && DeleteFileW(w);
    free(w);
    return ok;
}

moe_file_error moe_file_write_atomic(const char *path, const void *head, size_t head_size, const void *data,
                                     size_t size, char *err, size_t n)
{
    static atomic_uint serial;
    char tmp[1200], why[256];
    if (snprintf(tmp, sizeof tmp, "%s.%lu.%u.tmp", path, (unsigned long)GetCurrentProcessId(),
                 atomic_fetch_add(&serial, 1u)) >= (int)sizeof tmp)
        return fail(MOE_FILE_CANNOT_OPEN, err, n, "%s: the path is too long", path);
    wchar_t *wtmp = widen(tmp), *wpath = widen(path);
    if (!wtmp || !wpath) {
        free(wtmp);
        free(wpath);
        return fail(MOE_FILE_CANNOT_OPEN, err, n,
                    "cannot create %s: not a valid UTF-8 path (or out of memory)", tmp);
    }
    /* CREATE_NEW: never through a file or a link someone else put there */
    HANDLE h = CreateFileW(wtmp, GENERIC_WRITE, 0, NULL, CREATE_NEW, FILE_ATTRIBUTE_NORMAL, NULL);
    if (h == INVALID_HANDLE_VALUE) {
        const DWORD e = GetLastError();
        free(wtmp);
        free(wpath);
        return fail(MOE_FILE_CANNOT_OPEN, err, n, "cannot create %s: %s", tmp, win_error(e, why, sizeof why));
    }
    DWORD code = 0;
    const void *parts[2] = {head, data};
    const size_t sizes[2] = {head_size, size};
    for (int i = 0; i < 2 && !code; i++) {
        for (size_t done = 0; done < sizes[i] && !code;) {
            const DWORD want =
                sizes[i] - done > ((size_t)1 << 30) ? (DWORD)1 << 30 : (DWORD)(sizes[i] - done);
            DWORD put = 0;
            if (!WriteFile(h, (const char *)parts[i] + done, want, &put, NULL))
                code = GetLastError();
            else if (put == 0)
                code = ERROR_WRITE_FAULT;
            done += put;
        }
    }
    if (!CloseHandle(h) && !code) code = GetLastError();
    if (!code && !MoveFileExW(wtmp, wpath, MOVEFILE_REPLACE_EXISTING)) code = GetLastError();
    if (code) DeleteFileW(wtmp);
    free(wtmp);
    free(wpath);
    if (code)
        return fail(MOE_FILE_WRITE_FAILED, err, n, "cannot write %s: %s", path,
                    win_error(code, why, sizeof why));
    return MOE_FILE_OK;
}

#else /* POSIX */

/* ---- POSIX -------------------------------------------------------------------------------- */

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

void *moe_file_map(const moe_file *f)
{
    if (f->fd < 0 || f->size == 0 || f->size > SIZE_MAX) return NULL;
    void *map = mmap(NULL, (size_t)f->size, PROT_READ, MAP_PRIVATE, f->fd, 0);
    return map == MAP_FAILED ? NULL : map;
}

void moe_file_unmap(void *map, size_t bytes)
{
    if (map) munmap(map, bytes);
}

moe_path_type moe_file_path_type(const char *path, bool follow, const char **kind, char *why, size_t n)
{
    struct stat sb;
    *kind = "nothing";
    if ((follow ? stat(path, &sb) : lstat(path, &sb)) != 0) {
        if (n) snprintf(why, n, "%s", strerror(errno));
        return MOE_PATH_NONE;
    }
    *kind = moe_file_kind(sb.st_mode);
    return S_ISREG(sb.st_mode) ? MOE_PATH_REGULAR : S_ISDIR(sb.st_mode) ? MOE_PATH_DIRECTORY : MOE_PATH_OTHER;
}

/* Each parent, then the directory itself, the last one's failure (if any) in why[0..n); what
 * is there afterwards is moe_file_make_dirs' to judge (a parent that could not be made leaves
 * the last mkdir without one, and says so). */
static void make_dirs(char *path, char *why, size_t n)
{
    for (char *p = path + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        (void)mkdir(path, 0755);
        *p = '/';
    }
    if (mkdir(path, 0755) != 0 && n) snprintf(why, n, "%s", strerror(errno));
}

bool moe_file_list_dir(const char *dir,
                       void (*fn)(void *user, const char *name, uint64_t bytes, uint64_t mtime_ns),
                       void *user)
{
    DIR *d = opendir(dir);
    if (!d) return false;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        struct stat st;
        if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode)) continue;
        fn(user, e->d_name, (uint64_t)st.st_size,
           (uint64_t)st.st_mtim.tv_sec * 1000000000u + (uint64_t)st.st_mtim.tv_nsec);
    }
    closedir(d);
    return true;
}

bool moe_file_remove(const char *path)
{
    return remove(path) == 0;
}

#endif

bool moe_file_make_dirs(char *path, char *why, size_t n)
{
    char made[256] = "", found[256] = "";
    make_dirs(path, made, sizeof made);
    /* "Already exists" is success only for a directory (or a link to one): a file of that
     * name would make every later write into it fail for a reason the caller never sees. */
    const char *kind = "nothing";
    const moe_path_type t = moe_file_path_type(path, true, &kind, found, sizeof found);
    if (t == MOE_PATH_DIRECTORY) return true;
    if (n) {
        if (t == MOE_PATH_NONE)
            snprintf(why, n, "%s cannot be created: %s", path, made[0] ? made : found);
        else
            snprintf(why, n, "%s is %s, not a directory", path, kind);
    }
    return false;
}
