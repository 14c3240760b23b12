/*
 * interface.h — how a GPU kernel's interface is described once and rendered for the three
 * languages that meet at it: the C host code (src/vulkan/, src/opencl/), GLSL
 * (shaders/<kernel>.comp) and OpenCL C (opencl/<kernel>.cl). Each kernels/<kernel>.h holds
 * three X-macro lists and ends with MOE_KERNEL(kernel, PARAMS, BUFFERS, FIELDS), which this file
 * expands per language:
 *
 *   PARAMS(P)   P(id, kind, NAME, init): a value fixed when the pipeline / program is built.
 *               kind is wg (the workgroup size: local_size_x_id in GLSL, reqd_work_group_size
 *               in OpenCL C; exactly one per kernel, named WG), int, bool or float. Vulkan:
 *               specialization constant `id`; OpenCL: -DNAME=value (every parameter, always;
 *               a float as the exact bits of the host's value). `init` is GLSL's default
 *               only (documentation for wg): the host always sets every parameter.
 *   BUFFERS(B)  B(slot, access, type, name): the storage buffers in binding order, slots
 *               0..n-1; access in, out or inout; type float, int or uint (a weight format's
 *               blocks, read as 32-bit words). Vulkan: binding `slot`; OpenCL: the arguments
 *               (__global type *name, ulong name_offset), the second the element offset of the
 *               tensor in its cl_mem.
 *   FIELDS(F)   F(name): the integers that change per dispatch (a token count, a range of
 *               experts). Vulkan: the push-constant block (int32 each, in order); OpenCL:
 *               `int name` arguments after the buffers. At least one per kernel (GLSL has no
 *               empty blocks).
 *
 * In C, MOE_KERNEL(k, ...) defines struct moe_k_params (one field per parameter, same NAME),
 * struct moe_k_buffers (a moe_kbuf {address, elements} per buffer), struct moe_k_fields, the
 * counts moe_k_n_params / _n_buffers / _n_fields, and moe_k_args(), which turns the three
 * structs into a moe_kargs that the backends render generically (vk_steps.c: specialization
 * data and map, descriptor writes, push constants; cl_steps.c: -D options and kernel
 * arguments). Integers travel as int64_t up to that point, so the one range check (a value
 * that does not fit the kernels' 32-bit int fails the forward, naming it) is done there, once,
 * by name. What the C compiler can check is checked by _Static_assert: specialization ids
 * unique, bindings exactly 0..n-1, one wg parameter, counts within the tables' sizes, the push
 * block within the 128 bytes every Vulkan device has.
 *
 * GLSL's preprocessor (glslang) and OpenCL C's have function-like macros and ## like C's;
 * OpenCL programs are built at run time without include paths, so src/opencl/embed_cl.cmake
 * inlines the include lines of each .cl at build time.
 */
#ifndef MOE_KERNEL_INTERFACE_H
#define MOE_KERNEL_INTERFACE_H

#if defined(__OPENCL_C_VERSION__) || defined(__OPENCL_VERSION__) /* ---- OpenCL C ---------------------- */

/* The kernel's parameter list: B(...) then F(...), written by the kernel as
 * `__kernel … void name(MOE_CL_ARGS(MOE_X_BUFFERS, MOE_X_FIELDS))`. Each entry brings its own
 * leading comma; MOE_CL_DROP_FIRST_ removes the first. */
#define MOE_CL_ACCESS_in const
#define MOE_CL_ACCESS_out
#define MOE_CL_ACCESS_inout
#define MOE_CL_ARG_BUFFER(slot, access, type, name)                                                          \
    , __global MOE_CL_ACCESS_##access type *name, ulong name##_offset
#define MOE_CL_ARG_FIELD(name)         , int name
#define MOE_CL_DROP_FIRST_(first, ...) __VA_ARGS__
#define MOE_CL_ARGS_(...)              MOE_CL_DROP_FIRST_(__VA_ARGS__)
#define MOE_CL_ARGS(BUFFERS, FIELDS)   MOE_CL_ARGS_(BUFFERS(MOE_CL_ARG_BUFFER) FIELDS(MOE_CL_ARG_FIELD))
/* The kernel's first statement: every buffer pointer moved to its tensor. */
#define MOE_CL_OFFSET(slot, access, type, name) name += name##_offset;
#define MOE_CL_OFFSETS(BUFFERS)                 BUFFERS(MOE_CL_OFFSET)
/* The parameters arrive as -D options; nothing to declare. */
#define MOE_KERNEL(kernel, PARAMS, BUFFERS, FIELDS)

