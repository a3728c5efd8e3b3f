/*
 * test_golden.c -- pagellm's CPU forward pass against Hugging Face transformers.
 *
 * For every fixture in tests/fixtures/golden/ (written by tools/golden_refs.py
 * with transformers on the reference machine, fp32, eager attention):
 *   1. regenerate the preset with pl_tiny_model_write and require the sha256 of
 *      every model file and of config.json to match the fixture (a drifting
 *      generator would make every later comparison meaningless);
 *   2. run the fixture's prompts through pl_model_runner + pl_greedy_generate in
 *      several shapes -- one prompt at a time, all prompts in one batch, with a
 *      3-token prefill chunk at block sizes 8 and 32, tensor-parallel over 2 and 4
 *      CPU ranks -- and compare each with
 *      the reference: greedy ids exactly, top-5 logprobs within 1e-3, top-5 ids
 *      where the neighbouring logprobs are more than 1e-3 apart;
 *   3. give the runner a KV pool too small for the longest prompt and require a
 *      clear refusal (or, if the driver copes, the reference tokens).
 * A step whose reference top-1/top-2 gap is below NEAR_TIE may legitimately
 * pick the other token under a different summation order; the comparison of
 * that prompt stops there (and says so) instead of failing.
 * Dynamic-NTK rope depends on how many tokens a forward holds, so chunked
 * prefill is not comparable with the reference's whole-prompt prefill there;
 * those shapes are skipped for dynamic presets.
 * Longrope switches tables by the length of the forward's sequence (transformers
 * decides per forward from its largest position), so it is skipped there too.
 * With --device cuda the same checks run on the CUDA backend's float32 mode (the GPU
 * machine's check; CI runs the CPU).
 * Fixtures are made per family (the preset's model_type) by
 * `python3 tools/golden_refs.py --family NAME --out tests/fixtures/golden/` on a
 * machine with torch and transformers. A golden preset without a fixture fails the
 * test when its family has fixtures (the family's set is incomplete) and is
 * skipped, with that command in the message, when the family has none yet (a new
 * family whose references are still to be made). No fixtures at all is a failure.
 */
#include "test.h"

#include "engine/greedy.h"
#include "engine/model_runner.h"
#include "model/tiny_model.h"
#include "util/sha256.h"

#include <dirent.h>
#include <jansson.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#define TOP_K 5
#define LOGPROB_TOL 1e-3
#define NEAR_TIE 1e-4
#define MAX_MODEL_LEN 64
#define MAX_FIXTURES 64

/* --device NAME: the backend the fixtures run on (default cpu; an accelerator runs in its
 * float32 mode, where the same bounds hold: the GPU machine's check of CUDA's fp32 path). */
static const char *g_device = "cpu";

struct ref_prompt {
    int32_t *prompt;
    int n_prompt;
    int max_tokens;
    int32_t *tokens;    /* [max_tokens] */
    int32_t *top_ids;   /* [max_tokens * TOP_K] */
    double *top_lps;    /* [max_tokens * TOP_K] */
};

struct fixture {
    char preset[64];
    struct ref_prompt *prompts;
    int n_prompts;
};

static char g_fixture_paths[MAX_FIXTURES][4400];
static int g_n_fixtures;
static const char *g_fixture; /* the one PL_RUN(test_fixture) works on */

static int cmp_str(const void *a, const void *b) { return strcmp(a, b); }

static void find_fixtures(void)
{
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s", pl_test_path("tests/fixtures/golden"));
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d)) && g_n_fixtures < MAX_FIXTURES) {
        size_t n = strlen(e->d_name);
        if (n > 5 && n < 256 && !strcmp(e->d_name + n - 5, ".json"))
            snprintf(g_fixture_paths[g_n_fixtures++], sizeof(g_fixture_paths[0]), "%.4095s/%.255s",
                     dir, e->d_name);
    }
    closedir(d);
    qsort(g_fixture_paths, (size_t)g_n_fixtures, sizeof(g_fixture_paths[0]), cmp_str);
}

