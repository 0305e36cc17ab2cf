/* 2x2 max pooling, stride 2, over channels-last (NHWC) float32 or bfloat16
 * tensors, forward and backward, in one pass each.
 *
 * torch's CPU max_pool2d vectorises over channels; the lab's nets have 9 and
 * 16 of them, so most of each vector is wasted, and its backward first fills
 * the whole input gradient with zeros, then scatters. Here the forward keeps
 * which of the four window cells won (0..3, row-major) in one byte, and the
 * backward writes every input-gradient cell exactly once: the output gradient
 * to the winner, zero to the other three.
 *
 * Ties and NaN as torch's kernel decides them: the first cell in row-major
 * order wins a tie, and a NaN wins over what came before it (the last NaN
 * of a window is the one kept).
 * The maximum is one of the inputs, so it is copied bit for bit; bfloat16
 * values are compared as the float32 they widen to (their 16 bits, shifted up).
 *
 * Work is split by output rows: a row is (image, output row), all columns and
 * channels; [start, stop) of the N * H/2 rows. H and W are even. The forward can
 * apply the ReLU that follows the pool in training (`relu`), sparing torch's
 * ReLU a pass over the output each way.
 */
#include <stdint.h>
#include <string.h>
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#include <immintrin.h>
#define HAVE_AVX512 1
#endif

static inline float widen_bf16(uint16_t bits)
{
    uint32_t wide = (uint32_t)bits << 16;
    float value;
    memcpy(&value, &wide, sizeof value);
    return value;
}

/* Whether `v` takes the window from the current best `best`: larger, or NaN. */
static inline int wins(float v, float best)
{
    return (v > best) | (v != v);
}

/* Branch-free (which cell wins is data, not predictable). `C` is a constant in the
 * common cases (the lab's 9 and 16 channels), so the channel loop unrolls. */
#define FORWARD_ROWS(NAME, TYPE, WIDEN)                                                     \
    static inline __attribute__((always_inline)) void NAME(                                 \
        const TYPE *x, TYPE *out, uint8_t *argmax, int64_t H, int64_t W, const int64_t C,   \
        int64_t start, int64_t stop)                                                        \
    {                                                                                       \
        const int64_t OH = H / 2, OW = W / 2, row = W * C;                                  \
        for (int64_t r = start; r < stop; r++) {                                            \
            const int64_t n = r / OH, oh = r % OH;                                          \
            const TYPE *top = x + ((n * H + 2 * oh) * W) * C;                               \
            TYPE *o = out + r * OW * C;                                                     \
            uint8_t *a = argmax + r * OW * C;                                               \
            for (int64_t ow = 0; ow < OW; ow++) {                                           \
                const TYPE *p0 = top + 2 * ow * C, *p1 = p0 + C, *p2 = p0 + row;            \
                const TYPE *p3 = p2 + C;                                                    \
                for (int64_t c = 0; c < C; c++) {                                           \
                    float best = WIDEN(p0[c]);                                              \
                    TYPE kept = p0[c];                                                      \
                    uint8_t which = 0;                                                      \
                    float v = WIDEN(p1[c]);                                                 \
                    int t = wins(v, best);                                                  \
                    best = t ? v : best; kept = t ? p1[c] : kept; which = t ? 1 : which;    \
                    v = WIDEN(p2[c]);                                                       \
                    t = wins(v, best);                                                      \
                    best = t ? v : best; kept = t ? p2[c] : kept; which = t ? 2 : which;    \
                    v = WIDEN(p3[c]);                                                       \
                    t = wins(v, best);                                                      \
                    kept = t ? p3[c] : kept; which = t ? 3 : which;                         \
                    o[ow * C + c] = kept;                                                   \
                    a[ow * C + c] = which;                                                  \
                }                                                                           \
            }                                                                               \
        }                                                                                   \
    }

#define BACKWARD_ROWS(NAME, TYPE)                                                           \
    static inline __attribute__((always_inline)) void NAME(                                 \
        const TYPE *grad_out, const uint8_t *argmax, TYPE *grad_in, int64_t H, int64_t W,   \
        const int64_t C, int64_t start, int64_t stop)                                       \
    {                                                                                       \
        const int64_t OH = H / 2, OW = W / 2, row = W * C;                                  \
        for (int64_t r = start; r < stop; r++) {                                            \
            const int64_t n = r / OH, oh = r % OH;                                          \
            TYPE *top = grad_in + ((n * H + 2 * oh) * W) * C;                               \
            const TYPE *g = grad_out + r * OW * C;                                          \
            const uint8_t *a = argmax + r * OW * C;                                         \
            for (int64_t ow = 0; ow < OW; ow++) {                                           \
                TYPE *p0 = top + 2 * ow * C, *p1 = p0 + C, *p2 = p0 + row, *p3 = p2 + C;    \
                for (int64_t c = 0; c < C; c++) {                                           \
                    const TYPE value = g[ow * C + c];                                       \
                    const uint8_t which = a[ow * C + c];                                    \
                    p0[c] = which == 0 ? value : (TYPE)0;                                   \
                    p1[c] = which == 1 ? value : (TYPE)0;                                   \
                    p2[c] = which == 2 ? value : (TYPE)0;                                   \
                    p3[c] = which == 3 ? value : (TYPE)0;                                   \
                }                                                                           \
            }                                                                               \
        }                                                                                   \
    }

