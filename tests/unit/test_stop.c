/*
 * test_stop.c -- stop strings in streamed text and stop tokens.
 *
 * The streaming driver below plays the engine's part: it appends deltas,
 * calls pl_stop_check_strings, releases text[0, len - hold_back) and
 * truncates on a match. The references are written directly: naive strstr
 * over the whole text (earliest start, then lowest index) for the matches,
 * and for the hold-back the longest text suffix that is a proper prefix of a
 * stop string, found by brute force.
 */
#include "engine/stop.h"
#include "test.h"
#include "util/rng.h"

#include <stdint.h>

struct stream {
    char text[4096];
    size_t len, checked;
    char released[4096]; /* what the client has received */
    size_t n_released;
    bool stopped;
    int stop_index;
    bool release_went_back; /* a later truncation cut into released text */
};

static void stream_init(struct stream *s)
{
    memset(s, 0, sizeof(*s));
    s->stop_index = -1;
}

static void release_to(struct stream *s, size_t upto)
{
    if (upto < s->n_released) {
        s->release_went_back = true;
        return;
    }
    memcpy(s->released + s->n_released, s->text + s->n_released, upto - s->n_released);
    s->n_released = upto;
}

/* Appends a delta; returns the hold-back after it (0 once stopped). */
static size_t stream_push(struct stream *s, const char *delta, const char *const *stop,
                          int n_stop, bool include)
{
    if (s->stopped)
        return 0;
    size_t dl = strlen(delta);
    memcpy(s->text + s->len, delta, dl);
    s->len += dl;
    struct pl_stop_match m;
    pl_stop_check_strings(s->text, s->len, s->checked, stop, n_stop, include, &m);
    s->checked = s->len;
    if (m.matched) {
        s->stopped = true;
        s->stop_index = m.stop_index;
        s->len = m.text_len;
        release_to(s, m.text_len);
        return 0;
    }
    CHECK(m.text_len == s->len && m.stop_index == -1);
    release_to(s, s->len - m.hold_back);
    return m.hold_back;
}

/* End of the sequence without a stop string: the held tail goes out as is. */
static void stream_finish(struct stream *s)
{
    if (!s->stopped)
        release_to(s, s->len);
}

static void test_stop_spanning_tokens(void)
{
    const char *stop[] = {"###"};
    struct stream s;
    stream_init(&s);
    CHECK(stream_push(&s, "Hello wor", stop, 1, false) == 0);
    CHECK(s.n_released == 9);
    CHECK(stream_push(&s, "ld##", stop, 1, false) == 2); /* "##" may become "###" */
    CHECK(s.n_released == 11 && !memcmp(s.released, "Hello world", 11));
    stream_push(&s, "#END more", stop, 1, false);
    CHECK(s.stopped && s.stop_index == 0);
    CHECK(s.len == 11 && s.n_released == 11 && !memcmp(s.released, "Hello world", 11));
    CHECK(!s.release_went_back);

    /* a stop string split over three tokens, one byte each */
    const char *stop2[] = {"abc"};
    stream_init(&s);
    stream_push(&s, "xa", stop2, 1, false);
    stream_push(&s, "b", stop2, 1, false);
    CHECK(!s.stopped && s.n_released == 1);
    stream_push(&s, "c", stop2, 1, false);
    CHECK(s.stopped && s.len == 1 && s.n_released == 1 && s.released[0] == 'x');

    /* the stop string at the very start */
    stream_init(&s);
    stream_push(&s, "abcdef", stop2, 1, false);
    CHECK(s.stopped && s.len == 0 && s.n_released == 0);
}

static void test_several_stops_earliest_wins(void)
{
    struct pl_stop_match m;
    const char *stops[] = {"END", "ab"};
    const char *t = "xx ab yy END";
    pl_stop_check_strings(t, strlen(t), 0, stops, 2, false, &m);
    CHECK(m.matched && m.stop_index == 1 && m.text_len == 3);
    /* the same start: the lower index wins */
    const char *same[] = {"abc", "ab"};
    pl_stop_check_strings("zabcz", 5, 0, same, 2, false, &m);
    CHECK(m.matched && m.stop_index == 0 && m.text_len == 1);
    const char *same2[] = {"ab", "abc"};
    pl_stop_check_strings("zabcz", 5, 0, same2, 2, true, &m);
    CHECK(m.matched && m.stop_index == 0 && m.text_len == 3);
    /* an occurrence wholly inside already-checked text is not looked at again */
    pl_stop_check_strings("ab then more", 12, 5, stops, 2, false, &m);
    CHECK(!m.matched);
    /* but one that ends in the new text is found even if it starts before */
    pl_stop_check_strings("xxEND", 5, 4, stops, 2, false, &m);
    CHECK(m.matched && m.text_len == 2);
}

