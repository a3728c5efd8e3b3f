/*
 * hub.h -- models by name: a Hugging Face Hub repo id (`org/name` at a branch,
 * tag or commit) resolved to a local snapshot directory in huggingface_hub's
 * cache layout, downloading what is missing.
 *
 * The cache is shared with Python tools in both directions (huggingface_hub's
 * documented layout, see docs/models.md):
 *
 *   <cache>/models--org--name/blobs/<etag>            file contents, named by the
 *                                                     sha256 (LFS) or git blob sha1
 *   <cache>/models--org--name/snapshots/<commit>/<f>  relative symlinks ../../blobs/<etag>
 *   <cache>/models--org--name/refs/<revision>         the commit (no newline)
 *   <cache>/models--org--name/.no_exist/<commit>/<f>  empty: f is not in the repo
 *   <cache>/.locks/models--org--name/<etag>.lock      flock(2) while a blob is written
 *
 * Environment (as huggingface_hub reads it): HF_HOME (~/.cache/huggingface),
 * HF_HUB_CACHE or HUGGINGFACE_HUB_CACHE ($HF_HOME/hub), HF_TOKEN or
 * HUGGING_FACE_HUB_TOKEN, else the file $HF_TOKEN_PATH ($HF_HOME/token),
 * HF_HUB_OFFLINE, HF_ENDPOINT (https://huggingface.co),
 * HF_HUB_DISABLE_PROGRESS_BARS. Test knob: PL_HUB_RETRY_BASE_MS (1000), the
 * first back-off between retries.
 *
 * Invariants: nothing is written outside the cache directory and the
 * optional local directory; a blob appears under its final name only after
 * its bytes matched the checksum its name states; the library never exits
 * and never asserts on what the network sends.
 */
#ifndef PL_MODEL_HUB_H
#define PL_MODEL_HUB_H

#include "util/err.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum pl_hub_progress {
    PL_HUB_PROGRESS_AUTO,  /* a bar on a terminal, else one line per file */
    PL_HUB_PROGRESS_BAR,   /* the bar (bytes, speed) even when stderr is not a terminal */
    PL_HUB_PROGRESS_LINES, /* one line per file fetched */
    PL_HUB_PROGRESS_QUIET  /* warnings and errors only */
};

struct pl_hub_opts {
    const char *endpoint;          /* NULL: $HF_ENDPOINT, else https://huggingface.co */
    const char *cache_dir;         /* NULL: pl_hub_cache_dir(); vLLM's --download-dir */
    const char *token;             /* NULL: $HF_TOKEN, then the token file */
    int offline;                   /* -1: $HF_HUB_OFFLINE; 0 no; 1 cache only */
    const char *const *include;    /* globs over repo paths; NULL/0: the model's files */
    int n_include;
    const char *const *exclude;    /* globs removed from the selection */
    int n_exclude;
    const char *local_dir;         /* NULL, or also copy the files into this directory */
    int max_workers;               /* parallel transfers; <= 0: 4 */
    enum pl_hub_progress progress;
    const char *who;               /* message prefix, e.g. "pagellm serve" (NULL: "pagellm") */
};

void pl_hub_opts_default(struct pl_hub_opts *o);

/* Whether name has the form of a Hub model id `org/name` (huggingface_hub's
 * rules: [A-Za-z0-9_.-], no "--" or "..", no leading/trailing '-' or '.',
 * at most 96 characters). Says nothing about whether it exists. */
bool pl_hub_is_repo_id(const char *name);

/* Whether a revision is usable as a ref name on disk and in a URL (no "..",
 * no empty path segments, no control characters, at most 255 bytes). */
bool pl_hub_is_revision(const char *rev);

/* The cache root: override when given (--download-dir), else $HF_HUB_CACHE,
 * $HUGGINGFACE_HUB_CACHE, $HF_HOME/hub, $XDG_CACHE_HOME/huggingface/hub,
 * ~/.cache/huggingface/hub. Malloc'ed; NULL when out of memory. */
char *pl_hub_cache_dir(const char *override);

