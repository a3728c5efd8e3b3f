/*
 * bench_cpu.c -- CPU prefill / decode throughput against the machine's memory bandwidth.
 *
 *   bench_cpu --model DIR [--threads N] [--prompt-len 128] [--gen-len 64] [--batch 1]
 *             [--block-size 16] [--results FILE]
 *   bench_cpu --synthetic 1b ...   (a random bf16 model of Llama-3.2-1B's shape, no files)
 *   bench_cpu --model DIR --load-format dummy [--dtype float16] ...   (random weights of
 *             DIR/config.json's shape, in the config's dtype or --dtype)
 *
 * Measures, in one run: STREAM-style copy and triad bandwidth over arrays far
 * larger than the caches (the ceiling for decode), prefill tokens/s (batch
 * prompts of prompt-len tokens in one forward, after a warm-up pass), and
 * decode tokens/s (gen-len steps of one token per sequence). Decode is also
 * reported as bytes moved per step (weights read + KV read) over step time,
 * and as a fraction of the measured bandwidth. --results appends a markdown
 * row (date, commit, machine, figures) to FILE.
 */
#include "cli/cli.h"
#include "backend/backend.h"
#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/threadpool.h"
#include "engine/model_runner.h"
#include "model/arch.h"
#include "util/debug_env.h"
#include "util/log.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* A weight's bytes in memory (a packed int4 weight's whole buffer). */
static double bytes_of(const struct pl_weight *w)
{
    if (w->dtype == PL_DTYPE_Q4) {
        const int32_t *h = w->data;
        return (double)pl_q4_layout_of(w->rows, w->cols, h[1], h[2]).n_bytes;
    }
    return (double)w->rows * (double)w->cols * (double)pl_dtype_size(w->dtype);
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* ---- STREAM-style bandwidth ---------------------------------------------------------- */

struct stream_job {
    float *a, *b, *c;
    size_t n;
    int kind; /* 0 copy b = a, 1 triad a = b + s * c */
};

static void stream_worker(void *ctx, int ith, int nth)
{
    struct stream_job *j = ctx;
    size_t i0 = j->n * (size_t)ith / (size_t)nth, i1 = j->n * (size_t)(ith + 1) / (size_t)nth;
    if (j->kind == 0) {
        for (size_t i = i0; i < i1; i++)
            j->b[i] = j->a[i];
    } else {
        for (size_t i = i0; i < i1; i++)
            j->a[i] = j->b[i] + 3.0f * j->c[i];
    }
}

/* Best-of-5 GB/s for copy (2 arrays moved) and triad (3 arrays). */
static void measure_bandwidth(int n_threads, double *copy_gbs, double *triad_gbs)
{
    const size_t n = (size_t)48 << 20; /* 3 x 192 MiB: far beyond any L3 */
    struct pl_threadpool *tp;
    if (pl_threadpool_new(n_threads, &tp, NULL) != PL_STATUS_OK)
        exit(1);
    float *a = malloc(n * 4), *b = malloc(n * 4), *c = malloc(n * 4);
    if (!a || !b || !c) {
        fprintf(stderr, "bench_cpu: out of memory for the bandwidth arrays\n");
        exit(1);
    }
    struct stream_job j = {a, b, c, n, 0};
    for (size_t i = 0; i < n; i++) /* first touch, so page faults are not timed */
        a[i] = 1.0f, b[i] = 2.0f, c[i] = 0.5f;
    *copy_gbs = *triad_gbs = 0;
    for (int rep = 0; rep < 5; rep++) {
        for (int kind = 0; kind < 2; kind++) {
            j.kind = kind;
            double t0 = now_s();
            pl_threadpool_run(tp, stream_worker, &j);
            double gbs = (double)n * 4.0 * (kind == 0 ? 2 : 3) / (now_s() - t0) / 1e9;
            double *best = kind == 0 ? copy_gbs : triad_gbs;
            if (gbs > *best)
                *best = gbs;
        }
    }
    free(a), free(b), free(c);
    pl_threadpool_free(tp);
}

/* ---- a synthetic model (no files needed) ----------------------------------------------- */

struct synth {
    struct pl_model_config cfg;
    struct pl_weights w;
    void **bufs;
    int n_bufs;
    uint64_t rng;
};

static struct pl_weight synth_weight(struct synth *s, int64_t rows, int64_t cols, float center,
                                     float spread)
{
    size_t n = (size_t)(rows * cols);
    uint16_t *p = malloc(n * 2);
    if (!p) {
        fprintf(stderr, "bench_cpu: out of memory for the synthetic model\n");
        exit(1);
    }
    for (size_t i = 0; i < n; i++) {
        s->rng = s->rng * 6364136223846793005ull + 1442695040888963407ull;
        float u = (float)((s->rng >> 40) & 0xffffff) / 16777216.0f * 2.0f - 1.0f;
        p[i] = pl_f32_to_bf16(center + spread * u);
    }
    s->bufs[s->n_bufs++] = p;
    s->w.n_bytes += n * 2;
    return (struct pl_weight){p, PL_DTYPE_BF16, rows, cols};
}

/* Llama-3.2-1B's shape: 16 layers, hidden 2048, MLP 8192, 32 heads / 8 KV heads of 64, vocab 128256. */
static void synth_1b(struct synth *s)
{
    memset(s, 0, sizeof(*s));
    s->rng = 42;
    struct pl_model_config *c = &s->cfg;
    c->arch = pl_arch_find("LlamaForCausalLM", false);
    c->hidden_size = 2048, c->intermediate_size = 8192, c->n_layers = 16;
    c->n_heads = 32, c->n_kv_heads = 8, c->head_dim = 64, c->vocab_size = 128256;
    c->rms_norm_eps = 1e-5f;
    c->rope.type = PL_ROPE_DEFAULT, c->rope.theta = 500000.0, c->rope.partial_rotary_factor = 1.0;
    c->max_position_embeddings = 131072;
    c->tie_word_embeddings = true;
    c->dtype = PL_DTYPE_BF16;
    s->bufs = calloc(16 * 16 + 8, sizeof(void *));
    s->w.layers = calloc((size_t)c->n_layers, sizeof(struct pl_layer_weights));
    s->w.n_layers = c->n_layers;
    int h = c->hidden_size, q = c->n_heads * c->head_dim, kv = c->n_kv_heads * c->head_dim;
    float ws = 0.03f;
    s->w.embed = synth_weight(s, c->vocab_size, h, 0.0f, ws);
    s->w.lm_head = s->w.embed;
    s->w.final_norm = synth_weight(s, 1, h, 1.0f, 0.1f);
    for (int l = 0; l < c->n_layers; l++) {
        struct pl_layer_weights *L = &s->w.layers[l];
        L->attn_norm = synth_weight(s, 1, h, 1.0f, 0.1f);
        L->wq = synth_weight(s, q, h, 0, ws), L->wk = synth_weight(s, kv, h, 0, ws);
        L->wv = synth_weight(s, kv, h, 0, ws), L->wo = synth_weight(s, h, q, 0, ws);
        L->ffn_norm = synth_weight(s, 1, h, 1.0f, 0.1f);
        L->w_gate = synth_weight(s, c->intermediate_size, h, 0, ws);
        L->w_up = synth_weight(s, c->intermediate_size, h, 0, ws);
        L->w_down = synth_weight(s, h, c->intermediate_size, 0, ws);
    }
}

/* ---- the run --------------------------------------------------------------------------- */

struct seqs {
    int n, bs, mbps;
    int vocab; /* prompt ids are drawn below this */
    int32_t *ids, *pos, *slots, *rows, *cu, *ctx, *tables;
};

/* A batch where each of n sequences adds q tokens after ctx0 cached ones; sequence s owns
 * blocks [s*mbps, (s+1)*mbps). Token ids come from `tok` (per sequence) or a fixed pattern. */
static struct pl_batch make_batch(struct seqs *S, int ctx0, int q, const int32_t *tok)
{
    int T = 0;
    S->cu[0] = 0;
    for (int s = 0; s < S->n; s++) {
        for (int i = 0; i < S->mbps; i++)
            S->tables[s * S->mbps + i] = s * S->mbps + i;
        for (int p = ctx0; p < ctx0 + q; p++, T++) {
            S->ids[T] = tok ? tok[s] : (p * 7919 + s * 104729 + 13) % S->vocab;
            S->pos[T] = p;
            S->slots[T] = S->tables[s * S->mbps + p / S->bs] * S->bs + p % S->bs;
        }
        S->cu[s + 1] = T;
        S->ctx[s] = ctx0 + q;
        S->rows[s] = T - 1;
    }
    return (struct pl_batch){.n_tokens = T, .n_seqs = S->n, .token_ids = S->ids,
                             .positions = S->pos, .slot_mapping = S->slots,
                             .cu_seqlens_q = S->cu, .context_lens = S->ctx,
                             .block_tables = S->tables, .max_blocks_per_seq = S->mbps,
                             .max_q_len = q, .max_context_len = ctx0 + q, .logits_rows = S->rows,
                             .n_logits = S->n};
}

static void machine_name(char *out, size_t n)
{
    snprintf(out, n, "unknown cpu");
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[512];
    while (f && fgets(line, sizeof(line), f)) {
        if (!strncmp(line, "model name", 10)) {
            char *v = strchr(line, ':');
            if (v) {
                v += 2;
                v[strcspn(v, "\n")] = '\0';
                snprintf(out, n, "%s x%d", v, pl_cpu_count());
            }
            break;
        }
    }
    if (f)
        fclose(f);
}

static void die_usage(void)
{
    fprintf(stderr, "usage: bench_cpu (--model DIR | --synthetic 1b) [--threads N] [--prompt-len 128] "
                    "[--gen-len 64] [--batch 1] [--block-size 16] [--results FILE] "
                    "[--load-format auto|dummy] [--dtype bfloat16|float16|float32]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *model = NULL, *results = NULL, *synthetic = NULL, *load_format = NULL;
    const char *dtype = NULL;
    int threads = 0, prompt_len = 128, gen_len = 64, batch = 1, block_size = 16;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (i + 1 >= argc)
            die_usage();
        const char *v = argv[++i];
        if (!strcmp(a, "--model"))
            model = v;
        else if (!strcmp(a, "--synthetic"))
            synthetic = v;
        else if (!strcmp(a, "--results"))
            results = v;
        else if (!strcmp(a, "--threads"))
            threads = atoi(v);
        else if (!strcmp(a, "--prompt-len"))
            prompt_len = atoi(v);
        else if (!strcmp(a, "--gen-len"))
            gen_len = atoi(v);
        else if (!strcmp(a, "--batch"))
            batch = atoi(v);
        else if (!strcmp(a, "--block-size"))
            block_size = atoi(v);
        else if (!strcmp(a, "--load-format"))
            load_format = v;
        else if (!strcmp(a, "--dtype"))
            dtype = v;
        else
            die_usage();
    }
    if ((!model && !synthetic) || (synthetic && strcmp(synthetic, "1b")) || prompt_len < 1 ||
        gen_len < 1 || batch < 1 || threads < 0)
        die_usage();
    if (threads == 0)
        threads = pl_cpu_count();

    double copy_gbs, triad_gbs;
    measure_bandwidth(threads, &copy_gbs, &triad_gbs);
    double ceiling = copy_gbs > triad_gbs ? copy_gbs : triad_gbs;

    struct pl_model_runner_params p;
    pl_model_runner_params_default(&p);
    int max_len = prompt_len + gen_len + 1;
    int mbps = (max_len + block_size - 1) / block_size;
    p.model_dir = model;
    if (load_format)
        p.load_format = load_format;
    if (dtype) {
        if (!pl_dtype_parse_torch(dtype, &p.dtype))
            die_usage();
        p.convert_dtype = true;
    }
    p.n_threads = threads;
    p.block_size = block_size;
    p.num_kv_blocks = batch * mbps;
    p.max_num_batched_tokens = batch * prompt_len;
    p.max_num_seqs = batch;
    p.max_model_len = mbps * block_size;
    struct pl_llm_params env;
    pl_llm_params_default(&env);
    pl_cli_llm_params_from_env(&env); /* PAGELLM_CPU_SIMD=0: the scalar reference kernels */
    p.cpu_scalar_kernels = env.cpu_scalar_kernels;
    struct pl_err err;
    struct pl_model_runner *r = NULL;
    struct pl_backend *be = NULL;
    struct synth syn;
    pl_status st;
    double t_load = now_s();
    if (synthetic) {
        synth_1b(&syn);
        st = pl_backend_cpu_new(threads, &be, &err);
        if (st == PL_STATUS_OK)
            pl_backend_cpu_use_simd(be, !p.cpu_scalar_kernels);
        if (st == PL_STATUS_OK)
            st = pl_model_runner_new_from_parts(&p, &syn.cfg, &syn.w, be, &r, &err);
    } else {
        st = pl_model_runner_new(&p, &r, &err);
    }
    if (st != PL_STATUS_OK) {
        fprintf(stderr, "bench_cpu: %s\n", err.msg);
        return 1;
    }
    t_load = now_s() - t_load;
    const struct pl_model_config *c = pl_model_runner_config(r);
    const struct pl_weights *w = pl_model_runner_weights(r);
    const int V = c->vocab_size;

    struct seqs S = {batch, block_size, mbps, V, NULL, NULL, NULL, NULL, NULL, NULL, NULL};
    size_t T = (size_t)batch * (size_t)prompt_len;
    S.ids = malloc(4 * T), S.pos = malloc(4 * T), S.slots = malloc(4 * T);
    S.rows = malloc(4 * (size_t)batch), S.cu = malloc(4 * (size_t)(batch + 1));
    S.ctx = malloc(4 * (size_t)batch), S.tables = malloc(4 * (size_t)batch * (size_t)mbps);
    float *logits = malloc(sizeof(float) * (size_t)batch * (size_t)V);
    int32_t *next = malloc(4 * (size_t)batch);

    /* prefill: a warm-up pass (first touch of the weights), then the timed one */
    struct pl_batch b = make_batch(&S, 0, prompt_len, NULL);
    double t_prefill = 0;
    for (int rep = 0; rep < 2; rep++) {
        b = make_batch(&S, 0, prompt_len, NULL);
        double t0 = now_s();
        if (pl_model_runner_run(r, &b, logits, &err) != PL_STATUS_OK) {
            fprintf(stderr, "bench_cpu: prefill: %s\n", err.msg);
            return 1;
        }
        t_prefill = now_s() - t0;
    }

    /* decode: one token per sequence per step, greedy */
    const double kv_row_bytes = 2.0 * c->n_layers * c->n_kv_heads * c->head_dim * 4.0;
    const double embed_bytes = (double)c->vocab_size * c->hidden_size * pl_dtype_size(w->embed.dtype);
    /* a decode step streams every weight except the embedding table (only its rows are
     * read; tied models read it whole as the LM head, which n_bytes counts once) */
    double weight_bytes = (double)w->n_bytes - (c->tie_word_embeddings ? 0.0 : embed_bytes);
    if (c->n_experts > 0) { /* MoE: of each sparse layer's experts, a step reads those its
                               tokens choose, E (1 - (1 - k / E)^batch) with uniform routing
                               (about what dummy weights give) */
        int moe_layers = 0, first = -1;
        for (int l = 0; l < c->n_layers; l++)
            if (c->layer_moe[l])
                moe_layers++, first = first < 0 ? l : first;
        const double E = c->n_experts, k = c->n_experts_per_tok;
        const struct pl_expert_weights *x0 = &w->layers[first].experts[0];
        const double expert_bytes = bytes_of(&x0->w_gate) + bytes_of(&x0->w_up) + bytes_of(&x0->w_down);
        const double read = E * (1.0 - pow(1.0 - k / E, batch));
        weight_bytes -= moe_layers * (E - read) * expert_bytes;
    }
    double t_decode = 0, bytes = 0;
    for (int step = 0; step < gen_len; step++) {
        for (int s = 0; s < batch; s++) {
            const float *row = logits + (size_t)s * V;
            int best = 0;
            for (int v = 1; v < V; v++)
                if (row[v] > row[best])
                    best = v;
            next[s] = best;
        }
        int ctx0 = prompt_len + step;
        b = make_batch(&S, ctx0, 1, next);
        double t0 = now_s();
        if (pl_model_runner_run(r, &b, logits, &err) != PL_STATUS_OK) {
            fprintf(stderr, "bench_cpu: decode: %s\n", err.msg);
            return 1;
        }
        t_decode += now_s() - t0;
        bytes += weight_bytes + (double)batch * (ctx0 + 1) * kv_row_bytes;
    }

    double prefill_tps = (double)batch * prompt_len / t_prefill;
    double decode_tps = (double)batch * gen_len / t_decode;
    double decode_gbs = bytes / t_decode / 1e9;
    double frac = decode_gbs / ceiling;
    char machine[256];
    machine_name(machine, sizeof(machine));
    const char *name = model ? model : "synthetic-1b (bf16, Llama-3.2-1B shape)";
    printf("bench_cpu: %s\n", name);
    struct pl_debug_env dbg;
    pl_debug_env_read(&dbg);
    enum pl_cpu_isa isa = pl_cpu_best_isa();
    if (dbg.cpu_isa && !strcmp(dbg.cpu_isa, "avx2") && isa > PL_CPU_ISA_AVX2)
        isa = PL_CPU_ISA_AVX2;
    if (p.cpu_scalar_kernels || (dbg.cpu_isa && !strcmp(dbg.cpu_isa, "scalar")))
        isa = PL_CPU_ISA_SCALAR;
    bool bf16_mode = dbg.cpu_matmul && !strcmp(dbg.cpu_matmul, "bf16") &&
                     isa == PL_CPU_ISA_AVX512 && pl_cpu_has_avx512_bf16();
    printf("  machine            %s, %d threads, %s kernels, matmul %s\n", machine, threads,
           pl_cpu_isa_name(isa), bf16_mode ? "bf16 (PAGELLM_CPU_MATMUL=bf16)" : "fp32");
    printf("  weights            %.1f MiB (%s), load %.2f s\n", (double)w->n_bytes / 1048576.0,
           pl_dtype_name(w->embed.dtype), t_load);
    printf("  memory bandwidth   copy %.1f GB/s, triad %.1f GB/s\n", copy_gbs, triad_gbs);
    printf("  %-18s %10s %12s\n", "phase", "tokens/s", "ms/step");
    printf("  %-18s %10.1f %12.1f   (batch %d x %d tokens)\n", "prefill", prefill_tps,
           t_prefill * 1e3, batch, prompt_len);
    printf("  %-18s %10.1f %12.2f   (batch %d, %d steps)\n", "decode", decode_tps,
           t_decode * 1e3 / gen_len, batch, gen_len);
    printf("  decode traffic     %.1f MB/step -> %.1f GB/s = %.0f%% of the measured bandwidth\n",
           bytes / gen_len / 1e6, decode_gbs, 100.0 * frac);

    if (results) {
        FILE *f = fopen(results, "a");
        if (!f) {
            fprintf(stderr, "bench_cpu: cannot append to %s\n", results);
            return 1;
        }
        char commit[64] = "unknown", date[32];
        FILE *g = popen("git rev-parse --short HEAD 2>/dev/null", "r");
        if (g) {
            if (fgets(commit, sizeof(commit), g))
                commit[strcspn(commit, "\n")] = '\0';
            else
                strcpy(commit, "unknown");
            pclose(g);
        }
        time_t tt = time(NULL);
        strftime(date, sizeof(date), "%Y-%m-%d %H:%M", localtime(&tt));
        fprintf(f,
                "| %s | %s | %s | %d | %s | %d | %d | %d | %.1f | %.2f | %.1f | %.1f | %.0f%% |\n",
                date, commit, machine, threads, name, prompt_len, gen_len, batch, prefill_tps,
                decode_tps, decode_gbs, ceiling, 100.0 * frac);
        fclose(f);
    }

    pl_model_runner_free(r);
    if (synthetic) {
        pl_backend_free(be);
        for (int i = 0; i < syn.n_bufs; i++)
            free(syn.bufs[i]);
        free(syn.bufs);
        free(syn.w.layers);
    }
    free(S.ids), free(S.pos), free(S.slots), free(S.rows), free(S.cu), free(S.ctx), free(S.tables);
    free(logits), free(next);
    return 0;
}
