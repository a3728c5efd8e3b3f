/*
 * block_manager.h -- the paged KV cache's block pool, block tables,
 * copy-on-write and automatic prefix caching.
 *
 * Owns: struct pl_block_manager, the bookkeeping for a pool of n_blocks KV
 * blocks of block_size token slots each (the memory itself belongs to the
 * model runner; this module only decides which block ids hold what). Slot s
 * of block b is global slot b * block_size + s.
 *
 * A sequence's block table (struct pl_block_table, embedded in the sequence)
 * lists block ids, never pointers. Blocks are reference counted: sequences of
 * one group share blocks after a fork, and requests with a common prefix share
 * cached full blocks. Every block is in exactly one of three places:
 *
 *     USED         ref > 0, referenced from ref block-table entries
 *     FREE         ref == 0, no hash, on the free stack
 *     CACHED_FREE  ref == 0, has a hash, on the LRU list (head = least recent)
 *
 *        allocate (fresh)          free (ref -> 0, no hash)
 *   FREE ----------------> USED ---------------------------> FREE
 *    ^                      |  ^
 *    | evict (LRU head,     |  | prefix hit (ref 0 -> 1)
 *    |  hash dropped)       |  |
 *   CACHED_FREE <-----------+--+  free (ref -> 0, has a hash)
 *
 * Prefix caching: a FULL block whose KV has been computed is keyed by
 * hash(parent block's hash, its block_size token ids); the first block's
 * parent is a root hash derived from the request's extra keys (cache salt),
 * so different salts never share blocks. The hash is SipHash-2-4-128 and the
 * cached block also stores its token ids, compared on every hit. On
 * allocation the prompt's full blocks are looked up in order and hits are
 * reused (ref++), stopping at the first miss; because the last prompt token
 * must always be computed to get logits, a hit never covers the last token
 * (a prompt of exactly k blocks can hit at most k - 1). Fresh blocks come from
 * the free stack first, then by evicting the least recently freed cached
 * block (its hash entry is removed). When two sequences compute the same
 * block independently, the first one registered keeps the hash; the other
 * block stays unhashed and returns to the free stack when released.
 *
 * Invariants (pl_block_manager_check verifies them given all live tables):
 *   1. ref[b] == number of block-table entries equal to b over live tables;
 *   2. ref[b] > 0 iff b is USED; FREE and CACHED_FREE blocks are exactly the
 *      free stack and the LRU list, which are disjoint and duplicate-free;
 *   3. a block has a hash iff it is in the hash map, and the map entry for
 *      that hash names that block; FREE blocks have no hash;
 *   4. a table holds ceil(n_slots / block_size) blocks; only its last block
 *      may be partially filled, and only a full block has a hash.
 */
#ifndef PL_ENGINE_BLOCK_MANAGER_H
#define PL_ENGINE_BLOCK_MANAGER_H

#include "util/err.h"
#include "util/hash.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef int32_t pl_block_id;

/* The most blocks a pool may have: a global slot (block id * block_size + offset)
 * is an int32 for every supported block size (8, 16, 32). The model runner caps the
 * pool it sizes from memory at this (model_runner.c). */
#define PL_KV_MAX_BLOCKS (INT32_MAX / 32)

/*
 * A sequence's block table. Memory comes from pl_block_table_init (once, at
 * request admission) so appends during a step never allocate.
 */
struct pl_block_table {
    pl_block_id *ids;          /* [cap] block ids of token positions [i*bs, (i+1)*bs) */
    struct pl_hash128 *hashes; /* [cap] chain hashes of the leading n_hashed full blocks */
    int cap;                   /* most blocks this sequence can ever hold */
    int n_blocks;              /* blocks held: ceil(n_slots / block_size) */
    int n_slots;               /* token positions 0..n_slots-1 have a slot reserved */
    int n_hashed;              /* leading blocks whose content hash is known */
    int n_committed;           /* leading blocks already offered to the prefix cache */
    struct pl_hash128 root;    /* parent hash of block 0 (from the cache salt) */
};

