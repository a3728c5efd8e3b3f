/*
 * matcher.c -- the pushdown automaton over bytes, token masks and their caches.
 *
 * Owns: struct pl_grammar_vocab, struct pl_grammar_cache, struct pl_grammar_matcher.
 *
 * A state is a set of stacks; each stack is a chain of nodes (pos, parent), the
 * top node's pos being the next element to match, plus an "accepting" flag when
 * some stack can end there. Stacks are lazy: a top may be a rule reference, and a
 * byte expands a reference only into the alternatives whose first bytes
 * (grammar_internal.h: first[], from a fixpoint at compile time) include it, so a
 * byte that cannot come costs one bit test. A reference in tail position
 * (followed by the end of its alternative) does not push its continuation, so
 * `R ::= X R | ()` repeats at a fixed depth. A node's
 * hash covers its whole chain, so equal stacks have equal hashes: duplicates are
 * dropped, and a state's key (its sorted stack hashes, the accepting flag and the
 * grammar) indexes the mask cache.
 *
 * Scratch: the cache owns one node arena and leaf list, sized at creation, used
 * by one operation at a time (the engine's thread): a matcher's state is stored
 * as stacks of positions and rebuilt into the arena when needed. Running out of
 * arena drops stacks (a token is then refused, never wrongly allowed).
 *
 * Masks: the vocabulary is sorted by bytes with each token's longest common
 * prefix with the previous one, which walks it as a trie: per prefix length one
 * level of stacks; a token reuses its predecessor's levels up to their common
 * prefix, and when a byte kills every stack, all following tokens sharing that
 * prefix are skipped. A computed mask goes into a 4-way set-associative cache
 * keyed by the state, so the common states (inside a string, between values)
 * cost one lookup and a copy.
 */
#include "grammar/grammar_internal.h"
#include "tokenizer/tokenizer.h"
#include "util/log.h"

#include <stdlib.h>
#include <string.h>

#define MAX_LEAVES_PER_LEVEL 1024
#define MAX_EXPAND_DEPTH 4096
#define NODE_CAP (1 << 20)
#define MASK_WAYS 4

/* ---- vocabulary ---- */

struct pl_grammar_vocab {
    int n_tokens;          /* mask width */
    int n_sorted;          /* tokens with bytes, sorted */
    int32_t *sorted_id;    /* [n_sorted] */
    uint32_t *sorted_off;  /* [n_sorted] into bytes */
    int32_t *sorted_len;   /* [n_sorted] */
    int32_t *lcp;          /* [n_sorted] common prefix with the previous sorted token */
    int32_t *id_off;       /* [n_tokens] */
    int32_t *id_len;       /* [n_tokens]; -1: never allowed */
    char *bytes;           /* by id */
    char *sbytes;          /* the same in sorted order (the mask walk reads it in sequence) */
    int max_len;
    int32_t *eos;          /* [n_eos] */
    int n_eos;
};

struct sort_tok {
    const char *p;
    int32_t len, id;
};

static int cmp_tok(const void *a, const void *b)
{
    const struct sort_tok *x = a, *y = b;
    int c = memcmp(x->p, y->p, (size_t)(x->len < y->len ? x->len : y->len));
    if (c)
        return c;
    return x->len != y->len ? (x->len < y->len ? -1 : 1) : (x->id < y->id ? -1 : x->id > y->id);
}

void pl_grammar_vocab_free(struct pl_grammar_vocab *v)
{
    if (!v)
        return;
    free(v->sorted_id);
    free(v->sorted_off);
    free(v->sorted_len);
    free(v->lcp);
    free(v->id_off);
    free(v->id_len);
    free(v->bytes);
    free(v->sbytes);
    free(v->eos);
    free(v);
}

int pl_grammar_vocab_size(const struct pl_grammar_vocab *v)
{
    return v ? v->n_tokens : 0;
}

