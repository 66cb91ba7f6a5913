/*
 * Validate one decompressed batch of runtime events in its canonical form, in one pass.
 *
 * The canonical form is what probes write: one JSON object per line, no whitespace between
 * tokens, keys from the known set at most once each, strings of printable ASCII without
 * escapes, integers without sign, fraction or exponent (hitCount), timestamps
 * YYYY-MM-DDTHH:MM:SS[.ffffff]Z. For such a batch, every line valid, this kernel fills the
 * event columns and returns the row count. For anything else (another form of the same JSON,
 * or an invalid line) it returns RF_FALLBACK, and the exact validator (Arrow + polars, the
 * reference) decides and names the reasons. It never accepts what the reference refuses:
 * tests/transforms/test_kernel.py compares the two on generated and mutated batches, and
 * runs this file under ASan + UBSan over the hostile corpus.
 *
 * Every read is bounds-checked against `end`; every write against the capacities the caller
 * passes. No allocation, no global state: callers on several threads do not share anything.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__SSE2__)
#include <emmintrin.h> /* part of every x86-64: no dispatch needed */
#endif

#include "events.h"

#define RF_MAX_DIGITS 18 /* < INT64_MAX's 19 digits: no overflow possible */
#define RF_MAX_METADATA 16
#define RF_MIN_LINE_BYTES 31 /* {"symbolId":"s","hitCount":1} and its newline */

enum {
    FB_NONE, FB_EMPTY, FB_TOO_MANY_ROWS, FB_LINE_TOO_LONG, FB_SYNTAX, FB_KEY, FB_DUPLICATE_KEY,
    FB_STRING, FB_NUMBER, FB_SYMBOL, FB_HIT_COUNT, FB_CODE_ID, FB_LOADER_BASE, FB_TIMESTAMP,
    FB_ORDER, FB_PROCESS, FB_METADATA, FB_CAPACITY, FB_ALIAS
};

typedef struct {
    const uint8_t *p;
    const uint8_t *end; /* end of the line (exclusive) */
} cursor;

typedef rf_span span;

enum {
    F_SYMBOL = 1 << 0, F_HIT = 1 << 1, F_CODE = 1 << 2, F_LOADER = 1 << 3, F_PROCESS = 1 << 4,
    F_PROCESS_ID = 1 << 5, F_PROCESS_NAME = 1 << 6, F_SOCKET = 1 << 7, F_CONTAINER = 1 << 8,
    F_EVIDENCE = 1 << 9, F_PURL = 1 << 10, F_BUILD = 1 << 11, F_METADATA = 1 << 12,
    F_OBSERVED = 1 << 13, F_TIMESTAMP = 1 << 14
};

static int eat(cursor *c, uint8_t ch) {
    if (c->p < c->end && *c->p == ch) {
        c->p++;
        return 1;
    }
    return 0;
}

/* Bytes a string may hold as they are: printable ASCII (0x20-0x7E) but the quote and the
 * backslash. Everything else ends the plain run: the closing quote, or a decline. */
static const uint8_t PLAIN[256] = {
#define R16(v) v, v, v, v, v, v, v, v, v, v, v, v, v, v, v, v
    R16(0), R16(0),                                            /* 0x00-0x1F */
    1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,            /* 0x20-0x2F: '"' */
    R16(1), R16(1),                                            /* 0x30-0x4F */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1,            /* 0x50-0x5F: '\\' */
    R16(1),                                                    /* 0x60-0x6F */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0,            /* 0x70-0x7F: DEL */
    R16(0), R16(0), R16(0), R16(0), R16(0), R16(0), R16(0), R16(0) /* 0x80-0xFF */
#undef R16
};

#define ONES UINT64_C(0x0101010101010101)
#define HIGHS UINT64_C(0x8080808080808080)

/* The bytes of w that PLAIN refuses (below 0x20, '"', '\\', 0x7F, or the high bit set), each
 * flagged by its high bit. (x - ONES) & ~x & HIGHS flags every zero byte of x; borrows may
 * flag bytes after the first flagged one, never before, so the lowest flag is exact. */
