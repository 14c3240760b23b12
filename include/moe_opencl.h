/*
 * moe_opencl.h — running moe on an application's own OpenCL objects (0.4.0).
 *
 * An application that already has a cl_context, a device and a command queue hands them to
 * moe_context_create (moe_context_desc.external_device); its cl_mem buffers become moe_buffers
 * (moe_opencl_buffer_wrap), and a forward is enqueued on its queue behind the events it names,
 * giving back an event it can wait on (moe_opencl_layer_forward). Activations never leave the
 * device, and the application keeps ordering its own work around moe's.
 *
 * Include <CL/cl.h> settings (CL_TARGET_OPENCL_VERSION) as the application does elsewhere; moe
 * itself uses the OpenCL 1.2 API.
 *
 * What moe does with borrowed objects: it retains the cl_context, the cl_command_queue and the
 * device (clRetain*) at moe_context_create and releases them at moe_context_destroy, which also
 * calls clFinish on the queue — it never destroys or otherwise changes them. A wrapped cl_mem is
 * retained until its moe_buffer is destroyed. Every cl_mem moe allocates (layer weights, the
 * scratch region, moe_buffer_create's) belongs to the application's context.
 *
 * The queue: in-order (an out-of-order queue is refused: moe's forward is a sequence of kernels
 * whose order is their dependency); with CL_QUEUE_PROFILING_ENABLE, moe_forward_stats.device_ms
 * comes from profiling events, else from the host clock. moe enqueues kernels, buffer reads and
 * writes (moe_buffer_read / write, blocking) and, in moe_opencl_layer_forward, a barrier and a
 * marker; moe_context_wait and every synchronous call end in clFinish on the queue, which waits
 * for the application's own commands on it as well. OpenCL queues may be used from several
 * threads, but moe's calls on one moe_context stay externally synchronised (moe.h), and what an
 * application enqueues from another thread between moe's commands lands between them.
 */
#ifndef MOE_OPENCL_H
#define MOE_OPENCL_H

#include "moe.h"

#include <CL/cl.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The application's OpenCL objects, for moe_context_desc.external_device. */
typedef struct moe_opencl_device {
    size_t struct_size;       /* sizeof(moe_opencl_device) */
    moe_backend_kind backend; /* MOE_BACKEND_OPENCL: says which struct this is */
    cl_context context;       /* required */
    cl_device_id device;      /* required: a device of `context` */
    cl_command_queue queue;   /* required: an in-order queue of `context` on `device` */
} moe_opencl_device;

/* The OpenCL objects of an OpenCL context, its own or the application's: an application can
 * enqueue its work on moe's queue, or make buffers in its cl_context to wrap. `out` is an output
 * struct (set its struct_size). MOE_ERROR_INVALID_ARGUMENT for a context of another backend. */
MOE_API moe_status moe_opencl_context_get_device(const moe_context *context, moe_opencl_device *out);

/* A moe_buffer over n_elements floats of `mem` from byte `offset` (a multiple of 4): a forward
 * reads and writes the application's memory itself. `mem` must be a buffer of the context's
 * cl_context holding offset + 4·n_elements bytes. moe_buffer_destroy releases moe's reference
 * and leaves `mem` to the application. Not counted in moe_arena_stats.buffer_bytes. */
MOE_API moe_status moe_opencl_buffer_wrap(moe_context *context, cl_mem mem, size_t offset, int64_t n_elements,
                                          moe_buffer **out_buffer);

/* An asynchronous forward (moe_layer_forward_async) on an OpenCL context's queue that starts after
 * the num_events_in_wait_list events in event_wait_list have completed (as in clEnqueue*:
 * NULL and 0 for none), and, when `event` is not NULL, returns there a new event that completes
 * with the forward (clWaitForEvents, or a later command's wait list; release it with
 * clReleaseEvent). The rules of moe_layer_forward_async hold: until moe_context_wait, moe's
 * own moe_buffer_read / write refuse x and y (the application reads its wrapped cl_mem itself,
 * ordered after `event`). */
MOE_API moe_status moe_opencl_layer_forward(moe_layer *layer, int64_t n_tokens, const moe_buffer *x,
                                            moe_buffer *y, cl_uint num_events_in_wait_list,
                                            const cl_event *event_wait_list, cl_event *event);

#ifdef __cplusplus
}
#endif

#endif /* MOE_OPENCL_H */