pl_status pl_grammar_vocab_new(int n_tokens, const char *const *tokens, const int *lens,
                               const int32_t *eos_ids, int n_eos, struct pl_grammar_vocab **out,
                               struct pl_err *err)
{
    *out = NULL;
    if (n_tokens < 1 || n_eos < 0)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT, "grammar vocab: bad sizes");
    struct pl_grammar_vocab *v = calloc(1, sizeof(*v));
    if (!v)
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "grammar vocab: out of memory");
    v->n_tokens = n_tokens;
    size_t total = 0;
    for (int i = 0; i < n_tokens; i++)
        if (lens[i] > 0)
            total += (size_t)lens[i];
    v->id_off = malloc((size_t)n_tokens * sizeof(int32_t));
    v->id_len = malloc((size_t)n_tokens * sizeof(int32_t));
    v->sorted_id = malloc((size_t)n_tokens * sizeof(int32_t));
    v->sorted_off = malloc((size_t)n_tokens * sizeof(uint32_t));
    v->sorted_len = malloc((size_t)n_tokens * sizeof(int32_t));
    v->lcp = malloc((size_t)n_tokens * sizeof(int32_t));
    v->bytes = malloc(total ? total : 1);
    v->eos = malloc((size_t)(n_eos ? n_eos : 1) * sizeof(int32_t));
    uint32_t *off_by_id = malloc((size_t)n_tokens * sizeof(uint32_t));
    if (!v->id_off || !v->id_len || !v->sorted_id || !v->sorted_off || !v->sorted_len || !v->lcp ||
        !v->bytes || !v->eos || !off_by_id || total > UINT32_MAX) {
        free(off_by_id);
        pl_grammar_vocab_free(v);
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "grammar vocab: out of memory");
    }
    size_t pos = 0;
    int n_sorted = 0;
    for (int i = 0; i < n_tokens; i++) {
        v->id_len[i] = lens[i] > 0 ? lens[i] : -1;
        v->id_off[i] = (int32_t)pos;
        off_by_id[i] = (uint32_t)pos;
        if (lens[i] > 0) {
            memcpy(v->bytes + pos, tokens[i], (size_t)lens[i]);
            pos += (size_t)lens[i];
            v->sorted_id[n_sorted++] = i;
            if (lens[i] > v->max_len)
                v->max_len = lens[i];
        }
    }
    for (int i = 0; i < n_eos; i++) {
        v->eos[i] = eos_ids[i];
        if (eos_ids[i] >= 0 && eos_ids[i] < n_tokens)
            v->id_len[eos_ids[i]] = -1; /* eos is matched by the accepting flag, not its bytes */
    }
    v->n_eos = n_eos;
    /* drop eos ids from the sorted walk, then sort */
    int m = 0;
    for (int i = 0; i < n_sorted; i++)
        if (v->id_len[v->sorted_id[i]] > 0)
            v->sorted_id[m++] = v->sorted_id[i];
    n_sorted = m;
    struct sort_tok *st = malloc((size_t)(n_sorted ? n_sorted : 1) * sizeof(*st));
    if (!st) {
        free(off_by_id);
        pl_grammar_vocab_free(v);
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "grammar vocab: out of memory");
    }
    for (int i = 0; i < n_sorted; i++) {
        int32_t id = v->sorted_id[i];
        st[i] = (struct sort_tok){v->bytes + off_by_id[id], v->id_len[id], id};
    }
    qsort(st, (size_t)n_sorted, sizeof(*st), cmp_tok);
    for (int i = 0; i < n_sorted; i++)
        v->sorted_id[i] = st[i].id;
    free(st);
    free(off_by_id);
    v->sbytes = malloc(total ? total : 1);
    if (!v->sbytes) {
        pl_grammar_vocab_free(v);
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "grammar vocab: out of memory");
    }
    uint32_t so = 0;
    for (int i = 0; i < n_sorted; i++) {
        int32_t id = v->sorted_id[i];
        memcpy(v->sbytes + so, v->bytes + v->id_off[id], (size_t)v->id_len[id]);
        v->sorted_off[i] = so;
        so += (uint32_t)v->id_len[id];
        v->sorted_len[i] = v->id_len[id];
        int l = 0;
        if (i > 0) {
            const char *a = v->sbytes + v->sorted_off[i - 1], *b = v->sbytes + v->sorted_off[i];
            int n = v->sorted_len[i - 1] < v->sorted_len[i] ? v->sorted_len[i - 1]
                                                            : v->sorted_len[i];
            while (l < n && a[l] == b[l])
                l++;
        }
        v->lcp[i] = l;
    }
    v->n_sorted = n_sorted;
    *out = v;
    return PL_STATUS_OK;
}

