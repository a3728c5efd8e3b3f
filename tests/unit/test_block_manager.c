/*
 * test_block_manager.c -- the KV block pool: allocation, appends across block
 * boundaries, fork + copy-on-write, prefix-cache hits, LRU eviction, cache
 * salts, caching off, the KV-waste metric and the invariant checker; plus the
 * hash it keys blocks with (SipHash-2-4-128 against the reference vectors of
 * the SipHash paper's implementation) and the hash map against a brute-force
 * model.
 */
#include "test.h"
#include "engine/block_manager.h"
#include "util/arena.h"
#include "util/hash.h"

#include <stdint.h>

static struct pl_block_manager *new_bm(int n_blocks, int bs, bool caching)
{
    struct pl_block_manager_params p;
    pl_block_manager_params_default(&p);
    p.n_blocks = n_blocks;
    p.block_size = bs;
    p.enable_prefix_caching = caching;
    struct pl_block_manager *bm = NULL;
    struct pl_err err;
    if (pl_block_manager_new(&p, &bm, &err) != PL_STATUS_OK)
        fprintf(stderr, "block manager: %s\n", err.msg);
    return bm;
}

static void init_table(struct pl_block_table *t, int max_tokens, int bs, const char *salt)
{
    struct pl_hash128 root = pl_block_hash_root(salt, salt ? strlen(salt) : 0);
    pl_block_table_init(t, max_tokens, bs, root, NULL);
}

/* tokens[i] = base + i: distinct bases give distinct contents */
static void fill_tokens(int32_t *t, int n, int base)
{
    for (int i = 0; i < n; i++)
        t[i] = base + i;
}

static bool check_ok(const struct pl_block_manager *bm, struct pl_block_table **tables, int n)
{
    struct pl_err err;
    pl_err_clear(&err);
    pl_status st =
        pl_block_manager_check(bm, (const struct pl_block_table *const *)tables, n, &err);
    if (st != PL_STATUS_OK)
        fprintf(stderr, "check: %s\n", err.msg);
    return st == PL_STATUS_OK;
}

static int used_blocks(const struct pl_block_manager *bm)
{
    struct pl_block_manager_stats st;
    pl_block_manager_get_stats(bm, &st);
    return st.n_blocks_used;
}

static void test_siphash_vectors(void)
{
    /* Reference outputs for key 00 01 .. 0f and messages 00 01 .. (len-1), 128-bit variant,
       from the SipHash reference implementation's vectors (output bytes in order). */
    static const char *expect[3] = {"a3817f04ba25a8e66df67214c7550293",
                                    "da87c1d86b99af44347659119b22fc45",
                                    "8177228da4a45dc7fca38bdef60affe4"};
    uint8_t msg[16];
    for (int i = 0; i < 16; i++)
        msg[i] = (uint8_t)i;
    for (int n = 0; n < 3; n++) {
        struct pl_hash128 h =
            pl_hash128_bytes(msg, (size_t)n, 0x0706050403020100ULL, 0x0f0e0d0c0b0a0908ULL);
        char hex[33];
        for (int i = 0; i < 8; i++)
            snprintf(hex + 2 * i, 3, "%02x", (unsigned)(h.lo >> (8 * i)) & 0xff);
        for (int i = 0; i < 8; i++)
            snprintf(hex + 16 + 2 * i, 3, "%02x", (unsigned)(h.hi >> (8 * i)) & 0xff);
        CHECKF(!strcmp(hex, expect[n]), "len %d: %s", n, hex);
    }
    /* streaming in pieces equals one shot */
    struct pl_hasher h;
    pl_hasher_init(&h, 1, 2);
    pl_hasher_add(&h, msg, 3);
    pl_hasher_add(&h, msg + 3, 13);
    CHECK(pl_hash128_eq(pl_hasher_finish(&h), pl_hash128_bytes(msg, 16, 1, 2)));
    /* block hashes depend on parent and every token */
    struct pl_hash128 root = pl_block_hash_root(NULL, 0);
    int32_t a[16], b[16];
    fill_tokens(a, 16, 0);
    fill_tokens(b, 16, 0);
    b[15] = 99;
    CHECK(!pl_hash128_eq(pl_block_hash(root, a, 16), pl_block_hash(root, b, 16)));
    CHECK(!pl_hash128_eq(pl_block_hash(root, a, 16),
                         pl_block_hash(pl_block_hash_root("s", 1), a, 16)));
    CHECK(!pl_hash128_eq(pl_block_hash_root(NULL, 0), pl_block_hash_root("", 0)));
}

