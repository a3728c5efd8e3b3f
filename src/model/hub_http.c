/*
 * hub_http.c -- the Hub client's HTTP requests over libcurl (see hub_impl.h).
 *
 * Owns: one request at a time per easy handle, the headers the Hub protocol
 * reads (ETag, X-Linked-Etag, X-Linked-Size, X-Repo-Commit, X-Error-Code,
 * Location) and the byte sink of a file transfer.
 *
 * Tokens: the Authorization header is added only when the request URL has the
 * endpoint's origin, as huggingface_hub drops it for the storage host a
 * resolve redirects to. When libcurl itself follows a redirect it does not
 * forward a custom Authorization header to another host or port
 * (CURLOPT_UNRESTRICTED_AUTH stays off). Only http and https are allowed, for
 * requests and redirects. Accept-Encoding is identity, so sizes are the
 * files' sizes.
 */
#include "model/hub_impl.h"
#include "pagellm.h"

#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define USER_AGENT "pagellm/" PAGELLM_VERSION

void *hub_curl_new(void) { return curl_easy_init(); }

void hub_curl_free(void *curl)
{
    if (curl)
        curl_easy_cleanup(curl);
}

void hub_resp_fini(struct hub_resp *r)
{
    if (!r)
        return;
    free(r->body);
    r->body = NULL;
    r->len = 0;
}

static void resp_reset_headers(struct hub_resp *r)
{
    r->etag[0] = r->linked_etag[0] = r->repo_commit[0] = '\0';
    r->error_code[0] = r->error_message[0] = r->location[0] = '\0';
    r->linked_size = r->content_length = -1;
}

bool hub_transient(const struct hub_resp *r)
{
    if (r->status == 0)
        return true; /* no answer: connection refused, reset, timeout, DNS */
    return r->status == 408 || r->status == 429 || r->status >= 500;
}

bool hub_origin(const char *url, char *out, size_t cap)
{
    const char *p = strstr(url, "://");
    if (!p)
        return false;
    size_t scheme = (size_t)(p - url);
    if (!((scheme == 4 && !strncasecmp(url, "http", 4)) ||
          (scheme == 5 && !strncasecmp(url, "https", 5))))
        return false;
    const char *host = p + 3;
    size_t hl = strcspn(host, "/?#");
    /* drop userinfo */
    const char *at = memchr(host, '@', hl);
    if (at) {
        hl -= (size_t)(at + 1 - host);
        host = at + 1;
    }
    if (scheme + 3 + hl + 8 >= cap)
        return false;
    size_t o = 0;
    for (size_t i = 0; i < scheme; i++)
        out[o++] = (char)tolower((unsigned char)url[i]);
    memcpy(out + o, "://", 3);
    o += 3;
    for (size_t i = 0; i < hl; i++)
        out[o++] = (char)tolower((unsigned char)host[i]);
    out[o] = '\0';
    /* the default port spelled out or not is the same origin */
    bool has_port = hl && memchr(host, ':', hl) && host[0] != '[';
    if (host[0] == '[')
        has_port = hl && host[hl - 1] != ']';
    if (!has_port)
        strcat(out, scheme == 5 ? ":443" : ":80");
    return true;
}

char *hub_urlencode(const char *s, bool keep_slash)
{
    size_t n = strlen(s);
    char *out = malloc(3 * n + 1);
    if (!out)
        return NULL;
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' || (keep_slash && c == '/'))
            out[o++] = (char)c;
        else {
            out[o++] = '%';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        }
    }
    out[o] = '\0';
    return out;
}

/* A header value without surrounding blanks (and CR/LF) into dst. */
static void header_value(const char *v, size_t n, char *dst, size_t cap)
{
    while (n && (*v == ' ' || *v == '\t')) {
        v++;
        n--;
    }
    while (n && (v[n - 1] == '\r' || v[n - 1] == '\n' || v[n - 1] == ' ' || v[n - 1] == '\t'))
        n--;
    if (n >= cap)
        n = cap - 1;
    memcpy(dst, v, n);
    dst[n] = '\0';
}

/* huggingface_hub's _normalize_etag: drop a weak W/ prefix and the quotes. */
static void normalize_etag(char *e)
{
    char *s = e;
    if (!strncmp(s, "W/", 2))
        s += 2;
    size_t n = strlen(s);
    if (n >= 2 && s[0] == '"' && s[n - 1] == '"') {
        s++;
        n -= 2;
    }
    memmove(e, s, n);
    e[n] = '\0';
}

static int64_t parse_size(const char *v)
{
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || end == v || *end || x < 0)
        return -1;
    return (int64_t)x;
}

