/* The "infimnist" deformation of conv_core/infinite.py, one digit at a time.
 *
 * The same arithmetic as the tensor version, scaled by 2^11: fields are
 * stored as whole 1/256 px (m = 256 F, |m| < 2048) and the Sobel kernel gives
 * 8 times the derivative, so 2048 y = 2048 x + m1 S0 + m2 S1 with S0, S1 the
 * Sobel values. Every term is an integer below 2^23, exact in float32 in any
 * order, so clamping and rounding half to even give the same byte as the
 * tensor path. The translation is applied while writing: output pixel (r, c)
 * is canvas pixel (r + wy, c + wx), with wy = 1 - dy and wx = 1 - dx.
 *
 * Canvases are 32x32 bytes: the 30x30 canvas of the tensor path (the digit
 * plus a zero border) with one more zero ring. Field rows are 32x32 too, the
 * 30x30 field at the top left, zero elsewhere (and zero on the 30x30 border,
 * so a border pixel comes out 0). The output is computed 32 columns wide,
 * the last 4 of them dropped, so that the inner loop is one flat run over
 * 28 x 32 pixels with no branches (it vectorises), and every read stays in
 * bounds.
 */
#include <stdint.h>
#include <string.h>

#define PAD 32        /* padded canvas and field side */
#define ROWS (PAD + 2) /* two more zero rows: the dropped columns read past the last row */
#define SIZE 28       /* output side */

void infimnist_deform(const uint8_t *restrict canvases, const int16_t *restrict fields,
                      const int64_t *restrict sources, const int64_t *restrict rows1,
                      const int64_t *restrict rows2, const int64_t *restrict window_rows,
                      const int64_t *restrict window_cols, uint8_t *restrict out,
                      int64_t start, int64_t stop)
{
    const float round_magic = 12582912.0f; /* 1.5 * 2^23: v + it - it rounds v half to even */
    float x[ROWS * PAD];
    uint8_t wide[SIZE * PAD];
    memset(x, 0, sizeof x);

    for (int64_t i = start; i < stop; i++) {
        const uint8_t *digit = canvases + sources[i] * PAD * PAD;
        for (int k = 0; k < PAD * PAD; k++)
            x[k] = digit[k];

        /* output (r, c) is 30x30-canvas pixel (r + wy, c + wx): padded (r + wy + 1, c + wx + 1) */
        const int64_t wy = window_rows[i], wx = window_cols[i];
        const float *restrict v = x + (wy + 1) * PAD + wx + 1;
        const int16_t *restrict f1 = fields + rows1[i] * PAD * PAD + wy * PAD + wx;
        const int16_t *restrict f2 = fields + rows2[i] * PAD * PAD + wy * PAD + wx;
        for (int t = 0; t < SIZE * PAD; t++) {
            const float s0 = (v[t - PAD + 1] - v[t - PAD - 1]) + 2.0f * (v[t + 1] - v[t - 1])
                           + (v[t + PAD + 1] - v[t + PAD - 1]);
            const float s1 = (v[t + PAD - 1] - v[t - PAD - 1]) + 2.0f * (v[t + PAD] - v[t - PAD])
                           + (v[t + PAD + 1] - v[t - PAD + 1]);
            float y = v[t] * 2048.0f + (float)f1[t] * s0 + (float)f2[t] * s1;
            y = y < 0.0f ? 0.0f : (y > 255.0f * 2048.0f ? 255.0f * 2048.0f : y);
            y = (y * (1.0f / 2048.0f) + round_magic) - round_magic;
            wide[t] = (uint8_t)(int)y;
        }
        uint8_t *image = out + i * SIZE * SIZE;
        for (int r = 0; r < SIZE; r++)
            memcpy(image + r * SIZE, wide + r * PAD, SIZE);
    }
}
