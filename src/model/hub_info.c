/*
 * hub_info.c -- the Hub's JSON and names: the model-info answer, a weights
 * index's shard list, repo ids, revisions, safe repo paths, and which files
 * of a repo pagellm fetches (see hub.h).
 *
 * Owns nothing beyond the structs it fills. Everything here is pure (no I/O),
 * so the unit tests and the fuzz target (tests/fuzz/fuzz_hub_info.c) reach
 * every branch. Outside data is never trusted: names are checked before they
 * become paths, sizes before they become byte counts.
 */
#include "model/hub.h"

#include <fnmatch.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#define MAX_FILES 100000     /* siblings of one repo (the largest real ones hold a few thousand) */
#define MAX_PATH_BYTES 1024  /* one repo path */
#define MAX_SIZE ((int64_t)1 << 53)

static bool is_hex(const char *s, size_t n)
{
    if (strlen(s) != n)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')))
            return false;
    }
    return true;
}

static void lower_copy(char *dst, const char *src, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char c = src[i];
        dst[i] = (c >= 'A' && c <= 'F') ? (char)(c - 'A' + 'a') : c;
    }
    dst[n] = '\0';
}

static bool id_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '_' || c == '-' || c == '.';
}

static bool word_char(char c) { return id_char(c) && c != '-' && c != '.'; }

bool pl_hub_is_repo_id(const char *name)
{
    if (!name)
        return false;
    size_t n = strlen(name);
    if (n == 0 || n > 96 || strstr(name, "--") || strstr(name, ".."))
        return false;
    if (n >= 4 && !strcmp(name + n - 4, ".git"))
        return false;
    const char *slash = strchr(name, '/');
    if (!slash || strchr(slash + 1, '/'))
        return false;
    /* each part: word characters at both ends, [\w.-] inside */
    const char *parts[2] = {name, slash + 1};
    size_t lens[2] = {(size_t)(slash - name), n - (size_t)(slash - name) - 1};
    for (int k = 0; k < 2; k++) {
        if (lens[k] == 0 || !word_char(parts[k][0]) || !word_char(parts[k][lens[k] - 1]))
            return false;
        for (size_t i = 0; i < lens[k]; i++)
            if (!id_char(parts[k][i]))
                return false;
    }
    return true;
}

/* Relative, '/'-separated, no empty, "." or ".." segment, no '\\' or control bytes. */
bool pl_hub_is_safe_path(const char *path)
{
    if (!path || !*path || strlen(path) > MAX_PATH_BYTES || path[0] == '/')
        return false;
    const char *seg = path;
    for (const char *p = path;; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '/' || c == '\0') {
            size_t len = (size_t)(p - seg);
            if (len == 0 || (len == 1 && seg[0] == '.') ||
                (len == 2 && seg[0] == '.' && seg[1] == '.'))
                return false;
            if (c == '\0')
                return true;
            seg = p + 1;
        } else if (c < 0x20 || c == 0x7f || c == '\\') {
            return false;
        }
    }
}

bool pl_hub_is_revision(const char *rev)
{
    return rev && strlen(rev) <= 255 && pl_hub_is_safe_path(rev);
}

bool pl_hub_is_pickle(const char *path)
{
    static const char *const ext[] = {".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle"};
    size_t n = strlen(path);
    for (size_t k = 0; k < sizeof(ext) / sizeof(ext[0]); k++) {
        size_t e = strlen(ext[k]);
        if (n >= e && !strcmp(path + n - e, ext[k]))
            return true;
    }
    return false;
}

void pl_hub_info_fini(struct pl_hub_info *info)
{
    if (!info)
        return;
    for (int i = 0; i < info->n_files; i++)
        free(info->files[i].name);
    free(info->files);
    free(info->id);
    memset(info, 0, sizeof(*info));
}