static uint64_t plain_stops(uint64_t w) {
    uint64_t below = (w - ONES * 0x20) & ~w;
    uint64_t q = w ^ (ONES * '"'), b = w ^ (ONES * '\\'), d = w ^ (ONES * 0x7F);
    uint64_t zero = ((q - ONES) & ~q) | ((b - ONES) & ~b) | ((d - ONES) & ~d);
    return (below | zero | w) & HIGHS;
}

#if defined(__SSE2__)
/* The bytes of the 16 at q that PLAIN refuses, one bit each (bit i: byte i). A signed
 * compare below 0x20 takes 0x00-0x1F and every byte with the high bit set; exact per byte. */
static unsigned plain_stops16(const uint8_t *q) {
    __m128i v = _mm_loadu_si128((const __m128i *)(const void *)q);
    __m128i low = _mm_cmplt_epi8(v, _mm_set1_epi8(0x20));
    __m128i quote = _mm_cmpeq_epi8(v, _mm_set1_epi8('"'));
    __m128i slash = _mm_cmpeq_epi8(v, _mm_set1_epi8('\\'));
    __m128i del = _mm_cmpeq_epi8(v, _mm_set1_epi8(0x7F));
    __m128i stops = _mm_or_si128(_mm_or_si128(low, quote), _mm_or_si128(slash, del));
    return (unsigned)_mm_movemask_epi8(stops);
}
#endif

/* A string of printable ASCII (0x20-0x7E) without a quote or backslash inside. */
static int read_string(cursor *c, span *out) {
    if (!eat(c, '"')) return 0;
    const uint8_t *start = c->p;
    const uint8_t *q = c->p;
    const uint8_t *end = c->end;
#if defined(__SSE2__)
    /* sixteen bytes at a time where the line has them: the first flagged byte ends the run */
    while (end - q >= 16) {
        unsigned stops = plain_stops16(q);
        if (stops != 0) {
            q += __builtin_ctz(stops);
            goto found;
        }
        q += 16;
    }
#endif
    /* eight bytes at a time: the first flagged byte (the lowest, in little-endian order) ends
     * the run; the byte loop takes what is left, and decides everywhere else */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    while (end - q >= 8) {
        uint64_t w;
        memcpy(&w, q, 8);
        uint64_t stops = plain_stops(w);
        if (stops != 0) {
            q += __builtin_ctzll(stops) >> 3;
            break;
        }
        q += 8;
    }
#endif
    while (q < end && PLAIN[*q]) q++;
#if defined(__SSE2__)
found:
#endif
    if (q == end || *q != '"') return 0;
    out->s = start;
    out->n = q - start;
    out->present = 1;
    c->p = q + 1;
    return 1;
}

/* An integer: optional '-' (when allowed), no leading zero, at most RF_MAX_DIGITS digits. */
static int read_int(cursor *c, int allow_negative, int64_t *value) {
    int negative = 0;
    if (allow_negative && eat(c, '-')) negative = 1;
    const uint8_t *start = c->p;
    int64_t v = 0;
    while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
        if (c->p - start >= RF_MAX_DIGITS) return 0;
        v = v * 10 + (*c->p - '0');
        c->p++;
    }
    int64_t digits = c->p - start;
    if (digits == 0 || (digits > 1 && *start == '0')) return 0;
    if (negative && v == 0) return 0; /* "-0": valid JSON, but not this kernel's form */
    *value = negative ? -v : v;
    /* a fraction or exponent continues the number: not canonical */
    return !(c->p < c->end && (*c->p == '.' || *c->p == 'e' || *c->p == 'E'));
}

static int key_is(const span *k, const char *name) {
    /* byte by byte: the names are short, and a libc call per key of every line costs more */
    int64_t i = 0;
    for (; i < k->n && name[i] != '\0'; i++)
        if (k->s[i] != (uint8_t)name[i]) return 0;
    return i == k->n && name[i] == '\0';
}

static int is_hex(uint8_t ch) {
    return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F');
}

/* ^(0[xX])?[0-9a-fA-F]+$ */
static int valid_loader_base(const span *v) {
    int64_t i = 0;
    if (v->n > 2 && v->s[0] == '0' && (v->s[1] == 'x' || v->s[1] == 'X')) i = 2;
    if (v->n == 0) return 0;
    for (; i < v->n; i++)
        if (!is_hex(v->s[i])) return 0;
    return 1;
}

