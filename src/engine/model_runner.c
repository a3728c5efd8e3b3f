/*
 * model_runner.c -- the model runner: an architecture's forward on a backend,
 * and the runner that owns backend + weights + model + paged KV pool (see
 * model_runner.h).
 *
 * Owns: struct pl_model and struct pl_model_runner, and everything between a
 * batch and its logits that is not a layer's math:
 *   - load-time checks: every slot the architecture's tensor table needs is
 *     present, shaped as the config implies, of a dtype the backend runs; the
 *     backend's check_model (attention shapes, optional ops) and the optional
 *     ops the config needs; a refusal names the tensor, shape or op;
 *   - the batch arrays: staged in host memory the backend copies from fastest
 *     (pinned on CUDA) and uploaded into fixed backend buffers;
 *   - decode graphs (backends with op graphs, CUDA): a batch of decodes only
 *     (one token per sequence) is padded to the next of a fixed set of sizes
 *     (1, 2, 4, 8, 16, 24, ... as vLLM captures) and the layer loop is replayed
 *     from a graph recorded the first time that size runs. Padding rows are
 *     sequences of context 0 whose token goes nowhere (slot -1): every op works
 *     row by row, so they cannot change the real rows;
 *   - the logits section: per chunk of at most LOGITS_CHUNK rows, the final norm
 *     of the gathered rows (rmsnorm works row by row, so norm-then-gather equals
 *     gather-then-norm and the other rows are skipped), the LM head, the final
 *     soft-cap, then the download or the backend's sample op; then, for pooling
 *     requests, the same final norm on the hidden rows, downloaded as fp32;
 *   - the memory plan and the KV pool (one block costs 2 (K and V) * n_layers *
 *     block_size * kv_dim * sizeof(activation) bytes).
 * Invariants: forward() allocates nothing (a graph is recorded once per size);
 * every batch is validated before any kernel indexes the KV cache with it
 * (block ids, slots, token ids); after a successful pl_model_runner_new:
 * block_size is 8, 16 or 32; max_model_len <= n_blocks * block_size and the
 * block tables hold ceil(max_model_len / block_size) blocks; the runner owns
 * what it opened and borrows what _new_from_parts was given.
 */
#include "engine/model_runner.h"

#include "engine/batch.h"
#include "engine/block_manager.h"
#include "engine/tensor_parallel.h"
#include "model/rope.h"
#include "model/safetensors.h"
#include "model/shard.h"
#include "util/clock.h"
#include "util/log.h"

#include <assert.h>
#include <math.h>
#include <stdio.h>
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
#define CTX_BUCKETS 12

struct pl_model {
    const struct pl_model_config *cfg;
    const struct pl_weights *w;
    const struct pl_arch *arch;
    struct pl_backend *be;
    int max_tokens, max_seqs, max_blocks_per_seq;
    int kv_dim, logits_chunk;

    struct pl_rope rope[2];  /* global, local (sliding) layers; inv_freq in d_rope */
    float *d_rope;           /* [4][rot_dim / 2]: inv and long inv of each */

    /* the architecture's scratch activations (backend memory, act dtype), [T, per_token] */
    void *scratch[PL_MAX_SCRATCH];
    int n_scratch;
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
     * with (a batch of another width re-records); graph_kv: the signature of the KV cache
     * they were recorded over (its buffers' addresses and geometry are baked into the
     * kernels' parameters: a forward over another cache frees them all) */
    bool use_graphs;
    int graph_max_n; /* decode batches above it run eagerly (int4: PL_Q4_SCRATCHLESS_N) */
    void *graphs[MAX_GRAPHS][CTX_BUCKETS];
    int graph_mb[MAX_GRAPHS][CTX_BUCKETS];
    uint64_t graph_kv;
    int n_graphs_recorded;

    /* tensor parallelism (pl_model_set_tp): this rank's communicator, its vocabulary rows
     * [vocab_start, vocab_start + cfg->vocab_size) of vocab_full; h_logits: host
     * [logits_chunk, cfg->vocab_size], a chunk's slice before it goes into its columns */
    struct pl_comm *comm;
    int tp_rank;
    int vocab_start, vocab_full;
    float *h_logits;
    /* sampling at TP > 1 (the backend has sample and copy_2d): every rank's logits chunk is
     * gathered on rank 0 into d_gather [size][logits_chunk * vocab], placed column-wise in
     * d_full [logits_chunk, vocab_full], and rank 0 samples (backend memory, rank 0 only) */
    bool tp_can_sample;
    float *d_gather, *d_full;

    /* pl_model_forward_sample's request to the logits section (NULL: download logits) */
    const struct sample_job *job;
    int32_t *h_row_map;                            /* host [T]: a chunk's sampler rows */
};

/* Sampler rows of one forward (pl_model_forward_sample's arguments). */
struct sample_job {
    const int32_t *row_src;             /* [n_rows] logits row of each, nondecreasing */
    int n_rows;
    const struct pl_sampler_row *rows;  /* [n_rows] */
    const double *uniforms;             /* [n_rows] */
    struct pl_sample_result *out;       /* [n_rows] */
};

static void *be_alloc(struct pl_model *m, size_t n_bytes, pl_status *st)
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

/* The backend's own words for its last failure, for the user's message ("" if none). */
static const char *backend_error(struct pl_backend *be)
{
    const char *e = be->ops->last_error ? be->ops->last_error(be) : NULL;
    return e ? e : "";
}

/* Sets err to "<what>: <the backend's error>" (or "<what> failed" when it has none). */
static pl_status backend_fail(struct pl_backend *be, pl_status st, struct pl_err *err,
                              const char *what)
{
    const char *why = backend_error(be);
    if (why[0])
        return pl_err_set(err, st, "model: %s: %s", what, why);
    return pl_err_set(err, st, "model: %s failed on the %s backend", what, be->ops->name);
}

/* ---- load-time checks (the tensor table, the backend) ---------------------------------- */

struct weight_check {
    const struct pl_model_config *cfg;
    struct pl_backend *be;
    struct pl_err *err;
    pl_status st;
    bool has_q4;          /* some matmul weight is packed int4 (graphs up to 8 rows) */
    bool allocating;      /* some matmul weight's product may allocate (no graphs): neither
                             bf16 nor a packed layout (fp16's lazily sized scratch) */
};

/* One slot: present, shaped [rows, cols] (vectors [1, cols]), a dtype the backend runs. */
static void check_slot(void *ctx, const struct pl_tensor_spec *t, int layer, int expert,
                       const struct pl_weight *w)
{
    struct weight_check *k = ctx;
    /* the moe op's weights too: its grouped path records only with bf16 experts, and the
     * shared expert runs as matmuls */
    if ((t->op == PL_OP_MATMUL || t->op == PL_OP_MOE) && t->rows != PL_DIM_NONE && w &&
        w->data) {
        k->has_q4 |= w->dtype == PL_DTYPE_Q4;
        k->allocating |= w->dtype != PL_DTYPE_BF16 && w->dtype != PL_DTYPE_Q4 &&
                         w->dtype != PL_DTYPE_F8W;
    }
    if (k->st != PL_STATUS_OK)
        return;
    char name[192];
    pl_tensor_spec_name(t, layer, expert, name, sizeof(name));
    const int64_t rows = t->rows == PL_DIM_NONE ? 1 : pl_arch_dim(k->cfg, t->rows);
    const int64_t cols = pl_arch_dim(k->cfg, t->cols);
    if (!w || !w->data) {
        k->st = pl_err_set(k->err, PL_STATUS_NOT_FOUND, "model: weight %s is missing", name);
    } else if (w->rows != rows || w->cols != cols) {
        k->st = pl_err_set(k->err, PL_STATUS_FORMAT,
                           "model: weight %s is [%lld, %lld], the config implies [%lld, %lld]",
                           name, (long long)w->rows, (long long)w->cols, (long long)rows,
                           (long long)cols);
    } else if (!k->be->ops->supports(k->be, t->op, w->dtype)) {
        k->st = pl_err_set(k->err, PL_STATUS_UNSUPPORTED,
                           "model: weight %s: the %s backend has no %s kernel for this op", name,
                           k->be->ops->name, pl_dtype_name(w->dtype));
    }
}

/* What the config needs from the backend beyond weight dtypes: optional ops present,
 * then the backend's own check of shapes and ops. */
static pl_status check_backend(const struct pl_model_config *c, const struct pl_rope *rope,
                               struct pl_backend *be, struct pl_err *err)
{
    const struct pl_backend_ops *op = be->ops;
    struct pl_model_needs n = {.head_dim = c->head_dim, .n_heads = c->n_heads,
                               .n_kv_heads = c->n_kv_heads};
    n.attn_softcap = c->attn_softcap > 0;
    n.long_rope = rope[0].long_original_max > 0 || rope[1].long_original_max > 0;
    n.partial_rope = rope[0].rot_dim < c->head_dim || rope[1].rot_dim < c->head_dim;
    static const enum pl_op base_ops[] = {PL_OP_EMBED,    PL_OP_RMSNORM, PL_OP_MATMUL,
                                          PL_OP_ROPE,     PL_OP_STORE_KV, PL_OP_ATTENTION,
                                          PL_OP_GET_ROWS, PL_OP_LOGITS};
    for (size_t i = 0; i < sizeof(base_ops) / sizeof(base_ops[0]); i++)
        n.ops[base_ops[i]] = true;
    n.ops[c->act == PL_ACT_GELU_TANH ? PL_OP_GELU_TANH_MUL : PL_OP_SILU_MUL] = true;
    n.ops[PL_OP_SCALE] = c->embed_scale != 0;
    n.ops[PL_OP_SOFTCAP] = c->final_softcap > 0;
    n.ops[PL_OP_MOE] = c->n_experts > 0;
    const struct {
        enum pl_op op;
        bool present;
        const char *name;
    } optional[] = {
        {PL_OP_GELU_TANH_MUL, op->gelu_tanh_mul != NULL, "gelu_tanh_mul"},
        {PL_OP_SCALE, op->scale != NULL, "scale"},
        {PL_OP_SOFTCAP, op->softcap != NULL, "softcap"},
        {PL_OP_MOE, op->moe != NULL, "moe"},
    };
    for (size_t i = 0; i < sizeof(optional) / sizeof(optional[0]); i++)
        if (n.ops[optional[i].op] && !optional[i].present)
            return pl_err_set(err, PL_STATUS_UNSUPPORTED,
                              "model: %s needs the %s op, which the %s backend does not have",
                              pl_arch_name(c->arch), optional[i].name, op->name);
    if (op->check_model) {
        pl_status st = op->check_model(be, &n, err);
        if (st != PL_STATUS_OK)
            return pl_err_prefix(err, "model: %s on the %s backend", pl_arch_name(c->arch), op->name);
    }
    return PL_STATUS_OK;
}

/* check_backend before any weight is loaded: the rope parameters built on the host (a
 * model the backend cannot run is refused before gigabytes are read or uploaded). */
static pl_status precheck_backend(const struct pl_model_config *c, struct pl_backend *be,
                                  struct pl_err *err)
{
    const size_t half_max = (size_t)(c->head_dim > 0 ? c->head_dim : 2) / 2 + 1;
    float *h = calloc(2 * half_max, sizeof(float));
    if (!h)
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "model: out of memory");
    struct pl_rope rope[2];
    pl_status st = PL_STATUS_OK;
    for (int i = 0; i < 2 && st == PL_STATUS_OK; i++) {
        const struct pl_rope_config *rc = i == 1 && c->has_local_rope ? &c->rope_local : &c->rope;
        st = pl_rope_build(c, rc, h, h + half_max, &rope[i], err);
    }
    free(h);
    return st == PL_STATUS_OK ? check_backend(c, rope, be, err) : st;
}

