/*
 * test_tokenizer.c -- tokenizer components on small cases, malformed files,
 * and the streaming detokenizer.
 *
 * Expected values come from the Hugging Face tokenizers documentation and
 * test suite (split behaviours on "the-final--countdown", the Digits and
 * Metaspace examples, the ByteFallback cases "<0xE5><0x8f><0xab>a" -> "叫a"),
 * from Unicode's normalization tables (NFC/NFKC/NFD), from GPT-2's byte table
 * ("Ġ" is the space byte), and from the BPE definition (the lowest-ranked
 * adjacent pair merges first). The real tokenizers are covered by
 * test_tokenizer_ref.c.
 */
#include "test.h"
#include "tokenizer/tok_internal.h"
#include "tokenizer/tokenizer.h"

#include <stdarg.h>

/* ---- helpers ---- */

static struct pl_tokenizer *load(const char *json, const char *cfg, pl_status *st_out,
                                 struct pl_err *e)
{
    struct pl_tokenizer *t = NULL;
    pl_status st = pl_tokenizer_load_mem(json, strlen(json), cfg, cfg ? strlen(cfg) : 0, &t, e);
    if (st_out)
        *st_out = st;
    return t;
}

static bool ids_are(const int32_t *ids, int n, int count, ...)
{
    if (n != count)
        return false;
    va_list ap;
    va_start(ap, count);
    bool ok = true;
    for (int i = 0; i < count; i++)
        if (ids[i] != va_arg(ap, int))
            ok = false;
    va_end(ap);
    return ok;
}

static int encode(const struct pl_tokenizer *t, const char *s, bool special, int32_t **ids)
{
    int n = -1;
    struct pl_err e = {0};
    if (pl_tokenizer_encode(t, s, strlen(s), special, ids, &n, &e) != PL_STATUS_OK) {
        fprintf(stderr, "encode failed: %s\n", e.msg);
        *ids = NULL;
        return -1;
    }
    return n;
}

static char *decode(const struct pl_tokenizer *t, const int32_t *ids, int n, bool skip)
{
    char *s = NULL;
    size_t len;
    struct pl_err e = {0};
    if (pl_tokenizer_decode(t, ids, n, skip, &s, &len, &e) != PL_STATUS_OK)
        return NULL;
    return s;
}

/* Runs a pre-tokenizer given as JSON over text; returns pieces joined by '|'. */
static char *pretok(const char *json, const char *text)
{
    char *buf = strdup(json);
    struct tok_json_doc *d = NULL;
    struct pl_err e = {0};
    struct tok_pretokenizer *p = NULL;
    char *res = NULL;
    if (tok_json_parse(buf, strlen(buf), &d, &e) == PL_STATUS_OK &&
        tok_pretokenizer_parse(tok_json_root(d), "pre_tokenizer", &p, &e) == PL_STATUS_OK) {
        struct tok_pieces in = {0}, tmp = {0};
        tok_pieces_push(&in, text, strlen(text), true);
        if (tok_pretokenize(p, &in, &tmp, &e) == PL_STATUS_OK) {
            struct tok_buf out = {0};
            tok_buf_reserve(&out, 0);
            for (size_t i = 0; i < in.n; i++) {
                if (i)
                    tok_buf_addc(&out, '|');
                tok_buf_add(&out, in.text.p + in.start[i], in.len[i]);
            }
            res = out.p;
        }
        tok_pieces_free(&in);
        tok_pieces_free(&tmp);
    }
    if (!res)
        fprintf(stderr, "pretok failed: %s\n", e.msg);
    tok_pretokenizer_free(p);
    tok_json_free(d);
    free(buf);
    return res;
}

static char *normalize(const char *json, const char *text)
{
    char *buf = strdup(json);
    struct tok_json_doc *d = NULL;
    struct pl_err e = {0};
    struct tok_normalizer *n = NULL;
    char *res = NULL;
    if (tok_json_parse(buf, strlen(buf), &d, &e) == PL_STATUS_OK &&
        tok_normalizer_parse(tok_json_root(d), "normalizer", &n, &e) == PL_STATUS_OK) {
        struct tok_buf b = {0};
        tok_buf_add(&b, text, strlen(text));
        if (tok_normalize(n, &b, &e) == PL_STATUS_OK)
            res = b.p ? b.p : strdup("");
        else
            tok_buf_free(&b);
    }
    if (!res)
        fprintf(stderr, "normalize failed: %s\n", e.msg);
    tok_normalizer_free(n);
    tok_json_free(d);
    free(buf);
    return res;
}

