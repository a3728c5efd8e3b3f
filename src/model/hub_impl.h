/*
 * hub_impl.h -- the pieces of the Hub client shared by hub.c (what to fetch,
 * in parallel, with progress), hub_http.c (libcurl requests) and
 * hub_cache.c (huggingface_hub's cache layout on disk). Not for use outside
 * src/model/hub*.c; the interface is hub.h.
 */
#ifndef PL_MODEL_HUB_IMPL_H
#define PL_MODEL_HUB_IMPL_H

#include "model/hub.h"
#include "util/sha1.h"
#include "util/sha256.h"

#include <stdbool.h>
#include <stdint.h>

/* ---- hub_http.c ---- */

/* One HTTP answer: the status and the headers the Hub protocol uses. */
struct hub_resp {
    long status;             /* 0 when no answer came */
    int curl_rc;             /* CURLcode of the transfer */
    char curl_msg[256];      /* libcurl's words for curl_rc */
    char *body;              /* JSON requests only (malloc'ed, NUL-terminated) */
    size_t len;
    char etag[136];          /* normalized: no W/ and no quotes */
    char linked_etag[136];   /* X-Linked-Etag, normalized */
    int64_t linked_size;     /* X-Linked-Size; -1 absent */
    int64_t content_length;  /* -1 absent */
    char repo_commit[48];    /* X-Repo-Commit */
    char error_code[64];     /* X-Error-Code (GatedRepo, RepoNotFound, RevisionNotFound, ...) */
    char error_message[256]; /* X-Error-Message */
    char location[2048];     /* Location of a 3xx, as sent */
    char redirect_url[2048]; /* that Location made absolute */
};

void hub_resp_fini(struct hub_resp *r);

/* Whether a failed transfer is worth retrying (network trouble, 408, 429, 5xx). */
bool hub_transient(const struct hub_resp *r);

/* GET a JSON document (up to max_body bytes). PL_STATUS_OK when an answer came
 * (any status: the caller reads r->status); PL_STATUS_IO when none did. */
pl_status hub_http_get(void *curl, const char *url, const char *token, size_t max_body,
                       struct hub_resp *r);
/* HEAD without following redirects (the caller follows relative ones). */
pl_status hub_http_head(void *curl, const char *url, const char *token, struct hub_resp *r);

/* Where fetched bytes go: appended to fd, hashed, counted. */
struct hub_sink {
    int fd;
    int64_t have;            /* bytes already in the file (resume offset) */
    int64_t expected;        /* the file's size; -1 unknown */
    struct pl_sha256 *s256;  /* NULL when not checked */
    struct pl_sha1 *s1;      /* git blob sha1; NULL when not checked */
    int64_t *progress;       /* shared byte counter (atomic adds) */
    int64_t *transferred;    /* shared counter of bytes moved this run (speed) */
    const volatile int *abort_flag;
    bool restarted;          /* the server ignored Range: the file started over */
    int write_errno;
    bool overflow;           /* more bytes than expected */
};

/* sha1 state primed with git's blob header "blob <size>\0". */
void hub_git_blob_init(struct pl_sha1 *s, int64_t size);

/* GET url into sink from byte sink->have on (Range), following redirects on
 * to other hosts without the token. The token is sent only when the URL's
 * origin is the endpoint's. PL_STATUS_OK when an answer came. */
pl_status hub_http_fetch(void *curl, const char *url, const char *token, struct hub_sink *sink,
                         struct hub_resp *r);

/* scheme://host[:port] of a URL into out (lower-case); false when not http(s). */
bool hub_origin(const char *url, char *out, size_t cap);

/* Percent-encodes s; keep_slash leaves '/' as is. Malloc'ed. */
char *hub_urlencode(const char *s, bool keep_slash);

void *hub_curl_new(void);
void hub_curl_free(void *curl);

/* ---- hub_cache.c ---- */

/* models--org--name under the cache root. */
char *hub_repo_dir(const char *cache, const char *repo_id);
/* The commit refs/<rev> names (40 hex) into commit; false when absent or bad. */
bool hub_read_ref(const char *repo_dir, const char *rev, char commit[41]);
/* Writes refs/<rev> (atomically; only when it changed). */
pl_status hub_write_ref(const char *repo_dir, const char *rev, const char *commit,
                        struct pl_err *err);
/* mkdir -p. */
pl_status hub_mkdirs(const char *path, struct pl_err *err);
/* snapshots/<commit>/<file> -> ../../blobs/<etag> (relative; a copy where
 * symlinks cannot be made). */
pl_status hub_link_pointer(const char *repo_dir, const char *commit, const char *file,
                           const char *etag, struct pl_err *err);
/* .no_exist/<commit>/<file> (best effort). */
void hub_touch_no_exist(const char *repo_dir, const char *commit, const char *file);
/* Whether .no_exist/<commit>/<file> exists. */
bool hub_is_no_exist(const char *repo_dir, const char *commit, const char *file);
/* Takes the lock file (flock, blocking); prints `waiting` once to stderr
 * when another process holds it. Returns the fd, or -1 with err set. */
int hub_lock(const char *path, const char *waiting, struct pl_err *err);
void hub_unlock(int fd);
/* The token: explicit, $HF_TOKEN, $HUGGING_FACE_HUB_TOKEN, the token file. Malloc'ed or NULL. */
char *hub_token(const char *explicit_token);
/* HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE. */
bool hub_env_offline(void);
/* Free bytes where path is (or its nearest existing parent); -1 unknown. */
int64_t hub_free_bytes(const char *path);
/* Copies src (following links) to dst via dst.tmp + rename. */
pl_status hub_copy_file(const char *src, const char *dst, struct pl_err *err);
/* Whether path exists (following links: a dangling pointer does not). */
bool hub_exists(const char *path);
/* Size of a file; -1 when absent. */
int64_t hub_file_size(const char *path);
/* Joins up to four parts with '/'. Malloc'ed. */
char *hub_path(const char *a, const char *b, const char *c, const char *d);

#endif