static void test_hmap_against_model(void)
{
    /* random inserts/removes with keys that collide in their low bits, vs an array model */
    enum { N = 64 };
    struct pl_hmap128 m;
    REQUIRE(pl_hmap128_init(&m, N, NULL) == PL_STATUS_OK);
    int32_t model[N];
    for (int i = 0; i < N; i++)
        model[i] = -1;
    uint64_t rng = 12345;
    for (int it = 0; it < 20000; it++) {
        rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
        int k = (int)((rng >> 33) % N);
        /* lo mod 8 repeats so probes form long runs that wrap around */
        struct pl_hash128 key = {.lo = (uint64_t)(k % 8) | ((uint64_t)k << 40), .hi = (uint64_t)k};
        if ((rng >> 20) & 1) {
            bool ok = pl_hmap128_insert(&m, key, k);
            CHECK(ok == (model[k] < 0));
            model[k] = k;
        } else {
            bool ok = pl_hmap128_remove(&m, key);
            CHECK(ok == (model[k] >= 0));
            model[k] = -1;
        }
        if (it % 97 == 0) {
            for (int j = 0; j < N; j++) {
                struct pl_hash128 kj = {.lo = (uint64_t)(j % 8) | ((uint64_t)j << 40),
                                        .hi = (uint64_t)j};
                CHECK(pl_hmap128_get(&m, kj) == model[j]);
            }
        }
    }
    pl_hmap128_fini(&m);
}

static void test_arena(void)
{
    struct pl_arena a;
    REQUIRE(pl_arena_init(&a, 256, NULL) == PL_STATUS_OK);
    char *p = pl_arena_alloc(&a, 3, 1);
    int32_t *q = pl_arena_alloc(&a, 8, 64);
    CHECK(p && q && ((uintptr_t)q % 64) == 0 && (char *)q >= p + 3);
    CHECK(pl_arena_alloc(&a, 1000, 8) == NULL);
    pl_arena_reset(&a);
    CHECK(a.used == 0 && a.peak > 0);
    CHECK(pl_arena_alloc(&a, 256, 1) != NULL);
    CHECK(pl_arena_alloc(&a, 1, 1) == NULL);
    pl_arena_fini(&a);
    pl_arena_fini(&a);
}

static void test_params_refused(void)
{
    struct pl_block_manager_params p;
    pl_block_manager_params_default(&p);
    struct pl_block_manager *bm;
    struct pl_err err;
    int bad[] = {0, 4, 7, 12, 64};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        p.n_blocks = 10;
        p.block_size = bad[i];
        CHECK(pl_block_manager_new(&p, &bm, &err) == PL_STATUS_INVALID_ARGUMENT);
        CHECK(strstr(err.msg, "block_size") != NULL);
    }
    p.block_size = 8;
    p.n_blocks = 0;
    CHECK(pl_block_manager_new(&p, &bm, &err) == PL_STATUS_INVALID_ARGUMENT);
    int good[] = {8, 16, 32};
    for (int i = 0; i < 3; i++) {
        p.block_size = good[i];
        p.n_blocks = 3;
        CHECK(pl_block_manager_new(&p, &bm, &err) == PL_STATUS_OK);
        pl_block_manager_free(bm);
    }
    pl_block_manager_free(NULL);
}

