/*
 * block_manager.c -- KV block pool, ref counts, copy-on-write, prefix cache
 * and LRU eviction (see block_manager.h for the model and invariants).
 *
 * Data layout: per-block arrays indexed by block id (ref, where, LRU links,
 * hash, stored token ids), a stack of FREE block ids, a doubly linked LRU list
 * threaded through the per-block links, and a hash map from block hash to
 * block id. Everything is allocated in pl_block_manager_new; no operation
 * after that allocates.
 */
#include "engine/block_manager.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

enum block_where { BLOCK_FREE, BLOCK_CACHED_FREE, BLOCK_USED };

struct pl_block_manager {
    int n_blocks;
    int block_size;
    bool caching;

    int32_t *ref;              /* [n_blocks] */
    uint8_t *where;            /* [n_blocks] enum block_where */
    pl_block_id *lru_prev;     /* [n_blocks] LRU links, -1 at the ends / when not on the list */
    pl_block_id *lru_next;     /* [n_blocks] */
    bool *has_hash;            /* [n_blocks] */
    struct pl_hash128 *hash;   /* [n_blocks] valid when has_hash */
    int32_t *tokens;           /* [n_blocks * block_size] token ids of hashed blocks */

    pl_block_id *free_stack;   /* [n_blocks] FREE blocks; top = free_stack[n_free - 1] */
    int n_free;
    pl_block_id lru_head;      /* least recently freed cached block, -1 if none */
    pl_block_id lru_tail;
    int n_lru;

    struct pl_hmap128 map;     /* hash -> block id of every hashed block */

    int n_used;
    struct pl_block_manager_stats stats;
    int32_t *scratch;          /* [n_blocks] for check / kv_waste */
};

void pl_block_manager_params_default(struct pl_block_manager_params *p)
{
    memset(p, 0, sizeof(*p));
    p->n_blocks = 0;
    p->block_size = 16;
    p->enable_prefix_caching = true;
}

pl_status pl_block_manager_new(const struct pl_block_manager_params *p,
                               struct pl_block_manager **out, struct pl_err *err)
{
    *out = NULL;
    if (p->block_size != 8 && p->block_size != 16 && p->block_size != 32)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                          "block_size %d is not supported (use 8, 16 or 32)", p->block_size);
    if (p->n_blocks < 1 || p->n_blocks > PL_KV_MAX_BLOCKS)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                          "number of KV blocks %d is out of range (1..%d)", p->n_blocks,
                          PL_KV_MAX_BLOCKS);
    struct pl_block_manager *bm = calloc(1, sizeof(*bm));
    if (!bm)
        goto oom;
    size_t n = (size_t)p->n_blocks;
    bm->n_blocks = p->n_blocks;
    bm->block_size = p->block_size;
    bm->caching = p->enable_prefix_caching;
    bm->ref = calloc(n, sizeof(*bm->ref));
    bm->where = calloc(n, sizeof(*bm->where));
    bm->lru_prev = malloc(n * sizeof(*bm->lru_prev));
    bm->lru_next = malloc(n * sizeof(*bm->lru_next));
    bm->has_hash = calloc(n, sizeof(*bm->has_hash));
    bm->hash = calloc(n, sizeof(*bm->hash));
    bm->tokens = malloc(n * (size_t)p->block_size * sizeof(*bm->tokens));
    bm->free_stack = malloc(n * sizeof(*bm->free_stack));
    bm->scratch = malloc(n * sizeof(*bm->scratch));
    if (!bm->ref || !bm->where || !bm->lru_prev || !bm->lru_next || !bm->has_hash || !bm->hash ||
        !bm->tokens || !bm->free_stack || !bm->scratch)
        goto oom;
    if (pl_hmap128_init(&bm->map, n, err) != PL_STATUS_OK)
        goto fail;
    /* push in reverse so block 0 is handed out first (readable test expectations) */
    for (int i = 0; i < p->n_blocks; i++) {
        bm->free_stack[i] = p->n_blocks - 1 - i;
        bm->where[i] = BLOCK_FREE;
        bm->lru_prev[i] = bm->lru_next[i] = -1;
    }
    bm->n_free = p->n_blocks;
    bm->lru_head = bm->lru_tail = -1;
    bm->stats.n_blocks_total = p->n_blocks;
    *out = bm;
    return PL_STATUS_OK;
