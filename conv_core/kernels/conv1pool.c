/* A network's first layer in one pass: convolution of a one-channel image (K x K, stride 1, on an input
 * already zero-padded), bias, 2x2 max pooling and ReLU, forward and backward, in float32 arithmetic.
 *
 * torch's oneDNN convolution serves one input channel badly: the seed CNN's first convolution (1 -> 9
 * channels, 5x5) ran at a fifth of the rate of its second. Here a pooled output's channels (up to 16)
 * are one AVX-512 vector (one or two AVX2 vectors on CPUs without it, below): the four convolution
 * outputs of its window are computed in registers (each pixel of the window's (K+1) x (K+1) patch
 * broadcast once, against every tap it meets), pooled as
 * conv_core/kernels/maxpool2x2.c pools (the first cell wins a tie, a NaN wins over what came before),
 * then ReLU'd as torch's relu (a negative maximum becomes +0), and only the pooled output is written,
 * with which cell won (4: none, ReLU stopped it).
 *
 * Backward: only a window's winner has a gradient, so the weight gradient takes one window cell per
 * pooled output, a quarter of a convolution's work. There is no gradient for the input (the data).
 * Each part of the work [start, stop) of the pooled rows adds into weight and bias gradients of its own;
 * the caller sums the parts in a fixed order (the same thread count: the same bits).
 *
 * Layouts: input (N, HP, WP) float32; output (N, OH, OW, C) channels-last, float32 or bfloat16
 * (rounded to nearest even, as torch rounds); weights (C, K, K) float32. C <= 16.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#include <immintrin.h>
#define HAVE_CONV1POOL 1

/* float32 -> bfloat16 bits as torch converts: round to nearest even, every NaN to 0x7fc0. */
static inline __m256i narrow_bf16(__m512 v)
{
    const __m512i bits = _mm512_castps_si512(v);
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
    __m512i high = _mm512_srli_epi32(_mm512_add_epi32(bits, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), lsb)), 16);
    high = _mm512_mask_mov_epi32(high, _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), _mm512_set1_epi32(0x7fc0));
    return _mm512_cvtepi32_epi16(high);
}

static inline __mmask16 wins(__m512 v, __m512 best)
{
    return _mm512_cmp_ps_mask(v, best, _CMP_GT_OQ) | _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
}

static inline __m512 widen_bf16(__m256i bits)
{
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16));
}