/* The two rope tables (global, local) in backend memory. */
static pl_status build_ropes(struct pl_model *m, struct pl_err *err)
{
    const struct pl_model_config *c = m->cfg;
    const size_t half_max = (size_t)c->head_dim / 2 + 1;
    float *h = calloc(4 * half_max, sizeof(float));
    if (!h)
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "model: out of memory");
    pl_status st = PL_STATUS_OK;
    for (int i = 0; i < 2 && st == PL_STATUS_OK; i++) {
        const struct pl_rope_config *rc = i == 1 && c->has_local_rope ? &c->rope_local : &c->rope;
        st = pl_rope_build(c, rc, h + (2 * i) * half_max, h + (2 * i + 1) * half_max, &m->rope[i],
                           err);
    }
    if (st == PL_STATUS_OK) {
        m->d_rope = m->be->ops->alloc(m->be, sizeof(float) * 4 * half_max);
        st = m->d_rope ? m->be->ops->upload(m->be, m->d_rope, h, sizeof(float) * 4 * half_max)
                       : pl_err_set(err, PL_STATUS_NO_MEMORY, "model: cannot allocate the rope "
                                                              "tables");
    }
    free(h);
    if (st != PL_STATUS_OK)
        return st;
    for (int i = 0; i < 2; i++) {
        m->rope[i].inv_freq = m->d_rope + (2 * i) * half_max;
        m->rope[i].long_inv_freq =
            m->rope[i].long_original_max > 0 ? m->d_rope + (2 * i + 1) * half_max : NULL;
    }
    return PL_STATUS_OK;
}

pl_status pl_model_new(const struct pl_model_config *cfg, const struct pl_weights *w,
                       struct pl_backend *be, int max_tokens, int max_seqs,
                       int max_blocks_per_seq, struct pl_model **out, struct pl_err *err)
{
    *out = NULL;
    if (max_tokens <= 0 || max_seqs <= 0 || max_blocks_per_seq <= 0)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                          "model: max_tokens %d, max_seqs %d, max_blocks_per_seq %d must be > 0",
                          max_tokens, max_seqs, max_blocks_per_seq);
    if (!cfg->arch || !cfg->arch->forward || !cfg->arch->scratch)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT, "model: the config has no architecture");
    if (cfg->hidden_size <= 0 || cfg->intermediate_size < 0 || cfg->n_layers <= 0 ||
        cfg->n_heads <= 0 || cfg->n_kv_heads <= 0 || cfg->head_dim <= 0 || cfg->vocab_size <= 0 ||
        cfg->n_heads % cfg->n_kv_heads != 0 || cfg->n_layers > PL_MAX_LAYERS)
        return pl_err_set(err, PL_STATUS_FORMAT, "model: inconsistent config dimensions");
    if (be->ops->act_dtype != PL_DTYPE_F32 && be->ops->act_dtype != PL_DTYPE_BF16)
        return pl_err_set(err, PL_STATUS_UNSUPPORTED,
                          "model: the %s backend's activation type %s is not supported",
                          be->ops->name, pl_dtype_name(be->ops->act_dtype));
    if (w->n_layers != cfg->n_layers || !w->layers)
        return pl_err_set(err, PL_STATUS_FORMAT, "model: weights have %d layers, config %d",
                          w->n_layers, cfg->n_layers);
    struct weight_check wc = {cfg, be, err, PL_STATUS_OK, false, false};
    pl_weights_foreach(cfg, w, check_slot, &wc);
    if (wc.st == PL_STATUS_OK && !cfg->tie_word_embeddings && !w->lm_head.data)
        wc.st = pl_err_set(err, PL_STATUS_NOT_FOUND, "model: weight lm_head.weight is missing");
    if (wc.st != PL_STATUS_OK)
        return wc.st;

    struct pl_model *m = calloc(1, sizeof(*m));
    if (!m)
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "model: out of memory");
    m->cfg = cfg;
    m->w = w;
    m->arch = cfg->arch;
    m->be = be;
    m->max_tokens = max_tokens;
    m->max_seqs = max_seqs;
    m->max_blocks_per_seq = max_blocks_per_seq;
    m->kv_dim = cfg->n_kv_heads * cfg->head_dim;
    m->logits_chunk = max_tokens < LOGITS_CHUNK ? max_tokens : LOGITS_CHUNK;
    m->vocab_full = cfg->vocab_size;
    pl_status st = build_ropes(m, err);
    if (st == PL_STATUS_OK)
        st = check_backend(cfg, m->rope, be, err);
    if (st != PL_STATUS_OK) {
        pl_model_free(m);
        return st;
    }

    /* activations are the backend's act dtype (F32 on CPU, BF16 on CUDA); the logits
     * stay fp32 */
    const size_t T = (size_t)max_tokens, a = pl_dtype_size(be->ops->act_dtype);
    const size_t f = sizeof(float), i32 = sizeof(int32_t);
    const size_t hid = (size_t)cfg->hidden_size;
    const size_t lc = (size_t)m->logits_chunk;
    size_t per_token[PL_MAX_SCRATCH] = {0};
    m->n_scratch = m->arch->scratch(cfg, per_token);
    for (int i = 0; i < m->n_scratch; i++)
        m->scratch[i] = be_alloc(m, a * T * (per_token[i] ? per_token[i] : 1), &st);
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
    if (st != PL_STATUS_OK) {
        pl_model_free(m);
        return pl_err_set(err, st, "model: cannot allocate scratch for %d tokens (%s)", max_tokens,
                          pl_status_str(st));
    }
    /* Decode graphs need ops that allocate nothing while recording: the backend's bf16
     * matmuls (fp16 weights take a lazily sized scratch), packed FP8 ones (their
     * activation scratch is the backend's own, made with it), packed int4 ones up to
     * PL_Q4_SCRATCHLESS_N rows (above, possibly a dequantization scratch), and a forward
     * without host-side decisions; pl_model_set_eager turns them off (vLLM's enforce_eager). */
    m->use_graphs = be->ops->graph_begin && !wc.allocating;
    m->graph_max_n = wc.has_q4 ? PL_Q4_SCRATCHLESS_N : INT32_MAX;
    *out = m;
    return PL_STATUS_OK;
}