static int digits_at(const uint8_t *s, int n, int *value) {
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return 0;
        v = v * 10 + (s[i] - '0');
    }
    *value = v;
    return 1;
}

/* Days from 1970-01-01 to y-m-d in the proleptic Gregorian calendar (Howard Hinnant's). */
static int64_t days_from_civil(int64_t y, int m, int d) {
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int days_in_month(int y, int m) {
    static const int days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (m == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0)) return 29;
    return days[m - 1];
}

/* YYYY-MM-DDTHH:MM:SS[.f{1,6}]Z, year 0001-9999, second 00-59: microseconds since the epoch. */
static int parse_timestamp(const span *v, int64_t *micros) {
    const uint8_t *s = v->s;
    int64_t n = v->n;
    int year, month, day, hour, minute, second;
    if (n < 20 || n > 27) return 0;
    if (s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':') return 0;
    if (!digits_at(s, 4, &year) || !digits_at(s + 5, 2, &month) || !digits_at(s + 8, 2, &day) ||
        !digits_at(s + 11, 2, &hour) || !digits_at(s + 14, 2, &minute) ||
        !digits_at(s + 17, 2, &second))
        return 0;
    if (year < 1 || month < 1 || month > 12 || day < 1 || day > days_in_month(year, month) ||
        hour > 23 || minute > 59 || second > 59)
        return 0;
    int64_t fraction = 0;
    int64_t i = 19;
    if (s[i] == '.') {
        i++;
        int64_t digits = 0;
        while (i < n && s[i] >= '0' && s[i] <= '9') {
            fraction = fraction * 10 + (s[i] - '0');
            digits++;
            i++;
        }
        if (digits < 1 || digits > 6) return 0;
        for (; digits < 6; digits++) fraction *= 10;
    }
    if (i != n - 1 || s[i] != 'Z') return 0;
    int64_t days = days_from_civil(year, month, day);
    *micros = ((days * 24 + hour) * 60 + minute) * 60 * INT64_C(1000000) +
              (int64_t)second * INT64_C(1000000) + fraction;
    return 1;
}

static int has_edge_space(const span *v) {
    return v->n > 0 && (v->s[0] == ' ' || v->s[v->n - 1] == ' ');
}

/* {"id":int,"name":string}, either key optional, each at most once. */
static int read_process(cursor *c, span *name) {
    if (!eat(c, '{')) return 0;
    if (eat(c, '}')) return 1;
    int seen_id = 0, seen_name = 0;
    for (;;) {
        span key = {0};
        if (!read_string(c, &key) || !eat(c, ':')) return 0;
        if (key_is(&key, "id")) {
            int64_t ignored;
            if (seen_id++ || !read_int(c, 1, &ignored)) return 0;
        } else if (key_is(&key, "name")) {
            if (seen_name++ || !read_string(c, name)) return 0;
        } else {
            return 0;
        }
        if (eat(c, '}')) return 1;
        if (!eat(c, ',')) return 0;
    }
}

/* {"key":"value",...}: string values only, keys distinct, at most RF_MAX_METADATA of them. */
static int read_metadata(cursor *c) {
    span keys[RF_MAX_METADATA];
    int count = 0;
    if (!eat(c, '{')) return 0;
    if (eat(c, '}')) return 1;
    for (;;) {
        span key = {0}, value = {0};
        if (count == RF_MAX_METADATA || !read_string(c, &key) || !eat(c, ':') ||
            !read_string(c, &value))
            return 0;
        for (int i = 0; i < count; i++)
            if (keys[i].n == key.n && memcmp(keys[i].s, key.s, (size_t)key.n) == 0) return 0;
        keys[count++] = key;
        if (eat(c, '}')) return 1;
        if (!eat(c, ',')) return 0;
    }
}

static int put_string(rf_strcol *col, int64_t row, int64_t *used, const span *v) {
    col->valid[row] = (uint8_t)v->present;
    if (v->present) {
        if (v->n > col->data_cap - *used) return 0;
        memcpy(col->data + *used, v->s, (size_t)v->n);
        *used += v->n;
    }
    col->offsets[row + 1] = *used;
    return 1;
}

typedef struct {
    span str[RF_STRCOLS];
    span process_name, observed, timestamp;
    int64_t hit_count;
} rf_line;

