/* What this process allocated through us: address or handle -> size, device, kind. Frees of
 * anything not found here pass through to the driver untouched (never an error, never a leak). */
#ifndef HAMI_TRACK_H
#define HAMI_TRACK_H

#include <stdint.h>

struct hami_alloc {
    uint64_t bytes;
    int32_t dev;
    int32_t oversub; /* 1: host-backed fallback, counted apart */
    int32_t maps;     /* VMM handles: live mappings of it */
    int32_t released; /* VMM handles: cuMemRelease was called while it was still mapped */
    int32_t kind;     /* HAMI_ALLOC_PLAIN or HAMI_ALLOC_POOL */
    uint64_t aux;     /* HAMI_ALLOC_POOL: the pool it came from */
};

#define HAMI_ALLOC_PLAIN 0
#define HAMI_ALLOC_POOL 1

void hami_track_put(uint64_t key, struct hami_alloc value);
/* Remove and return the entry; 0 when it was not tracked. */
int hami_track_take(uint64_t key, struct hami_alloc *out);
/* Change the live entry under the lock: fn returns 1 to keep it, 0 to remove it; *out gets
 * the entry as fn left it. Returns 0 when the key is not tracked. */
int hami_track_update(uint64_t key, int (*fn)(struct hami_alloc *, void *), void *ctx,
                      struct hami_alloc *out);

#endif