pl_status pl_hub_info_parse(const char *json, size_t len, struct pl_hub_info *out,
                            struct pl_err *err)
{
    memset(out, 0, sizeof(*out));
    json_error_t je;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return pl_err_set(err, PL_STATUS_FORMAT, "model info is not JSON: %s (line %d)", je.text,
                          je.line);
    pl_status st = PL_STATUS_OK;
    if (!json_is_object(root)) {
        st = pl_err_set(err, PL_STATUS_FORMAT, "model info is not a JSON object");
        goto out;
    }
    const char *sha = json_string_value(json_object_get(root, "sha"));
    if (!sha || !is_hex(sha, 40)) {
        st = pl_err_set(err, PL_STATUS_FORMAT, "model info: 'sha' is not a 40-digit commit hash");
        goto out;
    }
    lower_copy(out->sha, sha, 40);
    const char *id = json_string_value(json_object_get(root, "id"));
    if (id && !(out->id = strdup(id))) {
        st = pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
        goto out;
    }
    json_t *sib = json_object_get(root, "siblings");
    if (!json_is_array(sib)) {
        st = pl_err_set(err, PL_STATUS_FORMAT, "model info: 'siblings' is not a list");
        goto out;
    }
    size_t n = json_array_size(sib);
    if (n > MAX_FILES) {
        st = pl_err_set(err, PL_STATUS_LIMIT, "model info: %zu files is more than the %d allowed",
                        n, MAX_FILES);
        goto out;
    }
    out->files = calloc(n ? n : 1, sizeof(*out->files));
    if (!out->files) {
        st = pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *f = json_array_get(sib, i);
        const char *name = json_string_value(json_object_get(f, "rfilename"));
        if (!json_is_object(f) || !name) {
            st = pl_err_set(err, PL_STATUS_FORMAT, "model info: siblings[%zu] has no 'rfilename'",
                            i);
            goto out;
        }
        if (!pl_hub_is_safe_path(name)) {
            st = pl_err_set(err, PL_STATUS_FORMAT,
                            "model info: siblings[%zu]: unsafe file name '%.200s'", i, name);
            goto out;
        }
        for (int k = 0; k < out->n_files; k++)
            if (!strcmp(out->files[k].name, name)) {
                st = pl_err_set(err, PL_STATUS_FORMAT,
                                "model info: file '%.200s' is listed twice", name);
                goto out;
            }
        struct pl_hub_file *hf = &out->files[out->n_files];
        if (!(hf->name = strdup(name))) {
            st = pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
            goto out;
        }
        out->n_files++;
        hf->size = -1;
        json_t *size = json_object_get(f, "size");
        if (size && !json_is_null(size)) {
            if (!json_is_integer(size) || json_integer_value(size) < 0 ||
                json_integer_value(size) > MAX_SIZE) {
                st = pl_err_set(err, PL_STATUS_FORMAT,
                                "model info: '%.200s': 'size' is not a byte count", name);
                goto out;
            }
            hf->size = (int64_t)json_integer_value(size);
        }
        const char *blob = json_string_value(json_object_get(f, "blobId"));
        if (blob) {
            if (!is_hex(blob, 40)) {
                st = pl_err_set(err, PL_STATUS_FORMAT,
                                "model info: '%.200s': 'blobId' is not a git object id", name);
                goto out;
            }
            lower_copy(hf->blob_id, blob, 40);
        }
        json_t *lfs = json_object_get(f, "lfs");
        if (lfs && !json_is_null(lfs)) {
            const char *sha256 = json_string_value(json_object_get(lfs, "sha256"));
            if (!json_is_object(lfs) || !sha256 || !is_hex(sha256, 64)) {
                st = pl_err_set(err, PL_STATUS_FORMAT,
                                "model info: '%.200s': 'lfs.sha256' is not a sha256", name);
                goto out;
            }
            lower_copy(hf->lfs_sha256, sha256, 64);
            json_t *lsize = json_object_get(lfs, "size");
            if (json_is_integer(lsize) && json_integer_value(lsize) >= 0 &&
                json_integer_value(lsize) <= MAX_SIZE)
                hf->size = (int64_t)json_integer_value(lsize); /* the object, not the pointer */
        }
    }
out:
    json_decref(root);
    if (st != PL_STATUS_OK)
        pl_hub_info_fini(out);
    return st;
}

