/* A test driver: libcuda.so.1 over host memory, with a virtual GPU timeline for kernels.
 * Devices: FAKE_CUDA_DEVICES (default 2), FAKE_CUDA_TOTAL_MB each (default 1024); a kernel
 * takes FAKE_KERNEL_US of GPU time (default 100). Implements the entry points the library and
 * its tests use, and cuGetProcAddress like the real driver, including the self query. */
#define _GNU_SOURCE
#define __CUDA_API_VERSION_INTERNAL 1
#include <cuda.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define EXPORT __attribute__((visibility("default")))
#define MAXDEV 8

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t used[MAXDEV];
static uint64_t busy_until_ns;   /* virtual GPU timeline (one engine) */
static uint64_t kernel_ns_total; /* GPU time of every kernel launched */
static uint64_t managed_allocs;
static __thread int current = 0;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}
static int env_int(const char *name, int fallback) {
    const char *v = getenv(name);
    return v && *v ? atoi(v) : fallback;
}
static uint64_t total_bytes(void) { return (uint64_t)env_int("FAKE_CUDA_TOTAL_MB", 1024) << 20; }

/* Allocation headers let frees find the size and device. */
struct block { uint64_t bytes; int dev; int magic; };
#define BLOCK_MAGIC 0x0b10c
static CUresult fake_alloc(CUdeviceptr *dptr, size_t bytes, int dev) {
    if (dptr == NULL || bytes == 0) return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&lock);
    if (used[dev] + bytes > total_bytes()) {
        pthread_mutex_unlock(&lock);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    used[dev] += bytes;
    pthread_mutex_unlock(&lock);
    struct block *b = malloc(sizeof(struct block) + 16);
    if (b == NULL) return CUDA_ERROR_OUT_OF_MEMORY;
    *b = (struct block){bytes, dev, BLOCK_MAGIC};
    *dptr = (CUdeviceptr)(uintptr_t)b;
    return CUDA_SUCCESS;
}
static CUresult fake_free(uint64_t ptr) {
    struct block *b = (struct block *)(uintptr_t)ptr;
    if (b == NULL || b->magic != BLOCK_MAGIC) return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&lock);
    used[b->dev] -= b->bytes;
    pthread_mutex_unlock(&lock);
    b->magic = 0;
    free(b);
    return CUDA_SUCCESS;
}

EXPORT CUresult cuInit(unsigned int flags) { (void)flags; return CUDA_SUCCESS; }
EXPORT CUresult cuDriverGetVersion(int *v) { *v = 13000; return CUDA_SUCCESS; }
EXPORT CUresult cuDeviceGetCount(int *n) { *n = env_int("FAKE_CUDA_DEVICES", 2); return CUDA_SUCCESS; }
EXPORT CUresult cuDeviceGet(CUdevice *d, int ordinal) { *d = ordinal; return CUDA_SUCCESS; }
EXPORT CUresult cuCtxGetDevice(CUdevice *d) { *d = current; return CUDA_SUCCESS; }
/* Test-only: make device d current on this thread (stands in for cuCtxSetCurrent). */
EXPORT void fake_set_device(int d) { current = d; }
EXPORT uint64_t fake_kernel_ns_total(void) { return kernel_ns_total; }
EXPORT uint64_t fake_managed_allocs(void) { return managed_allocs; }
EXPORT uint64_t fake_used(int d) { return used[d]; }

