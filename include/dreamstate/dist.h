/* Ranks (Open MPI): process-group setup, small collectives, and the gradient allreduce that overlaps
 * backward. Only src/train (the coordinator), src/eval and src/cli call this; models, data and
 * kernels never do. Works unchanged as a single process (no mpirun): size 1, collectives are copies. */
#ifndef DREAMSTATE_DIST_H
#define DREAMSTATE_DIST_H

#include <stddef.h>
#include <stdint.h>

/* MPI_Init_thread (MPI_THREAD_FUNNELED) unless already initialised; tells common.c this process's rank
 * so that only rank 0 logs. Safe to call twice. */
void ds_dist_init(void);
void ds_dist_finalize(void);
int ds_dist_rank(void);
int ds_dist_size(void);
void ds_dist_barrier(void);
/* Cores of this node divided by the ranks on this node (at least 1): the default threads per rank. */
int ds_dist_cores_per_local_rank(void);
/* Threads of this rank: `requested` (run.threads, or a command's --threads) when above 0, refused
 * (exit 2, naming `what`) if it exceeds the cores the process may run on (ds_check_threads); else
 * ds_dist_cores_per_local_rank(). */
int ds_dist_threads(int requested, const char *what);
void ds_dist_bcast(void *buf, size_t bytes, int root);
double ds_dist_sum_double(double x);     /* allreduce sum over ranks */
int ds_dist_max_int(int x);              /* allreduce max over ranks */
/* In-place elementwise sum over ranks of n doubles. */
void ds_dist_sum_doubles(double *x, int n);
/* Watchdog over every blocking collective of this module (the ones above and the gradient sync
 * below): one that has not completed after `seconds` prints one line on this rank (which collective,
 * the rank, the node) and exits 1, instead of waiting forever for a rank that died or sits behind a
 * failed link. 0 turns it off (the default); a no-op on one rank. Uses SIGALRM. */
void ds_dist_set_comm_timeout(double seconds);

/* Gradient synchronisation with communication hidden behind backward. The flat gradient array is
 * split into buckets of about bucket_bytes; as backward finishes a region of parameters it calls
 * ds_grad_sync_ready(offset, numel), and on the last micro-step every bucket that becomes complete is
 * sent with MPI_Iallreduce (sum) at once while backward goes on with earlier layers; finish() waits.
 *
 * fp64 mode (the default of train.grad_reduce): each micro-step's gradient is added into a double
 * accumulator region by region and the reduction runs in double, so the summed gradient rounds to the
 * same fp32 values whatever the split of the batch over ranks and micro-steps: 1, 2 or 4 ranks train
 * identically (to rare last-bit differences). The caller zeroes grads before every micro-step.
 * fp32 mode: half the memory and traffic; grads accumulate over micro-steps in place (the caller
 * zeroes them once per step), and results depend on the rank count at rounding level.
 * Single process: the same arithmetic without MPI. Regions may come in any order, each element once
 * per micro-step. */
typedef struct ds_grad_sync ds_grad_sync;
ds_grad_sync *ds_grad_sync_create(float *grads, int64_t n, int64_t bucket_bytes, int fp64, int zero1);
void ds_grad_sync_free(ds_grad_sync *gs);
int ds_grad_sync_is_fp64(const ds_grad_sync *gs);
/* 1: steps of micro_steps micro-steps sum into the fp64 accumulator; 0: it is never touched (not fp64, or
 * one rank and one micro-step, where the sum would be an exact copy) */
int ds_grad_sync_accumulates(const ds_grad_sync *gs, int micro_steps);
/* Call before each micro-step's backward; first: the step's first micro-step, last: its last. */
void ds_grad_sync_micro_begin(ds_grad_sync *gs, int first, int last);
void ds_grad_sync_ready(ds_grad_sync *gs, int64_t offset, int64_t numel);
/* Waits for every bucket; afterwards grads hold the sum over ranks and micro-steps (under ZeRO-1:
 * in the buckets this rank owns). Returns the seconds spent waiting here (the part of the
 * communication not hidden behind backward). */
double ds_grad_sync_finish(ds_grad_sync *gs);

/* ZeRO-1 (zero1 = 1): bucket b belongs to rank b mod ranks. On the last micro-step each bucket is
 * reduced only to its owner (MPI_Ireduce: the reduce-scatter), the owner updates its parameters and
 * keeps the AdamW moments of its buckets only, and ds_grad_sync_share_params sends every bucket's
 * new parameters from its owner to all (the allgather). Without ZeRO-1 a rank owns everything.
 * owned_ranges fills begin/len (room for ds_grad_sync_n_buckets entries) and returns the count. */
int ds_grad_sync_n_buckets(const ds_grad_sync *gs);
int ds_grad_sync_owned_ranges(const ds_grad_sync *gs, int64_t *begin, int64_t *len);
void ds_grad_sync_share_params(ds_grad_sync *gs, float *params);
/* Moves values kept compactly per owner (its owned buckets in order, like the AdamW moments) to a
 * full array on rank 0, and back. */
void ds_grad_sync_gather(ds_grad_sync *gs, const float *compact, float *full_on_root);
void ds_grad_sync_scatter(ds_grad_sync *gs, const float *full_on_root, float *compact);

#endif
