/*
 * llm_internal.h -- what the serving layer (src/server, src/worker, src/cli)
 * reaches of a struct pl_llm beyond include/pagellm.h.
 *
 * Owns: nothing; declares the handle's engine thread accessors (engine/llm.c).
 * A handle has at most one engine thread (an async engine over its engine):
 * pl_llm_submit starts it with the library's defaults, a server starts it
 * with its own parameters (admission limit, stall timeout, metrics observer)
 * before serving. Every output of it is the engine's struct pl_request_output.
 */
#ifndef PL_ENGINE_LLM_INTERNAL_H
#define PL_ENGINE_LLM_INTERNAL_H

#include "engine/async_engine.h"
#include "pagellm.h"
#include "util/err.h"

/*
 * Starts the handle's engine thread with params (NULL: defaults) and gives it
 * in *out (owned by the handle). PL_STATUS_INVALID_ARGUMENT when it already
 * runs or requests of the request interface are pending.
 */
pl_status pl_llm_start_async(struct pl_llm *llm, const struct pl_async_engine_params *params,
                             struct pl_async_engine **out, struct pl_err *err);

/* Stops the engine thread (aborting what still runs) and frees it. No-op when none runs. */
void pl_llm_stop_async(struct pl_llm *llm);

#endif
