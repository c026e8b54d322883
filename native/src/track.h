/* What this process allocated through us: address or handle -> size, device, kind. Frees of
 * anything not found here pass through to the driver untouched (never an error, never a leak). */
#ifndef HAMI_TRACK_H
#define HAMI_TRACK_H

#include <stdint.h>

struct hami_alloc {
    uint64_t bytes;
    int32_t dev;
    int32_t oversub; /* 1: host-backed fallback, counted apart */
};

void hami_track_put(uint64_t key, struct hami_alloc value);
/* Remove and return the entry; 0 when it was not tracked. */
int hami_track_take(uint64_t key, struct hami_alloc *out);

#endif
