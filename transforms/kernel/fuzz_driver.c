/*
 * Sanitizer driver: run the kernel over each file named on the command line, with output
 * buffers sized exactly as the Python caller sizes them (rows = newlines + 1, string data =
 * batch length), each allocated on its own so ASan sees any write past its end. Prints one
 * line per file: the row count or the fallback code and line, the one-pass dedupe's result
 * (the key count, or its decline), then the first lanes of the LtHash16 state of the file's pieces as rows (each line with its newline, and what follows
 * the last newline), from an offsets array of exact size. Exit 0 unless a sanitizer fires.
 * `--overflow-self-test` provokes a heap overflow, to show the build is instrumented.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "events.h"
#include "lthash.h"

#define LTHASH_CONTEXT "runtime-facts 2026-12-01 row lthash16 v1"

/* The one-pass validate and dedupe, into output blocks of the exact sizes it reports (each
 * allocated on its own): prints its result. One grouper serves every file, as one serves a
 * thread's batches. */
static void print_grouped(rf_grouper *grouper, const uint8_t *buf, int64_t len, int64_t max_line) {
    rf_sizes sizes;
    int64_t n = rf_validate_grouped(grouper, buf, len, max_line, UINT64_C(0x5eed), &sizes);
    printf(" groups %lld", (long long)n);
    if (n <= 0) return;
    rf_groups g;
    memset(&g, 0, sizeof g);
    size_t rows = (size_t)n;
    for (int k = 0; k < 3; k++) {
        g.key[k].offsets = malloc((rows + 1) * sizeof(int64_t));
        g.key[k].data = malloc(sizes.key_bytes[k] > 0 ? (size_t)sizes.key_bytes[k] : 1);
        g.key[k].valid = malloc(rows);
        g.key[k].data_cap = sizes.key_bytes[k];
        g.list[k].list_offsets = malloc((rows + 1) * sizeof(int64_t));
        g.list[k].offsets = malloc((size_t)(sizes.entries[k] + 1) * sizeof(int64_t));
        g.list[k].data = malloc(sizes.list_bytes[k] > 0 ? (size_t)sizes.list_bytes[k] : 1);
        g.list[k].entry_cap = sizes.entries[k];
        g.list[k].data_cap = sizes.list_bytes[k];
    }
    g.hit_count = malloc(rows * sizeof(int64_t));
    g.event_count = malloc(rows * sizeof(int64_t));
    g.first_observed = malloc(rows * sizeof(int64_t));
    g.last_observed = malloc(rows * sizeof(int64_t));
    g.observed_valid = malloc(rows);
    g.row_cap = n;
    int64_t written = rf_grouper_write(grouper, &g);
    int64_t checksum = 0; /* read what was written: ASan checks those reads too */
    for (int64_t p = 0; p < written; p++)
        checksum += g.hit_count[p] % 7 + g.list[2].list_offsets[p + 1] + g.key[1].valid[p];
    printf(" written %lld sum %lld", (long long)written, (long long)checksum);
    for (int k = 0; k < 3; k++) {
        free(g.key[k].offsets);
        free(g.key[k].data);
        free(g.key[k].valid);
        free(g.list[k].list_offsets);
        free(g.list[k].offsets);
        free(g.list[k].data);
    }
    free(g.hit_count);
    free(g.event_count);
    free(g.first_observed);
    free(g.last_observed);
    free(g.observed_valid);
}

/* The file's pieces as LtHash rows: prints the first four lanes of the state. */
static int print_lthash(const uint8_t *buf, int64_t len, int64_t rows) {
    int64_t *offsets = malloc((size_t)(rows + 1) * sizeof(int64_t));
    if (!offsets) return 2;
    int64_t row = 0;
    offsets[0] = 0;
    for (int64_t j = 0; j < len; j++)
        if (buf[j] == '\n') offsets[++row] = j + 1;
    offsets[rows] = len;
    uint16_t state[RF_LTHASH_LANES];
    memset(state, 0, sizeof state);
    int64_t status = rf_lthash16_add(LTHASH_CONTEXT, buf, len, offsets, rows, state);
    free(offsets);
    if (status != 0) return 2;
    printf(" lthash %04x%04x%04x%04x\n", state[0], state[1], state[2], state[3]);
    return 0;
}

static uint8_t *read_file(const char *path, int64_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    /* exactly `size` bytes (malloc(0) may be NULL: allocate 1 and report 0) */
    uint8_t *buf = malloc(size > 0 ? (size_t)size : 1);
    if (buf && size > 0 && fread(buf, 1, (size_t)size, f) != (size_t)size) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *len = size;
    return buf;
}

/* The sanitizer's control: a one-byte heap overflow that an instrumented build must report. */
static int overflow_self_test(const char *size_text) {
    size_t size = (size_t)strtoull(size_text, NULL, 10); /* unknown at compile time */
    uint8_t *block = malloc(size);
    if (!block) return 2;
    block[size] = 1;
    free(block);
    return 0;
}

int main(int argc, char **argv) {
    if (argc > 2 && strcmp(argv[1], "--overflow-self-test") == 0) return overflow_self_test(argv[2]);
    int64_t max_line = argc > 1 ? strtoll(argv[1], NULL, 10) : 256 * 1024;
    rf_grouper *grouper = rf_grouper_new();
    if (!grouper) return 2;
    for (int i = 2; i < argc; i++) {
        int64_t len = 0;
        uint8_t *buf = read_file(argv[i], &len);
        if (!buf) {
            fprintf(stderr, "%s: unreadable\n", argv[i]);
            return 2;
        }
        int64_t rows = 1;
        for (int64_t j = 0; j < len; j++) rows += buf[j] == '\n';
        rf_out out;
        memset(&out, 0, sizeof out);
        for (int k = 0; k < RF_STRCOLS; k++) {
            out.str[k].offsets = malloc((size_t)(rows + 1) * sizeof(int64_t));
            out.str[k].data = malloc(len > 0 ? (size_t)len : 1);
            out.str[k].valid = malloc((size_t)rows);
            out.str[k].data_cap = len;
        }
        out.hit_count = malloc((size_t)rows * sizeof(int64_t));
        out.observed_at = malloc((size_t)rows * sizeof(int64_t));
        out.observed_valid = malloc((size_t)rows);
        out.row_cap = rows;
        int64_t n = rf_validate_events(buf, len, max_line, &out);
        if (n >= 0)
            printf("%s rows %lld", argv[i], (long long)n);
        else
            printf("%s fallback %d line %lld", argv[i], out.fallback_code,
                   (long long)out.fallback_line);
        print_grouped(grouper, buf, len, max_line);
        if (print_lthash(buf, len, rows) != 0) return 2;
        for (int k = 0; k < RF_STRCOLS; k++) {
            free(out.str[k].offsets);
            free(out.str[k].data);
            free(out.str[k].valid);
        }
        free(out.hit_count);
        free(out.observed_at);
        free(out.observed_valid);
        free(buf);
    }
    rf_grouper_free(grouper);
    return 0;
}
