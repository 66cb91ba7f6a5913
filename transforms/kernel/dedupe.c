/*
 * Dedupe a batch's lines by (symbolId, codeId, loaderBase) while the validation kernel reads
 * them (events.c calls rf_grouper_add for each valid line), as transforms.dedupe.dedupe_events
 * does; that function stays the reference, and tests/transforms/test_kernel.py compares the two
 * on generated and mutated batches.
 *
 * One row per key, sorted by key (bytes order, a missing codeId or loaderBase first): summed
 * hits, the event count, the first and last observation, and the sorted distinct process
 * names, container ids and evidence URIs. The steps:
 *   1. a hash table over the three key strings gives each line its group, whose sums are kept;
 *   2. for each list column, a hash table over its values gives each value an id, and the line
 *      adds the pair (group, value id);
 *   3. at the end the groups are sorted by key and each column's distinct values by bytes; the
 *      pairs, renumbered (group position, value rank), are radix sorted and their repeats
 *      dropped, which leaves each group's values distinct and sorted.
 * A new key or value is copied into an arena of the grouper's own: the lines that match it
 * compare against a few dense blocks instead of the batch's first line with it, anywhere in
 * tens of megabytes (a cache miss per string).
 *
 * It declines (RF_DEDUPE_DECLINED: the caller runs the reference) when the hash tables probe
 * more than a budget proportional to the lines (keys made to collide), when an output is too
 * small, or when memory runs out; it reports RF_DEDUPE_OVERFLOW when a key's hits pass 2^63-1
 * (the reference names the key). The hash is seeded by the caller; the output does not depend
 * on the seed. The caller sizes the output from what rf_grouper_close reports, and every
 * write is checked against the capacities it passes. A grouper keeps its memory from batch to
 * batch (one per thread: the allocations do not churn) until rf_grouper_free; there is no
 * global state.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "events.h"

#define PROBE_BUDGET(n) (8 * (n) + 4096)

/* Equal bytes, 8 at a time (the strings are short: a libc call would cost more). */
static int bytes_equal(const uint8_t *a, const uint8_t *b, int64_t n) {
    uint64_t x, y;
    for (; n >= 8; n -= 8, a += 8, b += 8) {
        memcpy(&x, a, 8);
        memcpy(&y, b, 8);
        if (x != y) return 0;
    }
    for (; n > 0; n--)
        if (*a++ != *b++) return 0;
    return 1;
}

static int spans_equal(const rf_span *a, const rf_span *b) {
    return a->present == b->present && a->n == b->n && bytes_equal(a->s, b->s, a->n);
}

/* Blocks of copied strings; a block never moves, so the spans into it stay valid. A reset
 * grouper fills its blocks again from the first. */
typedef struct block {
    struct block *next;
    size_t used, cap;
    uint8_t data[];
} block;

typedef struct {
    block *first, *current;
} arena;

static uint8_t *arena_take(arena *a, size_t n) {
    block *b = a->current;
    while (b && b->cap - b->used < n) {
        b = b->next;
        if (b) b->used = 0;
    }
    if (!b) {
        size_t cap = n > ((size_t)4 << 20) ? n : ((size_t)4 << 20);
        b = malloc(sizeof *b + cap);
        if (!b) return NULL;
        b->used = 0;
        b->cap = cap;
        /* after the current block: the blocks past it are free to fill again */
        b->next = a->current ? a->current->next : NULL;
        if (a->current)
            a->current->next = b;
        else
            a->first = b;
    }
    a->current = b;
    uint8_t *p = b->data + b->used;
    b->used += n;
    return p;
}

static void arena_reset(arena *a) {
    a->current = a->first;
    if (a->first) a->first->used = 0;
}

static void arena_free(arena *a) {
    while (a->first) {
        block *next = a->first->next;
        free(a->first);
        a->first = next;
    }
    a->current = NULL;
}