pl_status pl_grammar_vocab_from_tokenizer(const struct pl_tokenizer *tok, int vocab_size,
                                          const int32_t *eos_ids, int n_eos,
                                          struct pl_grammar_vocab **out, struct pl_err *err)
{
    *out = NULL;
    if (vocab_size < 1)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT, "grammar vocab: vocab size %d",
                          vocab_size);
    char **toks = calloc((size_t)vocab_size, sizeof(char *));
    int *lens = calloc((size_t)vocab_size, sizeof(int));
    pl_status st = PL_STATUS_OK;
    if (!toks || !lens) {
        st = pl_err_set(err, PL_STATUS_NO_MEMORY, "grammar vocab: out of memory");
        goto out;
    }
    for (int i = 0; i < vocab_size; i++) {
        lens[i] = -1;
        if (!pl_tokenizer_has_id(tok, i) || pl_tokenizer_is_special(tok, i))
            continue;
        char small[256];
        int n = pl_tokenizer_token_bytes(tok, i, small, (int)sizeof(small));
        if (n <= 0)
            continue;
        toks[i] = malloc((size_t)n);
        if (!toks[i]) {
            st = pl_err_set(err, PL_STATUS_NO_MEMORY, "grammar vocab: out of memory");
            goto out;
        }
        if (n <= (int)sizeof(small))
            memcpy(toks[i], small, (size_t)n);
        else
            pl_tokenizer_token_bytes(tok, i, toks[i], n);
        lens[i] = n;
    }
    st = pl_grammar_vocab_new(vocab_size, (const char *const *)toks, lens, eos_ids, n_eos, out,
                              err);
out:
    for (int i = 0; toks && i < vocab_size; i++)
        free(toks[i]);
    free(toks);
    free(lens);
    return st;
}

/* ---- the cache ---- */

struct snode {
    int32_t pos;
    int32_t parent; /* node index, -1: bottom */
    uint64_t h;     /* hash of the chain */
    bool cn;        /* the whole stack can match nothing more (accepting) */
};

struct level {
    int leaf_end;   /* leaves of this level: [previous level's leaf_end, leaf_end) */
    int node_end;   /* nodes made up to and including this level */
    bool acc;
};

struct cgram {
    struct pl_grammar *g;
    char *key;            /* kind byte + text + NUL + ws */
    size_t key_len;
    uint32_t uid;
    int refs;
    uint64_t last_use;
};

struct mslot {
    uint64_t k1, k2;
    uint32_t uid;
    bool used;
    uint64_t last_use;
};

struct pl_grammar_cache {
    const struct pl_grammar_vocab *v;
    struct cgram **grams; /* [n_grams]: entries stay put (matchers point at them) */
    int n_grams, cap_grams;
    int max_grams;        /* grammars kept that no matcher uses */
    uint32_t next_uid;
    uint64_t tick;
    /* mask cache: n_msets sets of MASK_WAYS slots */
    struct mslot *slots;
    uint32_t *masks;      /* [n_slots][W] */
    int n_msets;
    size_t W;
    /* scratch */
    struct snode *nodes;
    int n_nodes;
    int32_t *leaves;
    int n_leaves, cap_leaves;
    struct level *levels; /* [max_len + 2] */
    uint64_t *tmp;        /* [MAX_LEAVES_PER_LEVEL] */
    const struct pl_grammar *G; /* the grammar of the current operation */
    bool overflow;
    uint64_t hits, misses;
};

struct pl_grammar_matcher {
    struct pl_grammar_cache *c;
    struct cgram *cg;
    int32_t *state;  /* per stack: depth, then positions bottom to top */
    int state_len, state_cap;
    int n_stacks;
    bool acc;
    bool ended;      /* eos was accepted */
    uint64_t k1, k2; /* the state's key */
};