void pl_model_set_eager(struct pl_model *m)
{
    m->use_graphs = false;
}

/* Frees every recorded decode graph (they are recorded again as batches need them). */
static void graphs_free(struct pl_model *m)
{
    for (int i = 0; i < MAX_GRAPHS; i++)
        for (int j = 0; j < CTX_BUCKETS; j++)
            if (m->graphs[i][j]) {
                m->be->ops->graph_free(m->be, m->graphs[i][j]);
                m->graphs[i][j] = NULL;
            }
}

void pl_model_free(struct pl_model *m)
{
    if (!m)
        return;
    struct pl_backend *be = m->be;
    for (int i = 0; i < m->n_scratch; i++)
        be_release(be, m->scratch[i]);
    void *bufs[] = {m->d_rope, m->l_res, m->l_h, m->l_x, m->logits, m->d_ids, m->d_pos,
                    m->d_seq_lens, m->d_slots, m->d_logit_rows, m->d_cu, m->d_ctx, m->d_tables};
    for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++)
        be_release(be, bufs[i]);
    graphs_free(m);
    if (m->h_stage_pinned)
        be->ops->host_free(be, m->h_stage);
    else
        free(m->h_stage);
    free(m->h_row_map);
    free(m->h_logits);
    be_release(be, m->d_gather);
    be_release(be, m->d_full);
    free(m);
}

pl_status pl_model_set_tp(struct pl_model *m, struct pl_comm *comm, int vocab_start,
                          int vocab_full, struct pl_err *err)
{
    if (vocab_start < 0 || vocab_start + m->cfg->vocab_size > vocab_full)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                          "model: vocabulary rows [%d, %d) outside the vocabulary of %d",
                          vocab_start, vocab_start + m->cfg->vocab_size, vocab_full);
    free(m->h_logits);
    m->h_logits = malloc(sizeof(float) * (size_t)m->logits_chunk * (size_t)m->cfg->vocab_size);
    if (!m->h_logits)
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "model: out of memory");
    m->comm = comm;
    m->tp_rank = comm ? pl_comm_rank(comm) : 0;
    m->vocab_start = vocab_start;
    m->vocab_full = vocab_full;
    const struct pl_backend_ops *op = m->be->ops;
    if (comm && !pl_comm_graph_safe(comm))
        m->use_graphs = false; /* the staged communicator synchronises */
    m->tp_can_sample = comm && op->sample && op->copy_2d;
    if (m->tp_can_sample && m->tp_rank == 0) {
        const size_t lc = (size_t)m->logits_chunk;
        pl_status st = PL_STATUS_OK;
        m->d_gather = be_alloc(m, sizeof(float) * (size_t)pl_comm_size(comm) * lc *
                                      (size_t)m->cfg->vocab_size, &st);
        m->d_full = be_alloc(m, sizeof(float) * lc * (size_t)vocab_full, &st);
        if (st != PL_STATUS_OK)
            return pl_err_set(err, st, "model: cannot allocate rank 0's gathered logits (%d x "
                              "%d floats)", m->logits_chunk, vocab_full);
    }
    return PL_STATUS_OK;
}

/* The shape of one layer-loop run: the batch's, or a padded decode graph's. */
struct run_shape {
    int n_tokens, n_seqs, max_blocks_per_seq, max_q_len, max_context_len;
};

/* The architecture's forward over the uploaded batch arrays: leaves the residual stream
 * in scratch RES and the last sublayer's output in H. */
static void run_layers(struct pl_model *m, const struct run_shape *sh, const struct pl_kv_cache *kv)
{
    const struct pl_fwd f = {
        .cfg = m->cfg,
        .w = m->w,
        .be = m->be,
        .kv = kv,
        .n_tokens = sh->n_tokens,
        .n_seqs = sh->n_seqs,
        .max_blocks_per_seq = sh->max_blocks_per_seq,
        .max_q_len = sh->max_q_len,
        .max_context_len = sh->max_context_len,
        .ids = m->d_ids,
        .pos = m->d_pos,
        .seq_lens = m->d_seq_lens,
        .slots = m->d_slots,
        .cu_seqlens_q = m->d_cu,
        .context_lens = m->d_ctx,
        .block_tables = m->d_tables,
        .rope = m->rope,
        .scratch = m->scratch,
        .comm = m->comm,
        .tp_rank = m->tp_rank,
    };
    m->arch->forward(&f);
}

static pl_status emit_logits(struct pl_model *m, const struct pl_batch *b, float *logits,
                             struct pl_err *err);
static pl_status emit_hidden(struct pl_model *m, const struct pl_batch *b, struct pl_err *err);
static void widen_hidden(struct pl_model *m, const struct pl_batch *b);

/* Everything a kernel will index with must be in range before it runs. */
static pl_status check_batch(const struct pl_model *m, const struct pl_batch *b,
                             const struct pl_kv_cache *kv, struct pl_err *err)
{
    if (b->n_tokens > m->max_tokens || b->n_seqs > m->max_seqs ||
        b->max_blocks_per_seq > m->max_blocks_per_seq || b->n_logits > b->n_tokens ||
        b->n_hidden > b->n_tokens)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                          "model: batch of %d tokens / %d sequences / %d blocks per sequence / %d "
                          "logits rows / %d hidden rows exceeds the model's limits (%d / %d / %d "
                          "/ n_tokens / n_tokens)",
                          b->n_tokens, b->n_seqs, b->max_blocks_per_seq, b->n_logits, b->n_hidden,
                          m->max_tokens, m->max_seqs, m->max_blocks_per_seq);
    if (kv->n_layers != m->cfg->n_layers || kv->kv_dim != m->kv_dim || kv->block_size <= 0)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                          "model: KV cache (%d layers, kv_dim %d) does not match the model (%d, %d)",
                          kv->n_layers, kv->kv_dim, m->cfg->n_layers, m->kv_dim);
    pl_status st = pl_batch_validate(b, kv->block_size, err);
    if (st != PL_STATUS_OK)
        return st;
    for (int t = 0; t < b->n_tokens; t++)
        if (b->token_ids[t] < 0 || b->token_ids[t] >= m->vocab_full)
            return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                              "model: token %d has id %d outside the vocabulary (%d)", t,
                              b->token_ids[t], m->vocab_full);
    for (int s = 0; s < b->n_seqs; s++) {
        int used = (b->context_lens[s] + kv->block_size - 1) / kv->block_size;
        const int32_t *table = b->block_tables + (size_t)s * (size_t)b->max_blocks_per_seq;
        for (int i = 0; i < used; i++)
            if (table[i] >= kv->n_blocks)
                return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                                  "model: sequence %d uses block %d, the pool has %d", s, table[i],
                                  kv->n_blocks);
    }
    return PL_STATUS_OK;
}