static void test_include_stop_str(void)
{
    const char *stop[] = {"</s>", "\n\n"};
    struct stream s;
    stream_init(&s);
    /* nothing is held back: a partial stop string is output either way */
    CHECK(stream_push(&s, "one </", stop, 2, true) == 0);
    CHECK(s.n_released == 6);
    stream_push(&s, "s> two", stop, 2, true);
    CHECK(s.stopped && s.stop_index == 0 && s.len == 8);
    CHECK(s.n_released == 8 && !memcmp(s.released, "one </s>", 8) && !s.release_went_back);
}

static void test_hold_back_and_release(void)
{
    const char *stop[] = {"</s>"};
    struct stream s;
    stream_init(&s);
    CHECK(stream_push(&s, "a <", stop, 1, false) == 1);
    CHECK(stream_push(&s, "/", stop, 1, false) == 2);
    CHECK(s.n_released == 2);
    CHECK(stream_push(&s, "x", stop, 1, false) == 0); /* "</x" cannot become "</s>" */
    CHECK(s.n_released == 5 && !memcmp(s.released, "a </x", 5));
    stream_push(&s, " <", stop, 1, false);
    stream_finish(&s); /* the sequence ended for another reason: release the tail */
    CHECK(!s.stopped && s.n_released == 7 && !memcmp(s.released, "a </x <", 7));

    /* the held tail shrinks to the longest suffix that is still a prefix */
    const char *aab[] = {"aab"};
    stream_init(&s);
    CHECK(stream_push(&s, "xaa", aab, 1, false) == 2);
    CHECK(stream_push(&s, "a", aab, 1, false) == 2); /* "xaaa": "aa" held, one 'a' released */
    CHECK(s.n_released == 2);
    stream_push(&s, "b", aab, 1, false); /* "xaaab": stop at 2 */
    CHECK(s.stopped && s.len == 2 && !memcmp(s.released, "xa", 2) && !s.release_went_back);

    /* the longest candidate over several stop strings */
    const char *multi[] = {"xyz", "zzzq"};
    struct pl_stop_match m;
    pl_stop_check_strings("abczz", 5, 0, multi, 2, false, &m);
    CHECK(!m.matched && m.hold_back == 2);
    pl_stop_check_strings("abcxy", 5, 0, multi, 2, false, &m);
    CHECK(m.hold_back == 2);
    pl_stop_check_strings("", 0, 0, multi, 2, false, &m);
    CHECK(!m.matched && m.hold_back == 0 && m.text_len == 0);
}

static void test_utf8(void)
{
    /* "。" is e3 80 82; tokens split at character boundaries */
    const char *stop[] = {"\xe3\x80\x82", "\xe5\xa5\xbd\xe7\x9a\x84"}; /* "。", "好的" */
    struct stream s;
    stream_init(&s);
    CHECK(stream_push(&s, "\xe4\xbd\xa0", stop, 2, false) == 0); /* 你 */
    CHECK(stream_push(&s, "\xe5\xa5\xbd", stop, 2, false) == 3); /* 好: may start 好的 */
    CHECK(s.n_released == 3);
    CHECK(stream_push(&s, "\xe5\x90\x97", stop, 2, false) == 0); /* 吗 */
    CHECK(s.n_released == 9);
    stream_push(&s, "\xe3\x80\x82\xe4\xb8\x96", stop, 2, false); /* 。世 */
    CHECK(s.stopped && s.stop_index == 0 && s.len == 9);
    CHECK(!memcmp(s.released, "\xe4\xbd\xa0\xe5\xa5\xbd\xe5\x90\x97", 9));
}

/* The longest proper prefix of a stop string that ends the text (brute force). */
static size_t ref_hold(const char *t, size_t len, const char *const *stop, int n)
{
    size_t best = 0;
    for (int i = 0; i < n; i++) {
        size_t sl = strlen(stop[i]);
        for (size_t l = 1; l < sl && l <= len; l++)
            if (!strncmp(t + len - l, stop[i], l) && l > best)
                best = l;
    }
    return best;
}