pl_status pl_grammar_cache_new(const struct pl_grammar_vocab *v, int max_grams,
                               struct pl_grammar_cache **out, struct pl_err *err)
{
    *out = NULL;
    struct pl_grammar_cache *c = calloc(1, sizeof(*c));
    if (!c)
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "grammar cache: out of memory");
    c->v = v;
    c->max_grams = max_grams > 0 ? max_grams : 64;
    c->W = PL_GRAMMAR_MASK_WORDS(v->n_tokens);
    /* about 32 MiB of masks, at least 64 sets */
    size_t budget = (size_t)32 << 20;
    size_t n_slots = budget / (c->W * 4);
    if (n_slots < 64 * MASK_WAYS)
        n_slots = 64 * MASK_WAYS;
    if (n_slots > 16384)
        n_slots = 16384;
    c->n_msets = (int)(n_slots / MASK_WAYS);
    n_slots = (size_t)c->n_msets * MASK_WAYS;
    c->slots = calloc(n_slots, sizeof(*c->slots));
    c->masks = malloc(n_slots * c->W * sizeof(uint32_t));
    c->nodes = malloc((size_t)NODE_CAP * sizeof(*c->nodes));
    c->cap_leaves = MAX_LEAVES_PER_LEVEL * (v->max_len + 2);
    c->leaves = malloc((size_t)c->cap_leaves * sizeof(int32_t));
    c->levels = malloc((size_t)(v->max_len + 2) * sizeof(*c->levels));
    c->tmp = malloc(MAX_LEAVES_PER_LEVEL * sizeof(uint64_t));
    c->next_uid = 1;
    if (!c->slots || !c->masks || !c->nodes || !c->leaves || !c->levels || !c->tmp) {
        pl_grammar_cache_free(c);
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "grammar cache: out of memory");
    }
    *out = c;
    return PL_STATUS_OK;
}

void pl_grammar_cache_free(struct pl_grammar_cache *c)
{
    if (!c)
        return;
    for (int i = 0; i < c->n_grams; i++) {
        pl_grammar_free(c->grams[i]->g);
        free(c->grams[i]->key);
        free(c->grams[i]);
    }
    free(c->grams);
    free(c->slots);
    free(c->masks);
    free(c->nodes);
    free(c->leaves);
    free(c->levels);
    free(c->tmp);
    free(c);
}

/* ---- the automaton ---- */

static inline uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x;
}

static int new_node(struct pl_grammar_cache *c, int32_t pos, int32_t parent)
{
    if (c->n_nodes >= NODE_CAP) {
        c->overflow = true;
        return -1;
    }
    int n = c->n_nodes++;
    c->nodes[n].pos = pos;
    c->nodes[n].parent = parent;
    uint64_t ph = parent >= 0 ? c->nodes[parent].h : 0x5bd1e9955bd1e995ull;
    c->nodes[n].h = mix64(ph * 0x9e3779b97f4a7c15ull + (uint64_t)pos + 1);
    c->nodes[n].cn = c->G->tail_nullable[pos] && (parent < 0 || c->nodes[parent].cn);
    return n;
}

static bool first_empty(const struct pl_grammar *G, int32_t pos)
{
    const uint32_t *f = G->first[pos];
    return !(f[0] | f[1] | f[2] | f[3] | f[4] | f[5] | f[6] | f[7]);
}

/*
 * Adds the stack whose top is node as a leaf of the level being built (leaves from
 * `first`), without duplicates. A top that can consume no byte is popped when the
 * rest of its alternative can be empty (down to an empty stack: *acc), else dropped.
 * *acc is also set when the whole stack can match nothing more.
 */
static void add_leaf(struct pl_grammar_cache *c, int first, int node, bool *acc)
{
    const struct pl_grammar *G = c->G;
    while (first_empty(G, c->nodes[node].pos)) {
        if (!G->tail_nullable[c->nodes[node].pos])
            return;
        node = c->nodes[node].parent;
        if (node < 0) {
            *acc = true;
            return;
        }
    }
    if (c->nodes[node].cn)
        *acc = true;
    uint64_t h = c->nodes[node].h;
    for (int i = first; i < c->n_leaves; i++)
        if (c->nodes[c->leaves[i]].h == h)
            return;
    if (c->n_leaves - first >= MAX_LEAVES_PER_LEVEL || c->n_leaves >= c->cap_leaves) {
        c->overflow = true;
        return;
    }
    c->leaves[c->n_leaves++] = node;
}

