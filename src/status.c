/*
 * status.c — status names, error details (per context and per thread), logging, version, and
 * the one monotonic clock the backends time with.
 *
 * The library never prints: every message goes into the context's detail buffer, the
 * calling thread's last-error buffer, and the optional log callback.
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime, in platform/system.h */
#include "internal.h"
#include "platform/system.h"

#include <stdio.h>
#include <string.h>

#define MOE_STR2(x) #x
#define MOE_STR(x)  MOE_STR2(x)

static _Thread_local char tls_error[MOE_ERROR_MAX];

const char *moe_status_string(moe_status status)
{
    switch (status) {
    case MOE_OK:
        return "MOE_OK";
    case MOE_ERROR_NULL_POINTER:
        return "MOE_ERROR_NULL_POINTER";
    case MOE_ERROR_INVALID_SIZE:
        return "MOE_ERROR_INVALID_SIZE";
    case MOE_ERROR_INVALID_CONFIG:
        return "MOE_ERROR_INVALID_CONFIG";
    case MOE_ERROR_SIZE_OVERFLOW:
        return "MOE_ERROR_SIZE_OVERFLOW";
    case MOE_ERROR_TOKEN_BUDGET:
        return "MOE_ERROR_TOKEN_BUDGET";
    case MOE_ERROR_INVALID_ARGUMENT:
        return "MOE_ERROR_INVALID_ARGUMENT";
    case MOE_ERROR_OUT_OF_MEMORY:
        return "MOE_ERROR_OUT_OF_MEMORY";
    case MOE_ERROR_OUT_OF_DEVICE_MEMORY:
        return "MOE_ERROR_OUT_OF_DEVICE_MEMORY";
    case MOE_ERROR_BACKEND_UNAVAILABLE:
        return "MOE_ERROR_BACKEND_UNAVAILABLE";
    case MOE_ERROR_DEVICE_LOST:
        return "MOE_ERROR_DEVICE_LOST";
    case MOE_ERROR_BACKEND:
        return "MOE_ERROR_BACKEND";
    case MOE_ERROR_UNSUPPORTED:
        return "MOE_ERROR_UNSUPPORTED";
    case MOE_ERROR_IO:
        return "MOE_ERROR_IO";
    case MOE_ERROR_FORMAT:
        return "MOE_ERROR_FORMAT";
    case MOE_ERROR_INTERNAL:
        return "MOE_ERROR_INTERNAL";
    case MOE_ERROR_BUSY:
        return "MOE_ERROR_BUSY";
    }
    return "MOE_ERROR_UNKNOWN";
}

const char *moe_last_error(void)
{
    return tls_error;
}

const char *moe_version(void)
{
    return MOE_STR(MOE_VERSION_MAJOR) "." MOE_STR(MOE_VERSION_MINOR) "." MOE_STR(MOE_VERSION_PATCH);
}

int moe_version_number(void)
{
    return MOE_VERSION_NUMBER;
}

static void vlog(moe_context *ctx, moe_log_level level, const char *msg)
{
    if (ctx && ctx->log && level <= ctx->log_level) ctx->log(level, msg, ctx->log_user_data);
}

moe_status moe_fail(moe_context *ctx, moe_status status, const char *fmt, ...)
{
    char msg[MOE_ERROR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    memcpy(tls_error, msg, sizeof msg);
    if (ctx) {
        memcpy(ctx->error, msg, sizeof msg);
        vlog(ctx, MOE_LOG_ERROR, msg);
    }
    return status;
}

void moe_clear_error(moe_context *ctx)
{
    tls_error[0] = '\0';
    if (ctx) ctx->error[0] = '\0';
}

void moe_log(moe_context *ctx, moe_log_level level, const char *fmt, ...)
{
    if (!ctx || !ctx->log || level > ctx->log_level) return;
    char msg[MOE_ERROR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    vlog(ctx, level, msg);
}

bool moe_bytes_of(size_t elem_size, int64_t a, int64_t b, int64_t c, size_t *out)
{
    if (a < 0 || b < 0 || c < 0) return false;
    if ((uint64_t)a > SIZE_MAX || (uint64_t)b > SIZE_MAX || (uint64_t)c > SIZE_MAX) return false;
    size_t n = elem_size;
    return moe_mul_size(n, (size_t)a, &n) && moe_mul_size(n, (size_t)b, &n) &&
           moe_mul_size(n, (size_t)c, &n) && (*out = n, true);
}

double moe_now_ms(void)
{
    return (double)moe_sys_now_ns() * 1e-6;
}
