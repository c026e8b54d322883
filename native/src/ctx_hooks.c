/* Hooks for memory the driver takes on the program's behalf: contexts, context limits, pools,
 * graphs, and the synchronisations after which a pool gives memory back. */
#define _GNU_SOURCE
#include <pthread.h>

#include "cached.h"
#include "charge.h"
#include "log.h"
#include "vgpu.h"

#define EXPORT __attribute__((visibility("default")))
#define REAL_OR_FAIL(name)                                                                        \
    if (hami_real.name == NULL) return CUDA_ERROR_NOT_INITIALIZED

static int device_index(CUdevice dev) { return dev >= 0 && dev < HAMI_MAX_DEVICES ? dev : 0; }

/* ---- contexts: a context (primary or created) and the modules loaded into it are covered by
 * HAMI_CONTEXT_RESERVE, charged once per process per device when the first one appears. ---- */

EXPORT CUresult cuDevicePrimaryCtxRetain(CUcontext *ctx, CUdevice dev) {
    hami_init();
    REAL_OR_FAIL(cuDevicePrimaryCtxRetain);
    CUresult rc = hami_real.cuDevicePrimaryCtxRetain(ctx, dev);
    if (rc == CUDA_SUCCESS) hami_charge_context(device_index(dev));
    return rc;
}

EXPORT CUresult cuCtxCreate(CUcontext *ctx, unsigned int flags, CUdevice dev) {
    hami_init();
    REAL_OR_FAIL(cuCtxCreate);
    CUresult rc = hami_real.cuCtxCreate(ctx, flags, dev);
    if (rc == CUDA_SUCCESS) hami_charge_context(device_index(dev));
    return rc;
}

EXPORT CUresult cuCtxCreate_v2(CUcontext *ctx, unsigned int flags, CUdevice dev) {
    hami_init();
    REAL_OR_FAIL(cuCtxCreate_v2);
    CUresult rc = hami_real.cuCtxCreate_v2(ctx, flags, dev);
    if (rc == CUDA_SUCCESS) hami_charge_context(device_index(dev));
    return rc;
}

EXPORT CUresult cuCtxCreate_v3(CUcontext *ctx, CUexecAffinityParam *params, int n,
                               unsigned int flags, CUdevice dev) {
    hami_init();
    REAL_OR_FAIL(cuCtxCreate_v3);
    CUresult rc = hami_real.cuCtxCreate_v3(ctx, params, n, flags, dev);
    if (rc == CUDA_SUCCESS) hami_charge_context(device_index(dev));
    return rc;
}

EXPORT CUresult cuCtxCreate_v4(CUcontext *ctx, CUctxCreateParams *params, unsigned int flags,
                               CUdevice dev) {
    hami_init();
    REAL_OR_FAIL(cuCtxCreate_v4);
    CUresult rc = hami_real.cuCtxCreate_v4(ctx, params, flags, dev);
    if (rc == CUDA_SUCCESS) hami_charge_context(device_index(dev));
    return rc;
}

/* ---- context limits: the malloc heap, the printf FIFO and the stack are device memory the
 * driver reserves for the context. What a context starts with is part of the context reserve;
 * growing it is charged (and refused past the limit), per process and device. ---- */

#define LIMIT_KINDS 3
static pthread_mutex_t limit_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t base_bytes[HAMI_MAX_DEVICES][LIMIT_KINDS];
static uint64_t limit_charge[HAMI_MAX_DEVICES][LIMIT_KINDS];
static int have_base[HAMI_MAX_DEVICES][LIMIT_KINDS];

static uint64_t device_attribute(CUdevice_attribute attr, int dev) {
    int v = 0;
    if (hami_real.cuDeviceGetAttribute == NULL ||
        hami_real.cuDeviceGetAttribute(&v, attr, dev) != CUDA_SUCCESS || v < 0)
        return 0;
    return (uint64_t)v;
}

/* Device bytes behind a limit's value: the stack is per resident thread. */
static uint64_t limit_bytes(CUlimit which, size_t value, int dev) {
    if (which != CU_LIMIT_STACK_SIZE) return value;
    uint64_t threads =
        hami_product(device_attribute(CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR, dev),
                     device_attribute(CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, dev));
    return hami_product(value, threads ? threads : 1);
}