EXPORT CUresult cuDeviceTotalMem_v2(size_t *bytes, CUdevice d) {
    (void)d;
    if (bytes == NULL) return CUDA_ERROR_INVALID_VALUE;
    *bytes = total_bytes();
    return CUDA_SUCCESS;
}
EXPORT CUresult cuMemGetInfo_v2(size_t *free_b, size_t *total_b) {
    if (free_b == NULL || total_b == NULL) return CUDA_ERROR_INVALID_VALUE;
    *total_b = total_bytes();
    *free_b = total_bytes() - used[current];
    return CUDA_SUCCESS;
}
EXPORT CUresult cuMemAlloc_v2(CUdeviceptr *p, size_t n) { return fake_alloc(p, n, current); }
EXPORT CUresult cuMemAllocPitch_v2(CUdeviceptr *p, size_t *pitch, size_t w, size_t h,
                                   unsigned int e) {
    (void)e;
    if (pitch == NULL) return CUDA_ERROR_INVALID_VALUE;
    *pitch = (w + 511) / 512 * 512;
    return fake_alloc(p, *pitch * h, current);
}
EXPORT CUresult cuMemAllocManaged(CUdeviceptr *p, size_t n, unsigned int f) {
    (void)f;
    __atomic_add_fetch(&managed_allocs, 1, __ATOMIC_RELAXED);
    return fake_alloc(p, n, MAXDEV - 1); /* host-backed: not the device's memory */
}
EXPORT CUresult cuMemAllocAsync(CUdeviceptr *p, size_t n, CUstream s) {
    (void)s;
    return fake_alloc(p, n, current);
}
EXPORT CUresult cuMemAllocAsync_ptsz(CUdeviceptr *p, size_t n, CUstream s) {
    return cuMemAllocAsync(p, n, s);
}
EXPORT CUresult cuMemAllocFromPoolAsync(CUdeviceptr *p, size_t n, CUmemoryPool pool, CUstream s) {
    (void)pool;
    (void)s;
    return fake_alloc(p, n, current);
}
EXPORT CUresult cuMemAllocFromPoolAsync_ptsz(CUdeviceptr *p, size_t n, CUmemoryPool pool,
                                             CUstream s) {
    return cuMemAllocFromPoolAsync(p, n, pool, s);
}
EXPORT CUresult cuMemFree_v2(CUdeviceptr p) { return fake_free(p); }
EXPORT CUresult cuMemFreeAsync(CUdeviceptr p, CUstream s) { (void)s; return fake_free(p); }
EXPORT CUresult cuMemFreeAsync_ptsz(CUdeviceptr p, CUstream s) { return cuMemFreeAsync(p, s); }
EXPORT CUresult cuMemCreate(CUmemGenericAllocationHandle *h, size_t n,
                            const CUmemAllocationProp *prop, unsigned long long f) {
    (void)f;
    CUdeviceptr p = 0;
    CUresult rc = fake_alloc(&p, n, prop ? prop->location.id : 0);
    if (rc == CUDA_SUCCESS) *h = (CUmemGenericAllocationHandle)p;
    return rc;
}
EXPORT CUresult cuMemRelease(CUmemGenericAllocationHandle h) { return fake_free(h); }
/* "cuMemMap: maps the memory represented by handle at ptr"; "cuMemRelease: the memory is
 * freed when the handle and all its mappings are gone" (driver API reference, VMM). The test
 * driver frees the host backing at release; the accounting under test is the library's. */
EXPORT CUresult cuMemMap(CUdeviceptr ptr, size_t size, size_t offset,
                         CUmemGenericAllocationHandle h, unsigned long long flags) {
    (void)size, (void)offset, (void)flags;
    return ptr != 0 && h != 0 ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}
EXPORT CUresult cuMemUnmap(CUdeviceptr ptr, size_t size) {
    (void)size;
    return ptr != 0 ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}
EXPORT CUresult cuArrayCreate_v2(CUarray *a, const CUDA_ARRAY_DESCRIPTOR *d) {
    CUdeviceptr p = 0;
    CUresult rc = fake_alloc(&p, d->Width * (d->Height ? d->Height : 1) * d->NumChannels * 4,
                             current);
    if (rc == CUDA_SUCCESS) *a = (CUarray)(uintptr_t)p;
    return rc;
}
EXPORT CUresult cuArray3DCreate_v2(CUarray *a, const CUDA_ARRAY3D_DESCRIPTOR *d) {
    CUdeviceptr p = 0;
    CUresult rc = fake_alloc(&p, d->Width * (d->Height ? d->Height : 1) *
                                     (d->Depth ? d->Depth : 1) * d->NumChannels * 4, current);
    if (rc == CUDA_SUCCESS) *a = (CUarray)(uintptr_t)p;
    return rc;
}
EXPORT CUresult cuArrayDestroy(CUarray a) { return fake_free((uint64_t)(uintptr_t)a); }

