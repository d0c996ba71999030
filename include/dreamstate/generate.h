/* Text generation from an RWKV-7 model and an initial state (DREAMSTATE part A, "using states"):
 * the token sampler and the `generate` command. */
#ifndef DREAMSTATE_GENERATE_H
#define DREAMSTATE_GENERATE_H

#include <stddef.h>
#include <stdint.h>

/* ds_rng stream of the sampler's uniforms: token i of a generation uses ds_rng_uniform(seed,
 * DS_GENERATE_STREAM, i), so a seed reproduces the same text. */
#define DS_GENERATE_STREAM 0x4745u  /* "GE" */

/* Bytes of scratch memory ds_sample_token needs for V logits. */
size_t ds_sample_scratch_bytes(int V);

/* Draws one token id from logits[0..V) with the uniform number u in [0, 1); pure (no state, no I/O).
 *   temperature 0: the argmax (the lowest id on ties); top_p and u are then not used.
 *   temperature > 0: weights w_i = exp((logit_i - max logit) / temperature) in double (the softmax
 *     before normalising). Tokens are ranked by logit, descending, ties by lower id. The nucleus is
 *     the shortest prefix of that ranking whose weight reaches top_p * sum(w) (sums in double, so up
 *     to rounding); top_p = 1 keeps every token. The result is the first nucleus token, in id order,
 *     whose cumulative weight exceeds u * (nucleus weight): token i is drawn with probability
 *     w_i / (nucleus weight), the renormalised softmax of the nucleus, and the draw is a
 *     deterministic function of u. O(V) time plus sorting a small part of the vocabulary.
 * Returns -1 (and draws nothing) on bad arguments: V < 1, temperature negative or not finite, top_p
 * outside (0, 1], u outside [0, 1), a logit that is not finite. `scratch`: ds_sample_scratch_bytes(V)
 * bytes, aligned for double. */
int32_t ds_sample_token(const float *logits, int V, double temperature, double top_p, double u, void *scratch);

/* `dreamstate generate CONFIG --checkpoint FILE [OPTIONS]` (argv[0] is the subcommand name): continues
 * text from an initial state, streaming the new tokens' bytes to stdout (see --help). Returns the exit
 * code; bad arguments or inputs exit with code 2. */
int ds_generate_main(int argc, char **argv);

#endif
