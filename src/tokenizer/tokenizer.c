/*
 * tokenizer.c -- loading tokenizer.json + tokenizer_config.json, added tokens,
 * and the encode / decode pipelines.
 *
 * Owns: struct pl_tokenizer. Encoding follows HF tokenizers' TokenizerImpl:
 *
 *   text --(invalid UTF-8 -> U+FFFD)--> split on non-normalized added tokens
 *        --> normalize each remaining segment --> split on normalized added tokens
 *        --> pre-tokenize --> BPE each piece --> post-process (add_special_tokens)
 *
 * and decoding maps ids to token strings (added tokens by content, optional
 * skipping of special tokens) and runs the decoder chain.
 *
 * What transformers 5 does on top of the file (AutoTokenizer; see
 * tokenization_utils_tokenizers.py and the model tokenizer classes) and is
 * reproduced here because users compare against it:
 *  1. tokenizer_class LlamaTokenizer(Fast) and GemmaTokenizer(Fast) rebuild
 *     the pipeline from the vocab and merges instead of using the file's
 *     normalizer / pre-tokenizer / decoder (apply_class_pipeline below). For
 *     Llama 2 files this changes results: no Prepend normalizer, a Metaspace
 *     pre-tokenizer (prepend "always" when legacy is true, else "first").
 *  2. When tokenizer_config.json sets add_bos_token or add_eos_token to true
 *     (or the file has no post_processor), the post-processor is replaced by a
 *     template "[bos] $A [eos]" (TokenizersBackend.update_post_processor). A
 *     false value does not remove a BOS the file's post-processor adds:
 *     transformers 5.17 keeps it (the tokenizer fixtures gemma3_no_bos.json and
 *     spm_phi3.json were made with it).
 *  3. Named special tokens of the config (bos, eos, unk, pad,
 *     additional_special_tokens, extra_special_tokens) count as special.
 *  4. clean_up_tokenization_spaces is ignored on decode for BPE models (every
 *     model we load), so decode is the backend decode unchanged.
 *  5. In a model directory whose config.json names a model_type transformers
 *     lists as shipping a wrong tokenizer_class (its tokenization_auto
 *     MODELS_WITH_INCORRECT_HUB_TOKENIZER_CLASS: phi3, deepseek_v2/v3), or that
 *     its tokenizer mapping sends to TokenizersBackend (mistral, mixtral: the
 *     Mistral v0.1 / Mixtral directories name LlamaTokenizer), the class is ignored and tokenizer.json is used as written (TokenizersBackend):
 *     a Phi-3 directory keeps its Prepend + Replace normalizer, so " " is
 *     [BOS, "▁▁"] there while the bare files give [BOS, "▁"] (rule 1).
 *     pl_tokenizer_load reads model_type from the directory's config.json for this.
 * Invariants: after load nothing changes, so encode/decode are thread-safe;
 * ids in added tokens, vocab and templates are all < n_ids.
 */
#include "tokenizer/tok_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOK_MAX_ID (1 << 24)

/* ---- trie over added tokens (leftmost-longest) ---- */

struct tok_trie_node {
    int32_t first_child, next_sibling;
    int32_t token; /* index into tok->added, -1: none */
    unsigned char byte;
};

static int32_t trie_new_node(struct tok_trie *t, unsigned char byte)
{
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 256;
        struct tok_trie_node *v = realloc(t->nodes, cap * sizeof(*v));
        if (!v)
            return -1;
        t->nodes = v;
        t->cap = cap;
    }
    t->nodes[t->n] = (struct tok_trie_node){-1, -1, -1, byte};
    return (int32_t)t->n++;
}

static int32_t trie_child(const struct tok_trie *t, int32_t node, unsigned char b)
{
    for (int32_t c = t->nodes[node].first_child; c >= 0; c = t->nodes[c].next_sibling)
        if (t->nodes[c].byte == b)
            return c;
    return -1;
}

static bool trie_insert(struct tok_trie *t, const char *s, size_t n, int32_t token)
{
    if (t->n == 0 && trie_new_node(t, 0) < 0)
        return false;
    int32_t node = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char b = (unsigned char)s[i];
        int32_t c = trie_child(t, node, b);
        if (c < 0) {
            c = trie_new_node(t, b);
            if (c < 0)
                return false;
            t->nodes[c].next_sibling = t->nodes[node].first_child;
            t->nodes[node].first_child = c;
        }
        node = c;
    }
    if (t->nodes[node].token < 0) /* the first pattern wins ties, as in aho-corasick */
        t->nodes[node].token = token;
    return true;
}

/* Longest token starting at s[0..n): its index, or -1; *len gets its length. */
static int32_t trie_longest(const struct tok_trie *t, const char *s, size_t n, size_t *len)
{
    if (t->n == 0)
        return -1;
    int32_t node = 0, best = -1;
    for (size_t i = 0; i < n; i++) {
        node = trie_child(t, node, (unsigned char)s[i]);
        if (node < 0)
            break;
        if (t->nodes[node].token >= 0) {
            best = t->nodes[node].token;
            *len = i + 1;
        }
    }
    return best;
}

/* ---- small helpers ---- */

static char *arena_dup(struct pl_tokenizer *t, const char *s, size_t n)
{
    return tok_arena_strdup(&t->arena, s, n);
}

static bool json_bool(const struct tok_json *obj, const char *key, bool dflt)
{
    const struct tok_json *v = tok_json_get(obj, key);
    if (!v || (v->type != TJ_TRUE && v->type != TJ_FALSE))
        return dflt;
    return v->type == TJ_TRUE;
}

/* A token field of tokenizer_config.json: a string or an AddedToken dict. */
static const struct tok_json *config_token(const struct tok_json *cfg, const char *key)
{
    const struct tok_json *v = tok_json_get(cfg, key);
    if (v && v->type == TJ_OBJECT)
        v = tok_json_get(v, "content");
    return v && v->type == TJ_STRING ? v : NULL;
}

static int32_t lookup_id(const struct pl_tokenizer *t, const char *s, size_t n)
{
    int32_t i = tok_strmap_get(&t->added_by_content, s, n);
    if (i >= 0)
        return t->added[i].id;
    return tok_strmap_get(&t->bpe.vocab, s, n);
}

/* ---- model ---- */

