/*
 * LtHash16 of many rows in one call: the loop of transforms/lthash.py (expand each row with
 * BLAKE3, add its lanes) without a Python step per row. BLAKE3 is the reference C library
 * (blake3/, version 1.8.6, CC0 or Apache-2.0), with its own runtime dispatch to SSE2, SSE4.1
 * or AVX-512 (whose 16-block output serves the 2 KiB expansion).
 * tests/transforms/test_lthash.py compares this with the Python path on generated rows, and
 * the sanitizer driver runs it over the hostile corpus.
 *
 * Reads are bounds-checked against data_len before any hashing; the only write is `state`.
 * No allocation, no global state of its own: callers on several threads share nothing.
 */
#include <stdint.h>
#include <string.h>

#include "blake3/blake3.h"
#include "lthash.h"

#define RF_EXPANDED (2 * RF_LTHASH_LANES)

static int offsets_valid(const int64_t *offsets, int64_t rows, int64_t data_len) {
    if (rows < 0 || offsets[0] < 0) return 0;
    for (int64_t i = 0; i < rows; i++) {
        if (offsets[i + 1] < offsets[i] || offsets[i + 1] > data_len) return 0;
    }
    return 1;
}

int64_t rf_lthash16_add(const char *context, const uint8_t *data, int64_t data_len,
                        const int64_t *offsets, int64_t rows, uint16_t state[RF_LTHASH_LANES]) {
    if (data_len < 0 || !offsets_valid(offsets, rows, data_len)) return -1;
    blake3_hasher keyed;
    blake3_hasher_init_derive_key(&keyed, context);
    uint8_t expanded[RF_EXPANDED];
    for (int64_t i = 0; i < rows; i++) {
        blake3_hasher hasher = keyed;
        blake3_hasher_update(&hasher, data + offsets[i], (size_t)(offsets[i + 1] - offsets[i]));
        blake3_hasher_finalize(&hasher, expanded, RF_EXPANDED);
        for (int lane = 0; lane < RF_LTHASH_LANES; lane++) {
            /* little-endian lanes whatever the host's byte order; unsigned, so it wraps */
            uint16_t value = (uint16_t)(expanded[2 * lane] | (expanded[2 * lane + 1] << 8));
            state[lane] = (uint16_t)(state[lane] + value);
        }
    }
    return 0;
}
