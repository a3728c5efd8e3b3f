/*
 * bpe.c -- the BPE model: one pre-tokenized word -> token ids.
 *
 * Owns: the merge loop. A word starts as one symbol per character (looked up
 * with continuing_subword_prefix / end_of_word_suffix; unknown characters go
 * to "<0xNN>" byte tokens when byte_fallback is on, else to unk, fused when
 * fuse_unk); then the lowest-ranked adjacent pair is merged until none is
 * left. Symbols form a doubly linked list and candidate pairs sit in a binary
 * heap ordered by (rank, position), so a word of n characters costs
 * O(n log n); stale heap entries are recognised by re-looking up the pair and
 * comparing the merged id, exactly as HF tokenizers' Word::merge_all does
 * (including its tie-breaking on the leftmost position).
 * With ignore_merges a word that is itself in the vocab is emitted whole.
 */
#include "tokenizer/tok_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct tok_bpe_sym {
    int32_t id;
    int32_t prev, next; /* -1: none */
    uint32_t len;       /* bytes of the word covered; 0: merged away */
};

struct tok_bpe_heap_item {
    int32_t rank, pos, new_id;
};

static bool heap_less(const struct tok_bpe_heap_item *a, const struct tok_bpe_heap_item *b)
{
    return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

static bool heap_push(struct tok_bpe_scratch *sc, size_t *n, struct tok_bpe_heap_item it)
{
    if (*n == sc->cap_heap) {
        size_t cap = sc->cap_heap ? sc->cap_heap * 2 : 64;
        struct tok_bpe_heap_item *h = realloc(sc->heap, cap * sizeof(*h));
        if (!h)
            return false;
        sc->heap = h;
        sc->cap_heap = cap;
    }
    struct tok_bpe_heap_item *h = sc->heap;
    size_t i = (*n)++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!heap_less(&it, &h[parent]))
            break;
        h[i] = h[parent];
        i = parent;
    }
    h[i] = it;
    return true;
}

static struct tok_bpe_heap_item heap_pop(struct tok_bpe_scratch *sc, size_t *n)
{
    struct tok_bpe_heap_item *h = sc->heap;
    struct tok_bpe_heap_item top = h[0];
    struct tok_bpe_heap_item last = h[--(*n)];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1;
        if (l >= *n)
            break;
        size_t c = l;
        if (l + 1 < *n && heap_less(&h[l + 1], &h[l]))
            c = l + 1;
        if (!heap_less(&h[c], &last))
            break;
        h[i] = h[c];
        i = c;
    }
    if (*n)
        h[i] = last;
    return top;
}

static bool add_sym(struct tok_bpe_scratch *sc, size_t *n, int32_t id, uint32_t len)
{
    if (*n == sc->cap_syms) {
        size_t cap = sc->cap_syms ? sc->cap_syms * 2 : 64;
        struct tok_bpe_sym *s = realloc(sc->syms, cap * sizeof(*s));
        if (!s)
            return false;
        sc->syms = s;
        sc->cap_syms = cap;
    }
    struct tok_bpe_sym *s = sc->syms;
    s[*n] = (struct tok_bpe_sym){id, (int32_t)*n - 1, -1, len};
    if (*n > 0)
        s[*n - 1].next = (int32_t)*n;
    (*n)++;
    return true;
}

static bool emit(int32_t **ids, size_t *n_ids, size_t *cap_ids, int32_t id)
{
    if (*n_ids == *cap_ids) {
        size_t cap = *cap_ids ? *cap_ids * 2 : 64;
        int32_t *v = realloc(*ids, cap * sizeof(*v));
        if (!v)
            return false;
        *ids = v;
        *cap_ids = cap;
    }
    (*ids)[(*n_ids)++] = id;
    return true;
}

void tok_bpe_scratch_free(struct tok_bpe_scratch *sc)
{
    free(sc->syms);
    free(sc->heap);
    tok_buf_free(&sc->tmp);
    memset(sc, 0, sizeof(*sc));
}

