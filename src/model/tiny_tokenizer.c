/*
 * tiny_tokenizer.c -- the default model's byte-level BPE tokenizer, trained here.
 *
 * Owns: a small deterministic BPE trainer and the writer of tokenizer.json /
 * tokenizer_config.json in the Llama 3 layout (Split pre-tokenizer with the
 * Llama 3 regex + ByteLevel, ByteLevel decoder, TemplateProcessing that puts
 * <|begin_of_text|> first) with a ChatML chat template.
 * Training: the embedded English text below is split by the same regex the
 * tokenizer uses; each distinct piece becomes a word of byte symbols weighted
 * by its count; each round merges the most frequent adjacent pair (ties: the
 * smallest left id, then the smallest right id) until n_merges new tokens exist.
 * Ids: bytes 0..255 are ids 0..255, merged tokens follow in creation order, the
 * four special tokens come last. Nothing depends on the machine: the result is
 * a pure function of the text and n_merges.
 */
#include "model/tiny_tokenizer.h"

#include "model/tiny_json.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Original English prose written for this project (no outside source). */
static const char *const CORPUS[] = {
    "The best way to learn about a new subject is to use it every day. People who study languages, music, or mathematics often say that practice matters more than talent. When you learn about AI, you can start with small programs, read what other people have written, and then build something of your own. A model that predicts the next word in a sentence is a good place to begin, because you can see what it does and why it fails.\n",
    "\n",
    "San Francisco is a city known for its hills, its fog, and its bridges. The Golden Gate Bridge crosses the strait between the bay and the ocean. Many people visit the city to walk along the water, ride the cable cars, and eat in small restaurants. The city is also known for its parks, its music, and the many companies that work on computers and software.\n",
    "\n",
    "What is the capital of France? The capital of France is Paris. Paris is on the river Seine, in the north of the country. It is known for its museums, its cafes, and its long history. The capital of Italy is Rome, the capital of Spain is Madrid, and the capital of Germany is Berlin. Each of these cities has millions of people and many old buildings.\n",
    "\n",
    "Write a short story about a robot who discovers music. Once there was a small robot who worked in a factory at the edge of a city. Every day the robot moved boxes from one side of the room to the other. One night, when the factory was quiet, the robot heard a sound from the street. Someone was playing a piano in the house across the road. The robot stopped and listened. The notes went up and down, slow and then fast, like rain on a roof. The robot had never heard anything like it. The next day it tapped its metal hand on a box and listened to the sound. It tapped again, faster, and then slower. Soon it was making a song of its own, one tap at a time. The other machines did not understand, but the robot did not mind. It had found something that was not about boxes at all.\n",
    "\n",
    "Learning is a process that takes time. A student reads a page, writes a few notes, and then tries to explain the idea in their own words. If the explanation is clear, the idea has been learned. If it is not, the student reads the page again. Teachers know that questions are more useful than answers, because a good question shows what the student does not yet understand.\n",
    "\n",
    "Computers follow instructions. A program is a list of instructions that a computer can run, one after another. The instructions can add numbers, compare them, store them in memory, and read them back. Modern computers can run billions of instructions every second. Even so, a program that is written badly can be slow, and a program that is written well can be fast on a small machine.\n",
    "\n",
    "Language models read text as tokens. A token can be a word, a part of a word, or a single character. The model learns which tokens often follow each other, and it uses this knowledge to predict the next token. When the model writes a long answer, it predicts one token, adds it to the text, and predicts again. This is why the first words of a prompt can change the whole answer.\n",
    "\n",
    "The weather changes from day to day. In the morning the sky may be clear, and by the afternoon the clouds may bring rain. In the mountains the air is cold, and near the sea it is often mild. Farmers watch the weather closely, because rain and sun decide how well their plants will grow.\n",
    "\n",
    "Music is made of sound and silence. A song has a rhythm, a melody, and often words. Some music is played by one person on one instrument, and some is played by an orchestra of a hundred people. Music can make people happy or sad, and it can help them remember places and times from long ago.\n",
    "\n",
    "Numbers are everywhere: 1, 2, 3, 10, 42, 100, 2024, and 3.14. We count with them, we measure with them, and we use them to describe the world. A recipe might say to use 2 cups of flour and 1 cup of water, and a map might say that the next town is 15 miles away.\n",
    "\n",
    "Questions and answers:\n",
    "Q: Where do you live?\n",
    "A: I live in a small house near the river.\n",
    "Q: What do you like to do?\n",
    "A: I like to read, to walk, and to listen to music.\n",
    "Q: Why is the sky blue?\n",
    "A: Light from the sun is scattered by the air, and blue light is scattered the most.\n",
    "\n",
    "The end of a story is often the hardest part to write. A good ending answers the questions that the story asked, but it also leaves the reader with something to think about. The robot in the factory kept making music, and one day the person with the piano came to the window and listened.\n"
};