/* K is a constant at each call, so the patch loops unroll and the taps stay in registers. */
static inline __attribute__((always_inline)) void forward_rows(
    const float *x, const float *w, const float *b, void *out, int out_bf16, uint8_t *argmax, int64_t HP,
    int64_t WP, int64_t C, const int K, int64_t start, int64_t stop)
{
    const int64_t OH = (HP - K + 1) / 2, OW = (WP - K + 1) / 2;
    const __mmask16 m = (__mmask16)((1u << C) - 1);
    __m512 taps[49];  /* K * K of them: a fixed size, so that the unrolled loops keep them in registers */
    for (int t = 0; t < K * K; t++) {
        float lane[16] = {0};
        for (int64_t c = 0; c < C; c++)
            lane[c] = w[c * K * K + t];
        taps[t] = _mm512_loadu_ps(lane);
    }
    const __m512 bias = _mm512_maskz_loadu_ps(m, b);
    for (int64_t r = start; r < stop; r++) {
        const int64_t n = r / OH, oy = r % OH;
        /* Two windows side by side: eight independent sums, enough to keep both FMA units busy
         * (four would wait on each other's latency). An odd last window repeats its left neighbour. */
        for (int64_t ox = 0; ox < OW; ox += 2) {
            const int64_t left = ox + 1 < OW ? ox : ox - 1;
            const float *patch = x + (n * HP + 2 * oy) * WP + 2 * left;
            __m512 cell[8] = {bias, bias, bias, bias, bias, bias, bias, bias};
#pragma GCC unroll 8
            for (int i = 0; i <= K; i++)
#pragma GCC unroll 10
                for (int j = 0; j <= K + 2; j++) {
                    const __m512 v = _mm512_set1_ps(patch[i * WP + j]);
#pragma GCC unroll 2
                    for (int win = 0; win < 2; win++)
#pragma GCC unroll 2
                        for (int dy = 0; dy < 2; dy++)
#pragma GCC unroll 2
                            for (int dx = 0; dx < 2; dx++) {
                                const int ky = i - dy, kx = j - 2 * win - dx;
                                if (ky >= 0 && ky < K && kx >= 0 && kx < K)
                                    cell[win * 4 + dy * 2 + dx] =
                                        _mm512_fmadd_ps(v, taps[ky * K + kx], cell[win * 4 + dy * 2 + dx]);
                            }
                }
#pragma GCC unroll 2
            for (int win = 0; win < 2; win++) {
                __m512 best = cell[win * 4];
                __m128i which = _mm_setzero_si128();
#pragma GCC unroll 3
                for (int k = 1; k < 4; k++) {
                    const __mmask16 t = wins(cell[win * 4 + k], best);
                    best = _mm512_mask_mov_ps(best, t, cell[win * 4 + k]);
                    which = _mm_mask_mov_epi8(which, t, _mm_set1_epi8((char)k));
                }
                const __mmask16 negative = _mm512_cmp_ps_mask(best, _mm512_setzero_ps(), _CMP_LT_OQ);
                const __mmask16 stopped = _mm512_cmp_ps_mask(best, _mm512_setzero_ps(), _CMP_LE_OQ);
                best = _mm512_mask_mov_ps(best, negative, _mm512_setzero_ps());
                which = _mm_mask_mov_epi8(which, stopped, _mm_set1_epi8(4));
                const int64_t at = (r * OW + left + win) * C;
                if (out_bf16)
                    _mm256_mask_storeu_epi16((uint16_t *)out + at, m, narrow_bf16(best));
                else
                    _mm512_mask_storeu_ps((float *)out + at, m, best);
                _mm_mask_storeu_epi8(argmax + at, m, which);
            }
        }
    }
}

static inline __attribute__((always_inline)) void backward_rows(
    const float *x, const void *grad_out, int grad_bf16, const uint8_t *argmax, float *dw, float *db,
    int64_t HP, int64_t WP, int64_t C, const int K, int64_t start, int64_t stop)
{
    const int64_t OH = (HP - K + 1) / 2, OW = (WP - K + 1) / 2;
    const __mmask16 m = (__mmask16)((1u << C) - 1);
    __m512 dtaps[49];
    for (int t = 0; t < K * K; t++)
        dtaps[t] = _mm512_setzero_ps();
    __m512 dbias = _mm512_setzero_ps();
    for (int64_t r = start; r < stop; r++) {
        const int64_t n = r / OH, oy = r % OH;
        for (int64_t ox = 0; ox < OW; ox++) {
            const int64_t at = (r * OW + ox) * C;
            const __m512 g = grad_bf16 ? widen_bf16(_mm256_maskz_loadu_epi16(m, (const uint16_t *)grad_out + at))
                                       : _mm512_maskz_loadu_ps(m, (const float *)grad_out + at);
            const __m128i which = _mm_maskz_loadu_epi8(m, argmax + at);
            __m512 cell[4];
            for (int k = 0; k < 4; k++)
                cell[k] = _mm512_maskz_mov_ps(_mm_cmpeq_epi8_mask(which, _mm_set1_epi8((char)k)), g);
            dbias = _mm512_add_ps(dbias, _mm512_add_ps(_mm512_add_ps(cell[0], cell[1]),
                                                       _mm512_add_ps(cell[2], cell[3])));
            const float *patch = x + (n * HP + 2 * oy) * WP + 2 * ox;
#pragma GCC unroll 8
            for (int i = 0; i <= K; i++)
#pragma GCC unroll 8
                for (int j = 0; j <= K; j++) {
                    const __m512 v = _mm512_set1_ps(patch[i * WP + j]);
#pragma GCC unroll 2
                    for (int dy = 0; dy < 2; dy++)
#pragma GCC unroll 2
                        for (int dx = 0; dx < 2; dx++) {
                            const int ky = i - dy, kx = j - dx;
                            if (ky >= 0 && ky < K && kx >= 0 && kx < K)
                                dtaps[ky * K + kx] = _mm512_fmadd_ps(v, cell[dy * 2 + dx], dtaps[ky * K + kx]);
                        }
                }
        }
    }
    for (int t = 0; t < K * K; t++) {
        float lane[16];
        _mm512_storeu_ps(lane, dtaps[t]);
        for (int64_t c = 0; c < C; c++)
            dw[c * K * K + t] += lane[c];
    }
    float lane[16];
    _mm512_storeu_ps(lane, dbias);
    for (int64_t c = 0; c < C; c++)
        db[c] += lane[c];
}

