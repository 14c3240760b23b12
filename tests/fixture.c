/*
 * fixture.c — test model directories written from C (see fixture.h).
 */
#define _POSIX_C_SOURCE 200809L

#include "fixture.h"
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char *written[4096];
static bool is_dir[4096];
static size_t n_written;

static void remember(const char *path, bool dir)
{
    for (size_t i = 0; i < n_written; i++)
        if (!strcmp(written[i], path)) return;
    if (n_written < sizeof written / sizeof written[0]) {
        written[n_written] = strdup(path);
        is_dir[n_written++] = dir;
    }
}

void fx_cleanup(void)
{
    for (size_t i = n_written; i-- > 0;) {
        if (is_dir[i])
            rmdir(written[i]);
        else
            remove(written[i]);
        free(written[i]);
    }
    n_written = 0;
}

const char *fx_dtype_name(fx_dtype dt)
{
    static const char *names[] = {"F32", "F16", "BF16", "I32"};
    return names[dt];
}

static uint32_t bits_of(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    return x;
}

static float float_of(uint32_t x)
{
    float f;
    memcpy(&f, &x, 4);
    return f;
}

static uint16_t to_bf16(float f)
{
    const uint32_t x = bits_of(f);
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

static uint16_t to_f16(float f)
{
    const uint32_t x = bits_of(f);
    const uint32_t sign = (x >> 16) & 0x8000u;
    const int32_t exp = (int32_t)((x >> 23) & 0xffu) - 127 + 15;
    uint32_t man = x & 0x7fffffu;
    if (((x >> 23) & 0xffu) == 0xffu) return (uint16_t)(sign | 0x7c00u | (man ? 0x200u : 0u));
    if (exp >= 31) return (uint16_t)(sign | 0x7c00u);
    if (exp <= 0) {
        if (exp < -10) return (uint16_t)sign;
        man |= 0x800000u;
        const int shift = 14 - exp;
        uint32_t h = man >> shift;
        const uint32_t rem = man & ((1u << shift) - 1u), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (h & 1u))) h++;
        return (uint16_t)(sign | h);
    }
    uint32_t h = ((uint32_t)exp << 10) | (man >> 13);
    const uint32_t rem = man & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++;
    return (uint16_t)(sign | h);
}

static float from_f16(uint16_t h)
{
    const uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
    const float sign = (h & 0x8000u) ? -1.0f : 1.0f;
    if (exp == 0) return sign * (float)man * 5.9604644775390625e-8f;
    if (exp == 31) return man ? float_of(0x7fc00000u) : sign * float_of(0x7f800000u);
    return float_of(((uint32_t)(h & 0x8000u) << 16) | ((exp + 112u) << 23) | (man << 13));
}

float fx_round(fx_dtype dt, float v)
{
    switch (dt) {
    case FX_F16:
        return from_f16(to_f16(v));
    case FX_BF16:
        return float_of((uint32_t)to_bf16(v) << 16);
    default:
        return v;
    }
}

void fx_round_array(fx_dtype dt, float *v, size_t n)
{
    for (size_t i = 0; v && i < n; i++) v[i] = fx_round(dt, v[i]);
}

char *fx_mkdir(const char *parent, const char *name)
{
    char buf[1024];
    if (!parent) {
        char prefix[128];
        snprintf(prefix, sizeof prefix, "moe_test_%s_", name);
        if (!h_make_temp_dir(prefix, buf, sizeof buf)) return NULL;
    } else {
        snprintf(buf, sizeof buf, "%s/%s", parent, name);
        if (h_mkdir(buf) != 0) return NULL;
    }
    remember(buf, true);
    return strdup(buf);
}

static size_t elem_size(fx_dtype dt)
{
    return dt == FX_F32 || dt == FX_I32 ? 4 : 2;
}

