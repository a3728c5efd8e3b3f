/*
 * test_structured_gen.c -- constrained generation on a random-weight model (the
 * default tiny model: byte-level BPE, 960 ids) always yields text that parses and
 * validates against its schema: 200 generated schemas, sampled outputs, all in one
 * batch with unconstrained requests (whose tokens must not change because of their
 * neighbours). A random model is the hardest case for a constraint: nothing but the
 * mask keeps it on the grammar. The validator below is written for the keywords
 * the generator uses.
 */
#include "model/tiny_model.h"
#include "util/rng.h"

#include "pagellm.h"
#include "test.h"

#include <jansson.h>
#include <stdint.h>

#define N_SCHEMAS 200
#define N_FREE 8

static struct pl_rng g_rng;

static int rnd(int n)
{
    return (int)(pl_rng_next(&g_rng) % (uint64_t)n);
}

static json_t *gen_schema(int depth);

static json_t *gen_leaf(void)
{
    json_t *s = json_object();
    switch (rnd(9)) {
    case 0: {
        json_object_set_new(s, "type", json_string("string"));
        json_object_set_new(s, "maxLength", json_integer(rnd(8)));
        if (rnd(2))
            json_object_set_new(s, "minLength", json_integer(0));
        break;
    }
    case 1: {
        static const char *fmts[] = {"date", "uuid", "date-time", "email", "ipv4"};
        json_object_set_new(s, "type", json_string("string"));
        json_object_set_new(s, "format", json_string(fmts[rnd(5)]));
        break;
    }
    case 2:
        json_object_set_new(s, "type", json_string("string"));
        json_object_set_new(s, "pattern", json_string("^[a-c]{1,4}-[0-9]$"));
        break;
    case 3: {
        json_object_set_new(s, "type", json_string("integer"));
        int lo = rnd(200) - 100;
        if (rnd(2))
            json_object_set_new(s, "minimum", json_integer(lo));
        if (rnd(2))
            json_object_set_new(s, "maximum", json_integer(lo + rnd(1000)));
        break;
    }
    case 4:
        json_object_set_new(s, "type", json_string("number"));
        if (rnd(2)) {
            json_object_set_new(s, "minimum", json_integer(0));
            json_object_set_new(s, "maximum", json_integer(1 + rnd(50)));
        }
        break;
    case 5:
        json_object_set_new(s, "type", json_string(rnd(2) ? "boolean" : "null"));
        break;
    case 6: {
        json_t *e = json_array();
        json_array_append_new(e, json_string("red"));
        json_array_append_new(e, json_integer(rnd(10)));
        json_array_append_new(e, json_string("gr\"een"));
        json_object_set_new(s, "enum", e);
        break;
    }
    case 7:
        json_object_set_new(s, "const", json_string("k"));
        break;
    default: {
        json_t *a = json_array();
        json_array_append_new(a, json_pack("{s:s}", "type", "integer"));
        json_array_append_new(a, json_pack("{s:s, s:i}", "type", "string", "maxLength", 3));
        json_object_set_new(s, "anyOf", a);
        break;
    }
    }
    return s;
}

static json_t *gen_schema(int depth)
{
    int kind = depth > 0 ? rnd(3) : 2;
    if (kind == 0) {
        json_t *s = json_object(), *props = json_object(), *req = json_array();
        json_object_set_new(s, "type", json_string("object"));
        int n = 1 + rnd(3);
        for (int i = 0; i < n; i++) {
            char name[16];
            snprintf(name, sizeof(name), "p%d", i);
            json_object_set_new(props, name, gen_schema(depth - 1));
            if (rnd(2))
                json_array_append_new(req, json_string(name));
        }
        json_object_set_new(s, "properties", props);
        json_object_set_new(s, "required", req);
        json_object_set_new(s, "additionalProperties", json_false());
        return s;
    }
    if (kind == 1) {
        json_t *s = json_object();
        json_object_set_new(s, "type", json_string("array"));
        json_object_set_new(s, "items", gen_schema(depth - 1));
        int mn = rnd(2);
        json_object_set_new(s, "minItems", json_integer(mn));
        json_object_set_new(s, "maxItems", json_integer(mn + rnd(3)));
        return s;
    }
    return gen_leaf();
}

/* ---- the validator ---- */

