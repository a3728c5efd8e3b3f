/*
 * fs.c -- whole-file reads and path joining (see fs.h).
 */
#include "util/fs.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

pl_status pl_fs_read_file(const char *path, size_t max_bytes, char **out, size_t *len,
                          struct pl_err *err)
{
    *out = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return pl_err_set(err, errno == ENOENT ? PL_STATUS_NOT_FOUND : PL_STATUS_IO,
                          "%s: cannot open: %s", path, strerror(errno));
    pl_status st = PL_STATUS_OK;
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        st = pl_err_set(err, PL_STATUS_IO, "%s: not a regular file", path);
        goto out_close;
    }
    if ((unsigned long long)sb.st_size > max_bytes) {
        st = pl_err_set(err, PL_STATUS_LIMIT, "%s: %lld bytes is larger than the %zu allowed",
                        path, (long long)sb.st_size, max_bytes);
        goto out_close;
    }
    size_t size = (size_t)sb.st_size;
    char *buf = malloc(size + 1);
    if (!buf) {
        st = pl_err_set(err, PL_STATUS_NO_MEMORY, "%s: out of memory reading %zu bytes", path,
                        size);
        goto out_close;
    }
    size_t got = fread(buf, 1, size, f);
    if (got != size || ferror(f)) {
        free(buf);
        st = pl_err_set(err, PL_STATUS_IO, "%s: short read (%zu of %zu bytes)", path, got, size);
        goto out_close;
    }
    buf[size] = '\0';
    *out = buf;
    *len = size;
out_close:
    fclose(f);
    return st;
}

char *pl_fs_path_join(const char *dir, const char *name)
{
    size_t dl = strlen(dir), nl = strlen(name);
    while (dl > 1 && dir[dl - 1] == '/') /* keep a lone "/" */
        dl--;
    bool need_sep = dl > 0 && dir[dl - 1] != '/';
    char *p = malloc(dl + (need_sep ? 1 : 0) + nl + 1);
    if (!p)
        return NULL;
    memcpy(p, dir, dl);
    size_t at = dl;
    if (need_sep)
        p[at++] = '/';
    memcpy(p + at, name, nl + 1);
    return p;
}

bool pl_fs_is_file(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}