/* Decodes token strings through a decoder given as JSON; NULL-terminated list. */
static char *decode_tokens(const char *json, const char **tokens)
{
    char *buf = strdup(json);
    struct tok_json_doc *d = NULL;
    struct pl_err e = {0};
    struct tok_decoder *dec = NULL;
    char *res = NULL;
    if (tok_json_parse(buf, strlen(buf), &d, &e) == PL_STATUS_OK &&
        tok_decoder_parse(tok_json_root(d), "decoder", &dec, &e) == PL_STATUS_OK) {
        struct tok_strlist l = {0};
        for (int i = 0; tokens[i]; i++)
            tok_strlist_push(&l, tokens[i], strlen(tokens[i]));
        if (tok_decode_chain(dec, &l, &e) == PL_STATUS_OK) {
            struct tok_buf out = {0};
            tok_buf_reserve(&out, 0);
            for (size_t i = 0; i < l.n; i++)
                tok_buf_add(&out, l.v[i].p, l.v[i].n);
            res = out.p;
        }
        tok_strlist_free(&l);
    }
    if (!res)
        fprintf(stderr, "decode failed: %s\n", e.msg);
    tok_decoder_free(dec);
    tok_json_free(d);
    free(buf);
    return res;
}

#define CHECK_STR(got, want)                                                              \
    do {                                                                                  \
        char *g_ = (got);                                                                 \
        CHECKF(g_ && !strcmp(g_, (want)), "got \"%s\", want \"%s\"", g_ ? g_ : "(null)", \
               (want));                                                                   \
        free(g_);                                                                         \
    } while (0)

/* ---- normalizers ---- */

static void test_normalizers(void)
{
    /* Unicode normalization forms. */
    CHECK_STR(normalize("{\"type\":\"NFC\"}", "e\xCC\x81"), "\xC3\xA9");
    CHECK_STR(normalize("{\"type\":\"NFD\"}", "\xC3\xA9"), "e\xCC\x81");
    CHECK_STR(normalize("{\"type\":\"NFKC\"}", "\xEF\xAC\x81"), "fi");       /* U+FB01 */
    CHECK_STR(normalize("{\"type\":\"NFKC\"}", "\xEF\xBC\xA1"), "A");        /* fullwidth A */
    CHECK_STR(normalize("{\"type\":\"NFKD\"}", "\xE2\x91\xA0"), "1");        /* circled 1 */
    CHECK_STR(normalize("{\"type\":\"NFC\"}", "\xE2\x84\xAB"), "\xC3\x85"); /* angstrom -> Å */
    /* Lowercase (per character; İ lowercases to i + combining dot). */
    CHECK_STR(normalize("{\"type\":\"Lowercase\"}", "HeLLo \xC3\x84 \xCE\xA3"),
              "hello \xC3\xA4 \xCF\x83");
    CHECK_STR(normalize("{\"type\":\"Lowercase\"}", "\xC4\xB0"), "i\xCC\x87");
    /* Strip and Prepend. */
    CHECK_STR(normalize("{\"type\":\"Strip\",\"strip_left\":true,\"strip_right\":true}",
                        " \t hi there \n"),
              "hi there");
    CHECK_STR(normalize("{\"type\":\"Strip\",\"strip_left\":false,\"strip_right\":true}", "  x  "),
              "  x");
    CHECK_STR(normalize("{\"type\":\"Prepend\",\"prepend\":\"\\u2581\"}", "Hey"), "\xE2\x96\x81Hey");
    CHECK_STR(normalize("{\"type\":\"Prepend\",\"prepend\":\"\\u2581\"}", ""), "");
    /* Replace: string and regex patterns. */
    CHECK_STR(normalize("{\"type\":\"Replace\",\"pattern\":{\"String\":\" \"},\"content\":\"\\u2581\"}",
                        "a b  c"),
              "a\xE2\x96\x81" "b\xE2\x96\x81\xE2\x96\x81" "c");
    CHECK_STR(normalize("{\"type\":\"Replace\",\"pattern\":{\"Regex\":\" {2,}\"},\"content\":\" \"}",
                        "a  b     c d"),
              "a b c d");
    CHECK_STR(normalize("{\"type\":\"StripAccents\"}", "e\xCC\x81"), "e");
    /* Sequence: HF docs, NFD + StripAccents turns "é" into "e". */
    CHECK_STR(normalize("{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"NFD\"},"
                        "{\"type\":\"StripAccents\"},{\"type\":\"Lowercase\"}]}",
                        "H\xC3\xA9llo"),
              "hello");
}

