/*
 * test_grammar.c -- the grammar compiler (GBNF, regex, choice, JSON Schema), the
 * automaton, and token masks checked token by token against a brute-force
 * check of every vocabulary entry.
 */
#include "engine/sampling_params.h"
#include "grammar/grammar.h"
#include "tokenizer/tokenizer.h"
#include "util/rng.h"

#include "test.h"

#include <jansson.h>
#include <stdint.h>

#define EOS_ID 7

/* A synthetic vocabulary: every single byte (id = byte + 0..255, except EOS_ID which is
 * eos), then strings over JSON-ish characters, UTF-8 pieces and broken sequences. */
static struct pl_grammar_vocab *synthetic_vocab(int n_extra, uint64_t seed)
{
    static const char *alpha[] = {"{", "}", "[", "]", "\"", ":", ",", " ", "a", "b", "x", "0",
                                  "1", "9", "-", ".", "e", "\\", "n", "t", "r", "u", "l", "f",
                                  "s", "true", "false", "null", "\xce\xb2", "\xce", "\xb2", "T",
                                  "Z", "@", "_", "\n", "\"a\"", "\":", "\",\"", "{\"", "\"}"};
    int n_alpha = (int)(sizeof(alpha) / sizeof(alpha[0]));
    int n = 256 + n_extra;
    char **toks = calloc((size_t)n, sizeof(char *));
    int *lens = calloc((size_t)n, sizeof(int));
    struct pl_rng rng;
    pl_rng_seed(&rng, seed);
    for (int i = 0; i < 256; i++) {
        toks[i] = malloc(1);
        toks[i][0] = (char)i;
        lens[i] = 1;
    }
    for (int i = 256; i < n; i++) {
        char buf[64];
        int len = 0, parts = 1 + (int)(pl_rng_next(&rng) % 4);
        for (int k = 0; k < parts; k++) {
            const char *a = alpha[pl_rng_next(&rng) % (uint64_t)n_alpha];
            size_t al = strlen(a);
            if (len + (int)al >= (int)sizeof(buf))
                break;
            memcpy(buf + len, a, al);
            len += (int)al;
        }
        toks[i] = malloc((size_t)len);
        memcpy(toks[i], buf, (size_t)len);
        lens[i] = len;
    }
    lens[1] = -1; /* a hole (byte 0x01): never allowed */
    int32_t eos = EOS_ID;
    struct pl_grammar_vocab *v = NULL;
    struct pl_err err;
    pl_status st = pl_grammar_vocab_new(n, (const char *const *)toks, lens, &eos, 1, &v, &err);
    if (st != PL_STATUS_OK)
        fprintf(stderr, "vocab: %s\n", err.msg);
    for (int i = 0; i < n; i++)
        free(toks[i]);
    free(toks);
    free(lens);
    return v;
}

static struct pl_grammar_matcher *matcher(struct pl_grammar_cache *c, enum pl_constraint_kind k,
                                          const char *text)
{
    struct pl_grammar_matcher *m = NULL;
    struct pl_err err;
    if (pl_grammar_matcher_new(c, k, text, NULL, &m, &err) != PL_STATUS_OK)
        fprintf(stderr, "matcher: %s\n", err.msg);
    return m;
}

/* Does the whole string s match (accepted and accepting)? */
static bool matches(struct pl_grammar_cache *c, enum pl_constraint_kind k, const char *text,
                    const char *s)
{
    struct pl_grammar_matcher *m = matcher(c, k, text);
    if (!m)
        return false;
    bool ok = pl_grammar_matcher_accept_bytes(m, s, strlen(s)) &&
              pl_grammar_matcher_is_accepting(m);
    pl_grammar_matcher_free(m);
    return ok;
}

static struct pl_grammar_vocab *g_vocab;
static struct pl_grammar_cache *g_cache;

