/*
 * fuzz_hub_info.c -- libFuzzer target for the Hub's JSON: the model-info answer
 * (GET /api/models/{repo}/revision/{rev}?blobs=true), then the file choice over
 * it, and a model.safetensors.index.json's shard list.
 *
 * The input is fed to both parsers. A successful parse must satisfy what hub.h
 * promises: a 40-digit lower-case commit, safe file names that never escape a
 * directory, sizes that are -1 or a byte count, hex ids of the right length;
 * shard names are safe and distinct. A violation aborts so the fuzzer reports it.
 */
#include "model/hub.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *buf, size_t size);

static int is_lower_hex(const char *s, size_t n)
{
    if (strlen(s) != n)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return 1;
}

/* An independent check: absolute, or a segment that is empty, "." or "..". */
static int escapes(const char *p)
{
    if (p[0] == '/' || !p[0])
        return 1;
    const char *seg = p;
    for (;; p++) {
        if (*p == '/' || *p == '\0') {
            size_t n = (size_t)(p - seg);
            if (n == 0 || (n == 1 && seg[0] == '.') || (n == 2 && seg[0] == '.' && seg[1] == '.'))
                return 1;
            if (!*p)
                return 0;
            seg = p + 1;
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *buf, size_t size)
{
    const char *text = (const char *)buf;
    struct pl_err err = {0};
    struct pl_hub_info info;
    if (pl_hub_info_parse(text, size, &info, &err) == PL_STATUS_OK) {
        if (!is_lower_hex(info.sha, 40) || info.n_files < 0)
            abort();
        for (int i = 0; i < info.n_files; i++) {
            const struct pl_hub_file *f = &info.files[i];
            if (!pl_hub_is_safe_path(f->name) || escapes(f->name) || f->size < -1)
                abort();
            if (f->blob_id[0] && !is_lower_hex(f->blob_id, 40))
                abort();
            if (f->lfs_sha256[0] && !is_lower_hex(f->lfs_sha256, 64))
                abort();
            for (int k = 0; k < i; k++)
                if (!strcmp(info.files[k].name, f->name))
                    abort();
        }
        /* the choice of files over any listing: chosen files exist, no pickle chosen */
        char *sel = malloc((size_t)info.n_files + 1);
        if (sel) {
            struct pl_hub_opts o;
            pl_hub_opts_default(&o);
            bool need_index = false;
            int n_pickles = 0;
            if (pl_hub_select(&info, &o, NULL, 0, sel, &need_index, &n_pickles, "f/z", &err) ==
                PL_STATUS_OK)
                for (int i = 0; i < info.n_files; i++)
                    if (sel[i] && pl_hub_is_pickle(info.files[i].name))
                        abort();
            free(sel);
        }
        pl_hub_info_fini(&info);
    } else if (info.files || info.n_files || info.id) {
        abort(); /* a failed parse leaves nothing behind */
    }
    char **names = NULL;
    int n = 0;
    if (pl_hub_index_shards(text, size, &names, &n, &err) == PL_STATUS_OK) {
        if (n <= 0)
            abort();
        for (int i = 0; i < n; i++) {
            if (!pl_hub_is_safe_path(names[i]) || escapes(names[i]))
                abort();
            for (int k = 0; k < i; k++)
                if (!strcmp(names[k], names[i]))
                    abort();
        }
        pl_hub_free_names(names, n);
    } else if (names || n) {
        abort();
    }
    return 0;
}