/* Each path names the arguments its rows take before K; here none beyond the data. */
#define BY_KERNEL(ROWS, ...) BY_SIZE(ROWS, __VA_ARGS__)

#elif defined(__AVX2__) && defined(__FMA__)
/* AVX2: a pooled output's channels are HALVES vectors of 8 (one for up to 8 channels, two for up to 16),
 * the same arithmetic in the same order as the AVX-512 path above. Sixteen registers: a pair of windows
 * (eight sums) side by side for one half, one window (four cells of two halves) for two; the taps come
 * from memory as FMA operands. Lanes past C compute on zero taps and are never stored. */
#include <immintrin.h>
#define HAVE_CONV1POOL 1

/* float32 -> bfloat16 bits as torch converts: round to nearest even, every NaN to 0x7fc0. */
static inline uint16_t narrow_bf16(float value)
{
    uint32_t bits;
    memcpy(&bits, &value, sizeof bits);
    if (value != value)
        return 0x7fc0;
    return (uint16_t)((bits + 0x7fff + ((bits >> 16) & 1)) >> 16);
}

static inline float widen_bf16(uint16_t bits)
{
    const uint32_t wide = (uint32_t)bits << 16;
    float value;
    memcpy(&value, &wide, sizeof value);
    return value;
}

/* Lanes below C - 8 * half: the channels a half holds. */
static inline __m256i lanes_of(int64_t C, int half)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(C - 8 * half)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

