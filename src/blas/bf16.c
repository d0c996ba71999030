/* bf16 matrix products (blas.h, ds_blas_set_precision): both operands rounded to bf16 by the kernel
 * table (ds_k.f32_to_bf16), products summed and written in fp32. Two backends:
 *  - oneDNN's matmul (bf16 src/weights, f32 dst), which runs AVX512_BF16 or AMX kernels; one primitive
 *    per shape, created at its first use and kept (creating one takes about a millisecond);
 *  - the reference: the bf16 operands widened back to fp32 and multiplied by BLIS sgemm, i.e. the same
 *    rounding of the inputs at fp32 speed, for CPUs without bf16 instructions.
 * Operands are converted into dense scratch buffers (kept between calls), so a converted operand can
 * feed two products (ds_linear_backward converts dy once). Not reentrant: callers are never inside an
 * OpenMP parallel region. */
#include "bf16.h"

#include "dreamstate/common.h"
#include "dreamstate/kernels.h"

#include <cpuid.h>
#include <oneapi/dnnl/dnnl.h>
#include <stdlib.h>
#include <string.h>

static int use_onednn;
static char backend_name[160];

/* ---------------------------------------------------------------- oneDNN */

static dnnl_engine_t engine;
static dnnl_stream_t stream;

typedef struct {
    int transA, transB, M, N, K, ldc;
    float alpha, beta;
    dnnl_primitive_t prim;
    dnnl_memory_t a, b, c;
    char impl[48];  /* oneDNN's name of the kernel it chose, e.g. brg:avx512_core_bf16 */
} matmul_entry;

static matmul_entry *entries;
static int n_entries, cap_entries;

static void check(dnnl_status_t st, const char *what) {
    if (st != dnnl_success)
        ds_die(DS_EXIT_FAIL, "oneDNN: %s failed (status %d); DS_BF16_BACKEND=reference runs bf16 without oneDNN", what,
               (int)st);
}

static dnnl_memory_desc_t plain_desc(int rows, int cols, int64_t row_stride, int64_t col_stride, dnnl_data_type_t type) {
    dnnl_memory_desc_t md;
    dnnl_dims_t dims = {rows, cols}, strides = {row_stride, col_stride};
    check(dnnl_memory_desc_init_by_strides(&md, 2, dims, type, strides), "memory descriptor");
    return md;
}

/* The primitive for this shape, created on first use. A op(A) [M, K] and op(B) [K, N] are dense bf16
 * (stored [M, K] or, transposed, [K, M]); C fp32 with row stride ldc. */
static matmul_entry *matmul_for(int transA, int transB, int M, int N, int K, float alpha, float beta, int ldc) {
    for (int i = 0; i < n_entries; i++) {
        matmul_entry *e = &entries[i];
        if (e->transA == transA && e->transB == transB && e->M == M && e->N == N && e->K == K && e->ldc == ldc &&
            e->alpha == alpha && e->beta == beta)
            return e;
    }
    if (n_entries == cap_entries) {
        cap_entries = cap_entries ? 2 * cap_entries : 64;
        entries = realloc(entries, sizeof(matmul_entry) * cap_entries);
        if (!entries) ds_die(DS_EXIT_FAIL, "out of memory");
    }
    matmul_entry *e = &entries[n_entries++];
    *e = (matmul_entry){transA, transB, M, N, K, ldc, alpha, beta, NULL, NULL, NULL, NULL, ""};
    dnnl_memory_desc_t a = plain_desc(M, K, transA ? 1 : K, transA ? M : 1, dnnl_bf16);
    dnnl_memory_desc_t b = plain_desc(K, N, transB ? 1 : N, transB ? K : 1, dnnl_bf16);
    dnnl_memory_desc_t c = plain_desc(M, N, ldc, 1, dnnl_f32);
    dnnl_matmul_desc_t desc;
    check(dnnl_matmul_desc_init(&desc, &a, &b, NULL, &c), "matmul descriptor");
    dnnl_primitive_attr_t attr;
    check(dnnl_primitive_attr_create(&attr), "attributes");
    if (alpha != 1.0f) check(dnnl_primitive_attr_set_output_scales(attr, 1, 0, &alpha), "output scale");
    dnnl_post_ops_t post = NULL;
    if (beta != 0.0f) {  /* C = alpha A B + beta C: the sum post-op */
        check(dnnl_post_ops_create(&post), "post-ops");
        check(dnnl_post_ops_append_sum(post, beta), "sum post-op");
        check(dnnl_primitive_attr_set_post_ops(attr, post), "post-ops");
    }
    dnnl_primitive_desc_t pd;
    check(dnnl_primitive_desc_create(&pd, &desc, attr, engine, NULL), "matmul primitive descriptor");
    const char *impl = "?";
    check(dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl), "implementation query");
    snprintf(e->impl, sizeof e->impl, "%s", impl);
    check(dnnl_primitive_create(&e->prim, pd), "matmul primitive");
    check(dnnl_memory_create(&e->a, &a, engine, DNNL_MEMORY_NONE), "memory");
    check(dnnl_memory_create(&e->b, &b, engine, DNNL_MEMORY_NONE), "memory");
    check(dnnl_memory_create(&e->c, &c, engine, DNNL_MEMORY_NONE), "memory");
    dnnl_primitive_desc_destroy(pd);
    if (post) dnnl_post_ops_destroy(post);
    dnnl_primitive_attr_destroy(attr);
    return e;
}