/* ---- pre-tokenizers ---- */

static void test_split_behaviors(void)
{
    /* The HF documentation's examples for SplitDelimiterBehavior. */
    const char *t = "the-final--countdown";
    CHECK_STR(pretok("{\"type\":\"Split\",\"pattern\":{\"String\":\"-\"},\"behavior\":\"Removed\"}", t),
              "the|final|countdown");
    CHECK_STR(pretok("{\"type\":\"Split\",\"pattern\":{\"String\":\"-\"},\"behavior\":\"Isolated\"}", t),
              "the|-|final|-|-|countdown");
    CHECK_STR(pretok("{\"type\":\"Split\",\"pattern\":{\"String\":\"-\"},"
                     "\"behavior\":\"MergedWithPrevious\"}",
                     t),
              "the-|final-|-|countdown");
    CHECK_STR(pretok("{\"type\":\"Split\",\"pattern\":{\"String\":\"-\"},"
                     "\"behavior\":\"MergedWithNext\"}",
                     t),
              "the|-final|-|-countdown");
    CHECK_STR(pretok("{\"type\":\"Split\",\"pattern\":{\"String\":\"-\"},\"behavior\":\"Contiguous\"}",
                     t),
              "the|-|final|--|countdown");
    /* invert: the pattern describes the pieces to keep. */
    CHECK_STR(pretok("{\"type\":\"Split\",\"pattern\":{\"Regex\":\"\\\\w+\"},\"behavior\":\"Removed\","
                     "\"invert\":true}",
                     "Hello, world"),
              "Hello|world");
}

static void test_pretokenizers(void)
{
    /* Digits (HF docs: "Call 123 please"). */
    CHECK_STR(pretok("{\"type\":\"Digits\",\"individual_digits\":true}", "Call 123 please"),
              "Call |1|2|3| please");
    CHECK_STR(pretok("{\"type\":\"Digits\",\"individual_digits\":false}", "Call 123 please"),
              "Call |123| please");
    /* Whitespace = \w+|[^\w\s]+ ; WhitespaceSplit splits on whitespace only. */
    CHECK_STR(pretok("{\"type\":\"Whitespace\"}", "Hey man!! How are you?"),
              "Hey|man|!!|How|are|you|?");
    CHECK_STR(pretok("{\"type\":\"WhitespaceSplit\"}", "Hey man!!  How\tare"), "Hey|man!!|How|are");
    CHECK_STR(pretok("{\"type\":\"Punctuation\",\"behavior\":\"Isolated\"}", "Hey friend!?"),
              "Hey friend|!|?");
    /* Metaspace (HF docs: "Hey friend!" -> "▁Hey", "▁friend!"). */
    CHECK_STR(pretok("{\"type\":\"Metaspace\",\"replacement\":\"\\u2581\",\"prepend_scheme\":\"always\","
                     "\"split\":true}",
                     "Hey friend!"),
              "\xE2\x96\x81Hey|\xE2\x96\x81" "friend!");
    CHECK_STR(pretok("{\"type\":\"Metaspace\",\"replacement\":\"\\u2581\",\"prepend_scheme\":\"never\","
                     "\"split\":false}",
                     "Hey friend"),
              "Hey\xE2\x96\x81" "friend");
    /* ByteLevel with the GPT-2 regex: spaces become "Ġ" and stick to the next word. */
    CHECK_STR(pretok("{\"type\":\"ByteLevel\",\"add_prefix_space\":true,\"use_regex\":true}",
                     "Hello my friend"),
              "\xC4\xA0Hello|\xC4\xA0my|\xC4\xA0" "friend");
    CHECK_STR(pretok("{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":true}",
                     "I'm  ok\n"),
              "I|'m|\xC4\xA0|\xC4\xA0ok|\xC4\x8A");
    /* Llama 3 style: regex split then byte-level mapping without regex. */
    CHECK_STR(pretok("{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":"
                     "{\"Regex\":\"\\\\p{N}{1,3}\"},\"behavior\":\"Isolated\"},{\"type\":\"ByteLevel\","
                     "\"add_prefix_space\":false,\"use_regex\":false}]}",
                     "x 12345"),
              "x\xC4\xA0|123|45");
}

/* ---- decoders ---- */