static inline __m256 wins(__m256 v, __m256 best)
{
    return _mm256_or_ps(_mm256_cmp_ps(v, best, _CMP_GT_OQ), _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
}

/* A window's four cells (row-major) pooled, then ReLU'd: the result, and in *which the winning cell as a
 * 32-bit integer per lane (4: none, the ReLU stopped it). */
static inline __m256 pool_relu(const __m256 cell[4], __m256 *which)
{
    __m256 best = cell[0], winner = _mm256_setzero_ps();
    for (int k = 1; k < 4; k++) {
        const __m256 t = wins(cell[k], best);
        best = _mm256_blendv_ps(best, cell[k], t);
        winner = _mm256_blendv_ps(winner, _mm256_castsi256_ps(_mm256_set1_epi32(k)), t);
    }
    const __m256 negative = _mm256_cmp_ps(best, _mm256_setzero_ps(), _CMP_LT_OQ);
    const __m256 stopped = _mm256_cmp_ps(best, _mm256_setzero_ps(), _CMP_LE_OQ);
    *which = _mm256_blendv_ps(winner, _mm256_castsi256_ps(_mm256_set1_epi32(4)), stopped);
    return _mm256_andnot_ps(negative, best);
}

static inline __attribute__((always_inline)) void forward_rows(
    const float *x, const float *w, const float *b, void *out, int out_bf16, uint8_t *argmax, int64_t HP,
    int64_t WP, int64_t C, const int HALVES, const int K, int64_t start, int64_t stop)
{
    const int WINDOWS = HALVES == 1 ? 2 : 1;
    const int64_t OH = (HP - K + 1) / 2, OW = (WP - K + 1) / 2;
    __m256i lanes[2];
    __m256 taps[49][2], bias[2];
    for (int h = 0; h < HALVES; h++) {
        lanes[h] = lanes_of(C, h);
        bias[h] = _mm256_maskload_ps(b + 8 * h, lanes[h]);
        for (int t = 0; t < K * K; t++) {
            float lane[8] = {0};
            for (int64_t c = 8 * h; c < C && c < 8 * h + 8; c++)
                lane[c - 8 * h] = w[c * K * K + t];
            taps[t][h] = _mm256_loadu_ps(lane);
        }
    }
    for (int64_t r = start; r < stop; r++) {
        const int64_t n = r / OH, oy = r % OH;
        for (int64_t ox = 0; ox < OW; ox += WINDOWS) {
            const int64_t left = ox + WINDOWS - 1 < OW ? ox : ox - 1;
            const float *patch = x + (n * HP + 2 * oy) * WP + 2 * left;
            __m256 cell[2][4][2];
            for (int win = 0; win < WINDOWS; win++)
                for (int k = 0; k < 4; k++)
                    for (int h = 0; h < HALVES; h++)
                        cell[win][k][h] = bias[h];
#pragma GCC unroll 8
            for (int i = 0; i <= K; i++)
#pragma GCC unroll 10
                for (int j = 0; j <= K + 2 * (WINDOWS - 1); j++) {
                    const __m256 v = _mm256_set1_ps(patch[i * WP + j]);
#pragma GCC unroll 2
                    for (int win = 0; win < WINDOWS; win++)
#pragma GCC unroll 2
                        for (int dy = 0; dy < 2; dy++)
#pragma GCC unroll 2
                            for (int dx = 0; dx < 2; dx++) {
                                const int ky = i - dy, kx = j - 2 * win - dx;
                                if (ky >= 0 && ky < K && kx >= 0 && kx < K)
#pragma GCC unroll 2
                                    for (int h = 0; h < HALVES; h++)
                                        cell[win][dy * 2 + dx][h] =
                                            _mm256_fmadd_ps(v, taps[ky * K + kx][h], cell[win][dy * 2 + dx][h]);
                            }
                }
            for (int win = 0; win < WINDOWS; win++) {
                const int64_t at = (r * OW + left + win) * C;
                for (int h = 0; h < HALVES; h++) {
                    const __m256 cells[4] = {cell[win][0][h], cell[win][1][h], cell[win][2][h], cell[win][3][h]};
                    __m256 which;
                    const __m256 best = pool_relu(cells, &which);
                    int32_t winners[8];
                    _mm256_storeu_si256((__m256i *)winners, _mm256_castps_si256(which));
                    const int64_t count = C - 8 * h < 8 ? C - 8 * h : 8;
                    for (int64_t c = 0; c < count; c++)
                        argmax[at + 8 * h + c] = (uint8_t)winners[c];
                    if (out_bf16) {
                        float lane[8];
                        _mm256_storeu_ps(lane, best);
                        for (int64_t c = 0; c < count; c++)
                            ((uint16_t *)out)[at + 8 * h + c] = narrow_bf16(lane[c]);
                    } else {
                        _mm256_maskstore_ps((float *)out + at + 8 * h, lanes[h], best);
                    }
                }
            }
        }
    }
}

/* Backward, a row of pooled outputs at a time, in chunks of up to 16 windows: first each window's
 * gradient split into its four cells (only the winner's is not zero), then the weight gradient one
 * kernel row ky at a time, its K taps (two halves each) held in registers over the whole chunk: with
 * 50 accumulators for 5x5 taps of 16 channels, per-window loops would load and store one per FMA. */
#define CHUNK 16
static inline __attribute__((always_inline)) void backward_rows(
    const float *x, const void *grad_out, int grad_bf16, const uint8_t *argmax, float *dw, float *db,
    int64_t HP, int64_t WP, int64_t C, const int HALVES, const int K, int64_t start, int64_t stop)
{
    const int64_t OH = (HP - K + 1) / 2, OW = (WP - K + 1) / 2;
    __m256i lanes[2];
    __m256 dtaps[49][2], dbias[2], cells[CHUNK][4][2];
    for (int h = 0; h < HALVES; h++) {
        lanes[h] = lanes_of(C, h);
        dbias[h] = _mm256_setzero_ps();
        for (int t = 0; t < K * K; t++)
            dtaps[t][h] = _mm256_setzero_ps();
    }
    for (int64_t r = start; r < stop; r++) {
        const int64_t n = r / OH, oy = r % OH;
        for (int64_t first = 0; first < OW; first += CHUNK) {
            const int64_t count = OW - first < CHUNK ? OW - first : CHUNK;
            for (int64_t o = 0; o < count; o++) {
                const int64_t at = (r * OW + first + o) * C;
                uint8_t winners[16] = {0};
                float grads[16] = {0};
                for (int64_t c = 0; c < C; c++)
                    winners[c] = argmax[at + c];
                if (grad_bf16)
                    for (int64_t c = 0; c < C; c++)
                        grads[c] = widen_bf16(((const uint16_t *)grad_out)[at + c]);
                for (int h = 0; h < HALVES; h++) {
                    const __m256 g = grad_bf16 ? _mm256_loadu_ps(grads + 8 * h)
                                               : _mm256_maskload_ps((const float *)grad_out + at + 8 * h, lanes[h]);
                    const __m256i which = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(winners + 8 * h)));
                    for (int k = 0; k < 4; k++)
                        cells[o][k][h] =
                            _mm256_and_ps(g, _mm256_castsi256_ps(_mm256_cmpeq_epi32(which, _mm256_set1_epi32(k))));
                    dbias[h] = _mm256_add_ps(dbias[h], _mm256_add_ps(_mm256_add_ps(cells[o][0][h], cells[o][1][h]),
                                                                     _mm256_add_ps(cells[o][2][h], cells[o][3][h])));
                }
            }
            const float *top = x + (n * HP + 2 * oy) * WP + 2 * first;
            for (int ky = 0; ky < K; ky++) {
                __m256 acc[7][2];
#pragma GCC unroll 7
                for (int kx = 0; kx < K; kx++)
#pragma GCC unroll 2
                    for (int h = 0; h < HALVES; h++)
                        acc[kx][h] = dtaps[ky * K + kx][h];
                for (int64_t o = 0; o < count; o++)
#pragma GCC unroll 2
                    for (int dy = 0; dy < 2; dy++) {
                        const float *pixels = top + (ky + dy) * WP + 2 * o;
#pragma GCC unroll 8
                        for (int j = 0; j <= K; j++) {
                            const __m256 v = _mm256_set1_ps(pixels[j]);
#pragma GCC unroll 2
                            for (int dx = 0; dx < 2; dx++) {
                                const int kx = j - dx;
                                if (kx >= 0 && kx < K)
#pragma GCC unroll 2
                                    for (int h = 0; h < HALVES; h++)
                                        acc[kx][h] = _mm256_fmadd_ps(v, cells[o][dy * 2 + dx][h], acc[kx][h]);
                            }
                        }
                    }
#pragma GCC unroll 7
                for (int kx = 0; kx < K; kx++)
#pragma GCC unroll 2
                    for (int h = 0; h < HALVES; h++)
                        dtaps[ky * K + kx][h] = acc[kx][h];
            }
        }
    }
    for (int h = 0; h < HALVES; h++) {
        float lane[8];
        for (int t = 0; t < K * K; t++) {
            _mm256_storeu_ps(lane, dtaps[t][h]);
            for (int64_t c = 8 * h; c < C && c < 8 * h + 8; c++)
                dw[c * K * K + t] += lane[c - 8 * h];
        }
        _mm256_storeu_ps(lane, dbias[h]);
        for (int64_t c = 8 * h; c < C && c < 8 * h + 8; c++)
            db[c] += lane[c - 8 * h];
    }
}

