/*
 * hub_cache.c -- huggingface_hub's cache layout on disk (see hub.h for the
 * layout), the environment that places it, and the token.
 *
 * Owns the on-disk rules that make the cache shareable with Python tools:
 * refs hold the bare commit (no newline; huggingface_hub compares the raw
 * text), snapshot entries are relative symlinks (so a moved cache still
 * works), locks are flock(2) on .locks/<repo folder>/<etag>.lock (the lock
 * Python's filelock takes on Linux). No CACHEDIR.TAG: huggingface_hub before
 * 1.0 reports one in the cache root as a corrupted repo.
 * Lock files are never deleted: deleting one while another process waits on
 * it would let two writers in.
 */
#include "model/hub_impl.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

char *hub_path(const char *a, const char *b, const char *c, const char *d)
{
    const char *parts[4] = {a, b, c, d};
    size_t n = 1;
    for (int i = 0; i < 4; i++)
        if (parts[i])
            n += strlen(parts[i]) + 1;
    char *p = malloc(n);
    if (!p)
        return NULL;
    size_t at = 0;
    for (int i = 0; i < 4; i++) {
        if (!parts[i])
            continue;
        size_t l = strlen(parts[i]);
        if (at && p[at - 1] != '/')
            p[at++] = '/';
        memcpy(p + at, parts[i], l);
        at += l;
    }
    p[at] = '\0';
    return p;
}

/* An environment value with a leading ~ expanded (as Python's expanduser). */
static char *env_path(const char *name)
{
    const char *v = getenv(name);
    if (!v || !*v)
        return NULL;
    if (v[0] == '~' && (v[1] == '/' || v[1] == '\0')) {
        const char *home = getenv("HOME");
        if (home && *home)
            return hub_path(home, v[1] ? v + 2 : NULL, NULL, NULL);
    }
    return strdup(v);
}

static char *hf_home(void)
{
    char *h = env_path("HF_HOME");
    if (h)
        return h;
    char *xdg = env_path("XDG_CACHE_HOME");
    if (xdg) {
        h = hub_path(xdg, "huggingface", NULL, NULL);
        free(xdg);
        return h;
    }
    const char *home = getenv("HOME");
    return hub_path(home && *home ? home : "/", ".cache/huggingface", NULL, NULL);
}

char *pl_hub_cache_dir(const char *override)
{
    if (override && *override)
        return strdup(override);
    char *p = env_path("HF_HUB_CACHE");
    if (!p)
        p = env_path("HUGGINGFACE_HUB_CACHE");
    if (p)
        return p;
    char *home = hf_home();
    if (!home)
        return NULL;
    p = hub_path(home, "hub", NULL, NULL);
    free(home);
    return p;
}

char *hub_repo_dir(const char *cache, const char *repo_id)
{
    /* models--org--name: huggingface_hub's repo_folder_name */
    size_t n = strlen(repo_id);
    char *folder = malloc(8 + 2 * n + 1);
    if (!folder)
        return NULL;
    size_t at = 0;
    memcpy(folder, "models--", 8);
    at = 8;
    for (size_t i = 0; i < n; i++) {
        if (repo_id[i] == '/') {
            folder[at++] = '-';
            folder[at++] = '-';
        } else {
            folder[at++] = repo_id[i];
        }
    }
    folder[at] = '\0';
    char *p = hub_path(cache, folder, NULL, NULL);
    free(folder);
    return p;
}

