/* A test driver: libcuda.so.1 over host memory, with a virtual GPU timeline for kernels.
 * Devices: FAKE_CUDA_DEVICES (default 2), FAKE_CUDA_TOTAL_MB each (default 1024); a kernel
 * takes FAKE_KERNEL_US of GPU time (default 100). Implements the entry points the library and
 * its tests use, and cuGetProcAddress like the real driver, including the self query. */
#define _GNU_SOURCE
#define __CUDA_API_VERSION_INTERNAL 1
#include <cuda.h>
#include <pthread.h>
#include <sched.h>
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
static long capture_violations;
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

/* Allocation headers let frees find the size and device. Like a driver's address space, one
 * process-wide free list hands a freed address to the next allocation, whatever thread asks. */
struct block { uint64_t bytes; int dev; int magic; struct block *next; };
#define BLOCK_MAGIC 0x0b10c
static struct block *free_blocks;
static CUresult fake_alloc(CUdeviceptr *dptr, size_t bytes, int dev) {
    if (dptr == NULL || bytes == 0) return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&lock);
    if (used[dev] + bytes > total_bytes()) {
        pthread_mutex_unlock(&lock);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    used[dev] += bytes;
    struct block *b = free_blocks;
    if (b != NULL) free_blocks = b->next;
    pthread_mutex_unlock(&lock);
    if (b == NULL) b = malloc(sizeof(struct block) + 16);
    if (b == NULL) return CUDA_ERROR_OUT_OF_MEMORY;
    *b = (struct block){bytes, dev, BLOCK_MAGIC, NULL};
    *dptr = (CUdeviceptr)(uintptr_t)b;
    return CUDA_SUCCESS;
}
static CUresult fake_free(uint64_t ptr) {
    struct block *b = (struct block *)(uintptr_t)ptr;
    if (b == NULL || b->magic != BLOCK_MAGIC) return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&lock);
    used[b->dev] -= b->bytes;
    b->magic = 0;
    b->next = free_blocks; /* reusable from now on */
    free_blocks = b;
    pthread_mutex_unlock(&lock);
    /* A real free takes a while after the address is reusable: widen that window on demand. */
    if (env_int("FAKE_FREE_YIELD", 0)) sched_yield();
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
/* Async allocations: see the pools below. */
static CUresult pool_free(uint64_t ptr);
EXPORT CUresult cuMemFree_v2(CUdeviceptr p) {
    return pool_free(p) == CUDA_SUCCESS ? CUDA_SUCCESS : fake_free(p);
}
EXPORT CUresult cuMemFreeAsync(CUdeviceptr p, CUstream s) {
    (void)s;
    return pool_free(p) == CUDA_SUCCESS ? CUDA_SUCCESS : fake_free(p);
}
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
static pthread_mutex_t room = PTHREAD_MUTEX_INITIALIZER; /* see run_kernel */
static CUresult run_kernel(void) {
    uint64_t k = (uint64_t)env_int("FAKE_KERNEL_US", 100) * 1000;
    /* Like a real push buffer, the queue is bounded: launching blocks while 10 ms are queued.
     * One blocked launcher at a time waits for room (the others queue on the mutex), so many
     * threads launching into a full queue cost the host what one does, not one wake-up each per
     * kernel: the host time the tests measure the library with is not spent on the driver. */
    pthread_mutex_lock(&room);
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
    pthread_mutex_unlock(&room);
    return CUDA_SUCCESS;
}
static int capturing(CUstream s);
static int dead(CUstream s);
static CUresult unsafe_call(void);
static void pools_release(void);
struct fake_exec;
static CUresult graph_memory_in(struct fake_exec *e);
/* A launch into a capturing stream is recorded into the graph, not run. */
static CUresult launch(CUstream s) { return capturing(s) ? CUDA_SUCCESS : run_kernel(); }
EXPORT CUresult cuLaunchKernel(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                               unsigned by, unsigned bz, unsigned sh, CUstream s, void **p,
                               void **e) {
    (void)f; (void)gx; (void)gy; (void)gz; (void)bx; (void)by; (void)bz; (void)sh;
    (void)p; (void)e;
    return launch(s);
}
EXPORT CUresult cuLaunchKernel_ptsz(CUfunction f, unsigned gx, unsigned gy, unsigned gz,
                                    unsigned bx, unsigned by, unsigned bz, unsigned sh,
                                    CUstream s, void **p, void **e) {
    return cuLaunchKernel(f, gx, gy, gz, bx, by, bz, sh, s, p, e);
}
EXPORT CUresult cuLaunchKernelEx(const CUlaunchConfig *c, CUfunction f, void **p, void **e) {
    (void)f; (void)p; (void)e;
    return launch(c ? c->hStream : NULL);
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
/* A graph launch runs FAKE_GRAPH_KERNELS kernels (default 1) back to back. */
EXPORT CUresult cuGraphLaunch(CUgraphExec g, CUstream s) {
    if (capturing(s)) return CUDA_SUCCESS;
    if ((uintptr_t)g > 4096 && graph_memory_in((struct fake_exec *)g) != CUDA_SUCCESS)
        return CUDA_ERROR_OUT_OF_MEMORY;
    int kernels = env_int("FAKE_GRAPH_KERNELS", 1);
    for (int i = 0; i < kernels; i++) run_kernel();
    return CUDA_SUCCESS;
}
EXPORT CUresult cuGraphLaunch_ptsz(CUgraphExec g, CUstream s) { return cuGraphLaunch(g, s); }

/* An event recorded into a capturing stream becomes part of the graph: querying it, or timing
 * it, is not allowed (the capture is invalidated). */
struct fake_event { uint64_t at; int captured; };
static long events_live;
EXPORT long fake_events_live(void) { return __atomic_load_n(&events_live, __ATOMIC_RELAXED); }
EXPORT CUresult cuEventCreate(CUevent *e, unsigned int flags) {
    (void)flags;
    *e = (CUevent)calloc(1, sizeof(struct fake_event));
    if (*e) __atomic_add_fetch(&events_live, 1, __ATOMIC_RELAXED);
    return *e ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY;
}
EXPORT CUresult cuEventRecord(CUevent e, CUstream s) {
    struct fake_event *fe = (struct fake_event *)e;
    if (dead(s)) return CUDA_ERROR_INVALID_HANDLE;
    fe->captured = capturing(s);
    pthread_mutex_lock(&lock);
    uint64_t now = now_ns();
    fe->at = busy_until_ns > now ? busy_until_ns : now;
    pthread_mutex_unlock(&lock);
    return CUDA_SUCCESS;
}
static CUresult captured_event_used(void) {
    pthread_mutex_lock(&lock);
    capture_violations++;
    pthread_mutex_unlock(&lock);
    return CUDA_ERROR_STREAM_CAPTURE_ISOLATION;
}
EXPORT CUresult cuEventQuery(CUevent e) {
    if (unsafe_call() != CUDA_SUCCESS) return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
    if (((struct fake_event *)e)->captured) return captured_event_used();
    return now_ns() >= ((struct fake_event *)e)->at ? CUDA_SUCCESS : CUDA_ERROR_NOT_READY;
}
EXPORT CUresult cuEventElapsedTime(float *ms, CUevent a, CUevent b) {
    if (((struct fake_event *)a)->captured || ((struct fake_event *)b)->captured)
        return captured_event_used();
    *ms = (float)((double)(int64_t)(((struct fake_event *)b)->at - ((struct fake_event *)a)->at) / 1e6);
    return CUDA_SUCCESS;
}
EXPORT CUresult cuEventDestroy_v2(CUevent e) {
    if (e) __atomic_sub_fetch(&events_live, 1, __ATOMIC_RELAXED);
    free(e);
    return CUDA_SUCCESS;
}
EXPORT CUresult cuCtxSynchronize(void) {
    if (unsafe_call() != CUDA_SUCCESS) return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
    uint64_t until = busy_until_ns, now = now_ns();
    if (until > now) {
        struct timespec ts = {0, (long)(until - now)};
        ts.tv_sec = ts.tv_nsec / 1000000000L;
        ts.tv_nsec %= 1000000000L;
        nanosleep(&ts, NULL);
    }
    pools_release();
    return CUDA_SUCCESS;
}

/* ---- streams and stream capture ----
 * "cuStreamBeginCapture: begin graph capture on hStream. When a stream is in capture mode, all
 * operations pushed into the stream will not be executed, but will instead be captured into a
 * graph." "cuThreadExchangeStreamCaptureMode: CU_STREAM_CAPTURE_MODE_GLOBAL: if the local thread
 * has an ongoing capture sequence that was not initiated with CU_STREAM_CAPTURE_MODE_RELAXED, or
 * if any other thread has a concurrent capture sequence initiated with
 * CU_STREAM_CAPTURE_MODE_GLOBAL, this thread is prohibited from potentially unsafe API calls.
 * ... CU_STREAM_CAPTURE_MODE_RELAXED: the local thread is not prohibited from potentially unsafe
 * API calls." A prohibited call fails with CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED and
 * invalidates the capture sequence (CUDA_ERROR_STREAM_CAPTURE_INVALIDATED at cuStreamEndCapture).
 * The test driver counts event queries and synchronisations as potentially unsafe. */
struct fake_stream { int magic; int dev; };
#define STREAM_MAGIC 0x57ea
#define STREAM_DEAD 0xdead
/* A destroyed stream's handle is invalid (a real driver may even hand it out again): the test
 * driver keeps its memory, so that it can count every use of it. */
static long dead_stream_uses;
EXPORT long fake_dead_stream_uses(void) { return __atomic_load_n(&dead_stream_uses, __ATOMIC_RELAXED); }
static int dead(CUstream s) {
    if (s == NULL || (uintptr_t)s <= 4096 || ((struct fake_stream *)s)->magic != STREAM_DEAD)
        return 0;
    __atomic_add_fetch(&dead_stream_uses, 1, __ATOMIC_RELAXED);
    return 1;
}
struct capture { CUstream stream; CUstreamCaptureMode mode; pthread_t thread; int invalidated; };
#define MAXCAPTURE 16
static struct capture captures[MAXCAPTURE];
static int captures_active;
static __thread CUstreamCaptureMode thread_mode = CU_STREAM_CAPTURE_MODE_GLOBAL;
EXPORT long fake_capture_violations(void) { return capture_violations; }

static struct capture *capture_of(CUstream s) {
    for (int i = 0; i < MAXCAPTURE; i++)
        if (captures[i].stream != NULL && captures[i].stream == s) return &captures[i];
    return NULL;
}
/* 1 when the calling thread may not make a potentially unsafe call now (lock held). */
static int prohibited(void) {
    if (captures_active == 0 || thread_mode == CU_STREAM_CAPTURE_MODE_RELAXED) return 0;
    for (int i = 0; i < MAXCAPTURE; i++) {
        struct capture *c = &captures[i];
        if (c->stream == NULL || c->mode == CU_STREAM_CAPTURE_MODE_RELAXED) continue;
        if (c->mode == CU_STREAM_CAPTURE_MODE_GLOBAL || pthread_equal(c->thread, pthread_self()))
            return 1;
    }
    return 0;
}
static CUresult unsafe_call(void) {
    pthread_mutex_lock(&lock);
    int bad = prohibited();
    if (bad) {
        capture_violations++;
        for (int i = 0; i < MAXCAPTURE; i++)
            if (captures[i].stream != NULL) captures[i].invalidated = 1;
    }
    pthread_mutex_unlock(&lock);
    return bad ? CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED : CUDA_SUCCESS;
}
static int capturing(CUstream s) {
    pthread_mutex_lock(&lock);
    int yes = s != NULL && capture_of(s) != NULL;
    pthread_mutex_unlock(&lock);
    return yes;
}
EXPORT CUresult cuStreamCreate(CUstream *s, unsigned int flags) {
    (void)flags;
    struct fake_stream *fs = calloc(1, sizeof(*fs));
    if (fs == NULL) return CUDA_ERROR_OUT_OF_MEMORY;
    *fs = (struct fake_stream){STREAM_MAGIC, current};
    *s = (CUstream)fs;
    return CUDA_SUCCESS;
}
EXPORT CUresult cuStreamDestroy_v2(CUstream s) {
    if (s == NULL || dead(s)) return CUDA_ERROR_INVALID_HANDLE;
    if ((uintptr_t)s > 4096) ((struct fake_stream *)s)->magic = STREAM_DEAD;
    return CUDA_SUCCESS;
}
static int stream_device(CUstream s) {
    struct fake_stream *fs = (struct fake_stream *)s;
    return fs != NULL && (uintptr_t)s > 4096 && fs->magic == STREAM_MAGIC ? fs->dev : current;
}
/* "cuStreamGetDevice: returns the device of the stream" (CUDA 12.8). */
EXPORT CUresult cuStreamGetDevice(CUstream s, CUdevice *d) { *d = stream_device(s); return CUDA_SUCCESS; }
EXPORT CUresult cuStreamBeginCapture_v2(CUstream s, CUstreamCaptureMode mode) {
    if (s == NULL) return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED; /* not the legacy stream */
    pthread_mutex_lock(&lock);
    CUresult rc = CUDA_ERROR_ILLEGAL_STATE;
    for (int i = 0; i < MAXCAPTURE && capture_of(s) == NULL; i++) {
        if (captures[i].stream != NULL) continue;
        captures[i] = (struct capture){s, mode, pthread_self(), 0};
        captures_active++;
        rc = CUDA_SUCCESS;
        break;
    }
    pthread_mutex_unlock(&lock);
    return rc;
}
EXPORT CUresult cuStreamBeginCapture_v2_ptsz(CUstream s, CUstreamCaptureMode mode) {
    return cuStreamBeginCapture_v2(s, mode);
}
EXPORT CUresult cuGraphCreate(CUgraph *g, unsigned int flags);
EXPORT CUresult cuStreamEndCapture(CUstream s, CUgraph *graph) {
    pthread_mutex_lock(&lock);
    struct capture *c = capture_of(s);
    int invalid = c == NULL || c->invalidated;
    if (c != NULL) {
        *c = (struct capture){NULL, 0, 0, 0};
        captures_active--;
    }
    pthread_mutex_unlock(&lock);
    if (invalid) return CUDA_ERROR_STREAM_CAPTURE_INVALIDATED;
    return cuGraphCreate(graph, 0);
}
EXPORT CUresult cuStreamEndCapture_ptsz(CUstream s, CUgraph *g) { return cuStreamEndCapture(s, g); }
EXPORT CUresult cuStreamIsCapturing(CUstream s, CUstreamCaptureStatus *status) {
    pthread_mutex_lock(&lock);
    struct capture *c = s != NULL ? capture_of(s) : NULL;
    *status = c == NULL ? CU_STREAM_CAPTURE_STATUS_NONE
              : c->invalidated ? CU_STREAM_CAPTURE_STATUS_INVALIDATED
                               : CU_STREAM_CAPTURE_STATUS_ACTIVE;
    pthread_mutex_unlock(&lock);
    return CUDA_SUCCESS;
}
/* One engine: a stream is idle when the device is. Querying a capturing stream is not allowed. */
EXPORT CUresult cuStreamQuery(CUstream s) {
    if (unsafe_call() != CUDA_SUCCESS) return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
    if (dead(s)) return CUDA_ERROR_INVALID_HANDLE;
    if (capturing(s)) return captured_event_used();
    return now_ns() >= busy_until_ns ? CUDA_SUCCESS : CUDA_ERROR_NOT_READY;
}
EXPORT CUresult cuStreamIsCapturing_ptsz(CUstream s, CUstreamCaptureStatus *status) {
    return cuStreamIsCapturing(s, status);
}
EXPORT CUresult cuThreadExchangeStreamCaptureMode(CUstreamCaptureMode *mode) {
    CUstreamCaptureMode old = thread_mode;
    thread_mode = *mode;
    *mode = old;
    return CUDA_SUCCESS;
}

/* ---- memory pools ----
 * "CU_MEMPOOL_ATTR_RELEASE_THRESHOLD: amount of reserved memory in bytes to hold onto before
 * trying to release memory back to the OS. When more than the release threshold bytes of memory
 * are held by the memory pool, the allocator will try to release memory back to the OS on the
 * next call to stream, event or context synchronize. (default 0)"; "cuMemPoolTrimTo: releases
 * memory back to the OS until the pool contains fewer than minBytesToKeep reserved bytes";
 * "cuMemPoolDestroy: if any pointers obtained from this pool haven't been freed ... the resources
 * associated with the pool will be released automatically once there are no more outstanding
 * allocations". A pool grows in FAKE_POOL_CHUNK_MB steps (default: exactly what is missing). */
struct fake_pool { int dev; int host; uint64_t reserved, used, threshold; int destroyed; };
struct pool_block { uint64_t bytes; int dev; int magic; struct fake_pool *pool; };
#define POOL_MAGIC 0x9001
static struct fake_pool default_pools[MAXDEV];
static struct fake_pool *current_pools[MAXDEV];
static struct fake_pool *pool_of_device(int dev) {
    if (current_pools[dev] == NULL) {
        default_pools[dev].dev = dev;
        current_pools[dev] = &default_pools[dev];
    }
    return current_pools[dev];
}
static void pool_trim(struct fake_pool *p, uint64_t keep) { /* lock held */
    uint64_t floor = p->used > keep ? p->used : keep;
    if (p->reserved <= floor) return;
    if (!p->host) used[p->dev] -= p->reserved - floor;
    p->reserved = floor;
}
static void pools_release(void) { /* at a synchronisation */
    pthread_mutex_lock(&lock);
    for (int d = 0; d < MAXDEV; d++) {
        if (current_pools[d] != NULL) pool_trim(current_pools[d], current_pools[d]->threshold);
        pool_trim(&default_pools[d], default_pools[d].threshold);
    }
    pthread_mutex_unlock(&lock);
}
static CUresult pool_alloc(CUdeviceptr *dptr, size_t n, struct fake_pool *p) {
    if (dptr == NULL || n == 0 || p == NULL) return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&lock);
    if (p->reserved - p->used < n) {
        uint64_t grow = n - (p->reserved - p->used);
        uint64_t chunk = (uint64_t)env_int("FAKE_POOL_CHUNK_MB", 0) << 20;
        if (chunk > 0) grow = (grow + chunk - 1) / chunk * chunk;
        if (!p->host && used[p->dev] + grow > total_bytes()) {
            pthread_mutex_unlock(&lock);
            return CUDA_ERROR_OUT_OF_MEMORY;
        }
        if (!p->host) used[p->dev] += grow;
        p->reserved += grow;
    }
    p->used += n;
    pthread_mutex_unlock(&lock);
    struct pool_block *b = malloc(sizeof(*b) + 16);
    *b = (struct pool_block){n, p->dev, POOL_MAGIC, p};
    *dptr = (CUdeviceptr)(uintptr_t)b;
    return CUDA_SUCCESS;
}
static CUresult pool_free(uint64_t ptr) {
    struct pool_block *b = (struct pool_block *)(uintptr_t)ptr;
    if (b == NULL || b->magic != POOL_MAGIC) return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&lock);
    b->pool->used -= b->bytes; /* back to the pool, not to the device */
    if (b->pool->destroyed && b->pool->used == 0) pool_trim(b->pool, 0);
    pthread_mutex_unlock(&lock);
    b->magic = 0;
    free(b);
    return CUDA_SUCCESS;
}
EXPORT CUresult cuMemAllocAsync(CUdeviceptr *p, size_t n, CUstream s) {
    return pool_alloc(p, n, pool_of_device(stream_device(s)));
}
EXPORT CUresult cuMemAllocAsync_ptsz(CUdeviceptr *p, size_t n, CUstream s) {
    return cuMemAllocAsync(p, n, s);
}
EXPORT CUresult cuMemAllocFromPoolAsync(CUdeviceptr *p, size_t n, CUmemoryPool pool, CUstream s) {
    (void)s;
    return pool_alloc(p, n, (struct fake_pool *)pool);
}
EXPORT CUresult cuMemAllocFromPoolAsync_ptsz(CUdeviceptr *p, size_t n, CUmemoryPool pool,
                                             CUstream s) {
    return cuMemAllocFromPoolAsync(p, n, pool, s);
}
EXPORT CUresult cuMemPoolCreate(CUmemoryPool *pool, const CUmemPoolProps *props) {
    if (pool == NULL || props == NULL) return CUDA_ERROR_INVALID_VALUE;
    struct fake_pool *p = calloc(1, sizeof(*p));
    p->host = props->location.type != CU_MEM_LOCATION_TYPE_DEVICE;
    p->dev = p->host ? MAXDEV - 1 : props->location.id;
    *pool = (CUmemoryPool)p;
    return CUDA_SUCCESS;
}
EXPORT CUresult cuMemPoolDestroy(CUmemoryPool pool) {
    struct fake_pool *p = (struct fake_pool *)pool;
    pthread_mutex_lock(&lock);
    p->destroyed = 1;
    pool_trim(p, 0);
    pthread_mutex_unlock(&lock);
    return CUDA_SUCCESS; /* the struct stays: blocks still point at it */
}
EXPORT CUresult cuDeviceGetDefaultMemPool(CUmemoryPool *pool, CUdevice dev) {
    pool_of_device(dev);
    default_pools[dev].dev = dev;
    *pool = (CUmemoryPool)&default_pools[dev];
    return CUDA_SUCCESS;
}
EXPORT CUresult cuDeviceGetMemPool(CUmemoryPool *pool, CUdevice dev) {
    *pool = (CUmemoryPool)pool_of_device(dev);
    return CUDA_SUCCESS;
}
EXPORT CUresult cuDeviceSetMemPool(CUdevice dev, CUmemoryPool pool) {
    current_pools[dev] = (struct fake_pool *)pool;
    return CUDA_SUCCESS;
}
EXPORT CUresult cuMemPoolTrimTo(CUmemoryPool pool, size_t keep) {
    pthread_mutex_lock(&lock);
    pool_trim((struct fake_pool *)pool, keep);
    pthread_mutex_unlock(&lock);
    return CUDA_SUCCESS;
}
EXPORT CUresult cuMemPoolSetAttribute(CUmemoryPool pool, CUmemPool_attribute attr, void *value) {
    struct fake_pool *p = (struct fake_pool *)pool;
    if (attr != CU_MEMPOOL_ATTR_RELEASE_THRESHOLD) return CUDA_SUCCESS;
    p->threshold = *(cuuint64_t *)value;
    return CUDA_SUCCESS;
}
EXPORT CUresult cuMemPoolGetAttribute(CUmemoryPool pool, CUmemPool_attribute attr, void *value) {
    struct fake_pool *p = (struct fake_pool *)pool;
    pthread_mutex_lock(&lock);
    cuuint64_t v = attr == CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT ? p->reserved
                   : attr == CU_MEMPOOL_ATTR_USED_MEM_CURRENT   ? p->used
                   : attr == CU_MEMPOOL_ATTR_RELEASE_THRESHOLD  ? p->threshold
                                                                : 0;
    pthread_mutex_unlock(&lock);
    *(cuuint64_t *)value = v;
    return CUDA_SUCCESS;
}
EXPORT CUresult cuStreamSynchronize(CUstream s) {
    (void)s;
    if (unsafe_call() != CUDA_SUCCESS) return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
    pools_release();
    return CUDA_SUCCESS;
}
EXPORT CUresult cuStreamSynchronize_ptsz(CUstream s) { return cuStreamSynchronize(s); }
EXPORT CUresult cuEventSynchronize(CUevent e) {
    (void)e;
    if (unsafe_call() != CUDA_SUCCESS) return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
    pools_release();
    return CUDA_SUCCESS;
}

