/*
 * llama.c -- the Llama / Mistral / Qwen2 / Qwen3 decoder on backend ops.
 *
 * Owns: struct pl_llama (borrowed config, weights and backend; the rope
 * table and every scratch activation, sized once for max_tokens tokens) and
 * the forward pass of one flat batch. Per layer, with the residual stream
 * `res` and vLLM's fused residual add (norm(h, res): res += h; return
 * rmsnorm(res)):
 *
 *   res = embed(ids)                       (layer 0 normalises res directly)
 *   x = norm(h, res)                       h: previous layer's MLP output
 *   q, k, v = x Wq^T (+bq), x Wk^T (+bk), x Wv^T (+bv)
 *   q, k = per-head rmsnorm (Qwen3 q_norm / k_norm)      before rope
 *   q, k = rope(q, k, positions)
 *   cache[slot_mapping] = k, v             then paged attention over the cache
 *   h = attn Wo^T (+bo);  x = norm(h, res)
 *   h = (silu(x Wg^T) * x Wu^T) Wd^T
 *   logits rows: final norm(h, res) on those rows only, then x Wlm^T
 *   hidden rows (pooling): final norm(h, res) on those rows, downloaded as fp32
 *
 * The final norm is applied after gathering the logits rows: rmsnorm works
 * row by row, so the result equals norm-then-gather and skips the other rows.
 * Decode steps on backends with op graphs (CUDA): a batch of decodes only
 * (one token per sequence) is padded to the next of a fixed set of sizes
 * (1, 2, 4, 8, 16, 24, ... as vLLM captures) and the layer loop is replayed
 * from a graph recorded the first time that size runs. Padding rows are
 * sequences of context 0 whose token goes nowhere (slot -1): every op works
 * row by row, so they cannot change the real rows. The batch arrays are staged
 * in host memory the backend copies from fastest (pinned on CUDA) and uploaded
 * into fixed buffers, which is what the recorded ops read.
 * Invariants: forward() allocates nothing (a graph is recorded once per size);
 * every batch is validated before any kernel indexes the KV cache with it
 * (block ids, slots, token ids).
 */
#include "model/llama.h"

#include "engine/sampler.h"
#include "model/rope.h"

#include <assert.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Logits rows computed per pass (bounds the [rows, vocab] fp32 scratch: 128 MiB for
 * Llama 3's vocabulary). A decode step of 256 sequences is one LM-head GEMM: in chunks
 * of 64 the four passes cost 4 x 457 us on the H100 against about 0.9 ms for one. */
#define LOGITS_CHUNK 256
/* Recorded decode graphs: sizes 1, 2, 4, then multiples of 8 up to max_seqs, times
 * context buckets 256, 512, ... (the attention's split count is chosen from the
 * recorded context bound: a bound close to the real one keeps short contexts from
 * being cut into many empty splits). */
#define MAX_GRAPHS 160
/* Batches of at most this many rows use the backend's fused gate_up_silu op (CUDA routes
 * n <= 4 to its GEMV kernels, where the fused op keeps gate and up on chip). */
#define FUSED_MLP_MAX_ROWS 4
#define CTX_BUCKETS 12

struct pl_llama {
    const struct pl_model_config *cfg;
    const struct pl_weights *w;
    struct pl_backend *be;
    int max_tokens, max_seqs, max_blocks_per_seq;
    int q_dim, kv_dim, logits_chunk;

    struct pl_rope rope;  /* rope.inv_freq points at d_inv_freq */
    float *d_inv_freq;    /* [rot_dim / 2] */

    /* scratch activations (backend memory, the backend's act dtype), T = max_tokens */
    float *res;    /* [T, hidden] residual stream */
    float *h;      /* [T, hidden] sublayer output */
    float *x;      /* [T, hidden] normalised sublayer input */
    float *q;      /* [T, q_dim] */
    float *k;      /* [T, kv_dim] */
    float *v;      /* [T, kv_dim] */
    float *attn;   /* [T, q_dim] */
    float *gate;   /* [T, intermediate]; also silu(gate) * up */
    float *up;     /* [T, intermediate] */
    float *l_res;  /* [logits_chunk, hidden] gathered rows */
    float *l_h;    /* [logits_chunk, hidden] */
    float *l_x;    /* [logits_chunk, hidden] */
    float *logits; /* [logits_chunk, vocab] */

    /* batch arrays in backend memory */
    int32_t *d_ids, *d_pos, *d_seq_lens, *d_slots; /* [T] */
    int32_t *d_cu;                                 /* [max_seqs + 1] */
    int32_t *d_ctx;                                /* [max_seqs] */
    int32_t *d_tables;                             /* [max_seqs, max_blocks_per_seq] */
    int32_t *d_logit_rows;                         /* [T] */

    /* host staging of the batch arrays (pinned where the backend offers it), same
     * shapes as the device arrays above */
    int32_t *h_stage;
    bool h_stage_pinned;
    int32_t *h_ids, *h_pos, *h_seq_lens, *h_slots, *h_cu, *h_ctx, *h_tables, *h_logit_rows;

    /* decode graphs by padded size; graph_mb: the block-table width they were recorded
     * with (a batch of another width re-records) */
    bool use_graphs;
    void *graphs[MAX_GRAPHS][CTX_BUCKETS];
    int graph_mb[MAX_GRAPHS][CTX_BUCKETS];
    int n_graphs_recorded;

    /* pl_llama_forward_sample's request to the logits section (NULL: download logits) */
    const struct sample_job *job;
    int32_t *h_row_map;                            /* host [T]: a chunk's sampler rows */
};