static void test_decoders(void)
{
    /* HF's ByteFallback tests: valid runs become text, invalid runs one U+FFFD per byte. */
    const char *a[] = {"<0xE5>", "<0x8f>", "<0xab>", "a", NULL};
    CHECK_STR(decode_tokens("{\"type\":\"ByteFallback\"}", a), "\xE5\x8F\xAB" "a");
    const char *b[] = {"<0xE5>", "<0x8f>", "a", NULL};
    CHECK_STR(decode_tokens("{\"type\":\"ByteFallback\"}", b), "\xEF\xBF\xBD\xEF\xBF\xBD" "a");
    const char *c[] = {"Hey", " friend", "!", NULL};
    CHECK_STR(decode_tokens("{\"type\":\"Fuse\"}", c), "Hey friend!");
    const char *d[] = {"\xE2\x96\x81Hey", "\xE2\x96\x81" "friend", NULL};
    CHECK_STR(decode_tokens("{\"type\":\"Metaspace\",\"replacement\":\"\\u2581\","
                            "\"prepend_scheme\":\"always\"}",
                            d),
              "Hey friend");
    /* ByteLevel: "Ġ" is the space byte; split UTF-8 across tokens joins up. */
    const char *e[] = {"Hello", "\xC4\xA0world", "\xC3\xA6", "\xC4\xB9", "\xC2\xA5", NULL};
    CHECK_STR(decode_tokens("{\"type\":\"ByteLevel\"}", e), "Hello world\xE6\x97\xA5"); /* 日 */
    const char *f[] = {"\xC3\xA6", "\xC4\xB9", NULL}; /* an incomplete character */
    CHECK_STR(decode_tokens("{\"type\":\"ByteLevel\"}", f), "\xEF\xBF\xBD");
    const char *g[] = {"  hi ", NULL};
    CHECK_STR(decode_tokens("{\"type\":\"Strip\",\"content\":\" \",\"start\":1,\"stop\":1}", g), " hi");
    const char *h[] = {"\xE2\x96\x81Hey", "\xE2\x96\x81you", NULL};
    CHECK_STR(decode_tokens("{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"Replace\",\"pattern\":"
                            "{\"String\":\"\\u2581\"},\"content\":\" \"},{\"type\":\"Fuse\"},"
                            "{\"type\":\"Strip\",\"content\":\" \",\"start\":1,\"stop\":0}]}",
                            h),
              "Hey you");
}

/* ---- BPE and whole tokenizers ---- */

static const char *TINY_BPE =
    "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"c\":2,\"ab\":3,\"bc\":4,\"abc\":5,"
    "\"<unk>\":6,\"d\":7},\"merges\":%s,\"unk_token\":\"<unk>\",\"fuse_unk\":%s%s},"
    "\"added_tokens\":[{\"id\":8,\"content\":\"<eot>\",\"special\":true,\"normalized\":false,"
    "\"lstrip\":false,\"rstrip\":false,\"single_word\":false}]}";

static struct pl_tokenizer *tiny(const char *merges, bool fuse_unk, const char *extra)
{
    char json[2048];
    snprintf(json, sizeof(json), TINY_BPE, merges, fuse_unk ? "true" : "false", extra);
    struct pl_err e = {0};
    struct pl_tokenizer *t = load(json, NULL, NULL, &e);
    if (!t)
        fprintf(stderr, "tiny: %s\n", e.msg);
    return t;
}

static void test_bpe_merges(void)
{
    /* Lowest rank first: (a,b) before (b,c), then (ab,c). */
    struct pl_tokenizer *t = tiny("[\"a b\",\"b c\",\"ab c\"]", false, "");
    REQUIRE(t);
    int32_t *ids;
    int n = encode(t, "abc", false, &ids);
    CHECK(ids_are(ids, n, 1, 5));
    free(ids);
    pl_tokenizer_free(t);
    /* (b,c) ranked first: a + bc, and no (a,bc) merge exists. Pair form of merges. */
    t = tiny("[[\"b\",\"c\"],[\"a\",\"b\"]]", false, "");
    REQUIRE(t);
    n = encode(t, "abc", false, &ids);
    CHECK(ids_are(ids, n, 2, 0, 4));
    free(ids);
    /* Equal ranks never happen; the leftmost of two equal pairs merges first. */
    n = encode(t, "abab", false, &ids);
    CHECK(ids_are(ids, n, 2, 3, 3));
    free(ids);
    /* Unknown characters: unk per character, or one fused unk. */
    n = encode(t, "axyb", false, &ids);
    CHECK(ids_are(ids, n, 4, 0, 6, 6, 1));
    free(ids);
    pl_tokenizer_free(t);
    t = tiny("[[\"b\",\"c\"],[\"a\",\"b\"]]", true, "");
    REQUIRE(t);
    n = encode(t, "axyb", false, &ids);
    CHECK(ids_are(ids, n, 3, 0, 6, 1));
    free(ids);
    pl_tokenizer_free(t);
    /* ignore_merges: a word in the vocab is emitted whole even if merges disagree. */
    t = tiny("[[\"b\",\"c\"],[\"a\",\"b\"]]", false, ",\"ignore_merges\":true");
    REQUIRE(t);
    n = encode(t, "abc", false, &ids);
    CHECK(ids_are(ids, n, 1, 5));
    free(ids);
    pl_tokenizer_free(t);
}

