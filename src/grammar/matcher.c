/*
 * matcher.c -- the pushdown automaton over bytes, token masks and their caches.
 *
 * Owns: struct pl_grammar_vocab, struct pl_grammar_cache, struct pl_grammar_matcher,
 * and the per-position token tables (struct ptab).
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
 * Masks, three layers:
 *
 *   fill_mask --> the mask cache (4-way set-associative, keyed by the state)
 *                   | miss
 *                   v
 *                 per stack of the state, the table of its top frames (built once
 *                 per key, kept in an LRU under a byte budget):
 *                   mask  = OR of the tables' ACC tokens
 *                         | OR of their END tokens, where the stack below can end
 *                         | the UNC tokens that a walk from the whole state accepts
 *                   (a table whose build overflowed: the full walk instead)
 *
 * The full walk (the reference, and how tables are built): the vocabulary is
 * sorted by bytes with each token's longest common prefix with the previous one,
 * which walks it as a trie: per prefix length one level of stacks; a token reuses
 * its predecessor's levels up to their common prefix, and when a byte kills every
 * stack, all following tokens sharing that prefix are skipped.
 *
 * Position tables (xgrammar's context-independent tokens). What a token does to a
 * stack depends on the frames below its top only once its bytes leave the top's
 * alternative. So the table of a key -- the positions of a stack's top d frames,
 * d = 1 for most -- is built by a full walk from the stack of those d frames over a
 * sentinel node that stands for any stack below: every step into the sentinel is
 * recorded instead of taken. Per token:
 *   ACC  some path consumes all its bytes above the sentinel: allowed on any stack;
 *   UNC  some path reaches the sentinel with bytes to go, the next one in follow[]
 *        of the deepest frame's rule (the only bytes a stack below can take first):
 *        the stack decides;
 *   END  neither, and some path consumes exactly all its bytes as it reaches the
 *        sentinel: allowed iff the stack below can end there (the pops add_leaf
 *        would make succeed);
 *   the rest is refused on any stack.
 * A state's mask is then exact: a token is allowed iff some stack allows it, ACC and
 * END decide per stack, and the UNC tokens of all tables (minus those already
 * allowed) are walked, in sorted order, from the whole state. A table that leaves
 * more than REFINE_UNC tokens uncertain (inside a string, every token holding a
 * quote; after a digit, every token starting with a space) is refined: stacks with
 * more frames use the key one frame deeper (up to CTX_MAX), whose region covers the
 * closing quote or the rest of the object. When the caller has that deeper key, the
 * build stops at REFINE_UNC uncertain tokens (a stub: the key is only a pointer on).
 * Invariants:
 *   1. a mask from tables equals the full walk's (tests/unit/test_grammar.c checks
 *      both against accepting each token on a copy of the matcher);
 *   2. a table is built from the grammar and the vocabulary alone, so it holds for
 *      every stack with those top frames, as long as its grammar lives;
 *   3. tables take at most the cache's table budget (64 MiB by default) and
 *      TABLE_MAX entries, plus those of the state being computed; least recently
 *      used ones go first.
 * A table's sets are stored as bitmasks or sorted lists, whichever is smaller.
 * Building a table allocates it (once per key); the rest of the mask computation
 * allocates nothing.
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
#define NO_CTX_NODE (-2)                 /* the sentinel's index outside table builds */
#define TABLE_BUDGET ((size_t)64 << 20)  /* bytes of position tables, by default */
#define TABLE_MAX (1 << 16)              /* position tables held, at most */
#define TABLE_BUCKETS (1 << 14)          /* their hash table's chains */
#define CTX_MAX 4                        /* stack frames a table's key covers, at most */
#define REFINE_UNC 256                   /* more uncertain tokens: key one frame deeper (default) */

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
    bool ctx;       /* table builds: some path stepped into the sentinel with a follow
                     * byte at this level or before (the stack below decides) */
};