#define AS_FLOAT(v) (v)

FORWARD_ROWS(forward_rows_f32, float, AS_FLOAT)
FORWARD_ROWS(forward_rows_bf16, uint16_t, widen_bf16)
BACKWARD_ROWS(backward_rows_f32, float)
BACKWARD_ROWS(backward_rows_bf16, uint16_t)

#ifdef HAVE_AVX512
/* With AVX-512 a window's channels (up to 16) are one masked vector per cell: the same comparisons in
 * the same order as the scalar loops, on all channels at once. The scalar code above, unrolled over 9
 * channels, ran at a third of the speed it reaches for 16 (which the compiler vectorises itself).
 * bfloat16 is widened to float32 by its bits and narrowed back by them, so values pass unchanged. */
static inline __m512 load_f32(const float *p, __mmask16 m) { return _mm512_maskz_loadu_ps(m, p); }
static inline __m512 load_bf16(const uint16_t *p, __mmask16 m)
{
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p)), 16));
}
static inline void store_f32(float *p, __mmask16 m, __m512 v) { _mm512_mask_storeu_ps(p, m, v); }
static inline void store_bf16(uint16_t *p, __mmask16 m, __m512 v)
{
    _mm256_mask_storeu_epi16(p, m, _mm512_cvtepi32_epi16(_mm512_srli_epi32(_mm512_castps_si512(v), 16)));
}

/* Lanes where `v` takes the window from `best`: larger, or NaN (as `wins`). */
static inline __mmask16 wins_vector(__m512 v, __m512 best)
{
    return _mm512_cmp_ps_mask(v, best, _CMP_GT_OQ) | _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
}

#define FORWARD_ROWS_VECTOR(NAME, TYPE, LOAD, STORE)                                        \
    static void NAME(const TYPE *x, TYPE *out, uint8_t *argmax, int64_t H, int64_t W, int64_t C, \
                     int64_t start, int64_t stop)                                           \
    {                                                                                       \
        const int64_t OH = H / 2, OW = W / 2, row = W * C;                                  \
        const int64_t cell[4] = {0, C, row, row + C}; /* the window's cells, row-major */   \
        const __mmask16 m = (__mmask16)((1u << C) - 1);                                     \
        for (int64_t r = start; r < stop; r++) {                                            \
            const int64_t n = r / OH, oh = r % OH;                                          \
            const TYPE *top = x + ((n * H + 2 * oh) * W) * C;                               \
            TYPE *o = out + r * OW * C;                                                     \
            uint8_t *a = argmax + r * OW * C;                                               \
            for (int64_t ow = 0; ow < OW; ow++) {                                           \
                const TYPE *p0 = top + 2 * ow * C;                                          \
                __m512 best = LOAD(p0, m);                                                  \
                __m128i which = _mm_setzero_si128();                                        \
                for (int k = 1; k < 4; k++) {                                               \
                    const __m512 v = LOAD(p0 + cell[k], m);                                 \
                    const __mmask16 t = wins_vector(v, best);                               \
                    best = _mm512_mask_mov_ps(best, t, v);                                  \
                    which = _mm_mask_mov_epi8(which, t, _mm_set1_epi8((char)k));            \
                }                                                                           \
                STORE(o + ow * C, m, best);                                                 \
                _mm_mask_storeu_epi8(a + ow * C, m, which);                                 \
            }                                                                               \
        }                                                                                   \
    }

FORWARD_ROWS_VECTOR(forward_rows_vector_f32, float, load_f32, store_f32)
FORWARD_ROWS_VECTOR(forward_rows_vector_bf16, uint16_t, load_bf16, store_bf16)

/* Backward: the output gradient goes to the cell that won, zero to the other three, per lane.
 * VECTOR is the lanes' type, LOAD, KEEP (zero the lanes a mask leaves out) and STORE its masked moves. */
#define BACKWARD_ROWS_VECTOR(NAME, TYPE, VECTOR, LOAD, KEEP, STORE)                         \
    static void NAME(const TYPE *grad_out, const uint8_t *argmax, TYPE *grad_in, int64_t H, \
                     int64_t W, int64_t C, int64_t start, int64_t stop)                     \
    {                                                                                       \
        const int64_t OH = H / 2, OW = W / 2, row = W * C;                                  \
        const int64_t cell[4] = {0, C, row, row + C};                                       \
        const __mmask16 m = (__mmask16)((1u << C) - 1);                                     \
        for (int64_t r = start; r < stop; r++) {                                            \
            const int64_t n = r / OH, oh = r % OH;                                          \
            TYPE *top = grad_in + ((n * H + 2 * oh) * W) * C;                               \
            const TYPE *g = grad_out + r * OW * C;                                          \
            const uint8_t *a = argmax + r * OW * C;                                         \
            for (int64_t ow = 0; ow < OW; ow++) {                                           \
                TYPE *p0 = top + 2 * ow * C;                                                \
                const VECTOR value = LOAD(m, g + ow * C);                                   \
                const __m128i which = _mm_maskz_loadu_epi8(m, a + ow * C);                  \
                for (int k = 0; k < 4; k++)                                                 \
                    STORE(p0 + cell[k], m,                                                  \
                          KEEP(_mm_cmpeq_epi8_mask(which, _mm_set1_epi8((char)k)), value)); \
            }                                                                               \
        }                                                                                   \
    }

