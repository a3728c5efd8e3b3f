/*
 * pagellm.h -- the public C API of pagellm.
 *
 * Owns: the status codes every action returns, and (from the engine issue on)
 * the LLM handle, sampling params and outputs that mirror vLLM's offline API.
 * Conventions: actions return pl_status; details go to a per-handle message
 * (pl_llm_errmsg); handles are opaque; the creator frees; *_free(NULL) is a no-op.
 */
#ifndef PAGELLM_H
#define PAGELLM_H

#ifdef __cplusplus
extern "C" {
#endif

#define PAGELLM_VERSION "0.1.0"

typedef enum pl_status {
    PL_STATUS_OK = 0,
    PL_STATUS_INVALID_ARGUMENT, /* a caller passed a bad value (request data included) */
    PL_STATUS_IO,               /* open/read/mmap/write failed */
    PL_STATUS_FORMAT,           /* outside data (file, JSON, template) is malformed */
    PL_STATUS_UNSUPPORTED,      /* well-formed but not supported (architecture, dtype, feature) */
    PL_STATUS_NO_MEMORY,        /* allocation failed or a pool is exhausted */
    PL_STATUS_NOT_FOUND,        /* a named thing (tensor, file, token, request) does not exist */
    PL_STATUS_LIMIT,            /* a bound was hit (size, depth, loop count, length) */
    PL_STATUS_ABORTED,          /* the operation was cancelled */
    PL_STATUS_INTERNAL          /* a bug or backend failure */
} pl_status;

/* A static English name for a status ("ok", "invalid argument", ...). */
const char *pl_status_str(pl_status s);

#ifdef __cplusplus
}
#endif
#endif
