/*
 * moe-info — lists every backend this build of moe has, each device with its vendor, type,
 * driver, API version, memory and the limits the kernels depend on, and the backend and
 * device AUTO picks on this machine (by creating an AUTO context, so MOE_BACKEND is honoured
 * exactly as an application would see it), and where the on-disk kernel cache is, how large it
 * is and its bound. --json prints the same as one JSON object.
 * Uses only the public API (moe.h).
 */
#include <moe.h>

#include <stdio.h>
#include <string.h>

static const char *type_name(moe_device_type t)
{
    switch (t) {
    case MOE_DEVICE_TYPE_CPU:
        return "cpu";
    case MOE_DEVICE_TYPE_INTEGRATED_GPU:
        return "integrated-gpu";
    case MOE_DEVICE_TYPE_DISCRETE_GPU:
        return "discrete-gpu";
    case MOE_DEVICE_TYPE_VIRTUAL_GPU:
        return "virtual-gpu";
    case MOE_DEVICE_TYPE_OTHER:
        break;
    }
    return "other";
}

/* A JSON string literal. */
static void jstr(const char *s)
{
    putchar('"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            printf("\\%c", *p);
        else if (*p < 0x20)
            printf("\\u%04x", *p);
        else
            putchar(*p);
    }
    putchar('"');
}

static void print_device(const moe_device_info *d, int json, int first)
{
    if (json) {
        printf("%s\n      {\"index\": %d, \"name\": ", first ? "" : ",", d->index);
        jstr(d->name);
        printf(", \"vendor\": ");
        jstr(d->vendor);
        printf(", \"type\": \"%s\", \"driver\": ", type_name(d->type));
        jstr(d->driver);
        printf(", \"api_version\": ");
        jstr(d->api_version);
        printf(", \"memory_bytes\": %llu, \"compute_units\": %d, \"max_workgroup_size\": %llu, "
               "\"shared_memory_bytes\": %llu, \"subgroup_size\": %d, \"fp16\": %s}",
               (unsigned long long)d->memory_bytes, d->compute_units,
               (unsigned long long)d->max_workgroup_size, (unsigned long long)d->shared_memory_bytes,
               d->subgroup_size, d->fp16 ? "true" : "false");
        return;
    }
    printf("  device %d: %s\n", d->index, d->name);
    printf("    vendor:           %s\n", d->vendor);
    printf("    type:             %s\n", type_name(d->type));
    printf("    driver:           %s\n", d->driver);
    printf("    api version:      %s\n", d->api_version[0] ? d->api_version : "-");
    printf("    memory:           %.1f GiB\n", (double)d->memory_bytes / (1024.0 * 1024.0 * 1024.0));
    if (d->compute_units)
        printf("    compute units:    %d\n", d->compute_units);
    else
        printf("    compute units:    unknown\n");
    if (d->max_workgroup_size)
        printf("    max workgroup:    %llu invocations\n", (unsigned long long)d->max_workgroup_size);
    else
        printf("    max workgroup:    n/a\n");
    if (d->shared_memory_bytes)
        printf("    shared memory:    %llu bytes\n", (unsigned long long)d->shared_memory_bytes);
    else
        printf("    shared memory:    n/a\n");
    printf("    subgroup size:    %d\n", d->subgroup_size);
    printf("    fp16:             %s\n", d->fp16 ? "yes" : "no");
}

int main(int argc, char **argv)
{
    int json = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json")) {
            json = 1;
        } else {
            /* Asked-for help goes to stdout (exit 0); a wrong flag gets it on stderr (exit 2). */
            const int help = !strcmp(argv[i], "--help") || !strcmp(argv[i], "-h");
            fprintf(help ? stdout : stderr,
                    "usage: moe-info [--json]\n"
                    "Lists moe's backends, their devices and limits, and what AUTO picks.\n");
            return help ? 0 : 2;
        }
    }
    static const moe_backend_kind kinds[] = {MOE_BACKEND_CPU, MOE_BACKEND_VULKAN, MOE_BACKEND_OPENCL};
    int rc = 0;
    if (json)
        printf("{\"version\": \"%s\", \"backends\": [", moe_version());
    else
        printf("moe %s\n", moe_version());
    for (size_t b = 0; b < sizeof kinds / sizeof kinds[0]; b++) {
        const char *name = moe_backend_name(kinds[b]);
        const int built = moe_backend_is_built(kinds[b]);
        int count = 0;
        const moe_status st = built ? moe_device_count(kinds[b], &count) : MOE_OK;
        if (json) {
            printf("%s\n  {\"name\": \"%s\", \"built\": %s, \"devices\": [", b ? "," : "", name,
                   built ? "true" : "false");
        } else {
            printf("\nbackend %s: %s", name, !built ? "not built into this library\n" : "");
            if (built && st != MOE_OK)
                printf("error: %s (%s)\n", moe_status_string(st), moe_last_error());
            else if (built)
                printf("%d device%s\n", count, count == 1 ? "" : "s");
        }
        for (int i = 0; st == MOE_OK && i < count; i++) {
            moe_device_info d = {.struct_size = sizeof d};
            const moe_status ds = moe_device_get_info(kinds[b], i, &d);
            if (ds != MOE_OK) {
                fprintf(stderr, "moe-info: %s device %d: %s (%s)\n", name, i, moe_status_string(ds),
                        moe_last_error());
                rc = 1;
                continue;
            }
            print_device(&d, json, i == 0);
        }
        if (json) printf("%s]}", count ? "\n    " : "");
    }
    moe_context *ctx = NULL;
    const moe_context_desc desc = {.struct_size = sizeof desc, .backend = MOE_BACKEND_AUTO};
    const moe_status st = moe_context_create(&desc, &ctx);
    moe_device_info d = {.struct_size = sizeof d};
    if (st == MOE_OK) moe_context_get_device_info(ctx, &d);
    moe_cache_info cache = {.struct_size = sizeof cache};
    if (moe_get_cache_info(&cache) != MOE_OK) rc = 1;
    if (json) {
        printf("\n], \"auto\": ");
        if (st == MOE_OK) {
            printf("{\"backend\": \"%s\", \"device\": %d, \"name\": ",
                   moe_backend_name(moe_context_backend(ctx)), d.index);
            jstr(d.name);
            printf("}");
        } else {
            printf("null, \"auto_error\": ");
            jstr(moe_last_error());
        }
        printf(", \"cache\": {\"path\": ");
        jstr(cache.path);
        printf(", \"files\": %llu, \"bytes\": %llu, \"limit_bytes\": %llu}}\n",
               (unsigned long long)cache.files, (unsigned long long)cache.bytes,
               (unsigned long long)cache.limit_bytes);
    } else {
        if (st == MOE_OK)
            printf("\nAUTO picks: %s device %d (%s)\n", moe_backend_name(moe_context_backend(ctx)), d.index,
                   d.name);
        else
            printf("\nAUTO picks nothing: %s (%s)\n", moe_status_string(st), moe_last_error());
        printf("cache: %s, %llu file%s, %.1f MiB (bounded at %.0f MiB, MOE_CACHE_SIZE_MB)\n",
               cache.path[0] ? cache.path : "(none)", (unsigned long long)cache.files,
               cache.files == 1 ? "" : "s", (double)cache.bytes / 1048576.0,
               (double)cache.limit_bytes / 1048576.0);
    }
    moe_context_destroy(ctx);
    return st == MOE_OK ? rc : 1;
}