static void fixture_fini(struct fixture *f)
{
    for (int i = 0; i < f->n_prompts; i++) {
        free(f->prompts[i].prompt);
        free(f->prompts[i].tokens);
        free(f->prompts[i].top_ids);
        free(f->prompts[i].top_lps);
    }
    free(f->prompts);
    memset(f, 0, sizeof(*f));
}

static int32_t *int_array(json_t *a, int *n)
{
    if (!json_is_array(a) || json_array_size(a) == 0)
        return NULL;
    *n = (int)json_array_size(a);
    int32_t *out = malloc(sizeof(int32_t) * (size_t)*n);
    for (int i = 0; out && i < *n; i++) {
        json_t *v = json_array_get(a, (size_t)i);
        if (!json_is_integer(v)) {
            free(out);
            return NULL;
        }
        out[i] = (int32_t)json_integer_value(v);
    }
    return out;
}

/* Parses the parts of a fixture the comparisons need; false (with a message) when malformed. */
static bool parse_fixture(json_t *root, struct fixture *f)
{
    json_t *preset = json_object_get(root, "preset");
    json_t *prompts = json_object_get(root, "prompts");
    if (!json_is_string(preset) || !json_is_array(prompts) || json_array_size(prompts) == 0) {
        fprintf(stderr, "%s: no preset or prompts\n", g_fixture);
        return false;
    }
    snprintf(f->preset, sizeof(f->preset), "%s", json_string_value(preset));
    f->n_prompts = (int)json_array_size(prompts);
    f->prompts = calloc((size_t)f->n_prompts, sizeof(*f->prompts));
    if (!f->prompts)
        return false;
    for (int i = 0; i < f->n_prompts; i++) {
        json_t *p = json_array_get(prompts, (size_t)i);
        struct ref_prompt *r = &f->prompts[i];
        int n_tok = 0;
        r->prompt = int_array(json_object_get(p, "prompt_token_ids"), &r->n_prompt);
        r->tokens = int_array(json_object_get(p, "token_ids"), &n_tok);
        json_t *mt = json_object_get(p, "max_tokens");
        json_t *tops = json_object_get(p, "top_logprobs");
        r->max_tokens = json_is_integer(mt) ? (int)json_integer_value(mt) : -1;
        if (!r->prompt || !r->tokens || n_tok != r->max_tokens || !json_is_array(tops) ||
            (int)json_array_size(tops) != n_tok) {
            fprintf(stderr, "%s: prompt %d is malformed\n", g_fixture, i);
            return false;
        }
        r->top_ids = malloc(sizeof(int32_t) * (size_t)n_tok * TOP_K);
        r->top_lps = malloc(sizeof(double) * (size_t)n_tok * TOP_K);
        if (!r->top_ids || !r->top_lps)
            return false;
        for (int s = 0; s < n_tok; s++) {
            json_t *step = json_array_get(tops, (size_t)s);
            if (!json_is_array(step) || json_array_size(step) != TOP_K) {
                fprintf(stderr, "%s: prompt %d step %d: want %d top entries\n", g_fixture, i, s,
                        TOP_K);
                return false;
            }
            for (int k = 0; k < TOP_K; k++) {
                json_t *pair = json_array_get(step, (size_t)k);
                json_t *id = json_array_get(pair, 0), *lp = json_array_get(pair, 1);
                if (!json_is_integer(id) || !json_is_number(lp)) {
                    fprintf(stderr, "%s: prompt %d step %d: bad pair\n", g_fixture, i, s);
                    return false;
                }
                r->top_ids[s * TOP_K + k] = (int32_t)json_integer_value(id);
                r->top_lps[s * TOP_K + k] = json_number_value(lp);
            }
        }
    }
    return true;
}