EXPORT CUresult cuCtxSetLimit(CUlimit which, size_t value) {
    hami_init();
    REAL_OR_FAIL(cuCtxSetLimit);
    if (which > CU_LIMIT_MALLOC_HEAP_SIZE || hami_real.cuCtxGetLimit == NULL)
        return hami_real.cuCtxSetLimit(which, value);
    int dev = hami_current_device();
    pthread_mutex_lock(&limit_lock);
    if (!have_base[dev][which]) {
        size_t initial = 0;
        if (hami_real.cuCtxGetLimit(&initial, which) == CUDA_SUCCESS) {
            base_bytes[dev][which] = limit_bytes(which, initial, dev);
            have_base[dev][which] = 1;
        }
    }
    uint64_t bytes = limit_bytes(which, value, dev);
    uint64_t wanted = bytes > base_bytes[dev][which] ? bytes - base_bytes[dev][which] : 0;
    uint64_t held = limit_charge[dev][which];
    uint64_t extra = wanted > held ? wanted - held : 0;
    CUresult rc = wanted == HAMI_TOO_LARGE ? CUDA_ERROR_OUT_OF_MEMORY
                  : extra != 0            ? hami_reserve(dev, extra, NULL)
                                          : CUDA_SUCCESS;
    if (rc == CUDA_SUCCESS) {
        rc = hami_real.cuCtxSetLimit(which, value);
        if (rc != CUDA_SUCCESS) {
            hami_unreserve(dev, extra, 0); /* the driver refused: give it back */
        } else {
            if (wanted < held) hami_unreserve(dev, held - wanted, 0);
            limit_charge[dev][which] = wanted;
        }
    }
    pthread_mutex_unlock(&limit_lock);
    return rc;
}

/* ---- pools ---- */

EXPORT CUresult cuMemPoolCreate(CUmemoryPool *pool, const CUmemPoolProps *props) {
    hami_init();
    REAL_OR_FAIL(cuMemPoolCreate);
    CUresult rc = hami_real.cuMemPoolCreate(pool, props);
    if (rc == CUDA_SUCCESS && pool != NULL && props != NULL) hami_pool_created(*pool, props);
    return rc;
}

EXPORT CUresult cuMemPoolDestroy(CUmemoryPool pool) {
    hami_init();
    REAL_OR_FAIL(cuMemPoolDestroy);
    CUresult rc = hami_real.cuMemPoolDestroy(pool);
    if (rc == CUDA_SUCCESS) hami_pool_destroyed(pool);
    return rc;
}

EXPORT CUresult cuMemPoolTrimTo(CUmemoryPool pool, size_t keep) {
    hami_init();
    REAL_OR_FAIL(cuMemPoolTrimTo);
    CUresult rc = hami_real.cuMemPoolTrimTo(pool, keep);
    if (rc == CUDA_SUCCESS) hami_pool_changed(pool);
    return rc;
}

EXPORT CUresult cuMemPoolSetAttribute(CUmemoryPool pool, CUmemPool_attribute attr, void *value) {
    hami_init();
    REAL_OR_FAIL(cuMemPoolSetAttribute);
    CUresult rc = hami_real.cuMemPoolSetAttribute(pool, attr, value);
    if (rc == CUDA_SUCCESS) hami_pool_changed(pool);
    return rc;
}

/* Before a synchronisation the compute sampler covers the work it waits for (its end is when
 * the device goes idle); after it a pool may have given memory back (its release threshold). */
#define SYNCHRONISED(name, args)                                                                  \
    do {                                                                                          \
        hami_init();                                                                              \
        REAL_OR_FAIL(name);                                                                       \
        hami_sample_before_wait();                                                                \
        CUresult rc_ = hami_real.name args;                                                       \
        if (rc_ == CUDA_SUCCESS) hami_cached_recount_all();                                       \
        return rc_;                                                                               \
    } while (0)