/* Sampler rows of one forward (pl_llama_forward_sample's arguments). */
struct sample_job {
    const int32_t *row_src;             /* [n_rows] logits row of each, nondecreasing */
    int n_rows;
    const struct pl_sampler_row *rows;  /* [n_rows] */
    const double *uniforms;             /* [n_rows] */
    struct pl_sample_result *out;       /* [n_rows] */
};

static void *be_alloc(struct pl_llama *m, size_t n_bytes, pl_status *st)
{
    if (*st != PL_STATUS_OK)
        return NULL;
    void *p = m->be->ops->alloc(m->be, n_bytes);
    if (!p)
        *st = PL_STATUS_NO_MEMORY;
    return p;
}

static void be_release(struct pl_backend *be, void *p)
{
    if (p)
        be->ops->free(be, p);
}

/* Checks one weight slot: present, shaped [rows, cols], a dtype the backend runs. */
static pl_status check_weight(struct pl_backend *be, const struct pl_weight *w, const char *name,
                              int layer, int64_t rows, int64_t cols, enum pl_op op,
                              struct pl_err *err)
{
    char where[96];
    if (layer >= 0)
        snprintf(where, sizeof(where), "layer %d %s", layer, name);
    else
        snprintf(where, sizeof(where), "%s", name);
    if (!w->data)
        return pl_err_set(err, PL_STATUS_NOT_FOUND, "llama: weight %s is missing", where);
    if (w->rows != rows || w->cols != cols)
        return pl_err_set(err, PL_STATUS_FORMAT,
                          "llama: weight %s is [%lld, %lld], the config implies [%lld, %lld]",
                          where, (long long)w->rows, (long long)w->cols, (long long)rows,
                          (long long)cols);
    if (!be->ops->supports(be, op, w->dtype))
        return pl_err_set(err, PL_STATUS_UNSUPPORTED, "llama: weight %s: the %s backend has no %s kernel",
                          where, be->ops->name, pl_dtype_name(w->dtype));
    return PL_STATUS_OK;
}

static pl_status check_weights(const struct pl_model_config *c, const struct pl_weights *w,
                               struct pl_backend *be, struct pl_err *err)
{
    const int64_t hid = c->hidden_size, qd = (int64_t)c->n_heads * c->head_dim;
    const int64_t kvd = (int64_t)c->n_kv_heads * c->head_dim, inter = c->intermediate_size;
    pl_status st;
#define CHECK_W(W, NAME, L, R, C, OP)                                                          \
    do {                                                                                       \
        if ((st = check_weight(be, &(W), NAME, L, R, C, OP, err)) != PL_STATUS_OK)             \
            return st;                                                                         \
    } while (0)
    if (w->n_layers != c->n_layers || !w->layers)
        return pl_err_set(err, PL_STATUS_FORMAT, "llama: weights have %d layers, config %d",
                          w->n_layers, c->n_layers);
    CHECK_W(w->embed, "embed_tokens", -1, c->vocab_size, hid, PL_OP_EMBED);
    CHECK_W(w->final_norm, "norm", -1, 1, hid, PL_OP_RMSNORM);
    CHECK_W(w->lm_head, "lm_head", -1, c->vocab_size, hid, PL_OP_LOGITS);
    for (int l = 0; l < c->n_layers; l++) {
        const struct pl_layer_weights *L = &w->layers[l];
        CHECK_W(L->attn_norm, "input_layernorm", l, 1, hid, PL_OP_RMSNORM);
        CHECK_W(L->wq, "q_proj", l, qd, hid, PL_OP_MATMUL);
        CHECK_W(L->wk, "k_proj", l, kvd, hid, PL_OP_MATMUL);
        CHECK_W(L->wv, "v_proj", l, kvd, hid, PL_OP_MATMUL);
        CHECK_W(L->wo, "o_proj", l, hid, qd, PL_OP_MATMUL);
        CHECK_W(L->ffn_norm, "post_attention_layernorm", l, 1, hid, PL_OP_RMSNORM);
        CHECK_W(L->w_gate, "gate_proj", l, inter, hid, PL_OP_MATMUL);
        CHECK_W(L->w_up, "up_proj", l, inter, hid, PL_OP_MATMUL);
        CHECK_W(L->w_down, "down_proj", l, hid, inter, PL_OP_MATMUL);
        if (c->attention_bias) {
            CHECK_W(L->bq, "q_proj.bias", l, 1, qd, PL_OP_MATMUL);
            CHECK_W(L->bk, "k_proj.bias", l, 1, kvd, PL_OP_MATMUL);
            CHECK_W(L->bv, "v_proj.bias", l, 1, kvd, PL_OP_MATMUL);
        }
        if (c->o_bias)
            CHECK_W(L->bo, "o_proj.bias", l, 1, hid, PL_OP_MATMUL);
        if (c->mlp_bias) {
            CHECK_W(L->b_gate, "gate_proj.bias", l, 1, inter, PL_OP_MATMUL);
            CHECK_W(L->b_up, "up_proj.bias", l, 1, inter, PL_OP_MATMUL);
            CHECK_W(L->b_down, "down_proj.bias", l, 1, hid, PL_OP_MATMUL);
        }
        if (c->qk_norm) {
            CHECK_W(L->q_norm, "q_norm", l, 1, c->head_dim, PL_OP_RMSNORM);
            CHECK_W(L->k_norm, "k_norm", l, 1, c->head_dim, PL_OP_RMSNORM);
        }
    }
#undef CHECK_W
    return PL_STATUS_OK;
}

