/*
 * err.h -- error messages that travel with a pl_status.
 *
 * Owns: struct pl_err, a fixed-size message buffer that a caller passes down
 * (nullable) so the function that finds a problem can say what and where.
 * Invariant: a function that returns a status other than PL_STATUS_OK has
 * written a message into err (when err is not NULL); PL_STATUS_OK leaves err
 * untouched. Messages name the file/tensor/field at fault.
 */
#ifndef PL_UTIL_ERR_H
#define PL_UTIL_ERR_H

#include "pagellm.h"

#include <stdarg.h>
#include <stddef.h>

#define PL_ERR_MSG_MAX 1024

struct pl_err {
    pl_status status;
    char msg[PL_ERR_MSG_MAX];
};

/* Writes a printf-style message into err (if not NULL) and returns status. */
pl_status pl_err_set(struct pl_err *err, pl_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prepends "prefix: " to an existing message (for adding context on the way up). */
pl_status pl_err_prefix(struct pl_err *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Resets err to OK with an empty message. */
void pl_err_clear(struct pl_err *err);

#endif
