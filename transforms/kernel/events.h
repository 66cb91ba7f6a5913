/*
 * The kernel's interface: its output layout and entry point (events.c), shared by the
 * sanitizer driver (fuzz_driver.c). transforms/kernel/__init__.py mirrors it with ctypes.
 */
#ifndef RF_EVENTS_H
#define RF_EVENTS_H

#include <stdint.h>

#define RF_FALLBACK (-1)

/* Output columns: strings as Arrow large_string (offsets + data), one validity byte per row. */
enum { COL_SYMBOL, COL_CODE, COL_LOADER, COL_PROCESS, COL_CONTAINER, COL_EVIDENCE, RF_STRCOLS };

typedef struct {
    int64_t *offsets;  /* rows + 1 */
    uint8_t *data;     /* data_cap bytes */
    uint8_t *valid;    /* rows */
    int64_t data_cap;
} rf_strcol;

typedef struct {
    rf_strcol str[RF_STRCOLS];
    int64_t *hit_count;     /* rows */
    int64_t *observed_at;   /* rows: microseconds since the epoch, UTC */
    uint8_t *observed_valid;
    int64_t row_cap;
    /* why the last call fell back: a small code and the 1-based line (for statistics only) */
    int32_t fallback_code;
    int64_t fallback_line;
} rf_out;

/* buf/len: the decompressed batch. Returns the row count, or RF_FALLBACK (out->fallback_code
 * and out->fallback_line say where and why). */
int64_t rf_validate_events(const uint8_t *buf, int64_t len, int64_t max_line_bytes, rf_out *out);

#endif