static void test_gbnf(void)
{
    const char *g = "# a comment\nroot ::= \"a\" [b-d]+ tail?\ntail ::= \"x\" | \"yz\"\n";
    CHECK(matches(g_cache, PL_CONSTRAINT_GRAMMAR, g, "ab"));
    CHECK(matches(g_cache, PL_CONSTRAINT_GRAMMAR, g, "abcdx"));
    CHECK(matches(g_cache, PL_CONSTRAINT_GRAMMAR, g, "adyz"));
    CHECK(!matches(g_cache, PL_CONSTRAINT_GRAMMAR, g, "a"));
    CHECK(!matches(g_cache, PL_CONSTRAINT_GRAMMAR, g, "abey"));
    CHECK(!matches(g_cache, PL_CONSTRAINT_GRAMMAR, g, "aby"));
    const char *rep = "root ::= (\"ab\"){2,3} \"c\"{0,2}";
    CHECK(!matches(g_cache, PL_CONSTRAINT_GRAMMAR, rep, "ab"));
    CHECK(matches(g_cache, PL_CONSTRAINT_GRAMMAR, rep, "abab"));
    CHECK(matches(g_cache, PL_CONSTRAINT_GRAMMAR, rep, "abababcc"));
    CHECK(!matches(g_cache, PL_CONSTRAINT_GRAMMAR, rep, "abababab"));
    CHECK(!matches(g_cache, PL_CONSTRAINT_GRAMMAR, rep, "ababccc"));
    /* rules continue across lines; an alternative may start a line */
    const char *ml = "root ::= item\n  | \"(\" root \")\"\nitem ::= [0-9]";
    CHECK(matches(g_cache, PL_CONSTRAINT_GRAMMAR, ml, "((7))"));
    CHECK(!matches(g_cache, PL_CONSTRAINT_GRAMMAR, ml, "((7)"));
    /* a long repetition runs at a fixed stack depth (tail calls) */
    struct pl_grammar_matcher *m = matcher(g_cache, PL_CONSTRAINT_GRAMMAR, "root ::= [a]*");
    REQUIRE(m);
    for (int i = 0; i < 20000; i++)
        if (!pl_grammar_matcher_accept_bytes(m, "a", 1))
            break;
    CHECK(pl_grammar_matcher_is_accepting(m));
    pl_grammar_matcher_free(m);
}

static void expect_error(enum pl_constraint_kind k, const char *text, const char *needle)
{
    struct pl_err err;
    pl_err_clear(&err);
    pl_status st = pl_grammar_check(k, text, NULL, &err);
    CHECKF(st == PL_STATUS_INVALID_ARGUMENT, "'%s' compiled", text);
    CHECKF(strstr(err.msg, needle) != NULL, "'%s': message '%s' lacks '%s'", text, err.msg,
           needle);
}

static void test_errors(void)
{
    expect_error(PL_CONSTRAINT_GRAMMAR, "root ::= foo", "'foo'");
    expect_error(PL_CONSTRAINT_GRAMMAR, "start ::= \"a\"", "root");
    expect_error(PL_CONSTRAINT_GRAMMAR, "root ::= root \"a\" | \"b\"", "left-recursive");
    expect_error(PL_CONSTRAINT_GRAMMAR, "root ::= x? root \"a\"\nx ::= \"b\"", "left-recursive");
    expect_error(PL_CONSTRAINT_GRAMMAR, "root ::= \"abc", "unterminated");
    expect_error(PL_CONSTRAINT_GRAMMAR, "root ::= [z-a]", "out of order");
    expect_error(PL_CONSTRAINT_GRAMMAR, "root ::= \"a\"{5,2}", "repetition");
    expect_error(PL_CONSTRAINT_GRAMMAR, "root ::= \"a\"\nroot ::= \"b\"", "twice");
    expect_error(PL_CONSTRAINT_REGEX, "(a)\\1", "backreferences");
    expect_error(PL_CONSTRAINT_REGEX, "a(?=b)", "lookaround");
    expect_error(PL_CONSTRAINT_REGEX, "(ab", "unclosed");
    expect_error(PL_CONSTRAINT_JSON, "{\"type\": \"string\", \"format\": \"ipv6\"}", "ipv6");
    expect_error(PL_CONSTRAINT_JSON, "{\"not\": {\"type\": \"string\"}}", "'not'");
    expect_error(PL_CONSTRAINT_JSON, "{\"type\": \"number\", \"multipleOf\": 3}", "multipleOf");
    expect_error(PL_CONSTRAINT_JSON, "{\"type\": \"array\", \"uniqueItems\": true}",
                 "uniqueItems");
    expect_error(PL_CONSTRAINT_JSON, "{\"$ref\": \"http://x/y.json\"}", "$ref");
    expect_error(PL_CONSTRAINT_JSON, "{\"$ref\": \"#/$defs/missing\"}", "does not resolve");
    expect_error(PL_CONSTRAINT_JSON,
                 "{\"type\": \"object\", \"properties\": {\"a\": {\"type\": \"strin\"}}}",
                 "/properties/a");
    expect_error(PL_CONSTRAINT_JSON, "{\"type\": \"object\", \"required\": [\"z\"]}", "'z'");
    expect_error(PL_CONSTRAINT_JSON, "{\"type\": \"integer\", \"minimum\": 5, \"maximum\": 4}",
                 "no integer");
    expect_error(PL_CONSTRAINT_JSON, "{bad json", "not valid JSON");
    expect_error(PL_CONSTRAINT_CHOICE, "[]", "non-empty");
    expect_error(PL_CONSTRAINT_CHOICE, "[\"a\", 3]", "choice[1]");
}

