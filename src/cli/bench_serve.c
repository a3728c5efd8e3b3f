/*
 * bench_serve.c -- `pagellm bench serve`: serving latency and throughput over HTTP, in the
 * spirit of vLLM's benchmarks/benchmark_serving.py.
 *
 * Owns: the load generator. --num-prompts requests with random token-id prompts of
 * --input-len tokens (ids uniform in [0, --vocab-size)), each asking for exactly
 * --output-len tokens (ignore_eos, greedy) from a streaming /v1/completions; arrivals
 * are a Poisson process at --request-rate requests/s ("inf": all at once), optionally
 * capped at --max-concurrency in flight. Every request runs on its own client thread
 * with a blocking socket (the client is not what is measured).
 * Metrics per request, as vLLM defines them: TTFT = first text chunk - send;
 * ITL = gaps between text chunks; TPOT = (latency - TTFT) / (output tokens - 1);
 * E2E latency. Reported: mean, median and p99 of each, request and token throughput.
 * A request succeeds only when its stream ends with [DONE] after a choice finished with
 * "length" and --output-len tokens (usage.completion_tokens, else the text chunks):
 * an aborted, errored or short reply is a failure, reported by kind, and is left out
 * of every latency and throughput figure.
 * --result-file appends one JSON line per run (with --label, date and the settings).
 */
#include "cli/cli.h"
#include "util/clock.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <netdb.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct bench_opts {
    const char *host;
    int port;
    const char *model;
    const char *api_key;
    const char *result_file;
    const char *label;
    int num_prompts, input_len, output_len, vocab_size, max_concurrency;
    double request_rate; /* <= 0: inf */
    uint64_t seed;
};

enum req_failure { REQ_OK = 0, REQ_ERROR, REQ_ABORTED, REQ_SHORT };

struct req_result {
    bool ok;
    enum req_failure failure;
    char err[160];
    double t_send, ttft, latency;
    int output_tokens;     /* usage.completion_tokens, -1 until a usage chunk came */
    int n_chunks;          /* chunks with text */
    char finish[16];       /* choices[0].finish_reason of the last chunk that had one */
    bool done;             /* [DONE] arrived */
    double *itl; /* [n_itl] */
    int n_itl, cap_itl;
};

struct bench {
    struct bench_opts o;
    struct addrinfo *addr;
    int32_t *prompts; /* [num_prompts * input_len] */
    struct req_result *res;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int in_flight;
};