/* Missing first, then bytes order (a prefix before the longer string). */
static int spans_compare(const rf_span *a, const rf_span *b) {
    if (a->present != b->present) return a->present ? 1 : -1;
    int64_t m = a->n < b->n ? a->n : b->n;
    int c = m > 0 ? memcmp(a->s, b->s, (size_t)m) : 0;
    if (c != 0) return c;
    return (a->n > b->n) - (a->n < b->n);
}

static uint64_t fmix(uint64_t h) {
    h ^= h >> 33;
    h *= UINT64_C(0xff51afd7ed558ccd);
    h ^= h >> 33;
    h *= UINT64_C(0xc4ceb9fe1a85ec53);
    h ^= h >> 33;
    return h;
}

static uint64_t hash_span(uint64_t h, const rf_span *c) {
    const uint64_t k = UINT64_C(0x9e3779b97f4a7c15);
    const uint8_t *s = c->s;
    int64_t n = c->n;
    h = (h ^ (uint64_t)(c->present + 1)) * k;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        h = (h ^ w) * k;
        h ^= h >> 29;
        s += 8;
        n -= 8;
    }
    uint64_t w = 0;
    if (n > 0) memcpy(&w, s, (size_t)n);
    h = (h ^ w ^ ((uint64_t)c->n << 56)) * k;
    return fmix(h);
}

/* A group's key, or a list column's value (in k[0]), with its hash and id. */
typedef struct {
    uint64_t hash;
    rf_span k[3];
    uint32_t id;
} keyref;

static int keyref_compare(const void *pa, const void *pb) {
    const keyref *a = pa, *b = pb;
    for (int i = 0; i < 3; i++) {
        int c = spans_compare(&a->k[i], &b->k[i]);
        if (c != 0) return c;
    }
    return 0;
}

/* An open-addressing table of ids, linear probing: a slot is 0 (empty) or the top 32 bits of
 * the entry's hash over its id + 1. It starts small and doubles at half full (a batch has far
 * fewer keys than lines, and a small table stays in cache); every probe, the rehashing ones
 * too, counts against the grouper's budget. */
typedef struct {
    uint64_t *slots;
    uint64_t mask;
    int64_t count;
} table;

static uint64_t slot_of(uint64_t hash, uint32_t id) {
    return (hash >> 32) << 32 | ((uint64_t)id + 1);
}

/* A growing array of `elem`-byte items: room for `need` of them, or 0. */
static int reserve(void **items, int64_t *cap, int64_t need, size_t elem) {
    if (need <= *cap) return 1;
    int64_t grown = *cap > 0 ? *cap : 1024;
    while (grown < need) grown *= 2;
    void *p = realloc(*items, (size_t)grown * elem);
    if (!p) return 0;
    *items = p;
    *cap = grown;
    return 1;
}

typedef struct {
    keyref *values;
    int64_t values_cap;
    table t;
    uint64_t *pairs; /* group id << 32 | value id a line; once closed, distinct and sorted */
    int64_t m, pairs_cap;
    uint64_t width;  /* once closed: a pair is position * width + rank */
} listcol;

typedef struct {
    int64_t hits, events, first, last;
    int observed;
} sums;

struct rf_grouper {
    uint64_t seed;
    int64_t probes, budget;
    int64_t state; /* 0, or RF_DEDUPE_DECLINED / RF_DEDUPE_OVERFLOW (sticky) */
    int closed;
    keyref *groups;
    sums *sum;
    int64_t count, groups_cap, sum_cap;
    table t;
    listcol list[3];
    arena bytes;
    uint32_t *position, *rank;
    uint64_t *tmp;
    int64_t position_cap, rank_cap, tmp_cap;
};

rf_grouper *rf_grouper_new(void) { return calloc(1, sizeof(rf_grouper)); }

static void table_clear(table *t) {
    if (t->slots) memset(t->slots, 0, (size_t)(t->mask + 1) * sizeof *t->slots);
    t->count = 0;
}

