/*
 * LtHash16 of many rows at once (lthash.c), shared by the sanitizer driver (fuzz_driver.c).
 * transforms/lthash.py says what the digest is and mirrors this interface with ctypes.
 */
#ifndef RF_LTHASH_H
#define RF_LTHASH_H

#include <stdint.h>

#define RF_LTHASH_LANES 1024

/* Add the lanes of `rows` rows to `state` (lane-wise, modulo 2^16). Row i is the bytes
 * data[offsets[i] .. offsets[i + 1]) (Arrow string offsets), expanded by BLAKE3 in
 * key-derivation mode with `context` to 2,048 bytes read as little-endian 16-bit lanes.
 * Returns 0, or -1 (state untouched) if an offset is negative, decreasing or past data_len. */
int64_t rf_lthash16_add(const char *context, const uint8_t *data, int64_t data_len,
                        const int64_t *offsets, int64_t rows, uint16_t state[RF_LTHASH_LANES]);

#endif