#elif defined(GL_core_profile) || defined(VULKAN) /* ---- GLSL (glslang) ----------------------- */

// clang-format off
#define MOE_GLSL_PARAM(id, kind, NAME, init) MOE_GLSL_PARAM_##kind(id, NAME, init)
/* The workgroup size keeps the module's default of 1 (`init` unused): every device accepts it
 * before the host specialises it. */
#define MOE_GLSL_PARAM_wg(id, NAME, init)                                                                    \
    layout(local_size_x_id = id, local_size_y = 1, local_size_z = 1) in;                                     \
    const int NAME = int(gl_WorkGroupSize.x);
#define MOE_GLSL_PARAM_int(id, NAME, init)   layout(constant_id = id) const int NAME = init;
#define MOE_GLSL_PARAM_bool(id, NAME, init)  layout(constant_id = id) const bool NAME = init;
#define MOE_GLSL_PARAM_float(id, NAME, init) layout(constant_id = id) const float NAME = init;
#define MOE_GLSL_ACCESS_in                   readonly
#define MOE_GLSL_ACCESS_out                  writeonly
/* The kernels that write and read a buffer pass values through it between the invocations of
 * a workgroup (memoryBarrierBuffer + barrier: select's keys and group scores, the plan's block
 * counts, the stats' sums). Without the Vulkan memory model GLSL makes such writes visible to
 * other invocations only for a coherent buffer (a workgroup may span caches that are not). */
#define MOE_GLSL_ACCESS_inout                coherent
/* Blocks without an instance name: the kernel reads `name[i]` and the push fields by name, as
 * the OpenCL C kernel does. */
#define MOE_GLSL_BUFFER(slot, access, type, name)                                                            \
    layout(std430, binding = slot) MOE_GLSL_ACCESS_##access buffer MoeBuffer_##name { type name[]; };
#define MOE_GLSL_FIELD(name) int name;
#define MOE_KERNEL(kernel, PARAMS, BUFFERS, FIELDS)                                                          \
    PARAMS(MOE_GLSL_PARAM)                                                                                   \
    BUFFERS(MOE_GLSL_BUFFER)                                                                                 \
    layout(push_constant) uniform MoePush { FIELDS(MOE_GLSL_FIELD) };
// clang-format on

#else /* ---- C (the host) -------------------------------------------------------------------- */

/* The C part needs moe_addr (src/backend.h), which it does not include itself:
 * src/opencl/embed_cl.cmake inlines every quoted include of this file into the OpenCL programs,
 * whatever branch it sits in, and finds only opencl/ and kernels/. */
#ifndef MOE_BACKEND_H
#error "include src/backend.h (through internal.h) before kernels/interface.h"
#endif

#include <stdbool.h>
#include <stdint.h>

/* Sizes of the tables a kernel's arguments are rendered into. */
#define MOE_KMAX_PARAMS        24
#define MOE_KMAX_BUFFERS       8
#define MOE_KMAX_FIELDS        8
#define MOE_KMAX_PUSH_BYTES    128 /* the push-constant space every Vulkan device has */

typedef enum moe_kparam_kind {
    MOE_KPARAM_WG,
    MOE_KPARAM_INT,
    MOE_KPARAM_BOOL,
    MOE_KPARAM_FLOAT
} moe_kparam_kind;

/* A parameter's value as the host gave it, before it is narrowed to the kernel's 32 bits. */
typedef struct moe_kparam {
    const char *name; /* NAME, as in the kernels and the -D option */
    uint32_t id;      /* Vulkan specialization constant id */
    moe_kparam_kind kind;
    int64_t value; /* wg, int; bool as 0 or 1 */
    float fvalue;  /* float */
} moe_kparam;

/* A buffer argument: a tensor and the elements of it the kernel may touch (Vulkan binds
 * exactly that much; absent tensors, at.buf == NULL, get a dummy buffer). */
typedef struct moe_kbuf {
    moe_addr at;
    int64_t n;
} moe_kbuf;

