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
#include "backend/backend.h"
#include "cli/cli.h"
#include "engine/async_engine.h"
#include "engine/llm_internal.h"
#include "server/openai.h"
#include "model/quant.h"
#include "tokenizer/tokenizer.h"
#include "worker/runpod.h"

#include "util/dtype.h"
#include "util/err.h"
#include "util/fs.h"

#include <curl/curl.h>
#include <errno.h>
#include <strings.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *help =
    "usage: pagellm worker [--model DIR] [options]\n\n"
    "Runs pagellm as a RunPod Serverless worker (see docs/runpod.md).\n\n"
    "  --model DIR|ORG/NAME     model directory or Hugging Face Hub id (env MODEL_NAME)\n"
    "  --revision R             Hub branch, tag or commit (env MODEL_REVISION; main)\n"
    "  --download-dir DIR       Hub cache (default: $BASE_PATH/huggingface-cache/hub when\n"
    "                           BASE_PATH, default /runpod-volume, exists; else\n"
    "                           ~/.cache/huggingface/hub)\n"
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
    "Env REASONING_PARSER (qwen3, deepseek_r1) splits reasoning_content out of chat answers;\n"
    "ENABLE_AUTO_TOOL_CHOICE=true serves tool_choice \"auto\" with TOOL_CALL_PARSER (hermes,\n"
    "llama3_json, mistral; default: the one the chat template shows).\n"
    "Engine flags (below) override the environment (MAX_MODEL_LEN, MAX_NUM_SEQS,\n"
    "MAX_NUM_BATCHED_TOKENS, BLOCK_SIZE, SEED, ENABLE_PREFIX_CACHING, DTYPE,\n"
    "GPU_MEMORY_UTILIZATION, OVERRIDE_GENERATION_CONFIG, QUANTIZATION, KV_CACHE_DTYPE).\n"
    "Sampling defaults apply to jobs that do not set the field, over the worker's\n"
    "per-mode defaults too.\n\n";

/* A flag's integer value in [lo, hi]; false (with a message) otherwise. */
static bool parse_count(const char *flag, const char *val, long lo, long hi, int *out)
{
    char *end;
    errno = 0;
    long x = strtol(val, &end, 10);
    if (errno || end == val || *end || x < lo || x > hi) {
        fprintf(stderr, "pagellm worker: %s '%s' is not an integer in %ld..%ld\n", flag, val, lo,
                hi);
        return false;
    }
    *out = (int)x;
    return true;
}

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

/* worker-vllm's engine variables (docs/runpod.md) onto the flags. */
static int apply_env(struct pl_cli_flags *f)
{
    struct pl_llm_params *lp = &f->llm;
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
    if (v && *v) {
        enum pl_dtype t;
        if (strcmp(v, "auto") && !pl_dtype_parse_torch(v, &t)) {
            fprintf(stderr, "pagellm worker: DTYPE='%s' is not one of auto, bfloat16, float16, "
                            "half, float32, float\n", v);
            return -1;
        }
        lp->dtype = v;
    }
    v = getenv("QUANTIZATION");
    if (v && *v) {
        if (!pl_quant_flag_known(v)) {
            fprintf(stderr, "pagellm worker: QUANTIZATION='%s' is not one of %s\n", v,
                    pl_quant_flag_values());
            return -1;
        }
        lp->quantization = v;
    }
    v = getenv("KV_CACHE_DTYPE");
    if (v && *v) {
        enum pl_kv_cache_dtype kd;
        if (!pl_kv_cache_dtype_parse(v, &kd)) {
            fprintf(stderr, "pagellm worker: KV_CACHE_DTYPE='%s' is not one of auto, fp8, "
                            "fp8_e4m3\n", v);
            return -1;
        }
        lp->kv_cache_dtype = v;
    }
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
    v = getenv("OVERRIDE_GENERATION_CONFIG");
    if (v && *v)
        f->override_json = v; /* checked with the flags (pl_cli_flags_check) */
    /* worker-vllm: TENSOR_PARALLEL_SIZE, by default every visible GPU of the pod */
    int n_gpus = pl_backend_device_count(lp->device ? lp->device : "auto");
    if (strcmp(pl_backend_resolve(lp->device ? lp->device : "auto"), "cpu") && n_gpus > 1)
        lp->tensor_parallel_size = n_gpus;
    if (env_int("TENSOR_PARALLEL_SIZE", &lp->tensor_parallel_size) < 0)
        return -1;
    if (lp->tensor_parallel_size < 1 || lp->tensor_parallel_size > 64) {
        fprintf(stderr, "pagellm worker: TENSOR_PARALLEL_SIZE=%d is not in 1..64\n",
                lp->tensor_parallel_size);
        return -1;
    }
    return 0;
}