/*
 * Stages b's arrays, padded to n_pad sequences of one token each when n_pad > n_seqs
 * (graph sizes; decode batches only), and uploads them into the fixed device buffers.
 */
static pl_status upload_batch(struct pl_model *m, const struct pl_batch *b, int n_pad)
{
    struct pl_backend *be = m->be;
    const size_t T = (size_t)b->n_tokens, S = (size_t)b->n_seqs;
    const int32_t *seq_lens = b->seq_lens;
    const int32_t *ids = b->token_ids;
    if (m->vocab_full != m->cfg->vocab_size) { /* vocab-parallel: local rows, -1 elsewhere */
        for (size_t t = 0; t < T; t++) {
            int32_t id = b->token_ids[t] - m->vocab_start;
            m->h_ids[t] = id >= 0 && id < m->cfg->vocab_size ? id : -1;
        }
        ids = m->h_ids;
    }
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
        {m->d_ids, m->h_ids, ids, T, n_tok},
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

/* The graph slot and padded size for a decode batch of n sequences (-1: none fits). */
static int graph_slot(const struct pl_model *m, int n, int *n_pad)
{
    const int cap = m->max_seqs < m->max_tokens ? m->max_seqs : m->max_tokens;
    if (n > m->graph_max_n)
        return -1;
    int size = n <= 1 ? 1 : n <= 2 ? 2 : n <= 4 ? 4 : (n + 7) / 8 * 8;
    if (size > cap)
        size = cap; /* the last size is the cap itself (>= n), a slot of its own */
    int slot = size <= 4 ? (size == 4 ? 2 : size - 1) : 2 + (size + 7) / 8;
    if (slot >= MAX_GRAPHS)
        return -1;
    *n_pad = size;
    return slot;
}

static uint64_t fnv1a64(uint64_t h, uint64_t v)
{
    for (int b = 0; b < 8; b++)
        h = (h ^ ((v >> (8 * b)) & 0xffu)) * 1099511628211ull;
    return h;
}

/* What a recorded graph knows of a KV cache: the block geometry and every layer's K and V
 * buffer (FNV-1a over them). */
static uint64_t kv_signature(const struct pl_kv_cache *kv)
{
    uint64_t h = 1469598103934665603ull;
    h = fnv1a64(h, (uint64_t)kv->n_blocks);
    h = fnv1a64(h, (uint64_t)kv->block_size);
    h = fnv1a64(h, (uint64_t)kv->kv_dim);
    for (int l = 0; l < kv->n_layers; l++) {
        h = fnv1a64(h, (uint64_t)(uintptr_t)kv->k[l]);
        h = fnv1a64(h, (uint64_t)(uintptr_t)kv->v[l]);
    }
    return h;
}

/* Runs the layer loop of a decode-only batch from the graph of its (size, context
 * bucket), recorded now if there is none yet. Returns false when graphs cannot serve
 * this batch. */
static bool run_layers_graph(struct pl_model *m, const struct pl_batch *b,
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
    const uint64_t kv_sig = kv_signature(kv);
    if (kv_sig != m->graph_kv) { /* another KV cache than the graphs were recorded over */
        graphs_free(m);
        m->graph_kv = kv_sig;
    }
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

pl_status pl_model_forward(struct pl_model *m, const struct pl_batch *b,
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
        return backend_fail(m->be, st, err, graphed ? "the decode graph" : "uploading the batch");

    st = emit_logits(m, b, logits, err);
    /* a failed collective is the cause of whatever else failed after it */
    if (m->comm && pl_comm_error(m->comm, NULL) != PL_STATUS_OK)
        return pl_comm_error(m->comm, err);
    return st;
}

/*
 * The logits section of forward: per chunk of at most logits_chunk rows, the
 * final norm of the gathered rows and the LM head into m->logits, then either
 * the download into host logits or (m->job) the backend's sample op over the
 * sampler rows whose logits row lies in the chunk; only their results leave
 * the backend.
 */
static pl_status emit_logits(struct pl_model *m, const struct pl_batch *b, float *logits,
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
        op->get_rows(be, m->l_res, m->scratch[PL_SCRATCH_RES], m->d_logit_rows + r0, rn, hid);
        op->get_rows(be, m->l_h, m->scratch[PL_SCRATCH_H], m->d_logit_rows + r0, rn, hid);
        op->rmsnorm(be, m->l_x, m->l_res, m->l_h, &m->w->final_norm, rn, hid, c->rms_norm_eps);
        op->logits(be, m->logits, m->l_x, &m->w->lm_head, rn);
        if (c->final_softcap > 0) /* Gemma 2: logits = cap * tanh(logits / cap) */
            op->softcap(be, m->logits, (size_t)rn * vocab, c->final_softcap);
        if (!job && m->vocab_full != c->vocab_size) {
            /* vocab-parallel: this rank's columns of the caller's [n_logits, vocab_full] */
            st = op->download(be, m->h_logits, m->logits, sizeof(float) * (size_t)rn * vocab);
            if (st == PL_STATUS_OK)
                st = op->sync(be);
            if (st != PL_STATUS_OK)
                return backend_fail(be, st, err, "downloading the logits");
            for (int i = 0; i < rn; i++)
                memcpy(logits + (size_t)(r0 + i) * (size_t)m->vocab_full + m->vocab_start,
                       m->h_logits + (size_t)i * vocab, sizeof(float) * vocab);
            continue;
        }
        if (!job) {
            st = op->download(be, logits + (size_t)r0 * vocab, m->logits,
                              sizeof(float) * (size_t)rn * vocab);
            if (st != PL_STATUS_OK)
                return backend_fail(be, st, err, "downloading the logits");
            continue;
        }
        const float *sample_logits = m->logits;
        int sample_vocab = c->vocab_size;
        if (m->vocab_full != c->vocab_size) {
            /* vocab-parallel: the chunk's slices meet on rank 0, which places each rank's
             * columns and samples over the whole vocabulary; the other ranks are done */
            pl_comm_gather(m->comm, be, m->logits, m->tp_rank == 0 ? m->d_gather : NULL,
                           (size_t)rn * vocab, PL_DTYPE_F32);
            if (m->tp_rank == 0)
                for (int k = 0; k < pl_comm_size(m->comm); k++)
                    op->copy_2d(be, m->d_full + (size_t)k * vocab,
                                sizeof(float) * (size_t)m->vocab_full,
                                m->d_gather + (size_t)k * (size_t)rn * vocab,
                                sizeof(float) * vocab, sizeof(float) * vocab, (size_t)rn);
            sample_logits = m->d_full;
            sample_vocab = m->vocab_full;
        }
        int s1 = s0;
        while (s1 < job->n_rows && job->row_src[s1] < r0 + rn) {
            m->h_row_map[s1 - s0] = job->row_src[s1] - r0;
            s1++;
        }
        if (s1 > s0 && m->tp_rank == 0) {
            if (s0 == 0 && b->before_sample)
                b->before_sample(b->before_sample_user); /* overlaps the queued kernels */
            st = op->sample(be, sample_logits, rn, sample_vocab, m->h_row_map, s1 - s0,
                            job->rows + s0, job->uniforms + s0, job->out + s0, err);
            if (st != PL_STATUS_OK)
                return pl_err_prefix(err, "model: sampling");
        }
        s0 = s1;
    }
    /* the hidden states are the same on every rank (after the all-reduces): rank 0's */
    const bool hidden = b->n_hidden > 0 && m->tp_rank == 0;
    if (hidden && (st = emit_hidden(m, b, err)) != PL_STATUS_OK)
        return st;
    st = op->sync(be);
    if (st != PL_STATUS_OK)
        return backend_fail(be, st, err, "the forward");
    if (hidden)
        widen_hidden(m, b);
    return PL_STATUS_OK;
}

/*
 * The pooling section of forward, for every architecture: the final norm of the
 * rows b->hidden_rows (gathered in chunks of logits_chunk rows through the logits
 * scratch, as the logits rows are) downloaded into b->hidden. The row indices go
 * up into d_logit_rows, which the logits section is done with (ops run in order);
 * straight from b->hidden_rows, not through the staging buffer, whose logits rows
 * an asynchronous copy may still be reading. Activations narrower than fp32 (bf16
 * on CUDA) come down into the back half of each chunk's fp32 rows and are widened
 * in place after the sync (widen_hidden), so no staging buffer is needed.
 */
static pl_status emit_hidden(struct pl_model *m, const struct pl_batch *b, struct pl_err *err)
{
    const struct pl_backend_ops *op = m->be->ops;
    struct pl_backend *be = m->be;
    const struct pl_model_config *c = m->cfg;
    const int hid = c->hidden_size;
    const size_t elem = pl_dtype_size(op->act_dtype);
    pl_status st = op->upload(be, m->d_logit_rows, b->hidden_rows,
                              sizeof(int32_t) * (size_t)b->n_hidden);
    if (st != PL_STATUS_OK)
        return backend_fail(be, st, err, "uploading the hidden rows");
    for (int r0 = 0; r0 < b->n_hidden; r0 += m->logits_chunk) {
        int rn = b->n_hidden - r0 < m->logits_chunk ? b->n_hidden - r0 : m->logits_chunk;
        op->get_rows(be, m->l_res, m->scratch[PL_SCRATCH_RES], m->d_logit_rows + r0, rn, hid);
        op->get_rows(be, m->l_h, m->scratch[PL_SCRATCH_H], m->d_logit_rows + r0, rn, hid);
        op->rmsnorm(be, m->l_x, m->l_res, m->l_h, &m->w->final_norm, rn, hid, c->rms_norm_eps);
        size_t n = (size_t)rn * (size_t)hid;
        char *dst = (char *)(b->hidden + (size_t)r0 * (size_t)hid) + n * (sizeof(float) - elem);
        st = op->download(be, dst, m->l_x, n * elem);
        if (st != PL_STATUS_OK)
            return backend_fail(be, st, err, "downloading the hidden states");
    }
    return PL_STATUS_OK;
}

/* After the sync: each chunk's act-dtype values (in the back half of its fp32 rows) widened
 * to fp32 front to back. Element i is read from byte n*(4-e) + e*i and written at bytes
 * [4i, 4i+4), which never reaches an element not yet read (4i+3 < n*(4-e) + e*(i+1) for
 * e = 2, i < n). */
static void widen_hidden(struct pl_model *m, const struct pl_batch *b)
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

bool pl_model_can_sample(const struct pl_model *m)
{
    return m->be->ops->sample != NULL &&
           (m->vocab_full == m->cfg->vocab_size || m->tp_can_sample);
}

pl_status pl_model_forward_sample(struct pl_model *m, const struct pl_batch *b,
                                  const struct pl_kv_cache *kv, const int32_t *row_src,
                                  int n_rows, const struct pl_sampler_row *rows,
                                  const double *uniforms, struct pl_sample_result *out,
                                  struct pl_err *err)
{
    if (!pl_model_can_sample(m))
        return pl_err_set(err, PL_STATUS_UNSUPPORTED, "model: the %s backend cannot sample%s",
                          m->be->ops->name, m->vocab_full != m->cfg->vocab_size
                                                ? " a vocab-parallel shard" : "");
    if (n_rows < 0 || n_rows > m->max_tokens)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                          "model: %d sampler rows (at most %d)", n_rows, m->max_tokens);
    for (int r = 0; r < n_rows; r++)
        if (row_src[r] < 0 || row_src[r] >= b->n_logits || (r > 0 && row_src[r] < row_src[r - 1]))
            return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                              "model: sampler row %d reads logits row %d (of %d; rows must not "
                              "decrease)",
                              r, (int)row_src[r], b->n_logits);
    struct sample_job job = {row_src, n_rows, rows, uniforms, out};
    m->job = &job;
    pl_status st = pl_model_forward(m, b, kv, NULL, err);
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
    size_t elem = pl_dtype_size(pl_backend_kv_dtype(be));
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