typedef struct moe_kbinding {
    const char *name;
    uint32_t elem_bytes;
    moe_kbuf buf;
} moe_kbinding;

typedef struct moe_kfield {
    const char *name;
    int64_t value;
} moe_kfield;

/* One dispatch's arguments, in the description's order: parameters as listed, buffers by
 * binding, fields as listed. */
typedef struct moe_kargs {
    const char *kernel;
    int64_t wg; /* the wg parameter's value: the workgroup size */
    uint32_t n_params, n_buffers, n_fields;
    moe_kparam params[MOE_KMAX_PARAMS];
    moe_kbinding buffers[MOE_KMAX_BUFFERS];
    moe_kfield fields[MOE_KMAX_FIELDS];
} moe_kargs;

static inline void moe_kargs_param(moe_kargs *a, const char *name, uint32_t id, moe_kparam_kind kind,
                                   int64_t value, float fvalue)
{
    a->params[a->n_params++] = (moe_kparam){name, id, kind, value, fvalue};
    if (kind == MOE_KPARAM_WG) a->wg = value;
}

/* The first parameter or field whose value does not fit the kernels' 32-bit int (its name
 * and value), or NULL when every one fits. */
static inline const char *moe_kargs_overflow(const moe_kargs *a, int64_t *value)
{
    for (uint32_t i = 0; i < a->n_params; i++) {
        const moe_kparam *p = &a->params[i];
        if (p->kind != MOE_KPARAM_FLOAT && (p->value < INT32_MIN || p->value > INT32_MAX)) {
            *value = p->value;
            return p->name;
        }
    }
    for (uint32_t i = 0; i < a->n_fields; i++) {
        if (a->fields[i].value < INT32_MIN || a->fields[i].value > INT32_MAX) {
            *value = a->fields[i].value;
            return a->fields[i].name;
        }
    }
    return NULL;
}

/* The 32 bits a parameter reaches the kernel as (after moe_kargs_overflow found none too
 * large): an int's two's complement, a bool's 0 or 1, a float's exact bits. */
static inline uint32_t moe_kparam_bits(const moe_kparam *p)
{
    if (p->kind != MOE_KPARAM_FLOAT) return (uint32_t)(int32_t)p->value;
    union {
        float f;
        uint32_t u;
    } bits = {p->fvalue};
    return bits.u;
}

/* Per-kind pieces, pasted from the kind token (so C's `bool` macro is never expanded there). */
#define MOE_C_TYPE_wg          int64_t
#define MOE_C_TYPE_int         int64_t
#define MOE_C_TYPE_bool        bool
#define MOE_C_TYPE_float       float
#define MOE_C_KIND_wg          MOE_KPARAM_WG
#define MOE_C_KIND_int         MOE_KPARAM_INT
#define MOE_C_KIND_bool        MOE_KPARAM_BOOL
#define MOE_C_KIND_float       MOE_KPARAM_FLOAT
#define MOE_C_INT_wg(v)        (v)
#define MOE_C_INT_int(v)       (v)
#define MOE_C_INT_bool(v)      ((v) ? 1 : 0)
#define MOE_C_INT_float(v)     0
#define MOE_C_FLOAT_wg(v)      0.0f
#define MOE_C_FLOAT_int(v)     0.0f
#define MOE_C_FLOAT_bool(v)    0.0f
#define MOE_C_FLOAT_float(v)   (v)
#define MOE_C_IS_WG_wg         1
#define MOE_C_IS_WG_int        0
#define MOE_C_IS_WG_bool       0
#define MOE_C_IS_WG_float      0
#define MOE_C_ELEM_BYTES_float 4
#define MOE_C_ELEM_BYTES_int   4
#define MOE_C_ELEM_BYTES_uint  4

