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
 * channels; [start, stop) of the N * H/2 rows. H and W are even.
 */
#include <stdint.h>
#include <string.h>

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

/* The exported entry points: the lab's channel counts as constants, any other as a variable. */
#define BY_CHANNELS(ROWS, A, B, C_OUT)                        \
    do {                                                      \
        if (C == 9)                                           \
            ROWS(A, B, C_OUT, H, W, 9, start, stop);          \
        else if (C == 16)                                     \
            ROWS(A, B, C_OUT, H, W, 16, start, stop);         \
        else                                                  \
            ROWS(A, B, C_OUT, H, W, C, start, stop);          \
    } while (0)

void maxpool2x2_forward_f32(const float *x, float *out, uint8_t *argmax, int64_t H, int64_t W, int64_t C,
                            int64_t start, int64_t stop)
{
    BY_CHANNELS(forward_rows_f32, x, out, argmax);
}

void maxpool2x2_forward_bf16(const uint16_t *x, uint16_t *out, uint8_t *argmax, int64_t H, int64_t W,
                             int64_t C, int64_t start, int64_t stop)
{
    BY_CHANNELS(forward_rows_bf16, x, out, argmax);
}

void maxpool2x2_backward_f32(const float *grad_out, const uint8_t *argmax, float *grad_in, int64_t H,
                             int64_t W, int64_t C, int64_t start, int64_t stop)
{
    BY_CHANNELS(backward_rows_f32, grad_out, argmax, grad_in);
}

void maxpool2x2_backward_bf16(const uint16_t *grad_out, const uint8_t *argmax, uint16_t *grad_in, int64_t H,
                              int64_t W, int64_t C, int64_t start, int64_t stop)
{
    BY_CHANNELS(backward_rows_bf16, grad_out, argmax, grad_in);
}
