/* RWKV-LM's training sample order (data.sampler rwkv_lm); the mapping is described in data.h. */
#include "dreamstate/data.h"
#include "dreamstate/common.h"

#include <math.h>
#include <stdio.h>

uint64_t ds_rwkv_lm_offset(uint64_t magic_prime, uint64_t ctx_len, uint64_t g) {
    uint64_t p = magic_prime;
    /* RWKV-LM computes int(P * ((sqrt(5) - 1) / 2)) in double precision: the same operations here */
    uint64_t factor = (uint64_t)((double)p * ((sqrt(5.0) - 1.0) / 2.0));
    uint64_t ii = (g + 1) % p;  /* ii^3 overflows 64 bits long before RWKV-LM's Python integers do */
    uint64_t cube = ds_mulmod_u64(ds_mulmod_u64(ii, ii, p), ii, p);
    return ds_mulmod_u64(factor % p, cube, p) * ctx_len;
}

/* P / slots > 0.9, exactly */
static int above_nine_tenths(uint64_t p, uint64_t slots) {
    return (unsigned __int128)p * 10 > (unsigned __int128)slots * 9;
}

uint64_t ds_rwkv_lm_magic_prime(uint64_t n_tokens, uint64_t ctx_len) {
    uint64_t slots = n_tokens / ctx_len;
    for (uint64_t p = slots - (slots > 0); p > 0 && above_nine_tenths(p, slots); p--)
        if (p % 3 == 2 && ds_is_prime_u64(p)) return p;
    return 0;
}

int ds_rwkv_lm_check_prime(uint64_t magic_prime, uint64_t n_tokens, uint64_t ctx_len, char *why, size_t why_len) {
    uint64_t slots = n_tokens / ctx_len, p = magic_prime;
    if (!above_nine_tenths(p, slots) || p > slots) {
        snprintf(why, why_len, "must be in (0.9, 1] x (tokens // ctx_len) = (%.1f, %llu] for %llu tokens and ctx_len "
                 "%llu, got %llu", 0.9 * (double)slots, (unsigned long long)slots, (unsigned long long)n_tokens,
                 (unsigned long long)ctx_len, (unsigned long long)p);
        return -1;
    }
    if (p * ctx_len + 1 > n_tokens) {  /* only when P = tokens / ctx_len exactly */
        snprintf(why, why_len, "%llu x ctx_len %llu leaves no room for the last window's extra token (%llu tokens); "
                 "use a smaller prime", (unsigned long long)p, (unsigned long long)ctx_len,
                 (unsigned long long)n_tokens);
        return -1;
    }
    return 0;
}