/* Decode graphs need ops that allocate nothing while recording: the backend's bf16
 * matmuls (fp16 weights take a lazily sized scratch), and PAGELLM_CUDA_GRAPHS != 0
 * (vLLM's enforce_eager, for debugging). */
static bool graphs_allowed(const struct pl_model_config *cfg, const struct pl_weights *w)
{
    const char *env = getenv("PAGELLM_CUDA_GRAPHS");
    if (env && !strcmp(env, "0"))
        return false;
    for (int l = 0; l < cfg->n_layers; l++) {
        const struct pl_layer_weights *L = &w->layers[l];
        const struct pl_weight *mats[] = {&L->wq, &L->wk, &L->wv, &L->wo,
                                          &L->w_gate, &L->w_up, &L->w_down};
        for (size_t i = 0; i < sizeof(mats) / sizeof(mats[0]); i++)
            if (mats[i]->dtype != PL_DTYPE_BF16)
                return false;
    }
    return true;
}

pl_status pl_llama_new(const struct pl_model_config *cfg, const struct pl_weights *w,
                       struct pl_backend *be, int max_tokens, int max_seqs,
                       int max_blocks_per_seq, struct pl_llama **out, struct pl_err *err)
{
    if (max_tokens <= 0 || max_seqs <= 0 || max_blocks_per_seq <= 0)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                          "llama: max_tokens %d, max_seqs %d, max_blocks_per_seq %d must be > 0",
                          max_tokens, max_seqs, max_blocks_per_seq);
    if (cfg->hidden_size <= 0 || cfg->intermediate_size <= 0 || cfg->n_layers <= 0 ||
        cfg->n_heads <= 0 || cfg->n_kv_heads <= 0 || cfg->head_dim <= 0 || cfg->vocab_size <= 0 ||
        cfg->n_heads % cfg->n_kv_heads != 0 || cfg->n_layers > PL_MAX_LAYERS)
        return pl_err_set(err, PL_STATUS_FORMAT, "llama: inconsistent config dimensions");
    if (be->ops->act_dtype != PL_DTYPE_F32 && be->ops->act_dtype != PL_DTYPE_BF16)
        return pl_err_set(err, PL_STATUS_UNSUPPORTED,
                          "llama: the %s backend's activation type %s is not supported",
                          be->ops->name, pl_dtype_name(be->ops->act_dtype));
    pl_status st = check_weights(cfg, w, be, err);
    if (st != PL_STATUS_OK)
        return st;

    struct pl_llama *m = calloc(1, sizeof(*m));
    if (!m)
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "llama: out of memory");
    m->cfg = cfg;
    m->w = w;
    m->be = be;
    m->max_tokens = max_tokens;
    m->max_seqs = max_seqs;
    m->max_blocks_per_seq = max_blocks_per_seq;
    m->q_dim = cfg->n_heads * cfg->head_dim;
    m->kv_dim = cfg->n_kv_heads * cfg->head_dim;
    m->logits_chunk = max_tokens < LOGITS_CHUNK ? max_tokens : LOGITS_CHUNK;

    float *inv = malloc(sizeof(float) * (size_t)(cfg->head_dim / 2 + 1));
    if (!inv) {
        free(m);
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "llama: out of memory");
    }
    st = pl_rope_build(cfg, inv, &m->rope, err);
    if (st != PL_STATUS_OK) {
        free(inv);
        free(m);
        return st;
    }

    /* activations are the backend's act dtype (F32 on CPU, BF16 on CUDA); the rope
     * table and the logits stay fp32 */
    const size_t T = (size_t)max_tokens, a = pl_dtype_size(be->ops->act_dtype);
    const size_t f = sizeof(float), i32 = sizeof(int32_t);
    const size_t hid = (size_t)cfg->hidden_size, inter = (size_t)cfg->intermediate_size;
    const size_t lc = (size_t)m->logits_chunk;
    st = PL_STATUS_OK;
    m->d_inv_freq = be_alloc(m, f * (size_t)(m->rope.rot_dim / 2), &st);
    m->res = be_alloc(m, a * T * hid, &st);
    m->h = be_alloc(m, a * T * hid, &st);
    m->x = be_alloc(m, a * T * hid, &st);
    m->q = be_alloc(m, a * T * (size_t)m->q_dim, &st);
    m->k = be_alloc(m, a * T * (size_t)m->kv_dim, &st);
    m->v = be_alloc(m, a * T * (size_t)m->kv_dim, &st);
    m->attn = be_alloc(m, a * T * (size_t)m->q_dim, &st);
    m->gate = be_alloc(m, a * T * inter, &st);
    m->up = be_alloc(m, a * T * inter, &st);
    m->l_res = be_alloc(m, a * lc * hid, &st);
    m->l_h = be_alloc(m, a * lc * hid, &st);
    m->l_x = be_alloc(m, a * lc * hid, &st);
    m->logits = be_alloc(m, f * lc * (size_t)cfg->vocab_size, &st);
    m->d_ids = be_alloc(m, i32 * T, &st);
    m->d_pos = be_alloc(m, i32 * T, &st);
    m->d_seq_lens = be_alloc(m, i32 * T, &st);
    m->d_slots = be_alloc(m, i32 * T, &st);
    m->d_logit_rows = be_alloc(m, i32 * T, &st);
    m->d_cu = be_alloc(m, i32 * ((size_t)max_seqs + 1), &st);
    m->d_ctx = be_alloc(m, i32 * (size_t)max_seqs, &st);
    m->d_tables = be_alloc(m, i32 * (size_t)max_seqs * (size_t)max_blocks_per_seq, &st);
    if (st == PL_STATUS_OK) {
        const size_t S = (size_t)max_seqs, MB = (size_t)max_blocks_per_seq;
        size_t n_stage = 5 * T + (S + 1) + S + S * MB;
        if (be->ops->host_alloc) {
            m->h_stage = be->ops->host_alloc(be, i32 * n_stage);
            m->h_stage_pinned = m->h_stage != NULL;
        }
        if (!m->h_stage)
            m->h_stage = malloc(i32 * n_stage);
        m->h_row_map = malloc(i32 * T);
        if (!m->h_stage || !m->h_row_map) {
            st = PL_STATUS_NO_MEMORY;
        } else {
            int32_t *p = m->h_stage;
            m->h_ids = p, p += T;
            m->h_pos = p, p += T;
            m->h_seq_lens = p, p += T;
            m->h_slots = p, p += T;
            m->h_logit_rows = p, p += T;
            m->h_cu = p, p += S + 1;
            m->h_ctx = p, p += S;
            m->h_tables = p;
        }
    }
    if (st == PL_STATUS_OK)
        st = be->ops->upload(be, m->d_inv_freq, inv, f * (size_t)(m->rope.rot_dim / 2));
    free(inv);
    if (st != PL_STATUS_OK) {
        pl_llama_free(m);
        return pl_err_set(err, st, "llama: cannot allocate scratch for %d tokens (%s)", max_tokens,
                          pl_status_str(st));
    }
    m->rope.inv_freq = m->d_inv_freq;
    m->use_graphs = be->ops->graph_begin && graphs_allowed(cfg, w);
    *out = m;
    return PL_STATUS_OK;
}

