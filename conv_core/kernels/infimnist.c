/* The "infimnist" deformation of conv_core/infinite.py, one digit at a time.
 *
 * The same arithmetic as the tensor version, scaled by 2^11: fields are
 * stored as whole 1/256 px (m = 256 F, |m| < 2048) and the Sobel kernel gives
 * 8 times the derivative, so 2048 y = 2048 x + m1 S0 + m2 S1 with S0, S1 the
 * Sobel values. Every term is an integer below 2^23, exact in float32 in any
 * order, so clamping and truncating toward zero (as infimnist does) give the
 * same byte as the tensor path. Then infimnist's translation k1 mod 9 moves
 * the finished 784 bytes in place, as infimnist's own loops do.
 *
 * Canvases are 32x32 bytes: the 30x30 canvas of the tensor path (the digit
 * plus a zero border) with one more zero ring. Field rows are 32x32 too, the
 * 30x30 field at the top left, zero elsewhere. Digit pixel (r, c) is canvas
 * pixel (r + 2, c + 2) and field pixel (r + 1, c + 1). The output is computed
 * 32 columns wide, the last 4 of them dropped, so that the inner loop is one
 * flat run over 28 x 32 pixels with no branches (it vectorises), and every
 * read stays in bounds.
 */
#include <stdint.h>
#include <string.h>

#define PAD 32         /* padded canvas and field side */
#define ROWS (PAD + 2) /* two more zero rows: the dropped columns read past the last row */
#define SIZE 28        /* output side */
#define AREA (SIZE * SIZE)

/* infimnist's translation `number` of a flat 28x28 image, in place. The moves
 * work on the flat array, so the horizontal ones carry a pixel across each
 * row end, exactly as infimnist's loops (rewritten here as memmove). */
static void translate(uint8_t *c, int64_t number)
{
    switch (number) {
    case 0: /* up one row: c[j] = c[j + 28], the bottom row 0 */
        memmove(c, c + SIZE, AREA - SIZE);
        memset(c + AREA - SIZE, 0, SIZE);
        break;
    case 1: /* down one row: c[j] = c[j - 28], the top row 0 */
        memmove(c + SIZE, c, AREA - SIZE);
        memset(c, 0, SIZE);
        break;
    case 2: /* left: c[j] = c[j + 1], 0 where j mod 28 == 0, c[783] = 0:
               column 27 takes the next row's first pixel */
        memmove(c, c + 1, AREA - 1);
        c[AREA - 1] = 0;
        for (int j = 0; j < AREA; j += SIZE)
            c[j] = 0;
        break;
    case 3: /* right: c[j] = c[j - 1], 0 where (j - 1) mod 28 == 0, c[0] = 0:
               column 0 takes the previous row's last pixel */
        memmove(c + 1, c, AREA - 1);
        c[0] = 0;
        for (int j = 1; j < AREA; j += SIZE)
            c[j] = 0;
        break;
    case 4: translate(c, 0); translate(c, 2); break;
    case 5: translate(c, 0); translate(c, 3); break;
    case 6: translate(c, 1); translate(c, 2); break;
    case 7: translate(c, 1); translate(c, 3); break;
    default: break; /* 8: no move */
    }
}

void infimnist_deform(const uint8_t *restrict canvases, const int16_t *restrict fields,
                      const int64_t *restrict sources, const int64_t *restrict rows1,
                      const int64_t *restrict rows2, const int64_t *restrict translations,
                      uint8_t *restrict out, int64_t start, int64_t stop)
{
    float x[ROWS * PAD];
    uint8_t wide[SIZE * PAD];
    memset(x, 0, sizeof x);

    for (int64_t i = start; i < stop; i++) {
        const uint8_t *digit = canvases + sources[i] * PAD * PAD;
        for (int k = 0; k < PAD * PAD; k++)
            x[k] = digit[k];

        const float *restrict v = x + 2 * PAD + 2;
        const int16_t *restrict f1 = fields + rows1[i] * PAD * PAD + PAD + 1;
        const int16_t *restrict f2 = fields + rows2[i] * PAD * PAD + PAD + 1;
        for (int t = 0; t < SIZE * PAD; t++) {
            const float s0 = (v[t - PAD + 1] - v[t - PAD - 1]) + 2.0f * (v[t + 1] - v[t - 1])
                           + (v[t + PAD + 1] - v[t + PAD - 1]);
            const float s1 = (v[t + PAD - 1] - v[t - PAD - 1]) + 2.0f * (v[t + PAD] - v[t - PAD])
                           + (v[t + PAD + 1] - v[t - PAD + 1]);
            float y = v[t] * 2048.0f + (float)f1[t] * s0 + (float)f2[t] * s1;
            y = y < 0.0f ? 0.0f : (y > 255.0f * 2048.0f ? 255.0f * 2048.0f : y);
            wide[t] = (uint8_t)(int)(y * (1.0f / 2048.0f)); /* exact scaling; the cast truncates */
        }
        uint8_t *image = out + i * AREA;
        for (int r = 0; r < SIZE; r++)
            memcpy(image + r * SIZE, wide + r * PAD, SIZE);
        translate(image, translations[i]);
    }
}
