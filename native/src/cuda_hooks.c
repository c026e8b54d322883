/* Device-memory hooks. Reserve in the shared region first, then allocate; roll the
 * reservation back if the driver fails. A free is uncharged exactly once: its entry leaves the
 * table before the driver frees (so an allocation on another thread that reuses the address
 * cannot be confused with it) and goes back if the driver refuses the free. */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cached.h"
#include "charge.h"
#include "log.h"
#include "track.h"
#include "vgpu.h"

#define EXPORT __attribute__((visibility("default")))

int hami_current_device(void) {
    CUdevice dev = 0;
    if (hami_real.cuCtxGetDevice == NULL || hami_real.cuCtxGetDevice(&dev) != CUDA_SUCCESS) return 0;
    return dev >= 0 && dev < HAMI_MAX_DEVICES ? dev : 0;
}

static void settle_free(const struct hami_alloc *a) {
    if (a->kind == HAMI_ALLOC_POOL) hami_pool_freed((CUmemoryPool)(uintptr_t)a->aux, a->dev, a->bytes);
    else hami_unreserve(a->dev, a->bytes, a->oversub);
}

/* After the driver's free: uncharge what was taken out of the table, or put it back. */
static CUresult freed(uint64_t key, int had, const struct hami_alloc *a, CUresult rc) {
    if (had && rc == CUDA_SUCCESS) settle_free(a);
    else if (had) hami_track_put(key, *a);
    return rc;
}

/* One shape for every device-pointer allocation path. Past the limit with oversubscription,
 * the memory comes from cuMemAllocManaged (host-backed, migrates on demand) instead. */
#define ALLOCATE(dev, dptr, bytes, call)                                                          \
    do {                                                                                          \
        if ((dptr) == NULL || (bytes) == 0) return (call);                                       \
        int dev_ = (dev), over_ = 0;                                                              \
        uint64_t charge_ = hami_charged_bytes(bytes);                                             \
        CUresult rc_ = hami_reserve(dev_, charge_, &over_);                                       \
        if (rc_ != CUDA_SUCCESS) return rc_;                                                      \
        rc_ = over_ && hami_real.cuMemAllocManaged != NULL                                        \
                  ? hami_real.cuMemAllocManaged((dptr), (bytes), CU_MEM_ATTACH_GLOBAL)             \
                  : (call);                                                                       \
        if (rc_ != CUDA_SUCCESS) {                                                                \
            hami_unreserve(dev_, charge_, over_);                                                 \
            return rc_;                                                                           \
        }                                                                                         \
        hami_track_put((uint64_t)*(dptr), (struct hami_alloc){charge_, dev_, over_, 0, 0, 0, 0}); \
        return rc_;                                                                               \
    } while (0)

#define REAL_OR_FAIL(name)                                                                        \
    if (hami_real.name == NULL) return CUDA_ERROR_NOT_INITIALIZED

EXPORT CUresult cuMemAlloc_v2(CUdeviceptr *dptr, size_t bytes) {
    hami_init();
    REAL_OR_FAIL(cuMemAlloc_v2);
    ALLOCATE(hami_current_device(), dptr, bytes, hami_real.cuMemAlloc_v2(dptr, bytes));
}

EXPORT CUresult cuMemAllocManaged(CUdeviceptr *dptr, size_t bytes, unsigned int flags) {
    hami_init();
    REAL_OR_FAIL(cuMemAllocManaged);
    ALLOCATE(hami_current_device(), dptr, bytes, hami_real.cuMemAllocManaged(dptr, bytes, flags));
}

/* Stream-ordered allocations: charged to the pool's device (the stream's device's current pool
 * for cuMemAllocAsync), and to the pool afterwards (cached.c), which keeps freed memory until
 * it gives it back. During stream capture nothing is allocated: the capture records an
 * allocation node, charged when the graph is instantiated. */
typedef CUresult (*pool_call)(CUdeviceptr *, size_t, CUmemoryPool, CUstream);

