/*
 * quickstart.c -- the C twin of vLLM's quick-start (offline batched inference):
 *
 *     llm = LLM(model=...)
 *     sampling_params = SamplingParams(temperature=0.7, top_p=0.95, max_tokens=100)
 *     outputs = llm.generate(prompts, sampling_params)
 *
 * usage: example_quickstart MODEL_DIR
 * Uses only the public API (include/pagellm.h).
 */
#include "pagellm.h"

#include <stdio.h>

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s MODEL_DIR\n", argv[0]);
        return 2;
    }
    const char *texts[] = {
        "The best way to learn about AI is",
        "San Francisco is a city known for",
        "What is the capital of France?",
        "Write a short story about a robot who discovers music.",
    };
    enum { N = sizeof(texts) / sizeof(texts[0]) };

    struct pl_llm_params lp;
    pl_llm_params_default(&lp);
    lp.model = argv[1];
    struct pl_llm *llm;
    if (pl_llm_new(&lp, &llm) != PL_STATUS_OK) {
        fprintf(stderr, "pagellm: %s\n", pl_llm_errmsg(llm));
        pl_llm_free(llm);
        return 1;
    }

    struct pl_sampling_params sp;
    pl_sampling_params_default(&sp);
    sp.temperature = 0.7f;
    sp.top_p = 0.95f;
    sp.max_tokens = 100;

    struct pl_prompt prompts[N];
    for (int i = 0; i < N; i++)
        prompts[i] = (struct pl_prompt){texts[i], NULL, 0};

    struct pl_outputs out;
    if (pl_llm_generate(llm, prompts, N, &sp, 1, &out) != PL_STATUS_OK) {
        fprintf(stderr, "pagellm: %s\n", pl_llm_errmsg(llm));
        pl_outputs_free(&out); /* outputs of the prompts that ran, when some failed */
        pl_llm_free(llm);
        return 1;
    }
    for (int i = 0; i < out.n; i++) {
        const struct pl_request_output *o = &out.items[i];
        printf("Prompt: \"%s\", Generated text: \"%s\"\n", o->prompt, o->outputs[0].text);
    }
    pl_outputs_free(&out);
    pl_llm_free(llm);
    return 0;
}
