/*
 * log.c -- leveled logging to stderr (see log.h).
 */
#include "util/log.h"

#include "util/debug_env.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int g_level = -1;

static enum pl_log_level level_from_env(void)
{
    struct pl_debug_env d;
    pl_debug_env_read(&d);
    const char *s = d.log_level;
    if (!s)
        return PL_LOG_INFO;
    if (!strcmp(s, "debug")) return PL_LOG_DEBUG;
    if (!strcmp(s, "warn")) return PL_LOG_WARN;
    if (!strcmp(s, "error")) return PL_LOG_ERROR;
    if (!strcmp(s, "off")) return PL_LOG_OFF;
    return PL_LOG_INFO;
}

void pl_log_set_level(enum pl_log_level level) { g_level = (int)level; }

enum pl_log_level pl_log_get_level(void)
{
    if (g_level < 0)
        g_level = (int)level_from_env();
    return (enum pl_log_level)g_level;
}

void pl_log(enum pl_log_level level, const char *fmt, ...)
{
    if (level < pl_log_get_level())
        return;
    static const char *names[] = {"DEBUG", "INFO", "WARN", "ERROR", "OFF"};
    char buf[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    fprintf(stderr, "[pagellm %s] %s\n", names[level], buf);
}
