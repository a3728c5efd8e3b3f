/*
 * embeddings.c -- /v1/embeddings for decoder models (vLLM's --task embed).
 *
 * Owns: the embeddings request kind behind the generation interface
 * (openai_ext.h): the body (OpenAI's fields plus vLLM's add_special_tokens,
 * truncate_prompt_tokens and normalize), one pooling request per input
 * (pl_async_engine_submit_pooling: batched by the engine with everything
 * else), and the response (a list of embedding objects, each a float array
 * or, encoding_format "base64", the vector's little-endian float32 bytes in
 * base64, as OpenAI sends them). The vectors are the engine's pooled final
 * hidden states (pagellm.h: struct pl_pooling_params) with the server's
 * pooling (--pooling / --override-pooler-config); their size is the model's
 * hidden size, so `dimensions` is refused. Embeddings never stream.
 */
#include "server/openai_ext.h"

#include "server/serving_log.h"
#include "util/json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct emb {
    struct pl_openai *o;
    char *model;
    char id[64];
    long long created;
    struct pl_openai_request in;     /* the inputs (prompts) */
    struct pl_pooling_params pool;
    bool base64;
    struct pl_async_request **reqs; /* [n_reqs], one per input */
    int n_reqs;
    bool *done;                      /* [n_inputs] finished delta taken */
    float **vecs;                    /* [n_inputs] */
    int *n_vec;
    int fail_status;                 /* 0, or an engine refusal's status */
    char *fail_msg;
    long long prompt_tokens;
    bool logged;
    double t_submit;
};

static const char *const emb_keys[] = {"model", "input", "encoding_format", "dimensions", "user",
                                       "add_special_tokens", "truncate_prompt_tokens",
                                       "normalize", "request_id", "priority", NULL};

static void emb_free(void *state);

static pl_status parse(struct emb *m, const json_t *root, struct pl_openai_error *e)
{
    struct pl_openai *o = m->o;
    pl_status st = pl_openai_check_model_field(o, root, &m->model, e);
    if (st != PL_STATUS_OK)
        return st;
    json_t *v;
    if ((v = json_object_get(root, "dimensions")) && !json_is_null(v))
        return pl_openai_fail(e, 400, "dimensions",
                              "dimensions: this model's embeddings have a fixed size (its hidden "
                              "size); reduced dimensions are not supported");
    m->base64 = false;
    if ((v = json_object_get(root, "encoding_format")) && !json_is_null(v)) {
        if (!json_is_string(v) || (strcmp(json_string_value(v), "float") &&
                                   strcmp(json_string_value(v), "base64")))
            return pl_openai_fail(e, 400, "encoding_format",
                                  "encoding_format: expected \"float\" or \"base64\"");
        m->base64 = !strcmp(json_string_value(v), "base64");
    }
    if ((v = json_object_get(root, "user")) && !json_is_null(v) && !json_is_string(v))
        return pl_openai_fail(e, 400, "user", "user: expected a string");
    bool add_special = true;
    if ((v = json_object_get(root, "add_special_tokens")) && !json_is_null(v)) {
        if (!json_is_boolean(v))
            return pl_openai_fail(e, 400, "add_special_tokens",
                                  "add_special_tokens: expected a boolean, got %s",
                                  pl_json_type_name(v));
        add_special = json_is_true(v);
    }
    m->pool = pl_openai_pooling(o);
    if ((v = json_object_get(root, "normalize")) && !json_is_null(v)) {
        if (!json_is_boolean(v))
            return pl_openai_fail(e, 400, "normalize", "normalize: expected a boolean, got %s",
                                  pl_json_type_name(v));
        m->pool.normalize = json_is_true(v);
    }
    long long truncate = 0; /* 0: none */
    if ((v = json_object_get(root, "truncate_prompt_tokens")) && !json_is_null(v)) {
        if (!json_is_integer(v) || (json_integer_value(v) < 1 && json_integer_value(v) != -1))
            return pl_openai_fail(e, 400, "truncate_prompt_tokens",
                                  "truncate_prompt_tokens: expected an integer >= 1 (or -1: the "
                                  "context length)");
        truncate = json_integer_value(v);
    }
    pl_sampling_params_default(&m->in.sp);
    st = pl_openai_parse_input(o, json_object_get(root, "input"), add_special, "input", &m->in, e);
    if (st != PL_STATUS_OK)
        return st;
    int max_len = pl_openai_max_model_len(o);
    for (int i = 0; i < m->in.n_prompts; i++) {
        struct pl_openai_prompt *p = &m->in.prompts[i];
        long long keep = truncate == -1 ? max_len - 1 : truncate;
        if (truncate && p->n_ids > keep) { /* vLLM keeps the last tokens */
            memmove(p->ids, p->ids + (p->n_ids - keep), sizeof(int32_t) * (size_t)keep);
            p->n_ids = (int)keep;
        }
        if (p->n_ids == 0)
            return pl_openai_fail(e, 400, "input", "input[%d]: the input is empty (no tokens)", i);
        /* one position is left for the token that ends the prefill-only request */
        if (p->n_ids >= max_len)
            return pl_openai_fail(e, 400, "input",
                                  "This model's maximum context length is %d tokens. However, "
                                  "you requested %d tokens in the input for embedding "
                                  "generation. Please reduce the length of the input.",
                                  max_len - 1, p->n_ids);
        m->prompt_tokens += p->n_ids;
    }
    return PL_STATUS_OK;
}

