/*
 * greedy.c -- the interim static-batch greedy generator (see greedy.h).
 *
 * Owns: one call's sequence states, a free list over the runner's KV pool
 * and the flat batch arrays, all allocated at the start of the call.
 *
 *   prefill phase: every step takes, for each sequence with prompt left, a
 *     chunk of at most prefill_chunk tokens (and what is left of the step's
 *     max_num_batched_tokens budget); a sequence whose chunk ends its prompt
 *     asks for the logits of its last token and gets its first output token.
 *   decode phase: every unfinished sequence feeds its last output token.
 *   a sequence finishes on a stop id ("stop"), at max_tokens or when it
 *     reaches max_model_len ("length"); it then leaves the batch and its
 *     blocks return to the free list.
 * Invariants: a sequence's KV holds exactly n_cached tokens (prompt, then
 * output tokens except the newest); its block table covers n_cached; the
 * up-front check (sum of worst-case blocks <= pool) guarantees that block
 * allocation never fails mid-run. Next token = argmax of the raw logits,
 * ties to the lower id; logprobs = log_softmax of the raw logits.
 */
#include "engine/greedy.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct gseq {
    struct pl_greedy_seq *s;
    int32_t *table;  /* [max_blocks_per_seq] */
    int n_blocks;
    int n_cached;    /* tokens whose K/V are in the cache */
    int final_len;   /* the longest this sequence can get: min(prompt + max_tokens, max_model_len) */
    bool finished;
};

struct gctx {
    struct pl_model_runner *r;
    int vocab, block_size, mbps, max_tokens;
    struct gseq *seqs;
    int n_seqs;
    int32_t *free_ids; /* free list (stack) of block ids */
    int n_free;
    /* batch arrays */
    int32_t *ids, *pos, *lens, *slots, *rows; /* [max_tokens] */
    int32_t *cu, *ctx, *tables;               /* [n+1], [n], [n * mbps] */
    int32_t *row_seq;                         /* [n]: sequence index of each logits row */
    float *logits;                            /* [n, vocab] */
};

static void gctx_free(struct gctx *g)
{
    if (g->seqs)
        for (int i = 0; i < g->n_seqs; i++)
            free(g->seqs[i].table);
    free(g->seqs);
    free(g->free_ids);
    free(g->ids), free(g->pos), free(g->lens), free(g->slots), free(g->rows);
    free(g->cu), free(g->ctx), free(g->tables), free(g->row_seq), free(g->logits);
}

static int32_t token_at(const struct gseq *q, int p)
{
    return p < q->s->n_prompt ? q->s->prompt[p] : q->s->out_tokens[p - q->s->n_prompt];
}

static void release_blocks(struct gctx *g, struct gseq *q)
{
    for (int i = 0; i < q->n_blocks; i++)
        g->free_ids[g->n_free++] = q->table[i];
    q->n_blocks = 0;
}

/* Greedy pick + logprobs from one row of raw logits; appends to the sequence. */
static void take_token(struct gctx *g, struct gseq *q, const float *lg)
{
    struct pl_greedy_seq *s = q->s;
    const int V = g->vocab;
    int best = 0;
    for (int i = 1; i < V; i++)
        if (lg[i] > lg[best]) /* strict: ties keep the lower id */
            best = i;
    double sum = 0.0;
    for (int i = 0; i < V; i++)
        sum += exp((double)lg[i] - (double)lg[best]);
    const double lse = (double)lg[best] + log(sum);
    const int o = s->n_out;
    s->out_tokens[o] = best;
    s->cumulative_logprob += (double)lg[best] - lse;

    const int K = s->n_logprobs;
    if (K > 0) {
        int32_t *ids = s->top_ids + (size_t)o * K;
        float *lps = s->top_logprobs + (size_t)o * K;
        int n = 0;
        /* insertion into a descending list; ids arrive ascending, so an equal
         * value goes after the existing ones (ties: lower id first) */
        for (int i = 0; i < V; i++) {
            if (n == K && !(lg[i] > lg[ids[K - 1]]))
                continue;
            int at = n < K ? n : K - 1;
            while (at > 0 && lg[i] > lg[ids[at - 1]]) {
                ids[at] = ids[at - 1];
                at--;
            }
            ids[at] = i;
            if (n < K)
                n++;
        }
        for (int j = 0; j < K; j++)
            lps[j] = (float)((double)lg[ids[j]] - lse);
    }
    s->n_out = o + 1;

    bool stop = false;
    for (int i = 0; i < s->n_stop_ids; i++)
        if (s->stop_ids[i] == best)
            stop = true;
    if (stop || s->n_out >= s->max_tokens || s->n_prompt + s->n_out >= q->final_len) {
        s->finished_by_stop = stop;
        q->finished = true;
        release_blocks(g, q);
    }
}

