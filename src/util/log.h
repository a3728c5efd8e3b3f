/*
 * log.h -- leveled logging to stderr.
 *
 * Owns: the process-wide log level (PAGELLM_LOG_LEVEL=debug|info|warn|error|off,
 * default info). Thread-safe: each message is written with one fprintf call.
 */
#ifndef PL_UTIL_LOG_H
#define PL_UTIL_LOG_H

enum pl_log_level { PL_LOG_DEBUG, PL_LOG_INFO, PL_LOG_WARN, PL_LOG_ERROR, PL_LOG_OFF };

void pl_log_set_level(enum pl_log_level level);
enum pl_log_level pl_log_get_level(void);
void pl_log(enum pl_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define PL_DEBUG(...) pl_log(PL_LOG_DEBUG, __VA_ARGS__)
#define PL_INFO(...) pl_log(PL_LOG_INFO, __VA_ARGS__)
#define PL_WARN(...) pl_log(PL_LOG_WARN, __VA_ARGS__)
#define PL_ERROR(...) pl_log(PL_LOG_ERROR, __VA_ARGS__)

#endif