static bool is_commit(const char *s)
{
    if (strlen(s) != 40)
        return false;
    for (int i = 0; i < 40; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

bool hub_read_ref(const char *repo_dir, const char *rev, char commit[41])
{
    char *p = hub_path(repo_dir, "refs", rev, NULL);
    if (!p)
        return false;
    FILE *f = fopen(p, "rb");
    free(p);
    if (!f)
        return false;
    char buf[64];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* Python writes the bare hash; tolerate surrounding whitespace from other writers */
    char *s = buf;
    while (*s == ' ' || *s == '\n' || *s == '\r' || *s == '\t')
        s++;
    size_t l = strlen(s);
    while (l && (s[l - 1] == ' ' || s[l - 1] == '\n' || s[l - 1] == '\r' || s[l - 1] == '\t'))
        s[--l] = '\0';
    if (!is_commit(s))
        return false;
    memcpy(commit, s, 41);
    return true;
}

pl_status hub_mkdirs(const char *path, struct pl_err *err)
{
    char *p = strdup(path);
    if (!p)
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
    for (char *s = p + 1;; s++) {
        if (*s == '/' || *s == '\0') {
            char c = *s;
            *s = '\0';
            if (mkdir(p, 0777) != 0 && errno != EEXIST) {
                int e = errno;
                pl_status st = pl_err_set(err, PL_STATUS_IO, "cannot create %s: %s", p,
                                          strerror(e));
                free(p);
                return st;
            }
            *s = c;
            if (!c)
                break;
        }
    }
    free(p);
    struct stat sb;
    if (stat(path, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return pl_err_set(err, PL_STATUS_IO, "%s is not a directory", path);
    return PL_STATUS_OK;
}

static char *parent_dir(const char *path)
{
    char *p = strdup(path);
    if (!p)
        return NULL;
    char *slash = strrchr(p, '/');
    if (slash && slash != p)
        *slash = '\0';
    else if (slash)
        slash[1] = '\0';
    return p;
}

pl_status hub_write_ref(const char *repo_dir, const char *rev, const char *commit,
                        struct pl_err *err)
{
    char old[41];
    if (hub_read_ref(repo_dir, rev, old) && !strcmp(old, commit))
        return PL_STATUS_OK; /* unchanged: a read-only cache stays usable */
    char *path = hub_path(repo_dir, "refs", rev, NULL);
    char *dir = path ? parent_dir(path) : NULL;
    size_t tl = path ? strlen(path) + 32 : 0;
    char *tmp = path ? malloc(tl) : NULL;
    pl_status st = PL_STATUS_OK;
    if (!path || !dir || !tmp) {
        st = pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
        goto out;
    }
    if ((st = hub_mkdirs(dir, err)) != PL_STATUS_OK)
        goto out;
    snprintf(tmp, tl, "%s.%d.tmp", path, (int)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f || fwrite(commit, 1, 40, f) != 40 || fclose(f) != 0) {
        st = pl_err_set(err, PL_STATUS_IO, "cannot write %s: %s", tmp, strerror(errno));
        unlink(tmp);
        goto out;
    }
    if (rename(tmp, path) != 0) {
        st = pl_err_set(err, PL_STATUS_IO, "cannot write %s: %s", path, strerror(errno));
        unlink(tmp);
    }
out:
    free(path);
    free(dir);
    free(tmp);
    return st;
}

bool hub_exists(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0;
}

int64_t hub_file_size(const char *path)
{
    struct stat sb;
    if (stat(path, &sb) != 0 || !S_ISREG(sb.st_mode))
        return -1;
    return (int64_t)sb.st_size;
}

pl_status hub_copy_file(const char *src, const char *dst, struct pl_err *err)
{
    size_t tl = strlen(dst) + 32;
    char *tmp = malloc(tl);
    if (!tmp)
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
    snprintf(tmp, tl, "%s.%d.tmp", dst, (int)getpid());
    pl_status st = PL_STATUS_OK;
    int in = open(src, O_RDONLY | O_CLOEXEC);
    int out = in >= 0 ? open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666) : -1;
    if (in < 0 || out < 0) {
        st = pl_err_set(err, PL_STATUS_IO, "cannot copy %s to %s: %s", src, dst, strerror(errno));
        goto out;
    }
    char buf[1 << 16];
    for (;;) {
        ssize_t r = read(in, buf, sizeof(buf));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            st = pl_err_set(err, PL_STATUS_IO, "cannot read %s: %s", src, strerror(errno));
            goto out;
        }
        if (r == 0)
            break;
        for (ssize_t off = 0; off < r;) {
            ssize_t w = write(out, buf + off, (size_t)(r - off));
            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0) {
                st = pl_err_set(err, PL_STATUS_IO, "cannot write %s: %s", tmp, strerror(errno));
                goto out;
            }
            off += w;
        }
    }
    if (close(out) != 0) {
        out = -1;
        st = pl_err_set(err, PL_STATUS_IO, "cannot write %s: %s", tmp, strerror(errno));
        goto out;
    }
    out = -1;
    if (rename(tmp, dst) != 0)
        st = pl_err_set(err, PL_STATUS_IO, "cannot create %s: %s", dst, strerror(errno));
out:
    if (in >= 0)
        close(in);
    if (out >= 0)
        close(out);
    if (st != PL_STATUS_OK)
        unlink(tmp);
    free(tmp);
    return st;
}

pl_status hub_link_pointer(const char *repo_dir, const char *commit, const char *file,
                           const char *etag, struct pl_err *err)
{
    char *pointer = hub_path(repo_dir, "snapshots", commit, file);
    char *blob = hub_path(repo_dir, "blobs", etag, NULL);
    char *dir = pointer ? parent_dir(pointer) : NULL;
    /* ../../blobs/<etag> from snapshots/<commit>/, one more ../ per directory in file */
    int depth = 2;
    for (const char *p = file; *p; p++)
        depth += *p == '/';
    size_t tl = (size_t)depth * 3 + strlen(etag) + 8;
    char *target = malloc(tl);
    pl_status st = PL_STATUS_OK;
    if (!pointer || !blob || !dir || !target) {
        st = pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
        goto out;
    }
    size_t at = 0;
    for (int i = 0; i < depth; i++) {
        memcpy(target + at, "../", 3);
        at += 3;
    }
    snprintf(target + at, tl - at, "blobs/%s", etag);
    if ((st = hub_mkdirs(dir, err)) != PL_STATUS_OK)
        goto out;
    char cur[512];
    ssize_t n = readlink(pointer, cur, sizeof(cur) - 1);
    if (n >= 0) {
        cur[n] = '\0';
        if (!strcmp(cur, target))
            goto out; /* already there (another process made it) */
    }
    unlink(pointer);
    if (symlink(target, pointer) == 0 || (errno == EEXIST && hub_exists(pointer)))
        goto out;
    if (errno == EPERM || errno == EOPNOTSUPP || errno == ENOSYS) {
        /* a file system without symlinks: the snapshot holds a copy (as Python does) */
        st = hub_copy_file(blob, pointer, err);
        goto out;
    }
    st = pl_err_set(err, PL_STATUS_IO, "cannot create %s: %s", pointer, strerror(errno));
out:
    free(pointer);
    free(blob);
    free(dir);
    free(target);
    return st;
}

void hub_touch_no_exist(const char *repo_dir, const char *commit, const char *file)
{
    char *p = hub_path(repo_dir, ".no_exist", commit, file);
    char *dir = p ? parent_dir(p) : NULL;
    if (p && dir && hub_mkdirs(dir, NULL) == PL_STATUS_OK) {
        int fd = open(p, O_WRONLY | O_CREAT | O_CLOEXEC, 0666);
        if (fd >= 0)
            close(fd);
    }
    free(p);
    free(dir);
}

bool hub_is_no_exist(const char *repo_dir, const char *commit, const char *file)
{
    char *p = hub_path(repo_dir, ".no_exist", commit, file);
    bool r = p && hub_exists(p);
    free(p);
    return r;
}

int hub_lock(const char *path, const char *waiting, struct pl_err *err)
{
    char *dir = parent_dir(path);
    if (!dir) {
        pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
        return -1;
    }
    pl_status st = hub_mkdirs(dir, err);
    free(dir);
    if (st != PL_STATUS_OK)
        return -1;
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
    if (fd < 0) {
        pl_err_set(err, PL_STATUS_IO, "cannot open the lock %s: %s", path, strerror(errno));
        return -1;
    }
    bool said = false;
    for (;;) {
        if (flock(fd, LOCK_EX | LOCK_NB) == 0)
            return fd;
        if (errno != EWOULDBLOCK && errno != EINTR) {
            if (errno == ENOLCK || errno == EOPNOTSUPP || errno == ENOSYS)
                return fd; /* no locks on this file system: go on without */
            pl_err_set(err, PL_STATUS_IO, "cannot lock %s: %s", path, strerror(errno));
            close(fd);
            return -1;
        }
        if (!said && waiting) {
            fprintf(stderr, "%s\n", waiting);
            said = true;
        }
        /* poll: the holder may be a Python process, and a dead holder's lock is freed */
        struct timespec ts = {0, 200 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

void hub_unlock(int fd)
{
    if (fd >= 0) {
        flock(fd, LOCK_UN);
        close(fd);
    }
}

static char *clean_token(char *t)
{
    if (!t)
        return NULL;
    /* huggingface_hub: drop CR/LF anywhere, then surrounding blanks */
    size_t o = 0;
    for (size_t i = 0; t[i]; i++)
        if (t[i] != '\r' && t[i] != '\n')
            t[o++] = t[i];
    t[o] = '\0';
    char *s = t;
    while (*s == ' ' || *s == '\t')
        s++;
    size_t l = strlen(s);
    while (l && (s[l - 1] == ' ' || s[l - 1] == '\t'))
        l--;
    if (l == 0) {
        free(t);
        return NULL;
    }
    memmove(t, s, l);
    t[l] = '\0';
    return t;
}

char *hub_token(const char *explicit_token)
{
    if (explicit_token && *explicit_token)
        return clean_token(strdup(explicit_token));
    const char *v = getenv("HF_TOKEN");
    if (!v || !*v)
        v = getenv("HUGGING_FACE_HUB_TOKEN");
    if (v && *v)
        return clean_token(strdup(v));
    char *path = env_path("HF_TOKEN_PATH");
    if (!path) {
        char *home = hf_home();
        path = home ? hub_path(home, "token", NULL, NULL) : NULL;
        free(home);
    }
    if (!path)
        return NULL;
    char *tok = NULL;
    FILE *f = fopen(path, "rb");
    if (f) {
        char buf[4096];
        size_t n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[n] = '\0';
        tok = clean_token(strdup(buf));
    }
    free(path);
    return tok;
}

static bool env_true(const char *name)
{
    const char *v = getenv(name);
    return v && (!strcasecmp(v, "1") || !strcasecmp(v, "on") || !strcasecmp(v, "yes") ||
                 !strcasecmp(v, "true"));
}

bool hub_env_offline(void)
{
    /* huggingface_hub reads HF_HUB_OFFLINE, falling back to TRANSFORMERS_OFFLINE */
    const char *v = getenv("HF_HUB_OFFLINE");
    if (v && *v)
        return env_true("HF_HUB_OFFLINE");
    return env_true("TRANSFORMERS_OFFLINE");
}

int64_t hub_free_bytes(const char *path)
{
    char *p = strdup(path);
    if (!p)
        return -1;
    for (;;) {
        struct statvfs sv;
        if (statvfs(p, &sv) == 0) {
            free(p);
            return (int64_t)sv.f_bavail * (int64_t)sv.f_frsize;
        }
        char *slash = strrchr(p, '/');
        if (!slash || slash == p) {
            int r = statvfs(slash == p ? "/" : ".", &sv);
            free(p);
            return r == 0 ? (int64_t)sv.f_bavail * (int64_t)sv.f_frsize : -1;
        }
        *slash = '\0';
    }
}