void pl_llama_free(struct pl_llama *m)
{
    if (!m)
        return;
    struct pl_backend *be = m->be;
    void *bufs[] = {m->d_inv_freq, m->res, m->h, m->x, m->q, m->k, m->v, m->attn, m->gate, m->up,
                    m->l_res, m->l_h, m->l_x, m->logits, m->d_ids, m->d_pos, m->d_seq_lens,
                    m->d_slots, m->d_logit_rows, m->d_cu, m->d_ctx, m->d_tables};
    for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++)
        be_release(be, bufs[i]);
    for (int i = 0; i < MAX_GRAPHS; i++)
        for (int j = 0; j < CTX_BUCKETS; j++)
            if (m->graphs[i][j])
                be->ops->graph_free(be, m->graphs[i][j]);
    if (m->h_stage_pinned)
        be->ops->host_free(be, m->h_stage);
    else
        free(m->h_stage);
    free(m->h_row_map);
    free(m);
}

/* Everything a kernel will index with must be in range before it runs. */
static pl_status check_batch(const struct pl_llama *m, const struct pl_batch *b,
                             const struct pl_kv_cache *kv, struct pl_err *err)
{
    if (b->n_tokens > m->max_tokens || b->n_seqs > m->max_seqs ||
        b->max_blocks_per_seq > m->max_blocks_per_seq || b->n_logits > b->n_tokens)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                          "llama: batch of %d tokens / %d sequences / %d blocks per sequence / %d "
                          "logits rows exceeds the model's limits (%d / %d / %d / n_tokens)",
                          b->n_tokens, b->n_seqs, b->max_blocks_per_seq, b->n_logits,
                          m->max_tokens, m->max_seqs, m->max_blocks_per_seq);
    if (kv->n_layers != m->cfg->n_layers || kv->kv_dim != m->kv_dim || kv->block_size <= 0)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                          "llama: KV cache (%d layers, kv_dim %d) does not match the model (%d, %d)",
                          kv->n_layers, kv->kv_dim, m->cfg->n_layers, m->kv_dim);
    pl_status st = pl_batch_validate(b, kv->block_size, err);
    if (st != PL_STATUS_OK)
        return st;
    for (int t = 0; t < b->n_tokens; t++)
        if (b->token_ids[t] < 0 || b->token_ids[t] >= m->cfg->vocab_size)
            return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                              "llama: token %d has id %d outside the vocabulary (%d)", t,
                              b->token_ids[t], m->cfg->vocab_size);
    for (int s = 0; s < b->n_seqs; s++) {
        int used = (b->context_lens[s] + kv->block_size - 1) / kv->block_size;
        const int32_t *table = b->block_tables + (size_t)s * (size_t)b->max_blocks_per_seq;
        for (int i = 0; i < used; i++)
            if (table[i] >= kv->n_blocks)
                return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                                  "llama: sequence %d uses block %d, the pool has %d", s, table[i],
                                  kv->n_blocks);
    }
    return PL_STATUS_OK;
}

/*
 * Stages b's arrays, padded to n_pad sequences of one token each when n_pad > n_seqs
 * (graph sizes; decode batches only), and uploads them into the fixed device buffers.
 */
