/*
 * tool_parser.h -- tool-call parsers (vLLM's --tool-call-parser): a chat
 * answer's text split into content and OpenAI tool calls.
 *
 * Owns: the parser kinds, their choice from a chat template's text, and one
 * incremental splitter per output. Formats:
 *   hermes       Hermes 2 Pro / Qwen 2.5 / Qwen 3: content, then one or more
 *                <tool_call>{"name": N, "arguments": A}</tool_call> blocks.
 *   llama3_json  Llama 3.x: the answer starts (after optional whitespace and
 *                <|python_tag|>) with {"name": N, "parameters": A}, more calls
 *                separated by ';'. An answer that does not start so is content.
 *   mistral      content, then [TOOL_CALLS] and either a JSON list of
 *                {"name", "arguments"} objects or, from the v11 tokenizers on,
 *                name[ARGS]{...} (optionally name[CALL_ID]id[ARGS]{...}),
 *                repeated with another [TOOL_CALLS].
 *   json_array   tool_choice "required" (vLLM's form, grammar-constrained):
 *                [{"name": N, "parameters": A}, ...].
 *   named        a named tool_choice (grammar-constrained): the whole answer
 *                is the arguments of that one function.
 * Every call object accepts "arguments" or "parameters" for A.
 *
 * Rules every format shares:
 *   - a call is recognised once its object's head {"name": "N", "arguments":
 *     has arrived; from then on its argument text streams verbatim (the JSON
 *     value as the model wrote it) until the value closes. An object whose
 *     keys come in another order is held whole and, once closed, parsed: a
 *     valid call gets its arguments re-serialised as Python's json.dumps
 *     writes them ({"a": 1, "b": "x"}).
 *   - output that turns out not to be a call (no name, broken JSON, a marker
 *     followed by something else) falls back to content, byte for byte.
 *   - whitespace between and after calls is dropped; other text after a call
 *     is content.
 *   - a call cut off by the end of the output keeps the arguments it got.
 *   - with max_calls (parallel_tool_calls false: 1) later calls are dropped.
 *
 * Streaming: pl_tool_parser_feed takes the text in any pieces; bytes not yet
 * decided (a possible marker, a call head) are held until a later piece
 * decides them, and pl_tool_parser_finish releases what is left. The result
 * never depends on how the text was cut: the whole text fed at once and then
 * finished gives exactly the concatenation of the pieces' outputs (the
 * server builds full responses that way, so streamed deltas and the full
 * response agree by construction).
 */
#ifndef PL_SERVER_TOOL_PARSER_H
#define PL_SERVER_TOOL_PARSER_H

#include "server/sbuf.h"

#include <stdbool.h>
#include <stddef.h>

enum pl_tool_parser_kind {
    PL_TOOL_PARSER_NONE = 0,
    PL_TOOL_PARSER_HERMES,
    PL_TOOL_PARSER_LLAMA3_JSON,
    PL_TOOL_PARSER_MISTRAL,
    PL_TOOL_PARSER_JSON_ARRAY,
    PL_TOOL_PARSER_NAMED
};

/* "hermes", "llama3_json" (also "llama3", "llama"), "mistral" (NULL or "": NONE). False for
 * an unknown name. json_array and named are chosen by tool_choice, never by name. */
bool pl_tool_parser_kind_from_name(const char *name, enum pl_tool_parser_kind *out);

/* The names pl_tool_parser_kind_from_name accepts, for messages. */
const char *pl_tool_parser_kind_names(void);

/* The vLLM name of a kind ("hermes", ...), "" for NONE. */
const char *pl_tool_parser_kind_name(enum pl_tool_parser_kind kind);

/* The format a chat template renders tool calls in, from the markers in its text:
 * "<tool_call>" hermes, "[TOOL_CALLS]" mistral, "<|python_tag|>" llama3_json; NONE when
 * the template shows none (or src is NULL). */
enum pl_tool_parser_kind pl_tool_parser_detect(const char *src);

/* What one feed decided. Calls are in order; consecutive pieces of one call are merged. */
struct pl_tool_call_delta {
    int index;            /* the call's place in the answer: 0, 1, ... */
    bool is_first;        /* this delta opens the call: name is set */
    char name[256];       /* the function name ("" unless is_first) */
    struct pl_sbuf args;  /* argument text decided in this feed (may be empty) */
};

struct pl_tool_out {
    struct pl_sbuf content;
    struct pl_tool_call_delta *calls; /* [n_calls] */
    int n_calls;
    int cap;
};

/* Empties out for the next feed (keeps its memory). */
void pl_tool_out_reset(struct pl_tool_out *out);
void pl_tool_out_fini(struct pl_tool_out *out);

struct pl_tool_parser;

/* kind must not be NONE. named: the function of PL_TOOL_PARSER_NAMED (else ignored).
 * max_calls <= 0: no limit. NULL when out of memory. */
struct pl_tool_parser *pl_tool_parser_new(enum pl_tool_parser_kind kind, const char *named,
                                          int max_calls);
void pl_tool_parser_free(struct pl_tool_parser *p); /* NULL is a no-op */

/* Appends what text[0, len) decides to out (content and call deltas). */
void pl_tool_parser_feed(struct pl_tool_parser *p, const char *text, size_t len,
                         struct pl_tool_out *out);

/* End of the output: releases what is held. Further feeds are ignored. */
void pl_tool_parser_finish(struct pl_tool_parser *p, struct pl_tool_out *out);

/* Calls opened so far (those kept under max_calls). */
int pl_tool_parser_n_calls(const struct pl_tool_parser *p);

#endif
