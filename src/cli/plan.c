/* `dreamstate plan CONFIG --nodes N[,N...]`: predicted step time, communication and memory per rank. */
#include "args.h"
#include "commands.h"

#include "dreamstate/common.h"
#include "dreamstate/config.h"
#include "dreamstate/plan.h"

#include <float.h>
#include <stdio.h>

#define MAX_NODES 64
#define MAX_COUNT 1000000  /* nodes, ranks per node, threads */

static const cli_spec spec = {
    .cmd = "plan",
    .usage =
        "usage: dreamstate plan CONFIG --nodes N[,N...] [--ranks-per-node R] [--threads T] [--measure]\n"
        "                       [--bandwidth GBPS --latency US] [--intra-bandwidth GBPS --intra-latency US]\n"
        "                       [--node-memory GB] [--json] [--set section.key=value]...\n"
        "Predicts step time, throughput, communication share and memory per rank of `dreamstate train CONFIG`\n"
        "on each node count, to size a job before queueing it. Tasks (run.task):\n"
        "  lm               the RWKV-7 of model.*\n"
        "  state_diffusion  the state DiT of dit.* over diffusion.layers of the state dataset (only the header\n"
        "                   of diffusion.states' index is read)\n"
        "  hybrid           the part-B hybrid of hybrid.*, dit.* on hybrid.init's RWKV-7 (only its header is\n"
        "                   read); trainable set and frozen parts as the task defines them\n"
        "\n"
        "  --nodes N[,N...]      node counts (repeatable), e.g. --nodes 1,2,4,8\n"
        "  --ranks-per-node R    MPI ranks per node (default 1); p = nodes x R ranks\n"
        "  --threads T           threads per rank (default run.threads, else this machine's cores / R)\n"
        "  --measure             measure the compute rates on this machine with T threads (seconds to a\n"
        "                        minute): the task's own micro-step on random inputs of the right shape, its\n"
        "                        model cut to 1 and 2 layers or DiT blocks (the hybrid's RWKV-7 whole)\n"
        "  --bandwidth, --latency          inter-node allreduce bus bandwidth (GB/s) and per-step latency (us);\n"
        "                                  default 10 GB/s, 5 us (100 Gb/s InfiniBand / Ethernet)\n"
        "  --intra-bandwidth, --intra-latency  the same within a node (shared memory); default 1.5 GB/s, 3 us\n"
        "                                  (measured on the 2-core dev machine: run `make bench` on yours)\n"
        "  --node-memory GB      memory per node for the fits column (default: this machine's)\n"
        "  --json                one JSON object instead of the table\n"
        "\n"
        "Model and assumptions:\n"
        "  - micro-batch and accumulation as the trainer: micro = train.micro_batch (0: batch_size / p),\n"
        "    accum = batch_size / (p x micro); rows where that does not divide are marked invalid.\n"
        "  - compute per rank and step = accum x micro x units x s/unit (a unit is a token for lm and hybrid,\n"
        "    a sample for state_diffusion; forward + backward with the task's own work around them) + the\n"
        "    trainer's per-parameter loops where it runs them: zeroing the gradient and adding it into the\n"
        "    fp64 accumulator per micro-step (fp64; skipped by one rank with one micro-step), zeroing the\n"
        "    accumulator and converting to fp32 per step; fp32: zeroing per step; clipping and AdamW over\n"
        "    the owned parameters per step; state_diffusion's EMA per step. Ranks on one node are assumed\n"
        "    not to slow each other down.\n"
        "  - rates: --measure times the task's micro-step at 1 and 2 layers (lm) or DiT blocks (the others;\n"
        "    the smallest micro-batch of the rows; extrapolated linearly) and each per-parameter loop;\n"
        "    matrix products in train.precision; without it, defaults per thread from the 0.1B lm shape on\n"
        "    the dev machine (100 GFLOP/s of the task's FLOPs in fp32, 175 in bf16; wider models run faster,\n"
        "    small ones and the DiT tasks far slower: use --measure).\n"
        "  - MFU = FLOPs/unit x units/s / (ranks x peak per rank), the peak of train.precision: FP32 FMA or\n"
        "    bf16 dot products (VDPBF16PS), measured with --measure, else the dev machine's 265 / 530\n"
        "    GFLOP/s per thread.\n"
        "  - gradient allreduce: trainable params x 8 bytes (grad_reduce fp64) or x 4 (fp32) in 8 MiB\n"
        "    buckets; ring alpha-beta cost per bucket 2(p-1)/p x bytes / bandwidth + 2(p-1) x latency, over\n"
        "    the intra-node link (1 node), the inter-node link (1 rank per node) or the slower of both.\n"
        "    ZeRO-1 (train.zero_stage 1): buckets reduced to their owners (half that cost), then the fp32\n"
        "    parameters shared the same way after the update (not overlapped).\n"
        "  - overlap: lm buckets leave as backward finishes them (head, layers last to first, embedding\n"
        "    last); state_diffusion and hybrid hand the gradient over when the micro-batch is done (none\n"
        "    of theirs hides). exposed = communication still running when backward ends. This assumes MPI\n"
        "    progresses transfers during compute; Open MPI does so only inside MPI calls, and over shared\n"
        "    memory the copies need the computing cores: on the 2-core dev machine 2 ranks hid 46% of the\n"
        "    allreduce where this model says 70% (`make bench`). exposed s is a lower bound, comm s the upper.\n"
        "  - not counted: evaluation, checkpoints, data loading, start-up, the few 8-byte allreduces.\n"
        "  - memory of rank 0: params 4 + grads 4 + fp64 accumulator 8 (fp64, unless one rank runs one\n"
        "    micro-step: the accumulator is then never touched) + AdamW 8 bytes per owned\n"
        "    trainable param (+ 8 per param under ZeRO-1: rank 0 gathers the full moments for checkpoints)\n"
        "    + the task's activations of one micro-batch and what it holds besides (state_diffusion: the\n"
        "    EMA; hybrid: a frozen RWKV-7 with its gradient slots, 8 bytes per its param, and per-sequence\n"
        "    buffers) + in bf16 the converted product operands + with several ranks MPI's buffers of the\n"
        "    buckets in flight (params x 8 or x 4 bytes) + 0.1 GB runtime; mapped input files not counted;\n"
        "    fits = the node's ranks within\n"
        "    --node-memory.\n"
        "  - train.grad_checkpoint true (lm, hybrid): RWKV-7 activations = each block's input + one\n"
        "    block's internals, and the compute adds the blocks' second forward (~25-30%, not in MFU);\n"
        "    act GB is the config's setting; rows that fit only with checkpointing are pointed out.\n",
    .config = 1,
    .options = {{"--nodes", CLI_REQUIRED}, {"--ranks-per-node"}, {"--threads"}, {"--measure", CLI_SWITCH},
                {"--bandwidth"}, {"--latency"}, {"--intra-bandwidth"}, {"--intra-latency"}, {"--node-memory"},
                {"--json", CLI_SWITCH}},
};