struct pl_model_runner {
    struct pl_model_config cfg;
    struct pl_safetensors *st;   /* owned; NULL when built from parts */
    struct pl_weights *w_owned;  /* owned; NULL when built from parts */
    const struct pl_weights *w;
    struct pl_backend *be_owned; /* owned; NULL when built from parts */
    struct pl_backend *be;
    struct pl_model *model;
    struct pl_kv_cache kv;
    bool has_kv;
    int block_size, n_blocks, max_model_len, max_tokens, max_seqs;
    /* a tensor-parallel rank (pl_model_runner_new_rank): its communicator and shard; the
     * coordinator of the ranks (tp != NULL) forwards every call to tensor_parallel.c */
    struct pl_comm *comm;
    struct pl_shard shard;
    struct pl_model_config full_cfg;
    char log_prefix[48];   /* "rank 1/4: " or "" */
    struct pl_tp *tp;
};

/* pl_model_new, then the rank's tensor-parallel binding when it is one. */
static pl_status bind_model(struct pl_model_runner *r, int max_blocks_per_seq, struct pl_err *err)
{
    pl_status st = pl_model_new(&r->cfg, r->w, r->be, r->max_tokens, r->max_seqs,
                                max_blocks_per_seq, &r->model, err);
    if (st == PL_STATUS_OK && r->comm)
        st = pl_model_set_tp(r->model, r->comm,
                             (int)pl_shard_start(&r->shard, &r->cfg, PL_DIM_VOCAB),
                             r->full_cfg.vocab_size, err);
    return st;
}

void pl_model_runner_params_default(struct pl_model_runner_params *p)
{
    memset(p, 0, sizeof(*p)); /* fields added later default to zero */
    p->model_dir = NULL;
    p->n_threads = 0;
    p->block_size = 16;
    p->num_kv_blocks = 0;
    p->kv_cache_bytes = 256u << 20;
    p->max_num_batched_tokens = 2048;
    p->max_num_seqs = 256;
    p->max_model_len = 0;
    p->device = "cpu";
    p->gpu_memory_utilization = 0.9;
    p->load_format = "auto";
    p->seed = 0;
    p->convert_dtype = false;
    p->dtype = PL_DTYPE_F32;
    p->allow_long_max_model_len = false;
    p->enforce_eager = false;
    p->cpu_scalar_kernels = false;
    p->cuda_cublas_only = false;
    p->tensor_parallel_size = 1;
}

static double mib(double bytes) { return bytes / (1024.0 * 1024.0); }

/* The weights' dtype for the memory plan: the matrices' (q_proj of layer 0). */
static const char *weights_dtype_name(const struct pl_weights *w)
{
    return w->n_layers > 0 && w->layers ? pl_dtype_torch_name(w->layers[0].wq.dtype) : "?";
}

/* The longest sequence the model supports, as vLLM derives it: rope scaling
 * that stretches positions (linear, dynamic NTK, yarn) multiplies the trained
 * length by its factor; llama3 already states the extended length. */
static long long derived_max_len(const struct pl_model_config *c)
{
    double len = c->max_position_embeddings;
    switch (c->rope.type) {
    case PL_ROPE_LINEAR:
    case PL_ROPE_DYNAMIC:
        len *= c->rope.factor;
        break;
    case PL_ROPE_YARN:
        len = (double)(c->rope.original_max_position > 0 ? c->rope.original_max_position
                                                         : c->max_position_embeddings) *
              c->rope.factor;
        break;
    case PL_ROPE_DEFAULT:
    case PL_ROPE_LLAMA3:
    case PL_ROPE_LONGROPE: /* max_position_embeddings is already the extended length */
        break;
    }
    return len > (double)INT32_MAX ? INT32_MAX : (long long)len;
}

