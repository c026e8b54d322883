/* Memory the driver keeps for the process after the program let go of it, charged until the
 * driver really gives it back:
 *
 * - Stream-ordered memory pools. A pool keeps freed memory up to its release threshold (all of
 *   it, with a threshold of UINT64_MAX) and gives the rest back only at the next
 *   synchronisation or cuMemPoolTrimTo. A pool is charged what the driver says it holds,
 *   max(CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT, USED_MEM_CURRENT), counted again after every
 *   allocation and free, after synchronisations and trims, and before any refusal. An
 *   allocation reserves its size first (the pool may have to grow by that much); if the pool
 *   grew by more than that (it grows in chunks), the excess must fit the limit too, or the
 *   allocation is undone and refused.
 * - Graph memory (allocation nodes, however they were made: cuGraphAddMemAllocNode,
 *   cuGraphAddNode, stream capture, inside child or conditional graphs). An executable graph is
 *   charged the sum of its allocation nodes from instantiation (refused there when it does not
 *   fit) to its destruction; the device's graph memory cache is charged what the driver says it
 *   holds (CU_GRAPH_MEM_ATTR_RESERVED_MEM_CURRENT) when that is more, until cuDeviceGraphMemTrim. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdlib.h>

#include "cached.h"
#include "charge.h"
#include "log.h"
#include "track.h"
#include "vgpu.h"

struct pool_entry {
    CUmemoryPool pool;
    int dev;
    int host;        /* a host pool: not device memory */
    int destroyed;   /* charge follows our own frees from now on */
    uint64_t charge; /* bytes charged to the region for this pool */
    uint64_t ours;   /* bytes of live allocations we made from it */
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct pool_entry *pools;
static size_t npools, cap_pools;
static uint64_t graph_charge[HAMI_MAX_DEVICES], exec_sum[HAMI_MAX_DEVICES];

static void reset_after_fork(void) {
    pthread_mutex_init(&lock, NULL);
    npools = 0; /* the child has no CUDA context, hence no pools */
    for (int d = 0; d < HAMI_MAX_DEVICES; d++) graph_charge[d] = exec_sum[d] = 0;
}

__attribute__((constructor)) static void cached_atfork(void) {
    pthread_atfork(NULL, NULL, reset_after_fork);
}

static uint64_t pool_attr(CUmemoryPool pool, CUmemPool_attribute attr) {
    cuuint64_t v = 0;
    if (hami_real.cuMemPoolGetAttribute == NULL ||
        hami_real.cuMemPoolGetAttribute(pool, attr, &v) != CUDA_SUCCESS)
        return 0;
    return v;
}

/* The default pools are not created through us: find which device's they are. */
static int default_pool_device(CUmemoryPool pool) {
    int count = 0;
    if (hami_real.cuDeviceGetCount == NULL || hami_real.cuDeviceGetCount(&count) != CUDA_SUCCESS)
        return -1;
    for (int d = 0; d < count && d < HAMI_MAX_DEVICES; d++) {
        CUmemoryPool p = NULL;
        if (hami_real.cuDeviceGetDefaultMemPool != NULL &&
            hami_real.cuDeviceGetDefaultMemPool(&p, d) == CUDA_SUCCESS && p == pool)
            return d;
        if (hami_real.cuDeviceGetMemPool != NULL &&
            hami_real.cuDeviceGetMemPool(&p, d) == CUDA_SUCCESS && p == pool)
            return d;
    }
    return -1;
}

