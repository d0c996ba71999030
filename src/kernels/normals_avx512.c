/* Gaussian draws, AVX-512 twin of box_muller_ref: the same doubles, 32 draws at a time.
 *
 * libm's log and cos are not correctly rounded, so a vector version of them would differ in the last
 * bit now and then, and with it every initial weight. Instead each lane evaluates log(u1) and
 * cos(angle) in double-double, to a relative error of about 2^-64 (measured against quad precision:
 * under 0.001 ulp of the double result), and keeps the nearest double when the exact value lies
 * clearly away from the midpoint between two doubles. There glibc, whose results are documented
 * within 0.519 ulp (log) and 0.548 ulp (cos) of the exact value, returns that same nearest double.
 * A lane whose value lies within LOG_MARGIN / COS_MARGIN ulp of a midpoint (6% and 12% of the lanes)
 * takes libm's own result instead. tests/test_kernels.c compares the two kernels bit for bit, on hashed
 * draws and on chosen hard arguments. */
#include "impl.h"

#include "dreamstate/common.h"

#include <immintrin.h>
#include <math.h>

#define LOG_MARGIN 0.03  /* ulp: glibc's 0.019 beyond half an ulp, ours, and room */
#define COS_MARGIN 0.06  /* ulp: glibc's 0.048 beyond half an ulp, ours, and room */

/* Each step works on W vectors side by side: a double-double evaluation is a long chain of dependent
 * operations, and one vector at a time would leave the FMA units waiting on latency. */
#define W 4
#define INLINE static inline __attribute__((always_inline))
typedef struct {
    __m512d v[W];
} vd;
typedef struct {
    __mmask8 m[W];
} vmask;

#define MAP2(name, op) \
    INLINE vd name(vd a, vd b) { vd r; for (int j = 0; j < W; j++) r.v[j] = op(a.v[j], b.v[j]); return r; }
#define MAP3(name, op)                                                   \
    INLINE vd name(vd a, vd b, vd c) {                                   \
        vd r;                                                            \
        for (int j = 0; j < W; j++) r.v[j] = op(a.v[j], b.v[j], c.v[j]); \
        return r;                                                        \
    }
MAP2(add, _mm512_add_pd)
MAP2(sub, _mm512_sub_pd)
MAP2(mul, _mm512_mul_pd)
MAP2(dv, _mm512_div_pd)
MAP3(fmadd, _mm512_fmadd_pd)    /* a b + c */
MAP3(fmsub, _mm512_fmsub_pd)    /* a b - c */
MAP3(fnmadd, _mm512_fnmadd_pd)  /* c - a b */

INLINE vd splat(double x) {
    vd r;
    for (int j = 0; j < W; j++) r.v[j] = _mm512_set1_pd(x);
    return r;
}

/* ---- double-double arithmetic: a value hi + lo, |lo| about ulp(hi) / 2 or less ----
 * Products are left unnormalised (their |lo| may exceed half an ulp of hi a little): the sum they feed
 * renormalises. */
typedef struct {
    vd hi, lo;
} dd;

