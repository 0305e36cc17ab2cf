/* The input gradient of a convolution with 16 output channels (K x K, stride 1, zero padding K / 2 on
 * every side, so the output is the input's size), channels-last, float32, with AVX2 and FMA.
 *
 * grad_in[n, y, x, ci] = sum over ky, kx, co of grad_out[n, y + P - ky, x + P - kx, co] * w[co, ci, ky, kx].
 *
 * oneDNN computes this with its vectors along the input channels: for the seed CNN's second convolution
 * (9 -> 16 channels, 5x5) that fills 9 of 16 lanes, and on an AVX2-only CPU it ran at half the rate of
 * the same layer's forward. Here the vectors run along the 16 output channels instead, which is the sum's
 * own axis: a grad_out pixel is two 8-lane vectors, loaded once per tap and multiplied against every
 * input channel's taps of the weights; each input channel sums into one vector, and its 8 lanes are added
 * up once per pixel, after all K * K taps. Up to 12 input channels are summed at once (their sums stay in
 * registers); more are taken in two groups.
 *
 * Layouts: grad_out (N, H, W, 16); weights as (CI, K, K, 16), the output channel last; grad_in (N, H, W, CI).
 * [start, stop): the rows (n, y) of the batch's N * H this call computes; rows are written by one call
 * each, nothing is summed across calls, so the result does not depend on how the rows are split.
 *
 * On CPUs with AVX-512 this file exports convgrad_available() == 0 and oneDNN keeps the layer: its
 * 16-lane vectors were never measured against this loop.
 */
#include <stdint.h>

#if defined(__AVX2__) && defined(__FMA__) && !defined(__AVX512F__)
#include <immintrin.h>
#define HAVE_CONVGRAD 1
#define MAX_GROUP 12
#define MAX_WEIGHT_GROUP 6

