/*
 * test.h -- a minimal assertion harness for the unit tests.
 *
 * Each test file defines test functions, lists them in main via PL_RUN, and
 * returns pl_test_summary(): it prints "N passed, N failed" and exits non-zero
 * when anything failed. CHECK records a failure and continues; REQUIRE stops
 * the current test function.
 */
#ifndef PL_TEST_H
#define PL_TEST_H

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int pl_test_checks_failed;
static int pl_test_cur_failed;
static int pl_tests_passed;
static int pl_tests_failed;

#define CHECK(cond)                                                                   \
    do {                                                                              \
        if (!(cond)) {                                                                \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);  \
            pl_test_checks_failed++;                                                  \
            pl_test_cur_failed = 1;                                                   \
        }                                                                             \
    } while (0)

#define CHECKF(cond, ...)                                                             \
    do {                                                                              \
        if (!(cond)) {                                                                \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond);  \
            fprintf(stderr, __VA_ARGS__);                                             \
            fputc('\n', stderr);                                                      \
            pl_test_checks_failed++;                                                  \
            pl_test_cur_failed = 1;                                                   \
        }                                                                             \
    } while (0)

#define REQUIRE(cond)                                                                 \
    do {                                                                              \
        if (!(cond)) {                                                                \
            fprintf(stderr, "%s:%d: REQUIRE failed: %s\n", __FILE__, __LINE__, #cond); \
            pl_test_checks_failed++;                                                  \
            pl_test_cur_failed = 1;                                                   \
            return;                                                                   \
        }                                                                             \
    } while (0)

#define CHECK_NEAR(a, b, tol)                                                         \
    CHECKF(fabs((double)(a) - (double)(b)) <= (tol), "%g vs %g (tol %g)", (double)(a), \
           (double)(b), (double)(tol))

#define PL_RUN(fn)                                                                    \
    do {                                                                              \
        pl_test_cur_failed = 0;                                                       \
        fn();                                                                         \
        if (pl_test_cur_failed) {                                                     \
            pl_tests_failed++;                                                        \
            fprintf(stderr, "FAIL %s\n", #fn);                                        \
        } else {                                                                      \
            pl_tests_passed++;                                                        \
            fprintf(stderr, "ok   %s\n", #fn);                                        \
        }                                                                             \
    } while (0)

static inline int pl_test_summary(void)
{
    printf("%d passed, %d failed\n", pl_tests_passed, pl_tests_failed);
    return pl_tests_failed ? 1 : 0;
}

/* Whether the comma-separated list in environment variable var names `name`. */
static inline int pl_test_in_env_list(const char *var, const char *name)
{
    const char *l = getenv(var);
    size_t n = strlen(name);
    for (const char *p = l ? strstr(l, name) : NULL; p; p = strstr(p + 1, name))
        if ((p == l || p[-1] == ',') && (p[n] == ',' || p[n] == 0))
            return 1;
    return 0;
}

/* Whether test `name` runs: not listed in PL_PARITY_SKIP and, when PL_PARITY_ONLY is set,
 * listed there (the GPU test programs' selection; a crashing test need not hide the rest,
 * and one device call need not run them all). */
static inline int pl_test_selected(const char *name)
{
    if (pl_test_in_env_list("PL_PARITY_SKIP", name))
        return 0;
    return !getenv("PL_PARITY_ONLY") || pl_test_in_env_list("PL_PARITY_ONLY", name);
}

/* $PL_SOURCE_DIR/rel, or ./rel when unset. Returns a static buffer. */
static inline const char *pl_test_path(const char *rel)
{
    static char buf[4096];
    const char *root = getenv("PL_SOURCE_DIR");
    snprintf(buf, sizeof(buf), "%s/%s", root ? root : ".", rel);
    return buf;
}

/* Removes a file or a directory tree (temporary test output). */
static inline void pl_test_rm_tree(const char *path)
{
    DIR *d = opendir(path);
    if (!d) {
        unlink(path);
        return;
    }
    struct dirent *e;
    char sub[4096];
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        if (snprintf(sub, sizeof(sub), "%s/%s", path, e->d_name) < (int)sizeof(sub))
            pl_test_rm_tree(sub);
    }
    closedir(d);
    rmdir(path);
}

#endif