/* A copy the model runner must perform (all layers, K and V) before running the step. */
struct pl_block_copy {
    pl_block_id src;
    pl_block_id dst;
};

struct pl_block_manager_params {
    int n_blocks;              /* pool size, >= 1 */
    int block_size;            /* tokens per block: 8, 16 or 32 */
    bool enable_prefix_caching; /* default true */
};

void pl_block_manager_params_default(struct pl_block_manager_params *p);

struct pl_block_manager_stats {
    int n_blocks_total;
    int n_blocks_used;         /* ref > 0 */
    int n_blocks_peak_used;    /* high-water mark of n_blocks_used */
    int n_blocks_free;         /* FREE + CACHED_FREE: what allocation can draw on */
    int n_blocks_cached_free;  /* CACHED_FREE */
    int64_t prefix_query_tokens; /* prompt tokens looked up (every allocation, resumes included) */
    int64_t prefix_hit_tokens;   /* of those, tokens whose KV came from the cache */
    int64_t prefix_query_blocks; /* the same two counts in blocks (full blocks eligible to hit) */
    int64_t prefix_hit_blocks;
    int64_t n_cow_copies;      /* copy-on-write copies reported */
    int64_t n_evictions;       /* cached blocks whose hash was dropped to reuse them */
};

struct pl_block_manager;

/* Creates a pool. PL_STATUS_INVALID_ARGUMENT names a bad block_size / n_blocks. */
pl_status pl_block_manager_new(const struct pl_block_manager_params *p,
                               struct pl_block_manager **out, struct pl_err *err);
void pl_block_manager_free(struct pl_block_manager *bm);

int pl_block_manager_block_size(const struct pl_block_manager *bm);
int pl_block_manager_num_blocks(const struct pl_block_manager *bm);
bool pl_block_manager_prefix_caching(const struct pl_block_manager *bm);
/* Blocks allocation can use right now (FREE + CACHED_FREE). */
int pl_block_manager_num_free(const struct pl_block_manager *bm);

/* Root hash for a request's extra keys (salt may be NULL / n 0: the shared default root). */
struct pl_hash128 pl_block_hash_root(const void *salt, size_t n);

/*
 * Chain hash of one full block: hash(parent, tokens[0..block_size)). Exposed
 * so tests and tools can compute the keys independently of a table.
 */
struct pl_hash128 pl_block_hash(struct pl_hash128 parent, const int32_t *tokens, int block_size);

/*
 * Prepares an empty table for up to max_tokens tokens (its blocks: ceil of
 * max_tokens / block_size) with the given root. PL_STATUS_NO_MEMORY on failure.
 */
pl_status pl_block_table_init(struct pl_block_table *t, int max_tokens, int block_size,
                              struct pl_hash128 root, struct pl_err *err);
/* Releases the arrays; the table must hold no blocks (free it first). NULL is a no-op. */
void pl_block_table_fini(struct pl_block_table *t);

/* The global KV slot of token position pos (pos < n_slots). */
static inline int32_t pl_block_table_slot(const struct pl_block_table *t, int pos, int block_size)
{
    return t->ids[pos / block_size] * block_size + pos % block_size;
}

/*
 * Blocks a fresh allocation of n_tokens tokens would take from the free pool,
 * counting prefix hits on USED blocks as free of charge. Pure query.
 */
int pl_block_manager_blocks_needed(const struct pl_block_manager *bm, struct pl_hash128 root,
                                   const int32_t *tokens, int n_tokens);

/*
 * Reserves slots for positions 0..n_tokens-1 of tokens[] in the empty table t
 * (n_tokens >= 1, ceil(n_tokens / block_size) <= t->cap). Leading full blocks
 * already in the prefix cache are reused; *n_cached_tokens (may be NULL)
 * receives how many leading tokens already have KV (a multiple of block_size,
 * always < n_tokens). Counts prefix queries and hits.
 * PL_STATUS_NO_MEMORY when the pool cannot supply the blocks: then nothing
 * changed (t stays empty, no cache entry moved or evicted).
 */