static void test_utf8(void)
{
    const char *g = "root ::= [\\u03B1-\\u03C9]+";
    CHECK(matches(g_cache, PL_CONSTRAINT_GRAMMAR, g, "\xce\xb2\xce\xb3"));
    CHECK(!matches(g_cache, PL_CONSTRAINT_GRAMMAR, g, "\xce\xb2\xce"));
    CHECK(!matches(g_cache, PL_CONSTRAINT_GRAMMAR, g, "a"));
    const char *neg = "root ::= [^a]";
    CHECK(matches(g_cache, PL_CONSTRAINT_GRAMMAR, neg, "\xc3\xa9"));
    CHECK(matches(g_cache, PL_CONSTRAINT_GRAMMAR, neg, "\xf0\x9f\x98\x80"));
    CHECK(!matches(g_cache, PL_CONSTRAINT_GRAMMAR, neg, "\x80"));
    CHECK(!matches(g_cache, PL_CONSTRAINT_GRAMMAR, neg, "\xed\xa0\x80")); /* a surrogate */
    CHECK(!matches(g_cache, PL_CONSTRAINT_GRAMMAR, neg, "\xc0\xaf"));     /* overlong */
    /* a partial character is a valid prefix but not accepting */
    struct pl_grammar_matcher *m = matcher(g_cache, PL_CONSTRAINT_GRAMMAR, neg);
    REQUIRE(m);
    CHECK(pl_grammar_matcher_accept_bytes(m, "\xf0\x9f", 2));
    CHECK(!pl_grammar_matcher_is_accepting(m));
    CHECK(!pl_grammar_matcher_accept_bytes(m, "a", 1));
    CHECK(pl_grammar_matcher_accept_bytes(m, "\x98\x80", 2));
    CHECK(pl_grammar_matcher_is_accepting(m));
    CHECK(pl_grammar_matcher_is_complete(m));
    pl_grammar_matcher_free(m);
}

