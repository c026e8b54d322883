/* Charging device memory to the container. Every hook that can take device memory reserves
 * here before it calls the driver and rolls the reservation back if the driver fails. */
#ifndef HAMI_CHARGE_H
#define HAMI_CHARGE_H

#include <stdint.h>

#include "hooks.h"

/* Larger than any device: refused whatever the limit, so no size can wrap the arithmetic or
 * the region's counters. */
#define HAMI_MAX_CHARGE (1ULL << 50)
#define HAMI_TOO_LARGE UINT64_MAX

/* What the driver really takes for a request: small blocks packed, large ones in 2 MiB pages;
 * HAMI_TOO_LARGE past HAMI_MAX_CHARGE. */
uint64_t hami_charged_bytes(uint64_t bytes);
/* a * b, or HAMI_TOO_LARGE when it overflows or passes HAMI_MAX_CHARGE. */
uint64_t hami_product(uint64_t a, uint64_t b);
/* a + b, or HAMI_TOO_LARGE. */
uint64_t hami_sum(uint64_t a, uint64_t b);

/* The container's limit on dev: the strictest of this process's own and the region's (a
 * process started without the environment is still bound). 0: unlimited. */
uint64_t hami_limit(int dev);

/* Reserve bytes on dev. *oversub is set when the bytes are counted as host-backed
 * (CUDA_OVERSUBSCRIBE); pass oversub NULL where host backing is impossible (physical memory,
 * arrays, driver caches). Before refusing, memory the driver caches for this process (pools,
 * graphs) is counted again. Returns CUDA_SUCCESS or CUDA_ERROR_OUT_OF_MEMORY. */
CUresult hami_reserve(int dev, uint64_t bytes, int *oversub);
void hami_unreserve(int dev, uint64_t bytes, int oversub);
/* Charge memory the driver has already taken (a cache that grew): the limit is not asked. */
void hami_charge_taken(int dev, uint64_t bytes);

/* The context and module reserve (HAMI_CONTEXT_RESERVE), charged once per process per device. */
void hami_charge_context(int dev);

/* The device a stream's work runs on (the current device for the default streams). */
int hami_stream_device(CUstream stream);
/* 1 when the stream is capturing a graph: its work is recorded, not run. */
int hami_stream_capturing(CUstream stream);

/* Memory the driver keeps for this process (cached.c): count it again from the driver's own
 * numbers; returns 1 when some charge was given back. */
int hami_cached_recount(int dev);

#endif