static void test_random_streams_against_reference(void)
{
    /* an alphabet with 1-, 2- and 3-byte characters */
    static const char *const chars[] = {"a", "b", "\xc3\xa9", "\xe2\x82\xac", " "};
    struct pl_rng g;
    pl_rng_seed(&g, 2024);
    int n_stopped = 0;
    for (int trial = 0; trial < 3000; trial++) {
        char stop_buf[3][32];
        const char *stop[3];
        int n_stop = 1 + (int)(pl_rng_uniform(&g) * 3);
        for (int i = 0; i < n_stop; i++) {
            int n = 1 + (int)(pl_rng_uniform(&g) * 3);
            stop_buf[i][0] = 0;
            for (int j = 0; j < n; j++)
                strcat(stop_buf[i], chars[(int)(pl_rng_uniform(&g) * 5)]);
            stop[i] = stop_buf[i];
        }
        bool include = pl_rng_uniform(&g) < 0.3;
        struct stream s;
        stream_init(&s);
        int n_tokens = 1 + (int)(pl_rng_uniform(&g) * 20);
        for (int t = 0; t < n_tokens && !s.stopped; t++) {
            char delta[64] = "";
            int n = 1 + (int)(pl_rng_uniform(&g) * 3);
            for (int j = 0; j < n; j++)
                strcat(delta, chars[(int)(pl_rng_uniform(&g) * 5)]);
            /* the reference: earlier deltas had no match, so any match in the
             * whole text ends in this delta; earliest start, then lowest index */
            char whole[4096];
            memcpy(whole, s.text, s.len);
            strcpy(whole + s.len, delta);
            long best = -1;
            int best_i = -1;
            for (int i = 0; i < n_stop; i++) {
                const char *f = strstr(whole, stop[i]);
                if (f && (best < 0 || f - whole < best)) {
                    best = f - whole;
                    best_i = i;
                }
            }
            size_t hold = stream_push(&s, delta, stop, n_stop, include);
            if (best >= 0) {
                CHECK(s.stopped && s.stop_index == best_i);
                size_t want = (size_t)best + (include ? strlen(stop[best_i]) : 0);
                CHECKF(s.len == want, "trial %d: len %zu, want %zu", trial, s.len, want);
                n_stopped++;
            } else {
                CHECK(!s.stopped);
                size_t want_hold = include ? 0 : ref_hold(whole, strlen(whole), stop, n_stop);
                CHECKF(hold == want_hold, "trial %d: hold %zu, want %zu", trial, hold, want_hold);
                /* the release point never splits a UTF-8 character */
                CHECK(s.n_released == s.len ||
                      ((unsigned char)s.text[s.n_released] & 0xc0) != 0x80);
            }
        }
        stream_finish(&s);
        CHECK(!s.release_went_back);
        CHECK(s.n_released == s.len && !memcmp(s.released, s.text, s.len));
    }
    CHECK(n_stopped > 500); /* both outcomes were exercised */
}

static void test_stop_tokens(void)
{
    struct pl_sampling_params p;
    pl_sampling_params_default(&p);
    const int32_t eos[] = {2, 7}; /* primary eos 2; generation_config adds 7 */
    const int32_t stop_ids[] = {9};
    p.stop_token_ids = stop_ids;
    p.n_stop_token_ids = 1;
    p.max_tokens = 10;
    p.min_tokens = 3;
    CHECK(pl_stop_check_token(&p, eos, 2, 5, 4, 100, 0) == PL_STOP_TOKEN_NONE);
    CHECK(pl_stop_check_token(&p, eos, 2, 2, 4, 100, 0) == PL_STOP_TOKEN_EOS);
    CHECK(pl_stop_check_token(&p, eos, 2, 7, 4, 100, 0) == PL_STOP_TOKEN_STOP_ID);
    CHECK(pl_stop_check_token(&p, eos, 2, 9, 4, 100, 0) == PL_STOP_TOKEN_STOP_ID);
    /* below min_tokens nothing stops (the sampler masks these anyway) */
    CHECK(pl_stop_check_token(&p, eos, 2, 2, 2, 100, 0) == PL_STOP_TOKEN_NONE);
    /* length first, even on an eos */
    CHECK(pl_stop_check_token(&p, eos, 2, 2, 10, 100, 0) == PL_STOP_TOKEN_LENGTH);
    CHECK(pl_stop_check_token(&p, eos, 2, 5, 4, 64, 64) == PL_STOP_TOKEN_LENGTH);
    CHECK(pl_stop_check_token(&p, eos, 2, 5, 4, 63, 64) == PL_STOP_TOKEN_NONE);
    /* ignore_eos: eos ids no longer stop, stop_token_ids still do */
    p.ignore_eos = true;
    CHECK(pl_stop_check_token(&p, eos, 2, 2, 4, 100, 0) == PL_STOP_TOKEN_NONE);
    CHECK(pl_stop_check_token(&p, eos, 2, 7, 4, 100, 0) == PL_STOP_TOKEN_NONE);
    CHECK(pl_stop_check_token(&p, eos, 2, 9, 4, 100, 0) == PL_STOP_TOKEN_STOP_ID);
    /* max_tokens None: only the context limit */
    p.max_tokens = -1;
    CHECK(pl_stop_check_token(&p, eos, 2, 5, 100000, 200000, 0) == PL_STOP_TOKEN_NONE);
}

int main(void)
{
    PL_RUN(test_stop_spanning_tokens);
    PL_RUN(test_several_stops_earliest_wins);
    PL_RUN(test_include_stop_str);
    PL_RUN(test_hold_back_and_release);
    PL_RUN(test_utf8);
    PL_RUN(test_random_streams_against_reference);
    PL_RUN(test_stop_tokens);
    return pl_test_summary();
}