oom:
    pl_err_set(err, PL_STATUS_NO_MEMORY, "block manager: out of memory for %d blocks",
               p->n_blocks);
fail:
    pl_block_manager_free(bm);
    return PL_STATUS_NO_MEMORY;
}

void pl_block_manager_free(struct pl_block_manager *bm)
{
    if (!bm)
        return;
    free(bm->ref);
    free(bm->where);
    free(bm->lru_prev);
    free(bm->lru_next);
    free(bm->has_hash);
    free(bm->hash);
    free(bm->tokens);
    free(bm->free_stack);
    free(bm->scratch);
    pl_hmap128_fini(&bm->map);
    free(bm);
}

int pl_block_manager_block_size(const struct pl_block_manager *bm)
{
    return bm->block_size;
}

int pl_block_manager_num_blocks(const struct pl_block_manager *bm)
{
    return bm->n_blocks;
}

bool pl_block_manager_prefix_caching(const struct pl_block_manager *bm)
{
    return bm->caching;
}

int pl_block_manager_num_free(const struct pl_block_manager *bm)
{
    return bm->n_free + bm->n_lru;
}

/* Fixed keys: the hash needs no secrecy, only mixing; distinct keys separate roots from blocks. */
#define ROOT_K0 0x70616765006c6c6dULL
#define ROOT_K1 0x726f6f7400000001ULL
#define BLOCK_K0 0x70616765006b7663ULL
#define BLOCK_K1 0x626c6f636b000002ULL

struct pl_hash128 pl_block_hash_root(const void *salt, size_t n)
{
    struct pl_hasher h;
    pl_hasher_init(&h, ROOT_K0, ROOT_K1);
    /* a flag byte keeps "no salt" distinct from an empty salt */
    uint8_t has = salt != NULL;
    pl_hasher_add(&h, &has, 1);
    if (salt)
        pl_hasher_add(&h, salt, n);
    return pl_hasher_finish(&h);
}

struct pl_hash128 pl_block_hash(struct pl_hash128 parent, const int32_t *tokens, int block_size)
{
    struct pl_hasher h;
    pl_hasher_init(&h, BLOCK_K0, BLOCK_K1);
    pl_hasher_add_u64(&h, parent.lo);
    pl_hasher_add_u64(&h, parent.hi);
    for (int i = 0; i < block_size; i++)
        pl_hasher_add_u32(&h, (uint32_t)tokens[i]);
    return pl_hasher_finish(&h);
}

pl_status pl_block_table_init(struct pl_block_table *t, int max_tokens, int block_size,
                              struct pl_hash128 root, struct pl_err *err)
{
    memset(t, 0, sizeof(*t));
    int cap = (max_tokens + block_size - 1) / block_size;
    if (cap < 1)
        cap = 1;
    t->ids = malloc((size_t)cap * sizeof(*t->ids));
    t->hashes = malloc((size_t)cap * sizeof(*t->hashes));
    if (!t->ids || !t->hashes) {
        pl_block_table_fini(t);
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "block table: out of memory for %d blocks",
                          cap);
    }
    t->cap = cap;
    t->root = root;
    return PL_STATUS_OK;
}

void pl_block_table_fini(struct pl_block_table *t)
{
    if (!t)
        return;
    assert(t->n_blocks == 0);
    free(t->ids);
    free(t->hashes);
    memset(t, 0, sizeof(*t));
}

/* ---- LRU list and free stack ---- */

