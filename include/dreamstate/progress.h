/* Progress lines with a rate and an ETA for long commands (extract, analyze, eval, sample), on stderr
 * from rank 0 only, at most one every `interval` seconds plus the final one:
 *   "extract-states: 120/400 contexts (30%) | 35.2/s | elapsed 3s | ETA 8s" */
#ifndef DREAMSTATE_PROGRESS_H
#define DREAMSTATE_PROGRESS_H

#include <stddef.h>
#include <stdint.h>

typedef struct ds_progress {
    char what[64], unit[32];
    int64_t total, done;
    int64_t printed_done;      /* done at the last line printed, -1: none yet */
    double start, last_print, interval;
} ds_progress;

/* total: units of work of this process's share (or of the whole job, if the caller counts it). */
void ds_progress_begin(ds_progress *p, const char *what, const char *unit, int64_t total);
/* Sets the units done so far and prints a line if `interval` (2 s) has passed since the last one. */
void ds_progress_update(ds_progress *p, int64_t done);
/* Prints the final line (done = total) unless the last update already showed it. */
void ds_progress_end(ds_progress *p);

/* "45s", "3m07s", "2h05m". */
void ds_format_duration(double seconds, char *buf, size_t len);

#endif
