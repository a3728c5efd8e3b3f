/*
 * llm_engine.h -- the async engine's view of a pl_llm (the real engine).
 *
 * Owns: pl_llm_engine_ops, which implements struct pl_engine_ops over the
 * public request interface (pl_llm_add_request / step / poll / abort /
 * get_stats), translating request ids (the async engine's numbers, as
 * decimal strings for the LLM) and moving each struct pl_request_output delta
 * into a struct pl_async_output without copying text or token ids.
 * The engine argument of every op is the struct pl_llm itself; only the
 * engine thread calls them.
 */
#ifndef PL_SERVER_LLM_ENGINE_H
#define PL_SERVER_LLM_ENGINE_H

#include "engine/async_engine.h"

extern const struct pl_engine_ops pl_llm_engine_ops;

#endif