void rf_grouper_reset(rf_grouper *g, int64_t lines, uint64_t seed) {
    g->seed = seed;
    g->probes = 0;
    g->budget = PROBE_BUDGET(lines > 0 ? lines : 0);
    g->state = 0;
    g->closed = 0;
    g->count = 0;
    table_clear(&g->t);
    for (int c = 0; c < 3; c++) {
        table_clear(&g->list[c].t);
        g->list[c].m = 0;
        g->list[c].width = 1;
    }
    arena_reset(&g->bytes);
}

void rf_grouper_free(rf_grouper *g) {
    if (!g) return;
    free(g->groups);
    free(g->sum);
    free(g->t.slots);
    arena_free(&g->bytes);
    for (int c = 0; c < 3; c++) {
        free(g->list[c].values);
        free(g->list[c].t.slots);
        free(g->list[c].pairs);
    }
    free(g->position);
    free(g->rank);
    free(g->tmp);
    free(g);
}

/* Doubles the table at half full, placing every entry again from its hash. */
static int table_grow(rf_grouper *g, table *t, const keyref *entries) {
    if (t->slots != NULL && t->count * 2 <= (int64_t)(t->mask + 1)) return 1;
    uint64_t size = t->slots ? (t->mask + 1) * 2 : 1024;
    uint64_t *grown = calloc(size, sizeof *grown);
    if (!grown) return 0;
    free(t->slots);
    t->slots = grown;
    t->mask = size - 1;
    for (int64_t id = 0; id < t->count; id++) {
        uint64_t j = entries[id].hash & t->mask;
        while (t->slots[j] != 0) {
            if (++g->probes > g->budget) return 0;
            j = (j + 1) & t->mask;
        }
        t->slots[j] = slot_of(entries[id].hash, (uint32_t)id);
    }
    return 1;
}

/* The id of `key` (k[0] alone when `parts` is 1), added when new; -1 when declined. */
static int64_t find_or_add(rf_grouper *g, table *t, keyref **entries, int64_t *cap,
                           const rf_span *key, int parts, uint64_t seed) {
    uint64_t h = seed;
    for (int j = 0; j < parts; j++) h = hash_span(h, &key[j]);
    if (!table_grow(g, t, *entries)) return -1;
    uint64_t i = h & t->mask;
    for (;;) {
        uint64_t slot = t->slots[i];
        if (slot == 0) break;
        if ((slot >> 32) == (h >> 32)) {
            const keyref *e = &(*entries)[(uint32_t)slot - 1];
            int same = e->hash == h;
            for (int j = 0; same && j < parts; j++) same = spans_equal(&key[j], &e->k[j]);
            if (same) return e->id;
        }
        if (++g->probes > g->budget) return -1;
        i = (i + 1) & t->mask;
    }
    if (t->count >= (int64_t)UINT32_MAX - 1 ||
        !reserve((void **)entries, cap, t->count + 1, sizeof **entries))
        return -1;
    int64_t bytes = 0;
    for (int j = 0; j < parts; j++) bytes += key[j].n;
    uint8_t *copy = arena_take(&g->bytes, (size_t)bytes + 1);
    if (!copy) return -1;
    keyref *e = &(*entries)[t->count];
    memset(e, 0, sizeof *e);
    e->hash = h;
    for (int j = 0; j < parts; j++) {
        e->k[j] = key[j];
        e->k[j].s = copy;
        if (key[j].n > 0) memcpy(copy, key[j].s, (size_t)key[j].n);
        copy += key[j].n;
    }
    e->id = (uint32_t)t->count;
    t->slots[i] = slot_of(h, e->id);
    return t->count++;
}