static pl_status parse_model(struct pl_tokenizer *t, const struct tok_json *m, struct pl_err *err)
{
    struct tok_bpe *b = &t->bpe;
    if (!m || m->type != TJ_OBJECT)
        return pl_err_set(err, PL_STATUS_FORMAT, "model: expected an object");
    const struct tok_json *ty = tok_json_get(m, "type");
    if (ty && (ty->type != TJ_STRING || strcmp(ty->u.str, "BPE")))
        return pl_err_set(err, ty->type == TJ_STRING ? PL_STATUS_UNSUPPORTED : PL_STATUS_FORMAT,
                          "model.type: only BPE models are supported (got %s)",
                          ty->type == TJ_STRING ? ty->u.str : "a non-string");
    const struct tok_json *drop = tok_json_get(m, "dropout");
    if (drop && drop->type == TJ_NUMBER && drop->u.num > 0.0)
        return pl_err_set(err, PL_STATUS_UNSUPPORTED, "model.dropout: BPE dropout is not supported");
    b->fuse_unk = json_bool(m, "fuse_unk", false);
    b->byte_fallback = json_bool(m, "byte_fallback", false);
    b->ignore_merges = json_bool(m, "ignore_merges", false);
    const struct tok_json *unk = tok_json_get(m, "unk_token");
    if (!tok_json_is_null(unk)) {
        if (unk->type != TJ_STRING)
            return pl_err_set(err, PL_STATUS_FORMAT, "model.unk_token: expected a string or null");
        b->unk_token = arena_dup(t, unk->u.str, unk->n);
    }
    const char *affix_keys[2] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int k = 0; k < 2; k++) {
        const struct tok_json *a = tok_json_get(m, affix_keys[k]);
        if (tok_json_is_null(a))
            continue;
        if (a->type != TJ_STRING)
            return pl_err_set(err, PL_STATUS_FORMAT, "model.%s: expected a string or null",
                              affix_keys[k]);
        if (a->n == 0)
            continue; /* "" behaves as no affix */
        char *s = arena_dup(t, a->u.str, a->n);
        if (!s)
            return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
        if (k == 0) {
            b->prefix = s;
            b->prefix_len = a->n;
        } else {
            b->suffix = s;
            b->suffix_len = a->n;
        }
    }

    const struct tok_json *vocab = tok_json_get(m, "vocab");
    if (!vocab || vocab->type != TJ_OBJECT)
        return pl_err_set(err, PL_STATUS_FORMAT, "model.vocab: expected an object of token -> id");
    int32_t max_id = -1;
    for (uint32_t i = 0; i < vocab->n; i++) {
        const struct tok_json *id = &vocab->u.items[2 * i + 1];
        if (id->type != TJ_NUMBER || id->u.num < 0 || id->u.num >= TOK_MAX_ID ||
            id->u.num != (double)(int32_t)id->u.num)
            return pl_err_set(err, PL_STATUS_FORMAT,
                              "model.vocab[\"%.64s\"]: expected an integer id in [0, %d)",
                              vocab->u.items[2 * i].u.str, TOK_MAX_ID);
        if ((int32_t)id->u.num > max_id)
            max_id = (int32_t)id->u.num;
    }
    b->n_ids = max_id + 1;
    b->id_to_token = calloc(b->n_ids ? b->n_ids : 1, sizeof(*b->id_to_token));
    b->token_len = calloc(b->n_ids ? b->n_ids : 1, sizeof(*b->token_len));
    if (!b->id_to_token || !b->token_len || !tok_strmap_init(&b->vocab, vocab->n))
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
    for (uint32_t i = 0; i < vocab->n; i++) {
        const struct tok_json *k = &vocab->u.items[2 * i];
        int32_t id = (int32_t)vocab->u.items[2 * i + 1].u.num;
        char *s = arena_dup(t, k->u.str, k->n);
        if (!s || !tok_strmap_put(&b->vocab, s, k->n, id))
            return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
        b->id_to_token[id] = s;
        b->token_len[id] = k->n;
    }
    b->unk_id = b->unk_token ? tok_strmap_get(&b->vocab, b->unk_token, strlen(b->unk_token)) : -1;
    for (int i = 0; i < 256; i++) {
        char name[8];
        snprintf(name, sizeof(name), "<0x%02X>", i);
        b->byte_ids[i] = tok_strmap_get(&b->vocab, name, 6);
    }

    const struct tok_json *merges = tok_json_get(m, "merges");
    if (tok_json_is_null(merges))
        merges = NULL;
    else if (merges->type != TJ_ARRAY)
        return pl_err_set(err, PL_STATUS_FORMAT, "model.merges: expected an array");
    if (!tok_mergemap_init(&b->merges, merges ? merges->n : 0))
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
    struct tok_buf joined = {0};
    for (uint32_t r = 0; merges && r < merges->n; r++) {
        const struct tok_json *e = &merges->u.items[r];
        const char *a, *bb;
        size_t al, bl;
        if (e->type == TJ_STRING) {
            const char *sp = memchr(e->u.str, ' ', e->n);
            if (!sp) {
                tok_buf_free(&joined);
                return pl_err_set(err, PL_STATUS_FORMAT,
                                  "model.merges[%u]: expected \"left right\" (no space found)", r);
            }
            a = e->u.str;
            al = (size_t)(sp - e->u.str);
            bb = sp + 1;
            bl = e->n - al - 1;
        } else if (e->type == TJ_ARRAY && e->n == 2 && e->u.items[0].type == TJ_STRING &&
                   e->u.items[1].type == TJ_STRING) {
            a = e->u.items[0].u.str;
            al = e->u.items[0].n;
            bb = e->u.items[1].u.str;
            bl = e->u.items[1].n;
        } else {
            tok_buf_free(&joined);
            return pl_err_set(err, PL_STATUS_FORMAT,
                              "model.merges[%u]: expected a string or a pair of strings", r);
        }
        int32_t ia = tok_strmap_get(&b->vocab, a, al), ib = tok_strmap_get(&b->vocab, bb, bl);
        /* The merged token drops the right part's continuing_subword_prefix. */
        size_t skip = b->prefix && bl >= b->prefix_len && !memcmp(bb, b->prefix, b->prefix_len)
                          ? b->prefix_len
                          : 0;
        joined.n = 0;
        if (!tok_buf_add(&joined, a, al) || !tok_buf_add(&joined, bb + skip, bl - skip)) {
            tok_buf_free(&joined);
            return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
        }
        int32_t inew = tok_strmap_get(&b->vocab, joined.p, joined.n);
        if (ia < 0 || ib < 0 || inew < 0) {
            pl_status st = pl_err_set(err, PL_STATUS_FORMAT,
                                      "model.merges[%u]: token '%.64s' is not in the vocab", r,
                                      ia < 0 ? a : ib < 0 ? bb : joined.p);
            tok_buf_free(&joined);
            return st;
        }
        if (!tok_mergemap_put(&b->merges, ia, ib, (int32_t)r, inew)) {
            tok_buf_free(&joined);
            return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
        }
    }
    tok_buf_free(&joined);
    return PL_STATUS_OK;
}

/* ---- added tokens ---- */

static pl_status add_token(struct pl_tokenizer *t, const char *content, size_t len, int32_t id,
                           bool special, bool normalized, bool lstrip, bool rstrip,
                           bool single_word, int *cap, struct pl_err *err)
{
    int32_t existing = tok_strmap_get(&t->added_by_content, content, len);
    if (existing >= 0) {
        /* A later entry for the same content replaces the earlier one. */
        struct tok_added *a = &t->added[existing];
        a->id = id;
        a->special = special;
        a->normalized = normalized;
        a->lstrip = lstrip;
        a->rstrip = rstrip;
        a->single_word = single_word;
        return PL_STATUS_OK;
    }
    if (t->n_added == *cap) {
        int nc = *cap ? *cap * 2 : 64;
        struct tok_added *v = realloc(t->added, (size_t)nc * sizeof(*v));
        if (!v)
            return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
        t->added = v;
        *cap = nc;
    }
    char *c = arena_dup(t, content, len);
    if (!c || !tok_strmap_put(&t->added_by_content, c, len, t->n_added))
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
    t->added[t->n_added++] = (struct tok_added){c, len, id, special, normalized, lstrip, rstrip,
                                                single_word, NULL, 0};
    return PL_STATUS_OK;
}

static pl_status parse_added_tokens(struct pl_tokenizer *t, const struct tok_json *arr, int *cap,
                                    struct pl_err *err)
{
    if (tok_json_is_null(arr))
        return PL_STATUS_OK;
    if (arr->type != TJ_ARRAY)
        return pl_err_set(err, PL_STATUS_FORMAT, "added_tokens: expected an array");
    for (uint32_t i = 0; i < arr->n; i++) {
        const struct tok_json *a = &arr->u.items[i];
        const struct tok_json *id = tok_json_get(a, "id"), *content = tok_json_get(a, "content");
        if (a->type != TJ_OBJECT || !content || content->type != TJ_STRING)
            return pl_err_set(err, PL_STATUS_FORMAT, "added_tokens[%u].content: expected a string",
                              i);
        if (!id || id->type != TJ_NUMBER || id->u.num < 0 || id->u.num >= TOK_MAX_ID ||
            id->u.num != (double)(int32_t)id->u.num)
            return pl_err_set(err, PL_STATUS_FORMAT,
                              "added_tokens[%u].id: expected an integer id in [0, %d)", i,
                              TOK_MAX_ID);
        if (content->n == 0)
            continue; /* HF ignores empty added tokens */
        bool special = json_bool(a, "special", false);
        pl_status st = add_token(t, content->u.str, content->n, (int32_t)id->u.num, special,
                                 json_bool(a, "normalized", !special), json_bool(a, "lstrip", false),
                                 json_bool(a, "rstrip", false), json_bool(a, "single_word", false),
                                 cap, err);
        if (st != PL_STATUS_OK)
            return st;
    }
    return PL_STATUS_OK;
}

