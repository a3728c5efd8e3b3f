/*
 * fuzz_http_request.c -- raw bytes as an HTTP request to the real transport
 * (libmicrohttpd underneath) on loopback: the checks made when the headers
 * arrive (header size, NUL bytes found through libmicrohttpd's in-place
 * parse, transfer codings, the API key, routing) and body handling on the
 * handler pool. No crash, no leak, no sanitizer report; every answer is an
 * HTTP status line; a 200 from the key-protected route needs the key.
 *
 * Each input goes on a new connection, followed by an empty line (so that a
 * header always ends and the checks run) and a half-close; the reply is read
 * up to its end (Content-Length, the last chunk, or the server's close).
 */
#include "server/http.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct pl_http_server *srv;
static int port;

static void h_health(void *user, const struct pl_http_request *req,
                     struct pl_http_response *resp)
{
    (void)user, (void)req;
    resp->status = 200;
}

/* Answers with the body's length, so the body's bytes are all touched. */
static void h_echo(void *user, const struct pl_http_request *req, struct pl_http_response *resp)
{
    (void)user;
    unsigned sum = 0;
    for (size_t i = 0; i < req->body_len; i++)
        sum += (unsigned char)req->body[i];
    char *b = malloc(64);
    if (!b) {
        pl_http_set_error(resp, 500, NULL, NULL, "out of memory");
        return;
    }
    int n = snprintf(b, 64, "{\"len\":%zu,\"sum\":%u}", req->body_len, sum);
    pl_http_set_json(resp, 200, b, (size_t)n);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    struct pl_http_params p;
    pl_http_params_default(&p);
    p.port = 0;
    p.api_key = "k";
    p.max_body_bytes = 4096;
    p.max_header_bytes = 2048;
    p.timeout_keep_alive_s = 1; /* an input that never completes costs a second */
    p.timeout_idle_s = 1;
    struct pl_err err = {0};
    if (pl_http_server_new(&p, &srv, &err) != PL_STATUS_OK ||
        pl_http_server_route(srv, "GET", "/health", false, h_health, NULL, &err) !=
            PL_STATUS_OK ||
        pl_http_server_route(srv, "POST", "/v1/echo", true, h_echo, NULL, &err) !=
            PL_STATUS_OK ||
        pl_http_server_start(srv, &err) != PL_STATUS_OK) {
        fprintf(stderr, "fuzz_http_request: %s\n", err.msg);
        abort();
    }
    port = pl_http_server_port(srv);
    return 0;
}

/* True once buf[0..got) holds a complete response (or cannot tell: only the close says).
 * A reply to HEAD and a 1xx, 204 or 304 reply end with their header. */
static bool reply_complete(const char *buf, size_t got, bool head_request)
{
    const char *end = memmem(buf, got, "\r\n\r\n", 4);
    if (!end)
        return false;
    size_t head = (size_t)(end - buf) + 4;
    if (head_request || (got > 12 && (buf[9] == '1' || !strncmp(buf + 9, "204", 3) ||
                                      !strncmp(buf + 9, "304", 3))))
        return true;
    const char *cl = memmem(buf, head, "Content-Length: ", 16);
    if (cl)
        return got >= head + strtoul(cl + 16, NULL, 10);
    if (memmem(buf, head, "chunked", 7))
        return memmem(buf + head, got - head, "0\r\n\r\n", 5) != NULL;
    return false;
}

/* True if data holds a Bearer credential with the key "k" (scheme in any case,
 * spaces or tabs around the token, as pl_http_bearer_token takes it). */
static bool has_key(const uint8_t *data, size_t size)
{
    for (size_t i = 0; i + 6 < size; i++) {
        if (strncasecmp((const char *)data + i, "bearer", 6))
            continue;
        size_t j = i + 6;
        while (j < size && (data[j] == ' ' || data[j] == '\t'))
            j++;
        if (j < size && data[j] == 'k')
            return true;
    }
    return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        abort();
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0)
        abort();
    struct timeval tv = {8, 0}; /* a hang guard: the half-close ends every exchange */
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    size_t off = 0;
    while (off < size) {
        ssize_t n = send(fd, data + off, size - off, MSG_NOSIGNAL);
        if (n <= 0)
            break; /* the server refused early and closed */
        off += (size_t)n;
    }
    if (off == size)
        (void)!send(fd, "\r\n\r\n", 4, MSG_NOSIGNAL);
    shutdown(fd, SHUT_WR);
    char buf[8192];
    size_t got = 0;
    bool head_request = size >= 5 && !memcmp(data, "HEAD ", 5);
    while (got < sizeof(buf) - 1 && !reply_complete(buf, got, head_request)) {
        ssize_t n = recv(fd, buf + got, sizeof(buf) - 1 - got, 0);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    buf[got] = '\0';
    if (got > 0) {
        int status = 0;
        if (sscanf(buf, "HTTP/1.%*1[01] %3d", &status) != 1 || status < 100 || status > 599) {
            fprintf(stderr, "not an HTTP answer: %.80s\n", buf);
            abort();
        }
        /* the key-protected route answers 200 only to a request carrying the key */
        if (status == 200 && strstr(buf, "\"len\":") && !has_key(data, size)) {
            fprintf(stderr, "200 from /v1/echo without the key\n");
            abort();
        }
    }
    return 0;
}