static pl_status upload_batch(struct pl_llama *m, const struct pl_batch *b, int n_pad)
{
    struct pl_backend *be = m->be;
    const size_t T = (size_t)b->n_tokens, S = (size_t)b->n_seqs;
    const int32_t *seq_lens = b->seq_lens;
    if (!seq_lens) { /* each token's sequence length is its sequence's context length */
        for (int s = 0; s < b->n_seqs; s++)
            for (int t = b->cu_seqlens_q[s]; t < b->cu_seqlens_q[s + 1]; t++)
                m->h_seq_lens[t] = b->context_lens[s];
        seq_lens = m->h_seq_lens;
    }
    /* The arrays go up from the staging buffers when those are pinned (asynchronous
     * copies) or when padding rows must be appended; otherwise straight from the batch.
     * Padding rows' block tables are never read (context 0), so tables are not padded. */
    const bool pad = n_pad > b->n_seqs;
    const size_t n_tok = pad ? (size_t)n_pad : T, n_seq = pad ? (size_t)n_pad : S;
    struct {
        void *dev;
        int32_t *stage;
        const int32_t *src;
        size_t n_src, n_up;
    } arr[] = {
        {m->d_ids, m->h_ids, b->token_ids, T, n_tok},
        {m->d_pos, m->h_pos, b->positions, T, n_tok},
        {m->d_seq_lens, m->h_seq_lens, seq_lens, T, n_tok},
        {m->d_slots, m->h_slots, b->slot_mapping, T, n_tok},
        {m->d_cu, m->h_cu, b->cu_seqlens_q, S + 1, n_seq + 1},
        {m->d_ctx, m->h_ctx, b->context_lens, S, n_seq},
        {m->d_tables, m->h_tables, b->block_tables, S * (size_t)b->max_blocks_per_seq,
         S * (size_t)b->max_blocks_per_seq},
        {m->d_logit_rows, m->h_logit_rows, b->logits_rows, (size_t)b->n_logits,
         (size_t)b->n_logits},
    };
    const size_t n_arr = sizeof(arr) / sizeof(arr[0]);
    const bool stage = m->h_stage_pinned || pad;
    if (stage)
        for (size_t i = 0; i < n_arr; i++)
            if (arr[i].n_src > 0 && arr[i].src != arr[i].stage)
                memcpy(arr[i].stage, arr[i].src, sizeof(int32_t) * arr[i].n_src);
    if (pad) { /* padding sequences: context 0, token 0 stored nowhere */
        assert(b->n_tokens == b->n_seqs);
        for (int i = b->n_seqs; i < n_pad; i++) {
            m->h_ids[i] = 0;
            m->h_pos[i] = 0;
            m->h_seq_lens[i] = 0;
            m->h_slots[i] = -1;
            m->h_cu[i + 1] = i + 1;
            m->h_ctx[i] = 0;
        }
    }
    pl_status st = PL_STATUS_OK;
    for (size_t i = 0; i < n_arr && st == PL_STATUS_OK; i++)
        if (arr[i].n_up > 0)
            st = be->ops->upload(be, arr[i].dev, stage ? arr[i].stage : arr[i].src,
                                 sizeof(int32_t) * arr[i].n_up);
    return st;
}

/* The shape of one layer-loop run: the batch's, or a padded decode graph's. */
struct run_shape {
    int n_tokens, n_seqs, max_blocks_per_seq, max_q_len, max_context_len;
};

static void attention_block(struct pl_llama *m, int l, const struct run_shape *b,
                            const struct pl_kv_cache *kv)
{
    const struct pl_backend_ops *op = m->be->ops;
    struct pl_backend *be = m->be;
    const struct pl_model_config *c = m->cfg;
    const struct pl_layer_weights *L = &m->w->layers[l];
    const int n = b->n_tokens;
    const struct pl_weight *no_bias = NULL;

    if (op->matmul_group) { /* q, k, v in one op (one launch on CUDA at decode sizes) */
        void *outs[3] = {m->q, m->k, m->v};
        const int lds[3] = {m->q_dim, m->kv_dim, m->kv_dim};
        const struct pl_weight *ws[3] = {&L->wq, &L->wk, &L->wv};
        const struct pl_weight *bs[3] = {no_bias, no_bias, no_bias};
        if (c->attention_bias) {
            bs[0] = &L->bq;
            bs[1] = &L->bk;
            bs[2] = &L->bv;
        }
        op->matmul_group(be, 3, outs, lds, m->x, ws, bs, n);
    } else {
        op->matmul(be, m->q, m->q_dim, m->x, &L->wq, c->attention_bias ? &L->bq : no_bias, n);
        op->matmul(be, m->k, m->kv_dim, m->x, &L->wk, c->attention_bias ? &L->bk : no_bias, n);
        op->matmul(be, m->v, m->kv_dim, m->x, &L->wv, c->attention_bias ? &L->bv : no_bias, n);
    }
    if (c->qk_norm) { /* Qwen3: RMSNorm over each head's head_dim values, before rope */
        op->rmsnorm(be, m->q, NULL, m->q, &L->q_norm, n * c->n_heads, c->head_dim,
                    c->rms_norm_eps);
        op->rmsnorm(be, m->k, NULL, m->k, &L->k_norm, n * c->n_kv_heads, c->head_dim,
                    c->rms_norm_eps);
    }
    op->rope(be, m->q, m->k, m->d_pos, m->d_seq_lens, n, c->n_heads, c->n_kv_heads, c->head_dim,
             &m->rope);
    op->store_kv(be, kv->k[l], kv->v[l], m->k, m->v, m->d_slots, n, m->kv_dim);
    struct pl_attn_meta meta = {
        .n_seqs = b->n_seqs,
        .n_tokens = n,
        .cu_seqlens_q = m->d_cu,
        .context_lens = m->d_ctx,
        .block_tables = m->d_tables,
        .max_blocks_per_seq = b->max_blocks_per_seq,
        .max_q_len = b->max_q_len,
        .max_context_len = b->max_context_len,
        .block_size = kv->block_size,
        .n_heads = c->n_heads,
        .n_kv_heads = c->n_kv_heads,
        .head_dim = c->head_dim,
        .scale = 1.0f / sqrtf((float)c->head_dim),
        .window = c->layer_sliding_window[l],
    };
    op->attention(be, m->attn, m->q, kv->k[l], kv->v[l], &meta);
    op->matmul(be, m->h, c->hidden_size, m->attn, &L->wo, c->o_bias ? &L->bo : no_bias, n);
}