/* ---- graphs and graph memory nodes ----
 * "cuGraphAddMemAllocNode: ... the allocation is reserved when the graph is instantiated and
 * the physical memory is mapped when the graph is launched"; "graph memory is cached by the
 * device for reuse; cuDeviceGraphMemTrim frees unused memory that was cached on the specified
 * device for use with graphs back to the OS"; CU_GRAPH_MEM_ATTR_RESERVED_MEM_CURRENT: "amount of
 * memory, in bytes, currently allocated for use by the CUDA graphs asynchronous allocator". The
 * test driver keeps an executable graph's memory in use from its first launch to its destroy. */
#define MAXNODES 64
struct fake_graph;
struct fake_node {
    CUgraphNodeType type;
    CUDA_MEM_ALLOC_NODE_PARAMS alloc;
    struct fake_graph *child;
    CUgraph bodies[2];
    unsigned int nbodies;
};
struct fake_graph { struct fake_node *nodes[MAXNODES]; size_t n; };
struct fake_exec { uint64_t sums[MAXDEV]; int launched; };
static uint64_t graph_reserved[MAXDEV], graph_in_use[MAXDEV];
static uint64_t next_graph_va = 0x600000000000ULL;

EXPORT CUresult cuGraphCreate(CUgraph *g, unsigned int flags) {
    (void)flags;
    *g = (CUgraph)calloc(1, sizeof(struct fake_graph));
    return *g ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY;
}
EXPORT CUresult cuGraphDestroy(CUgraph g) { (void)g; return CUDA_SUCCESS; }
static struct fake_node *add_node(CUgraph g, CUgraphNodeType type) {
    struct fake_graph *fg = (struct fake_graph *)g;
    if (fg == NULL || fg->n >= MAXNODES) return NULL;
    struct fake_node *node = calloc(1, sizeof(*node));
    node->type = type;
    fg->nodes[fg->n++] = node;
    return node;
}
EXPORT CUresult cuGraphAddMemAllocNode(CUgraphNode *out, CUgraph g, const CUgraphNode *deps,
                                       size_t ndeps, CUDA_MEM_ALLOC_NODE_PARAMS *params) {
    (void)deps, (void)ndeps;
    struct fake_node *node = add_node(g, CU_GRAPH_NODE_TYPE_MEM_ALLOC);
    if (node == NULL || params == NULL) return CUDA_ERROR_INVALID_VALUE;
    params->dptr = __atomic_fetch_add(&next_graph_va, params->bytesize + 4096, __ATOMIC_RELAXED);
    node->alloc = *params;
    *out = (CUgraphNode)node;
    return CUDA_SUCCESS;
}
EXPORT CUresult cuGraphAddChildGraphNode(CUgraphNode *out, CUgraph g, const CUgraphNode *deps,
                                         size_t ndeps, CUgraph child) {
    (void)deps, (void)ndeps;
    struct fake_node *node = add_node(g, CU_GRAPH_NODE_TYPE_GRAPH);
    if (node == NULL) return CUDA_ERROR_INVALID_VALUE;
    node->child = (struct fake_graph *)child;
    *out = (CUgraphNode)node;
    return CUDA_SUCCESS;
}
/* cuGraphAddNode_v2 with CU_GRAPH_NODE_TYPE_CONDITIONAL: "phGraph_out: CUDA-owned array populated
 * with conditional node child graphs during creation of the node". */
