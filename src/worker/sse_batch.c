/*
 * sse_batch.c -- groups an OpenAI Server-Sent Events stream into RunPod stream
 * chunks (spec 4.4, the classic worker-vllm OpenAI-route streaming): k events
 * per chunk, k following the batch-size schedule, as raw text or as parsed
 * event objects (RAW_OPENAI_OUTPUT).
 *
 * Owns: the partial event carried between feeds and the chunk being built.
 * Invariant: chunk content depends only on the event sequence, never on how
 * the bytes were split into feeds.
 */
#include "worker/runpod.h"

#include <stdlib.h>
#include <string.h>

void pl_rp_sse_init(struct pl_rp_sse_batcher *b, const struct pl_rp_schedule *sched, bool raw)
{
    memset(b, 0, sizeof(*b));
    b->sched = *sched;
    b->raw = raw;
}

void pl_rp_sse_fini(struct pl_rp_sse_batcher *b)
{
    free(b->pending);
    free(b->chunk);
    json_decref(b->events);
    memset(b, 0, sizeof(*b));
}

static bool grow(char **buf, size_t *n, const char *s, size_t k)
{
    char *nb = realloc(*buf, *n + k + 1);
    if (!nb)
        return false;
    memcpy(nb + *n, s, k);
    *n += k;
    nb[*n] = '\0';
    *buf = nb;
    return true;
}

static bool emit_chunk(struct pl_rp_sse_batcher *b, json_t *out)
{
    if (b->count == 0)
        return true;
    json_t *v;
    if (b->raw) {
        v = json_stringn(b->chunk ? b->chunk : "", b->n_chunk);
        b->n_chunk = 0;
    } else {
        v = b->events;
        b->events = NULL;
    }
    if (!v || json_array_append_new(out, v) != 0)
        return false;
    b->count = 0;
    pl_rp_schedule_next(&b->sched);
    return true;
}

/* One complete event (its text includes the blank-line terminator). */
static bool add_event(struct pl_rp_sse_batcher *b, const char *ev, size_t len, json_t *out)
{
    /* the payload: the concatenated "data:" lines */
    char *payload = NULL;
    size_t n_payload = 0;
    for (const char *p = ev; p < ev + len;) {
        const char *eol = memchr(p, '\n', (size_t)(ev + len - p));
        size_t ll = eol ? (size_t)(eol - p) : (size_t)(ev + len - p);
        if (ll >= 5 && !strncmp(p, "data:", 5)) {
            const char *d = p + 5;
            size_t dl = ll - 5;
            if (dl && *d == ' ')
                d++, dl--;
            if (dl && d[dl - 1] == '\r')
                dl--;
            if ((n_payload && !grow(&payload, &n_payload, "\n", 1)) ||
                !grow(&payload, &n_payload, d, dl)) {
                free(payload);
                return false;
            }
        }
        p += ll + 1;
    }
    bool ok = true;
    if (b->raw) {
        ok = grow(&b->chunk, &b->n_chunk, ev, len);
    } else if (payload && strcmp(payload, "[DONE]") != 0) {
        json_t *obj = json_loadb(payload, n_payload, 0, NULL);
        if (!obj)
            obj = json_stringn(payload, n_payload);
        if (!b->events)
            b->events = json_array();
        ok = obj && b->events && json_array_append_new(b->events, obj) == 0;
    } else {
        free(payload);
        return true; /* [DONE] or a comment: not an event of the parsed form */
    }
    free(payload);
    if (!ok)
        return false;
    b->count += 1;
    return b->count < pl_rp_schedule_size(&b->sched) || emit_chunk(b, out);
}

bool pl_rp_sse_feed(struct pl_rp_sse_batcher *b, const char *data, size_t len, json_t *out)
{
    if (!grow(&b->pending, &b->n_pending, data, len))
        return false;
    size_t start = 0;
    for (size_t i = 0; i + 1 < b->n_pending; i++) {
        if (b->pending[i] == '\n' && b->pending[i + 1] == '\n') {
            if (!add_event(b, b->pending + start, i + 2 - start, out))
                return false;
            start = i + 2;
            i++;
        }
    }
    memmove(b->pending, b->pending + start, b->n_pending - start + 1);
    b->n_pending -= start;
    return true;
}

bool pl_rp_sse_finish(struct pl_rp_sse_batcher *b, json_t *out)
{
    if (b->n_pending) {
        bool ok = add_event(b, b->pending, b->n_pending, out);
        b->n_pending = 0;
        if (!ok)
            return false;
    }
    return emit_chunk(b, out);
}
