#include "impl.h"

#include <stdlib.h>
#include <string.h>

#define DS_KERNEL_TABLE(suffix, label)                                                   \
    {                                                                                    \
        .name = label, .wkv7_forward = wkv7_forward_##suffix,                            \
        .wkv7_backward = wkv7_backward_##suffix, .norm_forward = norm_forward_##suffix,  \
        .norm_backward = norm_backward_##suffix,                                         \
        .modulate_forward = modulate_forward_##suffix,                                   \
        .modulate_backward = modulate_backward_##suffix,                                 \
        .gated_residual_forward = gated_residual_forward_##suffix,                       \
        .gated_residual_backward = gated_residual_backward_##suffix,                     \
        .shift_mix_forward = shift_mix_forward_##suffix,                                 \
        .shift_mix_backward = shift_mix_backward_##suffix,                               \
        .act_forward = act_forward_##suffix, .act_backward = act_backward_##suffix,      \
        .softmax_xent = softmax_xent_##suffix, .adamw = adamw_##suffix,                  \
        .softmax_forward = softmax_forward_##suffix,                                     \
        .softmax_backward = softmax_backward_##suffix,                                   \
        .attention_forward = attention_forward_##suffix,                                 \
        .attention_backward = attention_backward_##suffix,                               \
        .sum_squares = sum_squares_##suffix, .scale = scale_##suffix,                    \
        .axpy = axpy_##suffix, .f32_to_bf16 = f32_to_bf16_##suffix,                      \
        .bf16_to_f32 = bf16_to_f32_##suffix, .box_muller = box_muller_##suffix,          \
    }

const ds_kernel_table ds_kernels_reference = DS_KERNEL_TABLE(ref, "reference");
const ds_kernel_table ds_kernels_avx512 = DS_KERNEL_TABLE(avx512, "avx512");
ds_kernel_table ds_k = DS_KERNEL_TABLE(ref, "reference");

int ds_cpu_has_avx512(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
}

int ds_cpu_has_avx512_bf16(void) {
    __builtin_cpu_init();
    return ds_cpu_has_avx512() && __builtin_cpu_supports("avx512bf16");
}

const char *ds_kernels_init(void) {
    const char *want = getenv("DS_KERNELS");
    int use_ref = (want && strcmp(want, "ref") == 0) || !ds_cpu_has_avx512();
    ds_k = use_ref ? ds_kernels_reference : ds_kernels_avx512;
    if (!use_ref && !ds_cpu_has_avx512_bf16()) {  /* AVX-512 without its bf16 extension (Skylake, Ice Lake) */
        ds_k.f32_to_bf16 = f32_to_bf16_ref;
        ds_k.bf16_to_f32 = bf16_to_f32_ref;
    }
    return ds_k.name;
}