INLINE dd dd_const(double hi, double lo) { return (dd){splat(hi), splat(lo)}; }
INLINE dd two_sum(vd a, vd b) {
    vd s = add(a, b), bb = sub(s, a);
    return (dd){s, add(sub(a, sub(s, bb)), sub(b, bb))};
}
INLINE dd fast_two_sum(vd a, vd b) { /* |a| >= |b| or a == 0 */
    vd s = add(a, b);
    return (dd){s, sub(b, sub(s, a))};
}
INLINE dd dd_add(dd a, dd b) {
    dd s = two_sum(a.hi, b.hi);
    return fast_two_sum(s.hi, add(s.lo, add(a.lo, b.lo)));
}
INLINE dd dd_add_smaller(dd a, dd b) { /* |a| >= |b| */
    dd s = fast_two_sum(a.hi, b.hi);
    return fast_two_sum(s.hi, add(s.lo, add(a.lo, b.lo)));
}
INLINE dd dd_mul(dd a, dd b) {
    vd p = mul(a.hi, b.hi), e = fmsub(a.hi, b.hi, p);
    return (dd){p, fmadd(a.hi, b.lo, fmadd(a.lo, b.hi, e))};
}
INLINE dd dd_mul_d(dd a, vd b) {
    vd p = mul(a.hi, b), e = fmsub(a.hi, b, p);
    return (dd){p, fmadd(a.lo, b, e)};
}
INLINE dd dd_twice(dd a) { return (dd){add(a.hi, a.hi), add(a.lo, a.lo)}; }
INLINE dd dd_select(vmask take_b, dd a, dd b) {
    for (int j = 0; j < W; j++) {
        a.hi.v[j] = _mm512_mask_blend_pd(take_b.m[j], a.hi.v[j], b.hi.v[j]);
        a.lo.v[j] = _mm512_mask_blend_pd(take_b.m[j], a.lo.v[j], b.lo.v[j]);
    }
    return a;
}
INLINE dd dd_negate_where(vmask where, dd a) {
    for (int j = 0; j < W; j++) {
        a.hi.v[j] = _mm512_mask_sub_pd(a.hi.v[j], where.m[j], _mm512_setzero_pd(), a.hi.v[j]);
        a.lo.v[j] = _mm512_mask_sub_pd(a.lo.v[j], where.m[j], _mm512_setzero_pd(), a.lo.v[j]);
    }
    return a;
}

/* Horner in double: c[0] + t c[1] + ... + t^(n-1) c[n-1] */
INLINE vd horner(vd t, const double *c, int n) {
    vd y = splat(c[n - 1]);
    for (int i = n - 2; i >= 0; i--) y = fmadd(y, t, splat(c[i]));
    return y;
}

/* ---- log(u), u in (0, 1] ----
 * u = 2^e m with m in [sqrt(1/2), sqrt(2)); log u = e ln 2 + 2 atanh(s), s = (m - 1) / (m + 1), |s| < 0.172:
 * 2 atanh(s) = 2 s + 2 s t A(t), t = s^2, A(t) = 1/3 + t/5 + t^2/7 + ..., truncated below 2^-70. */
static const double LN2_HI = 0x1.62e42feep-1, LN2_LO = 0x1.a39ef35793c76p-33;  /* e LN2_HI is exact */
static const double ATANH_TAIL[] = {  /* 1/5, 1/7, ..., 1/25 */
    0x1.999999999999ap-3, 0x1.2492492492492p-3, 0x1.c71c71c71c71cp-4, 0x1.745d1745d1746p-4,
    0x1.3b13b13b13b14p-4, 0x1.1111111111111p-4, 0x1.e1e1e1e1e1e1ep-5, 0x1.af286bca1af28p-5,
    0x1.8618618618618p-5, 0x1.642c8590b2164p-5, 0x1.47ae147ae147bp-5};

