/*
 * openai_fixture.h -- the OpenAI layer over the tiny tokenizer, for the unit test
 * and the fuzz target of request parsing (header-only, static).
 *
 * openai_fixture_new writes a tiny byte-level tokenizer of `vocab` ids (ChatML
 * template) into a temporary directory, loads it, removes the files, and opens
 * pl_openai serving the names {"tiny", alias} from model_root. Set-up failure
 * aborts: nothing can be tested without it.
 */
#ifndef PL_TESTS_OPENAI_FIXTURE_H
#define PL_TESTS_OPENAI_FIXTURE_H

#include "model/tiny_tokenizer.h"
#include "server/openai.h"
#include "tokenizer/tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static struct pl_openai *openai_fixture_new(int vocab, const char *alias, const char *model_root,
                                            int max_model_len, struct pl_tokenizer **tok)
{
    char dir[] = "/tmp/pl_openai_fixture_XXXXXX";
    struct pl_err err = {0};
    struct pl_tiny_tokenizer_info info;
    if (!mkdtemp(dir) || pl_tiny_tokenizer_write(dir, vocab, &info, &err) != PL_STATUS_OK ||
        pl_tokenizer_load(dir, tok, &err) != PL_STATUS_OK) {
        fprintf(stderr, "openai fixture: %s\n", err.msg);
        abort();
    }
    char path[512];
    snprintf(path, sizeof(path), "%s/tokenizer.json", dir);
    unlink(path);
    snprintf(path, sizeof(path), "%s/tokenizer_config.json", dir);
    unlink(path);
    rmdir(dir);
    const char *names[] = {"tiny", alias};
    struct pl_openai_params p = {.served_names = names,
                                 .n_served_names = 2,
                                 .model_root = model_root,
                                 .max_model_len = max_model_len,
                                 .tok = *tok};
    struct pl_openai *oai = NULL;
    if (pl_openai_new(&p, &oai, &err) != PL_STATUS_OK) {
        fprintf(stderr, "openai fixture: %s\n", err.msg);
        abort();
    }
    return oai;
}

#endif