static void lru_push_tail(struct pl_block_manager *bm, pl_block_id b)
{
    bm->lru_prev[b] = bm->lru_tail;
    bm->lru_next[b] = -1;
    if (bm->lru_tail >= 0)
        bm->lru_next[bm->lru_tail] = b;
    else
        bm->lru_head = b;
    bm->lru_tail = b;
    bm->n_lru++;
    bm->where[b] = BLOCK_CACHED_FREE;
}

static void lru_unlink(struct pl_block_manager *bm, pl_block_id b)
{
    pl_block_id p = bm->lru_prev[b], n = bm->lru_next[b];
    if (p >= 0)
        bm->lru_next[p] = n;
    else
        bm->lru_head = n;
    if (n >= 0)
        bm->lru_prev[n] = p;
    else
        bm->lru_tail = p;
    bm->lru_prev[b] = bm->lru_next[b] = -1;
    bm->n_lru--;
}

static void mark_used(struct pl_block_manager *bm, pl_block_id b)
{
    bm->where[b] = BLOCK_USED;
    bm->ref[b] = 1;
    if (++bm->n_used > bm->stats.n_blocks_peak_used)
        bm->stats.n_blocks_peak_used = bm->n_used;
}

/* Takes a fresh (unhashed) block: the free stack first, else evicts the LRU head. */
static pl_block_id take_fresh(struct pl_block_manager *bm)
{
    pl_block_id b;
    if (bm->n_free > 0) {
        b = bm->free_stack[--bm->n_free];
    } else {
        b = bm->lru_head;
        assert(b >= 0);
        lru_unlink(bm, b);
        bool removed = pl_hmap128_remove(&bm->map, bm->hash[b]);
        assert(removed);
        (void)removed;
        bm->has_hash[b] = false;
        bm->stats.n_evictions++;
    }
    assert(bm->ref[b] == 0 && !bm->has_hash[b]);
    mark_used(bm, b);
    return b;
}

static void release_block(struct pl_block_manager *bm, pl_block_id b)
{
    assert(b >= 0 && b < bm->n_blocks && bm->where[b] == BLOCK_USED && bm->ref[b] > 0);
    if (--bm->ref[b] > 0)
        return;
    bm->n_used--;
    if (bm->has_hash[b]) {
        lru_push_tail(bm, b);
    } else {
        bm->where[b] = BLOCK_FREE;
        bm->free_stack[bm->n_free++] = b;
    }
}

/* ---- prefix lookup ---- */

/* Fills t->hashes for the full blocks of tokens[0..n_tokens) not hashed yet. */
static void hash_full_blocks(const struct pl_block_manager *bm, struct pl_block_table *t,
                             const int32_t *tokens, int n_tokens)
{
    int bs = bm->block_size;
    int n_full = n_tokens / bs;
    if (n_full > t->cap)
        n_full = t->cap;
    for (int i = t->n_hashed; i < n_full; i++) {
        struct pl_hash128 parent = i == 0 ? t->root : t->hashes[i - 1];
        t->hashes[i] = pl_block_hash(parent, tokens + (size_t)i * bs, bs);
    }
    if (n_full > t->n_hashed)
        t->n_hashed = n_full;
}

/* The cached block holding exactly these tokens under this hash, or -1. */
static pl_block_id cache_lookup(const struct pl_block_manager *bm, struct pl_hash128 h,
                                const int32_t *tokens)
{
    pl_block_id b = pl_hmap128_get(&bm->map, h);
    if (b < 0)
        return -1;
    assert(bm->has_hash[b] && pl_hash128_eq(bm->hash[b], h));
    if (memcmp(bm->tokens + (size_t)b * bm->block_size, tokens,
               (size_t)bm->block_size * sizeof(*tokens)) != 0)
        return -1;
    return b;
}

/*
 * Counts the leading prefix hits for tokens (capped so the last token is
 * computed) and how many of them sit on the LRU list. Uses hashes from tmp.
 */