INLINE dd log_dd(vd u) {
    vd m, e;
    for (int j = 0; j < W; j++) {
        __m512i bits = _mm512_castpd_si512(u.v[j]), mant = _mm512_and_si512(bits, _mm512_set1_epi64(0xFFFFFFFFFFFFFll));
        __m512i ej = _mm512_sub_epi64(_mm512_srli_epi64(bits, 52), _mm512_set1_epi64(1023));
        __mmask8 above_sqrt2 = _mm512_cmpgt_epu64_mask(mant, _mm512_set1_epi64(0x6A09E667F3BCDll));
        ej = _mm512_mask_add_epi64(ej, above_sqrt2, ej, _mm512_set1_epi64(1));
        __m512i exponent = _mm512_mask_blend_epi64(above_sqrt2, _mm512_set1_epi64(1023ll << 52), _mm512_set1_epi64(1022ll << 52));
        m.v[j] = _mm512_castsi512_pd(_mm512_or_si512(mant, exponent));
        e.v[j] = _mm512_cvtepi64_pd(ej);
    }
    vd f = sub(m, splat(1.0));  /* exact */
    dd d = fast_two_sum(splat(2.0), f);
    vd s_hi = dv(f, d.hi);
    /* f - s_hi d.hi is exact (the remainder of a correctly rounded quotient) */
    vd rem = fnmadd(s_hi, d.lo, fnmadd(s_hi, d.hi, f));
    dd s = fast_two_sum(s_hi, dv(rem, d.hi));
    dd t = dd_mul(s, s);
    dd A = dd_add_smaller(dd_const(0x1.5555555555555p-2, 0x1.5555555555555p-56), dd_mul_d(t, horner(t.hi, ATANH_TAIL, 11)));
    dd log1p_m = dd_twice(dd_add_smaller(s, dd_mul(dd_mul(s, t), A)));
    vd p = mul(e, splat(LN2_LO));
    dd e_ln2_lo = {p, fmsub(e, splat(LN2_LO), p)};
    /* |e ln 2| >= 0.69 > |log1p(m - 1)| unless e = 0 */
    return dd_add_smaller((dd){mul(e, splat(LN2_HI)), splat(0.0)}, dd_add(e_ln2_lo, log1p_m));
}

/* ---- cos(x), x in [0, 2 pi] ----
 * x = k pi/2 + r, |r| <= pi/4, with pi/2 in four parts (fdlibm's: the first three of 33 bits, so k times
 * each is exact, and x - k P1 is exact by Sterbenz); cos x = cos r, -sin r, -cos r, sin r by k mod 4.
 * Taylor series in t = r^2 to t^11, truncated below 2^-80; their leading terms in double-double. */
static const double P1 = 0x1.921fb544p+0, P2 = 0x1.0b4611a6p-34, P3 = 0x1.3198a2ep-69, P4 = 0x1.b839a252049c1p-104;
static const double COS_TAIL[] = {  /* -1/6!, 1/8!, ..., -1/22! */
    -0x1.6c16c16c16c17p-10, 0x1.a01a01a01a01ap-16, -0x1.27e4fb7789f5cp-22, 0x1.1eed8eff8d898p-29,
    -0x1.93974a8c07c9dp-37, 0x1.ae7f3e733b81fp-45, -0x1.6827863b97d97p-53, 0x1.e542ba4020225p-62,
    -0x1.0ce396db7f853p-70};
static const double SIN_TAIL[] = {  /* -1/7!, 1/9!, ..., -1/23! */
    -0x1.a01a01a01a01ap-13, 0x1.71de3a556c734p-19, -0x1.ae64567f544e4p-26, 0x1.6124613a86d09p-33,
    -0x1.ae7f3e733b81fp-41, 0x1.952c77030ad4ap-49, -0x1.2f49b46814157p-57, 0x1.71b8ef6dcf572p-66,
    -0x1.761b41316381ap-75};