/* The channels past the first 8 when there are at most SCALAR_TAIL of them (the seed CNN's 9): one at a time
 * from each window's winning cell alone (the cell's K x K patch times its gradient), instead of a second
 * 8-lane vector through all four cells with one or two of its lanes live. */
#define SCALAR_TAIL 2
static inline __attribute__((always_inline)) void tail_backward_rows(
    const float *x, const void *grad_out, int grad_bf16, const uint8_t *argmax, float *dw, float *db,
    int64_t HP, int64_t WP, int64_t C, const int K, int64_t start, int64_t stop)
{
    const int64_t OH = (HP - K + 1) / 2, OW = (WP - K + 1) / 2;
    for (int64_t c = 8; c < C; c++) {
        float taps[49] = {0}, bias = 0;
        for (int64_t r = start; r < stop; r++) {
            const int64_t n = r / OH, oy = r % OH;
            for (int64_t ox = 0; ox < OW; ox++) {
                const int64_t at = (r * OW + ox) * C + c;
                const int which = argmax[at];
                if (which == 4)
                    continue;  /* ReLU stopped it: no cell gets a gradient */
                const float g = grad_bf16 ? widen_bf16(((const uint16_t *)grad_out)[at]) : ((const float *)grad_out)[at];
                const float *patch = x + (n * HP + 2 * oy + which / 2) * WP + 2 * ox + which % 2;
                for (int ky = 0; ky < K; ky++)
                    for (int kx = 0; kx < K; kx++)
                        taps[ky * K + kx] += g * patch[ky * WP + kx];
                bias += g;
            }
        }
        for (int t = 0; t < K * K; t++)
            dw[c * K * K + t] += taps[t];
        db[c] += bias;
    }
}