/* Every model file the fixture lists has the recorded digest, and no model file is unlisted. */
static bool check_hashes(json_t *root, const char *model_dir)
{
    bool ok = true;
    json_t *hashes = json_object_get(root, "model_sha256");
    if (!json_is_object(hashes) || json_object_size(hashes) == 0) {
        fprintf(stderr, "%s: no model_sha256 object\n", g_fixture);
        return false;
    }
    const char *name;
    json_t *want;
    json_object_foreach(hashes, name, want) {
        char path[2048], hex[PL_SHA256_HEX_LEN];
        snprintf(path, sizeof(path), "%s/%s", model_dir, name);
        struct pl_err err = {0};
        if (pl_sha256_file_hex(path, hex, &err) != PL_STATUS_OK) {
            fprintf(stderr, "%s: %s\n", g_fixture, err.msg);
            ok = false;
        } else if (!json_is_string(want) || strcmp(hex, json_string_value(want))) {
            fprintf(stderr, "%s: %s has sha256 %s, the fixture says %s: the generator drifted\n",
                    g_fixture, name, hex, json_is_string(want) ? json_string_value(want) : "?");
            ok = false;
        }
    }
    DIR *d = opendir(model_dir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        size_t n = strlen(e->d_name);
        bool model_file = (n > 12 && !strcmp(e->d_name + n - 12, ".safetensors")) ||
                          !strcmp(e->d_name, "model.safetensors.index.json");
        if (model_file && !json_object_get(hashes, e->d_name)) {
            fprintf(stderr, "%s: generated %s is not in the fixture\n", g_fixture, e->d_name);
            ok = false;
        }
    }
    if (d)
        closedir(d);
    char path[2048], hex[PL_SHA256_HEX_LEN];
    snprintf(path, sizeof(path), "%s/config.json", model_dir);
    json_t *cfg = json_object_get(root, "config_sha256");
    if (pl_sha256_file_hex(path, hex, NULL) != PL_STATUS_OK || !json_is_string(cfg) ||
        strcmp(hex, json_string_value(cfg))) {
        fprintf(stderr, "%s: config.json sha256 %s differs from the fixture's\n", g_fixture, hex);
        ok = false;
    }
    return ok;
}

/* The fixture's prompts are the generator's current prompt table. */
static void check_prompt_table(const struct fixture *f)
{
    struct pl_tiny_prompt table[PL_TINY_MAX_PROMPTS];
    int n = 0;
    CHECK(pl_tiny_model_prompts(f->preset, table, &n, NULL) == PL_STATUS_OK);
    CHECKF(n == f->n_prompts, "%s: %d prompts in the table, %d in the fixture", f->preset, n,
           f->n_prompts);
    for (int i = 0; i < n && i < f->n_prompts; i++) {
        CHECK(table[i].n_ids == f->prompts[i].n_prompt);
        CHECK(table[i].max_tokens == f->prompts[i].max_tokens);
        if (table[i].n_ids == f->prompts[i].n_prompt)
            CHECKF(!memcmp(table[i].ids, f->prompts[i].prompt,
                           sizeof(int32_t) * (size_t)table[i].n_ids),
                   "%s: prompt %d differs from the table", f->preset, i);
    }
}