/* A finite number above zero, or with zero_ok at least zero. */
static double positive_number(const cli_args *a, const char *name, double absent, int zero_ok) {
    double v = cli_number(a, name, 0, DBL_MAX, absent);
    if (v == 0 && !zero_ok) ds_die(DS_EXIT_BAD_INPUT, "plan: %s must be above 0", name);
    return v;
}

int cmd_plan(int argc, char **argv) {
    cli_args a;
    if (!cli_parse(&spec, argc, argv, &a)) return 0;
    ds_plan_options o = ds_plan_defaults();
    int nodes[MAX_NODES];
    for (int i = 0; i < cli_count(&a, "--nodes"); i++)
        o.n_nodes = cli_parse_int_list(spec.cmd, "--nodes", cli_nth(&a, "--nodes", i), 1, MAX_COUNT, nodes, o.n_nodes,
                                       MAX_NODES);
    o.nodes = nodes;
    o.ranks_per_node = (int)cli_int(&a, "--ranks-per-node", 1, MAX_COUNT, o.ranks_per_node);
    o.threads = (int)cli_int(&a, "--threads", 1, MAX_COUNT, o.threads);
    o.measure = cli_count(&a, "--measure") > 0;
    o.json = cli_count(&a, "--json") > 0;
    o.inter.gbps = positive_number(&a, "--bandwidth", o.inter.gbps, 0);
    o.inter.latency_us = positive_number(&a, "--latency", o.inter.latency_us, 1);
    o.intra.gbps = positive_number(&a, "--intra-bandwidth", o.intra.gbps, 0);
    o.intra.latency_us = positive_number(&a, "--intra-latency", o.intra.latency_us, 1);
    if (cli_value(&a, "--node-memory")) o.node_memory_bytes = positive_number(&a, "--node-memory", 0, 0) * 1e9;
    for (int i = 0; i < o.n_nodes; i++)
        if ((int64_t)nodes[i] * o.ranks_per_node > MAX_COUNT)
            ds_die(DS_EXIT_BAD_INPUT, "plan: %d nodes x %d ranks per node: more than %d ranks", nodes[i],
                   o.ranks_per_node, MAX_COUNT);
    ds_config cfg;
    cli_load_config(&a, &cfg);
    int rc = ds_plan(&cfg, &o);
    cli_args_free(&a);
    return rc;
}
