/* The one list of intercepted entry points. Each X-macro row generates the function-pointer
 * type, the slot for the real function, the name table and the dispatch table used by dlsym
 * and cuGetProcAddress. A hook body is written once, by hand, in cuda_hooks.c / nvml_hooks.c. */
#ifndef HAMI_HOOKS_H
#define HAMI_HOOKS_H

#define __CUDA_API_VERSION_INTERNAL 1
#include <cuda.h>
#include <nvml.h>

/* X(name, return type, parameter list, argument list) */
#define HAMI_CUDA_HOOKS(X)                                                                        \
    X(cuMemAlloc_v2, CUresult, (CUdeviceptr *dptr, size_t bytes), (dptr, bytes))                \
    X(cuMemAllocPitch_v2, CUresult,                                                              \
      (CUdeviceptr *dptr, size_t *pitch, size_t width, size_t height, unsigned int elem),        \
      (dptr, pitch, width, height, elem))                                                        \
    X(cuMemAllocManaged, CUresult, (CUdeviceptr *dptr, size_t bytes, unsigned int flags),        \
      (dptr, bytes, flags))                                                                      \
    X(cuMemAllocAsync, CUresult, (CUdeviceptr *dptr, size_t bytes, CUstream s), (dptr, bytes, s)) \
    X(cuMemAllocAsync_ptsz, CUresult, (CUdeviceptr *dptr, size_t bytes, CUstream s),             \
      (dptr, bytes, s))                                                                          \
    X(cuMemAllocFromPoolAsync, CUresult,                                                         \
      (CUdeviceptr *dptr, size_t bytes, CUmemoryPool pool, CUstream s), (dptr, bytes, pool, s))  \
    X(cuMemAllocFromPoolAsync_ptsz, CUresult,                                                    \
      (CUdeviceptr *dptr, size_t bytes, CUmemoryPool pool, CUstream s), (dptr, bytes, pool, s))  \
    X(cuMemFree_v2, CUresult, (CUdeviceptr dptr), (dptr))                                        \
    X(cuMemFreeAsync, CUresult, (CUdeviceptr dptr, CUstream s), (dptr, s))                       \
    X(cuMemFreeAsync_ptsz, CUresult, (CUdeviceptr dptr, CUstream s), (dptr, s))                  \
    X(cuMemCreate, CUresult,                                                                     \
      (CUmemGenericAllocationHandle *handle, size_t size, const CUmemAllocationProp *prop,       \
       unsigned long long flags),                                                                \
      (handle, size, prop, flags))                                                               \
    X(cuMemRelease, CUresult, (CUmemGenericAllocationHandle handle), (handle))                   \
    X(cuMemMap, CUresult,                                                                        \
      (CUdeviceptr ptr, size_t size, size_t offset, CUmemGenericAllocationHandle handle,         \
       unsigned long long flags),                                                                \
      (ptr, size, offset, handle, flags))                                                        \
    X(cuMemUnmap, CUresult, (CUdeviceptr ptr, size_t size), (ptr, size))                         \
    X(cuArrayCreate_v2, CUresult, (CUarray *arr, const CUDA_ARRAY_DESCRIPTOR *desc), (arr, desc)) \
    X(cuArray3DCreate_v2, CUresult, (CUarray *arr, const CUDA_ARRAY3D_DESCRIPTOR *desc),         \
      (arr, desc))                                                                               \
    X(cuArrayDestroy, CUresult, (CUarray arr), (arr))                                            \
    X(cuMipmappedArrayCreate, CUresult,                                                          \
      (CUmipmappedArray *handle, const CUDA_ARRAY3D_DESCRIPTOR *desc, unsigned int levels),      \
      (handle, desc, levels))                                                                    \
    X(cuMipmappedArrayDestroy, CUresult, (CUmipmappedArray handle), (handle))                    \
    X(cuCtxSetLimit, CUresult, (CUlimit which, size_t value), (which, value))                    \
    X(cuDevicePrimaryCtxRetain, CUresult, (CUcontext *ctx, CUdevice dev), (ctx, dev))            \
    X(cuCtxCreate, CUresult, (CUcontext *ctx, unsigned int flags, CUdevice dev), (ctx, flags, dev)) \
    X(cuCtxCreate_v2, CUresult, (CUcontext *ctx, unsigned int flags, CUdevice dev),              \
      (ctx, flags, dev))                                                                         \
    X(cuCtxCreate_v3, CUresult,                                                                  \
      (CUcontext *ctx, CUexecAffinityParam *params, int n, unsigned int flags, CUdevice dev),    \
      (ctx, params, n, flags, dev))                                                              \
    X(cuCtxCreate_v4, CUresult,                                                                  \
      (CUcontext *ctx, CUctxCreateParams *params, unsigned int flags, CUdevice dev),             \
      (ctx, params, flags, dev))                                                                 \
    X(cuMemPoolCreate, CUresult, (CUmemoryPool *pool, const CUmemPoolProps *props), (pool, props)) \
    X(cuMemPoolDestroy, CUresult, (CUmemoryPool pool), (pool))                                   \
    X(cuMemPoolTrimTo, CUresult, (CUmemoryPool pool, size_t keep), (pool, keep))                 \
    X(cuMemPoolSetAttribute, CUresult, (CUmemoryPool pool, CUmemPool_attribute attr, void *value), \
      (pool, attr, value))                                                                       \
    X(cuCtxSynchronize, CUresult, (void), ())                                                    \
    X(cuStreamSynchronize, CUresult, (CUstream s), (s))                                          \
    X(cuStreamSynchronize_ptsz, CUresult, (CUstream s), (s))                                     \
    X(cuStreamDestroy_v2, CUresult, (CUstream s), (s))                                           \
    X(cuEventSynchronize, CUresult, (CUevent e), (e))                                            \
    X(cuGraphInstantiateWithFlags, CUresult,                                                     \
      (CUgraphExec *exec, CUgraph graph, unsigned long long flags), (exec, graph, flags))        \
    X(cuGraphInstantiateWithParams, CUresult,                                                    \
      (CUgraphExec *exec, CUgraph graph, CUDA_GRAPH_INSTANTIATE_PARAMS *params),                 \
      (exec, graph, params))                                                                     \
    X(cuGraphInstantiateWithParams_ptsz, CUresult,                                               \
      (CUgraphExec *exec, CUgraph graph, CUDA_GRAPH_INSTANTIATE_PARAMS *params),                 \
      (exec, graph, params))                                                                     \
    X(cuGraphInstantiate, CUresult,                                                              \
      (CUgraphExec *exec, CUgraph graph, CUgraphNode *error_node, char *log, size_t log_size),   \
      (exec, graph, error_node, log, log_size))                                                  \
    X(cuGraphInstantiate_v2, CUresult,                                                           \
      (CUgraphExec *exec, CUgraph graph, CUgraphNode *error_node, char *log, size_t log_size),   \
      (exec, graph, error_node, log, log_size))                                                  \
    X(cuGraphExecDestroy, CUresult, (CUgraphExec exec), (exec))                                  \
    X(cuDeviceGraphMemTrim, CUresult, (CUdevice dev), (dev))                                     \
    X(cuMemGetInfo_v2, CUresult, (size_t *free_bytes, size_t *total_bytes),                      \
      (free_bytes, total_bytes))                                                                 \
    X(cuDeviceTotalMem_v2, CUresult, (size_t *bytes, CUdevice dev), (bytes, dev))                \
    /* The pre-3.2 generation, still exported by libcuda with 32-bit sizes: refused (cuda_hooks.c). */ \
    X(cuMemAlloc, CUresult, (CUdeviceptr_v1 *dptr, unsigned int bytes), (dptr, bytes))         \
    X(cuMemAllocPitch, CUresult,                                                                 \
      (CUdeviceptr_v1 *dptr, unsigned int *pitch, unsigned int width, unsigned int height,       \
       unsigned int elem),                                                                       \
      (dptr, pitch, width, height, elem))                                                        \
    X(cuArrayCreate, CUresult, (CUarray *arr, const CUDA_ARRAY_DESCRIPTOR_v1 *desc), (arr, desc)) \
    X(cuArray3DCreate, CUresult, (CUarray *arr, const CUDA_ARRAY3D_DESCRIPTOR_v1 *desc),         \
      (arr, desc))                                                                               \
    X(cuMemGetInfo, CUresult, (unsigned int *free_bytes, unsigned int *total_bytes),             \
      (free_bytes, total_bytes))                                                                 \
    X(cuDeviceTotalMem, CUresult, (unsigned int *bytes, CUdevice dev), (bytes, dev))             \
    X(cuLaunchKernel, CUresult,                                                                  \
      (CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx,         \
       unsigned int by, unsigned int bz, unsigned int shmem, CUstream s, void **params,          \
       void **extra),                                                                            \
      (f, gx, gy, gz, bx, by, bz, shmem, s, params, extra))                                      \
    X(cuLaunchKernel_ptsz, CUresult,                                                             \
      (CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx,         \
       unsigned int by, unsigned int bz, unsigned int shmem, CUstream s, void **params,          \
       void **extra),                                                                            \
      (f, gx, gy, gz, bx, by, bz, shmem, s, params, extra))                                      \
    X(cuLaunchKernelEx, CUresult,                                                                \
      (const CUlaunchConfig *config, CUfunction f, void **params, void **extra),                 \
      (config, f, params, extra))                                                                \
    X(cuLaunchKernelEx_ptsz, CUresult,                                                           \
      (const CUlaunchConfig *config, CUfunction f, void **params, void **extra),                 \
      (config, f, params, extra))                                                                \
    X(cuLaunchCooperativeKernel, CUresult,                                                       \
      (CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx,         \
       unsigned int by, unsigned int bz, unsigned int shmem, CUstream s, void **params),         \
      (f, gx, gy, gz, bx, by, bz, shmem, s, params))                                             \
    X(cuLaunchCooperativeKernel_ptsz, CUresult,                                                  \
      (CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx,         \
       unsigned int by, unsigned int bz, unsigned int shmem, CUstream s, void **params),         \
      (f, gx, gy, gz, bx, by, bz, shmem, s, params))                                             \
    X(cuLaunch, CUresult, (CUfunction f), (f))                                                   \
    X(cuLaunchGrid, CUresult, (CUfunction f, int w, int h), (f, w, h))                           \
    X(cuLaunchGridAsync, CUresult, (CUfunction f, int w, int h, CUstream s), (f, w, h, s))       \
    X(cuLaunchCooperativeKernelMultiDevice, CUresult,                                            \
      (CUDA_LAUNCH_PARAMS *list, unsigned int n, unsigned int flags), (list, n, flags))          \
    X(cuGraphLaunch, CUresult, (CUgraphExec g, CUstream s), (g, s))                              \
    X(cuStreamBeginCapture, CUresult, (CUstream s), (s))                                         \
    X(cuStreamBeginCapture_ptsz, CUresult, (CUstream s), (s))                                    \
    X(cuStreamBeginCapture_v2, CUresult, (CUstream s, CUstreamCaptureMode mode), (s, mode))      \
    X(cuStreamBeginCapture_v2_ptsz, CUresult, (CUstream s, CUstreamCaptureMode mode), (s, mode)) \
    X(cuStreamBeginCaptureToGraph, CUresult,                                                     \
      (CUstream s, CUgraph g, const CUgraphNode *deps, const CUgraphEdgeData *edges, size_t n,   \
       CUstreamCaptureMode mode),                                                                \
      (s, g, deps, edges, n, mode))                                                              \
    X(cuStreamBeginCaptureToGraph_ptsz, CUresult,                                                \
      (CUstream s, CUgraph g, const CUgraphNode *deps, const CUgraphEdgeData *edges, size_t n,   \
       CUstreamCaptureMode mode),                                                                \
      (s, g, deps, edges, n, mode))                                                              \
    X(cuStreamEndCapture, CUresult, (CUstream s, CUgraph *g), (s, g))                            \
    X(cuStreamEndCapture_ptsz, CUresult, (CUstream s, CUgraph *g), (s, g))                       \
    X(cuGraphLaunch_ptsz, CUresult, (CUgraphExec g, CUstream s), (g, s))                         \
    X(cuGetProcAddress, CUresult,                                                                \
      (const char *symbol, void **pfn, int version, cuuint64_t flags),                           \
      (symbol, pfn, version, flags))                                                             \
    X(cuGetProcAddress_v2, CUresult,                                                             \
      (const char *symbol, void **pfn, int version, cuuint64_t flags,                            \
       CUdriverProcAddressQueryResult *status),                                                  \
      (symbol, pfn, version, flags, status))