/* Appends n_new tokens of q (from n_cached on) to the batch being built. */
static void add_to_batch(struct gctx *g, struct gseq *q, int n_new, int *T, int s_idx)
{
    const int bs = g->block_size;
    const int end = q->n_cached + n_new;
    while (q->n_blocks * bs < end)
        q->table[q->n_blocks++] = g->free_ids[--g->n_free];
    for (int p = q->n_cached; p < end; p++, (*T)++) {
        g->ids[*T] = token_at(q, p);
        g->pos[*T] = p;
        g->lens[*T] = end;
        g->slots[*T] = q->table[p / bs] * bs + p % bs;
    }
    g->cu[s_idx + 1] = *T;
    g->ctx[s_idx] = end;
    int32_t *row = g->tables + (size_t)s_idx * g->mbps;
    for (int i = 0; i < g->mbps; i++)
        row[i] = i < q->n_blocks ? q->table[i] : -1;
    q->n_cached = end;
}

static pl_status run_step(struct gctx *g, int n_seqs, int n_tokens, int n_logits, int max_q,
                          int max_ctx, struct pl_err *err)
{
    struct pl_batch b = {
        .n_tokens = n_tokens,
        .n_seqs = n_seqs,
        .token_ids = g->ids,
        .positions = g->pos,
        .seq_lens = g->lens,
        .slot_mapping = g->slots,
        .cu_seqlens_q = g->cu,
        .context_lens = g->ctx,
        .block_tables = g->tables,
        .max_blocks_per_seq = g->mbps,
        .max_q_len = max_q,
        .max_context_len = max_ctx,
        .logits_rows = g->rows,
        .n_logits = n_logits,
    };
    pl_status st = pl_model_runner_run(g->r, &b, g->logits, err);
    if (st != PL_STATUS_OK)
        return st;
    for (int i = 0; i < n_logits; i++)
        take_token(g, &g->seqs[g->row_seq[i]], g->logits + (size_t)i * g->vocab);
    return PL_STATUS_OK;
}

static pl_status check_inputs(struct gctx *g, struct pl_greedy_seq *seqs, int n_seqs,
                              struct pl_err *err)
{
    const int max_len = pl_model_runner_max_model_len(g->r);
    const int max_seqs = pl_model_runner_max_seqs(g->r);
    if (n_seqs > max_seqs || n_seqs > g->max_tokens)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                          "%d prompts in one batch: at most %d (max_num_seqs) and %d "
                          "(max_num_batched_tokens)",
                          n_seqs, max_seqs, g->max_tokens);
    long long blocks_needed = 0;
    for (int i = 0; i < n_seqs; i++) {
        const struct pl_greedy_seq *s = &seqs[i];
        if (s->n_prompt < 1 || !s->prompt)
            return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT, "prompt %d is empty", i);
        if (s->n_prompt > max_len || (s->n_prompt == max_len && s->max_tokens > 0))
            return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                              "prompt %d has %d tokens; max_model_len is %d and generation needs "
                              "room for at least one more",
                              i, s->n_prompt, max_len);
        if (s->max_tokens < 0 || s->n_logprobs < 0 || s->n_logprobs > g->vocab ||
            s->n_stop_ids < 0 || (s->n_stop_ids > 0 && !s->stop_ids))
            return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                              "prompt %d: max_tokens %d / logprobs %d / %d stop ids out of range",
                              i, s->max_tokens, s->n_logprobs, s->n_stop_ids);
        for (int t = 0; t < s->n_prompt; t++)
            if (s->prompt[t] < 0 || s->prompt[t] >= g->vocab)
                return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                                  "prompt %d: token %d is id %d, outside the vocabulary (%d)", i,
                                  t, s->prompt[t], g->vocab);
        long long final_len = (long long)s->n_prompt + s->max_tokens;
        if (final_len > max_len)
            final_len = max_len;
        /* the newest output token is never fed back, so the KV holds final_len - 1 */
        long long kv_tokens = final_len - 1 > s->n_prompt ? final_len - 1 : s->n_prompt;
        blocks_needed += (kv_tokens + g->block_size - 1) / g->block_size;
    }
    int pool = pl_model_runner_num_blocks(g->r);
    if (blocks_needed > pool)
        return pl_err_set(err, PL_STATUS_NO_MEMORY,
                          "these prompts need up to %lld KV blocks of %d tokens, the pool has %d "
                          "(raise --num-kv-blocks or run fewer prompts at once)",
                          blocks_needed, g->block_size, pool);
    return PL_STATUS_OK;
}