/* The entry of pool (lock held); created on first sight. NULL when out of host memory. */
static struct pool_entry *entry_of(CUmemoryPool pool, int dev, int host) {
    for (size_t i = 0; i < npools; i++)
        if (pools[i].pool == pool && !pools[i].destroyed) return &pools[i];
    if (npools == cap_pools) {
        size_t next = cap_pools ? cap_pools * 2 : 16;
        struct pool_entry *grown = realloc(pools, next * sizeof(*grown));
        if (grown == NULL) return NULL;
        pools = grown;
        cap_pools = next;
    }
    if (dev < 0) dev = default_pool_device(pool);
    if (dev < 0) {
        host = 1; /* not a device's default pool and not created through us: a host pool */
        dev = 0;
    }
    pools[npools] = (struct pool_entry){pool, dev, host, 0, 0, 0};
    /* Published last: hami_cached_recount_all reads the count without the lock. */
    return &pools[__atomic_fetch_add(&npools, 1, __ATOMIC_RELEASE)];
}

/* Charge = what the driver holds for the pool (lock held). Growth beyond the charge is taken
 * memory: charged without asking the limit; the caller decides whether to undo it. */
static int recount_pool(struct pool_entry *e) {
    if (e->host) return 0;
    uint64_t target = e->ours;
    if (!e->destroyed) {
        uint64_t reserved = pool_attr(e->pool, CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT);
        uint64_t used = pool_attr(e->pool, CU_MEMPOOL_ATTR_USED_MEM_CURRENT);
        target = reserved > used ? reserved : used;
        if (target < e->ours) target = e->ours;
    }
    if (target > e->charge) {
        hami_charge_taken(e->dev, target - e->charge);
    } else if (target < e->charge) {
        hami_unreserve(e->dev, e->charge - target, 0);
    }
    int gave_back = target < e->charge;
    e->charge = target;
    return gave_back;
}

static uint64_t graph_reserved(int dev) {
    cuuint64_t v = 0;
    if (hami_real.cuDeviceGetGraphMemAttribute == NULL ||
        hami_real.cuDeviceGetGraphMemAttribute(dev, CU_GRAPH_MEM_ATTR_RESERVED_MEM_CURRENT, &v) !=
            CUDA_SUCCESS)
        return 0;
    return v;
}

static int recount_graphs(int dev) {
    uint64_t reserved = graph_reserved(dev);
    uint64_t target = exec_sum[dev] > reserved ? exec_sum[dev] : reserved;
    int gave_back = target < graph_charge[dev];
    if (target > graph_charge[dev]) hami_charge_taken(dev, target - graph_charge[dev]);
    else if (target < graph_charge[dev]) hami_unreserve(dev, graph_charge[dev] - target, 0);
    graph_charge[dev] = target;
    return gave_back;
}

int hami_cached_recount(int dev) {
    pthread_mutex_lock(&lock);
    int gave_back = 0;
    for (size_t i = 0; i < npools; i++)
        if (pools[i].dev == dev) gave_back |= recount_pool(&pools[i]);
    if (graph_charge[dev] != 0) gave_back |= recount_graphs(dev);
    pthread_mutex_unlock(&lock);
    return gave_back;
}

void hami_cached_recount_all(void) {
    /* Called at every synchronisation: a process without pools pays one load. */
    if (__atomic_load_n(&npools, __ATOMIC_RELAXED) == 0) return;
    pthread_mutex_lock(&lock);
    for (size_t i = 0; i < npools; i++)
        if (pools[i].charge > pools[i].ours) recount_pool(&pools[i]);
    pthread_mutex_unlock(&lock);
}

/* ---- pools ---- */

int hami_pool_device(CUmemoryPool pool, int *host) {
    pthread_mutex_lock(&lock);
    struct pool_entry *e = entry_of(pool, -1, 0);
    int dev = e != NULL ? e->dev : 0;
    *host = e == NULL || e->host;
    pthread_mutex_unlock(&lock);
    return dev;
}

void hami_pool_created(CUmemoryPool pool, const CUmemPoolProps *props) {
    int host = props->location.type != CU_MEM_LOCATION_TYPE_DEVICE;
    int dev = props->location.id >= 0 && props->location.id < HAMI_MAX_DEVICES
                  ? props->location.id : 0;
    pthread_mutex_lock(&lock);
    entry_of(pool, host ? 0 : dev, host);
    pthread_mutex_unlock(&lock);
}