struct cgram {
    struct pl_grammar *g;
    char *key;            /* kind byte + text + NUL + ws */
    size_t key_len;
    uint32_t uid;
    int refs;
    uint64_t last_use;
};

/*
 * The tokens that the top `depth` frames of a stack decide (see the top of the file),
 * keyed by the grammar and those frames' positions. One allocation: the struct, then
 * acc, end and unc. acc and end are bitmasks by token id ([W] words) or ascending id
 * lists; unc is a bitmask by sorted-vocabulary index ([SW] words) or an ascending list
 * of sorted indices: whichever is smaller.
 */
struct ptab {
    struct ptab *newer, *older; /* the cache's LRU list */
    struct ptab *next;          /* the hash chain */
    uint64_t hash;
    uint64_t op;                /* the last mask computation that used it */
    const struct cgram *cg;
    int depth;                  /* 1..CTX_MAX */
    int32_t key[CTX_MAX];       /* the frames' positions, top first */
    bool full_walk;             /* the build overflowed: states using it take the full walk */
    bool refine;                /* many uncertain tokens: deeper stacks use a deeper key */
    bool stub;                  /* refine, and the build stopped there: no sets */
    bool acc_is_mask, end_is_mask, unc_is_mask;
    int32_t n_acc, n_end, n_unc;
    size_t bytes;               /* of this allocation */
    const uint32_t *acc, *end, *unc;
    uint32_t data[];
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
    enum pl_grammar_mask_mode mode;
    /* position tables */
    struct ptab **buckets; /* [TABLE_BUCKETS] */
    struct ptab *lru_newest, *lru_oldest;
    size_t n_tabs, tab_bytes, tab_budget;
    int refine_unc;       /* a table with more uncertain tokens is refined */
    uint64_t op;          /* mask computations by tables so far */
    uint64_t n_tab_built, n_tab_evicted, n_unc_walked;
    uint64_t n_overflows; /* operations whose scratch overflowed */
    size_t SW;            /* words of a bitmask over sorted-vocabulary indices */
    /* scratch */
    struct snode *nodes;
    int n_nodes;
    int32_t *leaves;
    int n_leaves, cap_leaves;
    struct level *levels; /* [max_len + 2] */
    uint64_t *tmp;        /* [MAX_LEAVES_PER_LEVEL] */
    struct ptab **used;   /* [MAX_LEAVES_PER_LEVEL] the distinct tables of a state's stacks */
    bool *used_alive;     /* [MAX_LEAVES_PER_LEVEL] some stack below that table's frames can end */
    int32_t *b_acc, *b_end, *b_unc; /* [n_sorted] a table being built */
    uint32_t *unc_bits;   /* [SW] a state's uncertain tokens; all zero between operations */
    const struct pl_grammar *G; /* the grammar of the current operation */
    bool overflow;
    int ctx_node;         /* table builds: the sentinel node; else NO_CTX_NODE */
    const uint32_t *follow; /* table builds: follow[] of the position's rule */
    bool ctx_hit;         /* table builds: the current byte stepped into the sentinel */
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
    c->used = malloc(MAX_LEAVES_PER_LEVEL * sizeof(*c->used));
    c->used_alive = malloc(MAX_LEAVES_PER_LEVEL * sizeof(bool));
    c->buckets = calloc(TABLE_BUCKETS, sizeof(*c->buckets));
    size_t ns = (size_t)(v->n_sorted ? v->n_sorted : 1);
    c->b_acc = malloc(ns * sizeof(int32_t));
    c->b_end = malloc(ns * sizeof(int32_t));
    c->b_unc = malloc(ns * sizeof(int32_t));
    c->SW = (ns + 31) / 32;
    c->unc_bits = calloc(c->SW, sizeof(uint32_t));
    c->tab_budget = TABLE_BUDGET;
    c->refine_unc = REFINE_UNC;
    c->mode = PL_GRAMMAR_MASK_TABLES;
    c->ctx_node = NO_CTX_NODE;
    c->next_uid = 1;
    if (!c->slots || !c->masks || !c->nodes || !c->leaves || !c->levels || !c->tmp ||
        !c->used || !c->used_alive || !c->buckets || !c->b_acc || !c->b_end || !c->b_unc ||
        !c->unc_bits) {
        pl_grammar_cache_free(c);
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "grammar cache: out of memory");
    }
    *out = c;
    return PL_STATUS_OK;
}

