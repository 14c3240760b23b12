/*
 * moe_vulkan.h — running moe on an application's own Vulkan objects (0.4.0).
 *
 * An application that already has a VkInstance, a VkDevice and a compute-capable queue hands
 * them to moe_context_create (moe_context_desc.external_device); its VkBuffers become
 * moe_buffers (moe_vulkan_buffer_wrap); and a forward is recorded into one of its command
 * buffers (moe_vulkan_layer_record), which the application submits and synchronises itself, as
 * with VkFFT's append — besides moe's own submissions (moe_layer_forward*, which work on such
 * a context too).
 *
 * What moe needs of the device: Vulkan 1.0 with the queue's family able to run compute. moe
 * enables no device feature and no extension of its own, so any device the application made
 * will do; where the physical device has subgroup arithmetic in compute (Vulkan 1.1 — a
 * property, nothing to enable) moe uses its subgroup kernels, and timestamps where the queue
 * family has them. The device-level functions are loaded from the application's
 * get_instance_proc_addr (its vkGetDeviceProcAddr) into moe's own table through volk, so the
 * application's own function pointers and loader are untouched; the physical-device queries go
 * through the same function.
 *
 * What moe does with borrowed objects: nothing is destroyed or changed. moe creates its own
 * objects on the device (memory, buffers, pipelines, command pool, fences, descriptor pools)
 * and destroys them at moe_context_destroy, after vkDeviceWaitIdle — which waits for the
 * application's own work on the device as well. A wrapped VkBuffer stays the application's.
 *
 * The queue is shared under Vulkan's rule for queues (external synchronisation): moe submits
 * to it and waits on it (vkQueueSubmit, vkWaitForFences) during these calls on the context —
 * moe_context_create, moe_layer_create / moe_model_create_layer (weight upload),
 * moe_buffer_read / write, every forward, moe_context_wait and the _destroy calls — so the
 * application must not use the queue from another thread while one of them runs (the calls on
 * one context are externally synchronised anyway, moe.h). moe's submissions are ordered after
 * everything submitted to the queue before them: each opens with a memory barrier from earlier
 * shader and transfer writes. A recorded forward is ordered within the application's command
 * buffer the same way (a barrier before it, and one after it that makes y visible to later
 * shader reads and transfers).
 */
#ifndef MOE_VULKAN_H
#define MOE_VULKAN_H

#include "moe.h"

#include <vulkan/vulkan.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The application's Vulkan objects, for moe_context_desc.external_device. */
typedef struct moe_vulkan_device {
    size_t struct_size;                               /* sizeof(moe_vulkan_device) */
    moe_backend_kind backend;                         /* MOE_BACKEND_VULKAN: says which struct this is */
    PFN_vkGetInstanceProcAddr get_instance_proc_addr; /* required: the loader entry point the
                                                         application's instance came from */
    VkInstance instance;                              /* required */
    uint32_t instance_api_version;                    /* the apiVersion the instance was created
                                                         with (VkApplicationInfo); 0 = 1.0 */
    VkPhysicalDevice physical_device;                 /* required */
    VkDevice device;                                  /* required: created from physical_device */
    uint32_t queue_family;                            /* a family with VK_QUEUE_COMPUTE_BIT */
    VkQueue queue;                                    /* required: a queue of that family */
} moe_vulkan_device;

/* The Vulkan objects of a Vulkan context, its own or the application's (get_instance_proc_addr
 * is the loader's one moe uses). `out` is an output struct (set its struct_size).
 * MOE_ERROR_INVALID_ARGUMENT for a context of another backend. */
MOE_API moe_status moe_vulkan_context_get_device(const moe_context *context, moe_vulkan_device *out);

/* A moe_buffer over n_elements floats of the application's `buffer` from byte `offset`: a
 * forward reads and writes the application's memory itself. The buffer must be created on the
 * context's device with VK_BUFFER_USAGE_STORAGE_BUFFER_BIT (and TRANSFER_SRC / TRANSFER_DST for
 * moe_buffer_read / write), bound to memory, and hold offset + 4·n_elements bytes (Vulkan cannot
 * be asked a buffer's size: moe takes it from the caller). `offset` must be a multiple of the
 * device's minStorageBufferOffsetAlignment. moe_buffer_destroy leaves the VkBuffer to the
 * application. Not counted in moe_arena_stats.buffer_bytes. */
MOE_API moe_status moe_vulkan_buffer_wrap(moe_context *context, VkBuffer buffer, VkDeviceSize offset,
                                          int64_t n_elements, moe_buffer **out_buffer);

/* A forward recorded into the application's command buffer. */
typedef struct moe_vulkan_recording moe_vulkan_recording;

/* Records one forward of `layer` (x → y, as moe_layer_forward_buffers) into `command_buffer`,
 * which must be recording, on a pool of the context's queue family, outside a render pass. The
 * application submits it when it likes, as often as it likes, and owns the synchronisation: moe
 * neither submits nor waits for it. The recording holds what its commands use — descriptor sets
 * and a scratch region of its own (so recorded forwards never share temporaries with each other
 * or with moe's own forwards: a command buffer may hold a chain of them, each ordered after the
 * one before by its barriers) — until moe_vulkan_recording_destroy, which the application calls
 * once no submission of the command buffer is pending. A layer or buffer destroyed while a
 * recording uses it is kept until the last such recording goes (MOE_ERROR_BUSY is recorded, as
 * for a forward in flight), and so is the context. */
MOE_API moe_status moe_vulkan_layer_record(moe_layer *layer, int64_t n_tokens, const moe_buffer *x,
                                           moe_buffer *y, VkCommandBuffer command_buffer,
                                           moe_vulkan_recording **out_recording);
MOE_API void moe_vulkan_recording_destroy(moe_vulkan_recording *recording);

#ifdef __cplusplus
}
#endif

#endif /* MOE_VULKAN_H */