/* tokenizer_config.json's added_tokens_decoder overrides flags of tokens it names. */
static pl_status apply_config_added(struct pl_tokenizer *t, const struct tok_json *cfg, int *cap,
                                    struct pl_err *err)
{
    const struct tok_json *atd = tok_json_get(cfg, "added_tokens_decoder");
    if (!atd || atd->type != TJ_OBJECT)
        return PL_STATUS_OK;
    for (uint32_t i = 0; i < atd->n; i++) {
        const struct tok_json *k = &atd->u.items[2 * i], *v = &atd->u.items[2 * i + 1];
        char *end;
        errno = 0;
        long id = strtol(k->u.str, &end, 10);
        const struct tok_json *content = tok_json_get(v, "content");
        if (errno || *end || id < 0 || id >= TOK_MAX_ID || !content || content->type != TJ_STRING)
            return pl_err_set(err, PL_STATUS_FORMAT,
                              "tokenizer_config.json: added_tokens_decoder[\"%.32s\"]: expected an "
                              "id key and an object with \"content\"",
                              k->u.str);
        if (content->n == 0)
            continue;
        int32_t model_id = tok_strmap_get(&t->bpe.vocab, content->u.str, content->n);
        int32_t have = tok_strmap_get(&t->added_by_content, content->u.str, content->n);
        if (have < 0 && model_id != id)
            continue; /* a token transformers would renumber: leave the file's view */
        bool special = json_bool(v, "special", false);
        pl_status st = add_token(t, content->u.str, content->n, (int32_t)id, special,
                                 json_bool(v, "normalized", !special), json_bool(v, "lstrip", false),
                                 json_bool(v, "rstrip", false), json_bool(v, "single_word", false),
                                 cap, err);
        if (st != PL_STATUS_OK)
            return st;
    }
    return PL_STATUS_OK;
}

/* Named special tokens of the config become special (transformers _post_init). */
static pl_status mark_named_special(struct pl_tokenizer *t, const char *s, size_t n, int *cap,
                                    struct pl_err *err)
{
    if (n == 0)
        return PL_STATUS_OK;
    int32_t have = tok_strmap_get(&t->added_by_content, s, n);
    if (have >= 0) {
        t->added[have].special = true;
        return PL_STATUS_OK;
    }
    int32_t id = tok_strmap_get(&t->bpe.vocab, s, n);
    if (id < 0) {
        /* A new token gets the next free id, as Rust's AddedVocabulary assigns it. */
        id = t->n_ids;
        for (int i = 0; i < t->n_added; i++)
            if (t->added[i].id >= id)
                id = t->added[i].id + 1;
        if (id >= TOK_MAX_ID)
            return pl_err_set(err, PL_STATUS_LIMIT, "too many tokens");
    }
    return add_token(t, s, n, id, true, false, false, false, false, cap, err);
}

static pl_status apply_named_specials(struct pl_tokenizer *t, const struct tok_json *cfg, int *cap,
                                      struct pl_err *err)
{
    static const char *keys[] = {"bos_token", "eos_token", "unk_token", "pad_token", "sep_token",
                                 "cls_token", "mask_token"};
    for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
        const struct tok_json *v = config_token(cfg, keys[k]);
        if (v) {
            pl_status st = mark_named_special(t, v->u.str, v->n, cap, err);
            if (st != PL_STATUS_OK)
                return st;
        }
    }
    /* transformers 5's GemmaTokenizer declares mask_token="<mask>" by default, so
     * "<mask>" counts as special (skipped on decode) even where the files mark it
     * non-special, as Gemma 3's do (checked against transformers 5.17). */
    const struct tok_json *cls = tok_json_get(cfg, "tokenizer_class");
    if (cls && cls->type == TJ_STRING &&
        (!strcmp(cls->u.str, "GemmaTokenizer") || !strcmp(cls->u.str, "GemmaTokenizerFast")) &&
        !config_token(cfg, "mask_token") &&
        tok_strmap_get(&t->bpe.vocab, "<mask>", 6) >= 0) {
        pl_status st = mark_named_special(t, "<mask>", 6, cap, err);
        if (st != PL_STATUS_OK)
            return st;
    }
    const char *lists[] = {"additional_special_tokens", "extra_special_tokens"};
    for (int l = 0; l < 2; l++) {
        const struct tok_json *arr = tok_json_get(cfg, lists[l]);
        if (!arr || (arr->type != TJ_ARRAY && arr->type != TJ_OBJECT))
            continue;
        /* extra_special_tokens may be a dict name -> token: take the values. */
        uint32_t step = arr->type == TJ_OBJECT ? 2 : 1, off = arr->type == TJ_OBJECT ? 1 : 0;
        for (uint32_t i = 0; i < arr->n; i++) {
            const struct tok_json *v = &arr->u.items[i * step + off];
            if (v->type == TJ_OBJECT)
                v = tok_json_get(v, "content");
            if (!v || v->type != TJ_STRING)
                continue;
            pl_status st = mark_named_special(t, v->u.str, v->n, cap, err);
            if (st != PL_STATUS_OK)
                return st;
        }
    }
    return PL_STATUS_OK;
}

static pl_status build_added_index(struct pl_tokenizer *t, struct pl_err *err)
{
    int32_t n = t->bpe.n_ids;
    for (int i = 0; i < t->n_added; i++)
        if (t->added[i].id + 1 > n)
            n = t->added[i].id + 1;
    t->n_ids = n;
    t->added_index_by_id = malloc((size_t)(n ? n : 1) * sizeof(int32_t));
    if (!t->added_index_by_id)
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
    for (int32_t i = 0; i < n; i++)
        t->added_index_by_id[i] = -1;
    for (int i = 0; i < t->n_added; i++)
        t->added_index_by_id[t->added[i].id] = i;
    /* Tries: specials first, then the others, so equal matches prefer specials. */
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < t->n_added; i++) {
            struct tok_added *a = &t->added[i];
            if (a->special != (pass == 0))
                continue;
            if (!a->normalized || !t->normalizer) {
                a->match = a->content;
                a->match_len = a->len;
            } else {
                struct tok_buf b = {0};
                if (!tok_buf_add(&b, a->content, a->len))
                    return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
                pl_status st = tok_normalize(t->normalizer, &b, err);
                if (st != PL_STATUS_OK) {
                    tok_buf_free(&b);
                    return st;
                }
                a->match = arena_dup(t, b.p ? b.p : "", b.n);
                a->match_len = b.n;
                tok_buf_free(&b);
                if (!a->match)
                    return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
            }
            if (a->match_len == 0)
                continue;
            struct tok_trie *trie = a->normalized ? &t->trie_norm : &t->trie_raw;
            if (!trie_insert(trie, a->match, a->match_len, i))
                return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
        }
    }
    return PL_STATUS_OK;
}

/* ---- post-processor ---- */

static pl_status tmpl_add(struct pl_tokenizer *t, bool is_seq, const int32_t *ids, int n,
                          struct pl_err *err)
{
    struct tok_template_piece *v = realloc(t->tmpl, (size_t)(t->n_tmpl + 1) * sizeof(*v));
    if (!v)
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
    t->tmpl = v;
    struct tok_template_piece *p = &t->tmpl[t->n_tmpl++];
    p->is_sequence = is_seq;
    p->n_ids = 0;
    p->ids = NULL;
    if (n) {
        p->ids = malloc((size_t)n * sizeof(int32_t));
        if (!p->ids)
            return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
        memcpy(p->ids, ids, (size_t)n * sizeof(int32_t));
        p->n_ids = n;
    }
    return PL_STATUS_OK;
}