EXPORT CUresult cuGraphAddNode_v2(CUgraphNode *out, CUgraph g, const CUgraphNode *deps,
                                  const CUgraphEdgeData *edges, size_t ndeps,
                                  CUgraphNodeParams *params) {
    (void)deps, (void)edges, (void)ndeps;
    if (params == NULL) return CUDA_ERROR_INVALID_VALUE;
    if (params->type == CU_GRAPH_NODE_TYPE_MEM_ALLOC)
        return cuGraphAddMemAllocNode(out, g, NULL, 0, (CUDA_MEM_ALLOC_NODE_PARAMS *)&params->alloc);
    struct fake_node *node = add_node(g, params->type);
    if (node == NULL) return CUDA_ERROR_INVALID_VALUE;
    if (params->type == CU_GRAPH_NODE_TYPE_CONDITIONAL) {
        node->nbodies = params->conditional.size > 2 ? 2 : params->conditional.size;
        for (unsigned i = 0; i < node->nbodies; i++) cuGraphCreate(&node->bodies[i], 0);
        params->conditional.phGraph_out = node->bodies;
    }
    *out = (CUgraphNode)node;
    return CUDA_SUCCESS;
}
EXPORT CUresult cuGraphGetNodes(CUgraph g, CUgraphNode *nodes, size_t *n) {
    struct fake_graph *fg = (struct fake_graph *)g;
    if (fg == NULL || n == NULL) return CUDA_ERROR_INVALID_VALUE;
    if (nodes != NULL)
        for (size_t i = 0; i < fg->n && i < *n; i++) nodes[i] = (CUgraphNode)fg->nodes[i];
    *n = fg->n;
    return CUDA_SUCCESS;
}
EXPORT CUresult cuGraphNodeGetType(CUgraphNode node, CUgraphNodeType *type) {
    *type = ((struct fake_node *)node)->type;
    return CUDA_SUCCESS;
}
EXPORT CUresult cuGraphMemAllocNodeGetParams(CUgraphNode node, CUDA_MEM_ALLOC_NODE_PARAMS *out) {
    struct fake_node *fn = (struct fake_node *)node;
    if (fn->type != CU_GRAPH_NODE_TYPE_MEM_ALLOC) return CUDA_ERROR_INVALID_VALUE;
    *out = fn->alloc;
    return CUDA_SUCCESS;
}
EXPORT CUresult cuGraphChildGraphNodeGetGraph(CUgraphNode node, CUgraph *g) {
    struct fake_node *fn = (struct fake_node *)node;
    if (fn->type != CU_GRAPH_NODE_TYPE_GRAPH) return CUDA_ERROR_INVALID_VALUE;
    *g = (CUgraph)fn->child;
    return CUDA_SUCCESS;
}
EXPORT CUresult cuGraphNodeGetParams(CUgraphNode node, CUgraphNodeParams *params) {
    struct fake_node *fn = (struct fake_node *)node;
    memset(params, 0, sizeof(*params));
    params->type = fn->type;
    if (fn->type == CU_GRAPH_NODE_TYPE_CONDITIONAL) {
        params->conditional.size = fn->nbodies;
        params->conditional.phGraph_out = fn->bodies;
    }
    if (fn->type == CU_GRAPH_NODE_TYPE_MEM_ALLOC) memcpy(&params->alloc, &fn->alloc, sizeof(fn->alloc));
    return CUDA_SUCCESS;
}
static void graph_sums(struct fake_graph *g, uint64_t *sums, int depth) {
    for (size_t i = 0; g != NULL && depth < 8 && i < g->n; i++) {
        struct fake_node *node = g->nodes[i];
        if (node->type == CU_GRAPH_NODE_TYPE_MEM_ALLOC)
            sums[node->alloc.poolProps.location.id % MAXDEV] += node->alloc.bytesize;
        else if (node->type == CU_GRAPH_NODE_TYPE_GRAPH) graph_sums(node->child, sums, depth + 1);
        for (unsigned b = 0; b < node->nbodies; b++)
            graph_sums((struct fake_graph *)node->bodies[b], sums, depth + 1);
    }
}
EXPORT CUresult cuGraphInstantiateWithFlags(CUgraphExec *exec, CUgraph g, unsigned long long f) {
    (void)f;
    struct fake_exec *e = calloc(1, sizeof(*e));
    if (e == NULL || g == NULL) return CUDA_ERROR_INVALID_VALUE;
    graph_sums((struct fake_graph *)g, e->sums, 0);
    *exec = (CUgraphExec)e;
    return CUDA_SUCCESS;
}
EXPORT CUresult cuGraphInstantiateWithParams(CUgraphExec *exec, CUgraph g,
                                             CUDA_GRAPH_INSTANTIATE_PARAMS *params) {
    return cuGraphInstantiateWithFlags(exec, g, params ? params->flags : 0);
}
EXPORT CUresult cuGraphInstantiateWithParams_ptsz(CUgraphExec *exec, CUgraph g,
                                                  CUDA_GRAPH_INSTANTIATE_PARAMS *params) {
    return cuGraphInstantiateWithParams(exec, g, params);
}
EXPORT CUresult cuGraphInstantiate_v2(CUgraphExec *exec, CUgraph g, CUgraphNode *err, char *log,
                                      size_t size) {
    (void)err, (void)log, (void)size;
    return cuGraphInstantiateWithFlags(exec, g, 0);
}
EXPORT CUresult cuGraphInstantiate(CUgraphExec *exec, CUgraph g, CUgraphNode *err, char *log,
                                   size_t size) {
    return cuGraphInstantiate_v2(exec, g, err, log, size);
}
static CUresult graph_memory_in(struct fake_exec *e) {
    if (e == NULL || e->launched) return CUDA_SUCCESS;
    pthread_mutex_lock(&lock);
    for (int d = 0; d < MAXDEV; d++) {
        uint64_t spare = graph_reserved[d] - graph_in_use[d];
        uint64_t grow = e->sums[d] > spare ? e->sums[d] - spare : 0;
        if (used[d] + grow > total_bytes()) {
            pthread_mutex_unlock(&lock);
            return CUDA_ERROR_OUT_OF_MEMORY;
        }
        used[d] += grow;
        graph_reserved[d] += grow;
        graph_in_use[d] += e->sums[d];
    }
    e->launched = 1;
    pthread_mutex_unlock(&lock);
    return CUDA_SUCCESS;
}
EXPORT CUresult cuGraphExecDestroy(CUgraphExec exec) {
    struct fake_exec *e = (struct fake_exec *)exec;
    pthread_mutex_lock(&lock);
    for (int d = 0; e != NULL && e->launched && d < MAXDEV; d++) graph_in_use[d] -= e->sums[d];
    pthread_mutex_unlock(&lock);
    free(e);
    return CUDA_SUCCESS;
}
EXPORT CUresult cuDeviceGraphMemTrim(CUdevice dev) {
    pthread_mutex_lock(&lock);
    used[dev] -= graph_reserved[dev] - graph_in_use[dev];
    graph_reserved[dev] = graph_in_use[dev];
    pthread_mutex_unlock(&lock);
    return CUDA_SUCCESS;
}
EXPORT CUresult cuDeviceGetGraphMemAttribute(CUdevice dev, CUgraphMem_attribute attr, void *v) {
    pthread_mutex_lock(&lock);
    *(cuuint64_t *)v = attr == CU_GRAPH_MEM_ATTR_RESERVED_MEM_CURRENT ? graph_reserved[dev]
                       : attr == CU_GRAPH_MEM_ATTR_USED_MEM_CURRENT   ? graph_in_use[dev]
                                                                      : 0;
    pthread_mutex_unlock(&lock);
    return CUDA_SUCCESS;
}