#define MOE_C_PARAM_MEMBER(id, kind, NAME, init)      MOE_C_TYPE_##kind NAME;
#define MOE_C_BUFFER_MEMBER(slot, access, type, name) moe_kbuf name;
#define MOE_C_FIELD_MEMBER(name)                      int64_t name;
#define MOE_C_PARAM_COUNT(id, kind, NAME, init)       +1
#define MOE_C_BUFFER_COUNT(slot, access, type, name)  +1
#define MOE_C_FIELD_COUNT(name)                       +1
#define MOE_C_WG_COUNT(id, kind, NAME, init)          +MOE_C_IS_WG_##kind
#define MOE_C_ID_SUM(id, kind, NAME, init)            +(1ull << (id))
#define MOE_C_ID_OR(id, kind, NAME, init)             | (1ull << (id))
#define MOE_C_ID_BELOW_64(id, kind, NAME, init)       &&(id) >= 0 && (id) < 64
#define MOE_C_SLOT_SUM(slot, access, type, name)      +(1ull << (slot))
#define MOE_C_SLOT_OR(slot, access, type, name)       | (1ull << (slot))
#define MOE_C_PARAM_ARG(id, kind, NAME, init)                                                                \
    moe_kargs_param(&a, #NAME, id, MOE_C_KIND_##kind, MOE_C_INT_##kind(p->NAME), MOE_C_FLOAT_##kind(p->NAME));
#define MOE_C_BUFFER_ARG(slot, access, type, name)                                                           \
    a.buffers[slot] = (moe_kbinding){#name, MOE_C_ELEM_BYTES_##type, buffers->name};                         \
    a.n_buffers++;
#define MOE_C_FIELD_ARG(name) a.fields[a.n_fields++] = (moe_kfield){#name, f->name};

#define MOE_KERNEL(k, PARAMS, BUFFERS, FIELDS)                                                               \
    struct moe_##k##_params {                                                                                \
        PARAMS(MOE_C_PARAM_MEMBER)                                                                           \
    };                                                                                                       \
    struct moe_##k##_buffers {                                                                               \
        BUFFERS(MOE_C_BUFFER_MEMBER)                                                                         \
    };                                                                                                       \
    struct moe_##k##_fields {                                                                                \
        FIELDS(MOE_C_FIELD_MEMBER)                                                                           \
    };                                                                                                       \
    enum {                                                                                                   \
        moe_##k##_n_params = 0 PARAMS(MOE_C_PARAM_COUNT),                                                    \
        moe_##k##_n_buffers = 0 BUFFERS(MOE_C_BUFFER_COUNT),                                                 \
        moe_##k##_n_fields = 0 FIELDS(MOE_C_FIELD_COUNT)                                                     \
    };                                                                                                       \
    _Static_assert(moe_##k##_n_params <= MOE_KMAX_PARAMS, #k ": too many parameters");                       \
    _Static_assert(moe_##k##_n_buffers <= MOE_KMAX_BUFFERS, #k ": too many buffers");                        \
    _Static_assert(moe_##k##_n_fields >= 1 && moe_##k##_n_fields <= MOE_KMAX_FIELDS &&                       \
                       4 * moe_##k##_n_fields <= MOE_KMAX_PUSH_BYTES,                                        \
                   #k ": 1 to 8 fields (GLSL has no empty block; 128 push-constant bytes)");                 \
    _Static_assert((0 PARAMS(MOE_C_WG_COUNT)) == 1, #k ": exactly one wg parameter");                        \
    _Static_assert(1 PARAMS(MOE_C_ID_BELOW_64), #k ": specialization ids are 0..63");                        \
    _Static_assert((0 PARAMS(MOE_C_ID_SUM)) == (0 PARAMS(MOE_C_ID_OR)),                                      \
                   #k ": two parameters share a specialization id");                                         \
    _Static_assert((0 BUFFERS(MOE_C_SLOT_SUM)) == (0 BUFFERS(MOE_C_SLOT_OR)) &&                              \
                       (0 BUFFERS(MOE_C_SLOT_OR)) == (1ull << moe_##k##_n_buffers) - 1,                      \
                   #k ": buffer slots must be 0..n-1, each once");                                           \
    static inline moe_kargs moe_##k##_args(const struct moe_##k##_params *p,                                 \
                                           const struct moe_##k##_buffers *buffers,                          \
                                           const struct moe_##k##_fields *f)                                 \
    {                                                                                                        \
        moe_kargs a = {.kernel = #k};                                                                        \
        PARAMS(MOE_C_PARAM_ARG)                                                                              \
        BUFFERS(MOE_C_BUFFER_ARG)                                                                            \
        FIELDS(MOE_C_FIELD_ARG)                                                                              \
        return a;                                                                                            \
    }

#endif /* language */

#endif /* MOE_KERNEL_INTERFACE_H */