void pl_kv_pool_plan(double budget_bytes, size_t block_bytes, int block_size,
                     long long max_model_len, int max_num_seqs, struct pl_kv_pool_plan *out)
{
    memset(out, 0, sizeof(*out));
    double nb = block_bytes > 0 && budget_bytes > 0 ? budget_bytes / (double)block_bytes : 0;
    out->budget_blocks = nb >= 9e18 ? (long long)9e18 : (long long)nb;
    long long n = out->budget_blocks;
    out->limit = PL_KV_POOL_LIMIT_MEMORY;
    if (max_model_len > 0 && max_num_seqs > 0 && block_size > 0) {
        out->seq_blocks = (long long)max_num_seqs * ((max_model_len + block_size - 1) / block_size);
        if (n > out->seq_blocks) {
            n = out->seq_blocks;
            out->limit = PL_KV_POOL_LIMIT_SEQS;
        }
    }
    if (n > PL_KV_MAX_BLOCKS) {
        n = PL_KV_MAX_BLOCKS;
        out->limit = PL_KV_POOL_LIMIT_BLOCK_IDS;
    }
    out->n_blocks = (int)n;
}

/* Refuses a max_model_len beyond what the model was trained for (vLLM's rule), unless
 * the caller opted in; then it only warns. */
static pl_status check_long_max_model_len(const struct pl_model_config *c,
                                          const struct pl_model_runner_params *p,
                                          struct pl_err *err)
{
    const long long derived = derived_max_len(c);
    if (p->max_model_len <= 0 || derived <= 0 || p->max_model_len <= derived)
        return PL_STATUS_OK;
    char source[160];
    if (derived != c->max_position_embeddings)
        snprintf(source, sizeof(source), "max_position_embeddings %d with rope scaling",
                 c->max_position_embeddings);
    else
        snprintf(source, sizeof(source), "max_position_embeddings in config.json");
    if (p->allow_long_max_model_len) {
        PL_WARN("max_model_len %d is above the model's length %lld (%s): positions past it "
                "were never trained, so the output may be wrong (allowed by "
                "--allow-long-max-model-len / VLLM_ALLOW_LONG_MAX_MODEL_LEN)",
                p->max_model_len, derived, source);
        return PL_STATUS_OK;
    }
    return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                      "max_model_len %d is above the model's length %lld (%s); positions past "
                      "it were never trained, so the output may be wrong. To use it anyway, "
                      "pass --allow-long-max-model-len or set VLLM_ALLOW_LONG_MAX_MODEL_LEN=1",
                      p->max_model_len, derived, source);
}

/* The memory plan's note on a capped pool ("" when the budget alone set it). */
static void cap_note(const struct pl_kv_pool_plan *pl, int max_num_seqs, long long len,
                     char *buf, size_t n)
{
    if (pl->limit == PL_KV_POOL_LIMIT_SEQS)
        snprintf(buf, n, " (capped: the budget holds %lld blocks, but %d sequences x %lld "
                 "tokens use at most %lld)", pl->budget_blocks, max_num_seqs, len,
                 pl->seq_blocks);
    else if (pl->limit == PL_KV_POOL_LIMIT_BLOCK_IDS)
        snprintf(buf, n, " (capped at the block-id limit %d; the budget holds %lld blocks)",
                 PL_KV_MAX_BLOCKS, pl->budget_blocks);
    else
        buf[0] = '\0';
}

/* Sizes the pool, checks max_model_len, builds the decoder and the KV cache. */
static pl_status runner_setup(struct pl_model_runner *r, const struct pl_model_runner_params *p,
                              struct pl_err *err)
{
    const struct pl_model_config *c = &r->cfg;
    if (p->block_size != 8 && p->block_size != 16 && p->block_size != 32)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                          "block size %d is not supported (use 8, 16 or 32)", p->block_size);
    if (p->num_kv_blocks < 0 || p->max_num_batched_tokens < 0 || p->max_num_seqs < 0 ||
        p->max_model_len < 0)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                          "num_kv_blocks, max_num_batched_tokens, max_num_seqs and max_model_len "
                          "must not be negative");
    if (p->num_kv_blocks > PL_KV_MAX_BLOCKS)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                          "num_kv_blocks %d is above the most a pool may have (%d)",
                          p->num_kv_blocks, PL_KV_MAX_BLOCKS);
    pl_status st = check_long_max_model_len(c, p, err);
    if (st != PL_STATUS_OK)
        return st;
    r->block_size = p->block_size;
    r->max_tokens = p->max_num_batched_tokens > 0 ? p->max_num_batched_tokens : 2048;
    r->max_seqs = p->max_num_seqs > 0 ? p->max_num_seqs : 256;

    const size_t kv_dim = (size_t)c->n_kv_heads * (size_t)c->head_dim;
    const size_t elem = pl_dtype_size(pl_backend_kv_dtype(r->be));
    const size_t block_bytes = 2 * (size_t)c->n_layers * (size_t)r->block_size * kv_dim * elem;
    /* the longest sequence asked for (or the model's): what one sequence may need */
    long long want_len = p->max_model_len > 0 ? p->max_model_len : derived_max_len(c);
    if (want_len <= 0)
        want_len = c->max_position_embeddings;
    /* On a GPU with no explicit pool size, the KV pool gets the memory that the weights
     * and the decoder's activations (allocated by pl_model_new: the activation peak)
     * leave under gpu_memory_utilization, so the decoder is built first. */
    const bool gpu_sized = p->num_kv_blocks <= 0 && r->be->ops->device_memory;
    struct pl_kv_pool_plan plan = {0};
    if (gpu_sized) {
        int mbps = (int)((want_len + r->block_size - 1) / r->block_size);
        st = bind_model(r, mbps, err);
        if (st != PL_STATUS_OK)
            return st;
        if (p->enforce_eager)
            pl_model_set_eager(r->model);
        double util = p->gpu_memory_utilization > 0 ? p->gpu_memory_utilization : 0.9;
        if (util > 1.0)
            return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                              "gpu_memory_utilization %.2f is above 1", util);
        size_t free_b = 0, total_b = 0;
        st = r->be->ops->mem_info ? r->be->ops->mem_info(r->be, &free_b, &total_b)
                                  : PL_STATUS_UNSUPPORTED;
        if (st != PL_STATUS_OK)
            return pl_err_set(err, st, "could not read the %s device's free memory: %s",
                              r->be->ops->name,
                              r->be->ops->last_error ? r->be->ops->last_error(r->be) : "no mem_info");
        double budget = (double)free_b - (1.0 - util) * (double)total_b;
        pl_kv_pool_plan(budget, block_bytes, r->block_size, want_len, r->max_seqs, &plan);
        if (plan.n_blocks < 1)
            return pl_err_set(err, PL_STATUS_NO_MEMORY,
                              "gpu_memory_utilization %.2f leaves no memory for the KV cache "
                              "(card %.1f GiB, %.1f GiB free after weights %.1f GiB and "
                              "activations): raise it or use a smaller model",
                              util, total_b / 1073741824.0, free_b / 1073741824.0,
                              r->w->n_bytes / 1073741824.0);
    } else if (p->num_kv_blocks > 0) {
        plan.n_blocks = plan.budget_blocks = p->num_kv_blocks;
    } else {
        pl_kv_pool_plan((double)p->kv_cache_bytes, block_bytes, r->block_size, want_len,
                        r->max_seqs, &plan);
        if (plan.n_blocks < 1)
            return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                              "a KV cache budget of %zu bytes holds no block (one block of %d "
                              "tokens takes %zu bytes)",
                              p->kv_cache_bytes, r->block_size, block_bytes);
    }
    r->n_blocks = plan.n_blocks;
    const long long capacity = (long long)r->n_blocks * r->block_size;
    if (p->max_model_len > 0) {
        if (p->max_model_len > capacity)
            return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                              "max_model_len %d does not fit the KV cache: %d blocks of %d tokens "
                              "hold %lld tokens, so the largest max_model_len that fits is %lld "
                              "(raise --num-kv-blocks, the KV budget or "
                              "--gpu-memory-utilization, or lower --max-model-len)",
                              p->max_model_len, r->n_blocks, r->block_size, capacity, capacity);
        r->max_model_len = p->max_model_len;
    } else {
        long long len = derived_max_len(c);
        if (len <= 0)
            len = capacity;
        if (len > capacity) {
            PL_WARN("max_model_len: the model allows %lld tokens but the KV cache holds %lld; "
                    "using %lld (set --max-model-len or --num-kv-blocks to choose)",
                    len, capacity, capacity);
            len = capacity;
        }
        r->max_model_len = (int)len;
    }
    if (!gpu_sized) {
        int max_blocks_per_seq = (r->max_model_len + r->block_size - 1) / r->block_size;
        st = bind_model(r, max_blocks_per_seq, err);
        if (st != PL_STATUS_OK)
            return st;
        if (p->enforce_eager)
            pl_model_set_eager(r->model);
    }
    st = pl_kv_cache_init(&r->kv, r->be, &r->cfg, r->n_blocks, r->block_size, err);
    if (st != PL_STATUS_OK)
        return st;
    r->has_kv = true;

    double kv_bytes = (double)block_bytes * r->n_blocks;
    char note[200];
    cap_note(&plan, r->max_seqs, want_len, note, sizeof(note));
    const enum pl_dtype kvt = pl_backend_kv_dtype(r->be);
    PL_INFO("%smemory plan (%s backend): weights %.1f MiB (%s), KV cache %.1f MiB = %d blocks x "
            "%d tokens = %lld tokens (%.1f KiB/token%s%s)%s, max_model_len %d, max concurrency "
            "at max_model_len %.2f",
            r->log_prefix, r->be->ops->name, mib((double)r->w->n_bytes), weights_dtype_name(r->w),
            mib(kv_bytes), r->n_blocks, r->block_size, capacity,
            (double)block_bytes / r->block_size / 1024.0,
            kvt != r->be->ops->act_dtype ? ", " : "",
            kvt != r->be->ops->act_dtype ? pl_dtype_torch_name(kvt) : "", note, r->max_model_len,
            (double)capacity / r->max_model_len);
    return PL_STATUS_OK;
}