static size_t utf8_len(const char *s, size_t n)
{
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        c += ((unsigned char)s[i] & 0xC0) != 0x80;
    return c;
}

static bool digits(const char *s, int n)
{
    for (int i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return false;
    return true;
}

static bool is_date(const char *s)
{
    if (strlen(s) < 10 || !digits(s, 4) || s[4] != '-' || !digits(s + 5, 2) || s[7] != '-' ||
        !digits(s + 8, 2))
        return false;
    int m = atoi(s + 5), d = atoi(s + 8);
    return m >= 1 && m <= 12 && d >= 1 && d <= 31;
}

static bool is_time(const char *s)
{
    if (!digits(s, 2) || s[2] != ':' || !digits(s + 3, 2) || s[5] != ':' || !digits(s + 6, 2))
        return false;
    if (atoi(s) > 23 || atoi(s + 3) > 59 || atoi(s + 6) > 59)
        return false;
    const char *p = s + 8;
    if (*p == '.') {
        p++;
        int n = 0;
        while (*p >= '0' && *p <= '9')
            p++, n++;
        if (n < 1 || n > 9)
            return false;
    }
    if (*p == 'Z')
        return p[1] == 0;
    return (*p == '+' || *p == '-') && digits(p + 1, 2) && p[3] == ':' && digits(p + 4, 2) &&
           p[6] == 0 && atoi(p + 1) <= 23 && atoi(p + 4) <= 59;
}

static bool is_format(const char *f, const char *s)
{
    if (!strcmp(f, "date"))
        return strlen(s) == 10 && is_date(s);
    if (!strcmp(f, "date-time"))
        return is_date(s) && s[10] == 'T' && is_time(s + 11);
    if (!strcmp(f, "uuid")) {
        if (strlen(s) != 36)
            return false;
        for (int i = 0; i < 36; i++) {
            bool dash = i == 8 || i == 13 || i == 18 || i == 23;
            if (dash != (s[i] == '-') || (!dash && !strchr("0123456789abcdefABCDEF", s[i])))
                return false;
        }
        return true;
    }
    if (!strcmp(f, "email")) {
        const char *at = strchr(s, '@');
        const char *dot = at ? strrchr(at, '.') : NULL;
        return at && at > s && dot && dot > at + 1 && strlen(dot + 1) >= 2;
    }
    if (!strcmp(f, "ipv4")) {
        int a[4], n = 0;
        char tail;
        if (sscanf(s, "%d.%d.%d.%d%n%c", &a[0], &a[1], &a[2], &a[3], &n, &tail) != 4)
            return false;
        for (int i = 0; i < 4; i++)
            if (a[i] < 0 || a[i] > 255)
                return false;
        return s[n] == 0;
    }
    return false;
}

static bool validate(const json_t *s, const json_t *v, const char **why)
{
    const json_t *x;
    if ((x = json_object_get(s, "const")))
        return json_equal(x, v) ? true : (*why = "const", false);
    if ((x = json_object_get(s, "enum"))) {
        for (size_t i = 0; i < json_array_size(x); i++)
            if (json_equal(json_array_get(x, i), v))
                return true;
        return *why = "enum", false;
    }
    if ((x = json_object_get(s, "anyOf"))) {
        for (size_t i = 0; i < json_array_size(x); i++)
            if (validate(json_array_get(x, i), v, why))
                return true;
        return *why = "anyOf", false;
    }
    const char *t = json_string_value(json_object_get(s, "type"));
    if (!strcmp(t, "string")) {
        if (!json_is_string(v))
            return *why = "string type", false;
        const char *str = json_string_value(v);
        size_t n = utf8_len(str, json_string_length(v));
        if ((x = json_object_get(s, "maxLength")) && n > (size_t)json_integer_value(x))
            return *why = "maxLength", false;
        if ((x = json_object_get(s, "format")) && !is_format(json_string_value(x), str))
            return *why = "format", false;
        if (json_object_get(s, "pattern")) { /* ^[a-c]{1,4}-[0-9]$ */
            size_t k = 0;
            while (str[k] >= 'a' && str[k] <= 'c')
                k++;
            if (k < 1 || k > 4 || str[k] != '-' || !digits(str + k + 1, 1) || str[k + 2])
                return *why = "pattern", false;
        }
        return true;
    }
    if (!strcmp(t, "integer") || !strcmp(t, "number")) {
        if (!strcmp(t, "integer") ? !json_is_integer(v) : !json_is_number(v))
            return *why = "numeric type", false;
        double d = json_number_value(v);
        if ((x = json_object_get(s, "minimum")) && d < json_number_value(x))
            return *why = "minimum", false;
        if ((x = json_object_get(s, "maximum")) && d > json_number_value(x))
            return *why = "maximum", false;
        return true;
    }
    if (!strcmp(t, "boolean"))
        return json_is_boolean(v) ? true : (*why = "boolean", false);
    if (!strcmp(t, "null"))
        return json_is_null(v) ? true : (*why = "null", false);
    if (!strcmp(t, "array")) {
        if (!json_is_array(v))
            return *why = "array type", false;
        size_t n = json_array_size(v);
        if (n < (size_t)json_integer_value(json_object_get(s, "minItems")) ||
            n > (size_t)json_integer_value(json_object_get(s, "maxItems")))
            return *why = "minItems / maxItems", false;
        for (size_t i = 0; i < n; i++)
            if (!validate(json_object_get(s, "items"), json_array_get(v, i), why))
                return false;
        return true;
    }
    if (!json_is_object(v))
        return *why = "object type", false;
    const json_t *props = json_object_get(s, "properties");
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)v, key, val)
    {
        const json_t *ps = json_object_get(props, key);
        if (!ps)
            return *why = "additionalProperties", false;
        if (!validate(ps, val, why))
            return false;
    }
    const json_t *req = json_object_get(s, "required");
    for (size_t i = 0; i < json_array_size(req); i++)
        if (!json_object_get(v, json_string_value(json_array_get(req, i))))
            return *why = "required", false;
    return true;
}