/*
 * Consumes byte b from the stack whose top is node, adding the resulting stacks as
 * leaves. Stacks stay lazy: a reference is expanded only into the alternatives whose
 * first bytes include b. exit_ok: the rest of node's alternative may be skipped (when
 * it can be empty) to consume b in the parent; false for an alternative just entered,
 * whose skipping is the enclosing reference's (rule_nullable) case, so that no
 * derivation is walked twice.
 */
static void step(struct pl_grammar_cache *c, int node, unsigned b, bool exit_ok, int first,
                 bool *acc, int depth)
{
    const struct pl_grammar *G = c->G;
    if (depth > MAX_EXPAND_DEPTH) {
        c->overflow = true;
        return;
    }
    int32_t p = c->nodes[node].pos;
    int parent = c->nodes[node].parent;
    if (exit_ok && G->tail_nullable[p] && parent >= 0)
        step(c, parent, b, true, first, acc, depth + 1);
    if (!gr_set_has(G->first[p], b))
        return;
    struct gr_elem e = G->el[p];
    if (e.kind == GR_BYTES) {
        if (G->el[p + 1].kind == GR_END) {
            if (parent < 0)
                *acc = true;
            else
                add_leaf(c, first, parent, acc);
            return;
        }
        int n = new_node(c, p + 1, parent);
        if (n >= 0)
            add_leaf(c, first, n, acc);
        return;
    }
    int32_t cont = p + 1;
    bool tail = G->el[cont].kind == GR_END;
    if (!tail && G->rule_nullable[e.arg] && gr_set_has(G->first[cont], b)) {
        int n = new_node(c, cont, parent);
        if (n >= 0)
            step(c, n, b, false, first, acc, depth + 1);
    }
    int base = parent;
    for (int a = G->rule_alt0[e.arg]; a < G->rule_alt0[e.arg + 1]; a++) {
        if (!gr_set_has(G->first[G->alt_start[a]], b))
            continue;
        if (base == parent && !tail && (base = new_node(c, cont, parent)) < 0)
            return;
        int child = new_node(c, G->alt_start[a], base);
        if (child < 0)
            return;
        step(c, child, b, false, first, acc, depth + 1);
    }
}

/* Builds level d + 1 from level d by byte b. */
static void advance(struct pl_grammar_cache *c, int d, unsigned b)
{
    int from = d > 0 ? c->levels[d - 1].leaf_end : 0;
    int to = c->levels[d].leaf_end;
    int first = c->n_leaves;
    bool acc = false;
    for (int i = from; i < to; i++)
        step(c, c->leaves[i], b, true, first, &acc, 0);
    c->levels[d + 1].leaf_end = c->n_leaves;
    c->levels[d + 1].node_end = c->n_nodes;
    c->levels[d + 1].acc = acc;
}

static int level_size(const struct pl_grammar_cache *c, int d)
{
    return c->levels[d].leaf_end - (d > 0 ? c->levels[d - 1].leaf_end : 0);
}

static void truncate_to(struct pl_grammar_cache *c, int d)
{
    c->n_leaves = c->levels[d].leaf_end;
    c->n_nodes = c->levels[d].node_end;
}

/* Rebuilds m's state as level 0 of the scratch. */
static void load(struct pl_grammar_cache *c, const struct pl_grammar_matcher *m)
{
    c->G = m->cg->g;
    c->n_nodes = 0;
    c->n_leaves = 0;
    c->overflow = false;
    const int32_t *s = m->state;
    for (int k = 0; k < m->n_stacks; k++) {
        int depth = *s++;
        int parent = -1;
        for (int i = 0; i < depth; i++)
            parent = new_node(c, s[i], parent);
        s += depth;
        if (parent >= 0) {
            bool acc = false;
            add_leaf(c, 0, parent, &acc);
        }
    }
    c->levels[0].leaf_end = c->n_leaves;
    c->levels[0].node_end = c->n_nodes;
    c->levels[0].acc = m->acc;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Stores level d of the scratch as m's state (grows m's buffer only when needed). */
