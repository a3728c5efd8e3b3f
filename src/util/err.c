/*
 * err.c -- status names and error message formatting (see err.h).
 */
#include "util/err.h"

#include <stdio.h>
#include <string.h>

const char *pl_status_str(pl_status s)
{
    switch (s) {
    case PL_STATUS_OK: return "ok";
    case PL_STATUS_INVALID_ARGUMENT: return "invalid argument";
    case PL_STATUS_IO: return "i/o error";
    case PL_STATUS_FORMAT: return "malformed input";
    case PL_STATUS_UNSUPPORTED: return "unsupported";
    case PL_STATUS_NO_MEMORY: return "out of memory";
    case PL_STATUS_NOT_FOUND: return "not found";
    case PL_STATUS_LIMIT: return "limit exceeded";
    case PL_STATUS_ABORTED: return "aborted";
    case PL_STATUS_INTERNAL: return "internal error";
    }
    return "unknown status";
}

pl_status pl_err_set(struct pl_err *err, pl_status status, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
        va_end(ap);
        err->status = status;
    }
    return status;
}

pl_status pl_err_prefix(struct pl_err *err, const char *fmt, ...)
{
    if (!err)
        return PL_STATUS_OK;
    char prefix[PL_ERR_MSG_MAX];
    char old[PL_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof(prefix), fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof(old));
    /* Truncation of very long messages is acceptable: build piecewise. */
    size_t n = strlen(prefix);
    if (n > sizeof(err->msg) - 3)
        n = sizeof(err->msg) - 3;
    memcpy(err->msg, prefix, n);
    err->msg[n] = ':';
    err->msg[n + 1] = ' ';
    size_t rest = sizeof(err->msg) - (n + 2) - 1;
    size_t m = strnlen(old, sizeof(old));
    if (m > rest)
        m = rest;
    memcpy(err->msg + n + 2, old, m);
    err->msg[n + 2 + m] = '\0';
    return err->status;
}

void pl_err_clear(struct pl_err *err)
{
    if (err) {
        err->status = PL_STATUS_OK;
        err->msg[0] = '\0';
    }
}