static struct pl_llm *open_default(const char *dir)
{
    struct pl_err err;
    if (pl_tiny_model_write("default", dir, &err) != PL_STATUS_OK)
        return NULL;
    struct pl_llm_params p;
    pl_llm_params_default(&p);
    p.model = dir;
    p.max_num_seqs = 64;
    p.max_model_len = 2048;
    p.kv_cache_bytes = (size_t)64 << 20;
    p.n_threads = 1;
    struct pl_llm *llm;
    if (pl_llm_new(&p, &llm) != PL_STATUS_OK) {
        fprintf(stderr, "pl_llm_new: %s\n", pl_llm_errmsg(llm));
        pl_llm_free(llm);
        return NULL;
    }
    return llm;
}

static void test_generated_schemas(void)
{
    char dir[] = "/tmp/pl_structured_XXXXXX";
    REQUIRE(mkdtemp(dir));
    struct pl_llm *llm = open_default(dir);
    REQUIRE(llm);
    pl_rng_seed(&g_rng, 2026);
    int n = N_SCHEMAS + N_FREE;
    struct pl_prompt *prompts = calloc((size_t)n, sizeof(*prompts));
    struct pl_sampling_params *sp = calloc((size_t)n, sizeof(*sp));
    json_t **schemas = calloc(N_SCHEMAS, sizeof(json_t *));
    char **texts = calloc(N_SCHEMAS, sizeof(char *));
    REQUIRE(prompts && sp && schemas && texts);
    for (int i = 0; i < n; i++) {
        pl_llm_default_sampling_params(llm, &sp[i]);
        sp[i].temperature = 1.0f;
        sp[i].has_seed = true;
        sp[i].seed = 1000 + (uint64_t)i;
        sp[i].max_tokens = 1500;
        prompts[i].text = i % 3 ? "Answer in JSON:" : "Hello";
        if (i < N_SCHEMAS) {
            schemas[i] = gen_schema(1 + rnd(3));
            texts[i] = json_dumps(schemas[i], JSON_COMPACT);
            sp[i].constraint_kind = PL_CONSTRAINT_JSON;
            sp[i].constraint = texts[i];
        } else {
            sp[i].max_tokens = 30;
        }
    }
    struct pl_outputs out = {0};
    pl_status st = pl_llm_generate(llm, prompts, n, sp, n, &out);
    CHECKF(st == PL_STATUS_OK, "%s", pl_llm_errmsg(llm));
    REQUIRE(out.n == n);
    int n_bad = 0, total_tokens = 0;
    for (int i = 0; i < N_SCHEMAS; i++) {
        const struct pl_completion_output *o = &out.items[i].outputs[0];
        total_tokens += o->n_token_ids;
        json_error_t je;
        json_t *v = json_loads(o->text, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
        const char *why = "parse";
        bool ok = o->finish_reason == PL_FINISH_STOP && v && validate(schemas[i], v, &why);
        if (!ok && n_bad++ < 5)
            fprintf(stderr, "schema %d %s\n  output (%s, %d tokens): %s\n  failed: %s %s\n", i,
                    texts[i], pl_finish_reason_str(o->finish_reason), o->n_token_ids, o->text,
                    why, v ? "" : je.text);
        if (getenv("PL_TEST_VERBOSE") && i < 12)
            fprintf(stderr, "schema %s\n  -> %s\n", texts[i], o->text);
        json_decref(v);
    }
    CHECKF(n_bad == 0, "%d of %d outputs do not validate", n_bad, N_SCHEMAS);
    /* a random model does not stop at once: the outputs have substance */
    CHECKF(total_tokens > 5 * N_SCHEMAS, "only %d tokens in all", total_tokens);

    /* the free requests gave the same tokens as alone */
    struct pl_outputs alone = {0};
    REQUIRE(pl_llm_generate(llm, prompts + N_SCHEMAS, N_FREE, sp + N_SCHEMAS, N_FREE, &alone) ==
            PL_STATUS_OK);
    for (int i = 0; i < N_FREE; i++) {
        const struct pl_completion_output *a = &alone.items[i].outputs[0];
        const struct pl_completion_output *b = &out.items[N_SCHEMAS + i].outputs[0];
        CHECK(a->n_token_ids == b->n_token_ids &&
              !memcmp(a->token_ids, b->token_ids, sizeof(int32_t) * (size_t)a->n_token_ids));
    }
    pl_outputs_free(&alone);

    /* max_tokens cuts a constrained output: finish_reason length */
    struct pl_sampling_params cut;
    pl_llm_default_sampling_params(llm, &cut);
    cut.max_tokens = 3;
    cut.constraint_kind = PL_CONSTRAINT_JSON;
    cut.constraint = "{\"type\": \"array\", \"items\": {\"type\": \"string\"}, \"minItems\": 5}";
    struct pl_outputs co = {0};
    REQUIRE(pl_llm_generate(llm, prompts, 1, &cut, 1, &co) == PL_STATUS_OK);
    CHECK(co.items[0].outputs[0].finish_reason == PL_FINISH_LENGTH);
    CHECK(co.items[0].outputs[0].text[0] == '[');
    pl_outputs_free(&co);

    /* n > 1: every sample follows the grammar on its own */
    struct pl_sampling_params many;
    pl_llm_default_sampling_params(llm, &many);
    many.n = 4;
    many.temperature = 1.0f;
    many.max_tokens = 50;
    many.constraint_kind = PL_CONSTRAINT_CHOICE;
    many.constraint = "[\"alpha\", \"beta\", \"gamma delta\"]";
    REQUIRE(pl_llm_generate(llm, prompts, 1, &many, 1, &co) == PL_STATUS_OK);
    REQUIRE(co.items[0].n_outputs == 4);
    for (int k = 0; k < 4; k++) {
        const char *t = co.items[0].outputs[k].text;
        CHECKF(!strcmp(t, "alpha") || !strcmp(t, "beta") || !strcmp(t, "gamma delta"), "'%s'", t);
    }
    pl_outputs_free(&co);

    /* a bad constraint is refused at add time, naming the keyword */
    many.n = 1;
    many.constraint_kind = PL_CONSTRAINT_JSON;
    many.constraint = "{\"type\": \"string\", \"format\": \"color\"}";
    CHECK(pl_llm_generate(llm, prompts, 1, &many, 1, &co) == PL_STATUS_INVALID_ARGUMENT);
    CHECKF(strstr(pl_llm_errmsg(llm), "color") != NULL, "%s", pl_llm_errmsg(llm));
    pl_outputs_free(&co);

    pl_outputs_free(&out);
    for (int i = 0; i < N_SCHEMAS; i++) {
        json_decref(schemas[i]);
        free(texts[i]);
    }
    free(schemas);
    free(texts);
    free(prompts);
    free(sp);
    pl_llm_free(llm);
    pl_test_rm_tree(dir);
}

int main(void)
{
    PL_RUN(test_generated_schemas);
    return pl_test_summary();
}