uint64_t hami_pool_spare(CUmemoryPool pool, int dev) {
    pthread_mutex_lock(&lock);
    struct pool_entry *e = entry_of(pool, dev, 0);
    uint64_t spare = e != NULL && e->charge > e->ours ? e->charge - e->ours : 0;
    pthread_mutex_unlock(&lock);
    return spare;
}

int hami_pool_allocated(CUmemoryPool pool, int dev, uint64_t bytes, uint64_t reserved_first) {
    pthread_mutex_lock(&lock);
    struct pool_entry *e = entry_of(pool, dev, 0);
    if (e == NULL) {
        pthread_mutex_unlock(&lock);
        return 1; /* no room to follow the pool: the caller charges it as a plain allocation */
    }
    e->charge += reserved_first;
    e->ours += bytes;
    uint64_t reserved = pool_attr(pool, CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT);
    uint64_t in_use = pool_attr(pool, CU_MEMPOOL_ATTR_USED_MEM_CURRENT);
    uint64_t target = reserved > in_use ? reserved : in_use;
    int fits = 1;
    if (target > e->charge) { /* the pool grew by more than we reserved: that must fit too */
        fits = hami.region == NULL ||
               hami_region_reserve(hami.region, dev, target - e->charge, hami_limit(dev), 0) == 0;
        if (fits) e->charge = target;
    }
    if (fits) recount_pool(e);
    pthread_mutex_unlock(&lock);
    return fits ? 0 : -1;
}

void hami_pool_freed(CUmemoryPool pool, int dev, uint64_t bytes) {
    pthread_mutex_lock(&lock);
    for (size_t i = 0; i < npools; i++) {
        struct pool_entry *e = &pools[i];
        if (e->pool != pool) continue;
        e->ours = e->ours >= bytes ? e->ours - bytes : 0;
        if (e->destroyed && e->charge >= bytes) { /* no driver numbers any more */
            hami_unreserve(dev, bytes, 0);
            e->charge -= bytes;
        } else {
            recount_pool(e); /* what the pool keeps stays charged */
        }
        break;
    }
    pthread_mutex_unlock(&lock);
}

void hami_pool_changed(CUmemoryPool pool) {
    pthread_mutex_lock(&lock);
    for (size_t i = 0; i < npools; i++)
        if (pools[i].pool == pool && !pools[i].destroyed) recount_pool(&pools[i]);
    pthread_mutex_unlock(&lock);
}

void hami_pool_destroyed(CUmemoryPool pool) {
    pthread_mutex_lock(&lock);
    for (size_t i = 0; i < npools; i++) {
        struct pool_entry *e = &pools[i];
        if (e->pool != pool || e->destroyed) continue;
        /* What is still allocated from it lives on until freed; the rest is gone. */
        e->destroyed = 1;
        recount_pool(e);
    }
    pthread_mutex_unlock(&lock);
}

/* ---- graphs ---- */

#define EXEC_TAG (1ULL << 62)
#define MAX_DEPTH 16

static uint64_t exec_key(CUgraphExec exec, int dev) {
    return ((uint64_t)(uintptr_t)exec ^ ((uint64_t)(dev + 1) << 52)) | EXEC_TAG;
}

/* Sum the allocation nodes of g and of every graph inside it, per device. -1 when the graph
 * cannot be read (the caller refuses to instantiate: fail closed). */