/* The Llama 3 pre-tokenizer pattern, as it appears (decoded) in its tokenizer.json. */
static const char LLAMA3_PATTERN[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}|"
    " ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

static const char CHAT_TEMPLATE[] =
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}";

static const char *const SPECIALS[PL_TINY_TOK_N_SPECIAL] = {
    "<|begin_of_text|>", "<|end_of_text|>", "<|im_start|>", "<|im_end|>"};

struct piece {
    const char *s;
    size_t n;
};

struct word {
    int32_t *sym; /* [n] token ids */
    int n;
    uint32_t count;
};

struct token {
    char *bytes; /* raw bytes, [n] */
    size_t n;
};

struct trainer {
    char *text;
    struct word *words;
    int n_words;
    struct token *toks;
    int n_toks, cap_toks;
    int32_t (*merges)[2];
    int n_merges;
};

static int cmp_piece(const void *a, const void *b)
{
    const struct piece *x = a, *y = b;
    size_t n = x->n < y->n ? x->n : y->n;
    int c = memcmp(x->s, y->s, n);
    if (c)
        return c;
    return (x->n > y->n) - (x->n < y->n);
}

static void trainer_fini(struct trainer *t)
{
    free(t->text);
    for (int i = 0; i < t->n_words; i++)
        free(t->words[i].sym);
    free(t->words);
    for (int i = 0; i < t->n_toks; i++)
        free(t->toks[i].bytes);
    free(t->toks);
    free(t->merges);
}

/* Splits the corpus with the Llama 3 pattern into weighted distinct words. */
static pl_status build_words(struct trainer *t, struct pl_err *err)
{
    size_t len = 0;
    for (size_t i = 0; i < sizeof(CORPUS) / sizeof(CORPUS[0]); i++)
        len += strlen(CORPUS[i]);
    t->text = malloc(len + 1);
    if (!t->text)
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "tokenizer corpus");
    size_t at = 0;
    for (size_t i = 0; i < sizeof(CORPUS) / sizeof(CORPUS[0]); i++) {
        size_t n = strlen(CORPUS[i]);
        memcpy(t->text + at, CORPUS[i], n);
        at += n;
    }
    t->text[len] = '\0';

    int errcode;
    PCRE2_SIZE erroff;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)LLAMA3_PATTERN, PCRE2_ZERO_TERMINATED,
                                   PCRE2_UTF | PCRE2_UCP, &errcode, &erroff, NULL);
    if (!re)
        return pl_err_set(err, PL_STATUS_INTERNAL, "pre-tokenizer pattern does not compile (%d)",
                          errcode);
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
    struct piece *pieces = malloc(sizeof(*pieces) * (len + 1));
    if (!md || !pieces) {
        pcre2_match_data_free(md);
        pcre2_code_free(re);
        free(pieces);
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "tokenizer pieces");
    }
    size_t n_pieces = 0, pos = 0;
    /* "Isolated" split: matches are pieces, and so are the gaps between them */
    while (pos < len) {
        int rc = pcre2_match(re, (PCRE2_SPTR)t->text, len, pos, 0, md, NULL);
        if (rc < 0) {
            pieces[n_pieces++] = (struct piece){t->text + pos, len - pos};
            break;
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        if (ov[0] > pos)
            pieces[n_pieces++] = (struct piece){t->text + pos, ov[0] - pos};
        if (ov[1] == ov[0]) { /* an empty match cannot happen with this pattern; step anyway */
            pos = ov[0] + 1;
            continue;
        }
        pieces[n_pieces++] = (struct piece){t->text + ov[0], ov[1] - ov[0]};
        pos = ov[1];
    }
    pcre2_match_data_free(md);
    pcre2_code_free(re);

    qsort(pieces, n_pieces, sizeof(*pieces), cmp_piece);
    t->words = calloc(n_pieces ? n_pieces : 1, sizeof(*t->words));
    if (!t->words) {
        free(pieces);
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "tokenizer words");
    }
    for (size_t i = 0; i < n_pieces;) {
        size_t j = i + 1;
        while (j < n_pieces && !cmp_piece(&pieces[i], &pieces[j]))
            j++;
        struct word *w = &t->words[t->n_words++];
        w->n = (int)pieces[i].n;
        w->count = (uint32_t)(j - i);
        w->sym = malloc(sizeof(int32_t) * pieces[i].n);
        if (!w->sym) {
            free(pieces);
            return pl_err_set(err, PL_STATUS_NO_MEMORY, "tokenizer words");
        }
        for (size_t k = 0; k < pieces[i].n; k++)
            w->sym[k] = (unsigned char)pieces[i].s[k];
        i = j;
    }
    free(pieces);
    return PL_STATUS_OK;
}

