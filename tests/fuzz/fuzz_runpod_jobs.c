/*
 * fuzz_runpod_jobs.c -- libFuzzer target for what the RunPod worker reads from
 * the job server: take bodies (pl_rp_parse_jobs), each job's input mode
 * (pl_rp_choose_mode under every profile) and URL templating with the job id;
 * and a local API request's webhook URL (pl_rp_webhook_url_problem: only
 * http:// and https:// may pass). Job server answers and local API bodies are
 * outside data: they must only ever be refused.
 */
#include "worker/runpod.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static void check_webhook(const char *url)
{
    if (!pl_rp_webhook_url_problem(url) && strncasecmp(url, "http://", 7) &&
        strncasecmp(url, "https://", 8))
        abort(); /* another scheme got through */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    check_webhook(text);
    free(text);
    const char *why;
    json_t *jobs = pl_rp_parse_jobs((const char *)data, size, &why);
    size_t i;
    json_t *j;
    json_array_foreach(jobs, i, j) {
        const json_t *input = json_object_get(j, "input");
        for (int p = 0; p < 3; p++) {
            const char *err;
            enum pl_rp_mode m = pl_rp_choose_mode(input, (enum pl_rp_profile)p, &err);
            if (m == PL_RP_MODE_NONE && !err)
                abort(); /* an error mode always says why */
        }
        const char *hook = json_string_value(json_object_get(j, "webhook"));
        if (hook)
            check_webhook(hook);
        char *u = pl_rp_url_expand("http://h/job-done/$RUNPOD_POD_ID/$ID?gpu=x", "w1",
                                   json_string_value(json_object_get(j, "id")));
        char *v = u ? pl_rp_url_append(u, "isStream=false") : NULL;
        free(u);
        free(v);
    }
    json_decref(jobs);
    return 0;
}