static void test_allocate_and_append(void)
{
    struct pl_block_manager *bm = new_bm(8, 16, true);
    REQUIRE(bm);
    struct pl_block_table t;
    init_table(&t, 100, 16, NULL);
    int32_t toks[100];
    fill_tokens(toks, 100, 1000);
    int cached = -1;
    REQUIRE(pl_block_manager_allocate(bm, &t, toks, 15, &cached, NULL) == PL_STATUS_OK);
    CHECK(cached == 0 && t.n_blocks == 1 && t.n_slots == 15 && used_blocks(bm) == 1);
    /* position 15 is the last slot of block 0; 16 starts block 1 */
    int32_t slot;
    struct pl_block_copy cp;
    bool has_copy;
    CHECK(pl_block_manager_can_append(bm, &t));
    REQUIRE(pl_block_manager_append_slot(bm, &t, &slot, &cp, &has_copy, NULL) == PL_STATUS_OK);
    CHECK(!has_copy && t.n_blocks == 1 && slot == t.ids[0] * 16 + 15);
    REQUIRE(pl_block_manager_append_slot(bm, &t, &slot, &cp, &has_copy, NULL) == PL_STATUS_OK);
    CHECK(!has_copy && t.n_blocks == 2 && t.ids[1] != t.ids[0] && slot == t.ids[1] * 16);
    CHECK(used_blocks(bm) == 2);
    for (int pos = 17; pos < 48; pos++) {
        REQUIRE(pl_block_manager_append_slot(bm, &t, &slot, &cp, &has_copy, NULL) ==
                PL_STATUS_OK);
        CHECK(slot == t.ids[pos / 16] * 16 + pos % 16);
    }
    CHECK(t.n_blocks == 3 && t.n_slots == 48);
    struct pl_block_table *tabs[1] = {&t};
    CHECK(check_ok(bm, tabs, 1));
    /* every slot distinct */
    for (int i = 0; i < 48; i++)
        for (int j = i + 1; j < 48; j++)
            CHECK(pl_block_table_slot(&t, i, 16) != pl_block_table_slot(&t, j, 16));
    pl_block_manager_free_table(bm, &t);
    CHECK(used_blocks(bm) == 0 && t.n_blocks == 0);
    CHECK(check_ok(bm, NULL, 0));
    struct pl_block_manager_stats st;
    pl_block_manager_get_stats(bm, &st);
    CHECK(st.n_blocks_peak_used == 3 && st.n_blocks_free == 8);

    /* more tokens than the table was sized for */
    struct pl_err err;
    int32_t many[120];
    fill_tokens(many, 120, 0);
    CHECK(pl_block_manager_allocate(bm, &t, many, 120, NULL, &err) == PL_STATUS_LIMIT);
    /* a pool that cannot hold the prompt refuses and changes nothing */
    struct pl_block_manager *small = new_bm(2, 16, true);
    CHECK(pl_block_manager_allocate(small, &t, toks, 40, &cached, &err) == PL_STATUS_NO_MEMORY);
    CHECK(t.n_blocks == 0 && used_blocks(small) == 0);
    CHECK(check_ok(small, NULL, 0));
    /* exhausted pool: can_append false at a block boundary */
    REQUIRE(pl_block_manager_allocate(small, &t, toks, 32, &cached, NULL) == PL_STATUS_OK);
    CHECK(!pl_block_manager_can_append(small, &t));
    CHECK(pl_block_manager_append_slot(small, &t, &slot, &cp, &has_copy, &err) ==
          PL_STATUS_NO_MEMORY);
    CHECK(t.n_slots == 32 && t.n_blocks == 2);
    pl_block_manager_free_table(small, &t);
    pl_block_manager_free(small);
    pl_block_table_fini(&t);
    pl_block_manager_free(bm);
}