static int count_hits(const struct pl_block_manager *bm, const struct pl_hash128 *hashes,
                      const int32_t *tokens, int n_tokens, int *n_hits_lru)
{
    *n_hits_lru = 0;
    if (!bm->caching)
        return 0;
    int max_hits = (n_tokens - 1) / bm->block_size;
    int n = 0;
    for (; n < max_hits; n++) {
        pl_block_id b = cache_lookup(bm, hashes[n], tokens + (size_t)n * bm->block_size);
        if (b < 0)
            break;
        if (bm->where[b] == BLOCK_CACHED_FREE)
            (*n_hits_lru)++;
    }
    return n;
}

int pl_block_manager_blocks_needed(const struct pl_block_manager *bm, struct pl_hash128 root,
                                   const int32_t *tokens, int n_tokens)
{
    int bs = bm->block_size;
    int n_blocks = (n_tokens + bs - 1) / bs;
    if (!bm->caching)
        return n_blocks;
    int n_hits = 0, n_hits_lru = 0;
    /* hash on the fly: this is a pure query with no table to store the chain in */
    struct pl_hash128 parent = root;
    int max_hits = (n_tokens - 1) / bs;
    for (; n_hits < max_hits; n_hits++) {
        struct pl_hash128 h = pl_block_hash(parent, tokens + (size_t)n_hits * bs, bs);
        pl_block_id b = cache_lookup(bm, h, tokens + (size_t)n_hits * bs);
        if (b < 0)
            break;
        if (bm->where[b] == BLOCK_CACHED_FREE)
            n_hits_lru++;
        parent = h;
    }
    return n_blocks - n_hits + n_hits_lru;
}

pl_status pl_block_manager_allocate(struct pl_block_manager *bm, struct pl_block_table *t,
                                    const int32_t *tokens, int n_tokens, int *n_cached_tokens,
                                    struct pl_err *err)
{
    int bs = bm->block_size;
    assert(t->n_blocks == 0 && t->n_slots == 0);
    if (n_cached_tokens)
        *n_cached_tokens = 0;
    if (n_tokens < 1)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT, "cannot allocate %d tokens", n_tokens);
    int n_blocks = (n_tokens + bs - 1) / bs;
    if (n_blocks > t->cap)
        return pl_err_set(err, PL_STATUS_LIMIT,
                          "%d tokens need %d blocks but the sequence may hold only %d", n_tokens,
                          n_blocks, t->cap);
    t->n_hashed = 0;
    t->n_committed = 0;
    int n_hits_lru = 0;
    int n_hits = 0;
    if (bm->caching) {
        hash_full_blocks(bm, t, tokens, n_tokens);
        n_hits = count_hits(bm, t->hashes, tokens, n_tokens, &n_hits_lru);
    }
    int n_fresh = n_blocks - n_hits;
    /* LRU hits leave the LRU list, so they cannot also be evicted for fresh blocks */
    if (n_fresh > bm->n_free + bm->n_lru - n_hits_lru)
        return pl_err_set(err, PL_STATUS_NO_MEMORY,
                          "KV cache: %d tokens need %d free blocks, %d available", n_tokens,
                          n_fresh, bm->n_free + bm->n_lru - n_hits_lru);
    /* take the hits first so eviction for fresh blocks cannot pick them */
    for (int i = 0; i < n_hits; i++) {
        pl_block_id b = pl_hmap128_get(&bm->map, t->hashes[i]);
        if (bm->where[b] == BLOCK_CACHED_FREE) {
            lru_unlink(bm, b);
            mark_used(bm, b);
        } else {
            bm->ref[b]++;
        }
        t->ids[i] = b;
    }
    for (int i = n_hits; i < n_blocks; i++)
        t->ids[i] = take_fresh(bm);
    t->n_blocks = n_blocks;
    t->n_slots = n_tokens;
    t->n_committed = n_hits;
    if (bm->caching) {
        bm->stats.prefix_query_tokens += n_tokens;
        bm->stats.prefix_hit_tokens += (int64_t)n_hits * bs;
        bm->stats.prefix_query_blocks += n_tokens / bs;
        bm->stats.prefix_hit_blocks += n_hits;
    }
    if (n_cached_tokens)
        *n_cached_tokens = n_hits * bs;
    return PL_STATUS_OK;
}