/* The same channels, forward: eight pooled windows of a row at a time, one per lane. The image's padded
 * rows are split once into even and odd columns, so that a tap's eight pixels (two columns apart, one per
 * window) are one contiguous load; each window's four convolution outputs are summed in four vectors, then
 * pooled and ReLU'd as forward_rows does. `plane`: 2 * HP * SPAN floats of scratch. */
static inline __attribute__((always_inline)) void tail_forward_rows(
    const float *x, const float *w, const float *b, void *out, int out_bf16, uint8_t *argmax, int64_t HP,
    int64_t WP, int64_t C, float *plane, const int K, int64_t start, int64_t stop)
{
    const int64_t OH = (HP - K + 1) / 2, OW = (WP - K + 1) / 2, SPAN = (WP + 1) / 2 + 16;
    float *evens = plane, *odds = plane + HP * SPAN;
    int64_t split_image = -1;
    for (int64_t r = start; r < stop; r++) {
        const int64_t n = r / OH, oy = r % OH;
        if (n != split_image) {  /* zeros past the row's end: lanes beyond OW read them, and are not stored */
            for (int64_t i = 0; i < HP; i++) {
                const float *row = x + (n * HP + i) * WP;
                for (int64_t j = 0; j < SPAN; j++) {
                    evens[i * SPAN + j] = 2 * j < WP ? row[2 * j] : 0.0f;
                    odds[i * SPAN + j] = 2 * j + 1 < WP ? row[2 * j + 1] : 0.0f;
                }
            }
            split_image = n;
        }
        for (int64_t c = 8; c < C; c++) {
            const float *taps = w + c * K * K;
            for (int64_t first = 0; first < OW; first += 8) {
                __m256 cell[4];
                for (int k = 0; k < 4; k++)
                    cell[k] = _mm256_set1_ps(b[c]);
                for (int dy = 0; dy < 2; dy++)
                    for (int ky = 0; ky < K; ky++) {
                        const int64_t i = 2 * oy + dy + ky;
#pragma GCC unroll 8
                        for (int s = 0; s <= K; s++) {  /* s = dx + kx: column 2 * window + s */
                            const __m256 v = _mm256_loadu_ps((s & 1 ? odds : evens) + i * SPAN + first + s / 2);
#pragma GCC unroll 2
                            for (int dx = 0; dx < 2; dx++) {
                                const int kx = s - dx;
                                if (kx >= 0 && kx < K)
                                    cell[dy * 2 + dx] =
                                        _mm256_fmadd_ps(v, _mm256_set1_ps(taps[ky * K + kx]), cell[dy * 2 + dx]);
                            }
                        }
                    }
                __m256 which;
                const __m256 best = pool_relu(cell, &which);
                float values[8];
                int32_t winners[8];
                _mm256_storeu_ps(values, best);
                _mm256_storeu_si256((__m256i *)winners, _mm256_castps_si256(which));
                const int64_t count = OW - first < 8 ? OW - first : 8;
                for (int64_t lane = 0; lane < count; lane++) {
                    const int64_t at = (r * OW + first + lane) * C + c;
                    argmax[at] = (uint8_t)winners[lane];
                    if (out_bf16)
                        ((uint16_t *)out)[at] = narrow_bf16(values[lane]);
                    else
                        ((float *)out)[at] = values[lane];
                }
            }
        }
    }
}

