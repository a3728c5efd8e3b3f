/*
 * tok_util.c -- byte buffers, a string arena, hash maps and UTF-8 helpers for
 * the tokenizer.
 *
 * Owns: the growable buffer (NUL-terminated after every append), the arena
 * (blocks freed together), the two open-addressing hash maps (power-of-two
 * sized, load factor <= 3/4, never shrink), and the UTF-8 rules the rest of
 * the tokenizer relies on. Invalid UTF-8 is replaced per Unicode's "maximal
 * subpart" practice, which is what Rust's from_utf8_lossy and Python's
 * errors="replace" do.
 */
#include "util/utf8.h"
#include "tokenizer/tok_internal.h"

#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

bool tok_buf_reserve(struct tok_buf *b, size_t extra)
{
    if (b->n + extra + 1 <= b->cap)
        return true;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->n + extra + 1) {
        if (cap > SIZE_MAX / 2)
            return false;
        cap *= 2;
    }
    char *p = realloc(b->p, cap);
    if (!p)
        return false;
    b->p = p;
    b->cap = cap;
    return true;
}

bool tok_buf_add(struct tok_buf *b, const void *s, size_t n)
{
    if (!tok_buf_reserve(b, n))
        return false;
    if (n)
        memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
    return true;
}

bool tok_buf_addc(struct tok_buf *b, char c) { return tok_buf_add(b, &c, 1); }

void tok_buf_free(struct tok_buf *b)
{
    free(b->p);
    b->p = NULL;
    b->n = b->cap = 0;
}

/* ---- arena ---- */

struct tok_arena_block {
    struct tok_arena_block *next;
    size_t used, cap;
    char data[];
};

char *tok_arena_strdup(struct tok_arena *a, const char *s, size_t n)
{
    struct tok_arena_block *b = a->head;
    if (!b || b->cap - b->used < n + 1) {
        size_t cap = n + 1 > (1u << 20) ? n + 1 : (1u << 20);
        b = malloc(sizeof(*b) + cap);
        if (!b)
            return NULL;
        b->used = 0;
        b->cap = cap;
        b->next = a->head;
        a->head = b;
    }
    char *p = b->data + b->used;
    if (n)
        memcpy(p, s, n);
    p[n] = 0;
    b->used += n + 1;
    return p;
}

void tok_arena_free(struct tok_arena *a)
{
    struct tok_arena_block *b = a->head;
    while (b) {
        struct tok_arena_block *next = b->next;
        free(b);
        b = next;
    }
    a->head = NULL;
}

/* ---- hashing (FNV-1a over 8-byte words would be faster; this is simple and
 * good enough: vocab lookups are not the bottleneck) ---- */

uint64_t tok_hash(const void *s, size_t n)
{
    const unsigned char *p = s;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 32;
    return h;
}

/* Power-of-two capacity keeping the load factor under 3/4. */
static size_t pow2_for(size_t expected)
{
    size_t cap = 16;
    while (cap < expected + expected / 3 + 2)
        cap *= 2;
    return cap;
}

bool tok_strmap_init(struct tok_strmap *m, size_t expected)
{
    size_t cap = pow2_for(expected);
    m->slots = calloc(cap, sizeof(*m->slots));
    m->mask = cap - 1;
    m->n = 0;
    return m->slots != NULL;
}

static bool strmap_grow(struct tok_strmap *m)
{
    size_t cap = (m->mask + 1) * 2;
    struct tok_strmap_slot *slots = calloc(cap, sizeof(*slots));
    if (!slots)
        return false;
    for (size_t i = 0; i <= m->mask; i++) {
        struct tok_strmap_slot *s = &m->slots[i];
        if (!s->key)
            continue;
        size_t j = s->hash & (cap - 1);
        while (slots[j].key)
            j = (j + 1) & (cap - 1);
        slots[j] = *s;
    }
    free(m->slots);
    m->slots = slots;
    m->mask = cap - 1;
    return true;
}