/* ---- kernels and events on the virtual timeline ---- */
static CUresult run_kernel(void) {
    uint64_t k = (uint64_t)env_int("FAKE_KERNEL_US", 100) * 1000;
    /* Like a real push buffer, the queue is bounded: launching blocks while 10 ms are queued. */
    for (;;) {
        uint64_t ahead = busy_until_ns > now_ns() ? busy_until_ns - now_ns() : 0;
        if (ahead < 10000000ULL) break;
        struct timespec ts = {0, (long)(ahead - 10000000ULL) + 1000};
        nanosleep(&ts, NULL);
    }
    pthread_mutex_lock(&lock);
    uint64_t now = now_ns();
    uint64_t start = busy_until_ns > now ? busy_until_ns : now;
    busy_until_ns = start + k;
    kernel_ns_total += k;
    pthread_mutex_unlock(&lock);
    return CUDA_SUCCESS;
}
EXPORT CUresult cuLaunchKernel(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                               unsigned by, unsigned bz, unsigned sh, CUstream s, void **p,
                               void **e) {
    (void)f; (void)gx; (void)gy; (void)gz; (void)bx; (void)by; (void)bz; (void)sh; (void)s;
    (void)p; (void)e;
    return run_kernel();
}
EXPORT CUresult cuLaunchKernel_ptsz(CUfunction f, unsigned gx, unsigned gy, unsigned gz,
                                    unsigned bx, unsigned by, unsigned bz, unsigned sh,
                                    CUstream s, void **p, void **e) {
    return cuLaunchKernel(f, gx, gy, gz, bx, by, bz, sh, s, p, e);
}
EXPORT CUresult cuLaunchKernelEx(const CUlaunchConfig *c, CUfunction f, void **p, void **e) {
    (void)c; (void)f; (void)p; (void)e;
    return run_kernel();
}
EXPORT CUresult cuLaunchKernelEx_ptsz(const CUlaunchConfig *c, CUfunction f, void **p, void **e) {
    return cuLaunchKernelEx(c, f, p, e);
}
EXPORT CUresult cuLaunchCooperativeKernel(CUfunction f, unsigned gx, unsigned gy, unsigned gz,
                                          unsigned bx, unsigned by, unsigned bz, unsigned sh,
                                          CUstream s, void **p) {
    return cuLaunchKernel(f, gx, gy, gz, bx, by, bz, sh, s, p, NULL);
}
EXPORT CUresult cuLaunchCooperativeKernel_ptsz(CUfunction f, unsigned gx, unsigned gy,
                                               unsigned gz, unsigned bx, unsigned by, unsigned bz,
                                               unsigned sh, CUstream s, void **p) {
    return cuLaunchKernel(f, gx, gy, gz, bx, by, bz, sh, s, p, NULL);
}
EXPORT CUresult cuGraphLaunch(CUgraphExec g, CUstream s) { (void)g; (void)s; return run_kernel(); }
EXPORT CUresult cuGraphLaunch_ptsz(CUgraphExec g, CUstream s) { return cuGraphLaunch(g, s); }

struct fake_event { uint64_t at; };
static long events_live;
EXPORT long fake_events_live(void) { return __atomic_load_n(&events_live, __ATOMIC_RELAXED); }
EXPORT CUresult cuEventCreate(CUevent *e, unsigned int flags) {
    (void)flags;
    *e = (CUevent)calloc(1, sizeof(struct fake_event));
    if (*e) __atomic_add_fetch(&events_live, 1, __ATOMIC_RELAXED);
    return *e ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY;
}
EXPORT CUresult cuEventRecord(CUevent e, CUstream s) {
    (void)s;
    pthread_mutex_lock(&lock);
    uint64_t now = now_ns();
    ((struct fake_event *)e)->at = busy_until_ns > now ? busy_until_ns : now;
    pthread_mutex_unlock(&lock);
    return CUDA_SUCCESS;
}
EXPORT CUresult cuEventQuery(CUevent e) {
    return now_ns() >= ((struct fake_event *)e)->at ? CUDA_SUCCESS : CUDA_ERROR_NOT_READY;
}
EXPORT CUresult cuEventElapsedTime(float *ms, CUevent a, CUevent b) {
    *ms = (float)((double)(int64_t)(((struct fake_event *)b)->at - ((struct fake_event *)a)->at) / 1e6);
    return CUDA_SUCCESS;
}
EXPORT CUresult cuEventDestroy_v2(CUevent e) {
    if (e) __atomic_sub_fetch(&events_live, 1, __ATOMIC_RELAXED);
    free(e);
    return CUDA_SUCCESS;
}
EXPORT CUresult cuCtxSynchronize(void) {
    uint64_t until = busy_until_ns, now = now_ns();
    if (until > now) {
        struct timespec ts = {0, (long)(until - now)};
        ts.tv_sec = ts.tv_nsec / 1000000000L;
        ts.tv_nsec %= 1000000000L;
        nanosleep(&ts, NULL);
    }
    return CUDA_SUCCESS;
}

