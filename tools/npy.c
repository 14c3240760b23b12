/*
 * npy.c — NumPy .npy files of float32 matrices (see npy.h). The header is a Python dict
 * literal, {'descr': '<f4', 'fortran_order': False, 'shape': (T, D), }, which is not JSON:
 * it is read by the small strict parser below, which accepts exactly what numpy writes (keys
 * in any order, either quote style, optional trailing commas) and nothing else.
 */
#include "npy.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

int npy_parse(const uint8_t *buf, size_t size, npy_array *out, char *err, size_t n)
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
    if (header_len > size - at) return fail(err, n, "the .npy header runs past the end of the file (truncated?)");
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
            if (word(&c, "True")) a.fortran_order = 1;
            else if (!word(&c, "False")) return fail(err, n, "fortran_order must be True or False");
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
        return fail(err, n, "the .npy header lacks '%s'", !have_descr ? "descr" : !have_order ? "fortran_order" : "shape");
    a.data = buf + at + header_len;
    a.data_bytes = size - at - header_len;
    *out = a;
    return 0;
}

int npy_check_f32_matrix(const npy_array *a, int64_t width, char *err, size_t n)
{
    if (strcmp(a->descr, "<f4"))
        return fail(err, n, "dtype '%s'; float32 ('<f4') expected", a->descr);
    if (a->fortran_order) return fail(err, n, "Fortran (column-major) order; C order expected");
    if (a->rank != 2) {
        char s[128] = "(";
        size_t at = 1;
        for (int i = 0; i < a->rank && at < sizeof s; i++)
            at += (size_t)snprintf(s + at, sizeof s - at, "%s%lld", i ? ", " : "", (long long)a->shape[i]);
        if (at < sizeof s) snprintf(s + at, sizeof s - at, ")");
        return fail(err, n, "shape %s has rank %d; a [tokens, hidden_size] matrix (rank 2) expected", s, a->rank);
    }
    if (width > 0 && a->shape[1] != width)
        return fail(err, n, "width %lld; the model's hidden_size is %lld", (long long)a->shape[1], (long long)width);
    if (a->shape[0] == 0 || a->shape[1] == 0) return fail(err, n, "the matrix is empty");
    const uint64_t need = (uint64_t)a->shape[0] * (uint64_t)a->shape[1];
    if (need > SIZE_MAX / 4 || a->data_bytes != (size_t)need * 4)
        return fail(err, n, "%zu bytes of data; shape (%lld, %lld) of float32 needs %llu (truncated?)", a->data_bytes,
                    (long long)a->shape[0], (long long)a->shape[1], (unsigned long long)need * 4);
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

int npy_read_f32_matrix(const char *path, int64_t width, float **data, int64_t *rows, int64_t *cols, char *err,
                        size_t n)
{
    FILE *f = fopen(path, "rb");
    if (!f) return fail(err, n, "%s: cannot open", path);
    size_t cap = 1 << 16, size = 0;
    uint8_t *buf = malloc(cap);
    while (buf) {
        size += fread(buf + size, 1, cap - size, f);
        if (size < cap) break;
        uint8_t *bigger = cap <= SIZE_MAX / 2 ? realloc(buf, cap * 2) : NULL;
        if (!bigger) {
            free(buf);
            buf = NULL;
        }
        buf = bigger, cap *= 2;
    }
    const bool bad = ferror(f);
    fclose(f);
    if (!buf || bad) {
        free(buf);
        return fail(err, n, "%s: cannot read", path);
    }
    npy_array a;
    char why[256];
    if (npy_parse(buf, size, &a, why, sizeof why) || npy_check_f32_matrix(&a, width, why, sizeof why)) {
        free(buf);
        return fail(err, n, "%s: %s", path, why);
    }
    float *out = malloc(a.data_bytes);
    if (!out) {
        free(buf);
        return fail(err, n, "%s: out of memory", path);
    }
    memcpy(out, a.data, a.data_bytes);
    if (!host_little_endian()) swap4((uint8_t *)out, a.data_bytes / 4);
    free(buf);
    *data = out;
    *rows = a.shape[0];
    *cols = a.shape[1];
    return 0;
}

int npy_write_f32_matrix(const char *path, const float *data, int64_t rows, int64_t cols, char *err, size_t n)
{
    char header[128];
    int len = snprintf(header, sizeof header, "{'descr': '<f4', 'fortran_order': False, 'shape': (%lld, %lld), }",
                       (long long)rows, (long long)cols);
    /* Pad with spaces and a newline so that the data starts on a 64-byte boundary. */
    const int total = (10 + len + 1 + 63) / 64 * 64;
    while (10 + len + 1 < total) header[len++] = ' ';
    header[len++] = '\n';
    const size_t plen = strlen(path) + sizeof ".partial";
    char *tmp = malloc(plen);
    if (!tmp) return fail(err, n, "%s: out of memory", path);
    snprintf(tmp, plen, "%s.partial", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        fail(err, n, "%s: cannot create", tmp);
        free(tmp);
        return -1;
    }
    const uint8_t pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (uint8_t)(len & 0xff), (uint8_t)(len >> 8)};
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
    ok = (fclose(f) == 0) && ok;
    if (!ok || rename(tmp, path) != 0) {
        remove(tmp);
        free(tmp);
        return fail(err, n, "%s: cannot write", path);
    }
    free(tmp);
    return 0;
}