static pl_status parse_template(struct pl_tokenizer *t, const struct tok_json *pp, const char *where,
                                struct pl_err *err)
{
    const struct tok_json *single = tok_json_get(pp, "single");
    const struct tok_json *specials = tok_json_get(pp, "special_tokens");
    if (!single || single->type != TJ_ARRAY)
        return pl_err_set(err, PL_STATUS_FORMAT, "%s.single: expected an array", where);
    t->has_template = true;
    for (uint32_t i = 0; i < single->n; i++) {
        const struct tok_json *it = &single->u.items[i];
        const struct tok_json *seq = tok_json_get(it, "Sequence");
        const struct tok_json *sp = tok_json_get(it, "SpecialToken");
        if (seq) {
            pl_status st = tmpl_add(t, true, NULL, 0, err);
            if (st != PL_STATUS_OK)
                return st;
            continue;
        }
        const struct tok_json *name = sp ? tok_json_get(sp, "id") : NULL;
        if (!name || name->type != TJ_STRING)
            return pl_err_set(err, PL_STATUS_FORMAT,
                              "%s.single[%u]: expected {\"Sequence\": ...} or "
                              "{\"SpecialToken\": {\"id\": ...}}",
                              where, i);
        const struct tok_json *def = tok_json_get(specials, name->u.str);
        const struct tok_json *ids = def ? tok_json_get(def, "ids") : NULL;
        if (!ids || ids->type != TJ_ARRAY)
            return pl_err_set(err, PL_STATUS_FORMAT, "%s.special_tokens[\"%.64s\"].ids: missing",
                              where, name->u.str);
        int32_t buf[64];
        if (ids->n > 64)
            return pl_err_set(err, PL_STATUS_LIMIT, "%s.special_tokens[\"%.64s\"]: too many ids",
                              where, name->u.str);
        for (uint32_t k = 0; k < ids->n; k++) {
            const struct tok_json *x = &ids->u.items[k];
            if (x->type != TJ_NUMBER || x->u.num < 0 || x->u.num >= TOK_MAX_ID ||
                x->u.num != (double)(int32_t)x->u.num)
                return pl_err_set(err, PL_STATUS_FORMAT,
                                  "%s.special_tokens[\"%.64s\"].ids[%u]: expected an id", where,
                                  name->u.str, k);
            buf[k] = (int32_t)x->u.num;
        }
        pl_status st = tmpl_add(t, false, buf, (int)ids->n, err);
        if (st != PL_STATUS_OK)
            return st;
    }
    return PL_STATUS_OK;
}

static pl_status parse_post_processor(struct pl_tokenizer *t, const struct tok_json *pp,
                                      const char *where, struct pl_err *err)
{
    if (tok_json_is_null(pp))
        return PL_STATUS_OK;
    const struct tok_json *ty = tok_json_get(pp, "type");
    if (!ty || ty->type != TJ_STRING)
        return pl_err_set(err, PL_STATUS_FORMAT, "%s.type: expected a string", where);
    if (!strcmp(ty->u.str, "ByteLevel"))
        return PL_STATUS_OK; /* only offsets change; ids are untouched */
    if (!strcmp(ty->u.str, "TemplateProcessing")) {
        if (t->has_template)
            return pl_err_set(err, PL_STATUS_UNSUPPORTED, "%s: more than one template", where);
        return parse_template(t, pp, where, err);
    }
    if (!strcmp(ty->u.str, "Sequence")) {
        const struct tok_json *items = tok_json_get(pp, "processors");
        if (!items || items->type != TJ_ARRAY)
            return pl_err_set(err, PL_STATUS_FORMAT, "%s.processors: expected an array", where);
        for (uint32_t i = 0; i < items->n; i++) {
            char sub[256];
            snprintf(sub, sizeof(sub), "%s.processors[%u]", where, i);
            pl_status st = parse_post_processor(t, &items->u.items[i], sub, err);
            if (st != PL_STATUS_OK)
                return st;
        }
        return PL_STATUS_OK;
    }
    return pl_err_set(err, PL_STATUS_UNSUPPORTED, "%s.type: post-processor '%s' is not supported",
                      where, ty->u.str);
}

static pl_status set_bos_eos_template(struct pl_tokenizer *t, bool add_bos, bool add_eos,
                                      struct pl_err *err)
{
    t->has_template = true;
    pl_status st;
    if (add_bos && t->bos_token && t->bos_id >= 0 && (st = tmpl_add(t, false, &t->bos_id, 1, err)))
        return st;
    if ((st = tmpl_add(t, true, NULL, 0, err)))
        return st;
    if (add_eos && t->eos_token && t->eos_id >= 0 && (st = tmpl_add(t, false, &t->eos_id, 1, err)))
        return st;
    return PL_STATUS_OK;
}

/* ---- transformers 5 class pipelines ---- */

/* Parses a built-in JSON literal (copied: the parser decodes in place). */
static pl_status parse_literal(const char *json, char *buf, size_t cap, struct tok_json_doc **doc,
                               struct pl_err *err)
{
    size_t n = strlen(json);
    if (n >= cap)
        return pl_err_set(err, PL_STATUS_INTERNAL, "built-in pipeline too long");
    memcpy(buf, json, n + 1);
    return tok_json_parse(buf, n, doc, err);
}

/* Model types whose tokenizer_class transformers 5 ignores (rule 5 of the file comment). */
static bool class_ignored_for(const char *model_type)
{
    static const char *const types[] = {"phi3", "deepseek_v2", "deepseek_v3", "mistral",
                                        "mixtral"};
    for (size_t i = 0; model_type && i < sizeof(types) / sizeof(types[0]); i++)
        if (!strcmp(model_type, types[i]))
            return true;
    return false;
}

/* Replaces normalizer / pre-tokenizer / decoder / BPE options as the
 * transformers 5 class named by tokenizer_class does (see file comment). */