/* ---- append, fork, commit, free ---- */

static bool needs_block(const struct pl_block_manager *bm, const struct pl_block_table *t)
{
    if (t->n_slots % bm->block_size == 0)
        return true;
    return bm->ref[t->ids[t->n_blocks - 1]] > 1;
}

bool pl_block_manager_can_append(const struct pl_block_manager *bm, const struct pl_block_table *t)
{
    if (!needs_block(bm, t))
        return true;
    if (t->n_slots % bm->block_size == 0 && t->n_blocks >= t->cap)
        return false;
    return bm->n_free + bm->n_lru > 0;
}

pl_status pl_block_manager_append_slot(struct pl_block_manager *bm, struct pl_block_table *t,
                                       int32_t *slot, struct pl_block_copy *copy, bool *has_copy,
                                       struct pl_err *err)
{
    int bs = bm->block_size;
    *has_copy = false;
    int pos = t->n_slots;
    if (pos % bs == 0) {
        if (t->n_blocks >= t->cap)
            return pl_err_set(err, PL_STATUS_LIMIT,
                              "sequence holds its maximum of %d blocks", t->cap);
        if (bm->n_free + bm->n_lru == 0)
            return pl_err_set(err, PL_STATUS_NO_MEMORY, "KV cache: no free block to append");
        t->ids[t->n_blocks++] = take_fresh(bm);
    } else {
        pl_block_id last = t->ids[t->n_blocks - 1];
        if (bm->ref[last] > 1) {
            if (bm->n_free + bm->n_lru == 0)
                return pl_err_set(err, PL_STATUS_NO_MEMORY,
                                  "KV cache: no free block for copy-on-write");
            /* a partial block is never hashed, so the copy starts unhashed too */
            assert(!bm->has_hash[last]);
            pl_block_id fresh = take_fresh(bm);
            bm->ref[last]--;
            t->ids[t->n_blocks - 1] = fresh;
            copy->src = last;
            copy->dst = fresh;
            *has_copy = true;
            bm->stats.n_cow_copies++;
        }
    }
    t->n_slots = pos + 1;
    *slot = pl_block_table_slot(t, pos, bs);
    return PL_STATUS_OK;
}

void pl_block_manager_fork(struct pl_block_manager *bm, const struct pl_block_table *parent,
                           struct pl_block_table *child)
{
    assert(child->n_blocks == 0 && child->cap >= parent->n_blocks);
    for (int i = 0; i < parent->n_blocks; i++) {
        pl_block_id b = parent->ids[i];
        assert(bm->ref[b] > 0);
        bm->ref[b]++;
        child->ids[i] = b;
    }
    memcpy(child->hashes, parent->hashes, (size_t)parent->n_hashed * sizeof(*child->hashes));
    child->n_blocks = parent->n_blocks;
    child->n_slots = parent->n_slots;
    child->n_hashed = parent->n_hashed;
    child->n_committed = parent->n_committed;
    child->root = parent->root;
}

void pl_block_manager_commit(struct pl_block_manager *bm, struct pl_block_table *t,
                             const int32_t *tokens, int n_computed)
{
    int bs = bm->block_size;
    assert(n_computed <= t->n_slots);
    int n_full = n_computed / bs;
    if (n_full <= t->n_committed)
        return;
    if (!bm->caching) {
        t->n_committed = n_full;
        return;
    }
    hash_full_blocks(bm, t, tokens, n_full * bs);
    for (int i = t->n_committed; i < n_full; i++) {
        pl_block_id b = t->ids[i];
        if (bm->has_hash[b])
            continue;
        /* the same content computed by another sequence first keeps the entry; this block
           stays unhashed and goes back to the free stack when released */
        if (pl_hmap128_get(&bm->map, t->hashes[i]) >= 0)
            continue;
        bool ok = pl_hmap128_insert(&bm->map, t->hashes[i], b);
        assert(ok);
        (void)ok;
        bm->has_hash[b] = true;
        bm->hash[b] = t->hashes[i];
        memcpy(bm->tokens + (size_t)b * bs, tokens + (size_t)i * bs, (size_t)bs * sizeof(*tokens));
    }
    t->n_committed = n_full;
}