/* ---- contexts and their limits ----
 * "cuCtxSetLimit: CU_LIMIT_STACK_SIZE controls the stack size in bytes of each GPU thread;
 * CU_LIMIT_PRINTF_FIFO_SIZE the size in bytes of the FIFO used by printf(); CU_LIMIT_MALLOC_HEAP_SIZE
 * the size in bytes of the heap used by malloc() and free()". The driver reserves the stack for
 * every resident thread: stack size x threads per multiprocessor x multiprocessors. */
#define FAKE_SMS 4
#define FAKE_THREADS_PER_SM 2048
static size_t ctx_limits[MAXDEV][3];
static const size_t default_limits[3] = {1024, 1u << 20, 8u << 20};
static uint64_t limit_bytes(int which, size_t value) {
    return which == CU_LIMIT_STACK_SIZE ? (uint64_t)value * FAKE_SMS * FAKE_THREADS_PER_SM : value;
}
static struct { int dev; } contexts[MAXDEV];
EXPORT CUresult cuDevicePrimaryCtxRetain(CUcontext *ctx, CUdevice dev) {
    contexts[dev].dev = dev;
    *ctx = (CUcontext)&contexts[dev];
    return CUDA_SUCCESS;
}
EXPORT CUresult cuCtxSetCurrent(CUcontext ctx) {
    if (ctx != NULL) current = ((struct { int dev; } *)ctx)->dev;
    return CUDA_SUCCESS;
}
EXPORT CUresult cuCtxCreate_v2(CUcontext *ctx, unsigned int flags, CUdevice dev) {
    (void)flags;
    current = dev;
    return cuDevicePrimaryCtxRetain(ctx, dev);
}
EXPORT CUresult cuCtxCreate_v4(CUcontext *ctx, CUctxCreateParams *params, unsigned int flags,
                               CUdevice dev) {
    (void)params;
    return cuCtxCreate_v2(ctx, flags, dev);
}
EXPORT CUresult cuCtxGetLimit(size_t *value, CUlimit which) {
    if (value == NULL || which > CU_LIMIT_MALLOC_HEAP_SIZE) return CUDA_ERROR_INVALID_VALUE;
    size_t v = ctx_limits[current][which];
    *value = v ? v : default_limits[which];
    return CUDA_SUCCESS;
}
EXPORT CUresult cuCtxSetLimit(CUlimit which, size_t value) {
    if (which > CU_LIMIT_MALLOC_HEAP_SIZE) return CUDA_SUCCESS;
    size_t old = 0;
    cuCtxGetLimit(&old, which);
    pthread_mutex_lock(&lock);
    uint64_t before = limit_bytes(which, old), after = limit_bytes(which, value);
    if (after > before && used[current] + (after - before) > total_bytes()) {
        pthread_mutex_unlock(&lock);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    used[current] = used[current] + after - before;
    ctx_limits[current][which] = value;
    pthread_mutex_unlock(&lock);
    return CUDA_SUCCESS;
}
EXPORT CUresult cuDeviceGetAttribute(int *v, CUdevice_attribute attr, CUdevice dev) {
    (void)dev;
    *v = attr == CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT               ? FAKE_SMS
         : attr == CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR ? FAKE_THREADS_PER_SM
                                                                      : 0;
    return CUDA_SUCCESS;
}

/* ---- mipmapped arrays: every level is device memory ---- */
EXPORT CUresult cuMipmappedArrayCreate(CUmipmappedArray *h, const CUDA_ARRAY3D_DESCRIPTOR *d,
                                       unsigned int levels) {
    uint64_t bytes = 0;
    for (unsigned l = 0; l < levels; l++) {
        uint64_t w = d->Width >> l, hh = d->Height >> l, dd = d->Depth >> l;
        bytes += (w ? w : 1) * (hh ? hh : 1) * (dd ? dd : 1) * d->NumChannels * 4;
    }
    CUdeviceptr p = 0;
    CUresult rc = fake_alloc(&p, bytes, current);
    if (rc == CUDA_SUCCESS) *h = (CUmipmappedArray)(uintptr_t)p;
    return rc;
}
EXPORT CUresult cuMipmappedArrayDestroy(CUmipmappedArray h) {
    return fake_free((uint64_t)(uintptr_t)h);
}

/* ---- the legacy launch entry points (deprecated, still exported) ---- */
EXPORT CUresult cuLaunch(CUfunction f) { (void)f; return run_kernel(); }
EXPORT CUresult cuLaunchGrid(CUfunction f, int w, int h) { (void)f, (void)w, (void)h; return run_kernel(); }
EXPORT CUresult cuLaunchGridAsync(CUfunction f, int w, int h, CUstream s) {
    (void)f, (void)w, (void)h;
    return capturing(s) ? CUDA_SUCCESS : run_kernel();
}
EXPORT CUresult cuLaunchCooperativeKernelMultiDevice(CUDA_LAUNCH_PARAMS *list, unsigned int n,
                                                     unsigned int flags) {
    (void)list, (void)flags;
    for (unsigned i = 0; i < n; i++) run_kernel();
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
    if (!strcmp(s, "cuMemAllocFromPoolAsync"))
        return ptds ? (void *)cuMemAllocFromPoolAsync_ptsz : (void *)cuMemAllocFromPoolAsync;
    if (!strcmp(s, "cuMipmappedArrayCreate")) return (void *)cuMipmappedArrayCreate;
    if (!strcmp(s, "cuCtxSetLimit")) return (void *)cuCtxSetLimit;
    if (!strcmp(s, "cuCtxCreate")) return version >= 12050 ? (void *)cuCtxCreate_v4 : (void *)cuCtxCreate_v2;
    if (!strcmp(s, "cuDevicePrimaryCtxRetain")) return (void *)cuDevicePrimaryCtxRetain;
    if (!strcmp(s, "cuGraphInstantiate"))
        return version >= 12000 ? (void *)cuGraphInstantiateWithFlags : (void *)cuGraphInstantiate_v2;
    if (!strcmp(s, "cuGraphInstantiateWithFlags")) return (void *)cuGraphInstantiateWithFlags;
    if (!strcmp(s, "cuGraphExecDestroy")) return (void *)cuGraphExecDestroy;
    if (!strcmp(s, "cuMemPoolTrimTo")) return (void *)cuMemPoolTrimTo;
    if (!strcmp(s, "cuLaunchGridAsync")) return (void *)cuLaunchGridAsync;
    if (!strcmp(s, "cuStreamSynchronize"))
        return ptds ? (void *)cuStreamSynchronize_ptsz : (void *)cuStreamSynchronize;
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
