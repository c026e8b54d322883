/* The shared accounting region: one memory-mapped file per container (path in
 * CUDA_DEVICE_MEMORY_SHARED_CACHE), shared by all of the container's processes, read by the node
 * agent. Layout documented in docs/native.md; bump HAMI_REGION_VERSION on any change. */
#ifndef HAMI_REGION_H
#define HAMI_REGION_H

#include <pthread.h>
#include <stdint.h>

#include "limits.h"

#define HAMI_REGION_MAGIC 0x494d4148u /* "HAMI" little-endian */
#define HAMI_REGION_VERSION 2u
#define HAMI_MAX_PROCS 1024

struct hami_proc_slot {
    int32_t pid;          /* 0: free */
    int32_t reserved;     /* bit 0: owned through a lock on the region file (region.c) */
    uint64_t start_ticks; /* process start time (/proc/<pid>/stat field 22): guards PID reuse */
    uint64_t used[HAMI_MAX_DEVICES];    /* device memory held, bytes */
    uint64_t oversub[HAMI_MAX_DEVICES]; /* host-backed (unified) memory past the limit, bytes */
};

struct hami_region {
    uint32_t magic;
    uint32_t version;
    uint32_t header_bytes; /* offsetof(slots): readers check it before trusting the layout */
    uint32_t slot_count;
    pthread_mutex_t lock; /* process-shared, robust */
    uint64_t limit[HAMI_MAX_DEVICES];      /* bytes; 0 = unlimited; the strictest seen wins */
    int32_t sm_limit;                      /* percent */
    int32_t relaxed[HAMI_MAX_DEVICES];     /* node agent: job is alone here (policy "default") */
    int64_t tokens_ns[HAMI_MAX_DEVICES];   /* compute budget: GPU time still allowed */
    uint64_t refill_ns[HAMI_MAX_DEVICES];  /* CLOCK_MONOTONIC of the last refill */
    uint64_t busy_ns[HAMI_MAX_DEVICES];    /* GPU time measured, total */
    uint64_t used[HAMI_MAX_DEVICES];       /* sum of the slots' used[], kept with them */
    struct hami_proc_slot slots[HAMI_MAX_PROCS];
};

/* Map (creating if needed) the region at path, or an anonymous private one when path is NULL.
 * Returns NULL on failure (logged). */
struct hami_region *hami_region_open(const char *path, const struct hami_limits *limits);
/* 0 with the lock held (an owner that died inside is recovered from); -1 when the lock is
 * unusable (corrupt, not recoverable): logged once, the caller fails closed. */
int hami_region_lock(struct hami_region *r);
void hami_region_unlock(struct hami_region *r);
/* This process's slot (claimed on first use, after fork too); call with the lock held. */
struct hami_proc_slot *hami_region_slot(struct hami_region *r);
/* Free the slots of processes that are gone; call with the lock held. Returns slots freed. */
int hami_region_reap(struct hami_region *r);
/* Recompute the per-device totals from the slots; call with the lock held. */
void hami_region_recount(struct hami_region *r);
/* Bytes held on a device by all live processes; call with the lock held. */
uint64_t hami_region_used(const struct hami_region *r, int dev);
/* The same, after reaping the slots of processes that are gone; takes the lock itself. */
uint64_t hami_region_used_now(struct hami_region *r, int dev);
uint64_t hami_region_oversub(const struct hami_region *r, int dev);

/* Reserve bytes on dev against limit (0 = unlimited), atomically for the whole container.
 * Returns 0 when reserved, -1 when it would exceed the limit. */
int hami_region_reserve(struct hami_region *r, int dev, uint64_t bytes, uint64_t limit,
                        int oversub);
void hami_region_release(struct hami_region *r, int dev, uint64_t bytes, int oversub);

uint64_t hami_process_start_ticks(int pid);
/* This process's pid, cached (again after fork). */
int hami_pid(void);

#endif
