/*
 * http_client.h -- a minimal blocking HTTP/1.1 client over loopback for the
 * server tests (header-only, test-only): one request per connection
 * ("Connection: close"), chunked bodies decoded, headers kept raw.
 */
#ifndef PL_TEST_HTTP_CLIENT_H
#define PL_TEST_HTTP_CLIENT_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

struct http_reply {
    int status;
    char *headers; /* raw header block */
    char *body;    /* decoded body, NUL-terminated */
    size_t body_len;
};

static void http_reply_free(struct http_reply *r)
{
    free(r->headers);
    free(r->body);
    memset(r, 0, sizeof(*r));
}

static int http_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        close(fd);
        return -1;
    }
    struct timeval tv = {30, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return fd;
}

static bool http_send_all(int fd, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
        if (n <= 0)
            return false;
        data += n;
        len -= (size_t)n;
    }
    return true;
}

/* Sends a request; extra_headers is "Name: value\r\n..." or NULL. */
static bool http_send_request(int fd, const char *method, const char *path,
                              const char *extra_headers, const char *body)
{
    char head[8192];
    int n = snprintf(head, sizeof(head), "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n%s",
                     method, path, extra_headers ? extra_headers : "");
    if (body)
        n += snprintf(head + n, sizeof(head) - (size_t)n,
                      "Content-Type: application/json\r\nContent-Length: %zu\r\n", strlen(body));
    n += snprintf(head + n, sizeof(head) - (size_t)n, "\r\n");
    return http_send_all(fd, head, (size_t)n) && (!body || http_send_all(fd, body, strlen(body)));
}

static void dechunk(char *b, size_t *len)
{
    size_t in = 0, out = 0;
    while (in < *len) {
        char *end;
        unsigned long n = strtoul(b + in, &end, 16);
        char *crlf = strstr(end, "\r\n");
        if (!crlf)
            break;
        in = (size_t)(crlf - b) + 2;
        if (n == 0 || in + n > *len)
            break;
        memmove(b + out, b + in, n);
        out += n;
        in += n + 2;
    }
    *len = out;
    b[out] = '\0';
}

/* Reads the whole reply until the server closes. */
static bool http_read_reply(int fd, struct http_reply *r)
{
    memset(r, 0, sizeof(*r));
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (cap - len < 4096)
            buf = realloc(buf, cap *= 2);
        ssize_t n = recv(fd, buf + len, cap - len - 1, 0);
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    buf[len] = '\0';
    char *sep = strstr(buf, "\r\n\r\n");
    if (!sep || sscanf(buf, "HTTP/1.%*d %d", &r->status) != 1) {
        free(buf);
        return false;
    }
    size_t hl = (size_t)(sep - buf);
    r->headers = strndup(buf, hl);
    size_t bl = len - hl - 4;
    r->body = malloc(bl + 1);
    memcpy(r->body, sep + 4, bl);
    r->body[bl] = '\0';
    r->body_len = bl;
    if (strcasestr(r->headers, "Transfer-Encoding: chunked"))
        dechunk(r->body, &r->body_len);
    free(buf);
    return true;
}

static bool http_request(int port, const char *method, const char *path, const char *headers,
                         const char *body, struct http_reply *r)
{
    int fd = http_connect(port);
    if (fd < 0)
        return false;
    bool ok = http_send_request(fd, method, path, headers, body) && http_read_reply(fd, r);
    close(fd);
    return ok;
}

/* The value of a header in a raw block (case-insensitive name), copied into out. */
static bool http_header(const struct http_reply *r, const char *name, char *out, size_t cap)
{
    size_t n = strlen(name);
    for (const char *p = r->headers; p && *p; p = strstr(p, "\r\n") ? strstr(p, "\r\n") + 2 : NULL) {
        if (!strncasecmp(p, name, n) && p[n] == ':') {
            const char *v = p + n + 1;
            while (*v == ' ')
                v++;
            const char *e = strstr(v, "\r\n");
            size_t l = e ? (size_t)(e - v) : strlen(v);
            if (l >= cap)
                l = cap - 1;
            memcpy(out, v, l);
            out[l] = '\0';
            return true;
        }
    }
    return false;
}

#endif