/* Compares one generated sequence with its reference; prints at most a few problems. */
static void compare(const struct fixture *f, int pi, const struct pl_greedy_seq *s,
                    const char *shape)
{
    const struct ref_prompt *r = &f->prompts[pi];
    CHECKF(s->n_out == r->max_tokens, "%s %s prompt %d: %d tokens, want %d", f->preset, shape, pi,
           s->n_out, r->max_tokens);
    int n = s->n_out < r->max_tokens ? s->n_out : r->max_tokens;
    int problems = 0;
    for (int st = 0; st < n && problems < 4; st++) {
        const double *lp = &r->top_lps[st * TOP_K];
        const int32_t *ids = &r->top_ids[st * TOP_K];
        if (s->out_tokens[st] != r->tokens[st]) {
            if (lp[0] - lp[1] < NEAR_TIE) {
                fprintf(stderr, "note: %s %s prompt %d step %d: near-tie (gap %.2e) resolved to "
                                "%d instead of %d; not comparing further\n",
                        f->preset, shape, pi, st, lp[0] - lp[1], s->out_tokens[st], r->tokens[st]);
                return;
            }
            CHECKF(0, "%s %s prompt %d step %d: greedy token %d, reference %d (gap %.3g)",
                   f->preset, shape, pi, st, s->out_tokens[st], r->tokens[st], lp[0] - lp[1]);
            return; /* everything after a wrong token differs anyway */
        }
        const float *got_lp = &s->top_logprobs[st * TOP_K];
        const int32_t *got_id = &s->top_ids[st * TOP_K];
        for (int k = 0; k < TOP_K; k++) {
            if (fabs((double)got_lp[k] - lp[k]) > LOGPROB_TOL) {
                CHECKF(0, "%s %s prompt %d step %d: top-%d logprob %.6f, reference %.6f",
                       f->preset, shape, pi, st, k + 1, (double)got_lp[k], lp[k]);
                problems++;
            }
            /* ids are only defined where the neighbours are clearly apart; the 5th
             * entry's lower neighbour is not in the fixture, so its id is not checked */
            bool above_clear = k == 0 || lp[k - 1] - lp[k] > LOGPROB_TOL;
            bool below_clear = k + 1 < TOP_K && lp[k] - lp[k + 1] > LOGPROB_TOL;
            if (above_clear && below_clear && got_id[k] != ids[k]) {
                CHECKF(0, "%s %s prompt %d step %d: top-%d id %d, reference %d", f->preset,
                       shape, pi, st, k + 1, got_id[k], ids[k]);
                problems++;
            }
        }
    }
}

/* Tensor-parallel ranks of the next open_runner (run_shape_tp). */
static int g_tp = 1;

static pl_status open_runner(const char *model_dir, int block_size, int num_blocks,
                             int n_threads, struct pl_model_runner **r, struct pl_err *err)
{
    struct pl_model_runner_params p;
    pl_model_runner_params_default(&p);
    p.model_dir = model_dir;
    p.n_threads = n_threads;
    if (strcmp(g_device, "cpu")) { /* an accelerator in its float32 mode (--dtype float32) */
        p.device = g_device;
        p.convert_dtype = true;
        p.dtype = PL_DTYPE_F32;
    }
    p.block_size = block_size;
    p.num_kv_blocks = num_blocks;
    p.max_num_seqs = 16;
    p.max_num_batched_tokens = 512;
    p.max_model_len = MAX_MODEL_LEN;
    p.tensor_parallel_size = g_tp;
    return pl_model_runner_new(&p, r, err);
}

/* Runs the fixture's prompts in one shape (together, or one at a time) and compares each. */
static void run_shape(const struct fixture *f, const char *model_dir, int block_size, int chunk,
                      bool one_at_a_time, int n_threads, const char *shape)
{
    int blocks = f->n_prompts * ((MAX_MODEL_LEN + block_size - 1) / block_size) + 4;
    struct pl_model_runner *r = NULL;
    struct pl_err err = {0};
    pl_status st = open_runner(model_dir, block_size, blocks, n_threads, &r, &err);
    CHECKF(st == PL_STATUS_OK, "%s %s: pl_model_runner_new: %s", f->preset, shape, err.msg);
    if (st != PL_STATUS_OK)
        return;
    struct pl_greedy_seq seqs[PL_TINY_MAX_PROMPTS];
    int n = f->n_prompts < PL_TINY_MAX_PROMPTS ? f->n_prompts : PL_TINY_MAX_PROMPTS;
    memset(seqs, 0, sizeof(seqs));
    for (int i = 0; i < n; i++) {
        seqs[i].prompt = f->prompts[i].prompt;
        seqs[i].n_prompt = f->prompts[i].n_prompt;
        seqs[i].max_tokens = f->prompts[i].max_tokens;
        seqs[i].n_logprobs = TOP_K;
    }
    if (one_at_a_time) {
        for (int i = 0; i < n; i++) {
            st = pl_greedy_generate(r, &seqs[i], 1, chunk, &err);
            CHECKF(st == PL_STATUS_OK, "%s %s prompt %d: %s", f->preset, shape, i, err.msg);
            if (st == PL_STATUS_OK)
                compare(f, i, &seqs[i], shape);
        }
    } else {
        st = pl_greedy_generate(r, seqs, n, chunk, &err);
        CHECKF(st == PL_STATUS_OK, "%s %s: %s", f->preset, shape, err.msg);
        for (int i = 0; st == PL_STATUS_OK && i < n; i++)
            compare(f, i, &seqs[i], shape);
    }
    for (int i = 0; i < n; i++)
        pl_greedy_seq_fini(&seqs[i]);
    pl_model_runner_free(r);
}