/*
 * --model NAME -> a model directory. A directory that exists always wins
 * (revision is then ignored). Otherwise NAME must be a repo id; it is
 * downloaded (or found in the cache: offline, or when the Hub cannot be
 * reached) at revision (NULL: "main") and *path_out is its snapshot directory
 * (or o->local_dir when set). Malloc'ed; the caller frees.
 * Errors name what to do: a gated repo (accept its licence, set HF_TOKEN), no
 * such repo or revision, the exact cache path looked up when offline or
 * unreachable, not enough disk space, pickle-only weights.
 */
pl_status pl_hub_resolve_model(const char *name, const char *revision,
                               const struct pl_hub_opts *o, char **path_out, struct pl_err *err);

/* The download itself (pagellm download): repo_id at revision, the files
 * o selects. *path_out as above. */
pl_status pl_hub_download(const char *repo_id, const char *revision, const struct pl_hub_opts *o,
                          char **path_out, struct pl_err *err);

/* ---- the model-info JSON (GET /api/models/{repo}/revision/{rev}?blobs=true) ---- */

struct pl_hub_file {
    char *name;          /* repo path ("config.json", "sub/x.json"); checked safe */
    int64_t size;        /* bytes; -1 when not listed */
    char blob_id[41];    /* git blob id, "" when not listed */
    char lfs_sha256[65]; /* LFS object sha256, "" for a file kept in git */
};

struct pl_hub_info {
    char sha[41];              /* the commit the revision points at */
    char *id;                  /* repo id as the Hub spells it; may be NULL */
    struct pl_hub_file *files; /* [n_files], the siblings */
    int n_files;
};

/* Parses a model-info answer. Requires "sha" (40 hex digits) and "siblings"
 * (an array of {"rfilename", optional "size", "blobId", "lfs": {"sha256"}}).
 * Refuses file names that could escape a directory (absolute, "..", empty
 * segments, backslashes, control characters). PL_STATUS_FORMAT naming the
 * field at fault. */
pl_status pl_hub_info_parse(const char *json, size_t len, struct pl_hub_info *out,
                            struct pl_err *err);
void pl_hub_info_fini(struct pl_hub_info *info);

/* The shard names of a model.safetensors.index.json ("weight_map" values,
 * each a safe relative path, deduplicated, in first-seen order). */
pl_status pl_hub_index_shards(const char *json, size_t len, char ***names, int *n,
                              struct pl_err *err);
void pl_hub_free_names(char **names, int n);

/* Whether a repo path is safe to create under a directory (see above). */
bool pl_hub_is_safe_path(const char *path);

/*
 * Which files to fetch. sel[n_files] is set to 1 for a chosen file.
 * Default (no include globs): config.json, generation_config.json, the
 * tokenizer files (tokenizer.json, tokenizer_config.json,
 * special_tokens_map.json, tokenizer.model, chat_template.jinja/.json) and the
 * safetensors weights: the shards named by model.safetensors.index.json (pass
 * them as shards once the index is read; until then *need_index is set and
 * only the index is chosen), else model.safetensors, else every top-level
 * *.safetensors. With include globs: the files matching one of them.
 * Exclude globs then remove files. Pickles (.bin, .pt, .pth, .ckpt, .pkl) are
 * never chosen; *n_pickles counts those skipped. Errors: no config.json
 * (default mode), pickle-only weights, no weights, nothing matching.
 */
pl_status pl_hub_select(const struct pl_hub_info *info, const struct pl_hub_opts *o,
                        char *const *shards, int n_shards, char *sel, bool *need_index,
                        int *n_pickles, const char *repo_id, struct pl_err *err);

/* Whether the options want a path: no pickle, not excluded, and included (when
 * include globs are given). Used on a cached snapshot, where no listing says
 * which files are the model's. */
bool pl_hub_path_wanted(const struct pl_hub_opts *o, const char *path);

/* Whether a repo path names a pickle file pagellm refuses to download. */
bool pl_hub_is_pickle(const char *path);

#endif