void pl_hub_free_names(char **names, int n)
{
    for (int i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

pl_status pl_hub_index_shards(const char *json, size_t len, char ***names_out, int *n_out,
                              struct pl_err *err)
{
    *names_out = NULL;
    *n_out = 0;
    json_error_t je;
    json_t *root = json_loadb(json, len, 0, &je);
    if (!root)
        return pl_err_set(err, PL_STATUS_FORMAT, "model.safetensors.index.json is not JSON: %s",
                          je.text);
    pl_status st = PL_STATUS_OK;
    json_t *map = json_object_get(root, "weight_map");
    char **names = NULL;
    int n = 0;
    if (!json_is_object(map)) {
        st = pl_err_set(err, PL_STATUS_FORMAT,
                        "model.safetensors.index.json: 'weight_map' is not an object");
        goto out;
    }
    size_t cap = json_object_size(map);
    if (cap > MAX_FILES * 10) {
        st = pl_err_set(err, PL_STATUS_LIMIT, "model.safetensors.index.json: too many tensors");
        goto out;
    }
    names = calloc(cap ? cap : 1, sizeof(char *));
    if (!names) {
        st = pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
        goto out;
    }
    const char *key;
    json_t *v;
    json_object_foreach(map, key, v) {
        const char *shard = json_string_value(v);
        if (!shard || !pl_hub_is_safe_path(shard)) {
            st = pl_err_set(err, PL_STATUS_FORMAT,
                            "model.safetensors.index.json: tensor '%.200s' has no safe shard name",
                            key);
            goto out;
        }
        bool seen = false;
        for (int k = 0; k < n && !seen; k++)
            seen = !strcmp(names[k], shard);
        if (seen)
            continue;
        if (!(names[n] = strdup(shard))) {
            st = pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
            goto out;
        }
        n++;
    }
    if (n == 0)
        st = pl_err_set(err, PL_STATUS_FORMAT,
                        "model.safetensors.index.json: 'weight_map' names no shard");
out:
    json_decref(root);
    if (st != PL_STATUS_OK) {
        pl_hub_free_names(names, n);
        return st;
    }
    *names_out = names;
    *n_out = n;
    return PL_STATUS_OK;
}

/* The small files a model directory may hold, all top level (see hub.h). */
static const char *const MODEL_FILES[] = {
    "config.json",          "generation_config.json",  "tokenizer.json",
    "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
    "chat_template.jinja",  "chat_template.json",      "model.safetensors.index.json",
};

/* huggingface_hub's rule: a pattern ending in '/' means everything below it. */
static bool glob_match(const char *pattern, const char *path)
{
    size_t n = strlen(pattern);
    if (n && pattern[n - 1] == '/') {
        char buf[MAX_PATH_BYTES + 4];
        if (n + 2 > sizeof(buf))
            return false;
        memcpy(buf, pattern, n);
        buf[n] = '*';
        buf[n + 1] = '\0';
        return fnmatch(buf, path, 0) == 0;
    }
    return fnmatch(pattern, path, 0) == 0;
}

static bool any_match(const char *const *globs, int n, const char *path)
{
    for (int i = 0; i < n; i++)
        if (globs[i] && glob_match(globs[i], path))
            return true;
    return false;
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !strcmp(s + n - m, suffix);
}

static int find_file(const struct pl_hub_info *info, const char *name)
{
    for (int i = 0; i < info->n_files; i++)
        if (!strcmp(info->files[i].name, name))
            return i;
    return -1;
}

/* Up to three pickle names for a message. */
static void pickle_list(const struct pl_hub_info *info, char *buf, size_t cap)
{
    size_t at = 0;
    int shown = 0, total = 0;
    buf[0] = '\0';
    for (int i = 0; i < info->n_files; i++) {
        if (!pl_hub_is_pickle(info->files[i].name))
            continue;
        total++;
        if (shown < 3 && at < cap) {
            int w = snprintf(buf + at, cap - at, "%s%s", shown ? ", " : "", info->files[i].name);
            if (w > 0)
                at += (size_t)w;
            shown++;
        }
    }
    if (total > shown && at < cap)
        snprintf(buf + at, cap - at, ", ... (%d files)", total);
}

pl_status pl_hub_select(const struct pl_hub_info *info, const struct pl_hub_opts *o,
                        char *const *shards, int n_shards, char *sel, bool *need_index,
                        int *n_pickles, const char *repo_id, struct pl_err *err)
{
    *need_index = false;
    *n_pickles = 0;
    memset(sel, 0, (size_t)info->n_files);
    char pickles[512];
    if (o->n_include > 0) {
        int n = 0;
        for (int i = 0; i < info->n_files; i++) {
            const char *name = info->files[i].name;
            if (!any_match(o->include, o->n_include, name) ||
                any_match(o->exclude, o->n_exclude, name))
                continue;
            if (pl_hub_is_pickle(name)) {
                (*n_pickles)++;
                continue;
            }
            sel[i] = 1;
            n++;
        }
        if (n == 0 && *n_pickles)
            return pl_err_set(err, PL_STATUS_UNSUPPORTED,
                              "the files of %s that match --include are pickles, which pagellm "
                              "never downloads (loading one can run code)",
                              repo_id);
        if (n == 0)
            return pl_err_set(err, PL_STATUS_NOT_FOUND,
                              "no file of %s matches --include (and not --exclude); the repo "
                              "has %d files",
                              repo_id, info->n_files);
        return PL_STATUS_OK;
    }
    if (find_file(info, "config.json") < 0)
        return pl_err_set(err, PL_STATUS_NOT_FOUND,
                          "%s has no config.json: it is not a transformers model repo", repo_id);
    for (size_t k = 0; k < sizeof(MODEL_FILES) / sizeof(MODEL_FILES[0]); k++) {
        int i = find_file(info, MODEL_FILES[k]);
        if (i >= 0)
            sel[i] = 1;
    }
    int n_weights = 0;
    if (find_file(info, "model.safetensors.index.json") >= 0) {
        if (!shards) {
            *need_index = true;
            n_weights = 1; /* decided once the index is read */
        } else {
            for (int s = 0; s < n_shards; s++) {
                int i = find_file(info, shards[s]);
                if (i < 0)
                    return pl_err_set(err, PL_STATUS_NOT_FOUND,
                                      "%s: model.safetensors.index.json names the shard '%s', "
                                      "which is not in the repo",
                                      repo_id, shards[s]);
                if (!ends_with(shards[s], ".safetensors"))
                    return pl_err_set(err, PL_STATUS_UNSUPPORTED,
                                      "%s: model.safetensors.index.json names '%s', which is not "
                                      "a .safetensors file",
                                      repo_id, shards[s]);
                sel[i] = 1;
                n_weights++;
            }
        }
    } else {
        int i = find_file(info, "model.safetensors");
        if (i >= 0) {
            sel[i] = 1;
            n_weights = 1;
        } else {
            for (i = 0; i < info->n_files; i++)
                if (!strchr(info->files[i].name, '/') &&
                    ends_with(info->files[i].name, ".safetensors")) {
                    sel[i] = 1;
                    n_weights++;
                }
        }
    }
    for (int i = 0; i < info->n_files; i++) {
        if (pl_hub_is_pickle(info->files[i].name))
            (*n_pickles)++;
        if (sel[i] && any_match(o->exclude, o->n_exclude, info->files[i].name))
            sel[i] = 0;
    }
    if (n_weights == 0) {
        if (*n_pickles) {
            pickle_list(info, pickles, sizeof(pickles));
            return pl_err_set(err, PL_STATUS_UNSUPPORTED,
                              "%s has only PyTorch pickle weights (%s); pagellm loads safetensors "
                              "and never downloads pickles (loading one can run code). Look for "
                              "a safetensors version of the model on the Hub",
                              repo_id, pickles);
        }
        return pl_err_set(err, PL_STATUS_NOT_FOUND,
                          "%s has no safetensors weights (model.safetensors or "
                          "model.safetensors.index.json)",
                          repo_id);
    }
    return PL_STATUS_OK;
}

bool pl_hub_path_wanted(const struct pl_hub_opts *o, const char *path)
{
    if (pl_hub_is_pickle(path) || any_match(o->exclude, o->n_exclude, path))
        return false;
    return o->n_include == 0 || any_match(o->include, o->n_include, path);
}
