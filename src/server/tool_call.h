/*
 * tool_call.h -- OpenAI tool calling on the chat route: the request's tools,
 * tool_choice and parallel_tool_calls, and the tool_calls objects answers carry.
 * Private to src/server (openai.c drives it; the RunPod worker reaches it through
 * the same generation interface).
 *
 * Owns the rules, vLLM's (entrypoints/openai/protocol.py, serving_chat.py):
 *   - tools: a list of {"type": "function", "function": {"name", "description",
 *     "parameters", ...}}; the template sees each as vLLM's model_dump writes it
 *     (type, then function with name, description and parameters, null when not
 *     given, then the other keys as sent).
 *   - tool_choice: absent means "auto" when tools are given, else "none".
 *       none      tools still reach the template; the answer is plain content.
 *       auto      the server's parser (--tool-call-parser, or the one the chat
 *                 template shows) splits the answer; needs --enable-auto-tool-choice
 *                 (400 otherwise, as vLLM). Special tokens are kept in the text
 *                 (the markers may be special tokens).
 *       required  the answer is constrained to vLLM's JSON list of calls
 *                 [{"name": N, "parameters": {...}}, ...] (a grammar from the tools'
 *                 parameter schemas: at least one call, at most one when
 *                 parallel_tool_calls is false) and parsed as such.
 *       {"type": "function", "function": {"name": N}}  the answer is constrained to
 *                 N's parameter schema and is the arguments of one call to N.
 *     required and named cannot be combined with another structured-output
 *     constraint; auto can (the constraint then shapes the text the parser reads).
 *   - parallel_tool_calls false: one call at most (later ones are dropped).
 *   - finish_reason "tool_calls" when auto or required produced a call and the
 *     output stopped normally; a named call finishes "stop" (as OpenAI and vLLM);
 *     "length" stays "length".
 *   - call ids: "chatcmpl-tool-<hex>" (vLLM's form); with the mistral parser nine
 *     letters and digits (Mistral's templates refuse other ids).
 *
 * The same rules serve /v1/responses (responses.c), whose fields come in the Responses
 * layout (PL_OPENAI_LAYOUT_RESPONSES, openai_ext.h): tools are flat, {"type": "function",
 * "name", "description", "parameters", "strict"}, and reach the template in the chat form
 * above (the function's keys under "function"); any other tool type (web_search,
 * file_search, mcp, ...) is a 400 saying it is not supported; a named tool_choice is
 * {"type": "function", "name": N}; tool_choice "auto" or "none" without tools is plain
 * content (OpenAI's Responses API accepts them so); call ids are "call_<hex>" (mistral's
 * nine characters stay). Errors name the fields as that layout spells them.
 */
#ifndef PL_SERVER_TOOL_CALL_H
#define PL_SERVER_TOOL_CALL_H

#include "server/openai_ext.h"
#include "server/tool_parser.h"

#include <jansson.h>

struct pl_tool_request {
    json_t *tools;                 /* for the template (see above), or NULL */
    enum pl_tool_parser_kind parser; /* how answers are split; NONE: plain content */
    char named[256];               /* PL_TOOL_PARSER_NAMED's function */
    int max_calls;                 /* 1 with parallel_tool_calls false, else 0 */
};

/*
 * Reads root's tools, tool_choice and parallel_tool_calls, spelt as layout says.
 * server_parser is the server's auto parser (NONE without --enable-auto-tool-choice).
 * For required and named tool choices the constraint is set on sp (which must not
 * carry one); for auto, sp's skip_special_tokens is turned off. On failure e names
 * the field.
 */
pl_status pl_tool_request_parse(const json_t *root, enum pl_openai_layout layout,
                                enum pl_tool_parser_kind server_parser,
                                struct pl_sampling_params *sp, struct pl_tool_request *out,
                                struct pl_openai_error *e);
void pl_tool_request_fini(struct pl_tool_request *t);

/* The JSON schema of tool_choice "required" (vLLM's): malloc'd JSON text, or NULL with
 * e set (conflicting $defs between tools). max_calls 1: at most one call. */
char *pl_tool_required_schema(const json_t *tools, int max_calls, struct pl_openai_error *e);

/* A new call id, in layout's form, into buf (cap >= 48). */
void pl_tool_call_id(struct pl_openai *o, enum pl_tool_parser_kind parser,
                     enum pl_openai_layout layout, char *buf, size_t cap);

/* {"id", "type": "function", "function": {"name", "arguments"}} (a message's call). */
json_t *pl_tool_call_json(const char *id, const char *name, const char *args, size_t n_args);

/* One call's stream delta: {"index", "id", "type", "function": {"name", "arguments"}} on
 * its first delta (id and name set), {"index", "function": {"arguments"}} after. */
json_t *pl_tool_call_delta_json(const struct pl_tool_call_delta *d, const char *id);

#endif