bool tok_strmap_put(struct tok_strmap *m, const char *key, size_t len, int32_t val)
{
    if ((m->n + 1) * 4 > (m->mask + 1) * 3 && !strmap_grow(m))
        return false;
    uint32_t h = (uint32_t)tok_hash(key, len);
    size_t j = h & m->mask;
    while (m->slots[j].key) {
        struct tok_strmap_slot *s = &m->slots[j];
        if (s->hash == h && s->len == len && !memcmp(s->key, key, len)) {
            s->val = val;
            return true;
        }
        j = (j + 1) & m->mask;
    }
    m->slots[j] = (struct tok_strmap_slot){key, (uint32_t)len, val, h};
    m->n++;
    return true;
}

int32_t tok_strmap_get(const struct tok_strmap *m, const char *key, size_t len)
{
    if (!m->slots)
        return -1;
    uint32_t h = (uint32_t)tok_hash(key, len);
    size_t j = h & m->mask;
    while (m->slots[j].key) {
        const struct tok_strmap_slot *s = &m->slots[j];
        if (s->hash == h && s->len == len && !memcmp(s->key, key, len))
            return s->val;
        j = (j + 1) & m->mask;
    }
    return -1;
}

void tok_strmap_free(struct tok_strmap *m)
{
    free(m->slots);
    m->slots = NULL;
    m->n = m->mask = 0;
}

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

bool tok_mergemap_init(struct tok_mergemap *m, size_t expected)
{
    size_t cap = pow2_for(expected);
    m->slots = malloc(cap * sizeof(*m->slots));
    if (!m->slots)
        return false;
    for (size_t i = 0; i < cap; i++)
        m->slots[i].key = UINT64_MAX;
    m->mask = cap - 1;
    m->n = 0;
    return true;
}

static bool mergemap_grow(struct tok_mergemap *m)
{
    size_t cap = (m->mask + 1) * 2;
    struct tok_merge_slot *slots = malloc(cap * sizeof(*slots));
    if (!slots)
        return false;
    for (size_t i = 0; i < cap; i++)
        slots[i].key = UINT64_MAX;
    for (size_t i = 0; i <= m->mask; i++) {
        if (m->slots[i].key == UINT64_MAX)
            continue;
        size_t j = mix64(m->slots[i].key) & (cap - 1);
        while (slots[j].key != UINT64_MAX)
            j = (j + 1) & (cap - 1);
        slots[j] = m->slots[i];
    }
    free(m->slots);
    m->slots = slots;
    m->mask = cap - 1;
    return true;
}

bool tok_mergemap_put(struct tok_mergemap *m, int32_t a, int32_t b, int32_t rank, int32_t new_id)
{
    if ((m->n + 1) * 4 > (m->mask + 1) * 3 && !mergemap_grow(m))
        return false;
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    size_t j = mix64(key) & m->mask;
    while (m->slots[j].key != UINT64_MAX) {
        if (m->slots[j].key == key) {
            /* A repeated pair keeps the later entry, as a Rust HashMap insert does. */
            m->slots[j].rank = rank;
            m->slots[j].new_id = new_id;
            return true;
        }
        j = (j + 1) & m->mask;
    }
    m->slots[j] = (struct tok_merge_slot){key, rank, new_id};
    m->n++;
    return true;
}

const struct tok_merge_slot *tok_mergemap_get(const struct tok_mergemap *m, int32_t a, int32_t b)
{
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    size_t j = mix64(key) & m->mask;
    while (m->slots[j].key != UINT64_MAX) {
        if (m->slots[j].key == key)
            return &m->slots[j];
        j = (j + 1) & m->mask;
    }
    return NULL;
}

void tok_mergemap_free(struct tok_mergemap *m)
{
    free(m->slots);
    m->slots = NULL;
    m->n = m->mask = 0;
}

/* ---- UTF-8 ---- */

