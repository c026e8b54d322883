/* Memory and launch hooks. Memory: reserve in the shared region first, then allocate; roll the
 * reservation back if the driver fails. Launch: wait while the compute budget is spent. */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "throttle.h"
#include "track.h"
#include "vgpu.h"

#define EXPORT __attribute__((visibility("default")))
#define SMALL_ALIGN 512ULL
#define PAGE (2ULL << 20)

int hami_current_device(void) {
    CUdevice dev = 0;
    if (hami_real.cuCtxGetDevice == NULL || hami_real.cuCtxGetDevice(&dev) != CUDA_SUCCESS) return 0;
    return dev >= 0 && dev < HAMI_MAX_DEVICES ? dev : 0;
}

/* Larger than any device: refused whatever the limit, so no size can wrap the arithmetic
 * below or the region's counters. */
#define MAX_CHARGE (1ULL << 50)
#define TOO_LARGE UINT64_MAX

/* What the driver really takes: small blocks are packed, large ones use 2 MiB pages. */
static uint64_t charged_bytes(uint64_t bytes) {
    if (bytes > MAX_CHARGE) return TOO_LARGE;
    uint64_t align = bytes < PAGE ? SMALL_ALIGN : PAGE;
    return (bytes + align - 1) / align * align;
}

/* a * b, or TOO_LARGE when it overflows or passes MAX_CHARGE. */
static uint64_t product(uint64_t a, uint64_t b) {
    uint64_t p;
    return __builtin_mul_overflow(a, b, &p) || p > MAX_CHARGE ? TOO_LARGE : p;
}

static void charge_context_once(int dev) {
    static __thread int charged_pid[HAMI_MAX_DEVICES];
    int pid = getpid();
    if (hami.context_reserve == 0 || hami.region == NULL || charged_pid[dev] == pid) return;
    charged_pid[dev] = pid;
    /* The context's own memory is charged to the process whatever the limit says: it exists. */
    hami_region_reserve(hami.region, dev, hami.context_reserve, 0, 0);
}

/* Reserve before allocating. Returns CUDA_SUCCESS with *oversub telling which counter was used,
 * or CUDA_ERROR_OUT_OF_MEMORY when neither the limit nor oversubscription allows it. */
static CUresult reserve(int dev, uint64_t bytes, int *oversub) {
    const struct hami_limits *l = &hami.limits;
    *oversub = 0;
    if (l->memory_invalid[dev]) return CUDA_ERROR_OUT_OF_MEMORY; /* fail closed, logged at init */
    if (bytes == TOO_LARGE) return CUDA_ERROR_OUT_OF_MEMORY;     /* no device has this much */
    if (hami.region == NULL) return l->memory[dev] == 0 ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY;
    charge_context_once(dev);
    if (hami_region_reserve(hami.region, dev, bytes, l->memory[dev], 0) == 0) return CUDA_SUCCESS;
    if (l->oversubscribe && hami_region_reserve(hami.region, dev, bytes, 0, 1) == 0) {
        *oversub = 1;
        return CUDA_SUCCESS;
    }
    LOG_INFO("device %d: %llu bytes refused (limit %llu)", dev, (unsigned long long)bytes,
             (unsigned long long)l->memory[dev]);
    return CUDA_ERROR_OUT_OF_MEMORY;
}

static void unreserve(int dev, uint64_t bytes, int oversub) {
    if (hami.region != NULL) hami_region_release(hami.region, dev, bytes, oversub);
}

static void forget(uint64_t key) {
    struct hami_alloc a;
    if (hami_track_take(key, &a)) unreserve(a.dev, a.bytes, a.oversub);
}

/* One shape for every device-pointer allocation path. Past the limit with oversubscription,
 * the memory comes from cuMemAllocManaged (host-backed, migrates on demand) instead. */