/*
 * The Hub cache of the worker: --download-dir; else $HF_HUB_CACHE (or
 * HUGGINGFACE_HUB_CACHE) when set; else worker-vllm's place on the network
 * volume, $BASE_PATH/huggingface-cache/hub (BASE_PATH defaults to
 * /runpod-volume, where RunPod mounts a network volume), when that directory
 * exists or can be made; else NULL (huggingface_hub's default,
 * ~/.cache/huggingface/hub on the container disk). Malloc'ed or NULL.
 */
static char *worker_cache_dir(const char *flag)
{
    if (flag && *flag)
        return strdup(flag);
    const char *v = getenv("HF_HUB_CACHE");
    if (!v || !*v)
        v = getenv("HUGGINGFACE_HUB_CACHE");
    if (v && *v)
        return NULL; /* the hub module reads them */
    const char *base = getenv("BASE_PATH");
    if (!base || !*base)
        base = "/runpod-volume";
    struct stat sb;
    if (stat(base, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return NULL;
    size_t n = strlen(base) + 32;
    char *dir = malloc(n);
    if (!dir)
        return NULL;
    snprintf(dir, n, "%s/huggingface-cache/hub", base);
    if ((stat(dir, &sb) == 0 && S_ISDIR(sb.st_mode)) || access(base, W_OK) == 0)
        return dir;
    fprintf(stderr, "pagellm worker: %s is not writable; models go to the container's own "
                    "cache instead\n", base);
    free(dir);
    return NULL;
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
    if (apply_env(&fl) < 0) {
        pl_cli_flags_fini(&fl);
        return 2;
    }
    const char *model = getenv("MODEL_NAME");
    const char *rev_env = getenv("MODEL_REVISION");
    if (rev_env && *rev_env)
        fl.revision = rev_env; /* worker-vllm's name; --revision overrides */
    char *model_dir = NULL, *cache_dir = NULL;
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
            printf("%s%s%s", help, pl_cli_flags_help_server_sampling(),
                   pl_cli_flags_help_engine());
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
        else if (!strcmp(flag, "--rp_api_port")) {
            if (!parse_count(flag, val, 0, 65535, &api.port)) {
                rc = 2;
                break;
            }
        } else if (!strcmp(flag, "--rp_api_concurrency")) {
            if (!parse_count(flag, val, 1, 4096, &api.concurrency)) {
                rc = 2;
                break;
            }
        } else if (!strcmp(flag, "--rp_api_max_queue") ||
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
        } else if (!strcmp(flag, "--rp_log_level")) {
            if (strcasecmp(val, "ERROR") && strcasecmp(val, "WARN") && strcasecmp(val, "INFO") &&
                strcasecmp(val, "DEBUG")) {
                fprintf(stderr, "pagellm worker: --rp_log_level '%s' is not one of ERROR, WARN, "
                                "INFO, DEBUG\n", val);
                rc = 2;
                break;
            }
            setenv("RUNPOD_LOG_LEVEL", val, 1);
        } else if (!strcmp(flag, "--max-concurrency")) {
            if (!parse_count(flag, val, 1, 1 << 20, &max_conc)) {
                rc = 2;
                break;
            }
        } else if (!strcmp(flag, "--health-stall-timeout")) {
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
    if (!rc)
        rc = pl_cli_flags_check(&fl, "worker", PL_CLI_SAMPLING_SERVER);
    if (!rc && (!model || !*model)) {
        fprintf(stderr, "pagellm worker: no model: pass --model DIR or set MODEL_NAME\n");
        rc = 2;
    }
    if (rc) {
        pl_cli_flags_fini(&fl);
        return rc;
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
    if (pl_cli_check_model_dir("worker", model)) {
        if (production) {
            char reason[300];
            snprintf(reason, sizeof(reason), "ModelLoadError: no model directory at '%.200s'",
                     model);
            pl_rp_report_unhealthy(&cfg, "model_load", reason);
        }
        pl_rp_config_fini(&cfg);
        pl_cli_flags_fini(&fl);
        curl_global_cleanup();
        return 1;
    }

    /* MODEL_NAME may be a Hub id: into the network volume's cache when there is one */
    cache_dir = worker_cache_dir(fl.download_dir);
    struct pl_llm *llm = NULL;
    if (pl_cli_hub_model("worker", model, fl.revision, cache_dir, false, &model_dir, &err)) {
        if (production) {
            char reason[300];
            snprintf(reason, sizeof(reason), "ModelLoadError: %.280s", err.msg);
            pl_rp_report_unhealthy(&cfg, "model_load", reason);
        }
        pl_rp_config_fini(&cfg);
        pl_cli_flags_fini(&fl);
        free(cache_dir);
        curl_global_cleanup();
        return 1;
    }
    fl.llm.model = model_dir;
    pl_status lst = pl_llm_new(&fl.llm, &llm);
    if (lst != PL_STATUS_OK) {
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
        free(model_dir);
        free(cache_dir);
        curl_global_cleanup();
        return pl_cli_exit_code(lst);
    }
    struct pl_tokenizer *tok = NULL;
    const char *tok_dir = fl.llm.tokenizer ? fl.llm.tokenizer : model_dir;
    if (pl_tokenizer_load(tok_dir, &tok, &err) != PL_STATUS_OK) {
        tok = NULL;
        pl_rp_log(&cfg, PL_RP_LOG_WARN, NULL, NULL, "no tokenizer (%s): text prompts fail",
                  err.msg);
    }
    struct pl_sampling_params defaults;
    pl_llm_default_sampling_params(llm, &defaults);
    const char *v = getenv("ENABLE_AUTO_TOOL_CHOICE");
    bool auto_tools = v && (!strcmp(v, "1") || !strcasecmp(v, "true"));
    const char *tool_parser = getenv("TOOL_CALL_PARSER");
    if (tool_parser && !*tool_parser)
        tool_parser = NULL;
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
                                  .response_role = cfg.response_role,
                                  /* worker-vllm's REASONING_PARSER: reasoning_content in the
                                   * OpenAI-route answers, as the server's --reasoning-parser */
                                  .reasoning_parser = getenv("REASONING_PARSER"),
                                  /* worker-vllm's ENABLE_AUTO_TOOL_CHOICE / TOOL_CALL_PARSER,
                                   * as the server's flags of the same names */
                                  .enable_auto_tool_choice = auto_tools,
                                  .tool_call_parser = tool_parser};
    pl_status st = pl_llm_start_async(llm, &ap, &ctx.ae, &err);
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
    pl_llm_stop_async(llm); /* the engine thread (ctx.ae) */
    pl_openai_free(ctx.oai);
    pl_sampling_params_fini(&defaults);
    pl_tokenizer_free(tok);
    pl_llm_free(llm);
    pl_rp_config_fini(&cfg);
    pl_cli_flags_fini(&fl);
    free(model_dir);
    free(cache_dir);
    curl_global_cleanup();
    return rc;
}