static void mlp_block(struct pl_llama *m, int l, int n)
{
    const struct pl_backend_ops *op = m->be->ops;
    struct pl_backend *be = m->be;
    const struct pl_model_config *c = m->cfg;
    const struct pl_layer_weights *L = &m->w->layers[l];
    const struct pl_weight *no_bias = NULL;
    /* the fused op at decode sizes only: there gate and up stay on chip (CUDA); larger
     * batches run the two GEMMs at the tensor cores' rate into the activation scratch */
    if (op->gate_up_silu && n <= FUSED_MLP_MAX_ROWS) {
        op->gate_up_silu(be, m->gate, m->x, &L->w_gate, &L->w_up,
                         c->mlp_bias ? &L->b_gate : no_bias, c->mlp_bias ? &L->b_up : no_bias, n,
                         c->intermediate_size);
    } else {
        op->matmul(be, m->gate, c->intermediate_size, m->x, &L->w_gate,
                   c->mlp_bias ? &L->b_gate : no_bias, n);
        op->matmul(be, m->up, c->intermediate_size, m->x, &L->w_up,
                   c->mlp_bias ? &L->b_up : no_bias, n);
        op->silu_mul(be, m->gate, m->gate, m->up, n, c->intermediate_size); /* may alias */
    }
    op->matmul(be, m->h, c->hidden_size, m->gate, &L->w_down, c->mlp_bias ? &L->b_down : no_bias,
               n);
}

static pl_status emit_logits(struct pl_llama *m, const struct pl_batch *b, float *logits,
                             struct pl_err *err);
static pl_status emit_hidden(struct pl_llama *m, const struct pl_batch *b, struct pl_err *err);
static void widen_hidden(struct pl_llama *m, const struct pl_batch *b);

/* Embedding and every layer: leaves the residual stream in res and the last MLP
 * output in h (the final norm runs on the logits rows only). */
static void run_layers(struct pl_llama *m, const struct run_shape *sh, const struct pl_kv_cache *kv)
{
    const struct pl_backend_ops *op = m->be->ops;
    struct pl_backend *be = m->be;
    const struct pl_model_config *c = m->cfg;
    const int n = sh->n_tokens, hid = c->hidden_size;

    op->embed(be, m->res, &m->w->embed, m->d_ids, n);
    for (int l = 0; l < c->n_layers; l++) {
        const struct pl_layer_weights *L = &m->w->layers[l];
        if (l == 0)
            op->rmsnorm(be, m->x, NULL, m->res, &L->attn_norm, n, hid, c->rms_norm_eps);
        else /* res += previous MLP output; x = norm(res) */
            op->rmsnorm(be, m->x, m->res, m->h, &L->attn_norm, n, hid, c->rms_norm_eps);
        attention_block(m, l, sh, kv);
        op->rmsnorm(be, m->x, m->res, m->h, &L->ffn_norm, n, hid, c->rms_norm_eps);
        mlp_block(m, l, n);
    }
}

/* The graph slot and padded size for a decode batch of n sequences (-1: none fits). */
static int graph_slot(const struct pl_llama *m, int n, int *n_pad)
{
    const int cap = m->max_seqs < m->max_tokens ? m->max_seqs : m->max_tokens;
    int size = n <= 1 ? 1 : n <= 2 ? 2 : n <= 4 ? 4 : (n + 7) / 8 * 8;
    if (size > cap)
        size = cap; /* the last size is the cap itself (>= n), a slot of its own */
    int slot = size <= 4 ? (size == 4 ? 2 : size - 1) : 2 + (size + 7) / 8;
    if (slot >= MAX_GRAPHS)
        return -1;
    *n_pad = size;
    return slot;
}

/* Runs the layer loop of a decode-only batch from the graph of its (size, context
 * bucket), recorded now if there is none yet. Returns false when graphs cannot serve
 * this batch. */
static bool run_layers_graph(struct pl_llama *m, const struct pl_batch *b,
                             const struct pl_kv_cache *kv, pl_status *st)
{
    int n_pad = 0;
    int slot = graph_slot(m, b->n_seqs, &n_pad);
    if (slot < 0)
        return false;
    /* the context bound: the next power of two from 256, at most what the tables hold */
    const int table_ctx = b->max_blocks_per_seq * kv->block_size; /* >= max_context_len */
    int bucket = 0, bound = 256;
    while (bound < b->max_context_len && bucket + 1 < CTX_BUCKETS) {
        bound *= 2;
        bucket++;
    }
    if (bucket + 1 == CTX_BUCKETS || bound > table_ctx)
        bound = table_ctx; /* the last bucket covers whatever the tables can hold */
    struct pl_backend *be = m->be;
    *st = upload_batch(m, b, n_pad);
    if (*st != PL_STATUS_OK)
        return true;
    void **g = &m->graphs[slot][bucket];
    if (*g && m->graph_mb[slot][bucket] != b->max_blocks_per_seq) {
        be->ops->graph_free(be, *g);
        *g = NULL;
    }
    if (!*g) {
        /* the kernels take each sequence's own length from context_lens at replay */
        const struct run_shape sh = {
            .n_tokens = n_pad,
            .n_seqs = n_pad,
            .max_blocks_per_seq = b->max_blocks_per_seq,
            .max_q_len = 1,
            .max_context_len = bound,
        };
        *st = be->ops->graph_begin(be);
        if (*st != PL_STATUS_OK)
            return true;
        run_layers(m, &sh, kv);
        *st = be->ops->graph_end(be, g);
        if (*st != PL_STATUS_OK)
            return true;
        m->graph_mb[slot][bucket] = b->max_blocks_per_seq;
        m->n_graphs_recorded++;
    }
    *st = be->ops->graph_launch(be, *g);
    return true;
}