pl_status pl_block_manager_allocate(struct pl_block_manager *bm, struct pl_block_table *t,
                                    const int32_t *tokens, int n_tokens, int *n_cached_tokens,
                                    struct pl_err *err);

/*
 * Whether pl_block_manager_append_slot would succeed now: true when the next
 * slot lies in an unshared partially filled block, or a free block exists.
 */
bool pl_block_manager_can_append(const struct pl_block_manager *bm, const struct pl_block_table *t);

/*
 * Reserves the slot for position t->n_slots and stores it in *slot. When that
 * position starts a new block, a fresh block is appended. When it falls in the
 * last block and that block is shared (ref > 1), the block is copied on
 * write: a fresh block replaces it in this table, the old one loses a
 * reference, and the (src, dst) pair is written to *copy with *has_copy set
 * (the caller must have the runner copy the KV before the step runs).
 * PL_STATUS_NO_MEMORY (nothing changed) when a block is needed and none is
 * free; PL_STATUS_LIMIT when the table is full.
 */
pl_status pl_block_manager_append_slot(struct pl_block_manager *bm, struct pl_block_table *t,
                                       int32_t *slot, struct pl_block_copy *copy, bool *has_copy,
                                       struct pl_err *err);

/*
 * Makes child share every block of parent (ref++ each); child must be empty
 * and have cap >= parent's n_blocks. Hash state is copied too.
 */
void pl_block_manager_fork(struct pl_block_manager *bm, const struct pl_block_table *parent,
                           struct pl_block_table *child);

/*
 * Records that positions 0..n_computed-1 of tokens[] now hold KV in the pool:
 * every block that is full and computed gets its chain hash and, with prefix
 * caching on, is registered in the cache (unless the hash is already there).
 * Call after each step for each sequence that ran. Idempotent.
 */
void pl_block_manager_commit(struct pl_block_manager *bm, struct pl_block_table *t,
                             const int32_t *tokens, int n_computed);

/*
 * Releases every block of t (ref--, last block first so a sequence's tail is
 * evicted before its head); blocks reaching 0 go to the LRU list when hashed,
 * else to the free stack. t becomes empty and reusable. Empty t: no-op.
 */
void pl_block_manager_free_table(struct pl_block_manager *bm, struct pl_block_table *t);

void pl_block_manager_get_stats(const struct pl_block_manager *bm,
                                struct pl_block_manager_stats *out);

/*
 * KV waste over the live tables: (slots in USED blocks - slots holding a
 * token) / slots in USED blocks, where a block's slots holding a token are the
 * largest fill any table referencing it gives it (shared blocks count once).
 * A reserved slot counts as holding its token even before the KV is
 * computed. 0 when no block is used. The tables must be all live tables.
 */
double pl_block_manager_kv_waste(const struct pl_block_manager *bm,
                                 const struct pl_block_table *const *tables, int n_tables);

/*
 * Checks invariants 1-4 against the complete set of live tables; returns
 * PL_STATUS_INTERNAL with a message naming the first violation. O(n_blocks +
 * table entries); meant for debug builds and tests.
 */
pl_status pl_block_manager_check(const struct pl_block_manager *bm,
                                 const struct pl_block_table *const *tables, int n_tables,
                                 struct pl_err *err);

/* Test-only corruptions, so tests can prove pl_block_manager_check catches them. */
enum pl_block_manager_corruption {
    PL_BM_CORRUPT_REF,        /* bump the ref count of the first USED block */
    PL_BM_CORRUPT_DOUBLE_FREE, /* also push the first CACHED_FREE block onto the free stack */
    PL_BM_CORRUPT_HASH        /* change the stored hash of the first hashed block */
};
/* Returns false when the pool has no block the corruption applies to. */
bool pl_block_manager_debug_corrupt(struct pl_block_manager *bm,
                                    enum pl_block_manager_corruption what);

#endif