static size_t on_header(char *buf, size_t size, size_t nitems, void *user)
{
    struct hub_resp *r = user;
    size_t n = size * nitems;
    if (n >= 5 && !strncmp(buf, "HTTP/", 5)) {
        resp_reset_headers(r); /* a new response (after a redirect or 100) */
        return n;
    }
    const char *colon = memchr(buf, ':', n);
    if (!colon)
        return n;
    size_t kl = (size_t)(colon - buf);
    const char *v = colon + 1;
    size_t vl = n - kl - 1;
    char tmp[64];
#define IS(name) (kl == sizeof(name) - 1 && !strncasecmp(buf, name, kl))
    if (IS("etag")) {
        header_value(v, vl, r->etag, sizeof(r->etag));
        normalize_etag(r->etag);
    } else if (IS("x-linked-etag")) {
        header_value(v, vl, r->linked_etag, sizeof(r->linked_etag));
        normalize_etag(r->linked_etag);
    } else if (IS("x-linked-size")) {
        header_value(v, vl, tmp, sizeof(tmp));
        r->linked_size = parse_size(tmp);
    } else if (IS("content-length")) {
        header_value(v, vl, tmp, sizeof(tmp));
        r->content_length = parse_size(tmp);
    } else if (IS("x-repo-commit")) {
        header_value(v, vl, r->repo_commit, sizeof(r->repo_commit));
    } else if (IS("x-error-code")) {
        header_value(v, vl, r->error_code, sizeof(r->error_code));
    } else if (IS("x-error-message")) {
        header_value(v, vl, r->error_message, sizeof(r->error_message));
    } else if (IS("location")) {
        header_value(v, vl, r->location, sizeof(r->location));
    }
#undef IS
    return n;
}

struct body_buf {
    struct hub_resp *r;
    size_t cap, max;
    bool too_big;
};

static size_t on_body(char *data, size_t size, size_t nmemb, void *user)
{
    struct body_buf *b = user;
    size_t n = size * nmemb;
    struct hub_resp *r = b->r;
    if (r->len + n > b->max) {
        b->too_big = true;
        return 0;
    }
    if (r->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < r->len + n + 1)
            cap *= 2;
        char *g = realloc(r->body, cap);
        if (!g)
            return 0;
        r->body = g;
        b->cap = cap;
    }
    memcpy(r->body + r->len, data, n);
    r->len += n;
    r->body[r->len] = '\0';
    return n;
}

static void common_opts(CURL *c, const char *url, struct hub_resp *r, char *errbuf)
{
    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_USERAGENT, USER_AGENT);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 10L);
    /* a transfer that moves nothing for 60 s is stalled: retried from where it is */
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, 60L);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(c, CURLOPT_UNRESTRICTED_AUTH, 0L);
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
#else
    curl_easy_setopt(c, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
    curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
}

static struct curl_slist *make_headers(const char *token)
{
    struct curl_slist *h = curl_slist_append(NULL, "Accept-Encoding: identity");
    if (h && token && *token) {
        size_t n = strlen(token) + 32;
        char *line = malloc(n);
        if (line) {
            snprintf(line, n, "Authorization: Bearer %s", token);
            struct curl_slist *g = curl_slist_append(h, line);
            free(line);
            if (g)
                h = g;
        }
    }
    return h;
}

static pl_status finish(CURL *c, CURLcode rc, struct hub_resp *r, const char *errbuf)
{
    r->curl_rc = (int)rc;
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    r->status = status;
    char *redir = NULL;
    r->redirect_url[0] = '\0';
    if (curl_easy_getinfo(c, CURLINFO_REDIRECT_URL, &redir) == CURLE_OK && redir)
        snprintf(r->redirect_url, sizeof(r->redirect_url), "%s", redir);
    if (rc != CURLE_OK) {
        snprintf(r->curl_msg, sizeof(r->curl_msg), "%s", errbuf[0] ? errbuf : curl_easy_strerror(rc));
        if (status == 0)
            return PL_STATUS_IO;
    } else {
        r->curl_msg[0] = '\0';
    }
    return PL_STATUS_OK;
}

static void resp_init(struct hub_resp *r)
{
    free(r->body);
    memset(r, 0, sizeof(*r));
    resp_reset_headers(r);
}