pl_status pl_llama_forward(struct pl_llama *m, const struct pl_batch *b,
                           const struct pl_kv_cache *kv, float *logits, struct pl_err *err)
{
    pl_status st = check_batch(m, b, kv, err);
    if (st != PL_STATUS_OK)
        return st;
    if (b->n_tokens == 0)
        return PL_STATUS_OK;

    bool graphed = m->use_graphs && b->max_q_len == 1 && b->n_tokens == b->n_seqs &&
                   run_layers_graph(m, b, kv, &st);
    if (!graphed) {
        st = upload_batch(m, b, b->n_seqs);
        if (st == PL_STATUS_OK) {
            const struct run_shape sh = {
                .n_tokens = b->n_tokens,
                .n_seqs = b->n_seqs,
                .max_blocks_per_seq = b->max_blocks_per_seq,
                .max_q_len = b->max_q_len,
                .max_context_len = b->max_context_len,
            };
            run_layers(m, &sh, kv);
        }
    }
    if (st != PL_STATUS_OK)
        return pl_err_set(err, st, "llama: %s failed",
                          graphed ? "the decode graph" : "uploading the batch");

    return emit_logits(m, b, logits, err);
}

/*
 * The pooling section of forward: the final norm of the rows b->hidden_rows
 * (gathered in chunks of logits_chunk rows through the logits scratch)
 * downloaded into b->hidden. The row indices go up into d_logit_rows, which
 * the logits section is done with (ops run in order). Activations narrower
 * than fp32 (bf16 on CUDA) come down into the back half of each chunk's fp32
 * rows and are widened in place after the sync (widen_hidden), so no staging
 * buffer is needed.
 */
static pl_status emit_hidden(struct pl_llama *m, const struct pl_batch *b, struct pl_err *err)
{
    const struct pl_backend_ops *op = m->be->ops;
    struct pl_backend *be = m->be;
    const struct pl_model_config *c = m->cfg;
    const int hid = c->hidden_size;
    const size_t elem = pl_dtype_size(op->act_dtype);
    pl_status st = op->upload(be, m->d_logit_rows, b->hidden_rows,
                              sizeof(int32_t) * (size_t)b->n_hidden);
    if (st != PL_STATUS_OK)
        return pl_err_set(err, st, "llama: uploading the hidden rows failed");
    for (int r0 = 0; r0 < b->n_hidden; r0 += m->logits_chunk) {
        int rn = b->n_hidden - r0 < m->logits_chunk ? b->n_hidden - r0 : m->logits_chunk;
        op->get_rows(be, m->l_res, m->res, m->d_logit_rows + r0, rn, hid);
        op->get_rows(be, m->l_h, m->h, m->d_logit_rows + r0, rn, hid);
        op->rmsnorm(be, m->l_x, m->l_res, m->l_h, &m->w->final_norm, rn, hid, c->rms_norm_eps);
        size_t n = (size_t)rn * (size_t)hid;
        char *dst = (char *)(b->hidden + (size_t)r0 * (size_t)hid) + n * (sizeof(float) - elem);
        st = op->download(be, dst, m->l_x, n * elem);
        if (st != PL_STATUS_OK)
            return pl_err_set(err, st, "llama: downloading hidden states failed");
    }
    return PL_STATUS_OK;
}

/* After the sync: each chunk's act-dtype values (in the back half of its fp32 rows) widened
 * to fp32 front to back. Element i is read from byte n*(4-e) + e*i and written at bytes
 * [4i, 4i+4), which never reaches an element not yet read (4i+3 < n*(4-e) + e*(i+1) for
 * e = 2, i < n). */
static void widen_hidden(struct pl_llama *m, const struct pl_batch *b)
{
    const enum pl_dtype dt = m->be->ops->act_dtype;
    const size_t elem = pl_dtype_size(dt);
    if (dt == PL_DTYPE_F32)
        return;
    const int hid = m->cfg->hidden_size;
    for (int r0 = 0; r0 < b->n_hidden; r0 += m->logits_chunk) {
        int rn = b->n_hidden - r0 < m->logits_chunk ? b->n_hidden - r0 : m->logits_chunk;
        size_t n = (size_t)rn * (size_t)hid;
        float *out = b->hidden + (size_t)r0 * (size_t)hid;
        const void *src = (const char *)out + n * (sizeof(float) - elem);
        for (size_t i = 0; i < n; i++)
            out[i] = pl_dtype_get_f32(src, dt, i);
    }
}

/*
 * The logits section of forward: per chunk of at most logits_chunk rows, the
 * final norm of the gathered rows and the LM head into m->logits, then either
 * the download into host logits or (m->job) the backend's sample op over the
 * sampler rows whose logits row lies in the chunk; only their results leave
 * the backend.
 */
