/*
 * worker.c -- `pagellm worker`: the RunPod Serverless worker (docs/runpod.md).
 *
 * Picks the SDK's process mode (spec 1.1): --rp_serve_api -> the local test
 * API; RUNPOD_REALTIME_PORT -> the same API on 0.0.0.0; --test_input or no
 * RUNPOD_WEBHOOK_GET_JOB -> one local job, then exit; else the production job
 * loop. Configuration: worker-vllm's environment variables, then flags.
 * Owns the process-level pieces: curl's global init, the model load, and the
 * serving stack the OpenAI server also runs on: the async engine thread over
 * the pl_llm, the tokenizer shared by job threads, the OpenAI layer.
 */
#include "cli/cli.h"
#include "engine/async_engine.h"
#include "server/llm_engine.h"
#include "server/openai.h"
#include "tokenizer/tokenizer.h"
#include "worker/runpod.h"

#include "util/err.h"
#include "util/fs.h"

#include <curl/curl.h>
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *help =
    "usage: pagellm worker [--model DIR] [options]\n\n"
    "Runs pagellm as a RunPod Serverless worker (see docs/runpod.md).\n\n"
    "  --model DIR              model directory (env MODEL_NAME)\n"
    "  --max-concurrency N      jobs held at once (env MAX_CONCURRENCY, 30)\n"
    "  --served-model-name S    name in OpenAI-route answers (env OPENAI_SERVED_MODEL_NAME_OVERRIDE)\n"
    "  --rp_serve_api           serve the SDK's local test API instead of taking jobs\n"
    "  --rp_api_host H          local API address (localhost)\n"
    "  --rp_api_port P          local API port (8000)\n"
    "  --rp_api_concurrency N   local API HTTP event-loop threads (2)\n"
    "  --rp_api_max_queue N     local API: jobs waiting to run at most (1024); 429 beyond\n"
    "  --rp_api_max_queue_bytes B  local API: their request bodies' bytes at most\n"
    "                           (268435456); 429 beyond\n"
    "  --rp_log_level L         ERROR, WARN, INFO or DEBUG\n"
    "  --test_input JSON        run one job ({\"input\": ...}) and exit 0/1\n"
    "  --health-stall-timeout S the engine loop counts as stalled after S seconds without a\n"
    "                           step while work is pending (30): no heartbeat, /health 503\n"
    "Engine flags as for `pagellm generate` (--max-model-len, --max-num-seqs, --block-size,\n"
    "--device, --dtype, --seed, --kv-cache-bytes, ...) override the environment.\n";

static int env_int(const char *name, int *out)
{
    const char *v = getenv(name);
    if (!v || !*v)
        return 0;
    char *end;
    long x = strtol(v, &end, 10);
    if (*end || x < 0 || x > 1 << 30) {
        fprintf(stderr, "pagellm worker: %s='%s' is not a non-negative integer\n", name, v);
        return -1;
    }
    *out = (int)x;
    return 1;
}

/* worker-vllm's engine variables (spec 4.7) onto the LLM params. */
static int apply_env(struct pl_llm_params *lp)
{
    if (env_int("MAX_MODEL_LEN", &lp->max_model_len) < 0 ||
        env_int("MAX_NUM_SEQS", &lp->max_num_seqs) < 0 ||
        env_int("MAX_NUM_BATCHED_TOKENS", &lp->max_num_batched_tokens) < 0 ||
        env_int("BLOCK_SIZE", &lp->block_size) < 0)
        return -1;
    int seed = 0;
    if (env_int("SEED", &seed) > 0)
        lp->seed = (uint64_t)seed;
    const char *v = getenv("ENABLE_PREFIX_CACHING");
    if (v && *v)
        lp->enable_prefix_caching = !strcmp(v, "1") || !strcasecmp(v, "true");
    v = getenv("DTYPE");
    if (v && *v)
        lp->dtype = v;
    /* worker-vllm's default is 0.95 (the engine's own is vLLM's 0.9) */
    lp->gpu_memory_utilization = 0.95;
    v = getenv("GPU_MEMORY_UTILIZATION");
    if (v && *v) {
        char *end;
        double u = strtod(v, &end);
        if (*end || !(u > 0 && u <= 1)) {
            fprintf(stderr, "pagellm worker: GPU_MEMORY_UTILIZATION='%s' is not in (0, 1]\n", v);
            return -1;
        }
        lp->gpu_memory_utilization = u;
    }
    v = getenv("TENSOR_PARALLEL_SIZE");
    if (v && *v && strcmp(v, "1"))
        fprintf(stderr, "pagellm worker: TENSOR_PARALLEL_SIZE=%s ignored (one device)\n", v);
    return 0;
}