void pl_block_manager_free_table(struct pl_block_manager *bm, struct pl_block_table *t)
{
    for (int i = t->n_blocks - 1; i >= 0; i--)
        release_block(bm, t->ids[i]);
    t->n_blocks = 0;
    t->n_slots = 0;
    t->n_hashed = 0;
    t->n_committed = 0;
}

void pl_block_manager_get_stats(const struct pl_block_manager *bm,
                                struct pl_block_manager_stats *out)
{
    *out = bm->stats;
    out->n_blocks_used = bm->n_used;
    out->n_blocks_free = bm->n_free + bm->n_lru;
    out->n_blocks_cached_free = bm->n_lru;
}

double pl_block_manager_kv_waste(const struct pl_block_manager *bm,
                                 const struct pl_block_table *const *tables, int n_tables)
{
    int bs = bm->block_size;
    int32_t *fill = bm->scratch;
    memset(fill, 0, (size_t)bm->n_blocks * sizeof(*fill));
    for (int k = 0; k < n_tables; k++) {
        const struct pl_block_table *t = tables[k];
        for (int i = 0; i < t->n_blocks; i++) {
            int f = t->n_slots - i * bs;
            if (f > bs)
                f = bs;
            if (f > fill[t->ids[i]])
                fill[t->ids[i]] = f;
        }
    }
    int64_t allocated = 0, holding = 0;
    for (int b = 0; b < bm->n_blocks; b++) {
        if (bm->ref[b] > 0) {
            allocated += bs;
            holding += fill[b];
        }
    }
    return allocated ? (double)(allocated - holding) / (double)allocated : 0.0;
}

/* ---- invariant checker ---- */

#define FAIL(...) return pl_err_set(err, PL_STATUS_INTERNAL, "block manager invariant: " __VA_ARGS__)