static int find_token(const struct trainer *t, const char *bytes, size_t n)
{
    for (int i = 0; i < t->n_toks; i++)
        if (t->toks[i].n == n && !memcmp(t->toks[i].bytes, bytes, n))
            return i;
    return -1;
}

static pl_status train(struct trainer *t, int n_new, struct pl_err *err)
{
    t->cap_toks = 256 + n_new;
    t->toks = calloc((size_t)t->cap_toks, sizeof(*t->toks));
    /* a merge whose result already exists adds no token, so merges may exceed n_new;
     * bound them by the corpus size (every merge shortens some word) */
    size_t max_merges = (size_t)n_new + 1;
    for (int i = 0; i < t->n_words; i++)
        max_merges += (size_t)t->words[i].n;
    t->merges = malloc(sizeof(*t->merges) * max_merges);
    uint32_t *counts = calloc((size_t)t->cap_toks * (size_t)t->cap_toks, sizeof(uint32_t));
    if (!t->toks || !t->merges || !counts) {
        free(counts);
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "tokenizer training tables");
    }
    for (int b = 0; b < 256; b++) {
        t->toks[b].bytes = malloc(1);
        if (!t->toks[b].bytes) {
            free(counts);
            return pl_err_set(err, PL_STATUS_NO_MEMORY, "tokenizer tokens");
        }
        t->toks[b].bytes[0] = (char)b;
        t->toks[b].n = 1;
        t->n_toks++;
    }
    const size_t cap = (size_t)t->cap_toks;
    while (t->n_toks < t->cap_toks) {
        uint32_t best = 0;
        int32_t ba = -1, bb = -1;
        for (int i = 0; i < t->n_words; i++) {
            const struct word *w = &t->words[i];
            for (int k = 0; k + 1 < w->n; k++) {
                uint32_t *c = &counts[(size_t)w->sym[k] * cap + (size_t)w->sym[k + 1]];
                *c += w->count;
                if (*c > best || (*c == best && (w->sym[k] < ba ||
                                                 (w->sym[k] == ba && w->sym[k + 1] < bb)))) {
                    best = *c;
                    ba = w->sym[k];
                    bb = w->sym[k + 1];
                }
            }
        }
        for (int i = 0; i < t->n_words; i++) {
            const struct word *w = &t->words[i];
            for (int k = 0; k + 1 < w->n; k++)
                counts[(size_t)w->sym[k] * cap + (size_t)w->sym[k + 1]] = 0;
        }
        if (best == 0)
            break; /* every word is a single token: the corpus is exhausted */
        /* The best pair's final count is the true maximum: the running maximum above
         * only ever grows, and ties resolve to the smallest (left, right) ids. */
        size_t n = t->toks[ba].n + t->toks[bb].n;
        char *bytes = malloc(n);
        if (!bytes) {
            free(counts);
            return pl_err_set(err, PL_STATUS_NO_MEMORY, "tokenizer tokens");
        }
        memcpy(bytes, t->toks[ba].bytes, t->toks[ba].n);
        memcpy(bytes + t->toks[ba].n, t->toks[bb].bytes, t->toks[bb].n);
        int id = find_token(t, bytes, n);
        if (id < 0) {
            id = t->n_toks++;
            t->toks[id].bytes = bytes;
            t->toks[id].n = n;
        } else {
            free(bytes);
        }
        t->merges[t->n_merges][0] = ba;
        t->merges[t->n_merges][1] = bb;
        t->n_merges++;
        for (int i = 0; i < t->n_words; i++) {
            struct word *w = &t->words[i];
            int o = 0;
            for (int k = 0; k < w->n;) {
                if (k + 1 < w->n && w->sym[k] == ba && w->sym[k + 1] == bb) {
                    w->sym[o++] = id;
                    k += 2;
                } else {
                    w->sym[o++] = w->sym[k++];
                }
            }
            w->n = o;
        }
    }
    free(counts);
    return PL_STATUS_OK;
}

/* GPT-2's reversible byte -> printable code point map used by ByteLevel. */
static void byte_level_map(uint32_t cp[256])
{
    int extra = 0;
    for (int b = 0; b < 256; b++) {
        bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
        cp[b] = printable ? (uint32_t)b : (uint32_t)(256 + extra++);
    }
}