BACKWARD_ROWS_VECTOR(backward_rows_vector_f32, float, __m512, _mm512_maskz_loadu_ps, _mm512_maskz_mov_ps,
                     _mm512_mask_storeu_ps)
BACKWARD_ROWS_VECTOR(backward_rows_vector_bf16, uint16_t, __m256i, _mm256_maskz_loadu_epi16,
                     _mm256_maskz_mov_epi16, _mm256_mask_storeu_epi16)
#endif

/* The exported entry points: up to 16 channels as masked vectors where the CPU has AVX-512 (VECTOR);
 * else the lab's channel counts as constants, any other as a variable (SCALAR). */
#define BY_CONSTANTS(SCALAR, A, B, C_OUT)                     \
    do {                                                      \
        if (C == 9)                                           \
            SCALAR(A, B, C_OUT, H, W, 9, start, stop);        \
        else if (C == 16)                                     \
            SCALAR(A, B, C_OUT, H, W, 16, start, stop);       \
        else                                                  \
            SCALAR(A, B, C_OUT, H, W, C, start, stop);        \
    } while (0)
#ifdef HAVE_AVX512
#define BY_CHANNELS(SCALAR, VECTOR, A, B, C_OUT)              \
    do {                                                      \
        if (C <= 16)                                          \
            VECTOR(A, B, C_OUT, H, W, C, start, stop);        \
        else                                                  \
            BY_CONSTANTS(SCALAR, A, B, C_OUT);                \
    } while (0)
#else
#define BY_CHANNELS(SCALAR, VECTOR, A, B, C_OUT) BY_CONSTANTS(SCALAR, A, B, C_OUT)
#endif

/* ReLU after the pool, on the rows just pooled (still in cache), as torch's relu and its backward
 * decide: a negative maximum becomes +0 (-0 stays -0, NaN stays NaN), and the gradient passes only
 * where the result is above zero or NaN, so a window whose result is not gets winner 4: none. */
static void relu_rows_f32(float *out, uint8_t *argmax, int64_t count)
{
    for (int64_t i = 0; i < count; i++) {
        const float v = out[i];
        out[i] = v < 0 ? 0.0f : v;
        argmax[i] = v <= 0 ? 4 : argmax[i];
    }
}

static void relu_rows_bf16(uint16_t *out, uint8_t *argmax, int64_t count)
{
    for (int64_t i = 0; i < count; i++) {
        const float v = widen_bf16(out[i]);
        out[i] = v < 0 ? 0 : out[i];
        argmax[i] = v <= 0 ? 4 : argmax[i];
    }
}

/* relu: the pool's output through ReLU as well (argmax 4 where no cell gets the gradient). */
void maxpool2x2_forward_f32(const float *x, float *out, uint8_t *argmax, int64_t H, int64_t W, int64_t C,
                            int64_t relu, int64_t start, int64_t stop)
{
    const int64_t per_row = (W / 2) * C;
    BY_CHANNELS(forward_rows_f32, forward_rows_vector_f32, x, out, argmax);
    if (relu)
        relu_rows_f32(out + start * per_row, argmax + start * per_row, (stop - start) * per_row);
}

void maxpool2x2_forward_bf16(const uint16_t *x, uint16_t *out, uint8_t *argmax, int64_t H, int64_t W,
                             int64_t C, int64_t relu, int64_t start, int64_t stop)
{
    const int64_t per_row = (W / 2) * C;
    BY_CHANNELS(forward_rows_bf16, forward_rows_vector_bf16, x, out, argmax);
    if (relu)
        relu_rows_bf16(out + start * per_row, argmax + start * per_row, (stop - start) * per_row);
}

void maxpool2x2_backward_f32(const float *grad_out, const uint8_t *argmax, float *grad_in, int64_t H,
                             int64_t W, int64_t C, int64_t start, int64_t stop)
{
    BY_CHANNELS(backward_rows_f32, backward_rows_vector_f32, grad_out, argmax, grad_in);
}

void maxpool2x2_backward_bf16(const uint16_t *grad_out, const uint8_t *argmax, uint16_t *grad_in, int64_t H,
                              int64_t W, int64_t C, int64_t start, int64_t stop)
{
    BY_CHANNELS(backward_rows_bf16, backward_rows_vector_bf16, grad_out, argmax, grad_in);
}
