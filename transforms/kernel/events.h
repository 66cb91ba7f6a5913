/*
 * The kernel's interface: its output layouts and entry points (events.c, dedupe.c), shared by
 * the sanitizer driver (fuzz_driver.c). transforms/kernel/__init__.py mirrors it with ctypes.
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

/* A string in the batch: `present` is 0 for a missing field (then s may be NULL, n is 0). */
typedef struct {
    const uint8_t *s;
    int64_t n;
    int present;
} rf_span;

/* The deduped rows: one per key, in key order (dedupe.c). */
#define RF_DEDUPE_DECLINED (-2)
#define RF_DEDUPE_OVERFLOW (-3)

/* A list<string> column: each row's entries are values list_offsets[r] .. list_offsets[r+1]. */
typedef struct {
    int64_t *list_offsets; /* rows + 1 */
    int64_t *offsets;      /* entry_cap + 1 */
    uint8_t *data;         /* data_cap bytes */
    int64_t entry_cap;
    int64_t data_cap;
} rf_listcol;

typedef struct {
    rf_strcol key[3];          /* symbol, code, loader */
    int64_t *hit_count;        /* row_cap */
    int64_t *event_count;
    int64_t *first_observed;   /* microseconds since the epoch, UTC */
    int64_t *last_observed;
    uint8_t *observed_valid;   /* both observations or neither */
    int64_t row_cap;
    rf_listcol list[3];        /* process names, container ids, evidence URIs */
} rf_groups;

/* What a closed grouper holds: the output's exact sizes. */
typedef struct {
    int64_t lines;             /* the batch's lines (all valid) */
    int64_t groups;
    int64_t key_bytes[3];
    int64_t entries[3];        /* list values */
    int64_t list_bytes[3];
    int32_t fallback_code;     /* as in rf_out, when the kernel declined the batch */
    int64_t fallback_line;
} rf_sizes;

typedef struct rf_grouper rf_grouper;

/* A grouper, reused batch after batch (one thread at a time). NULL: out of memory. */
rf_grouper *rf_grouper_new(void);
/* Starts a batch of at most `lines` lines (the probe budget). */
void rf_grouper_reset(rf_grouper *g, int64_t lines, uint64_t seed);
/* Adds one valid line; 0 once the grouper has declined or overflowed (it stays so). */
int rf_grouper_add(rf_grouper *g, const rf_span key[3], int64_t hits, int observed,
                   int64_t micros, const rf_span values[3]);
/* Sorts the groups and their lists and fills `sizes`; returns the group count, or
 * RF_DEDUPE_DECLINED / RF_DEDUPE_OVERFLOW. */
int64_t rf_grouper_close(rf_grouper *g, rf_sizes *sizes);
/* Writes a closed grouper's rows (the batch must still be in memory); the group count, or
 * RF_DEDUPE_DECLINED when an output is too small. */
int64_t rf_grouper_write(const rf_grouper *g, rf_groups *out);
void rf_grouper_free(rf_grouper *g);

/* Validates the batch as rf_validate_events does and groups its lines on the way, then closes
 * the grouper. Returns the group count; RF_FALLBACK when the kernel declines the batch
 * (sizes->fallback_code and fallback_line say why); RF_DEDUPE_DECLINED or RF_DEDUPE_OVERFLOW
 * when every line is valid (sizes->lines of them) but the reference must dedupe. */
int64_t rf_validate_grouped(rf_grouper *g, const uint8_t *buf, int64_t len,
                            int64_t max_line_bytes, uint64_t seed, rf_sizes *sizes);

#endif