#define ALLOCATE(dptr, bytes, call)                                                               \
    do {                                                                                          \
        hami_init();                                                                              \
        if ((dptr) == NULL || (bytes) == 0) return (call);                                       \
        int dev_ = hami_current_device(), over_ = 0;                                              \
        uint64_t charge_ = charged_bytes(bytes);                                                  \
        CUresult rc_ = reserve(dev_, charge_, &over_);                                            \
        if (rc_ != CUDA_SUCCESS) return rc_;                                                      \
        rc_ = over_ && hami_real.cuMemAllocManaged != NULL                                        \
                  ? hami_real.cuMemAllocManaged((dptr), (bytes), CU_MEM_ATTACH_GLOBAL)             \
                  : (call);                                                                       \
        if (rc_ != CUDA_SUCCESS) {                                                                \
            unreserve(dev_, charge_, over_);                                                      \
            return rc_;                                                                           \
        }                                                                                         \
        hami_track_put((uint64_t)*(dptr), (struct hami_alloc){charge_, dev_, over_, 0, 0});       \
        return rc_;                                                                               \
    } while (0)

#define REAL_OR_FAIL(name)                                                                        \
    if (hami_real.name == NULL) return CUDA_ERROR_NOT_INITIALIZED

EXPORT CUresult cuMemAlloc_v2(CUdeviceptr *dptr, size_t bytes) {
    hami_init();
    REAL_OR_FAIL(cuMemAlloc_v2);
    ALLOCATE(dptr, bytes, hami_real.cuMemAlloc_v2(dptr, bytes));
}

EXPORT CUresult cuMemAllocManaged(CUdeviceptr *dptr, size_t bytes, unsigned int flags) {
    hami_init();
    REAL_OR_FAIL(cuMemAllocManaged);
    ALLOCATE(dptr, bytes, hami_real.cuMemAllocManaged(dptr, bytes, flags));
}

EXPORT CUresult cuMemAllocAsync(CUdeviceptr *dptr, size_t bytes, CUstream s) {
    hami_init();
    REAL_OR_FAIL(cuMemAllocAsync);
    ALLOCATE(dptr, bytes, hami_real.cuMemAllocAsync(dptr, bytes, s));
}

EXPORT CUresult cuMemAllocAsync_ptsz(CUdeviceptr *dptr, size_t bytes, CUstream s) {
    hami_init();
    REAL_OR_FAIL(cuMemAllocAsync_ptsz);
    ALLOCATE(dptr, bytes, hami_real.cuMemAllocAsync_ptsz(dptr, bytes, s));
}

EXPORT CUresult cuMemAllocFromPoolAsync(CUdeviceptr *dptr, size_t bytes, CUmemoryPool pool,
                                        CUstream s) {
    hami_init();
    REAL_OR_FAIL(cuMemAllocFromPoolAsync);
    ALLOCATE(dptr, bytes, hami_real.cuMemAllocFromPoolAsync(dptr, bytes, pool, s));
}

EXPORT CUresult cuMemAllocFromPoolAsync_ptsz(CUdeviceptr *dptr, size_t bytes, CUmemoryPool pool,
                                             CUstream s) {
    hami_init();
    REAL_OR_FAIL(cuMemAllocFromPoolAsync_ptsz);
    ALLOCATE(dptr, bytes, hami_real.cuMemAllocFromPoolAsync_ptsz(dptr, bytes, pool, s));
}

EXPORT CUresult cuMemAllocPitch_v2(CUdeviceptr *dptr, size_t *pitch, size_t width, size_t height,
                                   unsigned int elem) {
    hami_init();
    REAL_OR_FAIL(cuMemAllocPitch_v2);
    if (dptr == NULL || pitch == NULL || width == 0 || height == 0)
        return hami_real.cuMemAllocPitch_v2(dptr, pitch, width, height, elem);
    /* The pitch is only known afterwards: reserve the worst case (width rounded to 512). */
    uint64_t row = width > MAX_CHARGE ? TOO_LARGE : ((uint64_t)width + 511) / 512 * 512;
    uint64_t bytes = charged_bytes(product(row, height));
    int dev = hami_current_device(), over = 0;
    CUresult rc = reserve(dev, bytes, &over);
    if (rc != CUDA_SUCCESS) return rc;
    rc = hami_real.cuMemAllocPitch_v2(dptr, pitch, width, height, elem);
    if (rc != CUDA_SUCCESS) {
        unreserve(dev, bytes, over);
        return rc;
    }
    hami_track_put((uint64_t)*dptr, (struct hami_alloc){bytes, dev, over, 0, 0});
    return rc;
}