#define HAMI_NVML_HOOKS(X)                                                                        \
    X(nvmlDeviceGetMemoryInfo, nvmlReturn_t, (nvmlDevice_t d, nvmlMemory_t *m), (d, m))          \
    X(nvmlDeviceGetMemoryInfo_v2, nvmlReturn_t, (nvmlDevice_t d, nvmlMemory_v2_t *m), (d, m))

/* Driver functions the hooks call but do not intercept. */
#define HAMI_CUDA_USES(X)                                                                         \
    X(cuCtxGetDevice, CUresult, (CUdevice *dev), (dev))                                          \
    X(cuEventCreate, CUresult, (CUevent *e, unsigned int flags), (e, flags))                     \
    X(cuEventRecord, CUresult, (CUevent e, CUstream s), (e, s))                                  \
    X(cuEventQuery, CUresult, (CUevent e), (e))                                                  \
    X(cuEventElapsedTime, CUresult, (float *ms, CUevent a, CUevent b), (ms, a, b))               \
    X(cuEventDestroy_v2, CUresult, (CUevent e), (e))                                             \
    X(cuThreadExchangeStreamCaptureMode, CUresult, (CUstreamCaptureMode *mode), (mode))          \
    X(cuStreamIsCapturing, CUresult, (CUstream s, CUstreamCaptureStatus *status), (s, status))   \
    X(cuStreamQuery, CUresult, (CUstream s), (s))                                                \
    X(cuStreamGetDevice, CUresult, (CUstream s, CUdevice *dev), (s, dev))                        \
    X(cuDeviceGetCount, CUresult, (int *count), (count))                                         \
    X(cuDeviceGetAttribute, CUresult, (int *v, CUdevice_attribute attr, CUdevice dev),           \
      (v, attr, dev))                                                                            \
    X(cuCtxGetLimit, CUresult, (size_t *value, CUlimit which), (value, which))                   \
    X(cuDeviceGetMemPool, CUresult, (CUmemoryPool *pool, CUdevice dev), (pool, dev))             \
    X(cuDeviceGetDefaultMemPool, CUresult, (CUmemoryPool *pool, CUdevice dev), (pool, dev))      \
    X(cuMemPoolGetAttribute, CUresult, (CUmemoryPool pool, CUmemPool_attribute attr, void *value), \
      (pool, attr, value))                                                                       \
    X(cuGraphGetNodes, CUresult, (CUgraph g, CUgraphNode *nodes, size_t *n), (g, nodes, n))      \
    X(cuGraphNodeGetType, CUresult, (CUgraphNode node, CUgraphNodeType *type), (node, type))     \
    X(cuGraphMemAllocNodeGetParams, CUresult,                                                    \
      (CUgraphNode node, CUDA_MEM_ALLOC_NODE_PARAMS *params), (node, params))                    \
    X(cuGraphChildGraphNodeGetGraph, CUresult, (CUgraphNode node, CUgraph *g), (node, g))        \
    X(cuGraphNodeGetParams, CUresult, (CUgraphNode node, CUgraphNodeParams *params), (node, params)) \
    X(cuDeviceGetGraphMemAttribute, CUresult,                                                    \
      (CUdevice dev, CUgraphMem_attribute attr, void *value), (dev, attr, value))