pl_status pl_greedy_generate(struct pl_model_runner *r, struct pl_greedy_seq *seqs, int n_seqs,
                             int prefill_chunk, struct pl_err *err)
{
    struct gctx g;
    memset(&g, 0, sizeof(g));
    g.r = r;
    g.vocab = pl_model_runner_config(r)->vocab_size;
    g.block_size = pl_model_runner_block_size(r);
    g.mbps = (pl_model_runner_max_model_len(r) + g.block_size - 1) / g.block_size;
    g.max_tokens = pl_model_runner_max_tokens(r);
    for (int i = 0; i < n_seqs; i++) { /* outputs start empty, so _fini is always safe */
        seqs[i].out_tokens = NULL, seqs[i].top_ids = NULL, seqs[i].top_logprobs = NULL;
        seqs[i].n_out = 0, seqs[i].cumulative_logprob = 0.0, seqs[i].finished_by_stop = false;
    }
    if (n_seqs <= 0)
        return PL_STATUS_OK;
    pl_status st = check_inputs(&g, seqs, n_seqs, err);
    if (st != PL_STATUS_OK)
        return st;

    const size_t n = (size_t)n_seqs, T = (size_t)g.max_tokens, i32 = sizeof(int32_t);
    const int pool = pl_model_runner_num_blocks(r);
    g.n_seqs = n_seqs;
    g.seqs = calloc(n, sizeof(*g.seqs));
    g.free_ids = malloc(i32 * (size_t)pool);
    g.ids = malloc(i32 * T), g.pos = malloc(i32 * T), g.lens = malloc(i32 * T);
    g.slots = malloc(i32 * T), g.rows = malloc(i32 * T);
    g.cu = malloc(i32 * (n + 1)), g.ctx = malloc(i32 * n), g.row_seq = malloc(i32 * n);
    g.tables = malloc(i32 * n * (size_t)g.mbps);
    g.logits = malloc(sizeof(float) * n * (size_t)g.vocab);
    bool ok = g.seqs && g.free_ids && g.ids && g.pos && g.lens && g.slots && g.rows && g.cu &&
              g.ctx && g.row_seq && g.tables && g.logits;
    for (int i = 0; ok && i < n_seqs; i++) {
        struct pl_greedy_seq *s = &seqs[i];
        struct gseq *q = &g.seqs[i];
        q->s = s;
        q->table = malloc(i32 * (size_t)g.mbps);
        int max_len = pl_model_runner_max_model_len(r);
        q->final_len = s->n_prompt + s->max_tokens < max_len ? s->n_prompt + s->max_tokens : max_len;
        size_t n_out = s->max_tokens > 0 ? (size_t)s->max_tokens : 1;
        s->out_tokens = malloc(i32 * n_out);
        if (s->n_logprobs > 0) {
            s->top_ids = malloc(i32 * n_out * (size_t)s->n_logprobs);
            s->top_logprobs = malloc(sizeof(float) * n_out * (size_t)s->n_logprobs);
            ok = ok && s->top_ids && s->top_logprobs;
        }
        ok = ok && q->table && s->out_tokens;
        q->finished = s->max_tokens == 0;
    }
    if (!ok) {
        gctx_free(&g);
        for (int i = 0; i < n_seqs; i++)
            pl_greedy_seq_fini(&seqs[i]);
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "greedy: out of memory");
    }
    for (int i = 0; i < pool; i++)
        g.free_ids[i] = pool - 1 - i; /* blocks are handed out 0, 1, 2, ... */
    g.n_free = pool;

    const int chunk = prefill_chunk > 0 ? prefill_chunk : g.max_tokens;
    /* prefill phase */
    for (;;) {
        int n_in = 0, T_used = 0, n_logits = 0, max_q = 0, max_ctx = 0;
        g.cu[0] = 0;
        for (int i = 0; i < n_seqs && T_used < g.max_tokens; i++) {
            struct gseq *q = &g.seqs[i];
            int left = q->s->n_prompt - q->n_cached;
            if (q->finished || left <= 0)
                continue;
            int k = left < chunk ? left : chunk;
            if (k > g.max_tokens - T_used)
                k = g.max_tokens - T_used;
            add_to_batch(&g, q, k, &T_used, n_in);
            if (q->n_cached == q->s->n_prompt) { /* prompt done: its last token gives a token */
                g.rows[n_logits] = T_used - 1;
                g.row_seq[n_logits++] = i;
            }
            max_q = k > max_q ? k : max_q;
            max_ctx = q->n_cached > max_ctx ? q->n_cached : max_ctx;
            n_in++;
        }
        if (n_in == 0)
            break;
        st = run_step(&g, n_in, T_used, n_logits, max_q, max_ctx, err);
        if (st != PL_STATUS_OK)
            goto out;
    }
    /* decode phase */
    for (;;) {
        int n_in = 0, T_used = 0, max_ctx = 0;
        g.cu[0] = 0;
        for (int i = 0; i < n_seqs; i++) {
            struct gseq *q = &g.seqs[i];
            if (q->finished)
                continue;
            add_to_batch(&g, q, 1, &T_used, n_in);
            g.rows[n_in] = T_used - 1;
            g.row_seq[n_in] = i;
            max_ctx = q->n_cached > max_ctx ? q->n_cached : max_ctx;
            n_in++;
        }
        if (n_in == 0)
            break;
        st = run_step(&g, n_in, T_used, n_in, 1, max_ctx, err);
        if (st != PL_STATUS_OK)
            goto out;
    }
out:
    gctx_free(&g);
    if (st != PL_STATUS_OK)
        for (int i = 0; i < n_seqs; i++)
            pl_greedy_seq_fini(&seqs[i]);
    return st;
}

void pl_greedy_seq_fini(struct pl_greedy_seq *s)
{
    if (!s)
        return;
    free(s->out_tokens);
    free(s->top_ids);
    free(s->top_logprobs);
    s->out_tokens = NULL;
    s->top_ids = NULL;
    s->top_logprobs = NULL;
    s->n_out = 0;
}