static pl_status emb_submit(void *state, pl_async_notify_fn notify, void *user,
                            struct pl_openai_error *e)
{
    struct emb *m = state;
    struct pl_async_engine *ae = pl_openai_engine(m->o);
    for (int i = 0; i < m->in.n_prompts; i++) {
        const struct pl_openai_prompt *p = &m->in.prompts[i];
        struct pl_err err = {0};
        pl_status st = ae ? pl_async_engine_submit_pooling(ae, p->ids, p->n_ids, &m->pool, notify,
                                                           user, &m->reqs[i], &err)
                          : pl_err_set(&err, PL_STATUS_ABORTED, "no engine");
        if (st != PL_STATUS_OK) {
            for (int k = 0; k < m->n_reqs; k++) {
                pl_async_request_abort(m->reqs[k]);
                pl_async_request_release(m->reqs[k]);
            }
            m->n_reqs = 0;
            memset(e, 0, sizeof(*e));
            return pl_openai_fail(e, st == PL_STATUS_INVALID_ARGUMENT ? 400 : 503, NULL, "%s",
                                  err.msg);
        }
        m->n_reqs = i + 1;
    }
    int max_log_len;
    if (pl_openai_log_requests(m->o, &max_log_len)) {
        char params[96];
        snprintf(params, sizeof(params), "{\"pooling\":\"%s\",\"normalize\":%s}",
                 m->pool.type == PL_POOLING_MEAN ? "mean" : "last",
                 m->pool.normalize ? "true" : "false");
        const struct pl_openai_prompt *p0 = &m->in.prompts[0];
        pl_serving_log_received(m->id, "/v1/embeddings", m->in.n_prompts, m->prompt_tokens,
                                params, p0->text, p0->text ? strlen(p0->text) : 0, max_log_len);
        m->logged = true;
        m->t_submit = pl_async_now();
    }
    return PL_STATUS_OK;
}

static bool emb_is_stream(const void *state)
{
    return false;
}

static bool emb_produce(void *state, struct pl_sbuf *out)
{
    return false; /* never a stream */
}

/* Takes every delta that arrived; true once every input's request finished. */
static bool drain(struct emb *m)
{
    bool all = true;
    for (int i = 0; i < m->n_reqs; i++) {
        if (m->done[i])
            continue;
        struct pl_request_output *d;
        while (!m->done[i] && (d = pl_async_request_pop(m->reqs[i])) != NULL) {
            if (d->error && !m->fail_status) {
                m->fail_status = d->error_status == PL_STATUS_INVALID_ARGUMENT ? 400
                                 : d->error_status == PL_STATUS_UNSUPPORTED   ? 400
                                                                               : 503;
                m->fail_msg = strdup(d->error);
            }
            if (d->finished) {
                m->done[i] = true;
                m->vecs[i] = d->embedding; /* taken */
                m->n_vec[i] = d->n_embedding;
                d->embedding = NULL;
            }
            pl_request_output_free(d);
        }
        if (!m->done[i] && pl_async_request_is_finished(m->reqs[i])) {
            /* finished without a delta left to take (out of memory routing it) */
            d = pl_async_request_pop(m->reqs[i]);
            if (d) {
                if (d->finished) {
                    m->vecs[i] = d->embedding;
                    m->n_vec[i] = d->n_embedding;
                    d->embedding = NULL;
                }
                pl_request_output_free(d);
            }
            m->done[i] = true;
        }
        all &= m->done[i];
    }
    return all;
}

static void base64_append(struct pl_sbuf *b, const unsigned char *p, size_t n)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)p[i] << 16;
        if (i + 1 < n)
            v |= (unsigned)p[i + 1] << 8;
        if (i + 2 < n)
            v |= p[i + 2];
        char q[4] = {tab[(v >> 18) & 63], tab[(v >> 12) & 63], i + 1 < n ? tab[(v >> 6) & 63] : '=',
                     i + 2 < n ? tab[v & 63] : '='};
        pl_sbuf_append(b, q, 4);
    }
}

/* The vector's little-endian float32 bytes in base64 (OpenAI's encoding_format "base64"). */
static json_t *vec_base64(const float *v, int n)
{
    unsigned char *bytes = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    if (!bytes)
        return NULL;
    for (int k = 0; k < n; k++) {
        uint32_t u;
        memcpy(&u, &v[k], sizeof(u));
        for (int j = 0; j < 4; j++)
            bytes[4 * k + j] = (unsigned char)(u >> (8 * j));
    }
    struct pl_sbuf b = {0};
    base64_append(&b, bytes, sizeof(float) * (size_t)n);
    free(bytes);
    json_t *s = b.failed ? NULL : json_stringn(b.data ? b.data : "", b.len);
    pl_sbuf_fini(&b);
    return s;
}