static pl_status emit_logits(struct pl_llama *m, const struct pl_batch *b, float *logits,
                             struct pl_err *err)
{
    const struct pl_backend_ops *op = m->be->ops;
    struct pl_backend *be = m->be;
    const struct pl_model_config *c = m->cfg;
    const struct sample_job *job = m->job;
    const int hid = c->hidden_size;
    const size_t vocab = (size_t)c->vocab_size;
    pl_status st;
    int s0 = 0; /* the first sampler row not yet sampled */
    for (int r0 = 0; r0 < b->n_logits; r0 += m->logits_chunk) {
        int rn = b->n_logits - r0 < m->logits_chunk ? b->n_logits - r0 : m->logits_chunk;
        op->get_rows(be, m->l_res, m->res, m->d_logit_rows + r0, rn, hid);
        op->get_rows(be, m->l_h, m->h, m->d_logit_rows + r0, rn, hid);
        op->rmsnorm(be, m->l_x, m->l_res, m->l_h, &m->w->final_norm, rn, hid, c->rms_norm_eps);
        op->logits(be, m->logits, m->l_x, &m->w->lm_head, rn);
        if (!job) {
            st = op->download(be, logits + (size_t)r0 * vocab, m->logits,
                              sizeof(float) * (size_t)rn * vocab);
            if (st != PL_STATUS_OK)
                return pl_err_set(err, st, "llama: downloading logits failed");
            continue;
        }
        int s1 = s0;
        while (s1 < job->n_rows && job->row_src[s1] < r0 + rn) {
            m->h_row_map[s1 - s0] = job->row_src[s1] - r0;
            s1++;
        }
        if (s1 > s0) {
            st = op->sample(be, m->logits, rn, c->vocab_size, m->h_row_map, s1 - s0,
                            job->rows + s0, job->uniforms + s0, job->out + s0, err);
            if (st != PL_STATUS_OK)
                return pl_err_prefix(err, "llama: sampling");
        }
        s0 = s1;
    }
    if (b->n_hidden > 0 && (st = emit_hidden(m, b, err)) != PL_STATUS_OK)
        return st;
    st = op->sync(be);
    if (st != PL_STATUS_OK)
        return pl_err_set(err, st, "llama: backend sync failed");
    if (b->n_hidden > 0)
        widen_hidden(m, b);
    return PL_STATUS_OK;
}

bool pl_llama_can_sample(const struct pl_llama *m)
{
    return m->be->ops->sample != NULL;
}

pl_status pl_llama_forward_sample(struct pl_llama *m, const struct pl_batch *b,
                                  const struct pl_kv_cache *kv, const int32_t *row_src,
                                  int n_rows, const struct pl_sampler_row *rows,
                                  const double *uniforms, struct pl_sample_result *out,
                                  struct pl_err *err)
{
    if (!m->be->ops->sample)
        return pl_err_set(err, PL_STATUS_UNSUPPORTED, "llama: the %s backend cannot sample",
                          m->be->ops->name);
    if (n_rows < 0 || n_rows > m->max_tokens)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                          "llama: %d sampler rows (at most %d)", n_rows, m->max_tokens);
    for (int r = 0; r < n_rows; r++)
        if (row_src[r] < 0 || row_src[r] >= b->n_logits || (r > 0 && row_src[r] < row_src[r - 1]))
            return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                              "llama: sampler row %d reads logits row %d (of %d; rows must not "
                              "decrease)",
                              r, (int)row_src[r], b->n_logits);
    struct sample_job job = {row_src, n_rows, rows, uniforms, out};
    m->job = &job;
    pl_status st = pl_llama_forward(m, b, kv, NULL, err);
    m->job = NULL;
    return st;
}

pl_status pl_kv_cache_init(struct pl_kv_cache *kv, struct pl_backend *be,
                           const struct pl_model_config *cfg, int n_blocks, int block_size,
                           struct pl_err *err)
{
    memset(kv, 0, sizeof(*kv));
    if (n_blocks <= 0 || block_size <= 0)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                          "kv cache: %d blocks of %d tokens", n_blocks, block_size);
    kv->n_layers = cfg->n_layers;
    kv->n_blocks = n_blocks;
    kv->block_size = block_size;
    kv->kv_dim = cfg->n_kv_heads * cfg->head_dim;
    size_t elem = pl_dtype_size(be->ops->act_dtype);
    size_t per_layer = (size_t)n_blocks * (size_t)block_size * (size_t)kv->kv_dim * elem;
    if (per_layer / elem / (size_t)kv->kv_dim / (size_t)block_size != (size_t)n_blocks)
        return pl_err_set(err, PL_STATUS_LIMIT, "kv cache: size overflows");
    kv->k = calloc((size_t)kv->n_layers, sizeof(void *));
    kv->v = calloc((size_t)kv->n_layers, sizeof(void *));
    if (!kv->k || !kv->v) {
        pl_kv_cache_fini(kv, be);
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "kv cache: out of memory");
    }
    for (int l = 0; l < kv->n_layers; l++) {
        kv->k[l] = be->ops->alloc(be, per_layer);
        kv->v[l] = be->ops->alloc(be, per_layer);
        if (!kv->k[l] || !kv->v[l]) {
            pl_kv_cache_fini(kv, be);
            return pl_err_set(err, PL_STATUS_NO_MEMORY,
                              "kv cache: cannot allocate %zu bytes for layer %d", 2 * per_layer, l);
        }
    }
    return PL_STATUS_OK;
}

void pl_kv_cache_fini(struct pl_kv_cache *kv, struct pl_backend *be)
{
    if (!kv)
        return;
    for (int l = 0; l < kv->n_layers; l++) {
        if (kv->k)
            be_release(be, kv->k[l]);
        if (kv->v)
            be_release(be, kv->v[l]);
    }
    free(kv->k);
    free(kv->v);
    memset(kv, 0, sizeof(*kv));
}
