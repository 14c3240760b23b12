/*
 * npy.c — NumPy .npy files of float32 matrices (see npy.h). The header is a Python dict
 * literal, {'descr': '<f4', 'fortran_order': False, 'shape': (T, D), }, which is not JSON:
 * it is read by the small strict parser below, which accepts exactly what numpy writes (keys
 * in any order, either quote style, optional trailing commas) and nothing else. Inputs are
 * read through the library's bounded reader (../src/file.c, compiled in): a regular file only,
 * and no more bytes than the header's shape. Outputs are written the way careful tools write
 * them: atomically, and through a symbolic link rather than over it.
 */
#define _POSIX_C_SOURCE 200809L
#include "npy.h"

#include "../src/file.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#if !defined(_WIN32)
#include <unistd.h>
#endif

static int fail(char *err, size_t n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (n) vsnprintf(err, n, fmt, ap);
    va_end(ap);
    return -1;
}

typedef struct cursor {
    const char *p, *end;
} cursor;

static void skip_ws(cursor *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r')) c->p++;
}

static bool eat(cursor *c, char ch)
{
    skip_ws(c);
    if (c->p < c->end && *c->p == ch) {
        c->p++;
        return true;
    }
    return false;
}

/* A quoted Python string without escapes, into out[0..n). */
static bool quoted(cursor *c, char *out, size_t n)
{
    skip_ws(c);
    if (c->p >= c->end || (*c->p != '\'' && *c->p != '"')) return false;
    const char q = *c->p++;
    size_t len = 0;
    while (c->p < c->end && *c->p != q) {
        if (*c->p == '\\' || len + 1 >= n) return false;
        out[len++] = *c->p++;
    }
    if (c->p >= c->end) return false;
    c->p++;
    out[len] = '\0';
    return true;
}

static bool word(cursor *c, const char *w)
{
    skip_ws(c);
    const size_t len = strlen(w);
    if ((size_t)(c->end - c->p) < len || memcmp(c->p, w, len)) return false;
    c->p += len;
    return true;
}

static bool shape_tuple(cursor *c, npy_array *a)
{
    if (!eat(c, '(')) return false;
    a->rank = 0;
    for (;;) {
        if (eat(c, ')')) return true;
        skip_ws(c);
        if (c->p >= c->end || *c->p < '0' || *c->p > '9' || a->rank == NPY_MAX_DIMS) return false;
        int64_t v = 0;
        while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
            if (v > ((int64_t)1 << 56)) return false;
            v = v * 10 + (*c->p++ - '0');
        }
        if (c->p < c->end && *c->p == 'L') c->p++; /* Python 2 longs */
        a->shape[a->rank++] = v;
        if (eat(c, ',')) continue;
        return eat(c, ')');
    }
}

int npy_parse_header(const uint8_t *buf, size_t size, npy_array *out, size_t *data_offset, char *err,
                     size_t n)
{
    static const uint8_t magic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
    if (size < 10 || memcmp(buf, magic, sizeof magic))
        return fail(err, n, "not an .npy file (no \\x93NUMPY magic)");
    const unsigned major = buf[6];
    size_t header_len, at;
    if (major == 1) {
        header_len = (size_t)buf[8] | (size_t)buf[9] << 8;
        at = 10;
    } else if (major == 2 || major == 3) {
        if (size < 12) return fail(err, n, "truncated .npy header");
        header_len = (size_t)buf[8] | (size_t)buf[9] << 8 | (size_t)buf[10] << 16 | (size_t)buf[11] << 24;
        at = 12;
    } else {
        return fail(err, n, ".npy format version %u.%u is not supported", major, (unsigned)buf[7]);
    }
    if (header_len > NPY_MAX_HEADER)
        return fail(err, n, "the .npy header is %zu bytes, more than the %d accepted", header_len,
                    NPY_MAX_HEADER);
    if (header_len > size - at)
        return fail(err, n, "the .npy header runs past the end of the file (truncated?)");
    npy_array a;
    memset(&a, 0, sizeof a);
    cursor c = {(const char *)buf + at, (const char *)buf + at + header_len};
    bool have_descr = false, have_order = false, have_shape = false;
    if (!eat(&c, '{')) return fail(err, n, "the .npy header is not a Python dict");
    for (;;) {
        if (eat(&c, '}')) break;
        char key[32];
        if (!quoted(&c, key, sizeof key) || !eat(&c, ':')) return fail(err, n, "malformed .npy header dict");
        bool ok;
        if (!strcmp(key, "descr") && !have_descr) {
            ok = have_descr = quoted(&c, a.descr, sizeof a.descr);
        } else if (!strcmp(key, "fortran_order") && !have_order) {
            if (word(&c, "True"))
                a.fortran_order = 1;
            else if (!word(&c, "False"))
                return fail(err, n, "fortran_order must be True or False");
            ok = have_order = true;
        } else if (!strcmp(key, "shape") && !have_shape) {
            ok = have_shape = shape_tuple(&c, &a);
        } else {
            return fail(err, n, "unexpected or repeated key '%s' in the .npy header", key);
        }
        if (!ok) return fail(err, n, "malformed value of '%s' in the .npy header", key);
        if (eat(&c, ',')) continue;
        if (eat(&c, '}')) break;
        return fail(err, n, "malformed .npy header dict");
    }
    skip_ws(&c);
    if (c.p != c.end) return fail(err, n, "text after the .npy header dict");
    if (!have_descr || !have_order || !have_shape)
        return fail(err, n, "the .npy header lacks '%s'",
                    !have_descr   ? "descr"
                    : !have_order ? "fortran_order"
                                  : "shape");
    *out = a;
    *data_offset = at + header_len;
    return 0;
}