#define HAMI_NVML_USES(X)                                                                         \
    X(nvmlDeviceGetUUID, nvmlReturn_t, (nvmlDevice_t d, char *uuid, unsigned int len),          \
      (d, uuid, len))                                                                            \
    X(nvmlDeviceGetIndex, nvmlReturn_t, (nvmlDevice_t d, unsigned int *index), (d, index))

#define HAMI_TYPEDEF(name, ret, params, args) typedef ret(*pfn_##name) params;
HAMI_CUDA_HOOKS(HAMI_TYPEDEF)
HAMI_NVML_HOOKS(HAMI_TYPEDEF)
HAMI_CUDA_USES(HAMI_TYPEDEF)
HAMI_NVML_USES(HAMI_TYPEDEF)
#undef HAMI_TYPEDEF

/* The real functions, resolved once from the driver libraries (NULL when absent). */
struct hami_real {
#define HAMI_SLOT(name, ret, params, args) pfn_##name name;
    HAMI_CUDA_HOOKS(HAMI_SLOT)
    HAMI_NVML_HOOKS(HAMI_SLOT)
    HAMI_CUDA_USES(HAMI_SLOT)
    HAMI_NVML_USES(HAMI_SLOT)
#undef HAMI_SLOT
};
extern struct hami_real hami_real;

/* Our hook for a symbol name, or NULL when we do not intercept it. */
void *hami_hook_for_name(const char *symbol);
/* Our hook for a real driver function pointer (what cuGetProcAddress handed out), or NULL. */
void *hami_hook_for_real(void *real);
/* Resolve the real functions once (pthread_once inside). */
void hami_init(void);

#endif