static void test_added_tokens(void)
{
    struct pl_tokenizer *t = tiny("[\"a b\"]", false, "");
    REQUIRE(t);
    int32_t *ids;
    /* Added tokens are cut out before the model and never split. */
    int n = encode(t, "ab<eot>ab", false, &ids);
    CHECK(ids_are(ids, n, 3, 3, 8, 3));
    free(ids);
    char *s = decode(t, (int32_t[]){3, 8, 3}, 3, false);
    CHECK_STR(s, "ab <eot> ab"); /* no decoder: tokens joined with spaces */
    s = decode(t, (int32_t[]){3, 8, 3}, 3, true);
    CHECK_STR(s, "ab ab");
    CHECK(pl_tokenizer_is_special(t, 8));
    CHECK(!pl_tokenizer_is_special(t, 3));
    CHECK(pl_tokenizer_token_to_id(t, "<eot>") == 8);
    CHECK(pl_tokenizer_token_to_id(t, "abc") == 5);
    CHECK(pl_tokenizer_token_to_id(t, "zzz") == -1);
    CHECK(pl_tokenizer_vocab_size(t) == 9);
    CHECK(!strcmp(pl_tokenizer_id_to_token(t, 4), "bc"));
    CHECK(pl_tokenizer_id_to_token(t, 9) == NULL);
    /* Ids past the tokenizer decode to nothing (test_decode_vocab_gap); negative ids
     * are refused. */
    struct pl_err e = {0};
    char *out = NULL;
    size_t len;
    CHECK(pl_tokenizer_decode(t, (int32_t[]){1, -99}, 2, false, &out, &len, &e) ==
          PL_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(e.msg, "-99") != NULL);
    pl_tokenizer_free(t);

    /* lstrip / rstrip / single_word, with the HF documentation's examples:
     * "[MASK]" with lstrip matches " [MASK]"; "ing" with single_word does not
     * match inside "tokenizing". Whitespace splitting shows what is left. */
    const char *json =
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"I\":0,\"saw\":1,\"a\":2,\"tokeniz\":3,\"ing\":4,"
        "\"!\":5,\" \":6,\"<unk>\":10},\"merges\":[],\"unk_token\":\"<unk>\",\"ignore_merges\":true},"
        "\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"String\":\" \"},\"behavior\":\"Isolated\"},"
        "\"added_tokens\":[{\"id\":7,\"content\":\"[MASK]\",\"special\":true,\"normalized\":false,"
        "\"lstrip\":true,\"rstrip\":false,\"single_word\":false},{\"id\":8,\"content\":\"ing\","
        "\"special\":false,\"normalized\":false,\"lstrip\":false,\"rstrip\":false,\"single_word\":true},"
        "{\"id\":9,\"content\":\"!\",\"special\":false,\"normalized\":false,\"lstrip\":false,"
        "\"rstrip\":true,\"single_word\":false}]}";
    t = load(json, NULL, NULL, &e);
    REQUIRE(t);
    int32_t *ids2;
    n = encode(t, "I saw a [MASK]", false, &ids2);
    /* "I", " ", "saw", " ", "a", then " [MASK]" as one token: no trailing " ". */
    CHECK(n == 6 && ids2[4] == 2 && ids2[5] == 7);
    free(ids2);
    /* Inside a word "ing" is not the added token (its letters go to the model,
     * which only knows them as <unk>); standing alone it is. */
    n = encode(t, "tokenizing ing", false, &ids2);
    CHECK(n == 12 && ids2[10] == 6 && ids2[11] == 8);
    for (int i = 0; i < n - 1; i++)
        CHECK(ids2[i] != 8);
    free(ids2);
    /* rstrip: the spaces after "!" belong to it. */
    n = encode(t, "a!   a", false, &ids2);
    CHECK(ids_are(ids2, n, 3, 2, 9, 2));
    free(ids2);
    pl_tokenizer_free(t);
}

