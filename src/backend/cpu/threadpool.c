/*
 * threadpool.c -- persistent workers for the CPU backend (see threadpool.h).
 *
 * Protocol: run() publishes (fn, ctx), bumps `generation` and wakes sleepers;
 * each worker that sees a new generation runs its share and increments
 * `n_done`; run() does its own share (ith 0) and spins until n_done equals
 * the number of workers. A worker first spins on `generation` (ops arrive
 * microseconds apart inside a forward pass), then sleeps on `cond`.
 * `n_sleeping` lets run() skip the broadcast syscall when nobody sleeps.
 *
 * Placement: the pool counts the CPUs the process may run on (its affinity
 * mask: a container's cpuset, taskset), not every CPU online. With
 * PAGELLM_CPU_AFFINITY=1 thread ith is pinned to the ith of those CPUs (the
 * caller, thread 0, at its first run), so the compute threads never share a
 * core nor migrate mid-op; off by default, because on a machine shared with
 * other work a pinned thread cannot move away from a busy core.
 */
#include "backend/cpu/threadpool.h"

#include "util/debug_env.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Spin iterations before a worker sleeps (~tens of microseconds). */
#define SPIN_BEFORE_SLEEP 20000

struct worker {
    struct pl_threadpool *tp;
    pthread_t thread;
    int ith;
};

struct pl_threadpool {
    int n_threads;
    struct worker *workers; /* [n_threads - 1], worker i has ith = i + 1 */
    pthread_mutex_t mutex;
    pthread_cond_t cond;
    pl_threadpool_fn fn;
    void *ctx;
    atomic_uint generation;
    atomic_int n_done;
    atomic_int n_sleeping;
    atomic_bool stop;
    /* PAGELLM_CPU_AFFINITY=1: thread ith runs on cpus[ith % n_cpus] */
    bool pin, caller_pinned;
    int *cpus;
    int n_cpus;
};

/* The CPUs of the process's affinity mask, in order (*n = 0 when unknown). */
static int *allowed_cpus(int *n)
{
    *n = 0;
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof(set), &set) != 0 || CPU_COUNT(&set) == 0)
        return NULL;
    int *cpus = malloc(sizeof(int) * (size_t)CPU_COUNT(&set));
    if (!cpus)
        return NULL;
    for (int c = 0; c < CPU_SETSIZE; c++)
        if (CPU_ISSET(c, &set))
            cpus[(*n)++] = c;
    return cpus;
}

/* Pins the calling thread to cpu (a hint: on failure the thread stays where it is). */
static void pin_self(int cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct pl_threadpool *tp = w->tp;
    unsigned seen = 0; /* the generation at creation: a job may be posted before we start */
    if (tp->pin)
        pin_self(tp->cpus[w->ith % tp->n_cpus]);
    for (;;) {
        int spins = 0;
        unsigned gen;
        while ((gen = atomic_load_explicit(&tp->generation, memory_order_acquire)) == seen &&
               !atomic_load(&tp->stop)) {
            if (++spins < SPIN_BEFORE_SLEEP) {
                cpu_relax();
                continue;
            }
            pthread_mutex_lock(&tp->mutex);
            atomic_fetch_add(&tp->n_sleeping, 1);
            while (atomic_load(&tp->generation) == seen && !atomic_load(&tp->stop))
                pthread_cond_wait(&tp->cond, &tp->mutex);
            atomic_fetch_sub(&tp->n_sleeping, 1);
            pthread_mutex_unlock(&tp->mutex);
            spins = 0;
        }
        if (atomic_load(&tp->stop))
            return NULL;
        seen = gen;
        tp->fn(tp->ctx, w->ith, tp->n_threads);
        atomic_fetch_add_explicit(&tp->n_done, 1, memory_order_release);
    }
}

int pl_cpu_count(void)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0)
        return CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

pl_status pl_threadpool_new(int n_threads, struct pl_threadpool **out, struct pl_err *err)
{
    if (n_threads < 1)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT, "thread pool: %d threads", n_threads);
    struct pl_threadpool *tp = calloc(1, sizeof(*tp));
    if (!tp)
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "thread pool: out of memory");
    tp->n_threads = n_threads;
    pthread_mutex_init(&tp->mutex, NULL);
    pthread_cond_init(&tp->cond, NULL);
    atomic_init(&tp->generation, 0);
    atomic_init(&tp->n_done, 0);
    atomic_init(&tp->n_sleeping, 0);
    atomic_init(&tp->stop, false);
    struct pl_debug_env dbg;
    pl_debug_env_read(&dbg);
    if (dbg.cpu_affinity) {
        tp->cpus = allowed_cpus(&tp->n_cpus);
        tp->pin = tp->n_cpus > 0;
    }
    if (n_threads > 1) {
        tp->workers = calloc((size_t)n_threads - 1, sizeof(*tp->workers));
        if (!tp->workers) {
            pl_threadpool_free(tp);
            return pl_err_set(err, PL_STATUS_NO_MEMORY, "thread pool: out of memory");
        }
    }
    for (int i = 0; i < n_threads - 1; i++) {
        struct worker *w = &tp->workers[i];
        w->tp = tp;
        w->ith = i + 1;
        if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
            tp->n_threads = i + 1; /* only join the threads that exist */
            pl_threadpool_free(tp);
            return pl_err_set(err, PL_STATUS_NO_MEMORY, "thread pool: cannot start thread %d",
                              i + 1);
        }
    }
    *out = tp;
    return PL_STATUS_OK;
}

void pl_threadpool_free(struct pl_threadpool *tp)
{
    if (!tp)
        return;
    pthread_mutex_lock(&tp->mutex);
    atomic_store(&tp->stop, true);
    pthread_cond_broadcast(&tp->cond);
    pthread_mutex_unlock(&tp->mutex);
    for (int i = 0; i < tp->n_threads - 1; i++)
        pthread_join(tp->workers[i].thread, NULL);
    pthread_cond_destroy(&tp->cond);
    pthread_mutex_destroy(&tp->mutex);
    free(tp->workers);
    free(tp->cpus);
    free(tp);
}

int pl_threadpool_size(const struct pl_threadpool *tp) { return tp->n_threads; }

void pl_threadpool_run(struct pl_threadpool *tp, pl_threadpool_fn fn, void *ctx)
{
    if (tp->pin && !tp->caller_pinned) { /* the caller is thread 0 (one caller: the header) */
        pin_self(tp->cpus[0]);
        tp->caller_pinned = true;
    }
    if (tp->n_threads == 1) {
        fn(ctx, 0, 1);
        return;
    }
    tp->fn = fn;
    tp->ctx = ctx;
    atomic_store_explicit(&tp->n_done, 0, memory_order_relaxed);
    /* seq_cst pairs with the sleeper's n_sleeping increment then generation check:
     * either we see it sleeping and broadcast, or it sees the new generation. */
    atomic_fetch_add(&tp->generation, 1);
    if (atomic_load(&tp->n_sleeping) > 0) {
        pthread_mutex_lock(&tp->mutex);
        pthread_cond_broadcast(&tp->cond);
        pthread_mutex_unlock(&tp->mutex);
    }
    fn(ctx, 0, tp->n_threads);
    int spins = 0;
    while (atomic_load_explicit(&tp->n_done, memory_order_acquire) < tp->n_threads - 1) {
        if (++spins < SPIN_BEFORE_SLEEP)
            cpu_relax();
        else
            sched_yield(); /* an oversubscribed machine: let the worker run */
    }
}