static CUresult pool_allocate(CUdeviceptr *dptr, size_t bytes, CUmemoryPool pool, CUstream s,
                              pool_call call) {
    if (dptr == NULL || bytes == 0 || hami_stream_capturing(s)) return call(dptr, bytes, pool, s);
    int dev = hami_stream_device(s), host = 0;
    CUmemoryPool charged_pool = pool;
    if (charged_pool == NULL && hami_real.cuDeviceGetMemPool != NULL &&
        hami_real.cuDeviceGetMemPool(&charged_pool, dev) != CUDA_SUCCESS)
        charged_pool = NULL;
    if (charged_pool != NULL) dev = hami_pool_device(charged_pool, &host);
    if (host) return call(dptr, bytes, pool, s); /* host memory: not the device's */
    uint64_t charge = hami_charged_bytes(bytes);
    /* The pool may serve it from memory it already holds (and we already charge); if it has to
     * grow instead, hami_pool_allocated sees that and the growth must fit as well. */
    uint64_t spare = charged_pool != NULL ? hami_pool_spare(charged_pool, dev) : 0;
    uint64_t first = charge == HAMI_TOO_LARGE ? charge : charge > spare ? charge - spare : 0;
    int over = 0;
    CUresult rc = first != 0 ? hami_reserve(dev, first, &over) : CUDA_SUCCESS;
    if (rc != CUDA_SUCCESS) return rc;
    if (over && hami_real.cuMemAllocManaged != NULL) {
        rc = hami_real.cuMemAllocManaged(dptr, bytes, CU_MEM_ATTACH_GLOBAL);
        if (rc != CUDA_SUCCESS) hami_unreserve(dev, first, over);
        else hami_track_put((uint64_t)*dptr, (struct hami_alloc){first, dev, 1, 0, 0, 0, 0});
        return rc;
    }
    rc = call(dptr, bytes, pool, s);
    if (rc != CUDA_SUCCESS) {
        hami_unreserve(dev, first, over);
        return rc;
    }
    int followed = charged_pool != NULL ? hami_pool_allocated(charged_pool, dev, charge, first) : 1;
    if (followed == 1) { /* no pool to follow: a plain allocation */
        hami_track_put((uint64_t)*dptr, (struct hami_alloc){first, dev, 0, 0, 0, 0, 0});
        return rc;
    }
    hami_track_put((uint64_t)*dptr, (struct hami_alloc){charge, dev, 0, 0, 0, HAMI_ALLOC_POOL,
                                                        (uint64_t)(uintptr_t)charged_pool});
    if (followed < 0) {
        /* The pool grew past the limit to serve this: undo it and give the growth back. */
        struct hami_alloc a;
        int had = hami_track_take((uint64_t)*dptr, &a);
        freed((uint64_t)*dptr, had, &a, hami_real.cuMemFreeAsync(*dptr, s));
        if (hami_real.cuStreamSynchronize != NULL) hami_real.cuStreamSynchronize(s);
        if (hami_real.cuMemPoolTrimTo != NULL) hami_real.cuMemPoolTrimTo(charged_pool, 0);
        hami_pool_changed(charged_pool);
        *dptr = 0;
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    return rc;
}

static CUresult async_plain(CUdeviceptr *d, size_t n, CUmemoryPool p, CUstream s) {
    (void)p;
    return hami_real.cuMemAllocAsync(d, n, s);
}
static CUresult async_ptsz(CUdeviceptr *d, size_t n, CUmemoryPool p, CUstream s) {
    (void)p;
    return hami_real.cuMemAllocAsync_ptsz(d, n, s);
}
static CUresult from_pool(CUdeviceptr *d, size_t n, CUmemoryPool p, CUstream s) {
    return hami_real.cuMemAllocFromPoolAsync(d, n, p, s);
}
static CUresult from_pool_ptsz(CUdeviceptr *d, size_t n, CUmemoryPool p, CUstream s) {
    return hami_real.cuMemAllocFromPoolAsync_ptsz(d, n, p, s);
}

EXPORT CUresult cuMemAllocAsync(CUdeviceptr *dptr, size_t bytes, CUstream s) {
    hami_init();
    REAL_OR_FAIL(cuMemAllocAsync);
    return pool_allocate(dptr, bytes, NULL, s, async_plain);
}

EXPORT CUresult cuMemAllocAsync_ptsz(CUdeviceptr *dptr, size_t bytes, CUstream s) {
    hami_init();
    REAL_OR_FAIL(cuMemAllocAsync_ptsz);
    return pool_allocate(dptr, bytes, NULL, s, async_ptsz);
}

EXPORT CUresult cuMemAllocFromPoolAsync(CUdeviceptr *dptr, size_t bytes, CUmemoryPool pool,
                                        CUstream s) {
    hami_init();
    REAL_OR_FAIL(cuMemAllocFromPoolAsync);
    return pool_allocate(dptr, bytes, pool, s, from_pool);
}

EXPORT CUresult cuMemAllocFromPoolAsync_ptsz(CUdeviceptr *dptr, size_t bytes, CUmemoryPool pool,
                                             CUstream s) {
    hami_init();
    REAL_OR_FAIL(cuMemAllocFromPoolAsync_ptsz);
    return pool_allocate(dptr, bytes, pool, s, from_pool_ptsz);
}

EXPORT CUresult cuMemAllocPitch_v2(CUdeviceptr *dptr, size_t *pitch, size_t width, size_t height,
                                   unsigned int elem) {
    hami_init();
    REAL_OR_FAIL(cuMemAllocPitch_v2);
    if (dptr == NULL || pitch == NULL || width == 0 || height == 0)
        return hami_real.cuMemAllocPitch_v2(dptr, pitch, width, height, elem);
    /* The pitch is only known afterwards: reserve the worst case (width rounded to 512). */
    uint64_t row = width > HAMI_MAX_CHARGE ? HAMI_TOO_LARGE : ((uint64_t)width + 511) / 512 * 512;
    uint64_t bytes = hami_charged_bytes(hami_product(row, height));
    int dev = hami_current_device(), over = 0;
    CUresult rc = hami_reserve(dev, bytes, &over);
    if (rc != CUDA_SUCCESS) return rc;
    if (over) {
        /* Past the limit nothing lands in device memory: the rows come from unified memory, at
         * the pitch we reserved for (a multiple of 512, as the driver's own). */
        rc = hami_real.cuMemAllocManaged != NULL
                 ? hami_real.cuMemAllocManaged(dptr, row * height, CU_MEM_ATTACH_GLOBAL)
                 : CUDA_ERROR_OUT_OF_MEMORY;
        if (rc == CUDA_SUCCESS) *pitch = row;
    } else {
        rc = hami_real.cuMemAllocPitch_v2(dptr, pitch, width, height, elem);
    }
    if (rc != CUDA_SUCCESS) {
        hami_unreserve(dev, bytes, over);
        return rc;
    }
    hami_track_put((uint64_t)*dptr, (struct hami_alloc){bytes, dev, over, 0, 0, 0, 0});
    return rc;
}

EXPORT CUresult cuMemFree_v2(CUdeviceptr dptr) {
    hami_init();
    REAL_OR_FAIL(cuMemFree_v2);
    struct hami_alloc a;
    int had = hami_track_take((uint64_t)dptr, &a);
    return freed((uint64_t)dptr, had, &a, hami_real.cuMemFree_v2(dptr));
}

/* A stream-ordered free of memory that came from unified memory (oversubscription) is a plain
 * free once the stream has finished with it: the pools never saw it. */
static CUresult free_async(CUdeviceptr dptr, CUstream s, CUresult (*call)(CUdeviceptr, CUstream)) {
    struct hami_alloc a;
    int had = hami_track_take((uint64_t)dptr, &a);
    if (had && a.oversub) {
        if (hami_real.cuStreamSynchronize != NULL) hami_real.cuStreamSynchronize(s);
        return freed((uint64_t)dptr, had, &a, hami_real.cuMemFree_v2(dptr));
    }
    return freed((uint64_t)dptr, had, &a, call(dptr, s));
}

EXPORT CUresult cuMemFreeAsync(CUdeviceptr dptr, CUstream s) {
    hami_init();
    REAL_OR_FAIL(cuMemFreeAsync);
    return free_async(dptr, s, hami_real.cuMemFreeAsync);
}

EXPORT CUresult cuMemFreeAsync_ptsz(CUdeviceptr dptr, CUstream s) {
    hami_init();
    REAL_OR_FAIL(cuMemFreeAsync_ptsz);
    return free_async(dptr, s, hami_real.cuMemFreeAsync_ptsz);
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
    uint64_t bytes = size > HAMI_MAX_CHARGE ? HAMI_TOO_LARGE : size;
    /* Physical device memory cannot be host-backed: no oversubscription here. */
    CUresult rc = hami_reserve(dev, bytes, NULL);
    if (rc != CUDA_SUCCESS) return rc;
    rc = hami_real.cuMemCreate(handle, size, prop, flags);
    if (rc != CUDA_SUCCESS) {
        hami_unreserve(dev, bytes, 0);
        return rc;
    }
    hami_track_put((uint64_t)*handle, (struct hami_alloc){bytes, dev, 0, 0, 0, 0, 0});
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
        hami_unreserve(a.dev, a.bytes, a.oversub);
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
        hami_track_put((uint64_t)ptr | MAPPING_TAG, (struct hami_alloc){.bytes = (uint64_t)handle,
                                                                        .dev = -1});
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
        hami_unreserve(a.dev, a.bytes, a.oversub);
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

static uint64_t at_least_one(uint64_t n) { return n ? n : 1; }

/* Bytes of a 1D/2D/3D (layered, cubemap) array: width x height x depth x channels x format. */
static uint64_t array_bytes(uint64_t w, uint64_t h, uint64_t d, unsigned channels,
                            CUarray_format format) {
    uint64_t plane = hami_product(at_least_one(w), at_least_one(h));
    return hami_product(hami_product(hami_product(plane, at_least_one(d)), channels),
                        format_bytes(format));
}

typedef CUresult (*make_fn)(void *out, const void *desc, unsigned levels);

static CUresult array_alloc(void *out, uint64_t key_of_out(void *), uint64_t bytes, make_fn make,
                            const void *desc, unsigned levels) {
    int dev = hami_current_device();
    bytes = hami_charged_bytes(bytes);
    CUresult rc = hami_reserve(dev, bytes, NULL); /* arrays cannot be host-backed */
    if (rc != CUDA_SUCCESS) return rc;
    rc = make(out, desc, levels);
    if (rc != CUDA_SUCCESS) {
        hami_unreserve(dev, bytes, 0);
        return rc;
    }
    hami_track_put(key_of_out(out), (struct hami_alloc){bytes, dev, 0, 0, 0, 0, 0});
    return rc;
}

static uint64_t array_key(void *out) { return (uint64_t)(uintptr_t)*(CUarray *)out; }
static uint64_t mipmap_key(void *out) { return (uint64_t)(uintptr_t)*(CUmipmappedArray *)out; }

static CUresult make_2d(void *arr, const void *desc, unsigned levels) {
    (void)levels;
    return hami_real.cuArrayCreate_v2(arr, desc);
}
static CUresult make_3d(void *arr, const void *desc, unsigned levels) {
    (void)levels;
    return hami_real.cuArray3DCreate_v2(arr, desc);
}
static CUresult make_mipmap(void *out, const void *desc, unsigned levels) {
    return hami_real.cuMipmappedArrayCreate(out, desc, levels);
}

EXPORT CUresult cuArrayCreate_v2(CUarray *arr, const CUDA_ARRAY_DESCRIPTOR *desc) {
    hami_init();
    REAL_OR_FAIL(cuArrayCreate_v2);
    if (arr == NULL || desc == NULL) return hami_real.cuArrayCreate_v2(arr, desc);
    uint64_t bytes = array_bytes(desc->Width, desc->Height, 1, desc->NumChannels, desc->Format);
    return array_alloc(arr, array_key, bytes, make_2d, desc, 1);
}

EXPORT CUresult cuArray3DCreate_v2(CUarray *arr, const CUDA_ARRAY3D_DESCRIPTOR *desc) {
    hami_init();
    REAL_OR_FAIL(cuArray3DCreate_v2);
    if (arr == NULL || desc == NULL) return hami_real.cuArray3DCreate_v2(arr, desc);
    uint64_t bytes =
        array_bytes(desc->Width, desc->Height, desc->Depth, desc->NumChannels, desc->Format);
    return array_alloc(arr, array_key, bytes, make_3d, desc, 1);
}

/* Every level of a mipmapped array is device memory: level l is the base halved l times in
 * each dimension (never below 1). Past 64 levels every dimension is 1. */
EXPORT CUresult cuMipmappedArrayCreate(CUmipmappedArray *handle,
                                       const CUDA_ARRAY3D_DESCRIPTOR *desc, unsigned int levels) {
    hami_init();
    REAL_OR_FAIL(cuMipmappedArrayCreate);
    if (handle == NULL || desc == NULL || levels == 0)
        return hami_real.cuMipmappedArrayCreate(handle, desc, levels);
    uint64_t bytes = 0;
    for (unsigned l = 0; l < levels; l++) {
        unsigned shift = l < 63 ? l : 63;
        uint64_t level = array_bytes(desc->Width >> shift, desc->Height >> shift,
                                     desc->Depth >> shift, desc->NumChannels, desc->Format);
        bytes = hami_sum(bytes, level);
        if (l >= 63) { /* every further level is the same single element */
            bytes = hami_sum(bytes, hami_product(level, levels - l - 1));
            break;
        }
    }
    return array_alloc(handle, mipmap_key, bytes, make_mipmap, desc, levels);
}

EXPORT CUresult cuArrayDestroy(CUarray arr) {
    hami_init();
    REAL_OR_FAIL(cuArrayDestroy);
    struct hami_alloc a;
    uint64_t key = (uint64_t)(uintptr_t)arr;
    int had = hami_track_take(key, &a);
    return freed(key, had, &a, hami_real.cuArrayDestroy(arr));
}

EXPORT CUresult cuMipmappedArrayDestroy(CUmipmappedArray mipmap) {
    hami_init();
    REAL_OR_FAIL(cuMipmappedArrayDestroy);
    struct hami_alloc a;
    uint64_t key = (uint64_t)(uintptr_t)mipmap;
    int had = hami_track_take(key, &a);
    return freed(key, had, &a, hami_real.cuMipmappedArrayDestroy(mipmap));
}

/* ---- what the job is told about memory ---- */

static uint64_t container_used(int dev) {
    if (hami.region == NULL) return 0;
    hami_cached_recount(dev);
    return hami_region_used_now(hami.region, dev); /* a killed process's share is gone now */
}

EXPORT CUresult cuMemGetInfo_v2(size_t *free_bytes, size_t *total_bytes) {
    hami_init();
    REAL_OR_FAIL(cuMemGetInfo_v2);
    CUresult rc = hami_real.cuMemGetInfo_v2(free_bytes, total_bytes);
    int dev = hami_current_device();
    uint64_t limit = hami_limit(dev);
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
        uint64_t limit = hami_limit(dev);
        if (limit != 0 && limit < *bytes) *bytes = limit;
    }
    return rc;
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