int rf_grouper_add(rf_grouper *g, const rf_span key[3], int64_t hits, int observed,
                   int64_t micros, const rf_span values[3]) {
    if (g->state != 0 || g->closed) return 0;
    int64_t id = find_or_add(g, &g->t, &g->groups, &g->groups_cap, key, 3, g->seed);
    if (id < 0 || !reserve((void **)&g->sum, &g->sum_cap, id + 1, sizeof *g->sum)) {
        g->state = RF_DEDUPE_DECLINED;
        return 0;
    }
    if (id == g->count) {
        memset(&g->sum[id], 0, sizeof g->sum[id]);
        g->count++;
    }
    sums *s = &g->sum[id];
    if (__builtin_add_overflow(s->hits, hits, &s->hits)) {
        g->state = RF_DEDUPE_OVERFLOW;
        return 0;
    }
    s->events++;
    if (observed) {
        if (!s->observed || micros < s->first) s->first = micros;
        if (!s->observed || micros > s->last) s->last = micros;
        s->observed = 1;
    }
    for (int c = 0; c < 3; c++) {
        if (!values[c].present) continue;
        listcol *l = &g->list[c];
        int64_t v = find_or_add(g, &l->t, &l->values, &l->values_cap, &values[c], 1,
                                g->seed + (uint64_t)c + 1);
        if (v < 0 || !reserve((void **)&l->pairs, &l->pairs_cap, l->m + 1, sizeof *l->pairs)) {
            g->state = RF_DEDUPE_DECLINED;
            return 0;
        }
        l->pairs[l->m++] = (uint64_t)id << 32 | (uint64_t)v;
    }
    return 1;
}

/* LSD radix sort of keys below 2^bits, 11 bits a pass; `tmp` holds as many as `keys`. */
static void radix_sort(uint64_t *keys, uint64_t *tmp, int64_t m, int bits) {
    int64_t count[2048];
    uint64_t *from = keys, *to = tmp;
    for (int shift = 0; shift < bits; shift += 11) {
        memset(count, 0, sizeof count);
        for (int64_t i = 0; i < m; i++) count[(from[i] >> shift) & 2047]++;
        int64_t sum = 0;
        for (int d = 0; d < 2048; d++) {
            int64_t c = count[d];
            count[d] = sum;
            sum += c;
        }
        for (int64_t i = 0; i < m; i++) to[count[(from[i] >> shift) & 2047]++] = from[i];
        uint64_t *swap = from;
        from = to;
        to = swap;
    }
    if (from != keys) memcpy(keys, from, (size_t)m * sizeof *keys);
}

static int bit_length(uint64_t v) {
    int b = 0;
    while (v) {
        b++;
        v >>= 1;
    }
    return b;
}

static int put_bytes(int64_t *offsets, uint8_t *data, int64_t cap, int64_t *used, int64_t at,
                     const rf_span *c) {
    if (c->n > cap - *used) return 0;
    if (c->n > 0) memcpy(data + *used, c->s, (size_t)c->n);
    *used += c->n;
    offsets[at + 1] = *used;
    return 1;
}

/* One list column: its values ranked, its pairs renumbered, sorted and made distinct. */
static void close_list(listcol *l, const uint32_t *position, int64_t groups, uint32_t *rank,
                       uint64_t *tmp, int64_t *entries, int64_t *bytes) {
    int64_t distinct = l->t.count;
    /* value ids are positions in `values` until sorted; ranks map them back */
    if (distinct > 1) qsort(l->values, (size_t)distinct, sizeof *l->values, keyref_compare);
    for (int64_t d = 0; d < distinct; d++) rank[l->values[d].id] = (uint32_t)d;
    l->width = distinct > 0 ? (uint64_t)distinct : 1;
    for (int64_t j = 0; j < l->m; j++)
        l->pairs[j] = position[l->pairs[j] >> 32] * l->width + rank[(uint32_t)l->pairs[j]];
    if (l->m > 1) radix_sort(l->pairs, tmp, l->m, bit_length((uint64_t)groups * l->width));
    int64_t kept = 0;
    *bytes = 0;
    for (int64_t j = 0; j < l->m; j++) {
        if (kept > 0 && l->pairs[j] == l->pairs[kept - 1]) continue;
        l->pairs[kept++] = l->pairs[j];
        *bytes += l->values[l->pairs[j] % l->width].k[0].n;
    }
    l->m = kept;
    *entries = kept;
}