static inline float lanes_sum(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

/* Input channels [c0, c0 + G) of rows [start, stop). K and G are constants at each call, so the tap and
 * channel loops unroll and the G sums stay in registers. */
static inline __attribute__((always_inline)) void input_grad_rows(
    const float *grad_out, const float *w, float *grad_in, int64_t H, int64_t W, int64_t CI, const int K,
    const int G, int64_t c0, int64_t start, int64_t stop)
{
    const int64_t P = K / 2;
    for (int64_t row = start; row < stop; row++) {
        const int64_t n = row / H, y = row % H;
        for (int64_t x = 0; x < W; x++) {
            __m256 sums[MAX_GROUP];
            for (int g = 0; g < G; g++)
                sums[g] = _mm256_setzero_ps();
            for (int ky = 0; ky < K; ky++) {
                const int64_t oy = y + P - ky;
                if (oy < 0 || oy >= H)
                    continue;
                for (int kx = 0; kx < K; kx++) {
                    const int64_t ox = x + P - kx;
                    if (ox < 0 || ox >= W)
                        continue;
                    const float *g16 = grad_out + ((n * H + oy) * W + ox) * 16;
                    const __m256 low = _mm256_loadu_ps(g16), high = _mm256_loadu_ps(g16 + 8);
                    const float *taps = w + ((c0 * K + ky) * K + kx) * 16;
                    for (int g = 0; g < G; g++) {
                        const float *tap = taps + g * K * K * 16;
                        sums[g] = _mm256_fmadd_ps(low, _mm256_loadu_ps(tap), sums[g]);
                        sums[g] = _mm256_fmadd_ps(high, _mm256_loadu_ps(tap + 8), sums[g]);
                    }
                }
            }
            float *out = grad_in + ((n * H + y) * W + x) * CI + c0;
            for (int g = 0; g < G; g++)
                out[g] = lanes_sum(sums[g]);
        }
    }
}

#define GROUP_CASE(G) \
    case G: input_grad_rows(grad_out, w, grad_in, H, W, CI, K, G, c0, start, stop); break;

static inline __attribute__((always_inline)) void input_grad_group(
    const float *grad_out, const float *w, float *grad_in, int64_t H, int64_t W, int64_t CI, const int K,
    int64_t G, int64_t c0, int64_t start, int64_t stop)
{
    switch (G) {
        GROUP_CASE(1) GROUP_CASE(2) GROUP_CASE(3) GROUP_CASE(4) GROUP_CASE(5) GROUP_CASE(6)
        GROUP_CASE(7) GROUP_CASE(8) GROUP_CASE(9) GROUP_CASE(10) GROUP_CASE(11) GROUP_CASE(12)
    }
}

static inline __attribute__((always_inline)) void input_grad(
    const float *grad_out, const float *w, float *grad_in, int64_t H, int64_t W, int64_t CI, const int K,
    int64_t start, int64_t stop)
{
    if (CI <= MAX_GROUP) {
        input_grad_group(grad_out, w, grad_in, H, W, CI, K, CI, 0, start, stop);
    } else {
        const int64_t first = (CI + 1) / 2;
        input_grad_group(grad_out, w, grad_in, H, W, CI, K, first, 0, start, stop);
        input_grad_group(grad_out, w, grad_in, H, W, CI, K, CI - first, first, start, stop);
    }
}

/* The weight gradient, input channels [c0, c0 + G) of image n, added into dw (CI, K, K, 16):
 * dw[ci, ky, kx, co] += sum over y, x of grad_out[n, y, x, co] * x[n, y + ky - P, x + kx - P, ci].
 * One tap at a time over the image's pixels where it meets the input (no test per pixel), the tap's G x 16
 * sums in 2G registers: a grad_out pixel is loaded once and multiplied against G broadcast input values. */
static inline __attribute__((always_inline)) void weight_grad_image(
    const float *x, const float *grad_out, float *dw, int64_t H, int64_t W, int64_t CI, const int K, const int G,
    int64_t c0, int64_t n)
{
    const int64_t P = K / 2;
    for (int ky = 0; ky < K; ky++) {
        const int64_t y0 = P - ky > 0 ? P - ky : 0, y1 = H + P - ky < H ? H + P - ky : H;
        for (int kx = 0; kx < K; kx++) {
            const int64_t x0 = P - kx > 0 ? P - kx : 0, x1 = W + P - kx < W ? W + P - kx : W;
            float *tap = dw + ((c0 * K + ky) * K + kx) * 16;
            __m256 low[MAX_WEIGHT_GROUP], high[MAX_WEIGHT_GROUP];
            for (int g = 0; g < G; g++) {
                low[g] = _mm256_loadu_ps(tap + g * K * K * 16);
                high[g] = _mm256_loadu_ps(tap + g * K * K * 16 + 8);
            }
            for (int64_t y = y0; y < y1; y++) {
                const float *g16 = grad_out + (n * H + y) * W * 16;
                const float *in = x + ((n * H + y + ky - P) * W + kx - P) * CI + c0;
                for (int64_t ox = x0; ox < x1; ox++) {
                    const __m256 gl = _mm256_loadu_ps(g16 + ox * 16), gh = _mm256_loadu_ps(g16 + ox * 16 + 8);
                    for (int g = 0; g < G; g++) {
                        const __m256 v = _mm256_broadcast_ss(in + ox * CI + g);
                        low[g] = _mm256_fmadd_ps(gl, v, low[g]);
                        high[g] = _mm256_fmadd_ps(gh, v, high[g]);
                    }
                }
            }
            for (int g = 0; g < G; g++) {
                _mm256_storeu_ps(tap + g * K * K * 16, low[g]);
                _mm256_storeu_ps(tap + g * K * K * 16 + 8, high[g]);
            }
        }
    }
}

#define WEIGHT_CASE(G) \
    case G: weight_grad_image(x, grad_out, dw, H, W, CI, K, G, c0, n); break;

static inline __attribute__((always_inline)) void weight_grad(
    const float *x, const float *grad_out, float *dw, float *db, int64_t H, int64_t W, int64_t CI, const int K,
    int64_t start, int64_t stop)
{
    const int64_t groups = (CI + MAX_WEIGHT_GROUP - 1) / MAX_WEIGHT_GROUP;
    for (int64_t n = start; n < stop; n++) {
        for (int64_t group = 0, c0 = 0; group < groups; group++) {
            const int64_t G = (CI - c0) / (groups - group);  /* balanced: 9 channels as 4 + 5 */
            switch (G) {
                WEIGHT_CASE(1) WEIGHT_CASE(2) WEIGHT_CASE(3) WEIGHT_CASE(4) WEIGHT_CASE(5) WEIGHT_CASE(6)
            }
            c0 += G;
        }
        __m256 low = _mm256_loadu_ps(db), high = _mm256_loadu_ps(db + 8);
        for (int64_t p = n * H * W; p < (n + 1) * H * W; p++) {
            low = _mm256_add_ps(low, _mm256_loadu_ps(grad_out + p * 16));
            high = _mm256_add_ps(high, _mm256_loadu_ps(grad_out + p * 16 + 8));
        }
        _mm256_storeu_ps(db, low);
        _mm256_storeu_ps(db + 8, high);
    }
}

int convgrad_available(void) { return 1; }

/* K: 3, 5 or 7; 1 <= CI <= 2 * MAX_GROUP (the caller checks). */
void convgrad_input(const float *grad_out, const float *w, float *grad_in, int64_t H, int64_t W, int64_t CI,
                    int64_t K, int64_t start, int64_t stop)
{
    if (K == 5)
        input_grad(grad_out, w, grad_in, H, W, CI, 5, start, stop);
    else if (K == 3)
        input_grad(grad_out, w, grad_in, H, W, CI, 3, start, stop);
    else if (K == 7)
        input_grad(grad_out, w, grad_in, H, W, CI, 7, start, stop);
}

/* The weight and bias gradients of images [start, stop), added into dw (CI, K, K, 16) and db (16): the
 * caller gives each part of a batch buffers of its own and sums them in a fixed order. */
void convgrad_weight(const float *x, const float *grad_out, float *dw, float *db, int64_t H, int64_t W, int64_t CI,
                     int64_t K, int64_t start, int64_t stop)
{
    if (K == 5)
        weight_grad(x, grad_out, dw, db, H, W, CI, 5, start, stop);
    else if (K == 3)
        weight_grad(x, grad_out, dw, db, H, W, CI, 3, start, stop);
    else if (K == 7)
        weight_grad(x, grad_out, dw, db, H, W, CI, 7, start, stop);
}

#else
/* Elsewhere torch's own convolution backward computes the input gradient (see conv_core/input_grad.py). */
int convgrad_available(void) { return 0; }
void convgrad_input(void) {}
void convgrad_weight(void) {}
#endif