EXPORT CUresult cuCtxSynchronize(void) { SYNCHRONISED(cuCtxSynchronize, ()); }
EXPORT CUresult cuStreamSynchronize(CUstream s) { SYNCHRONISED(cuStreamSynchronize, (s)); }
EXPORT CUresult cuStreamSynchronize_ptsz(CUstream s) {
    SYNCHRONISED(cuStreamSynchronize_ptsz, (s));
}
EXPORT CUresult cuEventSynchronize(CUevent e) { SYNCHRONISED(cuEventSynchronize, (e)); }

/* A destroyed stream's handle is invalid: the compute sampler covers its work and forgets it
 * first (its pending work still runs, and is still counted). */
EXPORT CUresult cuStreamDestroy_v2(CUstream s) {
    hami_init();
    REAL_OR_FAIL(cuStreamDestroy_v2);
    hami_sample_stream_gone(s);
    return hami_real.cuStreamDestroy_v2(s);
}

/* ---- graphs: an executable graph's allocation nodes are charged from instantiation ---- */

static CUresult instantiated(CUresult rc, CUgraphExec *exec, CUgraph graph) {
    if (rc != CUDA_SUCCESS || exec == NULL) return rc;
    CUresult charged = hami_graph_instantiated(*exec, graph);
    if (charged != CUDA_SUCCESS) {
        if (hami_real.cuGraphExecDestroy != NULL) hami_real.cuGraphExecDestroy(*exec);
        *exec = NULL;
    }
    return charged;
}

EXPORT CUresult cuGraphInstantiateWithFlags(CUgraphExec *exec, CUgraph graph,
                                            unsigned long long flags) {
    hami_init();
    REAL_OR_FAIL(cuGraphInstantiateWithFlags);
    return instantiated(hami_real.cuGraphInstantiateWithFlags(exec, graph, flags), exec, graph);
}

EXPORT CUresult cuGraphInstantiateWithParams(CUgraphExec *exec, CUgraph graph,
                                             CUDA_GRAPH_INSTANTIATE_PARAMS *params) {
    hami_init();
    REAL_OR_FAIL(cuGraphInstantiateWithParams);
    return instantiated(hami_real.cuGraphInstantiateWithParams(exec, graph, params), exec, graph);
}

EXPORT CUresult cuGraphInstantiateWithParams_ptsz(CUgraphExec *exec, CUgraph graph,
                                                  CUDA_GRAPH_INSTANTIATE_PARAMS *params) {
    hami_init();
    REAL_OR_FAIL(cuGraphInstantiateWithParams_ptsz);
    return instantiated(hami_real.cuGraphInstantiateWithParams_ptsz(exec, graph, params), exec,
                        graph);
}

EXPORT CUresult cuGraphInstantiate(CUgraphExec *exec, CUgraph graph, CUgraphNode *error_node,
                                   char *log, size_t log_size) {
    hami_init();
    REAL_OR_FAIL(cuGraphInstantiate);
    return instantiated(hami_real.cuGraphInstantiate(exec, graph, error_node, log, log_size), exec,
                        graph);
}

EXPORT CUresult cuGraphInstantiate_v2(CUgraphExec *exec, CUgraph graph, CUgraphNode *error_node,
                                      char *log, size_t log_size) {
    hami_init();
    REAL_OR_FAIL(cuGraphInstantiate_v2);
    return instantiated(hami_real.cuGraphInstantiate_v2(exec, graph, error_node, log, log_size),
                        exec, graph);
}

EXPORT CUresult cuGraphExecDestroy(CUgraphExec exec) {
    hami_init();
    REAL_OR_FAIL(cuGraphExecDestroy);
    CUresult rc = hami_real.cuGraphExecDestroy(exec);
    if (rc == CUDA_SUCCESS) hami_graph_destroyed(exec);
    return rc;
}

EXPORT CUresult cuDeviceGraphMemTrim(CUdevice dev) {
    hami_init();
    REAL_OR_FAIL(cuDeviceGraphMemTrim);
    CUresult rc = hami_real.cuDeviceGraphMemTrim(dev);
    if (rc == CUDA_SUCCESS) hami_graph_trimmed(device_index(dev));
    return rc;
}
