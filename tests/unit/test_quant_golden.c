/*
 * test_quant_golden.c -- pagellm's quantized CPU path against the transformers references
 * of tests/fixtures/quant/<format>.json (made by tools/quant_refs.py on the machine with
 * torch: transformers fp32 on the dense model of the dequantized weights).
 *
 * For each fixture: pl_quant_write_model regenerates the packed model (its
 * model.safetensors must have the fixture's sha256: the packer did not drift), the
 * CPU backend runs the fixture's prompts greedily, and the greedy tokens must equal the
 * reference, the top-5 logprobs within 1e-3. Without fixtures (before the references are
 * made) the test says so and passes; test_quant compares every format with its dense
 * dequantized model meanwhile.
 */
#include "test.h"

#include "engine/greedy.h"
#include "engine/model_runner.h"
#include "model/quant_pack.h"
#include "util/sha256.h"

#include <dirent.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TOP_K 5
#define LOGPROB_TOL 1e-3

static void run_fixture(const char *path, const char *root)
{
    json_error_t je;
    json_t *fx = json_load_file(path, 0, &je);
    REQUIRE(fx);
    const char *preset = json_string_value(json_object_get(fx, "preset"));
    const char *format = json_string_value(json_object_get(fx, "format"));
    const char *sha = json_string_value(json_object_get(fx, "model_sha256"));
    json_t *prompts = json_object_get(fx, "prompts");
    if (!preset || !format || !sha || !json_is_array(prompts)) {
        CHECKF(0, "%s: malformed fixture", path);
        json_decref(fx);
        return;
    }
    char dir[1024], st_path[1100], hex[PL_SHA256_HEX_LEN];
    snprintf(dir, sizeof(dir), "%s/%s", root, format);
    snprintf(st_path, sizeof(st_path), "%s/model.safetensors", dir);
    struct pl_err err = {0};
    pl_status st = pl_quant_write_model(preset, format, dir, NULL, &err);
    CHECKF(st == PL_STATUS_OK, "%s: %s", format, err.msg);
    CHECKF(st == PL_STATUS_OK && pl_sha256_file_hex(st_path, hex, &err) == PL_STATUS_OK && !strcmp(hex, sha),
           "%s: the packed model's sha256 is not the fixture's (the packer changed: remake the "
           "references with tools/device_quant_refs.sh)", format);
    struct pl_model_runner_params p;
    pl_model_runner_params_default(&p);
    p.model_dir = dir;
    p.n_threads = 1;
    p.num_kv_blocks = 64;
    p.max_num_seqs = 8;
    p.max_num_batched_tokens = 256;
    p.max_model_len = 64;
    struct pl_model_runner *r = NULL;
    if (st == PL_STATUS_OK && (st = pl_model_runner_new(&p, &r, &err)) != PL_STATUS_OK)
        CHECKF(0, "%s: %s", format, err.msg);
    const int n = (int)json_array_size(prompts);
    struct pl_greedy_seq *seqs = calloc((size_t)n, sizeof(*seqs));
    int32_t(*ids)[64] = calloc((size_t)n, sizeof(*ids));
    for (int i = 0; r && seqs && ids && i < n; i++) {
        json_t *pr = json_array_get(prompts, (size_t)i);
        json_t *pids = json_object_get(pr, "prompt_token_ids");
        seqs[i].n_prompt = (int)json_array_size(pids);
        for (int k = 0; k < seqs[i].n_prompt && k < 64; k++)
            ids[i][k] = (int32_t)json_integer_value(json_array_get(pids, (size_t)k));
        seqs[i].prompt = ids[i];
        seqs[i].max_tokens = (int)json_integer_value(json_object_get(pr, "max_tokens"));
        seqs[i].n_logprobs = TOP_K;
    }
    if (r && seqs && ids && pl_greedy_generate(r, seqs, n, 0, &err) != PL_STATUS_OK)
        CHECKF(0, "%s: %s", format, err.msg);
    for (int i = 0; r && seqs && ids && i < n; i++) {
        json_t *pr = json_array_get(prompts, (size_t)i);
        json_t *toks = json_object_get(pr, "token_ids"), *tops = json_object_get(pr, "top_logprobs");
        CHECKF(seqs[i].n_out == (int)json_array_size(toks), "%s prompt %d: %d tokens", format, i,
               seqs[i].n_out);
        for (int t = 0; t < seqs[i].n_out && t < (int)json_array_size(toks); t++) {
            int want = (int)json_integer_value(json_array_get(toks, (size_t)t));
            if (seqs[i].out_tokens[t] != want) {
                CHECKF(0, "%s prompt %d step %d: token %d, reference %d", format, i, t,
                       seqs[i].out_tokens[t], want);
                break;
            }
            json_t *step = json_array_get(tops, (size_t)t);
            for (int k = 0; k < TOP_K; k++) {
                double lp = json_real_value(json_array_get(json_array_get(step, (size_t)k), 1));
                CHECKF(fabs((double)seqs[i].top_logprobs[t * TOP_K + k] - lp) <= LOGPROB_TOL,
                       "%s prompt %d step %d top-%d: %.6f, reference %.6f", format, i, t, k + 1,
                       (double)seqs[i].top_logprobs[t * TOP_K + k], lp);
            }
        }
    }
    for (int i = 0; seqs && i < n; i++)
        pl_greedy_seq_fini(&seqs[i]);
    free(seqs);
    free(ids);
    pl_model_runner_free(r);
    json_decref(fx);
}

static void test_fixtures(void)
{
    const char *dir = pl_test_path("tests/fixtures/quant");
    char fdir[4096];
    snprintf(fdir, sizeof(fdir), "%s", dir);
    DIR *d = opendir(fdir);
    int n = 0;
    char tmpl[] = "/tmp/pl_quant_golden_XXXXXX";
    char *root = mkdtemp(tmpl);
    REQUIRE(root);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (len < 6 || strcmp(e->d_name + len - 5, ".json"))
            continue;
        char path[4400];
        snprintf(path, sizeof(path), "%s/%s", fdir, e->d_name);
        run_fixture(path, root);
        n++;
    }
    if (d)
        closedir(d);
    pl_test_rm_tree(root);
    if (n == 0)
        fprintf(stderr, "note: no quantized references in tests/fixtures/quant yet "
                        "(tools/device_quant_refs.sh makes them)\n");
}

int main(void)
{
    PL_RUN(test_fixtures);
    return pl_test_summary();
}