static void test_fork_copy_on_write(void)
{
    /* n = 4 samples of a 40-token prompt with block 16: 3 shared blocks, then divergence */
    struct pl_block_manager *bm = new_bm(16, 16, true);
    REQUIRE(bm);
    struct pl_block_table t[4];
    struct pl_block_table *tabs[4];
    for (int i = 0; i < 4; i++) {
        init_table(&t[i], 64, 16, NULL);
        tabs[i] = &t[i];
    }
    int32_t prompt[40];
    fill_tokens(prompt, 40, 7);
    REQUIRE(pl_block_manager_allocate(bm, &t[0], prompt, 40, NULL, NULL) == PL_STATUS_OK);
    pl_block_manager_commit(bm, &t[0], prompt, 40);
    for (int i = 1; i < 4; i++)
        pl_block_manager_fork(bm, &t[0], &t[i]);
    CHECK(used_blocks(bm) == 3);
    for (int i = 1; i < 4; i++)
        for (int b = 0; b < 3; b++)
            CHECK(t[i].ids[b] == t[0].ids[b]);
    CHECK(check_ok(bm, tabs, 4)); /* refcounts 4 = table references */
    pl_block_id shared_last = t[0].ids[2];
    /* the first divergent write (position 40, in the shared partial block) copies */
    int n_copies = 0;
    for (int i = 0; i < 4; i++) {
        int32_t slot;
        struct pl_block_copy cp;
        bool has_copy;
        REQUIRE(pl_block_manager_append_slot(bm, &t[i], &slot, &cp, &has_copy, NULL) ==
                PL_STATUS_OK);
        if (has_copy) {
            n_copies++;
            CHECK(cp.src == shared_last && cp.dst == t[i].ids[2] && cp.dst != shared_last);
        } else {
            /* the last writer holds the only remaining reference and writes in place */
            CHECK(i == 3 && t[i].ids[2] == shared_last);
        }
        CHECK(slot == t[i].ids[2] * 16 + 8);
        CHECK(check_ok(bm, tabs, 4));
    }
    CHECK(n_copies == 3);
    CHECK(used_blocks(bm) == 6); /* 2 shared full blocks + 4 private last blocks */
    for (int i = 1; i < 4; i++)
        CHECK(t[i].ids[0] == t[0].ids[0] && t[i].ids[1] == t[0].ids[1]);
    /* further writes in private blocks copy nothing; crossing 48 allocates per sequence */
    for (int pos = 41; pos <= 48; pos++) {
        for (int i = 0; i < 4; i++) {
            int32_t slot;
            struct pl_block_copy cp;
            bool has_copy;
            REQUIRE(pl_block_manager_append_slot(bm, &t[i], &slot, &cp, &has_copy, NULL) ==
                    PL_STATUS_OK);
            CHECK(!has_copy);
        }
    }
    CHECK(used_blocks(bm) == 10);
    struct pl_block_manager_stats st;
    pl_block_manager_get_stats(bm, &st);
    CHECK(st.n_cow_copies == 3);
    CHECK(check_ok(bm, tabs, 4));
    /* freeing three leaves the shared blocks with one reference */
    for (int i = 1; i < 4; i++)
        pl_block_manager_free_table(bm, &t[i]);
    CHECK(used_blocks(bm) == 4);
    CHECK(check_ok(bm, tabs, 1));
    pl_block_manager_free_table(bm, &t[0]);
    CHECK(used_blocks(bm) == 0);
    CHECK(check_ok(bm, NULL, 0));
    for (int i = 0; i < 4; i++)
        pl_block_table_fini(&t[i]);
    pl_block_manager_free(bm);
}