static pl_status apply_class_pipeline(struct pl_tokenizer *t, const struct tok_json *cfg,
                                      const char *model_type, struct pl_err *err)
{
    const struct tok_json *cls = tok_json_get(cfg, "tokenizer_class");
    if (!cls || cls->type != TJ_STRING || class_ignored_for(model_type))
        return PL_STATUS_OK;
    bool llama = !strcmp(cls->u.str, "LlamaTokenizer") || !strcmp(cls->u.str, "LlamaTokenizerFast");
    bool gemma = !strcmp(cls->u.str, "GemmaTokenizer") || !strcmp(cls->u.str, "GemmaTokenizerFast");
    if (!llama && !gemma)
        return PL_STATUS_OK;
    char pre[512], dec[512];
    const char *norm = NULL;
    if (llama) {
        const struct tok_json *aps = tok_json_get(cfg, "add_prefix_space");
        bool add_prefix_space = !aps || aps->type != TJ_FALSE;
        bool legacy = json_bool(cfg, "legacy", false);
        const char *scheme = !add_prefix_space ? "never" : legacy ? "always" : "first";
        snprintf(pre, sizeof(pre),
                 "{\"type\":\"Metaspace\",\"replacement\":\"\\u2581\",\"prepend_scheme\":\"%s\","
                 "\"split\":false}",
                 scheme);
        snprintf(dec, sizeof(dec),
                 "{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"Replace\",\"pattern\":"
                 "{\"String\":\"\\u2581\"},\"content\":\" \"},{\"type\":\"ByteFallback\"},"
                 "{\"type\":\"Fuse\"}%s]}",
                 add_prefix_space ? ",{\"type\":\"Strip\",\"content\":\" \",\"start\":1,\"stop\":0}"
                                  : "");
        /* LlamaTokenizer's BPE: byte_fallback, fuse_unk, no unk token. */
        t->bpe.unk_token = NULL;
        t->bpe.unk_id = -1;
    } else {
        norm = "{\"type\":\"Replace\",\"pattern\":{\"String\":\" \"},\"content\":\"\\u2581\"}";
        snprintf(pre, sizeof(pre),
                 "{\"type\":\"Split\",\"pattern\":{\"String\":\" \"},\"behavior\":"
                 "\"MergedWithPrevious\",\"invert\":false}");
        snprintf(dec, sizeof(dec),
                 "{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"Replace\",\"pattern\":"
                 "{\"String\":\"\\u2581\"},\"content\":\" \"},{\"type\":\"ByteFallback\"},"
                 "{\"type\":\"Fuse\"}]}");
        const struct tok_json *unk = config_token(cfg, "unk_token");
        const char *u = unk ? unk->u.str : "<unk>";
        t->bpe.unk_token = arena_dup(t, u, strlen(u));
        if (!t->bpe.unk_token)
            return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
        t->bpe.unk_id = tok_strmap_get(&t->bpe.vocab, u, strlen(u));
    }
    t->bpe.byte_fallback = true;
    t->bpe.fuse_unk = true;
    t->bpe.ignore_merges = false;
    t->bpe.prefix = t->bpe.suffix = NULL;
    t->bpe.prefix_len = t->bpe.suffix_len = 0;

    tok_normalizer_free(t->normalizer);
    t->normalizer = NULL;
    tok_pretokenizer_free(t->pretokenizer);
    t->pretokenizer = NULL;
    tok_decoder_free(t->decoder);
    t->decoder = NULL;
    struct tok_json_doc *d = NULL;
    char buf[512];
    pl_status st = PL_STATUS_OK;
    if (norm && (st = parse_literal(norm, buf, sizeof(buf), &d, err)) == PL_STATUS_OK) {
        st = tok_normalizer_parse(tok_json_root(d), "normalizer", &t->normalizer, err);
        tok_json_free(d);
    }
    if (st == PL_STATUS_OK && (st = parse_literal(pre, buf, sizeof(buf), &d, err)) == PL_STATUS_OK) {
        st = tok_pretokenizer_parse(tok_json_root(d), "pre_tokenizer", &t->pretokenizer, err);
        tok_json_free(d);
    }
    if (st == PL_STATUS_OK && (st = parse_literal(dec, buf, sizeof(buf), &d, err)) == PL_STATUS_OK) {
        st = tok_decoder_parse(tok_json_root(d), "decoder", &t->decoder, err);
        tok_json_free(d);
    }
    return st;
}

/* ---- loading ---- */

static pl_status load_json(const struct tok_json *root, const struct tok_json *cfg,
                           const char *model_type, struct pl_tokenizer *t, struct pl_err *err)
{
    if (root->type != TJ_OBJECT)
        return pl_err_set(err, PL_STATUS_FORMAT, "expected a JSON object at the top level");
    pl_status st = parse_model(t, tok_json_get(root, "model"), err);
    if (st != PL_STATUS_OK)
        return st;
    const struct tok_json *v = tok_json_get(root, "normalizer");
    if (!tok_json_is_null(v) && (st = tok_normalizer_parse(v, "normalizer", &t->normalizer, err)))
        return st;
    v = tok_json_get(root, "pre_tokenizer");
    if (!tok_json_is_null(v) &&
        (st = tok_pretokenizer_parse(v, "pre_tokenizer", &t->pretokenizer, err)))
        return st;
    v = tok_json_get(root, "decoder");
    if (!tok_json_is_null(v) && (st = tok_decoder_parse(v, "decoder", &t->decoder, err)))
        return st;
    if (cfg && (st = apply_class_pipeline(t, cfg, model_type, err)))
        return st;

    int cap = 0;
    if (!tok_strmap_init(&t->added_by_content, 64))
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
    if ((st = parse_added_tokens(t, tok_json_get(root, "added_tokens"), &cap, err)))
        return st;
    if (cfg) {
        if ((st = apply_config_added(t, cfg, &cap, err)))
            return pl_err_prefix(err, "tokenizer_config.json");
        if ((st = apply_named_specials(t, cfg, &cap, err)))
            return st;
    }
    if ((st = build_added_index(t, err)))
        return st;

    t->bos_id = t->eos_id = -1;
    if (cfg) {
        const struct tok_json *b = config_token(cfg, "bos_token"), *e = config_token(cfg, "eos_token");
        if (b) {
            t->bos_token = arena_dup(t, b->u.str, b->n);
            t->bos_id = lookup_id(t, b->u.str, b->n);
        }
        if (e) {
            t->eos_token = arena_dup(t, e->u.str, e->n);
            t->eos_id = lookup_id(t, e->u.str, e->n);
        }
        const struct tok_json *ct = tok_json_get(cfg, "chat_template");
        if (ct && ct->type == TJ_STRING) {
            t->chat_template = arena_dup(t, ct->u.str, ct->n);
        } else if (ct && ct->type == TJ_ARRAY) {
            for (uint32_t i = 0; i < ct->n; i++) {
                const struct tok_json *name = tok_json_get(&ct->u.items[i], "name");
                const struct tok_json *tpl = tok_json_get(&ct->u.items[i], "template");
                if (name && name->type == TJ_STRING && !strcmp(name->u.str, "default") && tpl &&
                    tpl->type == TJ_STRING)
                    t->chat_template = arena_dup(t, tpl->u.str, tpl->n);
            }
        }
        t->clean_up_tokenization_spaces = json_bool(cfg, "clean_up_tokenization_spaces", false);
        t->split_special_tokens = json_bool(cfg, "split_special_tokens", false);
    }

    const struct tok_json *pp = tok_json_get(root, "post_processor");
    bool explicit_bos_eos = cfg && (json_bool(cfg, "add_bos_token", false) ||
                                    json_bool(cfg, "add_eos_token", false));
    if (explicit_bos_eos || tok_json_is_null(pp)) {
        st = set_bos_eos_template(t, cfg && json_bool(cfg, "add_bos_token", false),
                                  cfg && json_bool(cfg, "add_eos_token", false), err);
    } else {
        st = parse_post_processor(t, pp, "post_processor", err);
    }
    if (st != PL_STATUS_OK)
        return st;
    for (int i = 0; i < t->n_tmpl; i++)
        for (int k = 0; k < t->tmpl[i].n_ids; k++)
            if (t->tmpl[i].ids[k] >= t->n_ids)
                return pl_err_set(err, PL_STATUS_FORMAT,
                                  "post_processor: special token id %d is out of the vocab",
                                  t->tmpl[i].ids[k]);
    return PL_STATUS_OK;
}

/* Loads from writable buffers that the JSON reader may decode in place. */
static pl_status load_owned(char *tokenizer_json, size_t len, char *config_json, size_t config_len,
                            const char *model_type, struct pl_tokenizer **out,
                            struct pl_err *err)
{
    *out = NULL;
    struct tok_json_doc *doc = NULL, *cdoc = NULL;
    pl_status st = tok_json_parse(tokenizer_json, len, &doc, err);
    if (st != PL_STATUS_OK)
        return pl_err_prefix(err, "tokenizer.json");
    if (config_json) {
        st = tok_json_parse(config_json, config_len, &cdoc, err);
        if (st != PL_STATUS_OK) {
            tok_json_free(doc);
            return pl_err_prefix(err, "tokenizer_config.json");
        }
        if (tok_json_root(cdoc)->type != TJ_OBJECT) {
            tok_json_free(doc);
            tok_json_free(cdoc);
            return pl_err_set(err, PL_STATUS_FORMAT,
                              "tokenizer_config.json: expected a JSON object at the top level");
        }
    }
    struct pl_tokenizer *t = calloc(1, sizeof(*t));
    if (!t) {
        st = pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
    } else {
        st = load_json(tok_json_root(doc), cdoc ? tok_json_root(cdoc) : NULL, model_type, t, err);
        if (st != PL_STATUS_OK && !strstr(err ? err->msg : "", "tokenizer_config.json"))
            pl_err_prefix(err, "tokenizer.json");
    }
    tok_json_free(doc);
    tok_json_free(cdoc);
    if (st != PL_STATUS_OK) {
        pl_tokenizer_free(t);
        return st;
    }
    *out = t;
    return PL_STATUS_OK;
}

