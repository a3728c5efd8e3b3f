/*
 * fs.h -- small file-system helpers: read a whole file, join paths, test existence.
 *
 * Owns nothing persistent. Every function reports failure through a pl_status
 * and a message naming the path; nothing here aborts on outside data.
 */
#ifndef PL_UTIL_FS_H
#define PL_UTIL_FS_H

#include "util/err.h"

#include <stdbool.h>
#include <stddef.h>

/* Reads the whole regular file at `path` into a malloc'ed buffer with a
 * terminating NUL byte (not counted in *len); the caller frees *out.
 * Files larger than max_bytes are refused with PL_STATUS_LIMIT.
 * PL_STATUS_NOT_FOUND when the file does not exist, PL_STATUS_IO otherwise. */
pl_status pl_fs_read_file(const char *path, size_t max_bytes, char **out, size_t *len,
                          struct pl_err *err);

/* Returns malloc'ed "dir/name" (no doubled '/'), or NULL when out of memory. */
char *pl_fs_path_join(const char *dir, const char *name);

/* Whether `path` names an existing regular file. */
bool pl_fs_is_file(const char *path);

#endif