/* A pool of 2 blocks of 8 tokens cannot hold the longest prompt (40 tokens). */
static void run_tiny_pool(const struct fixture *f, const char *model_dir)
{
    int longest = 0;
    for (int i = 1; i < f->n_prompts; i++)
        if (f->prompts[i].n_prompt > f->prompts[longest].n_prompt)
            longest = i;
    const struct ref_prompt *rp = &f->prompts[longest];
    if (rp->n_prompt + rp->max_tokens <= 16)
        return;
    struct pl_model_runner *r = NULL;
    struct pl_err err = {0};
    pl_status st = open_runner(model_dir, 8, 2, 1, &r, &err);
    if (st != PL_STATUS_OK) { /* refused at start-up: fine if it says why */
        CHECKF(err.msg[0] != '\0', "%s: tiny KV pool refused without a message", f->preset);
        return;
    }
    struct pl_greedy_seq s;
    memset(&s, 0, sizeof(s));
    s.prompt = rp->prompt;
    s.n_prompt = rp->n_prompt;
    s.max_tokens = rp->max_tokens;
    s.n_logprobs = TOP_K;
    pl_err_clear(&err);
    st = pl_greedy_generate(r, &s, 1, 0, &err);
    if (st == PL_STATUS_OK)
        compare(f, longest, &s, "tiny-pool"); /* handled: then it must still be right */
    else
        CHECKF(err.msg[0] != '\0', "%s: tiny KV pool failed (%s) without a message", f->preset,
               pl_status_str(st));
    pl_greedy_seq_fini(&s);
    pl_model_runner_free(r);
}

/* Rope that depends on how long the forward's sequence is (dynamic NTK, longrope), as the
 * model's config.json says through the project's own config loader. */
static bool uses_dynamic_rope(const char *model_dir)
{
    struct pl_model_config cfg;
    struct pl_err err;
    if (pl_model_config_load(model_dir, &cfg, &err) != PL_STATUS_OK)
        return false;
    return cfg.rope.type == PL_ROPE_DYNAMIC || cfg.rope.type == PL_ROPE_LONGROPE;
}