/* Appends the ByteLevel form of raw bytes as UTF-8 into out (cap >= 2*n+1). */
static size_t byte_level_str(const uint32_t cp[256], const char *bytes, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t c = cp[(unsigned char)bytes[i]];
        if (c < 0x80) {
            out[o++] = (char)c;
        } else { /* every mapped code point is below 0x800: two UTF-8 bytes */
            out[o++] = (char)(0xC0 | (c >> 6));
            out[o++] = (char)(0x80 | (c & 0x3F));
        }
    }
    out[o] = '\0';
    return o;
}

static void put_added_token(struct pl_tjson *b, int id, const char *content, bool with_id)
{
    if (with_id)
        pl_tjson_printf(b, "{\"id\": %d, \"content\": ", id);
    else
        pl_tjson_put(b, "{\"content\": ");
    pl_tjson_str(b, content, strlen(content));
    pl_tjson_put(b, ", \"lstrip\": false, \"normalized\": false, \"rstrip\": false, "
                    "\"single_word\": false, \"special\": true}");
}

static pl_status write_tokenizer_json(const struct trainer *t, const char *dir, int first_special,
                                      struct pl_err *err)
{
    uint32_t cp[256];
    byte_level_map(cp);
    struct pl_tjson b;
    pl_tjson_init(&b);
    pl_tjson_put(&b, "{\n  \"version\": \"1.0\",\n  \"truncation\": null,\n  \"padding\": null,\n"
                     "  \"added_tokens\": [\n");
    for (int i = 0; i < PL_TINY_TOK_N_SPECIAL; i++) {
        pl_tjson_put(&b, "    ");
        put_added_token(&b, first_special + i, SPECIALS[i], true);
        pl_tjson_put(&b, i + 1 < PL_TINY_TOK_N_SPECIAL ? ",\n" : "\n");
    }
    pl_tjson_put(&b, "  ],\n  \"normalizer\": null,\n  \"pre_tokenizer\": {\"type\": \"Sequence\", "
                     "\"pretokenizers\": [{\"type\": \"Split\", \"pattern\": {\"Regex\": ");
    pl_tjson_str(&b, LLAMA3_PATTERN, strlen(LLAMA3_PATTERN));
    pl_tjson_put(&b, "}, \"behavior\": \"Isolated\", \"invert\": false}, {\"type\": \"ByteLevel\", "
                     "\"add_prefix_space\": false, \"trim_offsets\": true, \"use_regex\": false}]},\n");
    pl_tjson_put(&b, "  \"post_processor\": {\"type\": \"Sequence\", \"processors\": [{\"type\": "
                     "\"ByteLevel\", \"add_prefix_space\": true, \"trim_offsets\": false, "
                     "\"use_regex\": true}, {\"type\": \"TemplateProcessing\", \"single\": "
                     "[{\"SpecialToken\": {\"id\": \"<|begin_of_text|>\", \"type_id\": 0}}, "
                     "{\"Sequence\": {\"id\": \"A\", \"type_id\": 0}}], \"pair\": [{\"SpecialToken\": "
                     "{\"id\": \"<|begin_of_text|>\", \"type_id\": 0}}, {\"Sequence\": {\"id\": \"A\", "
                     "\"type_id\": 0}}, {\"SpecialToken\": {\"id\": \"<|begin_of_text|>\", "
                     "\"type_id\": 1}}, {\"Sequence\": {\"id\": \"B\", \"type_id\": 1}}], "
                     "\"special_tokens\": {\"<|begin_of_text|>\": {\"id\": \"<|begin_of_text|>\", ");
    pl_tjson_printf(&b, "\"ids\": [%d], \"tokens\": [\"<|begin_of_text|>\"]}}}]},\n", first_special);
    pl_tjson_put(&b, "  \"decoder\": {\"type\": \"ByteLevel\", \"add_prefix_space\": true, "
                     "\"trim_offsets\": true, \"use_regex\": true},\n");
    pl_tjson_put(&b, "  \"model\": {\n    \"type\": \"BPE\",\n    \"dropout\": null,\n"
                     "    \"unk_token\": null,\n    \"continuing_subword_prefix\": null,\n"
                     "    \"end_of_word_suffix\": null,\n    \"fuse_unk\": false,\n"
                     "    \"byte_fallback\": false,\n    \"ignore_merges\": true,\n"
                     "    \"vocab\": {\n");
    char *s = NULL;
    size_t max_n = 1;
    for (int i = 0; i < t->n_toks; i++)
        if (t->toks[i].n > max_n)
            max_n = t->toks[i].n;
    s = malloc(4 * max_n + 2);
    char *s2 = malloc(4 * max_n + 2);
    if (!s || !s2) {
        free(s);
        free(s2);
        pl_tjson_fini(&b);
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "tokenizer.json");
    }
    for (int i = 0; i < t->n_toks; i++) {
        size_t n = byte_level_str(cp, t->toks[i].bytes, t->toks[i].n, s);
        pl_tjson_put(&b, "      ");
        pl_tjson_str(&b, s, n);
        pl_tjson_printf(&b, ": %d%s\n", i, i + 1 < t->n_toks ? "," : "");
    }
    pl_tjson_put(&b, "    },\n    \"merges\": [\n");
    for (int m = 0; m < t->n_merges; m++) {
        const struct token *l = &t->toks[t->merges[m][0]], *r = &t->toks[t->merges[m][1]];
        size_t nl = byte_level_str(cp, l->bytes, l->n, s);
        size_t nr = byte_level_str(cp, r->bytes, r->n, s2);
        /* "left right": ByteLevel strings never contain a space (0x20 maps to U+0120) */
        s[nl] = ' ';
        memcpy(s + nl + 1, s2, nr);
        pl_tjson_put(&b, "      ");
        pl_tjson_str(&b, s, nl + 1 + nr);
        pl_tjson_put(&b, m + 1 < t->n_merges ? ",\n" : "\n");
    }
    pl_tjson_put(&b, "    ]\n  }\n}\n");
    free(s);
    free(s2);
    pl_status st = pl_tjson_write_file(&b, dir, "tokenizer.json", err);
    pl_tjson_fini(&b);
    return st;
}