/* The backend p->device names (backend.h's pl_backend_new: cpu, an accelerator, auto), on
 * accelerator `device` (a tensor-parallel rank's), with n_threads CPU threads. */
static pl_status make_backend(const struct pl_model_runner_params *p, int device, int n_threads,
                              struct pl_backend **out, struct pl_err *err)
{
    /* --dtype float32 asks for float32 compute: an accelerator's float32 mode */
    const struct pl_backend_params bp = {.n_threads = n_threads,
                                         .device = device,
                                         .float32 = p->convert_dtype && p->dtype == PL_DTYPE_F32,
                                         .cpu_scalar_kernels = p->cpu_scalar_kernels,
                                         .cuda_cublas_only = p->cuda_cublas_only};
    return pl_backend_new(p->device ? p->device : "cpu", &bp, out, err);
}

/* The backend, the precheck, the weights (the rank's share when r->comm is set; from st,
 * or dummy) and the setup, for a runner whose cfg is set. */
static pl_status runner_open(struct pl_model_runner *r, const struct pl_model_runner_params *p,
                             const struct pl_safetensors *st_files, bool dummy, int device,
                             int n_threads, struct pl_err *err)
{
    pl_status st = make_backend(p, device, n_threads, &r->be_owned, err);
    if (st == PL_STATUS_OK) {
        r->be = r->be_owned;
        st = precheck_backend(&r->cfg, r->be, err);
    }
    if (st == PL_STATUS_OK && p->kv_cache_dtype == PL_KV_CACHE_FP8_E4M3) {
        /* vLLM's scales without calibrated ones: 1.0 for k and v */
        const struct pl_backend_ops *o = r->be->ops;
        if (!o->set_kv_dtype || !o->supports(r->be, PL_OP_ATTENTION, PL_DTYPE_F8_E4M3) ||
            o->set_kv_dtype(r->be, PL_DTYPE_F8_E4M3, 1.0f, 1.0f) != PL_STATUS_OK)
            st = pl_err_set(err, PL_STATUS_UNSUPPORTED,
                            "--kv-cache-dtype fp8: the %s backend has no FP8 KV cache%s (it "
                            "keeps the KV cache in %s); use --kv-cache-dtype auto",
                            o->name,
                            o->act_dtype == PL_DTYPE_F32 && o->device_memory
                                ? " in its float32 mode" : "",
                            pl_dtype_torch_name(o->act_dtype));
    }
    if (st == PL_STATUS_OK && r->cfg.quant.method != PL_QUANT_NONE) {
        char what[160];
        pl_quant_describe(&r->cfg.quant, what, sizeof(what));
        if (dummy)
            PL_INFO("quantization: %s; dummy weights: int4 and FP8 W8A8 modules packed where "
                    "the %s backend runs them packed, the rest unquantized", what,
                    r->be->ops->name);
        else
            PL_INFO("quantization: %s; kept packed where the %s backend runs the layout (int4, "
                    "FP8 W8A8 per tensor or channel), else dequantized at load (the reference "
                    "path)", what, r->be->ops->name);
    }
    if (st == PL_STATUS_OK) {
        double t0 = pl_clock_seconds();
        int dtype = p->convert_dtype ? (int)p->dtype : PL_WEIGHTS_DTYPE_AS_STORED;
        /* --dtype auto on a backend that computes in bfloat16: a float32 checkpoint is
         * cast to bfloat16 at load (vLLM's auto does the same on GPUs) */
        if (!p->convert_dtype && r->be->ops->act_dtype == PL_DTYPE_BF16 &&
            r->cfg.dtype == PL_DTYPE_F32)
            dtype = PL_DTYPE_BF16;
        if (r->comm)
            st = pl_weights_load_shard(&r->cfg, &r->shard, dummy ? NULL : st_files, r->be, dtype,
                                       p->seed, &r->w_owned, err);
        else
            st = dummy ? pl_weights_dummy_as(&r->cfg, r->be, p->seed, dtype, &r->w_owned, err)
                       : pl_weights_load_as(&r->cfg, st_files, r->be, dtype, &r->w_owned, err);
        if (st == PL_STATUS_OK)
            PL_INFO("%sweights: %.2f GiB %s on the %s backend in %.2f s (%s%s%s)", r->log_prefix,
                    r->w_owned->n_bytes / 1073741824.0, dummy ? "generated (dummy)" : "loaded",
                    r->be->ops->name, pl_clock_seconds() - t0, weights_dtype_name(r->w_owned),
                    !r->w_owned->n_converted ? ""
                    : r->comm                ? ", its share converted or gathered from the checkpoint's "
                                             : ", converted from the checkpoint's ",
                    r->w_owned->n_converted ? pl_dtype_torch_name(r->cfg.dtype) : "");
    }
    if (st == PL_STATUS_OK) {
        r->w = r->w_owned;
        st = runner_setup(r, p, err);
    }
    return st;
}

/* "auto", "safetensors" or "dummy"; sets *dummy. */
static pl_status check_load_format(const struct pl_model_runner_params *p, bool *dummy,
                                   struct pl_err *err)
{
    const char *fmt = p->load_format ? p->load_format : "auto";
    *dummy = !strcmp(fmt, "dummy");
    if (!*dummy && strcmp(fmt, "auto") && strcmp(fmt, "safetensors"))
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                          "load_format: '%s' is not one of auto, safetensors, dummy", fmt);
    return PL_STATUS_OK;
}

pl_status pl_model_runner_new(const struct pl_model_runner_params *p,
                              struct pl_model_runner **out, struct pl_err *err)
{
    if (!p->model_dir)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT, "model runner: no model directory");
    if (p->tensor_parallel_size < 0 || p->tensor_parallel_size > PL_TP_MAX_RANKS)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                          "tensor_parallel_size %d is not in 1..%d", p->tensor_parallel_size,
                          PL_TP_MAX_RANKS);
    struct pl_model_runner *r = calloc(1, sizeof(*r));
    if (!r)
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "model runner: out of memory");
    bool dummy = false;
    pl_status st = pl_model_config_load(p->model_dir, &r->cfg, err);
    if (st == PL_STATUS_OK)
        st = pl_quant_config_apply_flag(&r->cfg.quant, p->quantization, err);
    if (st == PL_STATUS_OK)
        st = check_load_format(p, &dummy, err);
    if (st == PL_STATUS_OK && !dummy)
        st = pl_safetensors_open_dir(p->model_dir, &r->st, err);
    if (st == PL_STATUS_OK && p->tensor_parallel_size > 1)
        st = pl_tp_new(p, &r->cfg, r->st, &r->tp, err);
    else if (st == PL_STATUS_OK)
        st = runner_open(r, p, r->st, dummy, 0, p->n_threads, err);
    if (st != PL_STATUS_OK) {
        pl_model_runner_free(r);
        return st;
    }
    *out = r;
    return PL_STATUS_OK;
}