int tok_utf8_valid_len(const unsigned char *s, size_t n, int *bad_len)
{
    unsigned char c = s[0];
    *bad_len = 1;
    if (c < 0x80)
        return 1;
    int need;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF)
        need = 1;
    else if (c >= 0xE0 && c <= 0xEF) {
        need = 2;
        if (c == 0xE0)
            lo = 0xA0;
        if (c == 0xED)
            hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 3;
        if (c == 0xF0)
            lo = 0x90;
        if (c == 0xF4)
            hi = 0x8F;
    } else
        return 0;
    for (int i = 1; i <= need; i++) {
        if ((size_t)i >= n)
            return (*bad_len = i, 0);
        unsigned char d = s[i];
        unsigned char l = i == 1 ? lo : 0x80, h = i == 1 ? hi : 0xBF;
        if (d < l || d > h)
            return (*bad_len = i, 0);
    }
    return need + 1;
}

int tok_utf8_decode(const char *s, int32_t *cp)
{
    const unsigned char *u = (const unsigned char *)s;
    if (u[0] < 0x80) {
        *cp = u[0];
        return 1;
    }
    if (u[0] < 0xE0) {
        *cp = ((u[0] & 0x1F) << 6) | (u[1] & 0x3F);
        return 2;
    }
    if (u[0] < 0xF0) {
        *cp = ((u[0] & 0x0F) << 12) | ((u[1] & 0x3F) << 6) | (u[2] & 0x3F);
        return 3;
    }
    *cp = ((u[0] & 0x07) << 18) | ((u[1] & 0x3F) << 12) | ((u[2] & 0x3F) << 6) | (u[3] & 0x3F);
    return 4;
}

int tok_utf8_encode(int32_t cp, char out[4])
{
    return pl_utf8_encode((uint32_t)cp, out);
}

bool tok_utf8_lossy_append(struct tok_buf *out, const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, run = 0;
    if (!tok_buf_reserve(out, n))
        return false;
    while (i < n) {
        int bad;
        int l = tok_utf8_valid_len(u + i, n - i, &bad);
        if (l) {
            i += l;
            continue;
        }
        if (!tok_buf_add(out, s + run, i - run) || !tok_buf_add(out, "\xEF\xBF\xBD", 3))
            return false;
        i += bad;
        run = i;
    }
    return tok_buf_add(out, s + run, n - run);
}

bool tok_utf8_is_valid(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        if (u[i] < 0x80) {
            i++;
            continue;
        }
        int bad;
        int l = tok_utf8_valid_len(u + i, n - i, &bad);
        if (!l)
            return false;
        i += l;
    }
    return true;
}

/* Rust's char::is_whitespace: the Unicode White_Space property. */
bool tok_cp_is_whitespace(int32_t cp)
{
    if (cp == ' ' || (cp >= 0x09 && cp <= 0x0D))
        return true;
    if (cp < 0x85)
        return false;
    return cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) ||
           cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

/* regex-syntax's is_word_character: Alphabetic, marks, decimal digits,
 * connector punctuation and the joiners. */
bool tok_cp_is_word(int32_t cp)
{
    if (cp < 0x80)
        return (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z') || (cp >= '0' && cp <= '9') ||
               cp == '_';
    if (cp == 0x200C || cp == 0x200D)
        return true;
    switch (utf8proc_category(cp)) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_LO: case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_MN: case UTF8PROC_CATEGORY_MC: case UTF8PROC_CATEGORY_ME:
    case UTF8PROC_CATEGORY_ND: case UTF8PROC_CATEGORY_PC:
        return true;
    default:
        return false;
    }
}

/* HF's Punctuation pre-tokenizer: ASCII punctuation or a Unicode P* category. */
bool tok_cp_is_punct(int32_t cp)
{
    if (cp < 0x80)
        return (cp >= 0x21 && cp <= 0x2F) || (cp >= 0x3A && cp <= 0x40) ||
               (cp >= 0x5B && cp <= 0x60) || (cp >= 0x7B && cp <= 0x7E);
    switch (utf8proc_category(cp)) {
    case UTF8PROC_CATEGORY_PC: case UTF8PROC_CATEGORY_PD: case UTF8PROC_CATEGORY_PS:
    case UTF8PROC_CATEGORY_PE: case UTF8PROC_CATEGORY_PI: case UTF8PROC_CATEGORY_PF:
    case UTF8PROC_CATEGORY_PO:
        return true;
    default:
        return false;
    }
}