static void test_template_and_config(void)
{
    /* add_bos_token in tokenizer_config.json replaces the post-processor. */
    const char *json =
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"<s>\":1,\"</s>\":2},\"merges\":[]},"
        "\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{\"id\":"
        "\"<s>\",\"type_id\":0}},{\"Sequence\":{\"id\":\"A\",\"type_id\":0}}],\"special_tokens\":"
        "{\"<s>\":{\"id\":\"<s>\",\"ids\":[1],\"tokens\":[\"<s>\"]}}},"
        "\"added_tokens\":[{\"id\":1,\"content\":\"<s>\",\"special\":true,\"normalized\":false},"
        "{\"id\":2,\"content\":\"</s>\",\"special\":true,\"normalized\":false}]}";
    struct pl_err e = {0};
    struct pl_tokenizer *t = load(json, NULL, NULL, &e);
    REQUIRE(t);
    int32_t *ids;
    int n = encode(t, "aa", true, &ids);
    CHECK(ids_are(ids, n, 3, 1, 0, 0));
    free(ids);
    n = encode(t, "aa", false, &ids);
    CHECK(ids_are(ids, n, 2, 0, 0));
    free(ids);
    pl_tokenizer_free(t);

    t = load(json,
             "{\"bos_token\":\"<s>\",\"eos_token\":{\"content\":\"</s>\"},\"add_bos_token\":false,"
             "\"add_eos_token\":true,\"chat_template\":[{\"name\":\"tool_use\",\"template\":\"x\"},"
             "{\"name\":\"default\",\"template\":\"{{ bos_token }}\"}]}",
             NULL, &e);
    REQUIRE(t);
    n = encode(t, "a", true, &ids);
    CHECK(ids_are(ids, n, 2, 0, 2));
    free(ids);
    CHECK(pl_tokenizer_bos_id(t) == 1 && pl_tokenizer_eos_id(t) == 2);
    CHECK(!strcmp(pl_tokenizer_bos_token(t), "<s>") && !strcmp(pl_tokenizer_eos_token(t), "</s>"));
    CHECK(pl_tokenizer_chat_template(t) && !strcmp(pl_tokenizer_chat_template(t), "{{ bos_token }}"));
    pl_tokenizer_free(t);
}

static void test_invalid_utf8_input(void)
{
    /* Bytes that are not UTF-8 encode like U+FFFD (errors="replace"). */
    const char *json =
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"<0xEF>\":1,\"<0xBF>\":2,\"<0xBD>\":3},"
        "\"merges\":[],\"byte_fallback\":true}}";
    struct pl_err e = {0};
    struct pl_tokenizer *t = load(json, NULL, NULL, &e);
    REQUIRE(t);
    int32_t *x, *y;
    int nx = -1, ny = -1;
    CHECK(pl_tokenizer_encode(t, "a\xFF" "a", 3, false, &x, &nx, &e) == PL_STATUS_OK);
    ny = encode(t, "a\xEF\xBF\xBD" "a", false, &y);
    CHECK(nx == ny && nx == 5 && !memcmp(x, y, sizeof(int32_t) * 5));
    CHECK(ids_are(x, nx, 5, 0, 1, 2, 3, 0));
    free(x);
    free(y);
    pl_tokenizer_free(t);
}

/* ---- malformed files ---- */

static void expect_error(const char *json, pl_status want, const char *needle)
{
    struct pl_err e = {0};
    pl_status st;
    struct pl_tokenizer *t = load(json, NULL, &st, &e);
    CHECKF(t == NULL && st == want, "status %d (want %d) for %s", (int)st, (int)want, json);
    CHECKF(strstr(e.msg, needle) != NULL, "message \"%s\" lacks \"%s\"", e.msg, needle);
    pl_tokenizer_free(t);
}