int npy_parse(const uint8_t *buf, size_t size, npy_array *out, char *err, size_t n)
{
    size_t at = 0;
    if (npy_parse_header(buf, size, out, &at, err, n)) return -1;
    out->data = buf + at;
    out->data_bytes = size - at;
    return 0;
}

int npy_check_f32_matrix(const npy_array *a, int64_t width, char *err, size_t n)
{
    if (strcmp(a->descr, "<f4")) return fail(err, n, "dtype '%s'; float32 ('<f4') expected", a->descr);
    if (a->fortran_order) return fail(err, n, "Fortran (column-major) order; C order expected");
    if (a->rank != 2) {
        char s[128] = "(";
        size_t at = 1;
        for (int i = 0; i < a->rank && at < sizeof s; i++)
            at += (size_t)snprintf(s + at, sizeof s - at, "%s%lld", i ? ", " : "", (long long)a->shape[i]);
        if (at < sizeof s) snprintf(s + at, sizeof s - at, ")");
        return fail(err, n, "shape %s has rank %d; a [tokens, hidden_size] matrix (rank 2) expected", s,
                    a->rank);
    }
    if (width > 0 && a->shape[1] != width)
        return fail(err, n, "width %lld; the model's hidden_size is %lld", (long long)a->shape[1],
                    (long long)width);
    if (a->shape[0] == 0 || a->shape[1] == 0) return fail(err, n, "the matrix is empty");
    const uint64_t need = (uint64_t)a->shape[0] * (uint64_t)a->shape[1];
    if (need > SIZE_MAX / 4 || a->data_bytes != (size_t)need * 4)
        return fail(err, n, "%zu bytes of data; shape (%lld, %lld) of float32 needs %llu (%s)", a->data_bytes,
                    (long long)a->shape[0], (long long)a->shape[1], (unsigned long long)need * 4,
                    need <= SIZE_MAX / 4 && a->data_bytes > (size_t)need * 4 ? "extra bytes after the matrix"
                                                                             : "truncated?");
    return 0;
}

static bool host_little_endian(void)
{
    const uint16_t one = 1;
    uint8_t b;
    memcpy(&b, &one, 1);
    return b == 1;
}

static void swap4(uint8_t *p, size_t count)
{
    for (size_t i = 0; i < count; i++, p += 4) {
        uint8_t t = p[0];
        p[0] = p[3], p[3] = t, t = p[1], p[1] = p[2], p[2] = t;
    }
}

int npy_read_f32_matrix(const char *path, int64_t width, float **data, int64_t *rows, int64_t *cols,
                        char *err, size_t n)
{
    /* The preamble and header first (at most NPY_MAX_HEADER + 12 bytes), then exactly the
     * bytes the header's shape needs, which must be the rest of the file: the allocation is
     * bounded by a shape the file's real size vouches for. */
    moe_file f;
    if (moe_file_open(&f, path, UINT64_MAX, "an .npy file", err, n) != MOE_FILE_OK) return -1;
    const size_t head = f.size < 12 + NPY_MAX_HEADER ? (size_t)f.size : 12 + NPY_MAX_HEADER;
    uint8_t *buf = malloc(head ? head : 1);
    if (!buf) {
        moe_file_close(&f);
        return fail(err, n, "%s: out of memory", path);
    }
    if (moe_file_pread(&f, path, 0, buf, head, err, n) != MOE_FILE_OK) {
        free(buf);
        moe_file_close(&f);
        return -1;
    }
    npy_array a;
    size_t at = 0;
    char why[256];
    int rc = npy_parse_header(buf, head, &a, &at, why, sizeof why);
    free(buf);
    if (rc == 0) {
        a.data_bytes = f.size - at > SIZE_MAX ? SIZE_MAX : (size_t)(f.size - at);
        rc = npy_check_f32_matrix(&a, width, why, sizeof why);
    }
    if (rc) {
        moe_file_close(&f);
        return fail(err, n, "%s: %s", path, why);
    }
    float *out = malloc(a.data_bytes);
    if (!out) {
        moe_file_close(&f);
        return fail(err, n, "%s: out of memory for %zu bytes", path, a.data_bytes);
    }
    rc = moe_file_pread(&f, path, at, out, a.data_bytes, err, n) == MOE_FILE_OK ? 0 : -1;
    moe_file_close(&f);
    if (rc) {
        free(out);
        return -1;
    }
    if (!host_little_endian()) swap4((uint8_t *)out, a.data_bytes / 4);
    *data = out;
    *rows = a.shape[0];
    *cols = a.shape[1];
    return 0;
}