INLINE dd cos_dd(vd x) {
    vd k;
    vmask odd, negate;
    for (int j = 0; j < W; j++) {
        k.v[j] = _mm512_roundscale_pd(_mm512_mul_pd(x.v[j], _mm512_set1_pd(0x1.45f306dc9c883p-1)),
                                      _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        __m512i q = _mm512_and_si512(_mm512_cvtpd_epi64(k.v[j]), _mm512_set1_epi64(3));
        odd.m[j] = _mm512_test_epi64_mask(q, _mm512_set1_epi64(1));
        negate.m[j] = _mm512_cmpeq_epi64_mask(q, _mm512_set1_epi64(1)) | _mm512_cmpeq_epi64_mask(q, _mm512_set1_epi64(2));
    }
    dd r = two_sum(fnmadd(k, splat(P1), x), mul(k, splat(-P2)));
    r = fast_two_sum(r.hi, fnmadd(k, splat(P4), fnmadd(k, splat(P3), r.lo)));
    dd t = dd_mul(r, r);
    /* cos r = 1 + t (-1/2 + t (1/24 + t COS_TAIL(t))): the tail's rounding weighs t^3 / 720 < 2^-11 of
     * an ulp of the result, so it stays in double */
    dd c = dd_add_smaller(dd_const(0x1.5555555555555p-5, 0x1.5555555555555p-59), dd_mul_d(t, horner(t.hi, COS_TAIL, 9)));
    c = dd_add_smaller(dd_const(-0.5, 0.0), dd_mul(t, c));
    c = dd_add_smaller(dd_const(1.0, 0.0), dd_mul(t, c));
    /* sin r = r + r t (-1/6 + t (1/120 + t SIN_TAIL(t))) */
    dd s = dd_add_smaller(dd_const(0x1.1111111111111p-7, 0x1.1111111111111p-63), dd_mul_d(t, horner(t.hi, SIN_TAIL, 9)));
    s = dd_add_smaller(dd_const(-0x1.5555555555555p-3, -0x1.5555555555555p-57), dd_mul(t, s));
    s = dd_add_smaller(r, dd_mul(dd_mul(r, t), s));
    return dd_negate_where(negate, dd_select(odd, c, s));
}

/* The lanes where hi is, for sure, the double a libm within 0.5 + margin ulp returns: v = hi + lo lies
 * farther than margin ulp from the midpoints around hi. A power of two hi (its lower neighbour is half
 * an ulp away) goes to libm; an exact zero is kept. */
INLINE __mmask8 surely_rounded(__m512d hi, __m512d lo, double margin) {
    __m512i bits = _mm512_castpd_si512(hi);
    __m512i biased = _mm512_and_si512(_mm512_srli_epi64(bits, 52), _mm512_set1_epi64(0x7FF));
    /* 1 / ulp(hi) = 2^(1075 - biased), a normal double for biased > 52 */
    __m512d inverse_ulp = _mm512_castsi512_pd(_mm512_slli_epi64(_mm512_sub_epi64(_mm512_set1_epi64(2098), biased), 52));
    __m512d fraction = _mm512_mul_pd(_mm512_abs_pd(lo), inverse_ulp);
    __mmask8 clear = _mm512_cmp_pd_mask(fraction, _mm512_set1_pd(0.5 - margin), _CMP_LT_OQ) &
                     _mm512_test_epi64_mask(bits, _mm512_set1_epi64(0xFFFFFFFFFFFFFll)) &
                     _mm512_cmpgt_epi64_mask(biased, _mm512_set1_epi64(52));
    __mmask8 zero = _mm512_cmp_pd_mask(hi, _mm512_setzero_pd(), _CMP_EQ_OQ) & _mm512_cmp_pd_mask(lo, _mm512_setzero_pd(), _CMP_EQ_OQ);
    return clear | zero;
}

INLINE __m512i splitmix64_v(__m512i x) {
    x = _mm512_add_epi64(x, _mm512_set1_epi64((long long)0x9E3779B97F4A7C15ull));
    x = _mm512_mullo_epi64(_mm512_xor_si512(x, _mm512_srli_epi64(x, 30)), _mm512_set1_epi64((long long)0xBF58476D1CE4E5B9ull));
    x = _mm512_mullo_epi64(_mm512_xor_si512(x, _mm512_srli_epi64(x, 27)), _mm512_set1_epi64((long long)0x94D049BB133111EBull));
    return _mm512_xor_si512(x, _mm512_srli_epi64(x, 31));
}

/* A block's lanes that need libm are gathered (argument and position) and computed after its vector pass,
 * in a loop of their own: no branch per lane in the vector loop. The gathering compresses in registers
 * and stores whole vectors (hence 8 spare slots): a masked compress to memory is microcoded on AMD. */
#define BLOCK 512

void box_muller_avx512(int64_t n, uint64_t key, uint64_t first, double *x) {
    const __m512i lanes = _mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0), k = _mm512_set1_epi64((long long)key);
    double log_u1[BLOCK], cos_angle[BLOCK], log_arg[BLOCK + 8], cos_arg[BLOCK + 8];
    int64_t log_at[BLOCK + 8], cos_at[BLOCK + 8];
    for (int64_t b = 0; b < n; b += BLOCK) {
        int64_t len = n - b < BLOCK ? n - b : BLOCK, n_log = 0, n_cos = 0;
        for (int64_t i = 0; i < len; i += 8 * W) {
            vd u1, angle;
            vmask live;
            for (int j = 0; j < W; j++) {
                int64_t at = i + 8 * j, left = len - at;
                live.m[j] = left >= 8 ? 0xFF : left > 0 ? (__mmask8)((1u << left) - 1) : 0;
                __m512i twice = _mm512_slli_epi64(_mm512_add_epi64(_mm512_set1_epi64((long long)(first + (uint64_t)(b + at))), lanes), 1);
                __m512i b1 = _mm512_srli_epi64(splitmix64_v(_mm512_xor_si512(k, twice)), 11);
                __m512i b2 = _mm512_srli_epi64(splitmix64_v(_mm512_xor_si512(k, _mm512_or_si512(twice, _mm512_set1_epi64(1)))), 11);
                u1.v[j] = _mm512_mul_pd(_mm512_cvtepu64_pd(_mm512_add_epi64(b1, _mm512_set1_epi64(1))), _mm512_set1_pd(0x1.0p-53));
                angle.v[j] = _mm512_mul_pd(_mm512_set1_pd(2.0 * M_PI), _mm512_mul_pd(_mm512_cvtepu64_pd(b2), _mm512_set1_pd(0x1.0p-53)));
            }
            dd lg = log_dd(u1), cs = cos_dd(angle);
            for (int j = 0; j < W; j++) {
                int64_t at = i + 8 * j;
                if (!live.m[j]) break;
                __m512i where = _mm512_add_epi64(_mm512_set1_epi64(at), lanes);
                __mmask8 to_libm = live.m[j] & ~surely_rounded(lg.hi.v[j], lg.lo.v[j], LOG_MARGIN);
                _mm512_storeu_pd(log_arg + n_log, _mm512_maskz_compress_pd(to_libm, u1.v[j]));
                _mm512_storeu_si512(log_at + n_log, _mm512_maskz_compress_epi64(to_libm, where));
                n_log += __builtin_popcount(to_libm);
                to_libm = live.m[j] & ~surely_rounded(cs.hi.v[j], cs.lo.v[j], COS_MARGIN);
                _mm512_storeu_pd(cos_arg + n_cos, _mm512_maskz_compress_pd(to_libm, angle.v[j]));
                _mm512_storeu_si512(cos_at + n_cos, _mm512_maskz_compress_epi64(to_libm, where));
                n_cos += __builtin_popcount(to_libm);
                _mm512_storeu_pd(log_u1 + at, lg.hi.v[j]);
                _mm512_storeu_pd(cos_angle + at, cs.hi.v[j]);
            }
        }
        for (int64_t i = 0; i < n_log; i++) log_u1[log_at[i]] = log(log_arg[i]);
        for (int64_t i = 0; i < n_cos; i++) cos_angle[cos_at[i]] = cos(cos_arg[i]);
        for (int64_t i = 0; i < len; i += 8) {
            __mmask8 live = len - i >= 8 ? 0xFF : (__mmask8)((1u << (len - i)) - 1);
            __m512d radius = _mm512_sqrt_pd(_mm512_mul_pd(_mm512_set1_pd(-2.0), _mm512_loadu_pd(log_u1 + i)));
            _mm512_mask_storeu_pd(x + b + i, live, _mm512_mul_pd(radius, _mm512_loadu_pd(cos_angle + i)));
        }
    }
}
