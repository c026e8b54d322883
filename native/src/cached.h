/* Memory the driver keeps for the process: pools and graph memory (cached.c). */
#ifndef HAMI_CACHED_H
#define HAMI_CACHED_H

#include <stdint.h>

#include "hooks.h"

int hami_pool_device(CUmemoryPool pool, int *host);
void hami_pool_created(CUmemoryPool pool, const CUmemPoolProps *props);
/* What the pool holds beyond our live allocations from it (it may serve a request from that). */
uint64_t hami_pool_spare(CUmemoryPool pool, int dev);
/* After an allocation of bytes from pool, for which reserved_first was reserved: 0 when it
 * stands, -1 when the pool grew past the limit to serve it (the caller undoes it), 1 when the
 * pool cannot be followed (the caller charges reserved_first as a plain allocation). */
int hami_pool_allocated(CUmemoryPool pool, int dev, uint64_t bytes, uint64_t reserved_first);
void hami_pool_freed(CUmemoryPool pool, int dev, uint64_t bytes);
void hami_pool_changed(CUmemoryPool pool);
void hami_pool_destroyed(CUmemoryPool pool);
void hami_cached_recount_all(void);

CUresult hami_graph_instantiated(CUgraphExec exec, CUgraph graph);
void hami_graph_destroyed(CUgraphExec exec);
void hami_graph_trimmed(int dev);

#endif
