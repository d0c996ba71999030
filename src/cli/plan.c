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
        "Predicts step time, tokens/s, communication share and memory per rank of `dreamstate train CONFIG`\n"
        "(task lm) on each node count, to size a job before queueing it.\n"
        "\n"
        "  --nodes N[,N...]      node counts (repeatable), e.g. --nodes 1,2,4,8\n"
        "  --ranks-per-node R    MPI ranks per node (default 1); p = nodes x R ranks\n"
        "  --threads T           threads per rank (default run.threads, else this machine's cores / R)\n"
        "  --measure             measure the compute rates on this machine with T threads (seconds to a\n"
        "                        minute; allocates two layers of the model) instead of the defaults\n"
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
        "  - compute per rank and step = accum x micro x ctx_len x s/token (forward + backward) + the\n"
        "    trainer's per-parameter loops where it runs them: zeroing the gradient and adding it into the\n"
        "    fp64 accumulator per micro-step (fp64; skipped by one rank with one micro-step), zeroing the\n"
        "    accumulator and converting to fp32 per step; fp32: zeroing per step; clipping and AdamW over\n"
        "    the owned parameters per step. Ranks on one node are assumed not to slow each other down.\n"
        "  - rates: --measure times the model's own forward + backward at 1 and 2 layers (the smallest\n"
        "    micro-batch of the rows; extrapolated linearly in layers; matrix products in train.precision)\n"
        "    and each per-parameter loop; without it, defaults per thread from the 0.1B shape on the dev\n"
        "    machine (100 GFLOP/s of ds_rwkv7_flops_per_token in fp32, 175 in bf16; wider models run\n"
        "    faster, small ones far slower: use --measure).\n"
        "  - MFU = FLOPs/token x tokens/s / (ranks x peak per rank), the peak of train.precision: FP32 FMA or\n"
        "    bf16 dot products (VDPBF16PS), measured with --measure, else the dev machine's 265 / 530\n"
        "    GFLOP/s per thread.\n"
        "  - gradient allreduce: params x 8 bytes (grad_reduce fp64) or x 4 (fp32) in 8 MiB buckets; ring\n"
        "    alpha-beta cost per bucket 2(p-1)/p x bytes / bandwidth + 2(p-1) x latency, over the intra-node\n"
        "    link (1 node), the inter-node link (1 rank per node) or the slower of both. ZeRO-1\n"
        "    (train.zero_stage 1): buckets reduced to their owners (half that cost), then the fp32 parameters\n"
        "    shared the same way after the update (not overlapped).\n"
        "  - overlap: buckets leave as backward finishes them (head, layers last to first, embedding last);\n"
        "    exposed = communication still running when backward ends. This assumes MPI progresses\n"
        "    transfers during compute; Open MPI does so only inside MPI calls, and over shared memory the\n"
        "    copies need the computing cores: on the 2-core dev machine 2 ranks hid 46% of the allreduce\n"
        "    where this model says 70% (`make bench`). exposed s is a lower bound, comm s the upper one.\n"
        "  - not counted: evaluation, checkpoints, data loading, start-up, the few 8-byte allreduces.\n"
        "  - memory of rank 0: params 4 + grads 4 + fp64 accumulator 8 (fp64) + AdamW 8 bytes per owned\n"
        "    param (+ 8 per param under ZeRO-1: rank 0 gathers the full moments for checkpoints) +\n"
        "    activations of one micro-batch (+ in bf16 the converted product operands, 2 bytes x (micro x\n"
        "    ctx_len + n_embd) x max(vocab, 4 n_embd)) + 0.1 GB runtime; fits = the node's ranks within\n"
        "    --node-memory.\n",
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
