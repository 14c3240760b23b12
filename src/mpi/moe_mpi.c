/*
 * moe_mpi.c — the transport of an expert-parallel layer (moe.h, moe_ep_transport) over MPI:
 * MPI_Allgather and MPI_Alltoallv on a duplicate of the application's communicator, whose
 * error handler returns errors (MPI_ERRORS_RETURN) so that an MPI failure becomes a status of
 * the forward instead of aborting the job; MPI_Error_string names it.
 */
#include "moe_mpi.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>

/* Not an MPI code: a message past MPI's int counts. */
#define TOO_LARGE (-1)

typedef struct mpi_transport {
    MPI_Comm comm;
    int size;
    int dup_error; /* MPI_Comm_dup failed with this code: every call reports it */
    int *counts;   /* [4][size]: send counts, send displacements, receive counts, displacements */
    char text[MPI_MAX_ERROR_STRING + 64];
} mpi_transport;

static int mpi_allgather(void *user, const void *send, size_t bytes, void *recv)
{
    mpi_transport *t = user;
    if (t->dup_error != MPI_SUCCESS) return t->dup_error;
    if (bytes > INT_MAX) return TOO_LARGE;
    return MPI_Allgather(send, (int)bytes, MPI_BYTE, recv, (int)bytes, MPI_BYTE, t->comm);
}

/* Byte counts and displacements as MPI's ints; 0 when one does not fit. */
static int to_counts(const size_t *bytes, int size, int *counts, int *displs)
{
    size_t at = 0;
    for (int r = 0; r < size; r++) {
        if (bytes[r] > INT_MAX || at > INT_MAX) return 0;
        counts[r] = (int)bytes[r];
        displs[r] = (int)at;
        at += bytes[r];
    }
    return 1;
}

static int mpi_alltoallv(void *user, const void *send, const size_t *send_bytes, void *recv,
                         const size_t *recv_bytes)
{
    mpi_transport *t = user;
    if (t->dup_error != MPI_SUCCESS) return t->dup_error;
    int *sc = t->counts, *sd = sc + t->size, *rc = sd + t->size, *rd = rc + t->size;
    if (!to_counts(send_bytes, t->size, sc, sd) || !to_counts(recv_bytes, t->size, rc, rd)) return TOO_LARGE;
    return MPI_Alltoallv(send, sc, sd, MPI_BYTE, recv, rc, rd, MPI_BYTE, t->comm);
}

static const char *mpi_describe(void *user, int code)
{
    mpi_transport *t = user;
    if (code == TOO_LARGE) return "a message of more than INT_MAX bytes, past MPI's int counts";
    char mpi[MPI_MAX_ERROR_STRING] = "";
    int n = 0;
    if (MPI_Error_string(code, mpi, &n) != MPI_SUCCESS) snprintf(mpi, sizeof mpi, "unknown MPI error");
    snprintf(t->text, sizeof t->text, "%s%s", t->dup_error != MPI_SUCCESS ? "MPI_Comm_dup failed: " : "",
             mpi);
    return t->text;
}

static void mpi_release(void *user)
{
    mpi_transport *t = user;
    if (t->comm != MPI_COMM_NULL) MPI_Comm_free(&t->comm);
    free(t->counts);
    free(t);
}

/* The transport of a rank that could not allocate its own: every call fails, saying so. */
static int no_memory_allgather(void *user, const void *send, size_t bytes, void *recv)
{
    (void)user, (void)send, (void)bytes, (void)recv;
    return TOO_LARGE - 1;
}

static int no_memory_alltoallv(void *user, const void *send, const size_t *send_bytes, void *recv,
                               const size_t *recv_bytes)
{
    (void)user, (void)send, (void)send_bytes, (void)recv, (void)recv_bytes;
    return TOO_LARGE - 1;
}

static const char *no_memory_describe(void *user, int code)
{
    (void)user, (void)code;
    return "moe_mpi: out of host memory for the transport";
}

moe_status moe_mpi_partition(MPI_Comm comm, int64_t n_experts, int64_t *first_expert, int64_t *n_local)
{
    int rank = 0, size = 0;
    if (MPI_Comm_rank(comm, &rank) != MPI_SUCCESS || MPI_Comm_size(comm, &size) != MPI_SUCCESS) size = 0;
    return moe_ep_partition(n_experts, size, rank, first_expert, n_local); /* size 0: refused */
}

/* This rank's transport over a duplicate of comm, in *tr. A rank that cannot allocate one gets a
 * transport whose every call fails, saying so (the others' creation then fails in the transport,
 * or waits for this rank, as for any rank that never takes part). */
static void make_transport(MPI_Comm comm, moe_ep_transport *tr)
{
    int rank = 0, size = 0;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    mpi_transport *t = calloc(1, sizeof *t);
    int *counts = calloc(4 * (size_t)(size > 0 ? size : 1), sizeof(int));
    if (!t || !counts) {
        free(t);
        free(counts);
        *tr = (moe_ep_transport){.struct_size = sizeof *tr,
                                 .rank = rank,
                                 .n_ranks = size,
                                 .allgather = no_memory_allgather,
                                 .alltoallv = no_memory_alltoallv,
                                 .describe = no_memory_describe};
        return;
    }
    /* The duplicate on every rank (MPI_Comm_dup is itself collective); a failure is reported by
     * each collective, which is how the creation's agreement round learns of it. */
    t->comm = MPI_COMM_NULL;
    t->size = size;
    t->counts = counts;
    t->dup_error = MPI_Comm_dup(comm, &t->comm);
    if (t->dup_error == MPI_SUCCESS) MPI_Comm_set_errhandler(t->comm, MPI_ERRORS_RETURN);
    *tr = (moe_ep_transport){.struct_size = sizeof *tr,
                             .rank = rank,
                             .n_ranks = size,
                             .user = t,
                             .allgather = mpi_allgather,
                             .alltoallv = mpi_alltoallv,
                             .release = mpi_release,
                             .describe = mpi_describe};
}

moe_status moe_mpi_layer_create(moe_context *context, MPI_Comm comm, const moe_layer_desc *desc,
                                const moe_layer_weights *local_weights, moe_layer **out_layer)
{
    moe_ep_transport tr;
    make_transport(comm, &tr);
    return moe_layer_create_ep(context, &tr, desc, local_weights, out_layer);
}

moe_status moe_mpi_model_create_layer(moe_context *context, MPI_Comm comm, const moe_model *model,
                                      int64_t layer, const moe_model_layer_options *options,
                                      moe_layer **out_layer)
{
    moe_ep_transport tr;
    make_transport(comm, &tr);
    return moe_model_create_layer_ep(context, &tr, model, layer, options, out_layer);
}