/* Here HALVES, a constant too. */
#define BY_KERNEL(ROWS, ...)                              \
    do {                                                  \
        if (C <= 8)                                       \
            BY_SIZE(ROWS, __VA_ARGS__, 1);                \
        else                                              \
            BY_SIZE(ROWS, __VA_ARGS__, 2);                \
    } while (0)
#endif

/* The exported entry points, over either path's rows with the kernel size K a constant. */
#ifdef HAVE_CONV1POOL
#define BY_SIZE(ROWS, ...)                       \
    do {                                         \
        if (K == 5)                              \
            ROWS(__VA_ARGS__, 5, start, stop);   \
        else if (K == 3)                         \
            ROWS(__VA_ARGS__, 3, start, stop);   \
        else if (K == 7)                         \
            ROWS(__VA_ARGS__, 7, start, stop);   \
    } while (0)

int conv1pool_available(void) { return 1; }

/* K: 3, 5 or 7; C <= 16 (the caller checks). */
void conv1pool_forward(const float *x, const float *w, const float *b, void *out, int64_t out_bf16,
                       uint8_t *argmax, int64_t HP, int64_t WP, int64_t C, int64_t K, int64_t start, int64_t stop)
{
#ifdef SCALAR_TAIL
    if (C > 8 && C <= 8 + SCALAR_TAIL) {
        float *plane = malloc(sizeof(float) * 2 * HP * ((WP + 1) / 2 + 16));
        if (plane != NULL) {
            BY_SIZE(forward_rows, x, w, b, out, (int)out_bf16, argmax, HP, WP, C, 1);  /* channels 0-7 */
            BY_SIZE(tail_forward_rows, x, w, b, out, (int)out_bf16, argmax, HP, WP, C, plane);
            free(plane);
            return;
        }
    }
#endif
    BY_KERNEL(forward_rows, x, w, b, out, (int)out_bf16, argmax, HP, WP, C);
}

void conv1pool_backward(const float *x, const void *grad_out, int64_t grad_bf16, const uint8_t *argmax, float *dw,
                        float *db, int64_t HP, int64_t WP, int64_t C, int64_t K, int64_t start, int64_t stop)
{
#ifdef SCALAR_TAIL
    if (C > 8 && C <= 8 + SCALAR_TAIL) {
        BY_SIZE(backward_rows, x, grad_out, (int)grad_bf16, argmax, dw, db, HP, WP, C, 1);  /* channels 0-7 */
        BY_SIZE(tail_backward_rows, x, grad_out, (int)grad_bf16, argmax, dw, db, HP, WP, C);
        return;
    }
#endif
    BY_KERNEL(backward_rows, x, grad_out, (int)grad_bf16, argmax, dw, db, HP, WP, C);
}

#else
/* Without AVX-512 or AVX2 torch's own convolution and the pooling kernel do this layer (see first_layer.py). */
int conv1pool_available(void) { return 0; }
void conv1pool_forward(void) {}
void conv1pool_backward(void) {}
#endif