pl_status hub_http_get(void *curl, const char *url, const char *token, size_t max_body,
                       struct hub_resp *r)
{
    CURL *c = curl;
    resp_init(r);
    char errbuf[CURL_ERROR_SIZE] = "";
    common_opts(c, url, r, errbuf);
    struct curl_slist *h = make_headers(token);
    struct body_buf b = {r, 0, max_body, false};
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 120L);
    /* the API does not redirect to other hosts; a renamed repo redirects on the same one */
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(c, CURLOPT_MAXREDIRS, 5L);
    CURLcode rc = curl_easy_perform(c);
    curl_slist_free_all(h);
    if (b.too_big) {
        snprintf(r->curl_msg, sizeof(r->curl_msg), "the answer is larger than %zu bytes",
                 max_body);
        r->curl_rc = (int)rc;
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
        free(r->body);
        r->body = NULL;
        r->len = 0;
        return PL_STATUS_LIMIT;
    }
    return finish(c, rc, r, errbuf);
}

pl_status hub_http_head(void *curl, const char *url, const char *token, struct hub_resp *r)
{
    CURL *c = curl;
    resp_init(r);
    char errbuf[CURL_ERROR_SIZE] = "";
    common_opts(c, url, r, errbuf);
    struct curl_slist *h = make_headers(token);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 60L);
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    CURLcode rc = curl_easy_perform(c);
    curl_slist_free_all(h);
    return finish(c, rc, r, errbuf);
}

struct fetch_ctx {
    CURL *c;
    struct hub_sink *s;
    bool started;  /* the first body byte of the final answer has been seen */
    bool writing;  /* that answer is the file (200/206), not an error page */
};

static bool write_all(int fd, const char *p, size_t n, int *werr)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            *werr = errno;
            return false;
        }
        p += w;
        n -= (size_t)w;
    }
    return true;
}

static size_t on_file_body(char *data, size_t size, size_t nmemb, void *user)
{
    struct fetch_ctx *f = user;
    struct hub_sink *s = f->s;
    size_t n = size * nmemb;
    if (!f->started) {
        f->started = true;
        long status = 0;
        curl_easy_getinfo(f->c, CURLINFO_RESPONSE_CODE, &status);
        f->writing = status == 200 || status == 206;
        if (status == 200 && s->have > 0) {
            /* the server ignored Range: start the file over */
            if (ftruncate(s->fd, 0) != 0 || lseek(s->fd, 0, SEEK_SET) != 0) {
                s->write_errno = errno;
                return 0;
            }
            __atomic_fetch_sub(s->progress, s->have, __ATOMIC_RELAXED);
            s->have = 0;
            s->restarted = true;
            if (s->s256)
                pl_sha256_init(s->s256);
            if (s->s1)
                hub_git_blob_init(s->s1, s->expected);
        }
    }
    if (!f->writing)
        return n; /* an error page: drop it */
    if (s->expected >= 0 && s->have + (int64_t)n > s->expected) {
        s->overflow = true;
        return 0;
    }
    if (!write_all(s->fd, data, n, &s->write_errno))
        return 0;
    if (s->s256)
        pl_sha256_update(s->s256, data, n);
    if (s->s1)
        pl_sha1_update(s->s1, data, n);
    s->have += (int64_t)n;
    __atomic_fetch_add(s->progress, (int64_t)n, __ATOMIC_RELAXED);
    __atomic_fetch_add(s->transferred, (int64_t)n, __ATOMIC_RELAXED);
    return n;
}

static int on_xfer(void *user, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                   curl_off_t ulnow)
{
    struct fetch_ctx *f = user;
    return f->s->abort_flag && *f->s->abort_flag ? 1 : 0;
}

pl_status hub_http_fetch(void *curl, const char *url, const char *token, struct hub_sink *sink,
                         struct hub_resp *r)
{
    CURL *c = curl;
    resp_init(r);
    char errbuf[CURL_ERROR_SIZE] = "";
    common_opts(c, url, r, errbuf);
    struct curl_slist *h = make_headers(token);
    char range[64];
    if (sink->have > 0) {
        snprintf(range, sizeof(range), "%lld-", (long long)sink->have);
        curl_easy_setopt(c, CURLOPT_RANGE, range);
    }
    if (lseek(sink->fd, (off_t)sink->have, SEEK_SET) < 0) {
        curl_slist_free_all(h);
        sink->write_errno = errno;
        snprintf(r->curl_msg, sizeof(r->curl_msg), "seek: %s", strerror(errno));
        return PL_STATUS_IO;
    }
    struct fetch_ctx f = {c, sink, false, false};
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_file_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &f);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_xfer);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, &f);
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(c, CURLOPT_MAXREDIRS, 5L);
    CURLcode rc = curl_easy_perform(c);
    curl_slist_free_all(h);
    return finish(c, rc, r, errbuf);
}

void hub_git_blob_init(struct pl_sha1 *s, int64_t size)
{
    char head[32];
    int n = snprintf(head, sizeof(head), "blob %lld", (long long)size);
    pl_sha1_init(s);
    pl_sha1_update(s, head, (size_t)n + 1); /* with the NUL */
}