pl_status pl_model_runner_new_rank(const struct pl_model_runner_params *p,
                                   const struct pl_model_config *full,
                                   const struct pl_safetensors *st_files, struct pl_comm *comm,
                                   int device, int n_threads, struct pl_model_runner **out,
                                   struct pl_err *err)
{
    *out = NULL;
    struct pl_model_runner *r = calloc(1, sizeof(*r));
    if (!r)
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "model runner: out of memory");
    const int rank = pl_comm_rank(comm), size = pl_comm_size(comm);
    r->full_cfg = *full;
    r->comm = comm;
    r->shard = (struct pl_shard){.rank = rank, .size = size, .full = &r->full_cfg};
    snprintf(r->log_prefix, sizeof(r->log_prefix), "rank %d/%d: ", rank, size);
    bool dummy = false;
    pl_status st = pl_shard_config(full, rank, size, &r->cfg, err);
    if (st == PL_STATUS_OK)
        st = check_load_format(p, &dummy, err);
    if (st == PL_STATUS_OK)
        st = runner_open(r, p, st_files, dummy, device, n_threads, err);
    if (st != PL_STATUS_OK) {
        pl_model_runner_free(r);
        return st;
    }
    *out = r;
    return PL_STATUS_OK;
}

pl_status pl_model_runner_resize_pool(struct pl_model_runner *r, int n_blocks, int max_model_len,
                                      struct pl_err *err)
{
    if (n_blocks > r->n_blocks || n_blocks < 1 || max_model_len > r->max_model_len ||
        max_model_len > n_blocks * r->block_size)
        return pl_err_set(err, PL_STATUS_INTERNAL, "model runner: a pool of %d blocks (max_model_len "
                          "%d) from %d (%d)", n_blocks, max_model_len, r->n_blocks,
                          r->max_model_len);
    if (n_blocks < r->n_blocks) {
        pl_kv_cache_fini(&r->kv, r->be);
        r->has_kv = false;
        pl_status st = pl_kv_cache_init(&r->kv, r->be, &r->cfg, n_blocks, r->block_size, err);
        if (st != PL_STATUS_OK)
            return st;
        r->has_kv = true;
        r->n_blocks = n_blocks;
    }
    r->max_model_len = max_model_len;
    return PL_STATUS_OK;
}

pl_status pl_model_runner_new_from_parts(const struct pl_model_runner_params *p,
                                         const struct pl_model_config *cfg,
                                         const struct pl_weights *w, struct pl_backend *be,
                                         struct pl_model_runner **out, struct pl_err *err)
{
    struct pl_model_runner *r = calloc(1, sizeof(*r));
    if (!r)
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "model runner: out of memory");
    r->cfg = *cfg;
    r->w = w;
    r->be = be;
    pl_status st = runner_setup(r, p, err);
    if (st != PL_STATUS_OK) {
        pl_model_runner_free(r);
        return st;
    }
    *out = r;
    return PL_STATUS_OK;
}

void pl_model_runner_free(struct pl_model_runner *r)
{
    if (!r)
        return;
    pl_tp_free(r->tp); /* the ranks borrow the mmap: before it is closed */
    if (r->has_kv)
        pl_kv_cache_fini(&r->kv, r->be);
    pl_model_free(r->model);
    pl_weights_free(r->w_owned); /* before the backend and the mmaps it borrows from */
    pl_backend_free(r->be_owned);
    pl_safetensors_free(r->st);
    free(r);
}

const struct pl_model_config *pl_model_runner_config(const struct pl_model_runner *r)
{
    return &r->cfg; /* the full config, also for the coordinator of tensor-parallel ranks */
}

/* The runner whose sizes answer for r: itself, or rank 0 of its tensor-parallel ranks
 * (every rank has the same pool, lengths and limits). */
static const struct pl_model_runner *sizes(const struct pl_model_runner *r)
{
    return r->tp ? pl_tp_rank_runner(r->tp, 0) : r;
}
int pl_model_runner_num_blocks(const struct pl_model_runner *r) { return sizes(r)->n_blocks; }
int pl_model_runner_block_size(const struct pl_model_runner *r) { return sizes(r)->block_size; }
int pl_model_runner_max_model_len(const struct pl_model_runner *r)
{
    return sizes(r)->max_model_len;
}
int pl_model_runner_max_tokens(const struct pl_model_runner *r) { return sizes(r)->max_tokens; }
int pl_model_runner_max_seqs(const struct pl_model_runner *r) { return sizes(r)->max_seqs; }
const struct pl_weights *pl_model_runner_weights(const struct pl_model_runner *r)
{
    return sizes(r)->w; /* tensor parallel: rank 0's share */
}
struct pl_tp *pl_model_runner_tp(struct pl_model_runner *r) { return r->tp; }
int pl_model_runner_tensor_parallel_size(const struct pl_model_runner *r)
{
    return r->tp ? pl_tp_size(r->tp) : 1;
}

pl_status pl_model_runner_run(struct pl_model_runner *r, const struct pl_batch *b, float *logits,
                              struct pl_err *err)
{
    if (r->tp)
        return pl_tp_run(r->tp, b, logits, err);
    return pl_model_forward(r->model, b, &r->kv, logits, err);
}
bool pl_model_runner_can_sample(const struct pl_model_runner *r)
{
    return pl_model_can_sample(sizes(r)->model); /* tensor parallel: rank 0 samples */
}

pl_status pl_model_runner_run_sample(struct pl_model_runner *r, const struct pl_batch *b,
                                     const int32_t *row_src, int n_rows,
                                     const struct pl_sampler_row *rows, const double *uniforms,
                                     struct pl_sample_result *out, struct pl_err *err)
{
    if (r->tp)
        return pl_tp_run_sample(r->tp, b, row_src, n_rows, rows, uniforms, out, err);
    return pl_model_forward_sample(r->model, b, &r->kv, row_src, n_rows, rows, uniforms, out,
                                   err);
}
/*
 * Copy-on-write for the engine: whole blocks, every layer, K and V. The pairs
 * go to the backend in groups of COPY_GROUP so no allocation is needed.
 */
#define COPY_GROUP 64
pl_status pl_model_runner_copy_blocks(struct pl_model_runner *r, const struct pl_block_copy *copies,
                                      int n_copies, struct pl_err *err)
{
    if (r->tp)
        return pl_tp_copy_blocks(r->tp, copies, n_copies, err);
    if (!r->has_kv)
        return pl_err_set(err, PL_STATUS_INTERNAL, "copy_blocks: the runner has no KV cache");
    size_t block_bytes = (size_t)r->block_size * (size_t)r->kv.kv_dim *
                         pl_dtype_size(pl_backend_kv_dtype(r->be));
    int32_t pairs[2 * COPY_GROUP];
    for (int i0 = 0; i0 < n_copies; i0 += COPY_GROUP) {
        int n = n_copies - i0 < COPY_GROUP ? n_copies - i0 : COPY_GROUP;
        for (int i = 0; i < n; i++) {
            const struct pl_block_copy *c = &copies[i0 + i];
            if (c->src < 0 || c->src >= r->n_blocks || c->dst < 0 || c->dst >= r->n_blocks)
                return pl_err_set(err, PL_STATUS_INTERNAL, "copy_blocks: pair %d -> %d outside "
                                  "the pool of %d blocks", c->src, c->dst, r->n_blocks);
            pairs[2 * i] = c->src;
            pairs[2 * i + 1] = c->dst;
        }
        for (int l = 0; l < r->kv.n_layers; l++)
            r->be->ops->copy_blocks(r->be, r->kv.k[l], r->kv.v[l], pairs, n, block_bytes);
    }
    return PL_STATUS_OK;
}