pl_status pl_block_manager_check(const struct pl_block_manager *bm,
                                 const struct pl_block_table *const *tables, int n_tables,
                                 struct pl_err *err)
{
    int bs = bm->block_size;
    int32_t *count = bm->scratch;
    memset(count, 0, (size_t)bm->n_blocks * sizeof(*count));
    for (int k = 0; k < n_tables; k++) {
        const struct pl_block_table *t = tables[k];
        if (t->n_slots < 0 || t->n_blocks != (t->n_slots + bs - 1) / bs || t->n_blocks > t->cap)
            FAIL("table %d holds %d blocks for %d slots (cap %d)", k, t->n_blocks, t->n_slots,
                 t->cap);
        if (bm->caching && t->n_committed > t->n_hashed)
            FAIL("table %d committed %d blocks but hashed only %d", k, t->n_committed,
                 t->n_hashed);
        for (int i = 0; i < t->n_blocks; i++) {
            pl_block_id b = t->ids[i];
            if (b < 0 || b >= bm->n_blocks)
                FAIL("table %d entry %d is block %d, outside the pool", k, i, b);
            count[b]++;
            bool full = (i + 1) * bs <= t->n_slots;
            if (bm->has_hash[b] && !full)
                FAIL("block %d is hashed but only partially filled in table %d", b, k);
            if (bm->has_hash[b] && i < t->n_hashed && !pl_hash128_eq(bm->hash[b], t->hashes[i]))
                FAIL("block %d hash differs from table %d's chain hash at %d", b, k, i);
        }
    }
    int n_used = 0;
    for (pl_block_id b = 0; b < bm->n_blocks; b++) {
        if (bm->ref[b] != count[b])
            FAIL("block %d has ref count %d but %d table references", b, bm->ref[b], count[b]);
        if ((bm->ref[b] > 0) != (bm->where[b] == BLOCK_USED))
            FAIL("block %d has ref %d but state %d", b, bm->ref[b], bm->where[b]);
        if (bm->where[b] == BLOCK_USED)
            n_used++;
        if (bm->where[b] == BLOCK_FREE && bm->has_hash[b])
            FAIL("free-stack block %d still has a hash", b);
        if (bm->where[b] == BLOCK_CACHED_FREE && !bm->has_hash[b])
            FAIL("LRU block %d has no hash", b);
        if (bm->has_hash[b] && pl_hmap128_get(&bm->map, bm->hash[b]) != b)
            FAIL("block %d's hash is not mapped to it", b);
        count[b] = 0; /* reused below as "seen in a free structure" */
    }
    if (n_used != bm->n_used)
        FAIL("%d blocks in use but the counter says %d", n_used, bm->n_used);
    for (int i = 0; i < bm->n_free; i++) {
        pl_block_id b = bm->free_stack[i];
        if (b < 0 || b >= bm->n_blocks || count[b]++)
            FAIL("block %d appears twice in the free structures", b);
        if (bm->where[b] != BLOCK_FREE)
            FAIL("block %d is on the free stack but in state %d", b, bm->where[b]);
    }
    int n_lru = 0;
    pl_block_id prev = -1;
    for (pl_block_id b = bm->lru_head; b >= 0; b = bm->lru_next[b]) {
        if (count[b]++)
            FAIL("block %d appears twice in the free structures", b);
        if (bm->where[b] != BLOCK_CACHED_FREE)
            FAIL("block %d is on the LRU list but in state %d", b, bm->where[b]);
        if (bm->lru_prev[b] != prev)
            FAIL("LRU back link of block %d is broken", b);
        prev = b;
        if (++n_lru > bm->n_blocks)
            FAIL("LRU list has a cycle");
    }
    if (prev != bm->lru_tail || n_lru != bm->n_lru)
        FAIL("LRU list has %d blocks, counter %d", n_lru, bm->n_lru);
    if (bm->n_free + bm->n_lru + n_used != bm->n_blocks)
        FAIL("%d free + %d cached + %d used != %d blocks", bm->n_free, bm->n_lru, n_used,
             bm->n_blocks);
    /* every map entry must name a block hashed with that key */
    size_t n_hashed = 0;
    for (size_t i = 0; i < bm->map.cap; i++) {
        const struct pl_hmap128_slot *s = &bm->map.slots[i];
        if (s->value < 0)
            continue;
        n_hashed++;
        if (s->value >= bm->n_blocks || !bm->has_hash[s->value] ||
            !pl_hash128_eq(bm->hash[s->value], s->key))
            FAIL("hash map entry points at block %d whose hash differs", s->value);
    }
    if (n_hashed != bm->map.n)
        FAIL("hash map holds %zu entries, counter %zu", n_hashed, bm->map.n);
    return PL_STATUS_OK;
}

bool pl_block_manager_debug_corrupt(struct pl_block_manager *bm,
                                    enum pl_block_manager_corruption what)
{
    for (pl_block_id b = 0; b < bm->n_blocks; b++) {
        switch (what) {
        case PL_BM_CORRUPT_REF:
            if (bm->where[b] == BLOCK_USED) {
                bm->ref[b]++;
                return true;
            }
            break;
        case PL_BM_CORRUPT_DOUBLE_FREE:
            if (bm->where[b] == BLOCK_CACHED_FREE) {
                bm->free_stack[bm->n_free++] = b;
                return true;
            }
            break;
        case PL_BM_CORRUPT_HASH:
            if (bm->has_hash[b]) {
                bm->hash[b].lo ^= 1;
                return true;
            }
            break;
        }
    }
    return false;
}