static pl_status write_tokenizer_config(const char *dir, int first_special, struct pl_err *err)
{
    struct pl_tjson b;
    pl_tjson_init(&b);
    pl_tjson_put(&b, "{\n  \"add_bos_token\": true,\n  \"add_eos_token\": false,\n"
                     "  \"added_tokens_decoder\": {\n");
    for (int i = 0; i < PL_TINY_TOK_N_SPECIAL; i++) {
        pl_tjson_printf(&b, "    \"%d\": ", first_special + i);
        put_added_token(&b, 0, SPECIALS[i], false);
        pl_tjson_put(&b, i + 1 < PL_TINY_TOK_N_SPECIAL ? ",\n" : "\n");
    }
    pl_tjson_put(&b, "  },\n  \"bos_token\": \"<|begin_of_text|>\",\n  \"chat_template\": ");
    pl_tjson_str(&b, CHAT_TEMPLATE, strlen(CHAT_TEMPLATE));
    pl_tjson_put(&b, ",\n  \"clean_up_tokenization_spaces\": false,\n"
                     "  \"eos_token\": \"<|end_of_text|>\",\n"
                     "  \"model_input_names\": [\"input_ids\", \"attention_mask\"],\n"
                     "  \"model_max_length\": 2048,\n"
                     "  \"pad_token\": \"<|end_of_text|>\",\n"
                     "  \"tokenizer_class\": \"PreTrainedTokenizerFast\"\n}\n");
    pl_status st = pl_tjson_write_file(&b, dir, "tokenizer_config.json", err);
    pl_tjson_fini(&b);
    return st;
}

pl_status pl_tiny_tokenizer_write(const char *dir, int n_new_tokens,
                                  struct pl_tiny_tokenizer_info *info, struct pl_err *err)
{
    if (n_new_tokens < 0 || n_new_tokens > 4096)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT, "tokenizer: %d merges out of range",
                          n_new_tokens);
    struct trainer t;
    memset(&t, 0, sizeof(t));
    pl_status st = build_words(&t, err);
    if (st == PL_STATUS_OK)
        st = train(&t, n_new_tokens, err);
    if (st == PL_STATUS_OK && t.n_toks != 256 + n_new_tokens)
        st = pl_err_set(err, PL_STATUS_INTERNAL,
                        "tokenizer: the corpus allows only %d merged tokens, %d wanted",
                        t.n_toks - 256, n_new_tokens);
    int first_special = t.n_toks;
    if (st == PL_STATUS_OK && dir)
        st = write_tokenizer_json(&t, dir, first_special, err);
    if (st == PL_STATUS_OK && dir)
        st = write_tokenizer_config(dir, first_special, err);
    if (st == PL_STATUS_OK && info) {
        info->n_vocab = first_special + PL_TINY_TOK_N_SPECIAL;
        info->n_merges = t.n_merges;
        info->bos_id = first_special;
        info->eos_id = first_special + 1;
        info->im_start_id = first_special + 2;
        info->im_end_id = first_special + 3;
    }
    trainer_fini(&t);
    return st;
}
