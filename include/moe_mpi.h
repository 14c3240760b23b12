/*
 * moe_mpi.h — expert parallelism over MPI (0.10.0): one MoE layer spread over the ranks of an
 * MPI communicator, each rank holding the router, the shared expert and its own contiguous
 * range of the routed experts, on the context (backend, device) it chose. Link moe::moe_mpi
 * (CMake) or -lmoe_mpi -lmoe and MPI's C library; the core library has no MPI dependency.
 *
 * What a forward computes, its statistics and its failures are moe.h's "Expert parallelism"
 * (moe_layer_create_ep): moe_layer_forward on the layer is a collective call of every rank of
 * `comm`, each with its own tokens, and gives what one forward over all ranks' tokens
 * concatenated in rank order gives (bit for bit on the CPU backend). The library works on a
 * duplicate of `comm` (MPI_Comm_dup) whose error handler returns errors instead of aborting, so
 * an MPI failure is a moe_status; it never calls MPI_Abort. MPI must be initialised (with
 * MPI_THREAD_SERIALIZED or more if several threads use moe_mpi layers) before these calls and
 * finalised only after every such layer is destroyed. One message is at most INT_MAX bytes
 * (MPI's int counts): a forward that would send more fails with MOE_ERROR_BACKEND.
 */
#ifndef MOE_MPI_H
#define MOE_MPI_H

#include <mpi.h>

#include "moe.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(MOE_STATIC_DEFINE)
#define MOE_MPI_API
#elif defined(_WIN32)
#if defined(MOE_MPI_BUILDING)
#define MOE_MPI_API __declspec(dllexport)
#else
#define MOE_MPI_API __declspec(dllimport)
#endif
#else
#define MOE_MPI_API __attribute__((visibility("default")))
#endif

/* The experts this process's rank of comm owns: [*first_expert, *first_expert + *n_local)
 * (moe_ep_partition with comm's rank and size). Not collective. */
MOE_MPI_API moe_status moe_mpi_partition(MPI_Comm comm, int64_t n_experts, int64_t *first_expert,
                                         int64_t *n_local);

/* A collective call of every rank of comm: this rank's part of the layer (moe_layer_create_ep:
 * `desc` the whole layer's, the same on every rank; `local_weights` the router, shared expert
 * and small vectors whole, the routed experts' tensors for this rank's experts only). Destroy it
 * with moe_layer_destroy (which frees the duplicate communicator; every rank should destroy its
 * layer). */
MOE_MPI_API moe_status moe_mpi_layer_create(moe_context *context, MPI_Comm comm, const moe_layer_desc *desc,
                                            const moe_layer_weights *local_weights, moe_layer **out_layer);

/* The same from a checkpoint (moe_model_create_layer_ep): each rank reads only its own experts'
 * bytes from the files. A collective call of every rank of comm. */
MOE_MPI_API moe_status moe_mpi_model_create_layer(moe_context *context, MPI_Comm comm, const moe_model *model,
                                                  int64_t layer, const moe_model_layer_options *options,
                                                  moe_layer **out_layer);

#ifdef __cplusplus
}
#endif

#endif