static void test_fixture(void)
{
    json_error_t jerr;
    json_t *root = json_load_file(g_fixture, 0, &jerr);
    CHECKF(root != NULL, "%s: %s (line %d)", g_fixture, jerr.text, jerr.line);
    if (!root)
        return;
    struct fixture f;
    memset(&f, 0, sizeof(f));
    char tmp_root[] = "/tmp/pl_golden_XXXXXX";
    char model_dir[1100] = "";
    bool ok = parse_fixture(root, &f);
    CHECK(ok);
    if (ok)
        CHECKF(pl_tiny_model_is_golden(f.preset), "%s: '%s' is not a golden preset", g_fixture,
               f.preset);
    if (ok && pl_tiny_model_is_golden(f.preset) && mkdtemp(tmp_root)) {
        snprintf(model_dir, sizeof(model_dir), "%s/%s", tmp_root, f.preset);
        struct pl_err err = {0};
        pl_status st = pl_tiny_model_write(f.preset, model_dir, &err);
        CHECKF(st == PL_STATUS_OK, "%s: %s", f.preset, err.msg);
        bool same = st == PL_STATUS_OK && check_hashes(root, model_dir);
        CHECKF(same, "%s: the regenerated model is not the fixture's model", f.preset);
        if (same) {
            check_prompt_table(&f);
            bool dynamic = uses_dynamic_rope(model_dir);
            /* one shape with two backend threads: the split of work must not change results */
            run_shape(&f, model_dir, 16, 0, true, 1, "single");
            run_shape(&f, model_dir, 16, 0, false, 2, "batch-2threads");
            /* tensor parallelism (docs/parallel.md), CPU ranks: 2 split the KV heads, 4
             * replicate them; the same references, the same bounds (on GPUs: tools/
             * device_tp.sh) */
            if (!strcmp(g_device, "cpu")) {
                g_tp = 2;
                run_shape(&f, model_dir, 16, 0, false, 2, "batch-tp2");
                g_tp = 4;
                run_shape(&f, model_dir, 16, 0, false, 4, "batch-tp4");
                g_tp = 1;
            }
            if (!dynamic) {
                run_shape(&f, model_dir, 8, 3, false, 1, "batch-chunk3-bs8");
                run_shape(&f, model_dir, 32, 3, false, 1, "batch-chunk3-bs32");
                run_shape(&f, model_dir, 8, 3, true, 1, "single-chunk3-bs8");
            } else {
                fprintf(stderr, "note: %s: length-dependent rope, chunked-prefill shapes "
                                "skipped\n",
                        f.preset);
            }
            run_tiny_pool(&f, model_dir);
        }
        pl_test_rm_tree(tmp_root);
    }
    fixture_fini(&f);
    json_decref(root);
}

/* Whether the fixture file of preset `name` is among those found. */
static bool has_fixture(const char *name)
{
    for (int k = 0; k < g_n_fixtures; k++) {
        const char *base = strrchr(g_fixture_paths[k], '/');
        base = base ? base + 1 : g_fixture_paths[k];
        if (!strncmp(base, name, strlen(name)) && !strcmp(base + strlen(name), ".json"))
            return true;
    }
    return false;
}

static void test_fixtures_present(void)
{
    CHECKF(g_n_fixtures > 0,
           "no golden fixtures in tests/fixtures/golden/: run tools/golden_refs.py on the "
           "reference machine and commit the JSON files");
    int n = 0;
    const char *const *names = pl_tiny_model_list_presets(&n);
    for (int i = 0; i < n; i++) {
        if (!pl_tiny_model_is_golden(names[i]) || has_fixture(names[i]))
            continue;
        const char *family = pl_tiny_model_family(names[i]);
        bool family_started = false;
        for (int k = 0; k < n && !family_started; k++)
            family_started = pl_tiny_model_is_golden(names[k]) &&
                             !strcmp(pl_tiny_model_family(names[k]), family) &&
                             has_fixture(names[k]);
        if (family_started) {
            CHECKF(0, "golden preset '%s' has no fixture (its family %s has some): run "
                      "python3 tools/golden_refs.py --family %s --out tests/fixtures/golden/",
                   names[i], family, family);
        } else {
            fprintf(stderr, "skip: golden preset '%s' (family %s) has no fixture yet; make it "
                            "with python3 tools/golden_refs.py --family %s --out "
                            "tests/fixtures/golden/\n",
                    names[i], family, family);
        }
    }
}

int main(int argc, char **argv)
{
    if (argc == 3 && !strcmp(argv[1], "--device"))
        g_device = argv[2];
    else if (argc != 1) {
        fprintf(stderr, "usage: test_golden [--device cpu|cuda]\n");
        return 2;
    }
    find_fixtures();
    PL_RUN(test_fixtures_present);
    for (int i = 0; i < g_n_fixtures; i++) {
        g_fixture = g_fixture_paths[i];
        fprintf(stderr, "-- %s\n", strrchr(g_fixture, '/') + 1);
        PL_RUN(test_fixture);
    }
    return pl_test_summary();
}