EXPORT CUresult cuMemFree_v2(CUdeviceptr dptr) {
    hami_init();
    REAL_OR_FAIL(cuMemFree_v2);
    CUresult rc = hami_real.cuMemFree_v2(dptr);
    if (rc == CUDA_SUCCESS) forget((uint64_t)dptr);
    return rc;
}

EXPORT CUresult cuMemFreeAsync(CUdeviceptr dptr, CUstream s) {
    hami_init();
    REAL_OR_FAIL(cuMemFreeAsync);
    CUresult rc = hami_real.cuMemFreeAsync(dptr, s);
    if (rc == CUDA_SUCCESS) forget((uint64_t)dptr);
    return rc;
}

EXPORT CUresult cuMemFreeAsync_ptsz(CUdeviceptr dptr, CUstream s) {
    hami_init();
    REAL_OR_FAIL(cuMemFreeAsync_ptsz);
    CUresult rc = hami_real.cuMemFreeAsync_ptsz(dptr, s);
    if (rc == CUDA_SUCCESS) forget((uint64_t)dptr);
    return rc;
}

/* Virtual memory management: the physical allocation is cuMemCreate; mapping it adds nothing. */
EXPORT CUresult cuMemCreate(CUmemGenericAllocationHandle *handle, size_t size,
                            const CUmemAllocationProp *prop, unsigned long long flags) {
    hami_init();
    REAL_OR_FAIL(cuMemCreate);
    if (handle == NULL || prop == NULL || size == 0 ||
        prop->location.type != CU_MEM_LOCATION_TYPE_DEVICE)
        return hami_real.cuMemCreate(handle, size, prop, flags);
    int dev = prop->location.id >= 0 && prop->location.id < HAMI_MAX_DEVICES ? prop->location.id : 0;
    int over = 0;
    CUresult rc = reserve(dev, size > MAX_CHARGE ? TOO_LARGE : size, &over);
    if (rc != CUDA_SUCCESS) return rc;
    if (over) { /* physical device memory cannot be host-backed here: refuse instead */
        unreserve(dev, size, over);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    rc = hami_real.cuMemCreate(handle, size, prop, flags);
    if (rc != CUDA_SUCCESS) {
        unreserve(dev, size, 0);
        return rc;
    }
    hami_track_put((uint64_t)*handle, (struct hami_alloc){size, dev, 0, 0, 0});
    return rc;
}

/* VMM: the physical memory lives until its handle is released AND its last mapping is gone
 * (releasing a handle that is still mapped is legal, and NVIDIA's samples do it): it stays
 * charged until both. Mappings are tracked by address, tagged apart from allocations. */
#define MAPPING_TAG (1ULL << 63)

static int released_now(struct hami_alloc *a, void *ctx) {
    (void)ctx;
    a->released = 1;
    return a->maps > 0; /* still mapped: keep it (and its charge) */
}

static int mapped_more(struct hami_alloc *a, void *delta) {
    a->maps += *(int *)delta;
    return !(a->released && a->maps <= 0);
}

EXPORT CUresult cuMemRelease(CUmemGenericAllocationHandle handle) {
    hami_init();
    REAL_OR_FAIL(cuMemRelease);
    CUresult rc = hami_real.cuMemRelease(handle);
    struct hami_alloc a;
    if (rc == CUDA_SUCCESS && hami_track_update((uint64_t)handle, released_now, NULL, &a) &&
        a.maps <= 0)
        unreserve(a.dev, a.bytes, a.oversub);
    return rc;
}

EXPORT CUresult cuMemMap(CUdeviceptr ptr, size_t size, size_t offset,
                         CUmemGenericAllocationHandle handle, unsigned long long flags) {
    hami_init();
    REAL_OR_FAIL(cuMemMap);
    CUresult rc = hami_real.cuMemMap(ptr, size, offset, handle, flags);
    int one = 1;
    struct hami_alloc a;
    if (rc == CUDA_SUCCESS && hami_track_update((uint64_t)handle, mapped_more, &one, &a))
        hami_track_put((uint64_t)ptr | MAPPING_TAG, (struct hami_alloc){(uint64_t)handle, -1, 0,
                                                                        0, 0});
    return rc;
}

EXPORT CUresult cuMemUnmap(CUdeviceptr ptr, size_t size) {
    hami_init();
    REAL_OR_FAIL(cuMemUnmap);
    CUresult rc = hami_real.cuMemUnmap(ptr, size);
    struct hami_alloc mapping, a;
    int minus = -1;
    if (rc == CUDA_SUCCESS && hami_track_take((uint64_t)ptr | MAPPING_TAG, &mapping) &&
        hami_track_update(mapping.bytes, mapped_more, &minus, &a) && a.released && a.maps <= 0)
        unreserve(a.dev, a.bytes, a.oversub);
    return rc;
}

static uint64_t format_bytes(CUarray_format format) {
    switch (format) {
    case CU_AD_FORMAT_UNSIGNED_INT8: case CU_AD_FORMAT_SIGNED_INT8: return 1;
    case CU_AD_FORMAT_UNSIGNED_INT16: case CU_AD_FORMAT_SIGNED_INT16: case CU_AD_FORMAT_HALF:
        return 2;
    default: return 4;
    }
}

static CUresult array_alloc(CUarray *arr, uint64_t bytes, CUresult (*make)(CUarray *, const void *),
                            const void *desc) {
    int dev = hami_current_device(), over = 0;
    bytes = charged_bytes(bytes);
    CUresult rc = reserve(dev, bytes, &over);
    if (rc != CUDA_SUCCESS) return rc;
    if (over) {
        unreserve(dev, bytes, over);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    rc = make(arr, desc);
    if (rc != CUDA_SUCCESS) {
        unreserve(dev, bytes, 0);
        return rc;
    }
    hami_track_put((uint64_t)(uintptr_t)*arr, (struct hami_alloc){bytes, dev, 0, 0, 0});
    return rc;
}

static CUresult make_2d(CUarray *arr, const void *desc) {
    return hami_real.cuArrayCreate_v2(arr, desc);
}
static CUresult make_3d(CUarray *arr, const void *desc) {
    return hami_real.cuArray3DCreate_v2(arr, desc);
}

EXPORT CUresult cuArrayCreate_v2(CUarray *arr, const CUDA_ARRAY_DESCRIPTOR *desc) {
    hami_init();
    REAL_OR_FAIL(cuArrayCreate_v2);
    if (arr == NULL || desc == NULL) return hami_real.cuArrayCreate_v2(arr, desc);
    uint64_t bytes = product(product(product(desc->Width, desc->Height ? desc->Height : 1),
                                     desc->NumChannels),
                             format_bytes(desc->Format));
    return array_alloc(arr, bytes, make_2d, desc);
}

EXPORT CUresult cuArray3DCreate_v2(CUarray *arr, const CUDA_ARRAY3D_DESCRIPTOR *desc) {
    hami_init();
    REAL_OR_FAIL(cuArray3DCreate_v2);
    if (arr == NULL || desc == NULL) return hami_real.cuArray3DCreate_v2(arr, desc);
    uint64_t plane = product(desc->Width, desc->Height ? desc->Height : 1);
    uint64_t bytes = product(product(product(plane, desc->Depth ? desc->Depth : 1),
                                     desc->NumChannels),
                             format_bytes(desc->Format));
    return array_alloc(arr, bytes, make_3d, desc);
}

EXPORT CUresult cuArrayDestroy(CUarray arr) {
    hami_init();
    REAL_OR_FAIL(cuArrayDestroy);
    CUresult rc = hami_real.cuArrayDestroy(arr);
    if (rc == CUDA_SUCCESS) forget((uint64_t)(uintptr_t)arr);
    return rc;
}

/* ---- what the job is told about memory ---- */

static uint64_t container_used(int dev) {
    if (hami.region == NULL) return 0;
    hami_region_lock(hami.region);
    uint64_t used = hami_region_used(hami.region, dev);
    hami_region_unlock(hami.region);
    return used;
}

EXPORT CUresult cuMemGetInfo_v2(size_t *free_bytes, size_t *total_bytes) {
    hami_init();
    REAL_OR_FAIL(cuMemGetInfo_v2);
    CUresult rc = hami_real.cuMemGetInfo_v2(free_bytes, total_bytes);
    int dev = hami_current_device();
    uint64_t limit = hami.limits.memory[dev];
    if (rc != CUDA_SUCCESS || free_bytes == NULL || total_bytes == NULL || limit == 0) return rc;
    uint64_t used = container_used(dev);
    uint64_t left = used >= limit ? 0 : limit - used;
    *total_bytes = limit < *total_bytes ? limit : *total_bytes;
    *free_bytes = left < *free_bytes ? left : *free_bytes; /* never more than the card has free */
    return rc;
}

EXPORT CUresult cuDeviceTotalMem_v2(size_t *bytes, CUdevice dev) {
    hami_init();
    REAL_OR_FAIL(cuDeviceTotalMem_v2);
    CUresult rc = hami_real.cuDeviceTotalMem_v2(bytes, dev);
    if (rc == CUDA_SUCCESS && bytes != NULL && dev >= 0 && dev < HAMI_MAX_DEVICES) {
        uint64_t limit = hami.limits.memory[dev];
        if (limit != 0 && limit < *bytes) *bytes = limit;
    }
    return rc;
}

/* ---- launches ---- */

#define LAUNCH(stream, call)                                                                      \
    do {                                                                                          \
        hami_init();                                                                              \
        if (hami.limits.sm_invalid) return CUDA_ERROR_NOT_PERMITTED;                              \
        if (hami.throttle) hami_throttle_launch(stream);                                          \
        CUresult rc_ = (call);                                                                    \
        if (hami.throttle && rc_ == CUDA_SUCCESS) hami_sample_after_launch(stream);               \
        return rc_;                                                                               \
    } while (0)

EXPORT CUresult cuLaunchKernel(CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz,
                               unsigned int bx, unsigned int by, unsigned int bz,
                               unsigned int shmem, CUstream s, void **params, void **extra) {
    hami_init();
    REAL_OR_FAIL(cuLaunchKernel);
    LAUNCH(s, hami_real.cuLaunchKernel(f, gx, gy, gz, bx, by, bz, shmem, s, params, extra));
}

EXPORT CUresult cuLaunchKernel_ptsz(CUfunction f, unsigned int gx, unsigned int gy,
                                    unsigned int gz, unsigned int bx, unsigned int by,
                                    unsigned int bz, unsigned int shmem, CUstream s,
                                    void **params, void **extra) {
    hami_init();
    REAL_OR_FAIL(cuLaunchKernel_ptsz);
    LAUNCH(s, hami_real.cuLaunchKernel_ptsz(f, gx, gy, gz, bx, by, bz, shmem, s, params, extra));
}

EXPORT CUresult cuLaunchKernelEx(const CUlaunchConfig *config, CUfunction f, void **params,
                                 void **extra) {
    hami_init();
    REAL_OR_FAIL(cuLaunchKernelEx);
    LAUNCH(config ? config->hStream : NULL, hami_real.cuLaunchKernelEx(config, f, params, extra));
}

EXPORT CUresult cuLaunchKernelEx_ptsz(const CUlaunchConfig *config, CUfunction f, void **params,
                                      void **extra) {
    hami_init();
    REAL_OR_FAIL(cuLaunchKernelEx_ptsz);
    LAUNCH(config ? config->hStream : NULL,
           hami_real.cuLaunchKernelEx_ptsz(config, f, params, extra));
}

EXPORT CUresult cuLaunchCooperativeKernel(CUfunction f, unsigned int gx, unsigned int gy,
                                          unsigned int gz, unsigned int bx, unsigned int by,
                                          unsigned int bz, unsigned int shmem, CUstream s,
                                          void **params) {
    hami_init();
    REAL_OR_FAIL(cuLaunchCooperativeKernel);
    LAUNCH(s, hami_real.cuLaunchCooperativeKernel(f, gx, gy, gz, bx, by, bz, shmem, s, params));
}

EXPORT CUresult cuLaunchCooperativeKernel_ptsz(CUfunction f, unsigned int gx, unsigned int gy,
                                               unsigned int gz, unsigned int bx, unsigned int by,
                                               unsigned int bz, unsigned int shmem, CUstream s,
                                               void **params) {
    hami_init();
    REAL_OR_FAIL(cuLaunchCooperativeKernel_ptsz);
    LAUNCH(s, hami_real.cuLaunchCooperativeKernel_ptsz(f, gx, gy, gz, bx, by, bz, shmem, s,
                                                        params));
}

EXPORT CUresult cuGraphLaunch(CUgraphExec g, CUstream s) {
    hami_init();
    REAL_OR_FAIL(cuGraphLaunch);
    LAUNCH(s, hami_real.cuGraphLaunch(g, s));
}

EXPORT CUresult cuGraphLaunch_ptsz(CUgraphExec g, CUstream s) {
    hami_init();
    REAL_OR_FAIL(cuGraphLaunch_ptsz);
    LAUNCH(s, hami_real.cuGraphLaunch_ptsz(g, s));
}

/* ---- the pre-3.2 generation ----
 * libcuda still exports cuMemAlloc, cuMemAllocPitch, cuArrayCreate, cuArray3DCreate,
 * cuMemGetInfo and cuDeviceTotalMem with 32-bit sizes and pointers (cuda.h maps the names to
 * the _v2 functions for everything compiled since CUDA 3.2). Reached by dlsym or
 * cuGetProcAddress with an old version, they would take memory uncharged: refused instead. */

static CUresult legacy(const char *name) {
    static int told;
    if (!__atomic_exchange_n(&told, 1, __ATOMIC_RELAXED))
        LOG_ERROR("%s (the pre-CUDA-3.2 entry point) is refused under HAMi; use the _v2 API", name);
    return CUDA_ERROR_NOT_SUPPORTED;
}

EXPORT CUresult cuMemAlloc(CUdeviceptr_v1 *dptr, unsigned int bytes) {
    (void)dptr, (void)bytes;
    return legacy("cuMemAlloc");
}
EXPORT CUresult cuMemAllocPitch(CUdeviceptr_v1 *dptr, unsigned int *pitch, unsigned int width,
                                unsigned int height, unsigned int elem) {
    (void)dptr, (void)pitch, (void)width, (void)height, (void)elem;
    return legacy("cuMemAllocPitch");
}
EXPORT CUresult cuArrayCreate(CUarray *arr, const CUDA_ARRAY_DESCRIPTOR_v1 *desc) {
    (void)arr, (void)desc;
    return legacy("cuArrayCreate");
}
EXPORT CUresult cuArray3DCreate(CUarray *arr, const CUDA_ARRAY3D_DESCRIPTOR_v1 *desc) {
    (void)arr, (void)desc;
    return legacy("cuArray3DCreate");
}
EXPORT CUresult cuMemGetInfo(unsigned int *free_bytes, unsigned int *total_bytes) {
    (void)free_bytes, (void)total_bytes;
    return legacy("cuMemGetInfo");
}
EXPORT CUresult cuDeviceTotalMem(unsigned int *bytes, CUdevice dev) {
    (void)bytes, (void)dev;
    return legacy("cuDeviceTotalMem");
}