static void test_regex(void)
{
    struct {
        const char *re, *s;
        bool ok;
    } cases[] = {
        {"\\d{3}-\\d{4}", "555-1234", true},   {"\\d{3}-\\d{4}", "55-1234", false},
        {"^(cat|dog)s?$", "dogs", true},       {"^(cat|dog)s?$", "cow", false},
        {"[A-Z][a-z]*", "Hello", true},        {"[A-Z][a-z]*", "hello", false},
        {"a.c", "a-c", true},                  {"a.c", "a\nc", false},
        {"(?:ab)+", "ababab", true},           {"(?P<x>a|b)c", "bc", true},
        {"\\w+@\\w+\\.com", "me@x.com", true}, {"[^0-9]+", "abc", true},
        {"[^0-9]+", "a1", false},              {"x{2,}", "xxxx", true},
        {"x{2,}", "x", false},                 {"\\.\\*", ".*", true},
        {"a|", "", true},                      {"[\\d\\s]+", "1 2", true},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        CHECKF(matches(g_cache, PL_CONSTRAINT_REGEX, cases[i].re, cases[i].s) == cases[i].ok,
               "regex '%s' on '%s'", cases[i].re, cases[i].s);
    CHECK(matches(g_cache, PL_CONSTRAINT_CHOICE, "[\"yes\", \"no\", \"maybe so\"]", "maybe so"));
    CHECK(!matches(g_cache, PL_CONSTRAINT_CHOICE, "[\"yes\", \"no\"]", "yesno"));
    CHECK(matches(g_cache, PL_CONSTRAINT_CHOICE, "[\"a\\\"b\"]", "a\"b"));
}

static void test_json_schema(void)
{
    const char *person =
        "{\"type\": \"object\", \"properties\": {\"name\": {\"type\": \"string\", \"maxLength\": "
        "5}, \"age\": {\"type\": \"integer\", \"minimum\": 0, \"maximum\": 150}, \"tags\": "
        "{\"type\": \"array\", \"items\": {\"enum\": [\"a\", \"b\", 3]}, \"maxItems\": 2}, "
        "\"when\": {\"type\": \"string\", \"format\": \"date-time\"}}, \"required\": [\"name\", "
        "\"age\"], \"title\": \"P\"}";
    struct {
        const char *s;
        bool ok;
    } cases[] = {
        {"{\"name\": \"bo\", \"age\": 7}", true},
        {"{\"name\":\"bo\",\"age\":150,\"tags\":[3,\"a\"]}", true},
        {"{\"name\":\"bo\",\"age\":151}", false},
        {"{\"name\":\"bo\",\"age\":-1}", false},
        {"{\"name\":\"bo\",\"age\":07}", false},
        {"{\"name\":\"bobbie\",\"age\":1}", false},
        {"{\"age\":1,\"name\":\"bo\"}", false}, /* schema order */
        {"{\"name\":\"bo\"}", false},            /* required */
        {"{\"name\":\"bo\",\"age\":1,\"extra\":1}", false},
        {"{\"name\":\"bo\",\"age\":1,\"tags\":[\"a\",\"b\",3]}", false},
        {"{\"name\":\"b\\\"\",\"age\":1,\"when\":\"2024-02-29T13:05:00Z\"}", true},
        {"{\"name\":\"b\",\"age\":1,\"when\":\"2024-13-29T13:05:00Z\"}", false},
        {"{ \"name\": \"b\", \"age\": 1 }", true},
        {"{  \"name\": \"b\", \"age\": 1 }", false}, /* default whitespace: one space */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        CHECKF(matches(g_cache, PL_CONSTRAINT_JSON, person, cases[i].s) == cases[i].ok,
               "person on '%s'", cases[i].s);

    const char *rec = "{\"$defs\": {\"node\": {\"type\": \"object\", \"properties\": {\"v\": "
                      "{\"type\": \"boolean\"}, \"kids\": {\"type\": \"array\", \"items\": "
                      "{\"$ref\": \"#/$defs/node\"}}}, \"required\": [\"v\"]}}, \"$ref\": "
                      "\"#/$defs/node\"}";
    CHECK(matches(g_cache, PL_CONSTRAINT_JSON, rec,
                  "{\"v\":true,\"kids\":[{\"v\":false},{\"v\":true,\"kids\":[]}]}"));
    CHECK(!matches(g_cache, PL_CONSTRAINT_JSON, rec, "{\"v\":true,\"kids\":[{}]}"));

    const char *any = "{\"anyOf\": [{\"type\": \"null\"}, {\"type\": \"number\", \"minimum\": 0, "
                      "\"maximum\": 1}, {\"const\": {\"k\": [1, 2]}}]}";
    CHECK(matches(g_cache, PL_CONSTRAINT_JSON, any, "null"));
    CHECK(matches(g_cache, PL_CONSTRAINT_JSON, any, "0.25"));
    CHECK(matches(g_cache, PL_CONSTRAINT_JSON, any, "1.000"));
    CHECK(!matches(g_cache, PL_CONSTRAINT_JSON, any, "1.5"));
    CHECK(matches(g_cache, PL_CONSTRAINT_JSON, any, "{\"k\":[1,2]}"));

    const char *tuple = "{\"type\": \"array\", \"prefixItems\": [{\"type\": \"string\"}, "
                        "{\"type\": \"integer\"}], \"items\": false, \"minItems\": 1}";
    CHECK(matches(g_cache, PL_CONSTRAINT_JSON, tuple, "[\"a\"]"));
    CHECK(matches(g_cache, PL_CONSTRAINT_JSON, tuple, "[\"a\", 2]"));
    CHECK(!matches(g_cache, PL_CONSTRAINT_JSON, tuple, "[\"a\", 2, 3]"));
    CHECK(!matches(g_cache, PL_CONSTRAINT_JSON, tuple, "[]"));

    const char *map = "{\"type\": \"object\", \"additionalProperties\": {\"type\": \"integer\"}}";
    CHECK(matches(g_cache, PL_CONSTRAINT_JSON, map, "{\"x\":1,\"y\":2}"));
    CHECK(matches(g_cache, PL_CONSTRAINT_JSON, map, "{}"));
    CHECK(!matches(g_cache, PL_CONSTRAINT_JSON, map, "{\"x\":\"1\"}"));

    const char *pat = "{\"type\": \"string\", \"pattern\": \"^a\\\"[0-9]+$\"}";
    CHECK(matches(g_cache, PL_CONSTRAINT_JSON, pat, "\"a\\\"12\""));
    CHECK(!matches(g_cache, PL_CONSTRAINT_JSON, pat, "\"a\"12\""));

    CHECK(matches(g_cache, PL_CONSTRAINT_JSON_OBJECT, NULL, "{\"a\": [1, {\"b\": null}]}"));
    CHECK(!matches(g_cache, PL_CONSTRAINT_JSON_OBJECT, NULL, "[1]"));

    /* integer ranges, checked exhaustively */
    const char *ranges[] = {
        "{\"type\": \"integer\", \"minimum\": -15, \"maximum\": 123}",
        "{\"type\": \"integer\", \"exclusiveMinimum\": 9, \"exclusiveMaximum\": 1000}",
        "{\"type\": \"integer\", \"minimum\": 37}",
        "{\"type\": \"integer\", \"maximum\": -20}",
    };
    long lo[] = {-15, 10, 37, -1000000}, hi[] = {123, 999, 1000000, -20};
    for (int r = 0; r < 4; r++) {
        struct pl_grammar_matcher *m0 = matcher(g_cache, PL_CONSTRAINT_JSON, ranges[r]);
        REQUIRE(m0);
        for (long x = -1200; x <= 1200; x++) {
            char s[32];
            snprintf(s, sizeof(s), "%ld", x);
            struct pl_grammar_matcher *m;
            struct pl_err err;
            REQUIRE(pl_grammar_matcher_clone(m0, &m, &err) == PL_STATUS_OK);
            bool ok = pl_grammar_matcher_accept_bytes(m, s, strlen(s)) &&
                      pl_grammar_matcher_is_accepting(m);
            CHECKF(ok == (x >= lo[r] && x <= hi[r]), "range %d on %ld", r, x);
            pl_grammar_matcher_free(m);
        }
        pl_grammar_matcher_free(m0);
    }
}

/* Masks agree token by token with accept_token on a clone, along random walks. */
static void walk_and_check(struct pl_grammar_cache *c, const struct pl_grammar_vocab *v,
                           enum pl_constraint_kind k, const char *text, int steps,
                           uint64_t seed)
{
    struct pl_grammar_matcher *m = matcher(c, k, text);
    REQUIRE(m);
    int V = pl_grammar_vocab_size(v);
    size_t W = PL_GRAMMAR_MASK_WORDS(V);
    uint32_t *mask = malloc(W * 4), *again = malloc(W * 4);
    int32_t *allowed = malloc(sizeof(int32_t) * (size_t)V);
    struct pl_rng rng;
    pl_rng_seed(&rng, seed);
    int mismatches = 0, step;
    char out[4096];
    size_t n_out = 0;
    for (step = 0; step < steps; step++) {
        pl_grammar_matcher_fill_mask(m, mask);
        pl_grammar_matcher_fill_mask(m, again);
        CHECK(!memcmp(mask, again, W * 4));
        int n_allowed = 0;
        for (int t = 0; t < V; t++) {
            struct pl_grammar_matcher *cl;
            struct pl_err err;
            if (pl_grammar_matcher_clone(m, &cl, &err) != PL_STATUS_OK)
                break;
            bool brute = pl_grammar_matcher_accept_token(cl, t);
            bool bit = (mask[t >> 5] >> (t & 31)) & 1u;
            if (brute != bit && mismatches++ < 5)
                fprintf(stderr, "step %d token %d: mask %d, brute force %d\n", step, t, bit,
                        brute);
            if (bit)
                allowed[n_allowed++] = t;
            pl_grammar_matcher_free(cl);
        }
        CHECK(((mask[EOS_ID >> 5] >> (EOS_ID & 31)) & 1u) == pl_grammar_matcher_is_accepting(m));
        /* every byte is a token: a live state always has a next token */
        CHECKF(n_allowed > 0, "a dead end at step %d of '%.60s'", step, text ? text : "");
        if (n_allowed == 0)
            break;
        int32_t t = allowed[pl_rng_next(&rng) % (uint64_t)n_allowed];
        /* prefer continuing over stopping, to walk deep */
        if (t == EOS_ID && n_allowed > 1 && step < steps / 2)
            t = allowed[(pl_rng_next(&rng) % (uint64_t)(n_allowed - 1)) + (allowed[0] == EOS_ID)];
        REQUIRE(pl_grammar_matcher_accept_token(m, t));
        if (t == EOS_ID)
            break;
        char tb[256];
        (void)tb;
        n_out += (size_t)snprintf(out + n_out, sizeof(out) - n_out, "|%d", (int)t);
        if (n_out >= sizeof(out))
            n_out = sizeof(out) - 1;
    }
    if (getenv("PL_TEST_VERBOSE"))
        fprintf(stderr, "walk '%.40s': %d steps: %s\n", text ? text : "(object)", step, out);

    CHECKF(mismatches == 0, "%d mask / brute-force mismatches for '%.60s'", mismatches,
           text ? text : "(json object)");
    free(mask);
    free(again);
    free(allowed);
    pl_grammar_matcher_free(m);
}

static const char *walk_schemas[] = {
    "{\"type\": \"object\", \"properties\": {\"id\": {\"type\": \"integer\", \"minimum\": -5, "
    "\"maximum\": 300}, \"name\": {\"type\": \"string\"}, \"ok\": {\"type\": \"boolean\"}, "
    "\"xs\": {\"type\": \"array\", \"items\": {\"type\": \"number\"}, \"maxItems\": 3}, "
    "\"sub\": {\"type\": \"object\", \"properties\": {\"u\": {\"type\": \"string\", \"format\": "
    "\"uuid\"}, \"n\": {\"type\": [\"null\", \"string\"]}}, \"required\": [\"n\"]}}, "
    "\"required\": [\"id\", \"sub\"]}",
    "{\"anyOf\": [{\"type\": \"string\", \"pattern\": \"[ab\\\"\\\\\\\\]{2,5}\"}, {\"enum\": "
    "[\"x\", 1, null, true]}]}",
};

static void test_masks_synthetic(void)
{
    for (int i = 0; i < 2; i++)
        walk_and_check(g_cache, g_vocab, PL_CONSTRAINT_JSON, walk_schemas[i], 40, 11 + i);
    walk_and_check(g_cache, g_vocab, PL_CONSTRAINT_JSON_OBJECT, NULL, 40, 5);
    walk_and_check(g_cache, g_vocab, PL_CONSTRAINT_REGEX, "(true|false|[0-9]{1,3}\\.\\d)+", 30, 6);
    walk_and_check(g_cache, g_vocab, PL_CONSTRAINT_CHOICE, "[\"true\", \"tru\", \"\\u03b2x\"]", 10,
                   7);
    walk_and_check(g_cache, g_vocab, PL_CONSTRAINT_GRAMMAR,
                   "root ::= ([^\\x00-\\x7f] | \"a\")* \"}\"", 30, 8);
}

static void test_masks_tokenizer(void)
{
    struct pl_tokenizer *tok = NULL;
    struct pl_err err;
    REQUIRE(pl_tokenizer_load_files(pl_test_path("tests/fixtures/tokenizer/small_bytelevel.json"),
                                    NULL, &tok, &err) == PL_STATUS_OK);
    int V = pl_tokenizer_vocab_size(tok);
    /* the token bytes round-trip through decode for ordinary tokens */
    int checked = 0;
    for (int32_t id = 0; id < V && checked < 300; id++) {
        if (!pl_tokenizer_has_id(tok, id) || pl_tokenizer_is_special(tok, id))
            continue;
        char b[256], *text = NULL;
        size_t tl = 0;
        int n = pl_tokenizer_token_bytes(tok, id, b, (int)sizeof(b));
        REQUIRE(pl_tokenizer_decode(tok, &id, 1, false, &text, &tl, &err) == PL_STATUS_OK);
        bool ascii = true;
        for (int k = 0; k < n; k++)
            ascii = ascii && (unsigned char)b[k] < 0x80;
        if (ascii) {
            CHECKF(n == (int)tl && !memcmp(b, text, tl), "token %d", (int)id);
            checked++;
        }
        free(text);
    }
    int32_t eos = EOS_ID;
    struct pl_grammar_vocab *v = NULL;
    REQUIRE(pl_grammar_vocab_from_tokenizer(tok, V + 5, &eos, 1, &v, &err) == PL_STATUS_OK);
    struct pl_grammar_cache *c = NULL;
    REQUIRE(pl_grammar_cache_new(v, 8, &c, &err) == PL_STATUS_OK);
    walk_and_check(c, v, PL_CONSTRAINT_JSON, walk_schemas[0], 25, 21);
    walk_and_check(c, v, PL_CONSTRAINT_JSON_OBJECT, NULL, 25, 22);
    /* the same text twice: the second matcher's first mask comes from the cache */
    uint64_t h0, m0, h1, m1;
    struct pl_grammar_matcher *a = matcher(c, PL_CONSTRAINT_REGEX, "[a-z]+");
    struct pl_grammar_matcher *b = matcher(c, PL_CONSTRAINT_REGEX, "[a-z]+");
    REQUIRE(a && b);
    uint32_t *mask = malloc(PL_GRAMMAR_MASK_WORDS(V + 5) * 4);
    pl_grammar_cache_stats(c, &h0, &m0);
    pl_grammar_matcher_fill_mask(a, mask);
    pl_grammar_cache_stats(c, &h1, &m1);
    CHECK(m1 == m0 + 1);
    pl_grammar_matcher_fill_mask(b, mask);
    pl_grammar_cache_stats(c, &h0, &m0);
    CHECK(h0 == h1 + 1 && m0 == m1);
    /* padded ids past the tokenizer are never allowed */
    for (int i = V; i < V + 5; i++)
        CHECK(!((mask[i >> 5] >> (i & 31)) & 1u));
    free(mask);
    pl_grammar_matcher_free(a);
    pl_grammar_matcher_free(b);
    pl_grammar_cache_free(c);
    pl_grammar_vocab_free(v);
    pl_tokenizer_free(tok);
}

/* Schemas translated with rule prefixes compose into one grammar (a tool call's wrapper). */
static void test_compose(void)
{
    struct pl_err err;
    char *a = NULL, *b = NULL;
    REQUIRE(pl_grammar_json_schema_to_gbnf(
                "{\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\"}}, "
                "\"required\": [\"city\"]}",
                NULL, "a-", &a, &err) == PL_STATUS_OK);
    REQUIRE(pl_grammar_json_schema_to_gbnf("{\"type\": \"array\", \"items\": {\"type\": "
                                           "\"integer\"}, \"maxItems\": 2}",
                                           NULL, "b-", &b, &err) == PL_STATUS_OK);
    size_t n = strlen(a) + strlen(b) + 256;
    char *g = malloc(n);
    snprintf(g, n,
             "root ::= \"<tool_call>\" (\"{\\\"name\\\": \\\"weather\\\", \\\"arguments\\\": \" "
             "a-root | \"{\\\"name\\\": \\\"sum\\\", \\\"arguments\\\": \" b-root) "
             "\"}</tool_call>\"\n%s%s",
             a, b);
    CHECK(matches(g_cache, PL_CONSTRAINT_GRAMMAR, g,
                  "<tool_call>{\"name\": \"weather\", \"arguments\": {\"city\": \"Oslo\"}}"
                  "</tool_call>"));
    CHECK(matches(g_cache, PL_CONSTRAINT_GRAMMAR, g,
                  "<tool_call>{\"name\": \"sum\", \"arguments\": [1, 2]}</tool_call>"));
    CHECK(!matches(g_cache, PL_CONSTRAINT_GRAMMAR, g,
                   "<tool_call>{\"name\": \"sum\", \"arguments\": {\"city\": \"x\"}}</tool_call>"));
    free(g);
    free(a);
    free(b);
}

static void test_params(void)
{
    struct pl_sampling_params p;
    struct pl_err err;
    pl_sampling_params_default(&p);
    json_t *body = json_loads("{\"guided_json\": {\"type\": \"integer\"}, "
                              "\"guided_whitespace_pattern\": \"[ ]\"}",
                              0, NULL);
    REQUIRE(pl_sampling_params_from_json(body, NULL, &p, &err) == PL_STATUS_OK);
    json_decref(body);
    CHECK(p.constraint_kind == PL_CONSTRAINT_JSON);
    CHECK(p.constraint && !strcmp(p.constraint, "{\"type\":\"integer\"}"));
    CHECK(p.whitespace_pattern && !strcmp(p.whitespace_pattern, "[ ]"));
    struct pl_sampling_params q;
    REQUIRE(pl_sampling_params_copy(&q, &p, &err) == PL_STATUS_OK);
    pl_sampling_params_fini(&p);
    CHECK(q.constraint && !strcmp(q.constraint, "{\"type\":\"integer\"}"));
    REQUIRE(pl_sampling_params_set_constraint(&q, PL_CONSTRAINT_CHOICE, "[\"a\",\"b\"]", NULL,
                                              &err) == PL_STATUS_OK);
    CHECK(q.constraint_kind == PL_CONSTRAINT_CHOICE && !strcmp(q.constraint, "[\"a\",\"b\"]"));
    CHECK(pl_sampling_params_set_constraint(&q, PL_CONSTRAINT_JSON, "{\"not\": {}}", NULL,
                                            &err) == PL_STATUS_INVALID_ARGUMENT);
    CHECK(q.constraint_kind == PL_CONSTRAINT_CHOICE);
    pl_sampling_params_fini(&q);

    pl_sampling_params_default(&p);
    body = json_loads("{\"structured_outputs\": {\"choice\": [\"x\", \"y\"]}}", 0, NULL);
    REQUIRE(pl_sampling_params_from_json(body, NULL, &p, &err) == PL_STATUS_OK);
    json_decref(body);
    CHECK(p.constraint_kind == PL_CONSTRAINT_CHOICE && !strcmp(p.constraint, "[\"x\",\"y\"]"));
    pl_sampling_params_fini(&p);

    pl_sampling_params_default(&p);
    body = json_loads("{\"guided_regex\": \"a+\", \"guided_choice\": [\"x\"]}", 0, NULL);
    CHECK(pl_sampling_params_from_json(body, NULL, &p, &err) == PL_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(err.msg, "only one") != NULL);
    json_decref(body);
    body = json_loads("{\"structured_outputs\": {\"structural_tag\": \"x\"}}", 0, NULL);
    CHECK(pl_sampling_params_from_json(body, NULL, &p, &err) == PL_STATUS_UNSUPPORTED);
    CHECK(strstr(err.msg, "structural_tag") != NULL);
    json_decref(body);
    body = json_loads("{\"guided_json\": 5}", 0, NULL);
    CHECK(pl_sampling_params_from_json(body, NULL, &p, &err) == PL_STATUS_INVALID_ARGUMENT);
    json_decref(body);
    p.constraint_kind = PL_CONSTRAINT_REGEX;
    p.constraint = "a";
    p.use_beam_search = true;
    CHECK(pl_sampling_params_validate(&p, 0, &err) == PL_STATUS_INVALID_ARGUMENT);
}

int main(void)
{
    g_vocab = synthetic_vocab(1500, 42);
    struct pl_err err;
    if (!g_vocab || pl_grammar_cache_new(g_vocab, 64, &g_cache, &err) != PL_STATUS_OK)
        return 1;
    PL_RUN(test_gbnf);
    PL_RUN(test_errors);
    PL_RUN(test_utf8);
    PL_RUN(test_regex);
    PL_RUN(test_json_schema);
    PL_RUN(test_masks_synthetic);
    PL_RUN(test_masks_tokenizer);
    PL_RUN(test_compose);
    PL_RUN(test_params);
    pl_grammar_cache_free(g_cache);
    pl_grammar_vocab_free(g_vocab);
    return pl_test_summary();
}