static bool store(struct pl_grammar_cache *c, struct pl_grammar_matcher *m, int d)
{
    int from = d > 0 ? c->levels[d - 1].leaf_end : 0, to = c->levels[d].leaf_end;
    int need = 0;
    for (int i = from; i < to; i++)
        for (int n = c->leaves[i]; n >= 0; n = c->nodes[n].parent)
            need++;
    need += to - from;
    if (need > m->state_cap || !m->state) {
        int cap = need * 2 > 64 ? need * 2 : 64;
        int32_t *s = realloc(m->state, (size_t)cap * sizeof(int32_t));
        if (!s)
            return false;
        m->state = s;
        m->state_cap = cap;
    }
    int32_t *s = m->state;
    int nh = 0;
    for (int i = from; i < to; i++) {
        int depth = 0;
        for (int n = c->leaves[i]; n >= 0; n = c->nodes[n].parent)
            depth++;
        *s++ = depth;
        int k = depth;
        for (int n = c->leaves[i]; n >= 0; n = c->nodes[n].parent)
            s[--k] = c->nodes[n].pos;
        s += depth;
        c->tmp[nh++] = c->nodes[c->leaves[i]].h;
    }
    m->state_len = (int)(s - m->state);
    m->n_stacks = to - from;
    m->acc = c->levels[d].acc;
    qsort(c->tmp, (size_t)nh, sizeof(uint64_t), cmp_u64);
    uint64_t k1 = 0x243f6a8885a308d3ull ^ (uint64_t)m->acc, k2 = 0x13198a2e03707344ull + m->acc;
    for (int i = 0; i < nh; i++) {
        k1 = mix64(k1 ^ c->tmp[i]);
        k2 = mix64(k2 + c->tmp[i] * 0xff51afd7ed558ccdull);
    }
    m->k1 = k1;
    m->k2 = k2;
    return true;
}

/* ---- matchers ---- */

static struct cgram *get_grammar(struct pl_grammar_cache *c, enum pl_constraint_kind kind,
                                 const char *text, const char *ws, struct pl_err *err)
{
    size_t tl = text ? strlen(text) : 0, wl = ws ? strlen(ws) : 0;
    size_t kl = 1 + tl + 1 + wl + 1;
    char *key = malloc(kl);
    if (!key) {
        pl_err_set(err, PL_STATUS_NO_MEMORY, "grammar: out of memory");
        return NULL;
    }
    key[0] = (char)('0' + (int)kind);
    if (tl)
        memcpy(key + 1, text, tl);
    key[1 + tl] = 0;
    key[1 + tl + 1] = ws ? 1 : 0; /* NULL and "" differ */
    if (wl)
        memcpy(key + 2 + tl, ws, wl);
    kl = 2 + tl + wl;
    c->tick++;
    for (int i = 0; i < c->n_grams; i++) {
        struct cgram *g = c->grams[i];
        if (g->key_len == kl && !memcmp(g->key, key, kl)) {
            free(key);
            g->last_use = c->tick;
            return g;
        }
    }
    struct pl_grammar *G;
    if (pl_grammar_compile(kind, text, ws, &G, err) != PL_STATUS_OK) {
        free(key);
        return NULL;
    }
    /* past max_grams unused grammars, the least recently used unused one goes */
    int n_unused = 0, victim = -1;
    for (int i = 0; i < c->n_grams; i++) {
        if (c->grams[i]->refs)
            continue;
        n_unused++;
        if (victim < 0 || c->grams[i]->last_use < c->grams[victim]->last_use)
            victim = i;
    }
    if (n_unused >= c->max_grams && victim >= 0) {
        struct cgram *old = c->grams[victim];
        pl_grammar_free(old->g);
        free(old->key);
        free(old);
        c->grams[victim] = c->grams[--c->n_grams];
    }
    struct cgram *g = calloc(1, sizeof(*g));
    if (g && c->n_grams == c->cap_grams) {
        int cap = c->cap_grams ? c->cap_grams * 2 : 16;
        struct cgram **a = realloc(c->grams, (size_t)cap * sizeof(*a));
        if (a) {
            c->grams = a;
            c->cap_grams = cap;
        } else {
            free(g);
            g = NULL;
        }
    }
    if (!g) {
        pl_grammar_free(G);
        free(key);
        pl_err_set(err, PL_STATUS_NO_MEMORY, "grammar: out of memory");
        return NULL;
    }
    c->grams[c->n_grams++] = g;
    g->g = G;
    g->key = key;
    g->key_len = kl;
    g->uid = c->next_uid++;
    g->refs = 0;
    g->last_use = c->tick;
    return g;
}