static void free_cgram(struct pl_grammar_cache *c, struct cgram *cg);

void pl_grammar_cache_free(struct pl_grammar_cache *c)
{
    if (!c)
        return;
    for (int i = 0; i < c->n_grams; i++)
        free_cgram(c, c->grams[i]);
    free(c->grams);
    free(c->slots);
    free(c->masks);
    free(c->nodes);
    free(c->leaves);
    free(c->levels);
    free(c->tmp);
    free(c->used);
    free(c->used_alive);
    free(c->buckets);
    free(c->b_acc);
    free(c->b_end);
    free(c->b_unc);
    free(c->unc_bits);
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
 * *acc is also set when the whole stack can match nothing more. In a table build,
 * popping down to the sentinel leaves the sentinel as the leaf.
 */
static void add_leaf(struct pl_grammar_cache *c, int first, int node, bool *acc)
{
    const struct pl_grammar *G = c->G;
    /* a table build's sentinel stays as a leaf: the stack below takes over from there */
    while (node != c->ctx_node && first_empty(G, c->nodes[node].pos)) {
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
    if (node == c->ctx_node) {
        /* a table build: the stack below would take b; only a follow byte can matter */
        if (gr_set_has(c->follow, b))
            c->ctx_hit = true;
        return;
    }
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
    c->ctx_hit = false;
    for (int i = from; i < to; i++)
        step(c, c->leaves[i], b, true, first, &acc, 0);
    c->levels[d + 1].leaf_end = c->n_leaves;
    c->levels[d + 1].node_end = c->n_nodes;
    c->levels[d + 1].acc = acc;
    c->levels[d + 1].ctx = c->levels[d].ctx || c->ctx_hit;
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

/* Walks token bytes t[from..len) on the levels kept up to depth from (the token shares
 * t[0..from) with the previous one walked): len when the token can come (every stack
 * dying on its last byte is fine when that byte completes an accepting state), else the
 * depth at which every stack died (tokens sharing t[0..depth] fail too). */
static int walk_token(struct pl_grammar_cache *c, const unsigned char *t, int from, int len)
{
    truncate_to(c, from);
    for (int d = from; d < len; d++) {
        advance(c, d, t[d]);
        if (level_size(c, d + 1) == 0 && !(d + 1 == len && c->levels[d + 1].acc))
            return d;
    }
    return len;
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
    c->levels[0].ctx = false;
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
        free_cgram(c, c->grams[victim]);
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
    c->levels[0].ctx = false;
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
        if (level_size(c, (int)i + 1) == 0 && !(i + 1 == n && c->levels[i + 1].acc)) {
            c->n_overflows += c->overflow;
            return false;
        }
    }
    c->n_overflows += c->overflow;
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
            const int d = walk_token(c, t, L, len);
            const bool ok = d == len;
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

/* ---- position tables ---- */

static void lru_unlink(struct pl_grammar_cache *c, struct ptab *t)
{
    if (t->newer)
        t->newer->older = t->older;
    else
        c->lru_newest = t->older;
    if (t->older)
        t->older->newer = t->newer;
    else
        c->lru_oldest = t->newer;
    t->newer = t->older = NULL;
}

static void lru_push(struct pl_grammar_cache *c, struct ptab *t)
{
    t->newer = NULL;
    t->older = c->lru_newest;
    if (c->lru_newest)
        c->lru_newest->newer = t;
    else
        c->lru_oldest = t;
    c->lru_newest = t;
}

static void free_table(struct pl_grammar_cache *c, struct ptab *t)
{
    lru_unlink(c, t);
    struct ptab **pp = &c->buckets[t->hash & (TABLE_BUCKETS - 1)];
    while (*pp != t)
        pp = &(*pp)->next;
    *pp = t->next;
    c->n_tabs--;
    c->tab_bytes -= t->bytes;
    free(t);
}

static void free_cgram(struct pl_grammar_cache *c, struct cgram *cg)
{
    for (struct ptab *t = c->lru_newest, *older; t; t = older) {
        older = t->older;
        if (t->cg == cg)
            free_table(c, t);
    }
    pl_grammar_free(cg->g);
    free(cg->key);
    free(cg);
}

/* Least recently used tables go until the budget holds. Tables used by the mask
 * computation under way (at the newest end of the list) stay. */
static void evict_tables(struct pl_grammar_cache *c)
{
    while ((c->tab_bytes > c->tab_budget || c->n_tabs > TABLE_MAX) && c->lru_oldest &&
           c->lru_oldest->op != c->op) {
        free_table(c, c->lru_oldest);
        c->n_tab_evicted++;
    }
}

/* Words of a set of n members out of `universe` (words of its bitmask): a bitmask, or a
 * list when that is smaller. */
static size_t set_words(int n, size_t universe, bool *is_mask)
{
    *is_mask = (size_t)n >= universe;
    return *is_mask ? universe : (size_t)n;
}

static const uint32_t *put_set(uint32_t **at, const int32_t *members, int n, bool is_mask,
                               size_t universe)
{
    uint32_t *p = *at;
    if (is_mask) {
        memset(p, 0, universe * sizeof(uint32_t));
        for (int i = 0; i < n; i++)
            p[members[i] >> 5] |= 1u << (members[i] & 31);
        *at += universe;
    } else {
        memcpy(p, members, (size_t)n * sizeof(int32_t));
        *at += n;
    }
    return p;
}

static int cmp_i32(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return x < y ? -1 : x > y;
}

/*
 * Builds the table of the frames key[0, depth) (top first): the full walk from that
 * stack over a sentinel node (the top of the file). stub_ok: the caller has a deeper
 * key to use if this one leaves too many tokens uncertain, so the walk may stop there
 * (a stub). NULL when out of memory. Uses the scratch (nothing else may be loaded).
 */
static struct ptab *build_table(struct pl_grammar_cache *c, const struct cgram *cg,
                                const int32_t *key, int depth, uint64_t hash, bool stub_ok)
{
    const struct pl_grammar *G = cg->g;
    const struct pl_grammar_vocab *v = c->v;
    c->G = G;
    c->n_nodes = 0;
    c->n_leaves = 0;
    c->overflow = false;
    int sentinel = new_node(c, key[depth - 1], -1);
    c->nodes[sentinel].cn = false;
    c->ctx_node = sentinel;
    c->follow = G->follow[G->el_rule[key[depth - 1]]];
    int top = sentinel;
    for (int k = depth - 1; k >= 0; k--)
        top = new_node(c, key[k], top);
    bool acc = false;
    add_leaf(c, 0, top, &acc);
    c->levels[0] = (struct level){c->n_leaves, c->n_nodes, false, false};
    int n_acc = 0, n_end = 0, n_unc = 0, valid = 0;
    bool stub = false;
    for (int i = 0; i < v->n_sorted && !c->overflow;) {
        if (stub_ok && depth < CTX_MAX && n_unc > c->refine_unc) {
            stub = true;
            break;
        }
        int len = v->sorted_len[i];
        const unsigned char *t = (const unsigned char *)v->sbytes + v->sorted_off[i];
        int L = v->lcp[i] < valid ? v->lcp[i] : valid;
        truncate_to(c, L);
        int d = L;
        while (d < len) {
            advance(c, d, t[d]);
            if (level_size(c, d + 1) == 0)
                break;
            d++;
        }
        if (d == len) {
            bool within = false;
            for (int k = c->levels[len - 1].leaf_end; k < c->levels[len].leaf_end; k++)
                within = within || c->leaves[k] != sentinel;
            if (within)
                c->b_acc[n_acc++] = v->sorted_id[i];
            else if (c->levels[len].ctx)
                c->b_unc[n_unc++] = i;
            else
                c->b_end[n_end++] = v->sorted_id[i]; /* only the sentinel: it just left */
            valid = len;
            i++;
        } else {
            /* nothing lives past t[0..d]: the tokens sharing it are all decided here */
            bool ctx = c->levels[d + 1].ctx;
            valid = d;
            do {
                if (ctx)
                    c->b_unc[n_unc++] = i;
                i++;
            } while (i < v->n_sorted && v->lcp[i] > d);
        }
    }
    c->ctx_node = NO_CTX_NODE;
    bool full_walk = c->overflow;
    c->overflow = false;
    c->n_overflows += full_walk;
    if (full_walk || stub)
        n_acc = n_end = n_unc = 0;
    bool acc_m, end_m, unc_m;
    size_t words = set_words(n_acc, c->W, &acc_m) + set_words(n_end, c->W, &end_m) +
                   set_words(n_unc, c->SW, &unc_m);
    /* lists in ascending order (b_unc already is: sorted indices come in order) */
    if (!acc_m)
        qsort(c->b_acc, (size_t)n_acc, sizeof(int32_t), cmp_i32);
    if (!end_m)
        qsort(c->b_end, (size_t)n_end, sizeof(int32_t), cmp_i32);
    size_t bytes = sizeof(struct ptab) + words * sizeof(uint32_t);
    struct ptab *tb = malloc(bytes);
    if (!tb)
        return NULL;
    *tb = (struct ptab){.hash = hash, .cg = cg, .depth = depth, .full_walk = full_walk,
                        .refine = stub || (n_unc > c->refine_unc && depth < CTX_MAX),
                        .stub = stub, .acc_is_mask = acc_m,
                        .end_is_mask = end_m, .unc_is_mask = unc_m, .n_acc = n_acc,
                        .n_end = n_end, .n_unc = n_unc, .bytes = bytes};
    memcpy(tb->key, key, (size_t)depth * sizeof(int32_t));
    uint32_t *at = tb->data;
    tb->acc = put_set(&at, c->b_acc, n_acc, acc_m, c->W);
    tb->end = put_set(&at, c->b_end, n_end, end_m, c->W);
    tb->unc = put_set(&at, c->b_unc, n_unc, unc_m, c->SW);
    c->n_tab_built++;
    return tb;
}

/* The table of the frames key[0, depth) (top first), built on first use (stub_ok:
 * build_table's); NULL when out of memory. Marks it used by the current mask
 * computation. */
static struct ptab *get_table(struct pl_grammar_cache *c, const struct cgram *cg,
                              const int32_t *key, int depth, bool stub_ok)
{
    uint64_t h = mix64(((uint64_t)cg->uid << 8) + (uint64_t)depth);
    for (int k = 0; k < depth; k++)
        h = mix64(h ^ (uint64_t)(uint32_t)key[k]);
    struct ptab **bucket = &c->buckets[h & (TABLE_BUCKETS - 1)];
    struct ptab *t = *bucket;
    while (t && !(t->hash == h && t->cg == cg && t->depth == depth &&
                  !memcmp(t->key, key, (size_t)depth * sizeof(int32_t))))
        t = t->next;
    if (t && t->stub && !stub_ok) {
        free_table(c, t); /* the sets are needed after all */
        t = NULL;
    }
    if (t) {
        lru_unlink(c, t);
    } else {
        if (!(t = build_table(c, cg, key, depth, h, stub_ok)))
            return NULL;
        t->next = *bucket;
        *bucket = t;
        c->n_tabs++;
        c->tab_bytes += t->bytes;
    }
    lru_push(c, t);
    t->op = c->op;
    evict_tables(c);
    return t;
}

static void or_set(uint32_t *dst, const uint32_t *set, int n, bool is_mask, size_t words)
{
    if (is_mask)
        for (size_t w = 0; w < words; w++)
            dst[w] |= set[w];
    else
        for (int i = 0; i < n; i++)
            dst[set[i] >> 5] |= 1u << (set[i] & 31);
}

/* Can the stack below a top (positions stk[0, n), bottom first) end here? The pops
 * add_leaf makes: down to a position that can consume a byte, or to the bottom. */
static bool alive_below(const struct pl_grammar *G, const int32_t *stk, int n)
{
    for (int i = n - 1; i >= 0; i--) {
        if (!first_empty(G, stk[i]))
            return true;
        if (!G->tail_nullable[stk[i]])
            return false;
    }
    return true;
}

/* The first set bit of bits[0, SW) at or after i; -1 if none. */
static int next_bit(const uint32_t *bits, size_t SW, int i)
{
    size_t w = (size_t)i >> 5;
    if (w >= SW)
        return -1;
    uint32_t x = bits[w] & (~0u << (i & 31));
    while (!x) {
        if (++w >= SW)
            return -1;
        x = bits[w];
    }
    return (int)(w * 32 + (size_t)__builtin_ctz(x));
}

/*
 * The uncertain tokens (c->unc_bits, by sorted index) not yet in mask, walked from the
 * loaded state as a trie, as compute_mask walks the whole vocabulary. Clears unc_bits.
 */
static void walk_uncertain(struct pl_grammar_cache *c, uint32_t *mask)
{
    const struct pl_grammar_vocab *v = c->v;
    int valid = 0, prev = -1;
    for (int i = next_bit(c->unc_bits, c->SW, 0); i >= 0;) {
        int32_t id = v->sorted_id[i];
        if ((mask[id >> 5] >> (id & 31)) & 1u) {
            i = next_bit(c->unc_bits, c->SW, i + 1);
            continue;
        }
        c->n_unc_walked++;
        int len = v->sorted_len[i];
        const unsigned char *t = (const unsigned char *)v->sbytes + v->sorted_off[i];
        /* the levels hold prev's bytes up to valid: reuse what t shares with them */
        int L = 0;
        if (prev == i - 1) {
            L = v->lcp[i] < valid ? v->lcp[i] : valid;
        } else if (prev >= 0) {
            const unsigned char *q = (const unsigned char *)v->sbytes + v->sorted_off[prev];
            int n = valid < len ? valid : len;
            while (L < n && q[L] == t[L])
                L++;
        }
        const int d = walk_token(c, t, L, len);
        const bool ok = d == len;
        prev = i;
        if (ok) {
            mask[id >> 5] |= 1u << (id & 31);
            valid = len;
            i = next_bit(c->unc_bits, c->SW, i + 1);
        } else {
            /* tokens after i sharing t[0..d] fail too */
            valid = d;
            int j = i + 1;
            while (j < v->n_sorted && v->lcp[j] > d)
                j++;
            i = next_bit(c->unc_bits, c->SW, j);
        }
    }
    memset(c->unc_bits, 0, c->SW * sizeof(uint32_t));
}

/*
 * m's mask from its stacks' tables (the top of the file). False when a table is
 * missing (out of memory) or overflowed: the caller walks the whole vocabulary then.
 */
static bool mask_from_tables(struct pl_grammar_matcher *m, uint32_t *mask)
{
    struct pl_grammar_cache *c = m->c;
    const struct pl_grammar *G = m->cg->g;
    memset(mask, 0, c->W * sizeof(uint32_t));
    c->op++;
    /* each stack's table: keyed by its top frame, one frame deeper while the table
     * leaves many tokens to the stack below and the stack has more frames */
    int n_used = 0;
    const int32_t *s = m->state;
    for (int k = 0; k < m->n_stacks; k++) {
        int depth = *s++;
        const int32_t *stk = s;
        s += depth;
        if (depth < 1)
            continue;
        int32_t key[CTX_MAX];
        struct ptab *t = NULL;
        for (int d = 1; d <= depth && d <= CTX_MAX && (!t || t->refine); d++) {
            key[d - 1] = stk[depth - d];
            if (!(t = get_table(c, m->cg, key, d, d < depth)) || t->full_walk)
                return false;
        }
        bool alive = alive_below(G, stk, depth - t->depth);
        int j = 0;
        while (j < n_used && c->used[j] != t)
            j++;
        if (j == n_used) {
            c->used[n_used] = t;
            c->used_alive[n_used++] = alive;
        } else {
            c->used_alive[j] = c->used_alive[j] || alive;
        }
    }
    bool any_unc = false;
    for (int j = 0; j < n_used; j++) {
        const struct ptab *t = c->used[j];
        or_set(mask, t->acc, t->n_acc, t->acc_is_mask, c->W);
        if (c->used_alive[j])
            or_set(mask, t->end, t->n_end, t->end_is_mask, c->W);
        or_set(c->unc_bits, t->unc, t->n_unc, t->unc_is_mask, c->SW);
        any_unc = any_unc || t->n_unc > 0;
    }
    if (any_unc) {
        load(c, m);
        walk_uncertain(c, mask);
    }
    const struct pl_grammar_vocab *v = c->v;
    if (m->acc)
        for (int i = 0; i < v->n_eos; i++)
            if (v->eos[i] >= 0 && v->eos[i] < v->n_tokens)
                mask[v->eos[i] >> 5] |= 1u << (v->eos[i] & 31);
    return true;
}

/* m's mask computed (no cache); c->overflow tells whether stacks were dropped. */
static void compute_state_mask(struct pl_grammar_matcher *m, enum pl_grammar_mask_mode mode,
                               uint32_t *mask)
{
    struct pl_grammar_cache *c = m->c;
    c->overflow = false;
    if (!(mode == PL_GRAMMAR_MASK_TABLES && mask_from_tables(m, mask))) {
        load(c, m);
        compute_mask(c, m->acc, mask);
    }
    c->n_overflows += c->overflow;
}

void pl_grammar_matcher_compute_mask(struct pl_grammar_matcher *m,
                                     enum pl_grammar_mask_mode mode, uint32_t *mask)
{
    if (m->ended) {
        memset(mask, 0, m->c->W * sizeof(uint32_t));
        return;
    }
    compute_state_mask(m, mode, mask);
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
    struct mslot *s = &set[victim];
    uint32_t *dst = c->masks + (size_t)(s - c->slots) * c->W;
    compute_state_mask(m, c->mode, dst);
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

void pl_grammar_cache_set_mask_mode(struct pl_grammar_cache *c, enum pl_grammar_mask_mode mode)
{
    c->mode = mode;
}

void pl_grammar_cache_set_table_limits(struct pl_grammar_cache *c, size_t bytes,
                                       int refine_unc)
{
    c->tab_budget = bytes;
    c->refine_unc = refine_unc;
    c->op++; /* no computation under way: every table may go */
    evict_tables(c);
}

void pl_grammar_cache_table_stats(const struct pl_grammar_cache *c,
                                  struct pl_grammar_table_stats *out)
{
    *out = (struct pl_grammar_table_stats){0};
    out->n_tables = c->n_tabs;
    out->bytes = c->tab_bytes;
    out->n_built = c->n_tab_built;
    out->n_evicted = c->n_tab_evicted;
    out->n_uncertain_walked = c->n_unc_walked;
    out->n_overflows = c->n_overflows;
}

void pl_grammar_cache_stats(const struct pl_grammar_cache *c, uint64_t *hits, uint64_t *misses)
{
    *hits = c->hits;
    *misses = c->misses;
}