static void test_prefix_cache_hits(void)
{
    struct pl_block_manager *bm = new_bm(16, 16, true);
    REQUIRE(bm);
    struct pl_block_table a, b, c, d;
    init_table(&a, 64, 16, NULL);
    init_table(&b, 64, 16, NULL);
    init_table(&c, 64, 16, NULL);
    init_table(&d, 64, 16, NULL);
    int32_t pa[40], pb[40];
    fill_tokens(pa, 40, 500);
    fill_tokens(pb, 40, 500);
    for (int i = 32; i < 40; i++)
        pb[i] = 9000 + i; /* same 2-block prefix, different tail */
    int cached = -1;
    REQUIRE(pl_block_manager_allocate(bm, &a, pa, 40, &cached, NULL) == PL_STATUS_OK);
    CHECK(cached == 0);
    /* not computed yet: nothing to hit */
    REQUIRE(pl_block_manager_allocate(bm, &b, pb, 40, &cached, NULL) == PL_STATUS_OK);
    CHECK(cached == 0);
    pl_block_manager_free_table(bm, &b);
    pl_block_manager_commit(bm, &a, pa, 40); /* A's KV computed: its 2 full blocks are cached */
    REQUIRE(pl_block_manager_allocate(bm, &b, pb, 40, &cached, NULL) == PL_STATUS_OK);
    CHECK(cached == 32);
    CHECK(b.ids[0] == a.ids[0] && b.ids[1] == a.ids[1] && b.ids[2] != a.ids[2]);
    CHECK(used_blocks(bm) == 4);
    struct pl_block_table *tabs[2] = {&a, &b};
    CHECK(check_ok(bm, tabs, 2));
    /* after both leave, the blocks stay cached and a third request still hits */
    pl_block_manager_free_table(bm, &a);
    pl_block_manager_free_table(bm, &b);
    struct pl_block_manager_stats st;
    pl_block_manager_get_stats(bm, &st);
    CHECK(st.n_blocks_used == 0 && st.n_blocks_cached_free == 2);
    REQUIRE(pl_block_manager_allocate(bm, &c, pa, 40, &cached, NULL) == PL_STATUS_OK);
    CHECK(cached == 32);
    /* a prompt that is exactly the cached 2 blocks must still compute its last token:
       only the first block may hit */
    REQUIRE(pl_block_manager_allocate(bm, &d, pa, 32, &cached, NULL) == PL_STATUS_OK);
    CHECK(cached == 16 && d.ids[0] == c.ids[0] && d.ids[1] != c.ids[1]);
    CHECK(pl_block_manager_blocks_needed(bm, pl_block_hash_root(NULL, 0), pa, 40) == 1);
    pl_block_manager_get_stats(bm, &st);
    /* queries: 40 + 40 + 40 + 40 + 32 tokens; hits 32 + 32 + 16 */
    CHECK(st.prefix_query_tokens == 192 && st.prefix_hit_tokens == 80);
    CHECK(st.prefix_hit_blocks == 5);
    struct pl_block_table *tabs2[2] = {&c, &d};
    CHECK(check_ok(bm, tabs2, 2));
    /* d recomputed block 1 with the same content: it stays unhashed (c's block keeps the key) */
    pl_block_manager_commit(bm, &d, pa, 32);
    CHECK(check_ok(bm, tabs2, 2));
    pl_block_manager_free_table(bm, &d);
    pl_block_manager_get_stats(bm, &st);
    CHECK(st.n_blocks_cached_free == 0); /* d's block 0 still used by c, block 1 unhashed */
    pl_block_manager_free_table(bm, &c);
    CHECK(check_ok(bm, NULL, 0));
    pl_block_table_fini(&a);
    pl_block_table_fini(&b);
    pl_block_table_fini(&c);
    pl_block_table_fini(&d);
    pl_block_manager_free(bm);
}

/* allocate 9 tokens from base, mark computed, free: leaves one cached block */
static void cache_one(struct pl_block_manager *bm, int base, int *cached)
{
    struct pl_block_table t;
    init_table(&t, 16, 8, NULL);
    int32_t toks[9];
    fill_tokens(toks, 9, base);
    pl_block_manager_allocate(bm, &t, toks, 9, cached, NULL);
    pl_block_manager_commit(bm, &t, toks, 9);
    pl_block_manager_free_table(bm, &t);
    pl_block_table_fini(&t);
}

static void test_lru_eviction(void)
{
    /* pool of 3 blocks, block 8: each request leaves its first block cached */
    struct pl_block_manager *bm = new_bm(3, 8, true);
    REQUIRE(bm);
    int cached;
    cache_one(bm, 100, &cached); /* A */
    cache_one(bm, 200, &cached); /* B */
    struct pl_block_manager_stats st;
    pl_block_manager_get_stats(bm, &st);
    CHECK(st.n_blocks_cached_free == 2);
    /* touching A makes B the least recently used */
    cache_one(bm, 100, &cached);
    CHECK(cached == 8);
    /* C needs 2 fresh blocks: the one uncached free block, then evicts the LRU head (B) */
    cache_one(bm, 300, &cached);
    CHECK(cached == 0);
    pl_block_manager_get_stats(bm, &st);
    CHECK(st.n_evictions == 1);
    cache_one(bm, 100, &cached);
    CHECK(cached == 8); /* A survived */
    cache_one(bm, 300, &cached);
    CHECK(cached == 8); /* C is cached */
    cache_one(bm, 200, &cached);
    CHECK(cached == 0); /* B was evicted */
    CHECK(check_ok(bm, NULL, 0));
    pl_block_manager_free(bm);
}