static int read_line(cursor *c, rf_line *line, int32_t *why) {
    unsigned seen = 0;
    memset(line, 0, sizeof *line);
    *why = FB_SYNTAX;
    if (!eat(c, '{')) return 0;
    for (;;) {
        span key = {0};
        span ignored = {0};
        unsigned bit;
        int ok;
        if (!read_string(c, &key) || !eat(c, ':')) return 0;
        switch (key.n) {
        case 4:
            if (key_is(&key, "purl")) { bit = F_PURL; ok = read_string(c, &ignored); break; }
            *why = FB_KEY; return 0;
        case 6:
            if (key_is(&key, "codeId")) { bit = F_CODE; ok = read_string(c, &line->str[COL_CODE]); break; }
            *why = FB_KEY; return 0;
        case 7:
            if (key_is(&key, "process")) { bit = F_PROCESS; ok = read_process(c, &line->process_name); *why = FB_PROCESS; break; }
            if (key_is(&key, "buildId")) { bit = F_BUILD; ok = read_string(c, &ignored); break; }
            *why = FB_KEY; return 0;
        case 8:
            if (key_is(&key, "symbolId")) { bit = F_SYMBOL; ok = read_string(c, &line->str[COL_SYMBOL]); break; }
            if (key_is(&key, "hitCount")) { bit = F_HIT; ok = read_int(c, 0, &line->hit_count); *why = FB_NUMBER; break; }
            if (key_is(&key, "metadata")) { bit = F_METADATA; ok = read_metadata(c); *why = FB_METADATA; break; }
            *why = FB_KEY; return 0;
        case 9:
            if (key_is(&key, "processId")) { bit = F_PROCESS_ID; int64_t pid; ok = read_int(c, 1, &pid); *why = FB_NUMBER; break; }
            if (key_is(&key, "timestamp")) { bit = F_TIMESTAMP; ok = read_string(c, &line->timestamp); break; }
            *why = FB_KEY; return 0;
        case 10:
            if (key_is(&key, "loaderBase")) { bit = F_LOADER; ok = read_string(c, &line->str[COL_LOADER]); break; }
            if (key_is(&key, "observedAt")) { bit = F_OBSERVED; ok = read_string(c, &line->observed); break; }
            *why = FB_KEY; return 0;
        case 11:
            if (key_is(&key, "processName")) { bit = F_PROCESS_NAME; ok = read_string(c, &line->str[COL_PROCESS]); break; }
            if (key_is(&key, "containerId")) { bit = F_CONTAINER; ok = read_string(c, &line->str[COL_CONTAINER]); break; }
            if (key_is(&key, "evidenceUri")) { bit = F_EVIDENCE; ok = read_string(c, &line->str[COL_EVIDENCE]); break; }
            *why = FB_KEY; return 0;
        case 13:
            if (key_is(&key, "socketAddress")) { bit = F_SOCKET; ok = read_string(c, &ignored); break; }
            *why = FB_KEY; return 0;
        default:
            *why = FB_KEY; return 0;
        }
        if (!ok) {
            if (*why == FB_SYNTAX) *why = FB_STRING;
            return 0;
        }
        if (seen & bit) { *why = FB_DUPLICATE_KEY; return 0; }
        seen |= bit;
        *why = FB_SYNTAX;
        if (eat(c, '}')) break;
        if (!eat(c, ',')) return 0;
    }
    if (!(seen & F_SYMBOL)) { *why = FB_SYMBOL; return 0; }
    if (!(seen & F_HIT)) { *why = FB_HIT_COUNT; return 0; }
    /* Aliases given together: the reference keeps the first of each pair; leave it to it. */
    if ((seen & F_OBSERVED) && (seen & F_TIMESTAMP)) { *why = FB_ALIAS; return 0; }
    if (line->process_name.present) {
        if (line->str[COL_PROCESS].present) { *why = FB_ALIAS; return 0; }
        line->str[COL_PROCESS] = line->process_name;
    }
    if (!line->observed.present) line->observed = line->timestamp;
    return 1;
}

/* The grouper takes the key columns and the list columns as runs of three spans. */
_Static_assert(COL_CODE == COL_SYMBOL + 1 && COL_LOADER == COL_SYMBOL + 2, "key columns");
_Static_assert(COL_CONTAINER == COL_PROCESS + 1 && COL_EVIDENCE == COL_PROCESS + 2, "lists");

