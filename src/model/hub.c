/*
 * hub.c -- a Hub repo id to a local model directory (see hub.h): the
 * revision's commit and file list from the model-info API, the files to
 * fetch, a disk-space check, parallel resumable transfers into the shared
 * cache, the progress display, and the fallback to the cache when offline or
 * when the Hub cannot be reached.
 *
 * Owns one download at a time per call: worker threads (each with its own
 * curl handle) take files from a shared list; the first fatal error stops the
 * others (their partial files stay for a later resume). A file is fetched as
 * huggingface_hub fetches it: HEAD {endpoint}/{repo}/resolve/{commit}/{file}
 * (following only same-host redirects) gives the etag, size and the storage
 * location; the bytes go to blobs/<etag>.incomplete under the etag's lock,
 * resuming with Range from what is there; they are checked (sha256 for LFS,
 * the git blob sha1 for files kept in git, else the size) and only then
 * renamed to blobs/<etag> and linked from the snapshot.
 */
#include "model/hub_impl.h"

#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_ENDPOINT "https://huggingface.co"
#define MAX_INFO_BYTES (64u << 20)
#define INFO_ATTEMPTS 3
#define FILE_ATTEMPTS 5 /* tries in a row without a byte of progress */

void pl_hub_opts_default(struct pl_hub_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->offline = -1;
    o->progress = PL_HUB_PROGRESS_AUTO;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static const char *human(double b, char *buf, size_t cap)
{
    static const char *const unit[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
    int u = 0;
    while (b >= 1024 && u < 5) {
        b /= 1024;
        u++;
    }
    snprintf(buf, cap, u ? "%.1f %s" : "%.0f %s", b, unit[u]);
    return buf;
}

static long retry_base_ms(void)
{
    const char *v = getenv("PL_HUB_RETRY_BASE_MS");
    long ms = v && *v ? strtol(v, NULL, 10) : 1000;
    return ms < 0 ? 0 : ms > 60000 ? 60000 : ms;
}

/* ---- one download ---- */

struct job {
    int file;              /* index into info.files */
    char etag_guess[65];   /* from the listing: lfs sha256 or blob id */
    int64_t size;          /* from the listing; -1 unknown */
};

struct dl {
    const char *who, *repo_id, *endpoint, *token, *repo_dir, *cache, *commit;
    char endpoint_origin[300];
    struct pl_hub_info *info;
    enum pl_hub_progress progress;
    bool bar;
    /* the queue */
    struct job *jobs;
    int n_jobs, next_job, running;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    volatile int abort_flag;
    struct pl_err err; /* the first fatal error */
    bool failed;
    /* progress */
    int64_t total_bytes, done_bytes, transferred;
    int files_done;
    double t0, last_draw;
    long backoff_ms;
};

static void fail(struct dl *d, const struct pl_err *e)
{
    pthread_mutex_lock(&d->mu);
    if (!d->failed) {
        d->failed = true;
        d->err = *e;
        d->abort_flag = 1;
    }
    pthread_mutex_unlock(&d->mu);
}

/* Sleeps ms in slices, returning early when the download is aborted. */
static void backoff_sleep(struct dl *d, long ms)
{
    while (ms > 0 && !d->abort_flag) {
        long s = ms < 100 ? ms : 100;
        struct timespec ts = {0, s * 1000000L};
        nanosleep(&ts, NULL);
        ms -= s;
    }
}

/* The Hub's answer as advice: what happened and what to do. */
static pl_status http_error(struct dl *d, const struct hub_resp *r, const char *rev,
                            const char *file, struct pl_err *err)
{
    const char *code = r->error_code;
    const char *what = file ? file : "the model info";
    if (!strcmp(code, "GatedRepo") ||
        ((r->status == 401 || r->status == 403) && !strcmp(code, "") && file))
        return pl_err_set(
            err, PL_STATUS_IO,
            "%s is a gated model (%ld on %s): accept its licence on the model page %s/%s while "
            "logged in, then set HF_TOKEN to an access token of that account%s",
            d->repo_id, r->status, what, d->endpoint, d->repo_id,
            d->token ? (r->status == 403 ? " (the token in use has no access to it yet)"
                                         : " (the token in use was refused)")
                     : " (no token is set)");
    if (!strcmp(code, "RepoNotFound") || (r->status == 404 && !file && !code[0]) ||
        (r->status == 401 && !file))
        return pl_err_set(err, PL_STATUS_NOT_FOUND,
                          "no model %s on %s (%ld): check the name; a private repo needs "
                          "HF_TOKEN%s",
                          d->repo_id, d->endpoint, r->status,
                          d->token ? " with access to it" : "");
    if (!strcmp(code, "RevisionNotFound"))
        return pl_err_set(err, PL_STATUS_NOT_FOUND,
                          "%s has no revision '%s' (%ld): give a branch, tag or commit that "
                          "exists",
                          d->repo_id, rev, r->status);
    if (!strcmp(code, "EntryNotFound") || r->status == 404)
        return pl_err_set(err, PL_STATUS_NOT_FOUND, "%s: %s is not at revision %s (%ld)",
                          d->repo_id, what, rev, r->status);
    return pl_err_set(err, PL_STATUS_IO, "%s: the Hub answered %ld for %s%s%s", d->repo_id,
                      r->status, what, r->error_message[0] ? ": " : "", r->error_message);
}

static bool is_hex_n(const char *s, size_t n)
{
    if (strlen(s) != n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

/* An etag becomes a file name: allow only what hashes are made of. */
static bool safe_etag(const char *e)
{
    if (!e[0] || e[0] == '.' || strlen(e) > 128)
        return false;
    for (const char *p = e; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
              *p == '-' || *p == '_' || *p == '.'))
            return false;
    return true;
}

static void draw_bar(struct dl *d, bool final)
{
    if (!d->bar)
        return;
    double t = now_s();
    if (!final && t - d->last_draw < 0.25)
        return;
    d->last_draw = t;
    int64_t done = __atomic_load_n(&d->done_bytes, __ATOMIC_RELAXED);
    int64_t moved = __atomic_load_n(&d->transferred, __ATOMIC_RELAXED);
    double el = t - d->t0;
    char a[32], b[32], s[32];
    human((double)done, a, sizeof(a));
    human((double)d->total_bytes, b, sizeof(b));
    human(el > 0 ? (double)moved / el : 0, s, sizeof(s));
    /* one write per frame, erasing what a longer frame left (\033[K) */
    fprintf(stderr, "\r%s: %d/%d files  %s / %s  %s/s\033[K%s", d->who, d->files_done, d->n_jobs,
            a, b, s, final ? "\n" : "");
    fflush(stderr);
}

/* HEAD on the resolve URL: etag, size and where the bytes are. */
static pl_status file_meta(struct dl *d, void *curl, const char *file, struct hub_resp *r,
                           char *location, size_t loc_cap, struct pl_err *err)
{
    char *enc = hub_urlencode(file, true);
    size_t ul = strlen(d->endpoint) + strlen(d->repo_id) + (enc ? strlen(enc) : 0) + 64;
    char *url = malloc(ul);
    if (!enc || !url) {
        free(enc);
        free(url);
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
    }
    snprintf(url, ul, "%s/%s/resolve/%s/%s", d->endpoint, d->repo_id, d->commit, enc);
    free(enc);
    pl_status st = PL_STATUS_OK;
    int tries = 0, hops = 0;
    for (;;) {
        if (d->abort_flag) {
            st = pl_err_set(err, PL_STATUS_ABORTED, "aborted");
            break;
        }
        char origin[300];
        bool own = hub_origin(url, origin, sizeof(origin)) && !strcmp(origin, d->endpoint_origin);
        hub_http_head(curl, url, own ? d->token : NULL, r);
        if (hub_transient(r)) {
            if (++tries >= FILE_ATTEMPTS) {
                st = pl_err_set(err, PL_STATUS_IO, "%s: %s: no answer from %s after %d tries: %s",
                                d->repo_id, file, d->endpoint, tries,
                                r->status ? "server error" : r->curl_msg);
                break;
            }
            backoff_sleep(d, d->backoff_ms << (tries - 1));
            continue;
        }
        if (r->status >= 300 && r->status < 400) {
            /* a renamed repo redirects on the same host (relative Location): follow it,
             * token and all; an absolute one is the storage host: stop here */
            if (r->location[0] == '/' && r->location[1] != '/' && r->redirect_url[0] &&
                ++hops <= 5) {
                free(url);
                url = strdup(r->redirect_url);
                if (!url)
                    return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
                continue;
            }
            if (!r->redirect_url[0]) {
                st = pl_err_set(err, PL_STATUS_IO, "%s: %s: redirect without a location",
                                d->repo_id, file);
                break;
            }
            snprintf(location, loc_cap, "%s", r->redirect_url);
            break;
        }
        if (r->status != 200) {
            st = http_error(d, r, d->commit, file, err);
            break;
        }
        snprintf(location, loc_cap, "%s", url);
        break;
    }
    free(url);
    return st;
}

/* Primes the hashes with the first `have` bytes of a partial file. */
static bool prime(int fd, int64_t have, struct pl_sha256 *s256, struct pl_sha1 *s1)
{
    char buf[1 << 16];
    if (lseek(fd, 0, SEEK_SET) != 0)
        return false;
    int64_t left = have;
    while (left > 0) {
        ssize_t n = read(fd, buf, left < (int64_t)sizeof(buf) ? (size_t)left : sizeof(buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return false;
        if (s256)
            pl_sha256_update(s256, buf, (size_t)n);
        if (s1)
            pl_sha1_update(s1, buf, (size_t)n);
        left -= n;
    }
    return true;
}

/* Fetches one file into its blob and links it from the snapshot. */
static pl_status fetch_one(struct dl *d, void *curl, const struct job *jb, bool *linked_only,
                           struct pl_err *err)
{
    *linked_only = false;
    const struct pl_hub_file *hf = &d->info->files[jb->file];
    const char *file = hf->name;
    struct hub_resp r = {0};
    char location[2048];
    pl_status st = file_meta(d, curl, file, &r, location, sizeof(location), err);
    if (st != PL_STATUS_OK) {
        hub_resp_fini(&r);
        return st;
    }
    char etag[136], check[136];
    snprintf(etag, sizeof(etag), "%s", r.linked_etag[0] ? r.linked_etag : r.etag);
    /* What the bytes are checked against: the linked etag of a redirect, the ETag of
     * a file served directly; a redirect without X-Linked-Etag (not the Hub's way)
     * says nothing about the bytes, so the listing's LFS sha256 is used if any. */
    bool redirected = r.status >= 300 && r.status < 400;
    snprintf(check, sizeof(check), "%s",
             r.linked_etag[0] ? r.linked_etag : !redirected ? r.etag : hf->lfs_sha256);
    int64_t size = r.linked_size >= 0 ? r.linked_size
                   : (r.status == 200 && r.content_length >= 0) ? r.content_length
                                                                 : hf->size;
    hub_resp_fini(&r);
    if (!etag[0])
        return pl_err_set(err, PL_STATUS_FORMAT,
                          "%s: the Hub sent no ETag for %s, so it cannot be checked",
                          d->repo_id, file);
    if (!safe_etag(etag))
        return pl_err_set(err, PL_STATUS_FORMAT, "%s: %s: unusable ETag '%.80s'", d->repo_id,
                          file, etag);
    char origin[300];
    bool own = hub_origin(location, origin, sizeof(origin)) &&
               !strcmp(origin, d->endpoint_origin);
    const char *token = own ? d->token : NULL; /* never to the storage host */
    int refreshes = 0;

    char *blob = hub_path(d->repo_dir, "blobs", etag, NULL);
    char *blobs_dir = hub_path(d->repo_dir, "blobs", NULL, NULL);
    char *lock_name = malloc(strlen(etag) + 8);
    char *folder = strrchr(d->repo_dir, '/');
    char *lock = NULL, *incomplete = NULL;
    int lock_fd = -1, fd = -1;
    if (lock_name) {
        sprintf(lock_name, "%s.lock", etag);
        lock = hub_path(d->cache, ".locks", folder ? folder + 1 : d->repo_dir, lock_name);
    }
    if (blob) {
        incomplete = malloc(strlen(blob) + 16);
        if (incomplete)
            sprintf(incomplete, "%s.incomplete", blob);
    }
    if (!blob || !blobs_dir || !lock || !incomplete) {
        st = pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
        goto out;
    }
    if (hub_exists(blob))
        goto link; /* another process finished it meanwhile */
    char waiting[1200];
    snprintf(waiting, sizeof(waiting),
             "%s: waiting for another download of %s (lock %s)", d->who, file, lock);
    if ((lock_fd = hub_lock(lock, waiting, err)) < 0) {
        st = err ? err->status : PL_STATUS_IO;
        goto out;
    }
    if (hub_exists(blob))
        goto link;
    if ((st = hub_mkdirs(blobs_dir, err)) != PL_STATUS_OK)
        goto out;
    fd = open(incomplete, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
    if (fd < 0) {
        st = pl_err_set(err, PL_STATUS_IO, "cannot create %s: %s", incomplete, strerror(errno));
        goto out;
    }
    struct stat sb;
    int64_t have = fstat(fd, &sb) == 0 ? (int64_t)sb.st_size : 0;
    if (size >= 0 && have > size) {
        if (ftruncate(fd, 0) != 0) {
            st = pl_err_set(err, PL_STATUS_IO, "cannot truncate %s: %s", incomplete,
                            strerror(errno));
            goto out;
        }
        have = 0;
    }
    /* what the name promises: sha256 (LFS), the git blob sha1 (needs the size), else size */
    bool use256 = is_hex_n(check, 64);
    bool use1 = !use256 && is_hex_n(check, 40) && size >= 0;
    struct pl_sha256 s256;
    struct pl_sha1 s1;
    bool fresh_retry_done = false;
restart:
    if (use256)
        pl_sha256_init(&s256);
    if (use1)
        hub_git_blob_init(&s1, size);
    if (have > 0 && !prime(fd, have, use256 ? &s256 : NULL, use1 ? &s1 : NULL)) {
        /* unreadable partial file: start over */
        if (ftruncate(fd, 0) != 0) {
            st = pl_err_set(err, PL_STATUS_IO, "cannot truncate %s", incomplete);
            goto out;
        }
        have = 0;
        if (use256)
            pl_sha256_init(&s256);
        if (use1)
            hub_git_blob_init(&s1, size);
    }
    bool resumed = have > 0;
    if (resumed && d->progress != PL_HUB_PROGRESS_QUIET && !d->bar) {
        char h[32];
        fprintf(stderr, "%s: resuming %s at %s\n", d->who, file, human((double)have, h, sizeof(h)));
    }
    __atomic_fetch_add(&d->done_bytes, have, __ATOMIC_RELAXED);
    int tries = 0;
    for (;;) {
        struct hub_sink sink = {.fd = fd,
                                .have = have,
                                .expected = size,
                                .s256 = use256 ? &s256 : NULL,
                                .s1 = use1 ? &s1 : NULL,
                                .progress = &d->done_bytes,
                                .transferred = &d->transferred,
                                .abort_flag = &d->abort_flag};
        int64_t before = have;
        hub_http_fetch(curl, location, token, &sink, &r);
        have = sink.have;
        if (sink.restarted)
            resumed = false; /* the server sent the whole file: nothing old is kept */
        if (d->abort_flag) {
            st = pl_err_set(err, PL_STATUS_ABORTED, "aborted");
            goto out;
        }
        if (sink.write_errno) {
            st = pl_err_set(err, PL_STATUS_IO, "cannot write %s: %s", incomplete,
                            strerror(sink.write_errno));
            goto out;
        }
        if (sink.overflow) {
            st = pl_err_set(err, PL_STATUS_FORMAT,
                            "%s: the server sent more than the %lld bytes of %s", d->repo_id,
                            (long long)size, file);
            unlink(incomplete);
            goto out;
        }
        if (r.status == 416 && size >= 0 && have == size)
            break; /* nothing left to fetch */
        if (r.status == 416) {
            /* the range no longer fits the file: fetch it whole */
            if (ftruncate(fd, 0) != 0) {
                st = pl_err_set(err, PL_STATUS_IO, "cannot truncate %s", incomplete);
                goto out;
            }
            __atomic_fetch_sub(&d->done_bytes, have, __ATOMIC_RELAXED);
            have = 0;
            if (use256)
                pl_sha256_init(&s256);
            if (use1)
                hub_git_blob_init(&s1, size);
            if (++tries >= FILE_ATTEMPTS) {
                st = pl_err_set(err, PL_STATUS_IO, "%s: %s: the server keeps refusing the range",
                                d->repo_id, file);
                goto out;
            }
            continue;
        }
        bool answered = r.status == 200 || r.status == 206;
        bool complete = answered && r.curl_rc == CURLE_OK && (size < 0 || have == size);
        if (complete)
            break;
        if (r.status >= 400 && !hub_transient(&r)) {
            if (!own && refreshes++ < 2) {
                /* the storage host's signed URL may have expired: ask the Hub again */
                char fresh[2048];
                struct hub_resp m = {0};
                st = file_meta(d, curl, file, &m, fresh, sizeof(fresh), err);
                hub_resp_fini(&m);
                if (st != PL_STATUS_OK)
                    goto out;
                snprintf(location, sizeof(location), "%s", fresh);
                continue;
            }
            if (!own)
                st = pl_err_set(err, PL_STATUS_IO,
                                "%s: the storage host answered %ld for %s (after asking the Hub "
                                "for a fresh link)",
                                d->repo_id, r.status, file);
            else
                st = http_error(d, &r, d->commit, file, err);
            goto out;
        }
        /* a cut, a reset, a stall, a 5xx: try again from where the file is */
        if (have > before)
            tries = 0;
        if (++tries >= FILE_ATTEMPTS) {
            st = pl_err_set(err, PL_STATUS_IO,
                            "%s: giving up on %s after %d tries without progress (%s); %lld of "
                            "%lld bytes are kept in %s for the next run",
                            d->repo_id, file, tries,
                            r.curl_msg[0] ? r.curl_msg
                            : r.status    ? "server error"
                                          : "connection ended early",
                            (long long)have, (long long)size, incomplete);
            goto out;
        }
        if (d->progress != PL_HUB_PROGRESS_QUIET && !d->bar)
            fprintf(stderr, "%s: %s: transfer broke at %lld bytes (%s); retrying\n", d->who,
                    file, (long long)have,
                    r.curl_msg[0] ? r.curl_msg : r.status ? "server error" : "ended early");
        backoff_sleep(d, d->backoff_ms << (tries - 1));
    }
    /* check what the name promises before the blob gets it */
    char got[65] = "";
    if (use256) {
        uint8_t dg[PL_SHA256_DIGEST_LEN];
        pl_sha256_final(&s256, dg);
        pl_sha256_hex(dg, got);
    } else if (use1) {
        uint8_t dg[PL_SHA1_DIGEST_LEN];
        pl_sha1_final(&s1, dg);
        pl_sha1_hex(dg, got);
    }
    bool size_ok = size < 0 || have == size;
    if ((got[0] && strcmp(got, check)) || !size_ok) {
        if (resumed && !fresh_retry_done) {
            /* the kept part may be what is wrong: fetch the whole file once more */
            fresh_retry_done = true;
            if (ftruncate(fd, 0) == 0) {
                __atomic_fetch_sub(&d->done_bytes, have, __ATOMIC_RELAXED);
                have = 0;
                goto restart;
            }
        }
        unlink(incomplete);
        if (!size_ok)
            st = pl_err_set(err, PL_STATUS_FORMAT,
                            "%s: %s: got %lld bytes, the Hub says %lld; the partial file was "
                            "removed, run the command again",
                            d->repo_id, file, (long long)have, (long long)size);
        else
            st = pl_err_set(err, PL_STATUS_FORMAT,
                            "%s: checksum mismatch for %s: the Hub says %s %s, the %lld bytes "
                            "received hash to %s; the file was removed and not used (run the "
                            "command again; if it repeats, the copy on the server is damaged)",
                            d->repo_id, file, use256 ? "sha256" : "git blob sha1", check,
                            (long long)have, got);
        goto out;
    }
    close(fd);
    fd = -1;
    if (rename(incomplete, blob) != 0) {
        st = pl_err_set(err, PL_STATUS_IO, "cannot rename %s to %s: %s", incomplete, blob,
                        strerror(errno));
        goto out;
    }
    goto link_it;
link:
    *linked_only = true;
link_it:
    st = hub_link_pointer(d->repo_dir, d->commit, file, etag, err);
out:
    hub_resp_fini(&r);
    if (fd >= 0)
        close(fd);
    hub_unlock(lock_fd);
    free(blob);
    free(blobs_dir);
    free(lock_name);
    free(lock);
    free(incomplete);
    return st;
}

static void *worker_main(void *arg)
{
    struct dl *d = arg;
    void *curl = hub_curl_new();
    for (;;) {
        pthread_mutex_lock(&d->mu);
        int j = d->abort_flag || !curl ? d->n_jobs : d->next_job++;
        pthread_mutex_unlock(&d->mu);
        if (j >= d->n_jobs)
            break;
        struct pl_err e = {0};
        bool linked_only = false;
        pl_status st = fetch_one(d, curl, &d->jobs[j], &linked_only, &e);
        if (st != PL_STATUS_OK && st != PL_STATUS_ABORTED) {
            fail(d, &e);
            break;
        }
        if (st == PL_STATUS_OK) {
            pthread_mutex_lock(&d->mu);
            d->files_done++;
            pthread_mutex_unlock(&d->mu);
            if (d->progress != PL_HUB_PROGRESS_QUIET && !d->bar) {
                char h[32];
                int64_t sz = d->jobs[j].size;
                const char *name = d->info->files[d->jobs[j].file].name;
                if (linked_only)
                    fprintf(stderr, "%s: %s is already in the cache\n", d->who, name);
                else
                    fprintf(stderr, "%s: fetched %s (%s)\n", d->who, name,
                            sz >= 0 ? human((double)sz, h, sizeof(h)) : "size unknown");
            }
        }
    }
    if (!curl) {
        struct pl_err e;
        pl_err_set(&e, PL_STATUS_NO_MEMORY, "cannot start a transfer (curl)");
        fail(d, &e);
    }
    hub_curl_free(curl);
    pthread_mutex_lock(&d->mu);
    d->running--;
    pthread_cond_broadcast(&d->cv);
    pthread_mutex_unlock(&d->mu);
    return NULL;
}

/* Runs the jobs on up to max_workers threads; returns the first error. */
static pl_status run_jobs(struct dl *d, int max_workers, struct pl_err *err)
{
    if (d->n_jobs == 0)
        return PL_STATUS_OK;
    int n = max_workers > 0 ? max_workers : 4;
    if (n > d->n_jobs)
        n = d->n_jobs;
    if (n > 16)
        n = 16;
    pthread_t th[16];
    d->t0 = d->last_draw = now_s();
    d->running = 0;
    int started = 0;
    for (int i = 0; i < n; i++) {
        pthread_mutex_lock(&d->mu);
        d->running++;
        pthread_mutex_unlock(&d->mu);
        if (pthread_create(&th[i], NULL, worker_main, d) != 0) {
            pthread_mutex_lock(&d->mu);
            d->running--;
            pthread_mutex_unlock(&d->mu);
            break;
        }
        started++;
    }
    if (started == 0)
        return pl_err_set(err, PL_STATUS_INTERNAL, "cannot start a download thread");
    pthread_mutex_lock(&d->mu);
    while (d->running > 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 250 * 1000 * 1000;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&d->cv, &d->mu, &ts);
        pthread_mutex_unlock(&d->mu);
        draw_bar(d, false);
        pthread_mutex_lock(&d->mu);
    }
    pthread_mutex_unlock(&d->mu);
    for (int i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    if (!d->failed)
        draw_bar(d, true);
    else if (d->bar)
        fputc('\n', stderr);
    if (d->failed) {
        if (err)
            *err = d->err;
        return d->err.status;
    }
    return PL_STATUS_OK;
}

/* ---- the cache without the network ---- */

static bool snapshot_complete(const char *snap, bool default_mode, char *missing, size_t cap)
{
    if (!default_mode)
        return true;
    char *p = hub_path(snap, "config.json", NULL, NULL);
    bool ok = p && hub_exists(p);
    free(p);
    if (!ok) {
        snprintf(missing, cap, "config.json");
        return false;
    }
    p = hub_path(snap, "model.safetensors.index.json", NULL, NULL);
    if (p && hub_exists(p)) {
        char *text = NULL;
        FILE *f = fopen(p, "rb");
        size_t len = 0;
        if (f) {
            fseek(f, 0, SEEK_END);
            long l = ftell(f);
            fseek(f, 0, SEEK_SET);
            if (l > 0 && l < (64 << 20) && (text = malloc((size_t)l + 1))) {
                len = fread(text, 1, (size_t)l, f);
                text[len] = '\0';
            }
            fclose(f);
        }
        char **names = NULL;
        int n = 0;
        if (text && pl_hub_index_shards(text, len, &names, &n, NULL) == PL_STATUS_OK) {
            for (int i = 0; i < n && ok; i++) {
                char *s = hub_path(snap, names[i], NULL, NULL);
                if (!s || !hub_exists(s)) {
                    snprintf(missing, cap, "%s", names[i]);
                    ok = false;
                }
                free(s);
            }
        }
        pl_hub_free_names(names, n);
        free(text);
        free(p);
        return ok;
    }
    free(p);
    p = hub_path(snap, "model.safetensors", NULL, NULL);
    ok = p && hub_exists(p);
    free(p);
    if (!ok) {
        /* no index and no model.safetensors: any top-level *.safetensors (see pl_hub_select) */
        DIR *dh = opendir(snap);
        struct dirent *de;
        while (dh && !ok && (de = readdir(dh))) {
            size_t n = strlen(de->d_name);
            char *f = n > 12 && !strcmp(de->d_name + n - 12, ".safetensors")
                          ? hub_path(snap, de->d_name, NULL, NULL)
                          : NULL;
            ok = f && hub_exists(f);
            free(f);
        }
        if (dh)
            closedir(dh);
    }
    if (!ok)
        snprintf(missing, cap, "model.safetensors");
    return ok;
}

/* Which snapshot files go to a local dir: the chosen ones (online), or what the
 * options want (from the cache). */
struct want {
    const struct pl_hub_info *info; /* with sel: exactly the chosen files */
    const char *sel;
    const struct pl_hub_opts *o;    /* else: pl_hub_path_wanted */
};

static bool wanted(const struct want *w, const char *rel)
{
    if (w->info) {
        for (int i = 0; i < w->info->n_files; i++)
            if (w->sel[i] && !strcmp(w->info->files[i].name, rel))
                return true;
        return false;
    }
    return pl_hub_path_wanted(w->o, rel);
}

static pl_status copy_to_local_dir(const char *snap, const char *local_dir, const char *commit,
                                   const struct want *w, struct pl_err *err);

/* The snapshot the cache holds for revision, or an error naming the path looked up. */
static pl_status from_cache(const char *who, const char *repo_id, const char *rev,
                            const char *repo_dir, const struct pl_hub_opts *o, const char *why,
                            char **path_out, struct pl_err *err)
{
    char commit[41];
    char *looked = NULL;
    if (is_hex_n(rev, 40)) {
        memcpy(commit, rev, 41);
    } else if (!hub_read_ref(repo_dir, rev, commit)) {
        looked = hub_path(repo_dir, "refs", rev, NULL);
        pl_status st = pl_err_set(err, PL_STATUS_NOT_FOUND,
                                  "%s is not in the cache (%s): looked for %s, which does not "
                                  "exist. Download it once with the Hub reachable (pagellm "
                                  "download %s), or point HF_HUB_CACHE / --download-dir at the "
                                  "cache that has it",
                                  repo_id, why, looked ? looked : repo_dir, repo_id);
        free(looked);
        return st;
    }
    char *snap = hub_path(repo_dir, "snapshots", commit, NULL);
    if (!snap)
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
    struct stat sb;
    if (stat(snap, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        pl_status st = pl_err_set(err, PL_STATUS_NOT_FOUND,
                                  "%s is not in the cache (%s): looked for %s, which does not "
                                  "exist. Download it once with the Hub reachable (pagellm "
                                  "download %s)",
                                  repo_id, why, snap, repo_id);
        free(snap);
        return st;
    }
    char missing[512];
    if (!snapshot_complete(snap, o->n_include == 0, missing, sizeof(missing))) {
        pl_status st = pl_err_set(err, PL_STATUS_NOT_FOUND,
                                  "%s is only partly in the cache (%s): %s/%s does not exist "
                                  "(an interrupted download?). Run once with the Hub reachable "
                                  "to complete it",
                                  repo_id, why, snap, missing);
        free(snap);
        return st;
    }
    if (o->progress != PL_HUB_PROGRESS_QUIET)
        fprintf(stderr, "%s: %s: using the cached snapshot %s (%s)\n", who, repo_id, snap, why);
    if (o->local_dir) {
        struct want w = {NULL, NULL, o};
        pl_status st = copy_to_local_dir(snap, o->local_dir, commit, &w, err);
        free(snap);
        if (st != PL_STATUS_OK)
            return st;
        return (*path_out = strdup(o->local_dir)) ? PL_STATUS_OK
                                                  : pl_err_set(err, PL_STATUS_NO_MEMORY, "oom");
    }
    *path_out = snap;
    return PL_STATUS_OK;
}

/* ---- --local-dir ---- */

static pl_status make_parent(const char *path, struct pl_err *err)
{
    char *dir = strdup(path);
    if (!dir)
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
    char *slash = strrchr(dir, '/');
    pl_status st = PL_STATUS_OK;
    if (slash && slash != dir) {
        *slash = '\0';
        st = hub_mkdirs(dir, err);
    }
    free(dir);
    return st;
}

/* Copies each file of a snapshot (recursively) into local_dir, with
 * huggingface_hub's metadata (.cache/huggingface/download/<f>.metadata:
 * commit, etag, time) so Python sees them as downloaded. */
static pl_status copy_tree(const char *snap, const char *rel, const char *local_dir,
                           const char *commit, const struct want *w, struct pl_err *err);

static pl_status copy_to_local_dir(const char *snap, const char *local_dir, const char *commit,
                                   const struct want *w, struct pl_err *err)
{
    pl_status st = hub_mkdirs(local_dir, err);
    if (st != PL_STATUS_OK)
        return st;
    char *hfdir = hub_path(local_dir, ".cache/huggingface", NULL, NULL);
    if (hfdir && hub_mkdirs(hfdir, NULL) == PL_STATUS_OK) {
        char *gi = hub_path(hfdir, ".gitignore", NULL, NULL);
        FILE *f = gi && !hub_exists(gi) ? fopen(gi, "wb") : NULL;
        if (f) {
            fputs("*\n", f);
            fclose(f);
        }
        free(gi);
    }
    free(hfdir);
    return copy_tree(snap, NULL, local_dir, commit, w, err);
}

static pl_status copy_tree(const char *snap, const char *rel, const char *local_dir,
                           const char *commit, const struct want *w, struct pl_err *err)
{
    char *dir = hub_path(snap, rel, NULL, NULL);
    DIR *dh = dir ? opendir(dir) : NULL;
    if (!dh) {
        pl_status st = pl_err_set(err, PL_STATUS_IO, "cannot read %s", dir ? dir : snap);
        free(dir);
        return st;
    }
    pl_status st = PL_STATUS_OK;
    struct dirent *de;
    while (st == PL_STATUS_OK && (de = readdir(dh))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        char *r = hub_path(rel, de->d_name, NULL, NULL);
        char *src = r ? hub_path(snap, r, NULL, NULL) : NULL;
        char *dst = r ? hub_path(local_dir, r, NULL, NULL) : NULL;
        if (!r || !src || !dst) {
            st = pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
        } else {
            struct stat sb;
            if (stat(src, &sb) != 0) {
                /* a dangling entry: skip */
            } else if (S_ISDIR(sb.st_mode)) {
                st = copy_tree(snap, r, local_dir, commit, w, err);
            } else if (!wanted(w, r)) {
                /* not asked for */
            } else if ((st = make_parent(dst, err)) != PL_STATUS_OK) {
                /* reported */
            } else {
                char target[512] = "";
                ssize_t n = readlink(src, target, sizeof(target) - 1);
                const char *etag = "";
                if (n > 0) {
                    target[n] = '\0';
                    const char *slash = strrchr(target, '/');
                    etag = slash ? slash + 1 : target;
                }
                char *meta_rel = malloc(strlen(r) + 64);
                char *meta = NULL;
                if (meta_rel) {
                    sprintf(meta_rel, ".cache/huggingface/download/%s.metadata", r);
                    meta = hub_path(local_dir, meta_rel, NULL, NULL);
                }
                /* up to date when the metadata names this commit and etag and sizes match */
                bool fresh = false;
                FILE *mf = meta ? fopen(meta, "rb") : NULL;
                if (mf) {
                    char c[64] = "", e[160] = "";
                    fresh = fscanf(mf, "%63s %159s", c, e) == 2 && !strcmp(c, commit) &&
                            !strcmp(e, etag) && hub_file_size(dst) == (int64_t)sb.st_size;
                    fclose(mf);
                }
                if (!fresh) {
                    st = hub_copy_file(src, dst, err);
                    if (st == PL_STATUS_OK && meta) {
                        char *mdir = strdup(meta);
                        if (mdir) {
                            *strrchr(mdir, '/') = '\0';
                            if (hub_mkdirs(mdir, NULL) == PL_STATUS_OK) {
                                FILE *mw = fopen(meta, "wb");
                                if (mw) {
                                    struct timespec ts;
                                    clock_gettime(CLOCK_REALTIME, &ts);
                                    fprintf(mw, "%s\n%s\n%.6f\n", commit, etag,
                                            (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9);
                                    fclose(mw);
                                }
                            }
                            free(mdir);
                        }
                    }
                }
                free(meta_rel);
                free(meta);
            }
        }
        free(r);
        free(src);
        free(dst);
    }
    closedir(dh);
    free(dir);
    return st;
}

/* ---- the whole download ---- */

/* snapshots/<commit>/ and refs/<rev>, before the first file: huggingface_hub's scan
 * takes a repo folder without snapshots/ for a corrupted one, so a folder is made
 * only once something will be fetched or linked into it. */
static pl_status prepare_snapshot(struct dl *d, const char *rev, struct pl_err *err)
{
    char *snap = hub_path(d->repo_dir, "snapshots", d->commit, NULL);
    if (!snap)
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
    pl_status st = hub_mkdirs(snap, err);
    free(snap);
    if (st != PL_STATUS_OK)
        return st;
    if (strcmp(rev, d->commit)) {
        struct pl_err e;
        if (hub_write_ref(d->repo_dir, rev, d->commit, &e) != PL_STATUS_OK)
            /* the snapshot is still usable; huggingface_hub treats this the same way */
            fprintf(stderr, "%s: warning: %s\n", d->who, e.msg);
    }
    return PL_STATUS_OK;
}

static const char *const OPTIONAL_FILES[] = {
    "generation_config.json", "tokenizer.json",      "tokenizer_config.json",
    "special_tokens_map.json", "tokenizer.model",    "chat_template.jinja",
    "chat_template.json",     "model.safetensors.index.json",
};

/* Reads a file of the snapshot (small JSON). */
static char *read_small(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = NULL;
    if (fseek(f, 0, SEEK_END) == 0) {
        long l = ftell(f);
        if (l >= 0 && l < (64L << 20) && fseek(f, 0, SEEK_SET) == 0 &&
            (buf = malloc((size_t)l + 1))) {
            *len = fread(buf, 1, (size_t)l, f);
            buf[*len] = '\0';
        }
    }
    fclose(f);
    return buf;
}

/* Builds the job list of the selected files not yet in the snapshot. */
static pl_status plan(struct dl *d, const char *sel, int64_t *need, int *n_cached,
                      struct pl_err *err)
{
    *need = 0;
    *n_cached = 0;
    d->n_jobs = 0;
    d->next_job = 0;
    d->total_bytes = 0;
    d->done_bytes = 0;
    d->transferred = 0;
    d->files_done = 0;
    for (int i = 0; i < d->info->n_files; i++) {
        if (!sel[i])
            continue;
        const struct pl_hub_file *hf = &d->info->files[i];
        char *pointer = hub_path(d->repo_dir, "snapshots", d->commit, hf->name);
        if (!pointer)
            return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
        bool have = hub_exists(pointer);
        free(pointer);
        if (have) {
            (*n_cached)++;
            continue;
        }
        struct job *jb = &d->jobs[d->n_jobs++];
        jb->file = i;
        jb->size = hf->size;
        snprintf(jb->etag_guess, sizeof(jb->etag_guess), "%s",
                 hf->lfs_sha256[0] ? hf->lfs_sha256 : hf->blob_id);
        int64_t part = 0;
        if (jb->etag_guess[0]) {
            char *blob = hub_path(d->repo_dir, "blobs", jb->etag_guess, NULL);
            if (blob && hub_exists(blob)) {
                free(blob);
                continue; /* the blob is cached (another revision): only a link is missing */
            }
            if (blob) {
                char *inc = malloc(strlen(blob) + 16);
                if (inc) {
                    sprintf(inc, "%s.incomplete", blob);
                    part = hub_file_size(inc);
                    free(inc);
                }
            }
            free(blob);
        }
        if (hf->size > 0) {
            d->total_bytes += hf->size;
            *need += hf->size - (part > 0 && part <= hf->size ? part : 0);
        }
    }
    return PL_STATUS_OK;
}

static pl_status check_disk(struct dl *d, int64_t need, const char *where, struct pl_err *err)
{
    int64_t free_b = hub_free_bytes(where);
    if (free_b < 0 || need <= free_b)
        return PL_STATUS_OK;
    char a[32], b[32];
    return pl_err_set(err, PL_STATUS_LIMIT,
                      "not enough disk space for %s: its files need %s more in %s, and only %s "
                      "is free there. Free some space, or put the cache elsewhere with "
                      "--download-dir DIR (or HF_HUB_CACHE)",
                      d->repo_id, human((double)need, a, sizeof(a)), where,
                      human((double)free_b, b, sizeof(b)));
}

pl_status pl_hub_download(const char *repo_id, const char *revision, const struct pl_hub_opts *o,
                          char **path_out, struct pl_err *err)
{
    *path_out = NULL;
    struct pl_hub_opts dflt;
    if (!o) {
        pl_hub_opts_default(&dflt);
        o = &dflt;
    }
    const char *who = o->who ? o->who : "pagellm";
    const char *rev = revision && *revision ? revision : "main";
    if (!pl_hub_is_repo_id(repo_id))
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                          "'%s' is not a Hub model id (org/name)", repo_id);
    if (!pl_hub_is_revision(rev))
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT, "'%s' is not a usable revision", rev);
    char *cache = pl_hub_cache_dir(o->cache_dir);
    char *repo_dir = cache ? hub_repo_dir(cache, repo_id) : NULL;
    const char *ep_env = getenv("HF_ENDPOINT");
    char *endpoint = strdup(o->endpoint && *o->endpoint ? o->endpoint
                            : ep_env && *ep_env        ? ep_env
                                                       : DEFAULT_ENDPOINT);
    char *token = NULL, *enc_rev = NULL, *url = NULL, *sel = NULL;
    char **shards = NULL;
    int n_shards = 0;
    void *curl = NULL;
    bool curl_inited = false;
    struct pl_hub_info info = {0};
    struct hub_resp r = {0};
    struct dl d;
    memset(&d, 0, sizeof(d));
    pthread_mutex_init(&d.mu, NULL);
    pthread_cond_init(&d.cv, NULL);
    pl_status st = PL_STATUS_OK;
    if (!cache || !repo_dir || !endpoint) {
        st = pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
        goto out;
    }
    size_t el = strlen(endpoint);
    while (el > 0 && endpoint[el - 1] == '/')
        endpoint[--el] = '\0';
    bool offline = o->offline < 0 ? hub_env_offline() : o->offline > 0;
    if (offline) {
        st = from_cache(who, repo_id, rev, repo_dir, o, "HF_HUB_OFFLINE is set", path_out, err);
        goto out;
    }
    d.who = who;
    d.repo_id = repo_id;
    d.endpoint = endpoint;
    d.repo_dir = repo_dir;
    d.cache = cache;
    d.progress = o->progress;
    d.backoff_ms = retry_base_ms();
    if (!hub_origin(endpoint, d.endpoint_origin, sizeof(d.endpoint_origin))) {
        st = pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                        "HF_ENDPOINT '%s' is not an http(s) URL", endpoint);
        goto out;
    }
    token = hub_token(o->token);
    d.token = token;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        st = pl_err_set(err, PL_STATUS_INTERNAL, "cannot initialise libcurl");
        goto out;
    }
    curl_inited = true;
    curl = hub_curl_new();
    enc_rev = hub_urlencode(rev, false);
    size_t ul = strlen(endpoint) + strlen(repo_id) + (enc_rev ? strlen(enc_rev) : 0) + 64;
    url = malloc(ul);
    if (!curl || !enc_rev || !url) {
        st = pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
        goto out;
    }
    snprintf(url, ul, "%s/api/models/%s/revision/%s?blobs=true", endpoint, repo_id, enc_rev);
    for (int attempt = 1;; attempt++) {
        pl_status hs = hub_http_get(curl, url, token, MAX_INFO_BYTES, &r);
        if (hs == PL_STATUS_LIMIT) {
            st = pl_err_set(err, PL_STATUS_LIMIT, "%s: the model info is larger than %u bytes",
                            repo_id, MAX_INFO_BYTES);
            goto out;
        }
        if (!hub_transient(&r))
            break;
        if (attempt >= INFO_ATTEMPTS) {
            char why[600];
            if (r.status)
                snprintf(why, sizeof(why), "the Hub at %s answered %ld", endpoint, r.status);
            else
                snprintf(why, sizeof(why), "the Hub at %s could not be reached: %s", endpoint,
                         r.curl_msg);
            st = from_cache(who, repo_id, rev, repo_dir, o, why, path_out, err);
            goto out;
        }
        d.abort_flag = 0;
        backoff_sleep(&d, d.backoff_ms << (attempt - 1));
    }
    if (r.status != 200) {
        st = http_error(&d, &r, rev, NULL, err);
        goto out;
    }
    if ((st = pl_hub_info_parse(r.body, r.len, &info, err)) != PL_STATUS_OK) {
        pl_err_prefix(err, "%s at %s", repo_id, endpoint);
        goto out;
    }
    hub_resp_fini(&r);
    d.info = &info;
    d.commit = info.sha;
    sel = malloc((size_t)info.n_files + 1);
    d.jobs = calloc((size_t)info.n_files + 1, sizeof(struct job));
    if (!sel || !d.jobs) {
        st = pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
        goto out;
    }
    bool need_index = false;
    int n_pickles = 0;
    if ((st = pl_hub_select(&info, o, NULL, 0, sel, &need_index, &n_pickles, repo_id, err)) !=
        PL_STATUS_OK)
        goto out;
    d.bar = o->progress == PL_HUB_PROGRESS_BAR ||
            (o->progress == PL_HUB_PROGRESS_AUTO && isatty(2) &&
             !(getenv("HF_HUB_DISABLE_PROGRESS_BARS") &&
               strcmp(getenv("HF_HUB_DISABLE_PROGRESS_BARS"), "0")));
    if (need_index) {
        /* the index decides which shards: fetch it first (it is small) */
        char *only = calloc((size_t)info.n_files + 1, 1);
        if (!only) {
            st = pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
            goto out;
        }
        for (int i = 0; i < info.n_files; i++)
            only[i] = !strcmp(info.files[i].name, "model.safetensors.index.json");
        int64_t need;
        int n_cached;
        bool bar = d.bar;
        enum pl_hub_progress pg = d.progress;
        d.bar = false;
        d.progress = PL_HUB_PROGRESS_QUIET;
        st = plan(&d, only, &need, &n_cached, err);
        free(only);
        if (st == PL_STATUS_OK)
            st = prepare_snapshot(&d, rev, err);
        if (st == PL_STATUS_OK)
            st = run_jobs(&d, 1, err);
        d.bar = bar;
        d.progress = pg;
        if (st != PL_STATUS_OK)
            goto out;
        char *ipath = hub_path(repo_dir, "snapshots", info.sha, "model.safetensors.index.json");
        size_t ilen = 0;
        char *text = ipath ? read_small(ipath, &ilen) : NULL;
        free(ipath);
        if (!text) {
            st = pl_err_set(err, PL_STATUS_IO, "%s: cannot read model.safetensors.index.json",
                            repo_id);
            goto out;
        }
        st = pl_hub_index_shards(text, ilen, &shards, &n_shards, err);
        free(text);
        if (st != PL_STATUS_OK) {
            pl_err_prefix(err, "%s", repo_id);
            goto out;
        }
        if ((st = pl_hub_select(&info, o, shards, n_shards, sel, &need_index, &n_pickles,
                                repo_id, err)) != PL_STATUS_OK)
            goto out;
    }
    int64_t need = 0;
    int n_cached = 0;
    if ((st = plan(&d, sel, &need, &n_cached, err)) != PL_STATUS_OK)
        goto out;
    char *blobs_dir = hub_path(repo_dir, "blobs", NULL, NULL);
    st = blobs_dir ? check_disk(&d, need, blobs_dir, err)
                   : pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
    free(blobs_dir);
    if (st != PL_STATUS_OK)
        goto out;
    if (o->local_dir) {
        int64_t all = 0;
        for (int i = 0; i < info.n_files; i++) {
            if (!sel[i] || info.files[i].size <= 0)
                continue;
            char *there = hub_path(o->local_dir, info.files[i].name, NULL, NULL);
            if (!there || hub_file_size(there) != info.files[i].size)
                all += info.files[i].size; /* not there yet (or another version) */
            free(there);
        }
        struct stat a, b;
        /* the same file system holds both copies: count them together */
        if (stat(cache, &a) == 0 && stat(o->local_dir, &b) == 0 && a.st_dev == b.st_dev)
            all += need;
        if ((st = check_disk(&d, all, o->local_dir, err)) != PL_STATUS_OK)
            goto out;
    }
    if ((st = prepare_snapshot(&d, rev, err)) != PL_STATUS_OK)
        goto out;
    if (o->n_include == 0) {
        /* tell Python tools which of the usual files the repo lacks (.no_exist) */
        for (size_t k = 0; k < sizeof(OPTIONAL_FILES) / sizeof(OPTIONAL_FILES[0]); k++) {
            bool listed = false;
            for (int i = 0; i < info.n_files && !listed; i++)
                listed = !strcmp(info.files[i].name, OPTIONAL_FILES[k]);
            if (!listed)
                hub_touch_no_exist(repo_dir, info.sha, OPTIONAL_FILES[k]);
        }
    }
    if (n_pickles && o->progress != PL_HUB_PROGRESS_QUIET)
        fprintf(stderr, "%s: %s: skipping %d pickle file%s (.bin/.pt/.pth): pagellm never "
                        "downloads them\n",
                who, repo_id, n_pickles, n_pickles == 1 ? "" : "s");
    if (d.n_jobs && o->progress != PL_HUB_PROGRESS_QUIET) {
        char h[32];
        fprintf(stderr, "%s: downloading %d file%s of %s (%s) at %.12s into %s\n", who,
                d.n_jobs, d.n_jobs == 1 ? "" : "s", repo_id, human((double)d.total_bytes, h, sizeof(h)),
                info.sha, repo_dir);
    }
    if ((st = run_jobs(&d, o->max_workers, err)) != PL_STATUS_OK)
        goto out;
    char *snap = hub_path(repo_dir, "snapshots", info.sha, NULL);
    if (!snap) {
        st = pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
        goto out;
    }
    if (o->local_dir) {
        struct want w = {&info, sel, NULL};
        st = copy_to_local_dir(snap, o->local_dir, info.sha, &w, err);
        free(snap);
        if (st == PL_STATUS_OK && !(*path_out = strdup(o->local_dir)))
            st = pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
        goto out;
    }
    *path_out = snap;
out:
    hub_resp_fini(&r);
    pl_hub_info_fini(&info);
    pl_hub_free_names(shards, n_shards);
    free(sel);
    free(d.jobs);
    hub_curl_free(curl);
    if (curl_inited)
        curl_global_cleanup();
    pthread_mutex_destroy(&d.mu);
    pthread_cond_destroy(&d.cv);
    free(url);
    free(enc_rev);
    free(token);
    free(endpoint);
    free(repo_dir);
    free(cache);
    return st;
}

pl_status pl_hub_resolve_model(const char *name, const char *revision,
                               const struct pl_hub_opts *o, char **path_out, struct pl_err *err)
{
    *path_out = NULL;
    if (!name || !*name)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT, "no model given");
    struct stat sb;
    if (stat(name, &sb) == 0 && S_ISDIR(sb.st_mode)) {
        /* a local directory always wins */
        return (*path_out = strdup(name)) ? PL_STATUS_OK
                                          : pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
    }
    if (!pl_hub_is_repo_id(name))
        return pl_err_set(err, PL_STATUS_NOT_FOUND,
                          "no model directory at '%s' (and it is not a Hugging Face Hub model "
                          "id of the form org/name)",
                          name);
    return pl_hub_download(name, revision, o, path_out, err);
}