static bool emb_result(void *state, json_t **resp, struct pl_openai_error *e)
{
    struct emb *m = state;
    *resp = NULL;
    if (!drain(m))
        return false;
    memset(e, 0, sizeof(*e));
    if (m->fail_status) {
        pl_openai_fail(e, m->fail_status, NULL, "%s", m->fail_msg ? m->fail_msg : "engine error");
        return true;
    }
    json_t *data = json_array();
    for (int i = 0; i < m->in.n_prompts; i++) {
        if (!m->vecs[i]) {
            json_decref(data);
            pl_openai_fail(e, 503, NULL, "the request was aborted before its input %d was "
                                         "embedded", i);
            return true;
        }
        json_t *item = json_object();
        json_object_set_new(item, "index", json_integer(i));
        json_object_set_new(item, "object", json_string("embedding"));
        json_t *vec;
        if (m->base64) {
            vec = vec_base64(m->vecs[i], m->n_vec[i]);
        } else {
            vec = json_array();
            for (int k = 0; vec && k < m->n_vec[i]; k++)
                json_array_append_new(vec, json_real(m->vecs[i][k]));
        }
        if (!vec) {
            json_decref(item);
            json_decref(data);
            pl_openai_fail(e, 503, NULL, "out of memory");
            return true;
        }
        json_object_set_new(item, "embedding", vec);
        json_array_append_new(data, item);
    }
    json_t *root = json_object();
    json_object_set_new(root, "id", json_string(m->id));
    json_object_set_new(root, "object", json_string("list"));
    json_object_set_new(root, "created", json_integer(m->created));
    json_object_set_new(root, "model", json_string(m->model));
    json_object_set_new(root, "data", data);
    json_t *usage = json_object();
    json_object_set_new(usage, "prompt_tokens", json_integer(m->prompt_tokens));
    json_object_set_new(usage, "total_tokens", json_integer(m->prompt_tokens));
    json_object_set_new(root, "usage", usage);
    *resp = root;
    return true;
}

static bool emb_failed(const void *state, struct pl_openai_error *e)
{
    const struct emb *m = state;
    if (!m->fail_status)
        return false;
    memset(e, 0, sizeof(*e));
    pl_openai_fail(e, m->fail_status, NULL, "%s", m->fail_msg ? m->fail_msg : "engine error");
    return true;
}

static void emb_abort(void *state)
{
    struct emb *m = state;
    for (int i = 0; i < m->n_reqs; i++)
        if (!m->done[i])
            pl_async_request_abort(m->reqs[i]);
}

static void emb_free(void *state)
{
    struct emb *m = state;
    if (!m)
        return;
    if (m->logged) {
        bool ok = !m->fail_status;
        for (int i = 0; i < m->in.n_prompts && ok; i++)
            ok = m->vecs && m->vecs[i];
        pl_serving_log_finished(m->id, ok ? "completed" : m->fail_status ? "failed" : "aborted",
                                m->prompt_tokens, 0, pl_async_now() - m->t_submit);
    }
    emb_abort(m);
    for (int i = 0; i < m->n_reqs; i++)
        pl_async_request_release(m->reqs[i]);
    for (int i = 0; m->vecs && i < m->in.n_prompts; i++)
        free(m->vecs[i]);
    free(m->vecs);
    free(m->n_vec);
    free(m->done);
    free(m->reqs);
    free(m->fail_msg);
    free(m->model);
    pl_openai_request_fini(&m->in);
    free(m);
}

static const struct pl_openai_gen_ops emb_ops = {
    "/v1/embeddings", emb_submit, emb_is_stream, emb_produce, emb_result, emb_failed,
    emb_abort,        emb_free};

pl_status pl_openai_embedding_new(struct pl_openai *o, const char *body, size_t len,
                                  void **state, const struct pl_openai_gen_ops **ops,
                                  struct pl_openai_error *e)
{
    *state = NULL;
    *ops = &emb_ops;
    struct emb *m = calloc(1, sizeof(*m));
    if (!m)
        return pl_openai_fail(e, 503, NULL, "out of memory");
    m->o = o;
    json_t *root = pl_openai_load_body(body, len, e);
    pl_status st = root ? PL_STATUS_OK : PL_STATUS_INVALID_ARGUMENT;
    if (st == PL_STATUS_OK) {
        pl_openai_ignore_unknown(root, emb_keys, false);
        st = parse(m, root, e);
    }
    json_decref(root);
    if (st == PL_STATUS_OK) {
        int n = m->in.n_prompts;
        m->reqs = calloc((size_t)n, sizeof(*m->reqs));
        m->done = calloc((size_t)n, sizeof(*m->done));
        m->vecs = calloc((size_t)n, sizeof(*m->vecs));
        m->n_vec = calloc((size_t)n, sizeof(*m->n_vec));
        if (!m->reqs || !m->done || !m->vecs || !m->n_vec)
            st = pl_openai_fail(e, 503, NULL, "out of memory");
    }
    if (st != PL_STATUS_OK) {
        emb_free(m);
        return st;
    }
    pl_openai_make_id(o, "embd", m->id, sizeof(m->id));
    m->created = (long long)time(NULL);
    *state = m;
    return PL_STATUS_OK;
}