/* The local one-shot run (spec 3.8). */
static int run_test_input(struct pl_rp_ctx *ctx, const char *flag_json)
{
    char *text = NULL;
    size_t len;
    if (flag_json)
        text = strdup(flag_json);
    else if (pl_fs_read_file("test_input.json", 64u << 20, &text, &len, NULL) != PL_STATUS_OK)
        text = NULL;
    if (!text) {
        pl_rp_log(ctx->cfg, PL_RP_LOG_ERROR, NULL, NULL, "test_input.json not found, exiting.");
        return 1;
    }
    json_error_t je;
    json_t *job = json_loads(text, JSON_DECODE_ANY, &je);
    free(text);
    if (!json_is_object(job)) {
        pl_rp_log(ctx->cfg, PL_RP_LOG_ERROR, NULL, NULL, "test input is not a JSON object: %s",
                  job ? "" : je.text);
        json_decref(job);
        return 1;
    }
    json_t *input = json_object_get(job, "input");
    if (!input || json_is_null(input)) {
        pl_rp_log(ctx->cfg, PL_RP_LOG_ERROR, NULL, NULL,
                  "Job has no input parameter. Unable to run.");
        json_decref(job);
        return 1;
    }
    const char *id = json_string_value(json_object_get(job, "id"));
    if (!id)
        id = "local_test";
    struct pl_rp_result res;
    pl_rp_run_job(ctx, id, input, NULL, NULL, NULL, &res);
    json_t *out = json_object();
    if (res.error)
        json_object_set_new(out, "error", json_string(res.error));
    else
        json_object_set(out, "output", res.output ? res.output : json_null());
    char *s = json_dumps(out, JSON_COMPACT);
    pl_rp_log(ctx->cfg, res.error ? PL_RP_LOG_ERROR : PL_RP_LOG_INFO, id, NULL, "Job result: %s",
              s ? s : "");
    if (s)
        printf("%s\n", s);
    fflush(stdout);
    free(s);
    json_decref(out);
    int rc = res.error ? 1 : 0;
    pl_rp_result_fini(&res);
    json_decref(job);
    return rc;
}