int fx_write_raw(const char *path, uint64_t hlen, const char *header, size_t header_bytes, const void *data,
                 size_t data_bytes)
{
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    remember(path, false);
    uint8_t len[8];
    for (int i = 0; i < 8; i++) len[i] = (uint8_t)(hlen >> (8 * i));
    bool ok = fwrite(len, 1, 8, f) == 8 && fwrite(header, 1, header_bytes, f) == header_bytes &&
              (!data_bytes || fwrite(data, 1, data_bytes, f) == data_bytes);
    return fclose(f) == 0 && ok ? 0 : -1;
}

int fx_write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    remember(path, false);
    const bool ok = fputs(text, f) >= 0;
    return fclose(f) == 0 && ok ? 0 : -1;
}

int fx_write_sparse(const char *path, uint64_t size)
{
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    remember(path, false);
    const bool ok = ftruncate(fileno(f), (off_t)size) == 0;
    return fclose(f) == 0 && ok ? 0 : -1;
}

#if defined(_WIN32) /* no FIFOs; links need a privilege: the cases that plant them are skipped */
int fx_mkfifo(const char *path)
{
    (void)path;
    return FX_UNSUPPORTED;
}

int fx_symlink(const char *target, const char *path)
{
    (void)target, (void)path;
    return FX_UNSUPPORTED;
}
#else
int fx_mkfifo(const char *path)
{
    if (mkfifo(path, 0600) != 0) return -1;
    remember(path, false);
    return 0;
}

int fx_symlink(const char *target, const char *path)
{
    if (symlink(target, path) != 0) return -1;
    remember(path, false);
    return 0;
}
#endif

int fx_write_safetensors(const char *path, const fx_tensor *t, size_t n, bool misalign)
{
    size_t data_bytes = 0;
    for (size_t i = 0; i < n; i++)
        data_bytes +=
            elem_size(t[i].dtype) * (size_t)t[i].shape[0] * (size_t)(t[i].n_dims == 2 ? t[i].shape[1] : 1);
    size_t cap = 256 + n * 320;
    char *hdr = malloc(cap + 16);
    uint8_t *data = malloc(data_bytes ? data_bytes : 1);
    if (!hdr || !data) {
        free(hdr);
        free(data);
        return -1;
    }
    size_t at = (size_t)snprintf(hdr, cap, "{\"__metadata__\":{\"format\":\"pt\"}");
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        const size_t count = (size_t)t[i].shape[0] * (size_t)(t[i].n_dims == 2 ? t[i].shape[1] : 1);
        const size_t bytes = count * elem_size(t[i].dtype);
        if (t[i].n_dims == 2)
            at += (size_t)snprintf(hdr + at, cap - at, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[%lld,%lld],",
                                   t[i].name, fx_dtype_name(t[i].dtype), (long long)t[i].shape[0],
                                   (long long)t[i].shape[1]);
        else
            at += (size_t)snprintf(hdr + at, cap - at, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[%lld],",
                                   t[i].name, fx_dtype_name(t[i].dtype), (long long)t[i].shape[0]);
        at += (size_t)snprintf(hdr + at, cap - at, "\"data_offsets\":[%zu,%zu]}", off, off + bytes);
        for (size_t j = 0; j < count; j++) {
            uint8_t *p = data + off + j * elem_size(t[i].dtype);
            const float v = t[i].data[j];
            if (t[i].dtype == FX_F32) {
                memcpy(p, &v, 4);
            } else if (t[i].dtype == FX_I32) {
                const int32_t iv = (int32_t)v;
                memcpy(p, &iv, 4);
            } else {
                const uint16_t h = t[i].dtype == FX_F16 ? to_f16(v) : to_bf16(v);
                memcpy(p, &h, 2);
            }
        }
        off += bytes;
    }
    at += (size_t)snprintf(hdr + at, cap - at, "}");
    /* Pad with spaces (as the Python writer does) so the data starts at 0 mod 8, or 1 mod 8. */
    const size_t want = misalign ? 1 : 0;
    while ((8 + at) % 8 != want) hdr[at++] = ' ';
    const int rc = fx_write_raw(path, at, hdr, at, data, data_bytes);
    free(hdr);
    free(data);
    return rc;
}