/* ---- writing ----------------------------------------------------------------------------- */

/* The directory part of `path` ("." for a bare name) into out[0..cap). */
static void dir_of(const char *path, char *out, size_t cap)
{
    const char *slash = strrchr(path, '/');
#if defined(_WIN32) /* either separator there */
    const char *back = strrchr(path, '\\');
    if (back && (!slash || back > slash)) slash = back;
#endif
    if (!slash)
        snprintf(out, cap, ".");
    else if (slash == path)
        snprintf(out, cap, "/");
    else
        snprintf(out, cap, "%.*s", (int)(slash - path), path);
}

#if defined(_WIN32)
/* Windows: `path` itself (links there are a privileged, rare thing: not followed), which must
 * be absent, with its directory there, or a regular file. */
int npy_output_target(const char *path, char *target, size_t cap, int *exists, char *err, size_t n)
{
    if (!path[0]) return fail(err, n, "the output path is empty");
    const char *kind;
    char why[256];
    const moe_path_type t = moe_file_path_type(path, true, &kind, why, sizeof why);
    if (t == MOE_PATH_NONE) {
        char dir[NPY_PATH_MAX];
        dir_of(path, dir, sizeof dir);
        if (moe_file_path_type(dir, true, &kind, why, sizeof why) != MOE_PATH_DIRECTORY)
            return fail(err, n, "%s: cannot write: the directory %s does not exist", path, dir);
    } else if (t != MOE_PATH_REGULAR) {
        return fail(err, n, "%s: is %s; the output is written only to a regular file (or a new one)", path,
                    kind);
    }
    *exists = t == MOE_PATH_REGULAR;
    if (snprintf(target, cap, "%s", path) >= (int)cap) return fail(err, n, "%s: path too long", path);
    return 0;
}
#else
int npy_output_target(const char *path, char *target, size_t cap, int *exists, char *err, size_t n)
{
    char cur[NPY_PATH_MAX];
    if (!path[0]) return fail(err, n, "the output path is empty");
    if (snprintf(cur, sizeof cur, "%s", path) >= (int)sizeof cur)
        return fail(err, n, "%s: path too long", path);
    /* Follow symbolic links one hop at a time (as the kernel does, at most 40), so that a
     * dangling link still yields the path it points to. */
    for (int hops = 0;; hops++) {
        struct stat sb;
        if (lstat(cur, &sb) != 0) {
            if (errno != ENOENT) return fail(err, n, "%s: cannot write: %s", cur, strerror(errno));
            char dir[NPY_PATH_MAX];
            dir_of(cur, dir, sizeof dir);
            if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
                return fail(err, n, "%s: cannot write: the directory %s does not exist", cur, dir);
            *exists = 0;
            break;
        }
        if (S_ISREG(sb.st_mode)) {
            *exists = 1;
            break;
        }
        if (!S_ISLNK(sb.st_mode)) {
            const char *kind = moe_file_kind(sb.st_mode);
            if (strcmp(cur, path))
                return fail(err, n,
                            "%s: the link leads to %s, which is %s; the output is written only to a "
                            "regular file (or a new one)",
                            path, cur, kind);
            return fail(err, n, "%s: is %s; the output is written only to a regular file (or a new one)",
                        path, kind);
        }
        if (hops == 40) return fail(err, n, "%s: too many levels of symbolic links", path);
        char link[NPY_PATH_MAX];
        const ssize_t len = readlink(cur, link, sizeof link - 1);
        if (len < 0) return fail(err, n, "%s: cannot read the link: %s", cur, strerror(errno));
        if ((size_t)len >= sizeof link - 1) return fail(err, n, "%s: the link's target is too long", cur);
        link[len] = '\0';
        char next[NPY_PATH_MAX];
        char dir[NPY_PATH_MAX];
        dir_of(cur, dir, sizeof dir);
        const int w = link[0] == '/' ? snprintf(next, sizeof next, "%s", link)
                                     : snprintf(next, sizeof next, "%s/%s", dir, link);
        if (w < 0 || w >= (int)sizeof next) return fail(err, n, "%s: the link's target is too long", cur);
        memcpy(cur, next, (size_t)w + 1);
    }
    if (snprintf(target, cap, "%s", cur) >= (int)cap) return fail(err, n, "%s: path too long", cur);
    return 0;
}

