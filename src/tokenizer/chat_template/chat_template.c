/* chat_template.c -- placeholder (chat template work replaces it). */
#include "tokenizer/chat_template/chat_template.h"

pl_status pl_chat_template_parse(const char *source, size_t len, struct pl_chat_template **out,
                                 struct pl_err *err)
{
    return pl_err_set(err, PL_STATUS_UNSUPPORTED, "chat templates are not built yet");
}

void pl_chat_template_free(struct pl_chat_template *t) {}

pl_status pl_chat_template_render(const struct pl_chat_template *t, const json_t *context,
                                  const struct pl_chat_template_limits *limits, char **out,
                                  size_t *out_len, struct pl_err *err)
{
    return pl_err_set(err, PL_STATUS_UNSUPPORTED, "chat templates are not built yet");
}