static void test_malformed(void)
{
    expect_error("", PL_STATUS_FORMAT, "tokenizer.json");
    expect_error("{\"model\": ", PL_STATUS_FORMAT, "line 1");
    expect_error("[1,2]", PL_STATUS_FORMAT, "top level");
    expect_error("{}", PL_STATUS_FORMAT, "model");
    expect_error("{\"model\":{\"type\":\"BPE\",\"vocab\":[1],\"merges\":[]}}", PL_STATUS_FORMAT,
                 "model.vocab");
    expect_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":-1},\"merges\":[]}}", PL_STATUS_FORMAT,
                 "model.vocab");
    expect_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":1e12},\"merges\":[]}}", PL_STATUS_FORMAT,
                 "model.vocab");
    expect_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[\"a z\"]}}",
                 PL_STATUS_FORMAT, "model.merges[0]");
    expect_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[\"aa\"]}}",
                 PL_STATUS_FORMAT, "model.merges[0]");
    expect_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[[\"a\"]]}}",
                 PL_STATUS_FORMAT, "model.merges[0]");
    expect_error("{\"model\":{\"type\":\"Unigram\",\"vocab\":[[\"a\",0.0]]}}", PL_STATUS_UNSUPPORTED,
                 "Unigram");
    expect_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{},\"merges\":[]},\"normalizer\":"
                 "{\"type\":\"BertNormalizer\"}}",
                 PL_STATUS_UNSUPPORTED, "BertNormalizer");
    expect_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{},\"merges\":[]},\"normalizer\":"
                 "{\"type\":\"Precompiled\",\"precompiled_charsmap\":\"\"}}",
                 PL_STATUS_UNSUPPORTED, "Precompiled");
    expect_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{},\"merges\":[]},\"pre_tokenizer\":"
                 "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":"
                 "{\"Regex\":\"(\"},\"behavior\":\"Isolated\"}]}}",
                 PL_STATUS_UNSUPPORTED, "pre_tokenizer.pretokenizers[0].pattern");
    expect_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{},\"merges\":[]},\"pre_tokenizer\":"
                 "{\"type\":\"Split\",\"pattern\":{\"String\":\" \"},\"behavior\":\"Sideways\"}}",
                 PL_STATUS_FORMAT, "behavior");
    expect_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{},\"merges\":[]},\"decoder\":"
                 "{\"type\":\"WordPiece\"}}",
                 PL_STATUS_UNSUPPORTED, "decoder.type");
    expect_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{},\"merges\":[]},\"added_tokens\":[{\"id\":0}]}",
                 PL_STATUS_FORMAT, "added_tokens[0].content");
    expect_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{},\"merges\":[]},\"post_processor\":"
                 "{\"type\":\"BertProcessing\"}}",
                 PL_STATUS_UNSUPPORTED, "BertProcessing");
    expect_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]},\"post_processor\":"
                 "{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{\"id\":\"<s>\"}}],"
                 "\"special_tokens\":{}}}",
                 PL_STATUS_FORMAT, "special_tokens");
    expect_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\\ud800\":0},\"merges\":[]}}",
                 PL_STATUS_FORMAT, "surrogate");
    expect_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"\xff\":0},\"merges\":[]}}",
                 PL_STATUS_FORMAT, "UTF-8");

    struct pl_err e = {0};
    struct pl_tokenizer *t = NULL;
    CHECK(pl_tokenizer_load("/nonexistent/dir", &t, &e) == PL_STATUS_NOT_FOUND && t == NULL);
    CHECK(strstr(e.msg, "tokenizer.json") != NULL);
    /* A broken tokenizer_config.json is named as such. */
    const char *ok = "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]}}";
    pl_status st;
    t = load(ok, "{\"bos_token\": }", &st, &e);
    CHECK(t == NULL && st == PL_STATUS_FORMAT && strstr(e.msg, "tokenizer_config.json"));
    pl_tokenizer_free(NULL);
}

/* ---- incremental detokenization ---- */