/* The pass: each valid line goes to the columns of `rows`, or to the grouper `g` (one of the
 * two is NULL). Returns the line count, or RF_FALLBACK with *why and *where set. */
static int64_t validate(const uint8_t *buf, int64_t len, int64_t max_line_bytes, rf_out *rows,
                        rf_grouper *g, int64_t row_cap, int32_t *why_out, int64_t *where) {
    int64_t row = 0;
    int64_t used[RF_STRCOLS] = {0};
    int64_t running_max = INT64_MIN;
    int have_max = 0;
    const uint8_t *p = buf;
    const uint8_t *stop = buf + len;
    *why_out = FB_NONE;
    *where = 0;
    if (len <= 0) {
        *why_out = FB_EMPTY;
        return RF_FALLBACK;
    }
    if (rows)
        for (int k = 0; k < RF_STRCOLS; k++) rows->str[k].offsets[0] = 0;
    while (p < stop) {
        /* One pass: the object is read up to the buffer's end (no byte of it may be a raw
         * newline: strings hold none, and whitespace is not this form), then the line must
         * end right after it. */
        rf_line line;
        int32_t why = FB_NONE;
        cursor c = {p, stop};
        *where = row + 1;
        if (row >= row_cap) { why = FB_TOO_MANY_ROWS; goto fallback; }
        if (!read_line(&c, &line, &why)) goto fallback;
        if (c.p < stop && *c.p != '\n') { why = FB_SYNTAX; goto fallback; }
        if (c.p - p > max_line_bytes) { why = FB_LINE_TOO_LONG; goto fallback; }
        {
            const span *symbol = &line.str[COL_SYMBOL];
            const span *code = &line.str[COL_CODE];
            const span *loader = &line.str[COL_LOADER];
            int64_t micros = 0;
            if (symbol->n == 0 || has_edge_space(symbol)) { why = FB_SYMBOL; goto fallback; }
            if (line.hit_count < 1) { why = FB_HIT_COUNT; goto fallback; }
            if (code->present && (code->n == 0 || has_edge_space(code))) { why = FB_CODE_ID; goto fallback; }
            if (loader->present && !valid_loader_base(loader)) { why = FB_LOADER_BASE; goto fallback; }
            if (line.observed.present) {
                if (!parse_timestamp(&line.observed, &micros)) { why = FB_TIMESTAMP; goto fallback; }
                if (have_max && micros < running_max) { why = FB_ORDER; goto fallback; }
                if (!have_max || micros > running_max) running_max = micros;
                have_max = 1;
            }
            if (rows) {
                for (int k = 0; k < RF_STRCOLS; k++)
                    if (!put_string(&rows->str[k], row, &used[k], &line.str[k])) { why = FB_CAPACITY; goto fallback; }
                rows->hit_count[row] = line.hit_count;
                rows->observed_at[row] = micros;
                rows->observed_valid[row] = (uint8_t)line.observed.present;
            } else {
                /* a grouper that declined stays so; the pass goes on to validate every line */
                rf_grouper_add(g, &line.str[COL_SYMBOL], line.hit_count, line.observed.present,
                               micros, &line.str[COL_PROCESS]);
            }
        }
        row++;
        p = c.p < stop ? c.p + 1 : stop;
        continue;
    fallback:
        *why_out = why;
        return RF_FALLBACK;
    }
    *where = 0;
    return row;
}

int64_t rf_validate_events(const uint8_t *buf, int64_t len, int64_t max_line_bytes, rf_out *out) {
    return validate(buf, len, max_line_bytes, out, NULL, out->row_cap, &out->fallback_code,
                    &out->fallback_line);
}

int64_t rf_validate_grouped(rf_grouper *g, const uint8_t *buf, int64_t len,
                            int64_t max_line_bytes, uint64_t seed, rf_sizes *sizes) {
    memset(sizes, 0, sizeof *sizes);
    rf_grouper_reset(g, len / RF_MIN_LINE_BYTES + 1, seed);
    int64_t lines = validate(buf, len, max_line_bytes, NULL, g, INT64_MAX, &sizes->fallback_code,
                             &sizes->fallback_line);
    if (lines < 0) return lines;
    sizes->lines = lines;
    return rf_grouper_close(g, sizes);
}