int pl_cli_worker(int argc, char **argv)
{
    struct pl_cli_flags fl;
    pl_cli_flags_init(&fl);
    if (apply_env(&fl.llm) < 0)
        return 2;
    const char *model = getenv("MODEL_NAME");
    const char *test_input = NULL, *served = NULL;
    bool serve_api = false;
    struct pl_rp_api_opts api;
    pl_rp_api_opts_default(&api);
    int max_conc = -1;
    double stall_s = 30;
    int rc = 0;
    for (int i = 1; i < argc; i++) {
        const char *val = NULL;
        char name[64];
        const char *flag = pl_cli_split_flag(argv[i], name, sizeof(name), &val);
        if (!strcmp(flag, "-h") || !strcmp(flag, "--help")) {
            printf("%s\n%s", help, pl_cli_flags_help());
            pl_cli_flags_fini(&fl);
            return 0;
        }
        if (!strcmp(flag, "--rp_serve_api") || !strcmp(flag, "--rp_debugger")) {
            serve_api = serve_api || !strcmp(flag, "--rp_serve_api");
            continue;
        }
        if (!val && pl_cli_flags_bool(&fl, flag))
            continue;
        if (strncmp(flag, "--", 2)) {
            fprintf(stderr, "pagellm worker: unexpected argument '%s'\n", argv[i]);
            rc = 2;
            break;
        }
        if (!val) {
            if (i + 1 >= argc) {
                fprintf(stderr, "pagellm worker: %s needs a value (or is unknown)\n", flag);
                rc = 2;
                break;
            }
            val = argv[++i];
        }
        if (!strcmp(flag, "--model"))
            model = val;
        else if (!strcmp(flag, "--test_input"))
            test_input = val;
        else if (!strcmp(flag, "--served-model-name"))
            served = val;
        else if (!strcmp(flag, "--rp_api_host"))
            api.host = val;
        else if (!strcmp(flag, "--rp_api_port"))
            api.port = atoi(val);
        else if (!strcmp(flag, "--rp_api_concurrency"))
            api.concurrency = atoi(val);
        else if (!strcmp(flag, "--rp_api_max_queue") ||
                 !strcmp(flag, "--rp_api_max_queue_bytes")) {
            char *end;
            errno = 0;
            long long v = strtoll(val, &end, 10);
            if (errno || *end || end == val || v < 1) {
                fprintf(stderr, "pagellm worker: %s '%s' is not a positive integer\n", flag, val);
                rc = 2;
                break;
            }
            if (!strcmp(flag, "--rp_api_max_queue"))
                api.max_queue = v > LONG_MAX ? LONG_MAX : (long)v;
            else
                api.max_queue_bytes = (unsigned long long)v > SIZE_MAX ? SIZE_MAX : (size_t)v;
        }
        else if (!strcmp(flag, "--rp_log_level"))
            setenv("RUNPOD_LOG_LEVEL", val, 1);
        else if (!strcmp(flag, "--max-concurrency"))
            max_conc = atoi(val);
        else if (!strcmp(flag, "--health-stall-timeout")) {
            char *end;
            stall_s = strtod(val, &end);
            if (*end || !(stall_s > 0)) {
                fprintf(stderr, "pagellm worker: --health-stall-timeout '%s' is not a positive "
                                "number of seconds\n", val);
                rc = 2;
                break;
            }
        } else {
            int r = pl_cli_flags_value(&fl, "worker", flag, val);
            if (r <= 0) {
                if (r == 0)
                    fprintf(stderr, "pagellm worker: unknown option '%s'\n", flag);
                rc = 2;
                break;
            }
        }
    }
    if (rc) {
        pl_cli_flags_fini(&fl);
        return rc;
    }
    if (!model || !*model) {
        fprintf(stderr, "pagellm worker: no model: give --model DIR or set MODEL_NAME\n");
        pl_cli_flags_fini(&fl);
        return 2;
    }
    fl.llm.model = model;
    struct pl_rp_config cfg;
    struct pl_err err;
    if (pl_rp_config_from_env(&cfg, &err) != PL_STATUS_OK) {
        fprintf(stderr, "pagellm worker: %s\n", err.msg);
        pl_rp_config_fini(&cfg);
        pl_cli_flags_fini(&fl);
        return 2;
    }
    if (max_conc > 0)
        cfg.max_concurrency = max_conc;
    if (served) {
        free(cfg.served_model_name);
        cfg.served_model_name = strdup(served);
    }
    if (!cfg.served_model_name)
        cfg.served_model_name = strdup(model);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    bool production = !serve_api && cfg.realtime_port == 0 && !test_input && cfg.get_job;

    struct pl_llm *llm = NULL;
    if (pl_llm_new(&fl.llm, &llm) != PL_STATUS_OK) {
        const char *m = pl_llm_errmsg(llm);
        pl_rp_log(&cfg, PL_RP_LOG_ERROR, NULL, NULL, "model load failed: %s", m);
        if (production) {
            char reason[300];
            snprintf(reason, sizeof(reason), "ModelLoadError: %s", m);
            pl_rp_report_unhealthy(&cfg, "model_load", reason);
        }
        pl_llm_free(llm);
        pl_rp_config_fini(&cfg);
        pl_cli_flags_fini(&fl);
        curl_global_cleanup();
        return 1;
    }
    struct pl_tokenizer *tok = NULL;
    const char *tok_dir = fl.llm.tokenizer ? fl.llm.tokenizer : model;
    if (pl_tokenizer_load(tok_dir, &tok, &err) != PL_STATUS_OK) {
        tok = NULL;
        pl_rp_log(&cfg, PL_RP_LOG_WARN, NULL, NULL, "no tokenizer (%s): text prompts fail",
                  err.msg);
    }
    struct pl_sampling_params defaults;
    pl_llm_default_sampling_params(llm, &defaults);
    struct pl_async_engine_params ap;
    pl_async_engine_params_default(&ap);
    ap.max_pending = 4096;
    ap.stall_timeout_s = stall_s;
    struct pl_rp_ctx ctx = {&cfg, llm, NULL, NULL};
    const char *names[] = {cfg.served_model_name};
    struct pl_openai_params op = {.served_names = names,
                                  .n_served_names = 1,
                                  .model_root = model,
                                  .max_model_len = pl_llm_max_model_len(llm),
                                  .tok = tok,
                                  .chat_template = cfg.custom_chat_template,
                                  .defaults = &defaults,
                                  .vocab_size = pl_llm_vocab_size(llm),
                                  .response_role = cfg.response_role};
    pl_status st = pl_async_engine_new(&pl_llm_engine_ops, llm, &ap, &ctx.ae, &err);
    if (st == PL_STATUS_OK) {
        op.ae = ctx.ae;
        st = pl_openai_new(&op, &ctx.oai, &err);
    }
    if (st != PL_STATUS_OK) {
        pl_rp_log(&cfg, PL_RP_LOG_ERROR, NULL, NULL, "%s", err.msg);
        rc = 1;
    } else if (serve_api || cfg.realtime_port) {
        if (!serve_api) {
            api.host = "0.0.0.0";
            api.port = cfg.realtime_port;
            const char *rc_env = getenv("RUNPOD_REALTIME_CONCURRENCY");
            api.concurrency = rc_env ? atoi(rc_env) : 1;
        }
        rc = pl_rp_local_api_run(&ctx, &api);
    } else if (!production) {
        rc = run_test_input(&ctx, test_input);
    } else {
        rc = pl_rp_worker_run(&ctx);
    }
    pl_async_engine_free(ctx.ae);
    pl_openai_free(ctx.oai);
    pl_sampling_params_fini(&defaults);
    pl_tokenizer_free(tok);
    pl_llm_free(llm);
    pl_rp_config_fini(&cfg);
    pl_cli_flags_fini(&fl);
    curl_global_cleanup();
    return rc;
}