pl_status tok_bpe_encode_word(const struct tok_bpe *m, const char *w, size_t n,
                              struct tok_bpe_scratch *sc, int32_t **ids, size_t *n_ids,
                              size_t *cap_ids, struct pl_err *err)
{
    if (n == 0)
        return PL_STATUS_OK;
    if (m->ignore_merges) {
        int32_t id = tok_strmap_get(&m->vocab, w, n);
        if (id >= 0)
            return emit(ids, n_ids, cap_ids, id) ? PL_STATUS_OK
                                                 : pl_err_set(err, PL_STATUS_NO_MEMORY,
                                                              "out of memory");
    }
    size_t n_syms = 0;
    int32_t unk_id = -1;
    uint32_t unk_len = 0;
    bool has_unk = false;
    for (size_t i = 0; i < n;) {
        int32_t cp;
        int cl = tok_utf8_decode(w + i, &cp);
        bool is_first = i == 0, is_last = i + cl == n;
        const char *key = w + i;
        size_t key_len = cl;
        if ((m->prefix && !is_first) || (m->suffix && is_last)) {
            sc->tmp.n = 0;
            if ((m->prefix && !is_first && !tok_buf_add(&sc->tmp, m->prefix, m->prefix_len)) ||
                !tok_buf_add(&sc->tmp, w + i, cl) ||
                (m->suffix && is_last && !tok_buf_add(&sc->tmp, m->suffix, m->suffix_len)))
                return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
            key = sc->tmp.p;
            key_len = sc->tmp.n;
        }
        int32_t id = tok_strmap_get(&m->vocab, key, key_len);
        if (id >= 0) {
            if (has_unk) {
                if (!add_sym(sc, &n_syms, unk_id, unk_len))
                    return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
                has_unk = false;
            }
            if (!add_sym(sc, &n_syms, id, (uint32_t)cl))
                return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
            i += cl;
            continue;
        }
        if (m->byte_fallback) {
            bool all = true;
            for (size_t b = 0; b < key_len; b++)
                if (m->byte_ids[(unsigned char)key[b]] < 0)
                    all = false;
            if (all) {
                /* HF leaves a pending unk in place here (it is added later). */
                for (size_t b = 0; b < key_len; b++)
                    if (!add_sym(sc, &n_syms, m->byte_ids[(unsigned char)key[b]], 1))
                        return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
                i += cl;
                continue;
            }
        }
        if (m->unk_token) {
            if (m->unk_id < 0)
                return pl_err_set(err, PL_STATUS_FORMAT,
                                  "tokenizer.json: model.unk_token '%s' is not in the vocab",
                                  m->unk_token);
            if (has_unk && m->fuse_unk) {
                unk_len += (uint32_t)cl;
            } else {
                if (has_unk && !add_sym(sc, &n_syms, unk_id, unk_len))
                    return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
                unk_id = m->unk_id;
                unk_len = (uint32_t)cl;
                has_unk = true;
            }
        }
        i += cl;
    }
    if (has_unk && !add_sym(sc, &n_syms, unk_id, unk_len))
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");

    struct tok_bpe_sym *s = sc->syms;
    size_t n_heap = 0;
    for (size_t i = 0; i + 1 < n_syms; i++) {
        const struct tok_merge_slot *mg = tok_mergemap_get(&m->merges, s[i].id, s[i + 1].id);
        if (mg && !heap_push(sc, &n_heap, (struct tok_bpe_heap_item){mg->rank, (int32_t)i, mg->new_id}))
            return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
    }
    while (n_heap > 0) {
        struct tok_bpe_heap_item top = heap_pop(sc, &n_heap);
        s = sc->syms;
        struct tok_bpe_sym *cur = &s[top.pos];
        if (cur->len == 0 || cur->next < 0)
            continue;
        int32_t next_pos = cur->next;
        struct tok_bpe_sym right = s[next_pos];
        const struct tok_merge_slot *mg = tok_mergemap_get(&m->merges, cur->id, right.id);
        if (!mg || mg->new_id != top.new_id)
            continue; /* stale entry */
        cur->id = top.new_id;
        cur->len += right.len;
        cur->next = right.next;
        s[next_pos].len = 0;
        if (right.next >= 0)
            s[right.next].prev = top.pos;
        if (cur->prev >= 0) {
            const struct tok_merge_slot *pm = tok_mergemap_get(&m->merges, s[cur->prev].id, cur->id);
            if (pm && !heap_push(sc, &n_heap,
                                 (struct tok_bpe_heap_item){pm->rank, cur->prev, pm->new_id}))
                return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
        }
        s = sc->syms;
        cur = &s[top.pos];
        if (cur->next >= 0) {
            const struct tok_merge_slot *nm = tok_mergemap_get(&m->merges, cur->id, s[cur->next].id);
            if (nm && !heap_push(sc, &n_heap,
                                 (struct tok_bpe_heap_item){nm->rank, top.pos, nm->new_id}))
                return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
        }
    }
    s = sc->syms;
    for (size_t i = 0; i < n_syms; i++)
        if (s[i].len && !emit(ids, n_ids, cap_ids, s[i].id))
            return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
    return PL_STATUS_OK;
}