pl_status pl_grammar_matcher_new(struct pl_grammar_cache *c, enum pl_constraint_kind kind,
                                 const char *text, const char *ws,
                                 struct pl_grammar_matcher **out, struct pl_err *err)
{
    *out = NULL;
    struct cgram *cg = get_grammar(c, kind, text, ws, err);
    if (!cg)
        return err ? err->status : PL_STATUS_INVALID_ARGUMENT;
    struct pl_grammar_matcher *m = calloc(1, sizeof(*m));
    if (!m)
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "grammar: out of memory");
    m->c = c;
    m->cg = cg;
    /* the start state: root's alternatives, expanded */
    const struct pl_grammar *G = cg->g;
    c->G = G;
    c->n_nodes = 0;
    c->n_leaves = 0;
    c->overflow = false;
    bool acc = G->rule_nullable[G->root];
    for (int a = G->rule_alt0[G->root]; a < G->rule_alt0[G->root + 1]; a++) {
        int n = new_node(c, G->alt_start[a], -1);
        if (n >= 0)
            add_leaf(c, 0, n, &acc);
    }
    c->levels[0].leaf_end = c->n_leaves;
    c->levels[0].node_end = c->n_nodes;
    c->levels[0].acc = acc;
    if (!store(c, m, 0)) {
        free(m);
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "grammar: out of memory");
    }
    cg->refs++;
    *out = m;
    return PL_STATUS_OK;
}

pl_status pl_grammar_matcher_clone(const struct pl_grammar_matcher *m,
                                   struct pl_grammar_matcher **out, struct pl_err *err)
{
    *out = NULL;
    struct pl_grammar_matcher *n = malloc(sizeof(*n));
    if (!n)
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "grammar: out of memory");
    *n = *m;
    n->state = malloc((size_t)(m->state_cap ? m->state_cap : 1) * sizeof(int32_t));
    if (!n->state) {
        free(n);
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "grammar: out of memory");
    }
    memcpy(n->state, m->state, (size_t)m->state_len * sizeof(int32_t));
    n->cg->refs++;
    *out = n;
    return PL_STATUS_OK;
}

void pl_grammar_matcher_free(struct pl_grammar_matcher *m)
{
    if (!m)
        return;
    m->cg->refs--;
    free(m->state);
    free(m);
}

bool pl_grammar_matcher_is_accepting(const struct pl_grammar_matcher *m)
{
    return m->acc && !m->ended;
}

bool pl_grammar_matcher_is_complete(const struct pl_grammar_matcher *m)
{
    return m->ended || (m->acc && m->n_stacks == 0);
}

bool pl_grammar_matcher_accept_bytes(struct pl_grammar_matcher *m, const char *s, size_t n)
{
    struct pl_grammar_cache *c = m->c;
    if (m->ended)
        return n == 0;
    if (n > (size_t)c->v->max_len + 1) {
        /* longer than the scratch levels: in pieces */
        size_t half = n / 2;
        struct pl_grammar_matcher save = *m;
        int32_t *copy = malloc((size_t)(m->state_len ? m->state_len : 1) * sizeof(int32_t));
        if (!copy)
            return false;
        memcpy(copy, m->state, (size_t)m->state_len * sizeof(int32_t));
        bool ok = pl_grammar_matcher_accept_bytes(m, s, half) &&
                  pl_grammar_matcher_accept_bytes(m, s + half, n - half);
        if (!ok) {
            memcpy(m->state, copy, (size_t)save.state_len * sizeof(int32_t));
            m->state_len = save.state_len;
            m->n_stacks = save.n_stacks;
            m->acc = save.acc;
            m->k1 = save.k1;
            m->k2 = save.k2;
        }
        free(copy);
        return ok;
    }
    load(c, m);
    for (size_t i = 0; i < n; i++) {
        advance(c, (int)i, (unsigned char)s[i]);
        if (level_size(c, (int)i + 1) == 0 && !(i + 1 == n && c->levels[i + 1].acc))
            return false;
    }
    return store(c, m, (int)n);
}