static void test_cache_salt(void)
{
    struct pl_block_manager *bm = new_bm(16, 16, true);
    REQUIRE(bm);
    int32_t p[40];
    fill_tokens(p, 40, 1);
    const char *salts[4] = {NULL, "tenant-a", "tenant-b", "tenant-a"};
    int expect[4] = {0, 0, 0, 32}; /* only the same salt shares */
    struct pl_block_table t[4];
    for (int i = 0; i < 4; i++) {
        init_table(&t[i], 40, 16, salts[i]);
        int cached = -1;
        REQUIRE(pl_block_manager_allocate(bm, &t[i], p, 40, &cached, NULL) == PL_STATUS_OK);
        CHECKF(cached == expect[i], "request %d cached %d", i, cached);
        pl_block_manager_commit(bm, &t[i], p, 40);
    }
    /* unsalted again hits the unsalted blocks */
    struct pl_block_table u;
    init_table(&u, 40, 16, NULL);
    int cached = -1;
    REQUIRE(pl_block_manager_allocate(bm, &u, p, 40, &cached, NULL) == PL_STATUS_OK);
    CHECK(cached == 32 && u.ids[0] == t[0].ids[0]);
    struct pl_block_table *tabs[5] = {&t[0], &t[1], &t[2], &t[3], &u};
    CHECK(check_ok(bm, tabs, 5));
    for (int i = 0; i < 5; i++) {
        pl_block_manager_free_table(bm, tabs[i]);
        pl_block_table_fini(tabs[i]);
    }
    pl_block_manager_free(bm);
}

static void test_caching_off(void)
{
    struct pl_block_manager *bm = new_bm(8, 16, false);
    REQUIRE(bm);
    CHECK(!pl_block_manager_prefix_caching(bm));
    int32_t p[40];
    fill_tokens(p, 40, 1);
    struct pl_block_table a, b;
    init_table(&a, 40, 16, NULL);
    init_table(&b, 40, 16, NULL);
    int cached = -1;
    REQUIRE(pl_block_manager_allocate(bm, &a, p, 40, &cached, NULL) == PL_STATUS_OK);
    pl_block_manager_commit(bm, &a, p, 40);
    REQUIRE(pl_block_manager_allocate(bm, &b, p, 40, &cached, NULL) == PL_STATUS_OK);
    CHECK(cached == 0 && used_blocks(bm) == 6);
    pl_block_manager_free_table(bm, &a);
    pl_block_manager_free_table(bm, &b);
    struct pl_block_manager_stats st;
    pl_block_manager_get_stats(bm, &st);
    CHECK(st.n_blocks_cached_free == 0 && st.prefix_query_tokens == 0 && st.n_blocks_free == 8);
    CHECK(check_ok(bm, NULL, 0));
    pl_block_table_fini(&a);
    pl_block_table_fini(&b);
    pl_block_manager_free(bm);
}

static void test_kv_waste(void)
{
    struct pl_block_manager *bm = new_bm(16, 16, true);
    REQUIRE(bm);
    CHECK(pl_block_manager_kv_waste(bm, NULL, 0) == 0.0);
    int32_t p[40];
    fill_tokens(p, 40, 1);
    struct pl_block_table a, b, c;
    init_table(&a, 64, 16, NULL);
    init_table(&b, 64, 16, NULL);
    init_table(&c, 64, 16, NULL);
    REQUIRE(pl_block_manager_allocate(bm, &a, p, 40, NULL, NULL) == PL_STATUS_OK);
    const struct pl_block_table *t1[1] = {&a};
    /* 3 blocks = 48 slots, 40 hold a token */
    CHECK_NEAR(pl_block_manager_kv_waste(bm, t1, 1), 8.0 / 48.0, 1e-12);
    /* a fork shares every block: still 48 slots, 40 filled */
    pl_block_manager_fork(bm, &a, &b);
    const struct pl_block_table *t2[2] = {&a, &b};
    CHECK_NEAR(pl_block_manager_kv_waste(bm, t2, 2), 8.0 / 48.0, 1e-12);
    /* b writes position 40: copy-on-write gives b a private last block with 9 tokens */
    int32_t slot;
    struct pl_block_copy cp;
    bool has_copy;
    REQUIRE(pl_block_manager_append_slot(bm, &b, &slot, &cp, &has_copy, NULL) == PL_STATUS_OK);
    CHECK(has_copy);
    CHECK_NEAR(pl_block_manager_kv_waste(bm, t2, 2), (64.0 - (16 + 16 + 8 + 9)) / 64.0, 1e-12);
    /* a third sequence of exactly one block wastes nothing of its own */
    REQUIRE(pl_block_manager_allocate(bm, &c, p + 8, 16, NULL, NULL) == PL_STATUS_OK);
    const struct pl_block_table *t3[3] = {&a, &b, &c};
    CHECK_NEAR(pl_block_manager_kv_waste(bm, t3, 3), (80.0 - (16 + 16 + 8 + 9 + 16)) / 80.0,
               1e-12);
    pl_block_manager_free_table(bm, &a);
    pl_block_manager_free_table(bm, &b);
    pl_block_manager_free_table(bm, &c);
    pl_block_table_fini(&a);
    pl_block_table_fini(&b);
    pl_block_table_fini(&c);
    pl_block_manager_free(bm);
}