static int graph_sums(CUgraph g, uint64_t *sums, int depth) {
    if (depth > MAX_DEPTH || hami_real.cuGraphGetNodes == NULL || hami_real.cuGraphNodeGetType == NULL)
        return -1;
    size_t n = 0;
    if (hami_real.cuGraphGetNodes(g, NULL, &n) != CUDA_SUCCESS) return -1;
    if (n == 0) return 0;
    CUgraphNode *nodes = calloc(n, sizeof(*nodes));
    if (nodes == NULL || hami_real.cuGraphGetNodes(g, nodes, &n) != CUDA_SUCCESS) {
        free(nodes);
        return -1;
    }
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        CUgraphNodeType type;
        if (hami_real.cuGraphNodeGetType(nodes[i], &type) != CUDA_SUCCESS) {
            rc = -1;
        } else if (type == CU_GRAPH_NODE_TYPE_MEM_ALLOC) {
            CUDA_MEM_ALLOC_NODE_PARAMS p;
            if (hami_real.cuGraphMemAllocNodeGetParams == NULL ||
                hami_real.cuGraphMemAllocNodeGetParams(nodes[i], &p) != CUDA_SUCCESS) {
                rc = -1;
            } else if (p.poolProps.location.type == CU_MEM_LOCATION_TYPE_DEVICE) {
                int dev = p.poolProps.location.id;
                dev = dev >= 0 && dev < HAMI_MAX_DEVICES ? dev : 0;
                sums[dev] = hami_sum(sums[dev], hami_charged_bytes(p.bytesize));
            }
        } else if (type == CU_GRAPH_NODE_TYPE_GRAPH) {
            CUgraph child = NULL;
            rc = hami_real.cuGraphChildGraphNodeGetGraph == NULL ||
                         hami_real.cuGraphChildGraphNodeGetGraph(nodes[i], &child) != CUDA_SUCCESS
                     ? -1 : graph_sums(child, sums, depth + 1);
        } else if (type == CU_GRAPH_NODE_TYPE_CONDITIONAL) {
            CUgraphNodeParams p;
            if (hami_real.cuGraphNodeGetParams == NULL ||
                hami_real.cuGraphNodeGetParams(nodes[i], &p) != CUDA_SUCCESS) {
                rc = -1;
            } else {
                for (unsigned b = 0; b < p.conditional.size && rc == 0; b++)
                    rc = graph_sums(p.conditional.phGraph_out[b], sums, depth + 1);
            }
        }
    }
    free(nodes);
    return rc;
}

CUresult hami_graph_instantiated(CUgraphExec exec, CUgraph graph) {
    uint64_t sums[HAMI_MAX_DEVICES] = {0};
    if (graph_sums(graph, sums, 0) != 0) {
        LOG_ERROR("cannot read the graph's allocation nodes: instantiation refused");
        return CUDA_ERROR_NOT_SUPPORTED;
    }
    int dev;
    for (dev = 0; dev < HAMI_MAX_DEVICES; dev++)
        if (sums[dev] != 0 && hami_reserve(dev, sums[dev], NULL) != CUDA_SUCCESS) break;
    if (dev < HAMI_MAX_DEVICES) { /* one device did not fit: give the others back */
        for (int d = 0; d < dev; d++) hami_unreserve(d, sums[d], 0);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    pthread_mutex_lock(&lock);
    for (int d = 0; d < HAMI_MAX_DEVICES; d++) {
        if (sums[d] == 0) continue;
        graph_charge[d] += sums[d];
        exec_sum[d] += sums[d];
        hami_track_put(exec_key(exec, d), (struct hami_alloc){.bytes = sums[d], .dev = d});
    }
    pthread_mutex_unlock(&lock);
    return CUDA_SUCCESS;
}

void hami_graph_destroyed(CUgraphExec exec) {
    pthread_mutex_lock(&lock);
    for (int d = 0; d < HAMI_MAX_DEVICES; d++) {
        struct hami_alloc a;
        if (!hami_track_take(exec_key(exec, d), &a)) continue;
        exec_sum[d] = exec_sum[d] >= a.bytes ? exec_sum[d] - a.bytes : 0;
        recount_graphs(d); /* the device may keep it cached until trimmed */
    }
    pthread_mutex_unlock(&lock);
}

void hami_graph_trimmed(int dev) {
    pthread_mutex_lock(&lock);
    recount_graphs(dev);
    pthread_mutex_unlock(&lock);
}