bool pl_grammar_matcher_accept_token(struct pl_grammar_matcher *m, int32_t token)
{
    const struct pl_grammar_vocab *v = m->c->v;
    if (m->ended || token < 0 || token >= v->n_tokens)
        return false;
    for (int i = 0; i < v->n_eos; i++) {
        if (v->eos[i] == token) {
            if (!m->acc)
                return false;
            m->ended = true;
            return true;
        }
    }
    if (v->id_len[token] <= 0)
        return false;
    return pl_grammar_matcher_accept_bytes(m, v->bytes + v->id_off[token],
                                           (size_t)v->id_len[token]);
}

/* The walk over the sorted vocabulary from the loaded level 0. */
static void compute_mask(struct pl_grammar_cache *c, bool acc, uint32_t *mask)
{
    const struct pl_grammar_vocab *v = c->v;
    memset(mask, 0, c->W * sizeof(uint32_t));
    int valid = 0;
    if (level_size(c, 0) > 0) {
        for (int i = 0; i < v->n_sorted;) {
            int len = v->sorted_len[i];
            const unsigned char *t = (const unsigned char *)v->sbytes + v->sorted_off[i];
            int L = v->lcp[i] < valid ? v->lcp[i] : valid;
            truncate_to(c, L);
            int d = L;
            bool ok = true;
            while (d < len) {
                advance(c, d, t[d]);
                if (level_size(c, d + 1) == 0 && !(d + 1 == len && c->levels[d + 1].acc)) {
                    ok = false;
                    break;
                }
                d++;
            }
            if (ok) {
                int32_t id = v->sorted_id[i];
                mask[id >> 5] |= 1u << (id & 31);
                valid = len;
                i++;
            } else {
                /* tokens after i sharing t[0..d] fail too */
                valid = d;
                i++;
                while (i < v->n_sorted && v->lcp[i] > d)
                    i++;
            }
        }
    }
    if (acc)
        for (int i = 0; i < v->n_eos; i++)
            if (v->eos[i] >= 0 && v->eos[i] < v->n_tokens)
                mask[v->eos[i] >> 5] |= 1u << (v->eos[i] & 31);
}

void pl_grammar_matcher_fill_mask(struct pl_grammar_matcher *m, uint32_t *mask)
{
    struct pl_grammar_cache *c = m->c;
    if (m->ended) {
        memset(mask, 0, c->W * sizeof(uint32_t));
        return;
    }
    c->tick++;
    struct mslot *set = &c->slots[(m->k1 ^ m->cg->uid) % (uint64_t)c->n_msets * MASK_WAYS];
    int victim = 0;
    for (int w = 0; w < MASK_WAYS; w++) {
        struct mslot *s = &set[w];
        if (s->used && s->k1 == m->k1 && s->k2 == m->k2 && s->uid == m->cg->uid) {
            s->last_use = c->tick;
            c->hits++;
            memcpy(mask, c->masks + (size_t)(s - c->slots) * c->W, c->W * sizeof(uint32_t));
            return;
        }
        if (!s->used || (set[victim].used && s->last_use < set[victim].last_use))
            victim = w;
    }
    c->misses++;
    load(c, m);
    struct mslot *s = &set[victim];
    uint32_t *dst = c->masks + (size_t)(s - c->slots) * c->W;
    compute_mask(c, m->acc, dst);
    memcpy(mask, dst, c->W * sizeof(uint32_t));
    if (c->overflow) {
        /* a mask computed with dropped stacks may refuse valid tokens: never cache it */
        s->used = false;
        PL_WARN("grammar: the automaton's scratch overflowed (a very ambiguous grammar); "
                "some tokens were refused");
        return;
    }
    s->used = true;
    s->k1 = m->k1;
    s->k2 = m->k2;
    s->uid = m->cg->uid;
    s->last_use = c->tick;
}

void pl_grammar_cache_stats(const struct pl_grammar_cache *c, uint64_t *hits, uint64_t *misses)
{
    *hits = c->hits;
    *misses = c->misses;
}
