/*
 * json.h -- small jansson helpers shared by the parsers of outside JSON.
 *
 * Owns: the JSON type names used in error messages ("expected a number, got
 * string"), so every parser words them the same.
 */
#ifndef PL_UTIL_JSON_H
#define PL_UTIL_JSON_H

#include <jansson.h>

/* "object", "array", "string", "integer", "number", "boolean" or "null". */
const char *pl_json_type_name(const json_t *v);

#endif
