/*
 * clock.h -- monotonic time for timings and deadlines.
 *
 * Owns: pl_clock_seconds, the one CLOCK_MONOTONIC reader of the library.
 */
#ifndef PL_UTIL_CLOCK_H
#define PL_UTIL_CLOCK_H

/* Seconds since an arbitrary fixed point (CLOCK_MONOTONIC). */
double pl_clock_seconds(void);

#endif