pl_status pl_tokenizer_load_mem_as(const char *tokenizer_json, size_t len, const char *config_json,
                                   size_t config_len, const char *model_type,
                                   struct pl_tokenizer **out, struct pl_err *err)
{
    *out = NULL;
    if (!tokenizer_json)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT, "load: no tokenizer.json text");
    char *tj = malloc(len + 1), *cj = config_json ? malloc(config_len + 1) : NULL;
    if (!tj || (config_json && !cj)) {
        free(tj);
        free(cj);
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
    }
    memcpy(tj, tokenizer_json, len);
    if (cj)
        memcpy(cj, config_json, config_len);
    pl_status st = load_owned(tj, len, cj, config_len, model_type, out, err);
    free(tj);
    free(cj);
    return st;
}

static pl_status read_file(const char *path, char **data, size_t *len, struct pl_err *err)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return pl_err_set(err, errno == ENOENT ? PL_STATUS_NOT_FOUND : PL_STATUS_IO,
                          "%s: cannot open: %s", path, strerror(errno));
    struct tok_buf b = {0};
    long size = -1;
    if (fseek(f, 0, SEEK_END) == 0) {
        size = ftell(f);
        rewind(f);
    }
    if (size > (1L << 31)) {
        fclose(f);
        return pl_err_set(err, PL_STATUS_LIMIT, "%s: file too large", path);
    }
    /* One read into an exactly sized buffer (avoids re-copying 33 MB files). */
    if (size > 0 && !tok_buf_reserve(&b, (size_t)size)) {
        fclose(f);
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
    }
    size_t n;
    char chunk[1 << 16];
    if (size > 0) {
        n = fread(b.p, 1, (size_t)size, f);
        b.n = n;
        b.p[n] = 0;
    }
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        if (b.n + n > ((size_t)1 << 31) || !tok_buf_add(&b, chunk, n)) {
            fclose(f);
            tok_buf_free(&b);
            return pl_err_set(err, PL_STATUS_LIMIT, "%s: file too large", path);
        }
    }
    bool bad = ferror(f);
    fclose(f);
    if (bad) {
        tok_buf_free(&b);
        return pl_err_set(err, PL_STATUS_IO, "%s: read error", path);
    }
    if (!b.p && !tok_buf_reserve(&b, 0))
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
    *data = b.p;
    *len = b.n;
    return PL_STATUS_OK;
}

pl_status pl_tokenizer_load_mem(const char *tokenizer_json, size_t len, const char *config_json,
                                size_t config_len, struct pl_tokenizer **out, struct pl_err *err)
{
    return pl_tokenizer_load_mem_as(tokenizer_json, len, config_json, config_len, NULL, out, err);
}

/* model_type of the model directory's config.json, into buf ("" when the file is absent
 * or names none); only a malformed file that exists is an error. */
static pl_status read_model_type(const char *path, char *buf, size_t cap, struct pl_err *err)
{
    buf[0] = 0;
    char *data = NULL;
    size_t len = 0;
    pl_status st = read_file(path, &data, &len, err);
    if (st == PL_STATUS_NOT_FOUND) {
        if (err)
            err->msg[0] = 0;
        return PL_STATUS_OK;
    }
    if (st != PL_STATUS_OK)
        return st;
    struct tok_json_doc *doc = NULL;
    st = tok_json_parse(data, len, &doc, err);
    if (st == PL_STATUS_OK) {
        const struct tok_json *mt = tok_json_get(tok_json_root(doc), "model_type");
        if (mt && mt->type == TJ_STRING)
            snprintf(buf, cap, "%s", mt->u.str);
        tok_json_free(doc);
    } else {
        pl_err_prefix(err, "%s", path);
    }
    free(data);
    return st;
}

static pl_status load_files_as(const char *tokenizer_json_path, const char *config_path,
                               const char *model_type, struct pl_tokenizer **out,
                               struct pl_err *err)
{
    *out = NULL;
    char *tj = NULL, *cj = NULL;
    size_t tl = 0, cl = 0;
    pl_status st = read_file(tokenizer_json_path, &tj, &tl, err);
    if (st != PL_STATUS_OK)
        return st;
    if (config_path && (st = read_file(config_path, &cj, &cl, err)) != PL_STATUS_OK) {
        free(tj);
        return st;
    }
    st = load_owned(tj, tl, cj, cl, model_type, out, err);
    free(tj);
    free(cj);
    return st;
}

pl_status pl_tokenizer_load_files(const char *tokenizer_json_path, const char *config_path,
                                  struct pl_tokenizer **out, struct pl_err *err)
{
    return load_files_as(tokenizer_json_path, config_path, NULL, out, err);
}

pl_status pl_tokenizer_load(const char *dir, struct pl_tokenizer **out, struct pl_err *err)
{
    size_t n = strlen(dir) + 32;
    char *tp = malloc(n), *cp = malloc(n);
    if (!tp || !cp) {
        free(tp);
        free(cp);
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
    }
    char model_type[64];
    snprintf(cp, n, "%s/config.json", dir);
    pl_status st = read_model_type(cp, model_type, sizeof(model_type), err);
    if (st != PL_STATUS_OK) {
        free(tp);
        free(cp);
        return st;
    }
    snprintf(tp, n, "%s/tokenizer.json", dir);
    snprintf(cp, n, "%s/tokenizer_config.json", dir);
    FILE *f = fopen(cp, "rb");
    bool has_cfg = f != NULL;
    if (f)
        fclose(f);
    st = load_files_as(tp, has_cfg ? cp : NULL, model_type[0] ? model_type : NULL, out, err);
    free(tp);
    free(cp);
    return st;
}

void pl_tokenizer_free(struct pl_tokenizer *t)
{
    if (!t)
        return;
    tok_normalizer_free(t->normalizer);
    tok_pretokenizer_free(t->pretokenizer);
    tok_decoder_free(t->decoder);
    tok_strmap_free(&t->bpe.vocab);
    tok_mergemap_free(&t->bpe.merges);
    free(t->bpe.id_to_token);
    free(t->bpe.token_len);
    for (int i = 0; i < t->n_tmpl; i++)
        free(t->tmpl[i].ids);
    free(t->tmpl);
    free(t->added);
    tok_strmap_free(&t->added_by_content);
    free(t->added_index_by_id);
    free(t->trie_raw.nodes);
    free(t->trie_norm.nodes);
    tok_arena_free(&t->arena);
    free(t);
}

/* ---- encode ---- */

struct enc_ctx {
    const struct pl_tokenizer *t;
    int32_t *ids;
    size_t n_ids, cap_ids;
    struct tok_pieces pieces, tmp;
    struct tok_bpe_scratch bpe;
    struct tok_buf norm;
    struct pl_err *err;
};

static bool push_id(struct enc_ctx *c, int32_t id)
{
    if (c->n_ids == c->cap_ids) {
        size_t cap = c->cap_ids ? c->cap_ids * 2 : 64;
        int32_t *v = realloc(c->ids, cap * sizeof(*v));
        if (!v)
            return false;
        c->ids = v;
        c->cap_ids = cap;
    }
    c->ids[c->n_ids++] = id;
    return true;
}

static int32_t last_cp(const char *s, size_t n)
{
    if (n == 0)
        return -1;
    size_t k = n - 1;
    while (k > 0 && ((unsigned char)s[k] & 0xC0) == 0x80)
        k--;
    int32_t cp;
    tok_utf8_decode(s + k, &cp);
    return cp;
}