int64_t rf_grouper_close(rf_grouper *g, rf_sizes *sizes) {
    if (g->state != 0) return g->state;
    if (g->closed) return RF_DEDUPE_DECLINED;
    int64_t groups = g->count;
    if (groups <= 0) return RF_DEDUPE_DECLINED;
    int64_t most = groups;
    for (int c = 0; c < 3; c++)
        if (g->list[c].m > most) most = g->list[c].m;
    if (!reserve((void **)&g->position, &g->position_cap, groups, sizeof *g->position) ||
        !reserve((void **)&g->rank, &g->rank_cap, most, sizeof *g->rank) ||
        !reserve((void **)&g->tmp, &g->tmp_cap, most, sizeof *g->tmp)) {
        g->state = RF_DEDUPE_DECLINED;
        return g->state;
    }
    /* ids are positions in `groups` until sorted; `position` maps an id to its place */
    if (groups > 1) qsort(g->groups, (size_t)groups, sizeof *g->groups, keyref_compare);
    for (int64_t p = 0; p < groups; p++) g->position[g->groups[p].id] = (uint32_t)p;
    sizes->groups = groups;
    for (int k = 0; k < 3; k++) sizes->key_bytes[k] = 0;
    for (int64_t p = 0; p < groups; p++)
        for (int k = 0; k < 3; k++) sizes->key_bytes[k] += g->groups[p].k[k].n;
    for (int c = 0; c < 3; c++)
        close_list(&g->list[c], g->position, groups, g->rank, g->tmp, &sizes->entries[c],
                   &sizes->list_bytes[c]);
    g->closed = 1;
    return groups;
}

int64_t rf_grouper_write(const rf_grouper *g, rf_groups *out) {
    if (!g->closed || g->state != 0 || out->row_cap < g->count) return RF_DEDUPE_DECLINED;
    int64_t groups = g->count;
    int64_t used[3] = {0, 0, 0};
    for (int k = 0; k < 3; k++) out->key[k].offsets[0] = 0;
    for (int64_t p = 0; p < groups; p++) {
        const keyref *e = &g->groups[p];
        const sums *s = &g->sum[e->id];
        for (int k = 0; k < 3; k++) {
            rf_strcol *col = &out->key[k];
            col->valid[p] = (uint8_t)e->k[k].present;
            if (!put_bytes(col->offsets, col->data, col->data_cap, &used[k], p, &e->k[k]))
                return RF_DEDUPE_DECLINED;
        }
        out->hit_count[p] = s->hits;
        out->event_count[p] = s->events;
        out->first_observed[p] = s->observed ? s->first : 0;
        out->last_observed[p] = s->observed ? s->last : 0;
        out->observed_valid[p] = (uint8_t)s->observed;
    }
    for (int c = 0; c < 3; c++) {
        const listcol *l = &g->list[c];
        rf_listcol *o = &out->list[c];
        int64_t entries = 0, bytes = 0, j = 0;
        if (l->m > o->entry_cap) return RF_DEDUPE_DECLINED;
        o->list_offsets[0] = 0;
        o->offsets[0] = 0;
        for (int64_t p = 0; p < groups; p++) {
            for (; j < l->m && l->pairs[j] / l->width == (uint64_t)p; j++) {
                const rf_span *v = &l->values[l->pairs[j] % l->width].k[0];
                if (!put_bytes(o->offsets, o->data, o->data_cap, &bytes, entries, v))
                    return RF_DEDUPE_DECLINED;
                entries++;
            }
            o->list_offsets[p + 1] = entries;
        }
    }
    return groups;
}
