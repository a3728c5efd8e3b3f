/*
 * fuzz_runpod_jobs.c -- libFuzzer target for what the RunPod worker reads from
 * the job server: take bodies (pl_rp_parse_jobs), each job's input mode
 * (pl_rp_choose_mode under every profile) and URL templating with the job id.
 * Job server answers are outside data: they must only ever be refused.
 */
#include "worker/runpod.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
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
        char *u = pl_rp_url_expand("http://h/job-done/$RUNPOD_POD_ID/$ID?gpu=x", "w1",
                                   json_string_value(json_object_get(j, "id")));
        char *v = u ? pl_rp_url_append(u, "isStream=false") : NULL;
        free(u);
        free(v);
    }
    json_decref(jobs);
    return 0;
}
