#include "dreamstate/progress.h"
#include "dreamstate/common.h"

#include <stdio.h>
#include <string.h>

void ds_format_duration(double s, char *buf, size_t len) {
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, len, "%ldh%02ldm", t / 3600, t / 60 % 60);
    else if (t >= 60) snprintf(buf, len, "%ldm%02lds", t / 60, t % 60);
    else snprintf(buf, len, "%lds", t);
}

void ds_progress_begin(ds_progress *p, const char *what, const char *unit, int64_t total) {
    memset(p, 0, sizeof *p);
    snprintf(p->what, sizeof p->what, "%s", what);
    snprintf(p->unit, sizeof p->unit, "%s", unit);
    p->total = total;
    p->start = p->last_print = ds_now_seconds();
    p->interval = 2.0;
    p->printed_done = -1;
}

static void print_line(const ds_progress *p, double now) {
    double elapsed = now - p->start, rate = elapsed > 0 ? p->done / elapsed : 0;
    char el[32], eta[32] = "?";
    ds_format_duration(elapsed, el, sizeof el);
    if (rate > 0) ds_format_duration((double)(p->total - p->done) / rate, eta, sizeof eta);
    double pct = p->total > 0 ? 100.0 * p->done / p->total : 100.0;
    ds_log("%s: %lld/%lld %s (%.0f%%) | %.1f/s | elapsed %s | ETA %s", p->what, (long long)p->done,
           (long long)p->total, p->unit, pct, rate, el, eta);
}

void ds_progress_update(ds_progress *p, int64_t done) {
    p->done = done;
    double now = ds_now_seconds();
    if (now - p->last_print < p->interval) return;
    p->last_print = now;
    p->printed_done = done;
    print_line(p, now);
}

void ds_progress_end(ds_progress *p) {
    p->done = p->total;
    if (p->printed_done != p->total) print_line(p, ds_now_seconds());
}