/* ---- the pre-3.2 generation, as libcuda still exports it: 32-bit sizes and pointers ----
 * (cuda.h: "CUresult CUDAAPI cuMemAlloc(CUdeviceptr_v1 *dptr, unsigned int bytesize)" under
 * __CUDA_API_VERSION_INTERNAL; cuGetProcAddress hands these out for versions before 3020). */
EXPORT CUresult cuMemAlloc(CUdeviceptr_v1 *p, unsigned int n) {
    CUdeviceptr wide = 0;
    CUresult rc = fake_alloc(&wide, n, current);
    if (rc == CUDA_SUCCESS && p != NULL) *p = (CUdeviceptr_v1)wide;
    return rc;
}
EXPORT CUresult cuMemGetInfo(unsigned int *free_b, unsigned int *total_b) {
    if (free_b == NULL || total_b == NULL) return CUDA_ERROR_INVALID_VALUE;
    *total_b = (unsigned int)total_bytes();
    *free_b = (unsigned int)(total_bytes() - used[current]);
    return CUDA_SUCCESS;
}

/* ---- cuGetProcAddress, as the real driver: by name, version and stream flavour ---- */
EXPORT CUresult cuGetProcAddress(const char *symbol, void **pfn, int version, cuuint64_t flags);
EXPORT CUresult cuGetProcAddress_v2(const char *symbol, void **pfn, int version, cuuint64_t flags,
                                    CUdriverProcAddressQueryResult *status);

static void *lookup(const char *s, int version, cuuint64_t flags) {
    int ptds = (flags & CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM) != 0;
    if (!strcmp(s, "cuGetProcAddress")) return version >= 12000 ? (void *)cuGetProcAddress_v2
                                                               : (void *)cuGetProcAddress;
    if (!strcmp(s, "cuMemAlloc")) return version < 3020 ? (void *)cuMemAlloc : (void *)cuMemAlloc_v2;
    if (!strcmp(s, "cuMemAllocPitch")) return (void *)cuMemAllocPitch_v2;
    if (!strcmp(s, "cuMemFree")) return (void *)cuMemFree_v2;
    if (!strcmp(s, "cuMemGetInfo"))
        return version < 3020 ? (void *)cuMemGetInfo : (void *)cuMemGetInfo_v2;
    if (!strcmp(s, "cuDeviceTotalMem")) return (void *)cuDeviceTotalMem_v2;
    if (!strcmp(s, "cuMemAllocManaged")) return (void *)cuMemAllocManaged;
    if (!strcmp(s, "cuMemCreate")) return (void *)cuMemCreate;
    if (!strcmp(s, "cuMemRelease")) return (void *)cuMemRelease;
    if (!strcmp(s, "cuMemAllocAsync")) return ptds ? (void *)cuMemAllocAsync_ptsz : (void *)cuMemAllocAsync;
    if (!strcmp(s, "cuMemFreeAsync")) return ptds ? (void *)cuMemFreeAsync_ptsz : (void *)cuMemFreeAsync;
    if (!strcmp(s, "cuLaunchKernel")) return ptds ? (void *)cuLaunchKernel_ptsz : (void *)cuLaunchKernel;
    if (!strcmp(s, "cuLaunchKernelEx")) return ptds ? (void *)cuLaunchKernelEx_ptsz : (void *)cuLaunchKernelEx;
    if (!strcmp(s, "cuGraphLaunch")) return ptds ? (void *)cuGraphLaunch_ptsz : (void *)cuGraphLaunch;
    if (!strcmp(s, "cuCtxGetDevice")) return (void *)cuCtxGetDevice;
    if (!strcmp(s, "cuInit")) return (void *)cuInit;
    return NULL;
}
EXPORT CUresult cuGetProcAddress(const char *symbol, void **pfn, int version, cuuint64_t flags) {
    if (symbol == NULL || pfn == NULL) return CUDA_ERROR_INVALID_VALUE;
    *pfn = lookup(symbol, version, flags);
    return *pfn ? CUDA_SUCCESS : CUDA_ERROR_NOT_FOUND;
}
EXPORT CUresult cuGetProcAddress_v2(const char *symbol, void **pfn, int version, cuuint64_t flags,
                                    CUdriverProcAddressQueryResult *status) {
    CUresult rc = cuGetProcAddress(symbol, pfn, version, flags);
    if (status) *status = rc == CUDA_SUCCESS ? CU_GET_PROC_ADDRESS_SUCCESS : CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
    return rc;
}