static void test_detok(void)
{
    /* Byte-level tokens that split one character: nothing is emitted until it is
     * complete, and the stream equals the one-shot decode. */
    const char *json =
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"H\":0,\"i\":1,\"\\u0120\":2,\"\\u00e6\":3,"
        "\"\\u0139\":4,\"\\u00a5\":5,\"\\u0120H\":6},\"merges\":[]},"
        "\"decoder\":{\"type\":\"ByteLevel\"}}";
    struct pl_err e = {0};
    struct pl_tokenizer *t = load(json, NULL, NULL, &e);
    REQUIRE(t);
    int32_t gen[] = {0, 1, 2, 3, 4, 5, 6, 1};
    struct pl_detok d;
    REQUIRE(pl_detok_init(&d, t, NULL, 0, false, &e) == PL_STATUS_OK);
    char *out = NULL;
    size_t len = 0;
    size_t after[8];
    for (int i = 0; i < 8; i++) {
        CHECK(pl_detok_push(&d, gen[i], &out, &len, &e) == PL_STATUS_OK);
        after[i] = len;
    }
    CHECK(pl_detok_flush(&d, &out, &len, &e) == PL_STATUS_OK);
    /* After "\xE6" and "\x97" alone the character is incomplete: held back. */
    CHECK(after[3] == after[2] && after[4] == after[2]);
    CHECK(after[5] == after[2] + 3);
    char *one = decode(t, gen, 8, false);
    CHECK(one && len == strlen(one) && !memcmp(out, one, len));
    CHECK_STR(one, "Hi \xE6\x97\xA5 Hi");
    free(out);
    pl_detok_fini(&d);

    /* With prompt context: the output continues the prompt's text. */
    int32_t prompt[] = {0, 1};
    REQUIRE(pl_detok_init(&d, t, prompt, 2, false, &e) == PL_STATUS_OK);
    out = NULL;
    len = 0;
    CHECK(pl_detok_push(&d, 6, &out, &len, &e) == PL_STATUS_OK);
    CHECK(pl_detok_push(&d, -1, &out, &len, &e) == PL_STATUS_INVALID_ARGUMENT);
    CHECK(pl_detok_flush(&d, &out, &len, &e) == PL_STATUS_OK);
    CHECK(out && len == 2 && !memcmp(out, " H", 2));
    free(out);
    pl_detok_fini(&d);
    pl_detok_fini(&d); /* fini twice is harmless */
    pl_tokenizer_free(t);
}

/* A model vocab padded past the tokenizer (Qwen: 151936 rows, ~151670 tokens):
 * an id in the gap has no token and decodes to "", as in transformers and vLLM,
 * one-shot and streamed, before, between and after real tokens; the prompt may
 * hold one too. Negative ids are no ids. */
static void test_decode_vocab_gap(void)
{
    const char *json =
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"H\":0,\"i\":1,\"\\u0120\":2,\"\\u00e6\":3,"
        "\"\\u0139\":4,\"\\u00a5\":5,\"\\u0120H\":6},\"merges\":[]},"
        "\"decoder\":{\"type\":\"ByteLevel\"}}";
    struct pl_err e = {0};
    struct pl_tokenizer *t = load(json, NULL, NULL, &e);
    REQUIRE(t);
    REQUIRE(pl_tokenizer_vocab_size(t) == 7);
    CHECK(pl_tokenizer_has_id(t, 6) && !pl_tokenizer_has_id(t, 7) && !pl_tokenizer_has_id(t, -1));
    int32_t gap_only[] = {7};
    CHECK_STR(decode(t, gap_only, 1, false), "");
    int32_t mixed[] = {100, 0, 1, 151900, 6, 7};
    CHECK_STR(decode(t, mixed, 6, true), "Hi H");
    int32_t neg[] = {0, -3};
    CHECK(decode(t, neg, 2, false) == NULL);

    /* streamed: the same text, a gap id inside a split character does not break it */
    int32_t gen[] = {0, 9, 3, 4, 12, 5, 6, 1, 1000};
    struct pl_detok d;
    int32_t prompt[] = {0, 8};
    REQUIRE(pl_detok_init(&d, t, prompt, 2, false, &e) == PL_STATUS_OK);
    char *out = NULL;
    size_t len = 0;
    for (int i = 0; i < 9; i++)
        CHECKF(pl_detok_push(&d, gen[i], &out, &len, &e) == PL_STATUS_OK, "push %d: %s",
               (int)gen[i], e.msg);
    CHECK(pl_detok_flush(&d, &out, &len, &e) == PL_STATUS_OK);
    CHECK(out && len == strlen("H\xE6\x97\xA5 Hi") && !memcmp(out, "H\xE6\x97\xA5 Hi", len));
    free(out);
    pl_detok_fini(&d);
    pl_tokenizer_free(t);
}

int main(void)
{
    PL_RUN(test_normalizers);
    PL_RUN(test_split_behaviors);
    PL_RUN(test_pretokenizers);
    PL_RUN(test_decoders);
    PL_RUN(test_bpe_merges);
    PL_RUN(test_added_tokens);
    PL_RUN(test_template_and_config);
    PL_RUN(test_invalid_utf8_input);
    PL_RUN(test_malformed);
    PL_RUN(test_detok);
    PL_RUN(test_decode_vocab_gap);
    return pl_test_summary();
}
