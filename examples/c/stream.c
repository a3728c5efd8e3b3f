/*
 * stream.c -- streaming with pagellm's C library, built outside the source
 * tree against the installed library (see Makefile: pkg-config pagellm).
 *
 *     usage: stream MODEL_DIR [PROMPT]
 *
 * Submits PROMPT (greedy, 32 tokens) with pl_llm_submit and prints each delta's
 * new text as it arrives -- what vLLM's AsyncLLMEngine.generate gives Python.
 * Then it runs the same request with pl_llm_generate and checks that the
 * deltas, concatenated (pl_request_output_append), are that output: exit 0
 * when they are, 1 otherwise.
 */
#include <pagellm.h>

#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: %s MODEL_DIR [PROMPT]\n", argv[0]);
        return 2;
    }
    struct pl_llm_params lp;
    pl_llm_params_default(&lp);
    lp.model = argv[1];
    struct pl_llm *llm;
    if (pl_llm_new(&lp, &llm) != PL_STATUS_OK) {
        fprintf(stderr, "stream: %s\n", pl_llm_errmsg(llm));
        pl_llm_free(llm);
        return 1;
    }
    struct pl_sampling_params sp;
    pl_llm_default_sampling_params(llm, &sp);
    sp.temperature = 0;
    sp.max_tokens = 32;
    struct pl_prompt prompt = {argc > 2 ? argv[2] : "The capital of France is", NULL, 0};

    /* 1. the full output, for the check at the end */
    struct pl_outputs full;
    if (pl_llm_generate(llm, &prompt, 1, &sp, 1, &full) != PL_STATUS_OK) {
        fprintf(stderr, "stream: %s\n", pl_llm_errmsg(llm));
        pl_outputs_free(&full);
        pl_llm_free(llm);
        return 1;
    }

    /* 2. the same request, streamed */
    struct pl_llm_stream *s;
    if (pl_llm_submit(llm, "example-0", &prompt, &sp, &s) != PL_STATUS_OK) {
        fprintf(stderr, "stream: %s\n", pl_llm_errmsg(llm));
        pl_outputs_free(&full);
        pl_llm_free(llm);
        return 1;
    }
    struct pl_request_output acc;
    memset(&acc, 0, sizeof(acc));
    int n_deltas = 0;
    printf("%s", prompt.text);
    struct pl_request_output *d;
    while (pl_llm_stream_next(s, -1, &d) == PL_STATUS_OK && d) {
        n_deltas++;
        for (int i = 0; i < d->n_outputs; i++)
            fwrite(d->outputs[i].text, 1, d->outputs[i].text_len, stdout);
        fflush(stdout);
        pl_request_output_append(&acc, d);
        pl_request_output_free(d);
    }
    pl_llm_stream_free(s);
    printf("\n");

    int rc = 0;
    if (acc.error) {
        fprintf(stderr, "stream: the request failed: %s\n", acc.error);
        rc = 1;
    } else if (acc.n_outputs != 1 || strcmp(acc.outputs[0].text, full.items[0].outputs[0].text) ||
               acc.outputs[0].n_token_ids != full.items[0].outputs[0].n_token_ids) {
        fprintf(stderr, "stream: the streamed output differs from generate's\n");
        rc = 1;
    } else {
        printf("[%d deltas, %d tokens, finish_reason %s, time to first token %.3f s]\n",
               n_deltas, acc.outputs[0].n_token_ids, pl_finish_reason_str(acc.finish_reason),
               acc.metrics.first_token_time - acc.metrics.arrival_time);
    }
    pl_request_output_fini(&acc);
    pl_outputs_free(&full);
    pl_llm_free(llm);
    return rc;
}