/* HF AddedVocabulary::find_matches: [start,end) of each kept match over s. */
struct added_hit {
    size_t start, end;
    int32_t token;
};

static pl_status find_added(const struct pl_tokenizer *t, const struct tok_trie *trie, const char *s,
                            size_t n, struct added_hit **hits, size_t *n_hits, struct pl_err *err)
{
    size_t cap = 0;
    *n_hits = 0;
    if (trie->n == 0)
        return PL_STATUS_OK;
    size_t start_offset = 0;
    for (size_t i = 0; i < n;) {
        size_t len = 0;
        int32_t tk = -1;
        /* Only bytes that can begin a token are worth a walk. */
        if (trie_child(trie, 0, (unsigned char)s[i]) >= 0)
            tk = trie_longest(trie, s + i, n - i, &len);
        if (tk < 0) {
            i++;
            continue;
        }
        size_t ms = i, me = i + len;
        i = me; /* the automaton resumes after the raw match, kept or not */
        const struct tok_added *a = &t->added[tk];
        if (t->split_special_tokens && a->special)
            continue;
        if (a->single_word) {
            int32_t before = last_cp(s, ms), after = -1;
            if (me < n)
                tok_utf8_decode(s + me, &after);
            bool start_space = ms == 0 || !tok_cp_is_word(before);
            bool stop_space = me == n || !tok_cp_is_word(after);
            if (!start_space || !stop_space)
                continue;
        }
        if (a->lstrip) {
            size_t k = ms;
            while (k > 0) {
                size_t j = k - 1;
                while (j > 0 && ((unsigned char)s[j] & 0xC0) == 0x80)
                    j--;
                int32_t cp;
                tok_utf8_decode(s + j, &cp);
                if (!tok_cp_is_whitespace(cp))
                    break;
                k = j;
            }
            ms = k > start_offset ? k : start_offset;
        }
        if (a->rstrip) {
            while (me < n) {
                int32_t cp;
                int l = tok_utf8_decode(s + me, &cp);
                if (!tok_cp_is_whitespace(cp))
                    break;
                me += l;
            }
        }
        if (*n_hits == cap) {
            cap = cap ? cap * 2 : 16;
            struct added_hit *v = realloc(*hits, cap * sizeof(*v));
            if (!v)
                return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
            *hits = v;
        }
        (*hits)[(*n_hits)++] = (struct added_hit){ms, me, tk};
        start_offset = me;
    }
    return PL_STATUS_OK;
}

/* Pre-tokenizes and BPE-encodes one segment that holds no added token. */
static pl_status encode_plain(struct enc_ctx *c, const char *s, size_t n, bool at_origin)
{
    const struct pl_tokenizer *t = c->t;
    if (n == 0)
        return PL_STATUS_OK;
    tok_pieces_clear(&c->pieces);
    if (!tok_pieces_push(&c->pieces, s, n, at_origin))
        return pl_err_set(c->err, PL_STATUS_NO_MEMORY, "out of memory");
    if (t->pretokenizer) {
        pl_status st = tok_pretokenize(t->pretokenizer, &c->pieces, &c->tmp, c->err);
        if (st != PL_STATUS_OK)
            return st;
    }
    for (size_t i = 0; i < c->pieces.n; i++) {
        pl_status st = tok_bpe_encode_word(&t->bpe, c->pieces.text.p + c->pieces.start[i],
                                           c->pieces.len[i], &c->bpe, &c->ids, &c->n_ids,
                                           &c->cap_ids, c->err);
        if (st != PL_STATUS_OK)
            return st;
    }
    return PL_STATUS_OK;
}

/* A segment between non-normalized added tokens: normalize, then split on the
 * normalized added tokens. */
static pl_status encode_segment(struct enc_ctx *c, const char *s, size_t n, bool at_origin)
{
    const struct pl_tokenizer *t = c->t;
    if (n == 0)
        return PL_STATUS_OK;
    c->norm.n = 0;
    if (!tok_buf_add(&c->norm, s, n))
        return pl_err_set(c->err, PL_STATUS_NO_MEMORY, "out of memory");
    if (t->normalizer) {
        pl_status st = tok_normalize(t->normalizer, &c->norm, c->err);
        if (st != PL_STATUS_OK)
            return st;
    }
    /* encode_plain reuses buffers, so work on a private copy of the normalized text. */
    struct tok_buf text = c->norm;
    c->norm = (struct tok_buf){0};
    struct added_hit *hits = NULL;
    size_t n_hits = 0;
    pl_status st = find_added(t, &t->trie_norm, text.p ? text.p : "", text.n, &hits, &n_hits, c->err);
    size_t pos = 0;
    for (size_t h = 0; st == PL_STATUS_OK && h < n_hits; h++) {
        if (pos < hits[h].start)
            st = encode_plain(c, text.p + pos, hits[h].start - pos, at_origin && pos == 0);
        if (st == PL_STATUS_OK && !push_id(c, t->added[hits[h].token].id))
            st = pl_err_set(c->err, PL_STATUS_NO_MEMORY, "out of memory");
        pos = hits[h].end;
    }
    if (st == PL_STATUS_OK && pos < text.n)
        st = encode_plain(c, text.p + pos, text.n - pos, at_origin && pos == 0);
    free(hits);
    tok_buf_free(&c->norm);
    c->norm = text;
    return st;
}

pl_status pl_tokenizer_encode(const struct pl_tokenizer *t, const char *text, size_t len,
                              bool add_special_tokens, int32_t **ids, int *n_ids,
                              struct pl_err *err)
{
    *ids = NULL;
    *n_ids = 0;
    if (!t || (!text && len))
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT, "encode: no tokenizer or text");
    if (len > (size_t)1 << 30)
        return pl_err_set(err, PL_STATUS_LIMIT, "encode: text longer than 1 GiB");
    struct enc_ctx c = {.t = t, .err = err};
    struct tok_buf clean = {0};
    const char *s = text ? text : "";
    if (!tok_utf8_is_valid(s, len)) {
        /* Bytes that are not UTF-8 become U+FFFD, as a str decoded with errors="replace". */
        if (!tok_utf8_lossy_append(&clean, s, len))
            return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
        s = clean.p;
        len = clean.n;
    }
    struct added_hit *hits = NULL;
    size_t n_hits = 0;
    pl_status st = find_added(t, &t->trie_raw, s, len, &hits, &n_hits, err);
    size_t pos = 0;
    for (size_t h = 0; st == PL_STATUS_OK && h < n_hits; h++) {
        if (pos < hits[h].start)
            st = encode_segment(&c, s + pos, hits[h].start - pos, pos == 0);
        if (st == PL_STATUS_OK && !push_id(&c, t->added[hits[h].token].id))
            st = pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
        pos = hits[h].end;
    }
    if (st == PL_STATUS_OK && pos < len)
        st = encode_segment(&c, s + pos, len - pos, pos == 0);
    free(hits);
    tok_buf_free(&clean);
    tok_pieces_free(&c.pieces);
    tok_pieces_free(&c.tmp);
    tok_bpe_scratch_free(&c.bpe);
    tok_buf_free(&c.norm);

    if (st == PL_STATUS_OK && t->has_template) {
        /* Post-process: splice the content ids into the template. */
        size_t total = 0;
        for (int i = 0; i < t->n_tmpl; i++)
            total += t->tmpl[i].is_sequence ? c.n_ids
                     : add_special_tokens ? (size_t)t->tmpl[i].n_ids
                                          : 0;
        int32_t *v = malloc((total ? total : 1) * sizeof(*v));
        if (!v) {
            st = pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
        } else {
            size_t k = 0;
            for (int i = 0; i < t->n_tmpl; i++) {
                if (t->tmpl[i].is_sequence) {
                    if (c.n_ids)
                        memcpy(v + k, c.ids, c.n_ids * sizeof(*v));
                    k += c.n_ids;
                } else if (add_special_tokens) {
                    memcpy(v + k, t->tmpl[i].ids, (size_t)t->tmpl[i].n_ids * sizeof(*v));
                    k += (size_t)t->tmpl[i].n_ids;
                }
            }
            free(c.ids);
            c.ids = v;
            c.n_ids = total;
        }
    }
    if (st == PL_STATUS_OK && c.n_ids > (size_t)INT32_MAX)
        st = pl_err_set(err, PL_STATUS_LIMIT, "encode: too many tokens");
    if (st != PL_STATUS_OK) {
        free(c.ids);
        return st;
    }
    if (!c.ids && !(c.ids = malloc(sizeof(int32_t))))
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
    *ids = c.ids;
    *n_ids = (int)c.n_ids;
    return PL_STATUS_OK;
}