static uint64_t rng_next(uint64_t *s)
{
    /* splitmix64 */
    uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static double rng_uniform(uint64_t *s)
{
    return ((double)(rng_next(s) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: pagellm bench serve [options]\n\n"
            "Serving benchmark against a running `pagellm serve` (or any OpenAI-compatible\n"
            "server with token-id prompts): streaming /v1/completions, Poisson arrivals.\n\n"
            "options:\n"
            "  --host HOST             server address (default 127.0.0.1)\n"
            "  --port N                server port (default 8000)\n"
            "  --model NAME            model name to request (default: the server's first)\n"
            "  --api-key KEY           bearer token (default: $PAGELLM_API_KEY)\n"
            "  --num-prompts N         requests to send (default 100)\n"
            "  --request-rate R        requests per second, Poisson arrivals; inf: all at once "
            "(default inf)\n"
            "  --max-concurrency N     most requests in flight (default: unlimited)\n"
            "  --input-len N           prompt tokens (default 128)\n"
            "  --output-len N          generated tokens per request (default 64)\n"
            "  --vocab-size N          prompt ids are drawn from [0, N) (default 256)\n"
            "  --seed N                prompts and arrivals (default 0)\n"
            "  --result-file F         append the result as a JSON line\n"
            "  --label TEXT            a label stored with the result\n");
}

static int bad(const char *flag, const char *val)
{
    fprintf(stderr, "pagellm bench serve: bad value for %s: '%s'\n", flag, val ? val : "");
    return 2;
}

static bool parse_int(const char *s, long lo, long hi, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return false;
    *out = (int)v;
    return true;
}

/* ---- one request ------------------------------------------------------------- */

static int dial(const struct bench *b)
{
    int fd = socket(b->addr->ai_family, b->addr->ai_socktype | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (connect(fd, b->addr->ai_addr, b->addr->ai_addrlen) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static bool send_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0)
            return false;
        p += w;
        n -= (size_t)w;
    }
    return true;
}

/* Handles one SSE event payload; returns false on [DONE]. */
static bool on_event(struct req_result *r, const char *data, size_t n, double t)
{
    if (n == 6 && !memcmp(data, "[DONE]", 6)) {
        r->done = true;
        return false;
    }
    json_t *j = json_loadb(data, n, 0, NULL);
    if (!j)
        return true;
    json_t *err = json_object_get(j, "error");
    if (err) {
        const char *msg = json_string_value(json_object_get(err, "message"));
        snprintf(r->err, sizeof(r->err), "%s", msg ? msg : "error event");
    }
    json_t *usage = json_object_get(j, "usage");
    if (json_is_object(usage))
        r->output_tokens = (int)json_integer_value(json_object_get(usage, "completion_tokens"));
    json_t *ch = json_array_get(json_object_get(j, "choices"), 0);
    const char *fr = json_string_value(json_object_get(ch, "finish_reason"));
    if (fr)
        snprintf(r->finish, sizeof(r->finish), "%s", fr);
    const char *text = json_string_value(json_object_get(ch, "text"));
    if (text && *text) {
        r->n_chunks++;
        if (r->ttft == 0) {
            r->ttft = t - r->t_send;
        } else {
            if (r->n_itl == r->cap_itl) {
                r->cap_itl = r->cap_itl ? 2 * r->cap_itl : 64;
                r->itl = realloc(r->itl, sizeof(double) * (size_t)r->cap_itl);
            }
            if (r->itl)
                r->itl[r->n_itl++] = t - r->latency; /* latency holds the last chunk's time */
        }
        r->latency = t;
    }
    json_decref(j);
    return true;
}

/* Decides whether a finished request counts (see the top of the file). */
static void judge(struct req_result *r, int want_tokens, int status)
{
    if (r->output_tokens < 0)
        r->output_tokens = r->n_chunks; /* no usage chunk: one token per text chunk */
    if (r->err[0]) {
        r->failure = REQ_ERROR;
    } else if (!strcmp(r->finish, "abort")) {
        r->failure = REQ_ABORTED;
        snprintf(r->err, sizeof(r->err), "aborted (finish_reason abort) after %d of %d tokens",
                 r->output_tokens, want_tokens);
    } else if (!r->done || !r->finish[0]) {
        r->failure = REQ_ERROR;
        snprintf(r->err, sizeof(r->err), "incomplete response (HTTP %d, %s)", status,
                 r->done ? "no finish_reason" : "no [DONE]");
    } else if (r->output_tokens < want_tokens || r->ttft <= 0) {
        r->failure = REQ_SHORT;
        snprintf(r->err, sizeof(r->err), "short: %d of %d tokens (finish_reason %s)",
                 r->output_tokens, want_tokens, r->finish);
    } else {
        r->latency -= r->t_send;
        r->ok = true;
    }
}

static void run_request(struct bench *b, int idx)
{
    struct req_result *r = &b->res[idx];
    const struct bench_opts *o = &b->o;
    r->output_tokens = -1;
    /* body: token ids, exact output length, streaming with usage */
    size_t cap = (size_t)o->input_len * 12 + 512;
    char *body = malloc(cap);
    size_t len = (size_t)snprintf(body, cap, "{\"model\":\"%s\",\"prompt\":[", o->model);
    for (int i = 0; i < o->input_len; i++)
        len += (size_t)snprintf(body + len, cap - len, "%s%d", i ? "," : "",
                                b->prompts[(size_t)idx * (size_t)o->input_len + (size_t)i]);
    len += (size_t)snprintf(body + len, cap - len,
                            "],\"max_tokens\":%d,\"temperature\":0,\"ignore_eos\":true,"
                            "\"stream\":true,\"stream_options\":{\"include_usage\":true}}",
                            o->output_len);
    char head[1024];
    int hl = snprintf(head, sizeof(head),
                      "POST /v1/completions HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n"
                      "Content-Type: application/json\r\nContent-Length: %zu\r\n%s%s%s\r\n",
                      o->host, len, o->api_key ? "Authorization: Bearer " : "",
                      o->api_key ? o->api_key : "", o->api_key ? "\r\n" : "");
    int fd = dial(b);
    r->t_send = pl_clock_seconds();
    if (fd < 0 || !send_all(fd, head, (size_t)hl) || !send_all(fd, body, len)) {
        snprintf(r->err, sizeof(r->err), "connect/send failed: %s", strerror(errno));
        if (fd >= 0)
            close(fd);
        free(body);
        return;
    }
    free(body);
    /* read: headers, then chunked SSE decoded as it arrives */
    size_t bcap = 1 << 16, blen = 0, pos = 0;
    char *buf = malloc(bcap);
    char *sse = malloc(bcap);
    size_t scap = bcap, slen = 0;
    bool headers_done = false, chunked = false, done = false;
    int status = 0;
    size_t chunk_left = 0;
    while (!done) {
        if (bcap - blen < 4096) {
            if (pos > 0) {
                memmove(buf, buf + pos, blen - pos);
                blen -= pos;
                pos = 0;
            } else {
                buf = realloc(buf, bcap *= 2);
            }
        }
        ssize_t n = recv(fd, buf + blen, bcap - blen - 1, 0);
        if (n <= 0)
            break;
        double t = pl_clock_seconds();
        blen += (size_t)n;
        buf[blen] = '\0';
        if (!headers_done) {
            char *e = strstr(buf, "\r\n\r\n");
            if (!e)
                continue;
            sscanf(buf, "HTTP/1.%*d %d", &status);
            *e = '\0';
            chunked = strcasestr(buf, "Transfer-Encoding: chunked") != NULL;
            pos = (size_t)(e - buf) + 4;
            headers_done = true;
            if (status != 200) {
                snprintf(r->err, sizeof(r->err), "HTTP %d: %.100s", status, buf + pos);
                break;
            }
        }
        /* move body bytes (dechunked) into the SSE buffer */
        while (pos < blen) {
            size_t take;
            if (chunked) {
                if (chunk_left == 0) {
                    char *crlf = strstr(buf + pos, "\r\n");
                    if (!crlf)
                        break;
                    if (crlf == buf + pos) { /* the CRLF closing a chunk */
                        pos += 2;
                        continue;
                    }
                    chunk_left = strtoul(buf + pos, NULL, 16);
                    pos = (size_t)(crlf - buf) + 2;
                    if (chunk_left == 0) {
                        done = true;
                        break;
                    }
                }
                take = blen - pos < chunk_left ? blen - pos : chunk_left;
                chunk_left -= take;
            } else {
                take = blen - pos;
            }
            if (slen + take + 1 > scap)
                sse = realloc(sse, scap = 2 * (slen + take + 1));
            memcpy(sse + slen, buf + pos, take);
            slen += take;
            pos += take;
        }
        if (pos == blen)
            pos = blen = 0;
        /* complete events */
        size_t start = 0;
        for (;;) {
            sse[slen] = '\0';
            char *e = strstr(sse + start, "\n\n");
            if (!e)
                break;
            char *line = sse + start;
            if (!strncmp(line, "data: ", 6) && !on_event(r, line + 6, (size_t)(e - line - 6), t))
                done = true;
            start = (size_t)(e - sse) + 2;
        }
        memmove(sse, sse + start, slen - start);
        slen -= start;
    }
    close(fd);
    free(buf);
    free(sse);
    judge(r, o->output_len, status);
}

struct worker_arg {
    struct bench *b;
    int idx;
};

static void *worker(void *arg)
{
    struct worker_arg *w = arg;
    run_request(w->b, w->idx);
    pthread_mutex_lock(&w->b->mu);
    w->b->in_flight--;
    pthread_cond_broadcast(&w->b->cv);
    pthread_mutex_unlock(&w->b->mu);
    return NULL;
}

/* ---- statistics -------------------------------------------------------------- */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* numpy.percentile's default (linear interpolation) on sorted v. */
static double percentile(const double *v, int n, double q)
{
    if (n == 0)
        return 0;
    double idx = q / 100.0 * (n - 1);
    int lo = (int)floor(idx), hi = (int)ceil(idx);
    return v[lo] + (v[hi] - v[lo]) * (idx - lo);
}

struct stat3 {
    double mean, median, p99;
};

static struct stat3 stats(double *v, int n)
{
    struct stat3 s = {0, 0, 0};
    if (n == 0)
        return s;
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    double sum = 0;
    for (int i = 0; i < n; i++)
        sum += v[i];
    s.mean = sum / n;
    s.median = percentile(v, n, 50);
    s.p99 = percentile(v, n, 99);
    return s;
}

/* The server's first model name (GET /v1/models), or NULL. */
static char *first_model(struct bench *b)
{
    int fd = dial(b);
    if (fd < 0)
        return NULL;
    char head[512];
    int hl = snprintf(head, sizeof(head),
                      "GET /v1/models HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n%s%s%s\r\n",
                      b->o.host, b->o.api_key ? "Authorization: Bearer " : "",
                      b->o.api_key ? b->o.api_key : "", b->o.api_key ? "\r\n" : "");
    char *out = NULL;
    if (send_all(fd, head, (size_t)hl)) {
        char buf[65536];
        size_t len = 0;
        ssize_t n;
        while (len < sizeof(buf) - 1 && (n = recv(fd, buf + len, sizeof(buf) - 1 - len, 0)) > 0)
            len += (size_t)n;
        buf[len] = '\0';
        char *bodyp = strstr(buf, "\r\n\r\n");
        char *brace = bodyp ? strchr(bodyp, '{') : NULL;
        json_t *j = brace ? json_loads(brace, JSON_DISABLE_EOF_CHECK, NULL) : NULL;
        const char *id = json_string_value(
            json_object_get(json_array_get(json_object_get(j, "data"), 0), "id"));
        if (id)
            out = strdup(id);
        json_decref(j);
    }
    close(fd);
    return out;
}

static int bench_serve(int argc, char **argv)
{
    struct bench b;
    memset(&b, 0, sizeof(b));
    struct bench_opts *o = &b.o;
    o->host = "127.0.0.1";
    o->port = 8000;
    o->num_prompts = 100;
    o->input_len = 128;
    o->output_len = 64;
    o->vocab_size = 256;
    o->api_key = getenv("PAGELLM_API_KEY");
    if (o->api_key && !*o->api_key)
        o->api_key = NULL;
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i];
        if (!strcmp(f, "-h") || !strcmp(f, "--help")) {
            usage(stdout);
            return 0;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "pagellm bench serve: unknown option or missing value: %s\n", f);
            return 2;
        }
        const char *v = argv[++i];
        if (!strcmp(f, "--host"))
            o->host = v;
        else if (!strcmp(f, "--port")) {
            if (!parse_int(v, 1, 65535, &o->port))
                return bad(f, v);
        } else if (!strcmp(f, "--model"))
            o->model = v;
        else if (!strcmp(f, "--api-key"))
            o->api_key = v;
        else if (!strcmp(f, "--result-file"))
            o->result_file = v;
        else if (!strcmp(f, "--label"))
            o->label = v;
        else if (!strcmp(f, "--num-prompts")) {
            if (!parse_int(v, 1, 1000000, &o->num_prompts))
                return bad(f, v);
        } else if (!strcmp(f, "--input-len")) {
            if (!parse_int(v, 1, 10000000, &o->input_len))
                return bad(f, v);
        } else if (!strcmp(f, "--output-len")) {
            if (!parse_int(v, 1, 10000000, &o->output_len))
                return bad(f, v);
        } else if (!strcmp(f, "--vocab-size")) {
            if (!parse_int(v, 1, 100000000, &o->vocab_size))
                return bad(f, v);
        } else if (!strcmp(f, "--max-concurrency")) {
            if (!parse_int(v, 1, 1000000, &o->max_concurrency))
                return bad(f, v);
        } else if (!strcmp(f, "--seed")) {
            char *end;
            o->seed = strtoull(v, &end, 10);
            if (*end)
                return bad(f, v);
        } else if (!strcmp(f, "--request-rate")) {
            if (!strcasecmp(v, "inf")) {
                o->request_rate = 0;
            } else {
                char *end;
                o->request_rate = strtod(v, &end);
                if (*end || !(o->request_rate > 0))
                    return bad(f, v);
            }
        } else {
            fprintf(stderr, "pagellm bench serve: unknown option %s\n(see --help)\n", f);
            return 2;
        }
    }
    char port[16];
    snprintf(port, sizeof(port), "%d", o->port);
    struct addrinfo hints = {0};
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(o->host, port, &hints, &b.addr) != 0) {
        fprintf(stderr, "pagellm bench serve: cannot resolve %s\n", o->host);
        return 1;
    }
    char *model = NULL;
    if (!o->model) {
        model = first_model(&b);
        if (!model) {
            fprintf(stderr, "pagellm bench serve: no server at %s:%d (GET /v1/models failed)\n",
                    o->host, o->port);
            freeaddrinfo(b.addr);
            return 1;
        }
        o->model = model;
    }
    uint64_t rng = o->seed * 0x9E3779B97F4A7C15ULL + 1;
    b.prompts = malloc(sizeof(int32_t) * (size_t)o->num_prompts * (size_t)o->input_len);
    b.res = calloc((size_t)o->num_prompts, sizeof(*b.res));
    pthread_t *th = calloc((size_t)o->num_prompts, sizeof(*th));
    struct worker_arg *args = calloc((size_t)o->num_prompts, sizeof(*args));
    if (!b.prompts || !b.res || !th || !args) {
        fprintf(stderr, "pagellm bench serve: out of memory\n");
        return 1;
    }
    for (size_t i = 0; i < (size_t)o->num_prompts * (size_t)o->input_len; i++)
        b.prompts[i] = (int32_t)(rng_next(&rng) % (uint64_t)o->vocab_size);
    pthread_mutex_init(&b.mu, NULL);
    pthread_cond_init(&b.cv, NULL);

    fprintf(stderr, "pagellm bench serve: %d requests, %d in / %d out, rate %s, model %s\n",
            o->num_prompts, o->input_len, o->output_len,
            o->request_rate > 0 ? "poisson" : "inf", o->model);
    double t0 = pl_clock_seconds(), next = t0;
    for (int i = 0; i < o->num_prompts; i++) {
        if (o->request_rate > 0) {
            double wait = next - pl_clock_seconds();
            if (wait > 0) {
                struct timespec ts = {(time_t)wait, (long)((wait - floor(wait)) * 1e9)};
                nanosleep(&ts, NULL);
            }
            next += -log(rng_uniform(&rng)) / o->request_rate;
        }
        pthread_mutex_lock(&b.mu);
        while (o->max_concurrency && b.in_flight >= o->max_concurrency)
            pthread_cond_wait(&b.cv, &b.mu);
        b.in_flight++;
        pthread_mutex_unlock(&b.mu);
        args[i] = (struct worker_arg){&b, i};
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setstacksize(&attr, 256 * 1024);
        if (pthread_create(&th[i], &attr, worker, &args[i]) != 0) {
            run_request(&b, i); /* out of threads: run it here */
            pthread_mutex_lock(&b.mu);
            b.in_flight--;
            pthread_mutex_unlock(&b.mu);
            th[i] = 0;
        }
        pthread_attr_destroy(&attr);
    }
    for (int i = 0; i < o->num_prompts; i++)
        if (th[i])
            pthread_join(th[i], NULL);
    double duration = pl_clock_seconds() - t0;

    int n_ok = 0, n_itl = 0, n_fail[4] = {0};
    long long out_tokens = 0, failed_tokens = 0;
    for (int i = 0; i < o->num_prompts; i++) {
        if (b.res[i].ok) {
            n_ok++;
            out_tokens += b.res[i].output_tokens;
            n_itl += b.res[i].n_itl;
        } else {
            n_fail[b.res[i].failure]++;
            failed_tokens += b.res[i].output_tokens > 0 ? b.res[i].output_tokens : 0;
            if (n_fail[REQ_ERROR] + n_fail[REQ_ABORTED] + n_fail[REQ_SHORT] <= 10)
                fprintf(stderr, "request %d failed: %s\n", i, b.res[i].err);
        }
    }
    const int n_failed = o->num_prompts - n_ok;
    double *ttft = malloc(sizeof(double) * (size_t)(n_ok + 1));
    double *tpot = malloc(sizeof(double) * (size_t)(n_ok + 1));
    double *e2e = malloc(sizeof(double) * (size_t)(n_ok + 1));
    double *itl = malloc(sizeof(double) * (size_t)(n_itl + 1));
    int k = 0, n_tpot = 0, m = 0;
    for (int i = 0; i < o->num_prompts; i++) {
        struct req_result *r = &b.res[i];
        if (!r->ok)
            continue;
        ttft[k] = r->ttft;
        e2e[k] = r->latency;
        k++;
        if (r->output_tokens > 1)
            tpot[n_tpot++] = (r->latency - r->ttft) / (r->output_tokens - 1);
        for (int j = 0; j < r->n_itl; j++)
            itl[m++] = r->itl[j];
    }
    struct stat3 s_ttft = stats(ttft, n_ok), s_tpot = stats(tpot, n_tpot),
                 s_itl = stats(itl, n_itl), s_e2e = stats(e2e, n_ok);
    long long in_tokens = (long long)n_ok * o->input_len;
    double req_tput = n_ok / duration, out_tput = (double)out_tokens / duration;
    double tot_tput = (double)(in_tokens + out_tokens) / duration;

    printf("============ Serving Benchmark Result ============\n");
    printf("%-40s %d\n", "Successful requests:", n_ok);
    printf("%-40s %d\n", "Failed requests:", n_failed);
    if (n_failed) {
        printf("%-40s %d\n", "  aborted (finish_reason abort):", n_fail[REQ_ABORTED]);
        printf("%-40s %d\n", "  short (fewer tokens than asked):", n_fail[REQ_SHORT]);
        printf("%-40s %d\n", "  errors (HTTP, connection, no [DONE]):", n_fail[REQ_ERROR]);
        printf("%-40s %lld\n", "  tokens they generated (not counted):", failed_tokens);
    }
    printf("%-40s %.2f\n", "Benchmark duration (s):", duration);
    printf("%-40s %lld\n", "Total input tokens:", in_tokens);
    printf("%-40s %lld\n", "Total generated tokens:", out_tokens);
    printf("%-40s %.2f\n", "Request throughput (req/s):", req_tput);
    printf("%-40s %.2f\n", "Output token throughput (tok/s):", out_tput);
    printf("%-40s %.2f\n", "Total token throughput (tok/s):", tot_tput);
    printf("---------------Time to First Token----------------\n");
    printf("%-40s %.2f\n%-40s %.2f\n%-40s %.2f\n", "Mean TTFT (ms):", s_ttft.mean * 1e3,
           "Median TTFT (ms):", s_ttft.median * 1e3, "P99 TTFT (ms):", s_ttft.p99 * 1e3);
    printf("-----Time per Output Token (excl. 1st token)------\n");
    printf("%-40s %.2f\n%-40s %.2f\n%-40s %.2f\n", "Mean TPOT (ms):", s_tpot.mean * 1e3,
           "Median TPOT (ms):", s_tpot.median * 1e3, "P99 TPOT (ms):", s_tpot.p99 * 1e3);
    printf("---------------Inter-token Latency----------------\n");
    printf("%-40s %.2f\n%-40s %.2f\n%-40s %.2f\n", "Mean ITL (ms):", s_itl.mean * 1e3,
           "Median ITL (ms):", s_itl.median * 1e3, "P99 ITL (ms):", s_itl.p99 * 1e3);
    printf("----------------End-to-end Latency----------------\n");
    printf("%-40s %.2f\n%-40s %.2f\n%-40s %.2f\n", "Mean E2EL (ms):", s_e2e.mean * 1e3,
           "Median E2EL (ms):", s_e2e.median * 1e3, "P99 E2EL (ms):", s_e2e.p99 * 1e3);
    printf("==================================================\n");

    int rc = n_ok == o->num_prompts ? 0 : 1;
    if (o->result_file) {
        json_t *j = json_object();
        char date[32];
        time_t now = time(NULL);
        strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
        json_object_set_new(j, "date", json_string(date));
        json_object_set_new(j, "label", o->label ? json_string(o->label) : json_null());
        json_object_set_new(j, "model", json_string(o->model));
        json_object_set_new(j, "num_prompts", json_integer(o->num_prompts));
        json_object_set_new(j, "request_rate",
                            o->request_rate > 0 ? json_real(o->request_rate) : json_string("inf"));
        json_object_set_new(j, "max_concurrency", json_integer(o->max_concurrency));
        json_object_set_new(j, "input_len", json_integer(o->input_len));
        json_object_set_new(j, "output_len", json_integer(o->output_len));
        json_object_set_new(j, "completed", json_integer(n_ok));
        json_object_set_new(j, "failed", json_integer(n_failed));
        json_object_set_new(j, "failed_aborted", json_integer(n_fail[REQ_ABORTED]));
        json_object_set_new(j, "failed_short", json_integer(n_fail[REQ_SHORT]));
        json_object_set_new(j, "failed_error", json_integer(n_fail[REQ_ERROR]));
        json_object_set_new(j, "duration_s", json_real(duration));
        json_object_set_new(j, "request_throughput", json_real(req_tput));
        json_object_set_new(j, "output_throughput", json_real(out_tput));
        json_object_set_new(j, "total_token_throughput", json_real(tot_tput));
        struct {
            const char *name;
            struct stat3 s;
        } ms[] = {{"ttft", s_ttft}, {"tpot", s_tpot}, {"itl", s_itl}, {"e2el", s_e2e}};
        for (size_t q = 0; q < sizeof(ms) / sizeof(ms[0]); q++) {
            char key[32];
            snprintf(key, sizeof(key), "mean_%s_ms", ms[q].name);
            json_object_set_new(j, key, json_real(ms[q].s.mean * 1e3));
            snprintf(key, sizeof(key), "median_%s_ms", ms[q].name);
            json_object_set_new(j, key, json_real(ms[q].s.median * 1e3));
            snprintf(key, sizeof(key), "p99_%s_ms", ms[q].name);
            json_object_set_new(j, key, json_real(ms[q].s.p99 * 1e3));
        }
        FILE *f = fopen(o->result_file, "a");
        char *line = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
        if (!f || !line) {
            fprintf(stderr, "pagellm bench serve: cannot write %s\n", o->result_file);
            rc = 1;
        } else {
            fprintf(f, "%s\n", line);
        }
        if (f)
            fclose(f);
        free(line);
        json_decref(j);
    }
    for (int i = 0; i < o->num_prompts; i++)
        free(b.res[i].itl);
    free(ttft);
    free(tpot);
    free(e2e);
    free(itl);
    free(th);
    free(args);
    free(b.res);
    free(b.prompts);
    free(model);
    freeaddrinfo(b.addr);
    pthread_mutex_destroy(&b.mu);
    pthread_cond_destroy(&b.cv);
    return rc;
}

int pl_cli_bench(int argc, char **argv)
{
    if (argc >= 2 && !strcmp(argv[1], "serve"))
        return bench_serve(argc - 1, argv + 1);
    fprintf(stderr, "usage: pagellm bench serve [options]   (see pagellm bench serve --help)\n");
    return argc >= 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) ? 0 : 2;
}