/* a pool with used, cached-free and free blocks for the corruption tests */
static struct pl_block_manager *busy_pool(struct pl_block_table *live)
{
    struct pl_block_manager *bm = new_bm(8, 8, true);
    int32_t p[20];
    fill_tokens(p, 20, 3);
    struct pl_block_table gone;
    init_table(&gone, 20, 8, NULL);
    pl_block_manager_allocate(bm, &gone, p, 20, NULL, NULL);
    pl_block_manager_commit(bm, &gone, p, 20);
    pl_block_manager_free_table(bm, &gone);
    pl_block_table_fini(&gone);
    init_table(live, 20, 8, NULL);
    fill_tokens(p, 20, 77);
    pl_block_manager_allocate(bm, live, p, 20, NULL, NULL);
    pl_block_manager_commit(bm, live, p, 20);
    return bm;
}

static void test_invariant_checker(void)
{
    struct pl_err err;
    struct pl_block_table live;
    struct pl_block_table *tabs[2] = {&live, &live};
    enum pl_block_manager_corruption kinds[3] = {PL_BM_CORRUPT_REF, PL_BM_CORRUPT_DOUBLE_FREE,
                                                 PL_BM_CORRUPT_HASH};
    const char *words[3] = {"ref count", "free", "hash"};
    for (int k = 0; k < 3; k++) {
        struct pl_block_manager *bm = busy_pool(&live);
        REQUIRE(bm);
        CHECK(check_ok(bm, tabs, 1));
        REQUIRE(pl_block_manager_debug_corrupt(bm, kinds[k]));
        CHECK(pl_block_manager_check(bm, (const struct pl_block_table *const *)tabs, 1, &err) ==
              PL_STATUS_INTERNAL);
        CHECKF(strstr(err.msg, words[k]) != NULL, "%s", err.msg);
        pl_block_manager_free(bm);
        live.n_blocks = 0; /* its pool is gone, so its blocks cannot be released */
        pl_block_table_fini(&live);
    }
    /* a table listed twice (or a block id copied without a reference) breaks ref counts */
    struct pl_block_manager *bm = busy_pool(&live);
    CHECK(pl_block_manager_check(bm, (const struct pl_block_table *const *)tabs, 2, &err) ==
          PL_STATUS_INTERNAL);
    /* a forgotten table too */
    CHECK(pl_block_manager_check(bm, NULL, 0, &err) == PL_STATUS_INTERNAL);
    /* a table whose block count disagrees with its slots */
    live.n_slots = 30;
    CHECK(pl_block_manager_check(bm, (const struct pl_block_table *const *)tabs, 1, &err) ==
          PL_STATUS_INTERNAL);
    live.n_slots = 20;
    CHECK(check_ok(bm, tabs, 1));
    pl_block_manager_free_table(bm, &live);
    pl_block_table_fini(&live);
    pl_block_manager_free(bm);
}

int main(void)
{
    PL_RUN(test_siphash_vectors);
    PL_RUN(test_hmap_against_model);
    PL_RUN(test_arena);
    PL_RUN(test_params_refused);
    PL_RUN(test_allocate_and_append);
    PL_RUN(test_fork_copy_on_write);
    PL_RUN(test_prefix_cache_hits);
    PL_RUN(test_lru_eviction);
    PL_RUN(test_cache_salt);
    PL_RUN(test_caching_off);
    PL_RUN(test_kv_waste);
    PL_RUN(test_invariant_checker);
    return pl_test_summary();
}