/* ---- decode ---- */

static bool id_is_special(const struct pl_tokenizer *t, int32_t id)
{
    int32_t a = t->added_index_by_id[id];
    return a >= 0 && t->added[a].special;
}

pl_status tok_decode_ids(const struct pl_tokenizer *t, const int32_t *ids, int n, bool skip_special,
                         struct tok_buf *out, struct pl_err *err)
{
    struct tok_strlist l = {0};
    for (int i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= t->n_ids)
            continue; /* no token has this id (a model's padded vocab): "", as HF */
        int32_t a = t->added_index_by_id[id];
        const char *s;
        size_t sl;
        if (a >= 0) {
            if (skip_special && t->added[a].special)
                continue;
            s = t->added[a].content;
            sl = t->added[a].len;
        } else if (id < t->bpe.n_ids && t->bpe.id_to_token[id]) {
            s = t->bpe.id_to_token[id];
            sl = t->bpe.token_len[id];
        } else {
            continue; /* a gap in the vocab: HF drops it */
        }
        if (!tok_strlist_push(&l, s, sl)) {
            tok_strlist_free(&l);
            return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
        }
    }
    pl_status st = PL_STATUS_OK;
    if (t->decoder)
        st = tok_decode_chain(t->decoder, &l, err);
    for (size_t i = 0; st == PL_STATUS_OK && i < l.n; i++) {
        bool ok = (!t->decoder && i > 0 ? tok_buf_addc(out, ' ') : true) &&
                  tok_buf_add(out, l.v[i].p ? l.v[i].p : "", l.v[i].n);
        if (!ok)
            st = pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
    }
    tok_strlist_free(&l);
    return st;
}

pl_status pl_tokenizer_decode(const struct pl_tokenizer *t, const int32_t *ids, int n_ids,
                              bool skip_special_tokens, char **text, size_t *len,
                              struct pl_err *err)
{
    *text = NULL;
    if (len)
        *len = 0;
    if (!t || n_ids < 0 || (!ids && n_ids))
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT, "decode: no tokenizer or ids");
    /* ids past the tokenizer (a model vocab padded beyond it, as Qwen's 151936 over
     * ~151670 tokens) have no token and decode to "" as in transformers and vLLM;
     * a negative id is no token id at all */
    for (int i = 0; i < n_ids; i++)
        if (ids[i] < 0)
            return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                              "decode: token id %d at position %d is negative", ids[i], i);
    struct tok_buf out = {0};
    pl_status st = tok_decode_ids(t, ids, n_ids, skip_special_tokens, &out, err);
    if (st == PL_STATUS_OK && !out.p && !tok_buf_reserve(&out, 0))
        st = pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
    if (st != PL_STATUS_OK) {
        tok_buf_free(&out);
        return st;
    }
    *text = out.p;
    if (len)
        *len = out.n;
    return PL_STATUS_OK;
}

/* ---- queries ---- */

int pl_tokenizer_vocab_size(const struct pl_tokenizer *t) { return t ? t->n_ids : 0; }

bool pl_tokenizer_has_id(const struct pl_tokenizer *t, int32_t id)
{
    return pl_tokenizer_id_to_token(t, id) != NULL;
}

int32_t pl_tokenizer_token_to_id(const struct pl_tokenizer *t, const char *s)
{
    if (!t || !s)
        return -1;
    return lookup_id(t, s, strlen(s));
}

const char *pl_tokenizer_id_to_token(const struct pl_tokenizer *t, int32_t id)
{
    if (!t || id < 0 || id >= t->n_ids)
        return NULL;
    int32_t a = t->added_index_by_id[id];
    if (a >= 0)
        return t->added[a].content;
    return id < t->bpe.n_ids ? t->bpe.id_to_token[id] : NULL;
}

static void decoder_kinds(const struct tok_decoder *d, bool *byte_level, bool *byte_fallback,
                          int32_t *space_char)
{
    if (!d)
        return;
    if (d->type == TOK_DEC_BYTE_LEVEL)
        *byte_level = true;
    else if (d->type == TOK_DEC_BYTE_FALLBACK)
        *byte_fallback = true;
    else if (d->type == TOK_DEC_METASPACE)
        *space_char = d->replacement;
    else if (d->type == TOK_DEC_REPLACE)
        *space_char = 0x2581; /* SentencePiece's Replace("\u2581", " ") */
    for (int i = 0; i < d->n_items; i++)
        decoder_kinds(d->items[i], byte_level, byte_fallback, space_char);
}

int pl_tokenizer_token_bytes(const struct pl_tokenizer *t, int32_t id, char *buf, int cap)
{
    const char *s = pl_tokenizer_id_to_token(t, id);
    if (!s)
        return -1;
    int n = 0;
#define PUT(c)                                                                                     \
    do {                                                                                           \
        if (n < cap)                                                                               \
            buf[n] = (char)(c);                                                                    \
        n++;                                                                                       \
    } while (0)
    if (t->added_index_by_id[id] >= 0) {
        const struct tok_added *a = &t->added[t->added_index_by_id[id]];
        for (size_t i = 0; i < a->len; i++)
            PUT(a->content[i]);
        return n;
    }
    bool byte_level = false, byte_fallback = false;
    int32_t space_char = -1;
    decoder_kinds(t->decoder, &byte_level, &byte_fallback, &space_char);
    size_t len = strlen(s);
    if (byte_fallback && len == 6 && !memcmp(s, "<0x", 3) && s[5] == '>') {
        unsigned v;
        if (sscanf(s + 3, "%2x", &v) == 1) {
            PUT(v);
            return n;
        }
    }
    for (size_t i = 0; i < len;) {
        int32_t cp;
        int k = tok_utf8_decode(s + i, &cp);
        if (k <= 0)
            k = 1, cp = -1;
        int b = byte_level && cp >= 0 ? tok_byte_level_byte(cp) : -1;
        if (b >= 0) {
            PUT(b);
        } else if (cp >= 0 && cp == space_char) {
            PUT(' ');
        } else {
            for (int j = 0; j < k; j++)
                PUT(s[i + (size_t)j]);
        }
        i += (size_t)k;
    }
#undef PUT
    return n;
}

bool pl_tokenizer_is_special(const struct pl_tokenizer *t, int32_t id)
{
    if (!t || id < 0 || id >= t->n_ids)
        return false;
    return id_is_special(t, id);
}

const char *pl_tokenizer_bos_token(const struct pl_tokenizer *t) { return t ? t->bos_token : NULL; }
const char *pl_tokenizer_eos_token(const struct pl_tokenizer *t) { return t ? t->eos_token : NULL; }
int32_t pl_tokenizer_bos_id(const struct pl_tokenizer *t) { return t ? t->bos_id : -1; }
int32_t pl_tokenizer_eos_id(const struct pl_tokenizer *t) { return t ? t->eos_id : -1; }
const char *pl_tokenizer_chat_template(const struct pl_tokenizer *t)
{
    return t ? t->chat_template : NULL;
}