#endif

int npy_write_f32_matrix(const char *path, const float *data, int64_t rows, int64_t cols, char *err, size_t n)
{
    char header[128];
    int len =
        snprintf(header, sizeof header, "{'descr': '<f4', 'fortran_order': False, 'shape': (%lld, %lld), }",
                 (long long)rows, (long long)cols);
    /* Pad with spaces and a newline so that the data starts on a 64-byte boundary. */
    const int total = (10 + len + 1 + 63) / 64 * 64;
    while (10 + len + 1 < total) header[len++] = ' ';
    header[len++] = '\n';
    const uint8_t pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (uint8_t)(len & 0xff), (uint8_t)(len >> 8)};

#if defined(_WIN32)
    /* Windows (little-endian): the file layer's atomic write, a new file renamed over `path`. */
    char target[NPY_PATH_MAX];
    int exists = 0;
    if (npy_output_target(path, target, sizeof target, &exists, err, n)) return -1;
    uint8_t head[sizeof pre + sizeof header];
    memcpy(head, pre, sizeof pre);
    memcpy(head + sizeof pre, header, (size_t)len);
    char why[1200];
    if (moe_file_write_atomic(target, head, sizeof pre + (size_t)len, data,
                              (size_t)rows * (size_t)cols * sizeof(float), why, sizeof why) != MOE_FILE_OK)
        return fail(err, n, "%s", why);
    return 0;
#else
    /* Written atomically where the data belongs: a new file, or the regular file `path` is or
     * (through symbolic links) points to, so a link stays a link. A temporary file in the
     * same directory, complete and synced, is renamed over it; a failure leaves no file. */
    char target[NPY_PATH_MAX], tmp[NPY_PATH_MAX + 16];
    int exists = 0;
    if (npy_output_target(path, target, sizeof target, &exists, err, n)) return -1;
    struct stat old;
    if (exists && stat(target, &old) != 0) exists = 0;
    snprintf(tmp, sizeof tmp, "%s.partial-XXXXXX", target);
    const int fd = mkstemp(tmp);
    if (fd < 0)
        return fail(err, n, "%s: cannot create a temporary file next to it: %s", target, strerror(errno));
    /* mkstemp makes the file 0600: give it the old file's owner and mode, or what a new file
     * would get under the umask. */
    if (exists) {
        const int owned = fchown(fd, old.st_uid, old.st_gid); /* only root may; else the file is ours */
        (void)owned;
        (void)fchmod(fd, old.st_mode & 07777);
    } else {
        const mode_t mask = umask(0);
        umask(mask);
        (void)fchmod(fd, 0666 & ~mask);
    }
    FILE *f = fdopen(fd, "wb");
    if (!f) {
        const int e = errno;
        close(fd);
        unlink(tmp);
        return fail(err, n, "%s: cannot write: %s", tmp, strerror(e));
    }
    bool ok = fwrite(pre, 1, sizeof pre, f) == sizeof pre && fwrite(header, 1, (size_t)len, f) == (size_t)len;
    const size_t count = (size_t)rows * (size_t)cols;
    if (host_little_endian()) {
        ok = ok && fwrite(data, sizeof(float), count, f) == count;
    } else {
        for (size_t i = 0; i < count && ok; i++) {
            uint8_t b[4];
            memcpy(b, &data[i], 4);
            swap4(b, 1);
            ok = fwrite(b, 1, 4, f) == 4;
        }
    }
    /* The first failure's errno: a short write, the flush, the sync, the close, the rename. */
    int e = ok ? 0 : errno ? errno : EIO;
    if (!e && (fflush(f) != 0 || fsync(fileno(f)) != 0)) e = errno;
    if (fclose(f) != 0 && !e) e = errno;
    if (!e && rename(tmp, target) != 0) e = errno;
    if (e) {
        unlink(tmp);
        return fail(err, n, "%s: cannot write: %s", target, strerror(e));
    }
    return 0;
#endif
}