static void onednn_product(int transA, int transB, int M, int N, int K, float alpha, const void *A, const void *B,
                           float beta, float *C, int ldc) {
    matmul_entry *e = matmul_for(transA, transB, M, N, K, alpha, beta, ldc);
    check(dnnl_memory_set_data_handle(e->a, (void *)A), "memory handle");
    check(dnnl_memory_set_data_handle(e->b, (void *)B), "memory handle");
    check(dnnl_memory_set_data_handle(e->c, C), "memory handle");
    dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, e->a}, {DNNL_ARG_WEIGHTS, e->b}, {DNNL_ARG_DST, e->c}};
    check(dnnl_primitive_execute(e->prim, stream, 3, args), "matmul");
    check(dnnl_stream_wait(stream), "stream wait");
}

/* ---------------------------------------------------------------- backend choice */

/* CPUID leaf 7 EDX bit 22, with the tile state enabled by the OS (XCR0 bits 17 and 18), read directly:
 * not every compiler's __builtin_cpu_supports knows "amx-bf16" (clang 14, the fuzz build's, does not). */
static int cpu_has_amx_bf16(void) {
    unsigned a, b, c, d, xcr0_low, xcr0_high;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || !(d & 1u << 22)) return 0;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & 1u << 27)) return 0;  /* OSXSAVE: xgetbv is available */
    __asm__("xgetbv" : "=a"(xcr0_low), "=d"(xcr0_high) : "c"(0));
    return (xcr0_low & 3u << 17) == 3u << 17;
}

const char *bf16_backend_init(void) {
    const char *want = getenv("DS_BF16_BACKEND");
    int hw = ds_cpu_has_avx512_bf16() || cpu_has_amx_bf16();
    if (want && *want && strcmp(want, "onednn") != 0 && strcmp(want, "reference") != 0)
        ds_die(DS_EXIT_BAD_INPUT, "DS_BF16_BACKEND=%s: use onednn, reference, or leave it unset (onednn where the CPU "
               "has AVX512_BF16 or AMX-BF16)", want);
    if (want && strcmp(want, "onednn") == 0 && !hw)
        ds_die(DS_EXIT_BAD_INPUT, "DS_BF16_BACKEND=onednn: this CPU has neither AVX512_BF16 nor AMX-BF16; unset it to "
               "run bf16 through the reference path");
    use_onednn = hw && !(want && strcmp(want, "reference") == 0);
    if (use_onednn) {
        if (!engine) {
            check(dnnl_engine_create(&engine, dnnl_cpu, 0), "CPU engine");
            check(dnnl_stream_create(&stream, engine, dnnl_stream_default_flags), "stream");
        }
        /* what oneDNN picks for a typical shape */
        snprintf(backend_name, sizeof backend_name, "bf16, oneDNN matmul %s", matmul_for(0, 1, 64, 64, 64, 1.0f, 0.0f, 64)->impl);
    } else {
        snprintf(backend_name, sizeof backend_name, "bf16, reference (bf16-rounded operands, BLIS sgemm)%s",
                 hw ? ": DS_BF16_BACKEND=reference" : ": no AVX512_BF16 or AMX-BF16 on this CPU");
    }
    return backend_name;
}

/* ---------------------------------------------------------------- operands */

static void *scratch[BF16_SLOTS];
static size_t scratch_bytes[BF16_SLOTS];
static uint16_t *rounding;  /* the reference backend's bf16 step */
static size_t rounding_bytes;

static void *grow(void **buf, size_t *have, size_t want) {
    if (want > *have) {
        ds_free(*buf);
        *buf = ds_alloc(want);
        *have = want;
    }
    return *buf;
}

const void *bf16_prepare(int slot, int rows, int cols, const float *x, int ld) {
    double t0 = ds_now_seconds();
    int64_t n = (int64_t)rows * cols;
    uint16_t *h = grow(use_onednn ? &scratch[slot] : (void **)&rounding, use_onednn ? &scratch_bytes[slot] : &rounding_bytes,
                       sizeof(uint16_t) * (n > 0 ? n : 1));
    if (ld == cols) {
        ds_k.f32_to_bf16(n, x, h);
    } else {
        for (int r = 0; r < rows; r++) ds_k.f32_to_bf16(cols, x + (int64_t)r * ld, h + (int64_t)r * cols);
    }
    const void *prepared = h;
    if (!use_onednn) {
        float *wide = grow(&scratch[slot], &scratch_bytes[slot], sizeof(float) * (n > 0 ? n : 1));
        ds_k.bf16_to_f32(n, h, wide);
        prepared = wide;
    }
    blas_seconds.conversions += ds_now_seconds() - t0;
    return prepared;
}

void bf16_product(int transA, int transB, int M, int N, int K, float alpha, const void *A, const void *B, float beta,
                  float *C, int ldc) {
    if (M == 0 || N == 0) return;
    if (use_onednn && K > 0) {
        double t0 = ds_now_seconds();
        onednn_product(transA, transB, M, N, K, alpha, A, B, beta, C, ldc);
        blas_seconds.products += ds_now_seconds() - t0;
    } else {
        blis_sgemm(transA, transB, M, N, K, alpha, A, transA ? M : K, B, transB ? K : N, beta, C, ldc);
    }
}
