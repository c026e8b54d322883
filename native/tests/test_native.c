/* Behaviour of libvgpu.so (LD_PRELOADed) over the test driver, one scenario per subcommand.
 * Prints "ok" and exits 0 on success. The pytest suite runs each scenario with its environment. */
#define _GNU_SOURCE
#define __CUDA_API_VERSION_INTERNAL 1
#include <cuda.h>
#include <dlfcn.h>
#include <nvml.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MB (1ULL << 20)
#include "check.h"

extern uint64_t fake_kernel_ns_total(void);
extern long fake_events_live(void);
extern uint64_t fake_managed_allocs(void);
extern void fake_set_device(int d);
extern uint64_t fake_used(int d);
extern long fake_capture_violations(void);
extern long fake_dead_stream_uses(void);

typedef CUresult (*alloc_fn)(CUdeviceptr *, size_t);
typedef CUresult (*free_fn)(CUdeviceptr);
typedef CUresult (*gpa2_fn)(const char *, void **, int, cuuint64_t, CUdriverProcAddressQueryResult *);
typedef CUresult (*gpa1_fn)(const char *, void **, int, cuuint64_t);

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Limit 64 MiB: 48 fits, 32 more does not, after freeing it does. */
static void one_path(const char *name, CUresult (*alloc)(CUdeviceptr *, size_t),
                     CUresult (*release)(CUdeviceptr)) {
    CUdeviceptr a = 0, b = 0;
    CUresult first = alloc(&a, 48 * MB);
    CUresult second = alloc(&b, 32 * MB);
    if (first != CUDA_SUCCESS || second != CUDA_ERROR_OUT_OF_MEMORY)
        fprintf(stderr, "path %s: first=%d second=%d\n", name, first, second);
    CHECK(first == CUDA_SUCCESS);
    CHECK(second == CUDA_ERROR_OUT_OF_MEMORY);
    CHECK(release(a) == CUDA_SUCCESS);
    CHECK(alloc(&b, 32 * MB) == CUDA_SUCCESS);
    CHECK(release(b) == CUDA_SUCCESS);
}

static CUresult via_alloc(CUdeviceptr *p, size_t n) { return cuMemAlloc_v2(p, n); }
static CUresult via_free(CUdeviceptr p) { return cuMemFree_v2(p); }
static CUresult via_managed(CUdeviceptr *p, size_t n) { return cuMemAllocManaged(p, n, CU_MEM_ATTACH_GLOBAL); }
static CUresult via_async(CUdeviceptr *p, size_t n) { return cuMemAllocAsync(p, n, NULL); }
static CUresult via_async_ptsz(CUdeviceptr *p, size_t n) { return cuMemAllocAsync_ptsz(p, n, NULL); }
/* A pool gives freed memory back at the next synchronisation (release threshold 0). */
static CUresult via_free_async(CUdeviceptr p) {
    CUresult rc = cuMemFreeAsync(p, NULL);
    return rc != CUDA_SUCCESS ? rc : cuStreamSynchronize(NULL);
}
static CUresult via_pool(CUdeviceptr *p, size_t n) {
    CUmemoryPool pool = NULL;
    CHECK(cuDeviceGetDefaultMemPool(&pool, 0) == CUDA_SUCCESS);
    return cuMemAllocFromPoolAsync(p, n, pool, NULL);
}
static CUresult via_pitch(CUdeviceptr *p, size_t n) {
    size_t pitch = 0;
    return cuMemAllocPitch_v2(p, &pitch, 1024, n / 1024, 4);
}
static CUresult via_create(CUdeviceptr *p, size_t n) {
    CUmemAllocationProp prop;
    memset(&prop, 0, sizeof(prop));
    prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
    prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    prop.location.id = 0;
    CUmemGenericAllocationHandle h = 0;
    CUresult rc = cuMemCreate(&h, n, &prop, 0);
    *p = (CUdeviceptr)h;
    return rc;
}
static CUresult via_release(CUdeviceptr p) { return cuMemRelease((CUmemGenericAllocationHandle)p); }
static CUresult via_array(CUdeviceptr *p, size_t n) {
    CUDA_ARRAY_DESCRIPTOR d = {.Width = n / 4 / 1024, .Height = 1024,
                               .Format = CU_AD_FORMAT_FLOAT, .NumChannels = 1};
    CUarray a = NULL;
    CUresult rc = cuArrayCreate_v2(&a, &d);
    *p = (CUdeviceptr)(uintptr_t)a;
    return rc;
}
static CUresult via_array3d(CUdeviceptr *p, size_t n) {
    CUDA_ARRAY3D_DESCRIPTOR d = {.Width = n / 4 / 1024 / 4, .Height = 1024, .Depth = 4,
                                 .Format = CU_AD_FORMAT_FLOAT, .NumChannels = 1};
    CUarray a = NULL;
    CUresult rc = cuArray3DCreate_v2(&a, &d);
    *p = (CUdeviceptr)(uintptr_t)a;
    return rc;
}
static CUresult via_array_destroy(CUdeviceptr p) { return cuArrayDestroy((CUarray)(uintptr_t)p); }

static alloc_fn dl_alloc;
static free_fn dl_free;
static CUresult via_dlsym(CUdeviceptr *p, size_t n) { return dl_alloc(p, n); }
static CUresult via_dlsym_free(CUdeviceptr p) { return dl_free(p); }
static alloc_fn gpa_alloc;
static free_fn gpa_free;
static CUresult via_gpa(CUdeviceptr *p, size_t n) { return gpa_alloc(p, n); }
static CUresult via_gpa_free(CUdeviceptr p) { return gpa_free(p); }

static void scenario_paths(void) {
    one_path("cuMemAlloc_v2", via_alloc, via_free);
    one_path("cuMemAllocManaged", via_managed, via_free);
    one_path("cuMemAllocAsync", via_async, via_free_async);
    one_path("cuMemAllocAsync_ptsz", via_async_ptsz, via_free_async);
    one_path("cuMemAllocFromPoolAsync", via_pool, via_free_async);
    one_path("cuMemAllocPitch_v2", via_pitch, via_free);
    one_path("cuMemCreate", via_create, via_release);
    one_path("cuArrayCreate_v2", via_array, via_array_destroy);
    one_path("cuArray3DCreate_v2", via_array3d, via_array_destroy);
    /* Route 2: dlsym by name, as PyTorch and CuPy do. */
    void *cuda = dlopen("libcuda.so.1", RTLD_NOW);
    dl_alloc = (alloc_fn)dlsym(cuda, "cuMemAlloc_v2");
    dl_free = (free_fn)dlsym(cuda, "cuMemFree_v2");
    one_path("dlsym(cuMemAlloc_v2)", via_dlsym, via_dlsym_free);
    /* Route 3: cuGetProcAddress_v2 from dlsym, then the self query, then everything through it. */
    gpa2_fn gpa = (gpa2_fn)dlsym(cuda, "cuGetProcAddress_v2");
    void *self = NULL;
    CHECK(gpa("cuGetProcAddress", &self, 12000, 0, NULL) == CUDA_SUCCESS);
    CHECK(self == dlsym(RTLD_DEFAULT, "cuGetProcAddress_v2")); /* our own, not the driver's */
    gpa2_fn gpa_self = (gpa2_fn)self;
    CHECK(gpa_self("cuMemAlloc", (void **)&gpa_alloc, 12000, 0, NULL) == CUDA_SUCCESS);
    CHECK(gpa_self("cuMemFree", (void **)&gpa_free, 12000, 0, NULL) == CUDA_SUCCESS);
    one_path("cuGetProcAddress_v2(cuMemAlloc)", via_gpa, via_gpa_free);
    void *v1 = NULL;
    CHECK(gpa("cuGetProcAddress", &v1, 11030, 0, NULL) == CUDA_SUCCESS);
    CHECK(v1 == dlsym(RTLD_DEFAULT, "cuGetProcAddress")); /* the v1 signature for old callers */
    gpa_alloc = NULL;
    CHECK(((gpa1_fn)v1)("cuMemAlloc", (void **)&gpa_alloc, 11030, 0) == CUDA_SUCCESS);
    one_path("cuGetProcAddress(cuMemAlloc) v1", via_gpa, via_gpa_free);
    /* Per-thread default stream flavour resolves to the _ptsz hook. */
    void *launch_ptsz = NULL;
    CHECK(gpa_self("cuLaunchKernel", &launch_ptsz, 12000,
                   CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM, NULL) == CUDA_SUCCESS);
    CHECK(launch_ptsz == dlsym(RTLD_DEFAULT, "cuLaunchKernel_ptsz"));
    /* RTLD_NEXT from the program means after the program: libc's malloc, not ours. */
    CHECK(dlsym(RTLD_NEXT, "malloc") == dlsym(RTLD_DEFAULT, "malloc"));
}

/* A hostile tenant's routes around the _v2 API: the pre-3.2 generation by link, dlsym and
 * cuGetProcAddress with an old version, and sizes that wrap the arithmetic. */
typedef CUresult (*legacy_alloc_fn)(CUdeviceptr_v1 *, unsigned int);
static void scenario_legacy(void) {
    CUdeviceptr_v1 small = 0;
    CHECK(cuMemAlloc(&small, 8u << 20) == CUDA_ERROR_NOT_SUPPORTED); /* link time */
    unsigned int free32 = 0, total32 = 0;
    CHECK(cuMemGetInfo(&free32, &total32) == CUDA_ERROR_NOT_SUPPORTED);
    void *cuda = dlopen("libcuda.so.1", RTLD_NOW);
    legacy_alloc_fn by_name = (legacy_alloc_fn)dlsym(cuda, "cuMemAlloc");
    CHECK(by_name != NULL && by_name(&small, 8u << 20) == CUDA_ERROR_NOT_SUPPORTED);
    gpa2_fn gpa = (gpa2_fn)dlsym(cuda, "cuGetProcAddress_v2");
    void *old = NULL;
    CHECK(gpa("cuMemAlloc", &old, 3000, 0, NULL) == CUDA_SUCCESS);
    CHECK(old != NULL && ((legacy_alloc_fn)old)(&small, 8u << 20) == CUDA_ERROR_NOT_SUPPORTED);
    /* Sizes that would wrap: refused, nothing charged, the counters intact afterwards. */
    CUdeviceptr p = 0;
    size_t pitch = 0;
    CHECK(cuMemAlloc_v2(&p, SIZE_MAX) == CUDA_ERROR_OUT_OF_MEMORY);
    CHECK(cuMemAlloc_v2(&p, SIZE_MAX - (1u << 20)) == CUDA_ERROR_OUT_OF_MEMORY);
    CHECK(cuMemAllocPitch_v2(&p, &pitch, (size_t)1 << 40, (size_t)1 << 40, 4) ==
          CUDA_ERROR_OUT_OF_MEMORY);
    CUDA_ARRAY3D_DESCRIPTOR huge = {.Width = (size_t)1 << 30, .Height = (size_t)1 << 30,
                                    .Depth = (size_t)1 << 30, .Format = CU_AD_FORMAT_FLOAT,
                                    .NumChannels = 4};
    CUarray arr = NULL;
    CHECK(cuArray3DCreate_v2(&arr, &huge) == CUDA_ERROR_OUT_OF_MEMORY);
    size_t free_b = 0, total_b = 0;
    CHECK(cuMemGetInfo_v2(&free_b, &total_b) == CUDA_SUCCESS);
    CHECK(free_b == total_b); /* nothing was charged */
    CHECK(cuMemAlloc_v2(&p, 8u << 20) == CUDA_SUCCESS && cuMemFree_v2(p) == CUDA_SUCCESS);
}

/* VMM as NVIDIA's samples use it: create, map, release the handle while mapped, use, unmap.
 * The memory stays charged until the last mapping goes. */
static size_t free_now(void) {
    size_t free_b = 0, total_b = 0;
    CHECK(cuMemGetInfo_v2(&free_b, &total_b) == CUDA_SUCCESS);
    return free_b;
}

static void scenario_vmm(void) {
    CUmemAllocationProp prop;
    memset(&prop, 0, sizeof(prop));
    prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
    prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    size_t before = free_now();
    CUmemGenericAllocationHandle h = 0;
    CHECK(cuMemCreate(&h, 32u << 20, &prop, 0) == CUDA_SUCCESS);
    CUdeviceptr va = 0x7f0000000000ULL, va2 = 0x7f0010000000ULL;
    CHECK(cuMemMap(va, 32u << 20, 0, h, 0) == CUDA_SUCCESS);
    CHECK(cuMemMap(va2, 32u << 20, 0, h, 0) == CUDA_SUCCESS);
    CHECK(cuMemRelease(h) == CUDA_SUCCESS); /* still mapped twice: still charged */
    CHECK(free_now() == before - (32u << 20));
    CHECK(cuMemUnmap(va, 32u << 20) == CUDA_SUCCESS);
    CHECK(free_now() == before - (32u << 20));
    CUdeviceptr p = 0; /* the limit still counts it: 64 MiB - 32 MiB mapped leaves 32 */
    CHECK(cuMemAlloc_v2(&p, 40u << 20) == CUDA_ERROR_OUT_OF_MEMORY);
    CHECK(cuMemUnmap(va2, 32u << 20) == CUDA_SUCCESS); /* the last mapping: now it is gone */
    CHECK(free_now() == before);
    /* Unmapped before release: uncharged at the release, exactly once. */
    CHECK(cuMemCreate(&h, 16u << 20, &prop, 0) == CUDA_SUCCESS);
    CHECK(cuMemMap(va, 16u << 20, 0, h, 0) == CUDA_SUCCESS);
    CHECK(cuMemUnmap(va, 16u << 20) == CUDA_SUCCESS);
    CHECK(free_now() == before - (16u << 20));
    CHECK(cuMemRelease(h) == CUDA_SUCCESS);
    CHECK(free_now() == before);
}

static void scenario_meminfo(void) {
    CUdeviceptr a = 0;
    CHECK(cuMemAlloc_v2(&a, 16 * MB) == CUDA_SUCCESS);
    size_t free_b = 0, total_b = 0;
    CHECK(cuMemGetInfo_v2(&free_b, &total_b) == CUDA_SUCCESS);
    CHECK(total_b == 64 * MB);
    CHECK(free_b == 48 * MB);
    CHECK(cuMemGetInfo_v2(NULL, &total_b) == CUDA_ERROR_INVALID_VALUE); /* no crash on NULL */
    size_t total = 0;
    CHECK(cuDeviceTotalMem_v2(&total, 0) == CUDA_SUCCESS && total == 64 * MB);
    CHECK(cuDeviceTotalMem_v2(&total, 1) == CUDA_SUCCESS && total == 1024 * MB); /* unlimited */
    void *nvml = dlopen("libnvidia-ml.so.1", RTLD_NOW);
    nvmlReturn_t (*get)(nvmlDevice_t, nvmlMemory_t *) =
        (nvmlReturn_t(*)(nvmlDevice_t, nvmlMemory_t *))dlsym(nvml, "nvmlDeviceGetMemoryInfo");
    nvmlReturn_t (*by_index)(unsigned int, nvmlDevice_t *) =
        (nvmlReturn_t(*)(unsigned int, nvmlDevice_t *))dlsym(nvml, "nvmlDeviceGetHandleByIndex_v2");
    nvmlDevice_t d0 = NULL;
    nvmlMemory_t m;
    CHECK(by_index(0, &d0) == NVML_SUCCESS && get(d0, &m) == NVML_SUCCESS);
    CHECK(m.total == 64 * MB && m.used == 16 * MB && m.free == 48 * MB);
    /* Past the limit (oversubscribed elsewhere), free reads 0, never an error or a wrap. */
    CHECK(cuMemFree_v2(a) == CUDA_SUCCESS);
    CHECK(cuMemGetInfo_v2(&free_b, &total_b) == CUDA_SUCCESS && free_b == 64 * MB);
}

static void scenario_grab(long bytes, int count) {
    /* Allocate as many blocks as the container's budget lets us, report how many, then hold. */
    int got = 0;
    for (int i = 0; i < count; i++) {
        CUdeviceptr p = 0;
        if (cuMemAlloc_v2(&p, (size_t)bytes) == CUDA_SUCCESS) got++;
        usleep(100);
    }
    printf("got %d\n", got);
    fflush(stdout);
    sleep(1); /* hold while the others finish */
}

static void scenario_hold(long bytes, const char *until) {
    /* A job for the telemetry tests: hold `bytes` of device memory and run a kernel now and
     * then, until the file `until` exists (two minutes at most). */
    CUdeviceptr p = 0;
    CHECK(cuMemAlloc_v2(&p, (size_t)bytes) == CUDA_SUCCESS);
    printf("held %ld\n", bytes);
    fflush(stdout);
    for (int i = 0; i < 1200 && access(until, F_OK) != 0; i++) {
        CHECK(cuLaunchKernel(NULL, 1, 1, 1, 1, 1, 1, 0, NULL, NULL, NULL) == CUDA_SUCCESS);
        cuCtxSynchronize();
        usleep(100000);
    }
    CHECK(cuMemFree_v2(p) == CUDA_SUCCESS);
}

static void scenario_oversub(void) {
    CUdeviceptr a = 0, b = 0;
    uint64_t before = fake_managed_allocs();
    CHECK(cuMemAlloc_v2(&a, 48 * MB) == CUDA_SUCCESS);
    CHECK(cuMemAlloc_v2(&b, 48 * MB) == CUDA_SUCCESS); /* past 64 MiB: host-backed */
    CHECK(fake_managed_allocs() == before + 1);
    CHECK(cuMemFree_v2(b) == CUDA_SUCCESS && cuMemFree_v2(a) == CUDA_SUCCESS);
    CUdeviceptr c = 0;
    CHECK(cuMemAlloc_v2(&c, 60 * MB) == CUDA_SUCCESS && fake_managed_allocs() == before + 1);
}

static void scenario_refused(void) {
    CUdeviceptr a = 0;
    CHECK(cuMemAlloc_v2(&a, 1 * MB) == CUDA_ERROR_OUT_OF_MEMORY);
}

static void scenario_throttle(double seconds) {
    double start = now_s();
    uint64_t k0 = fake_kernel_ns_total();
    int n = 0;
    while (now_s() - start < seconds) {
        CUresult rc = (n % 4 == 0) ? cuLaunchKernel(NULL, 1, 1, 1, 1, 1, 1, 0, NULL, NULL, NULL)
                    : (n % 4 == 1) ? cuLaunchKernelEx(NULL, NULL, NULL, NULL)
                    : (n % 4 == 2) ? cuGraphLaunch(NULL, NULL)
                                   : cuLaunchCooperativeKernel(NULL, 1, 1, 1, 1, 1, 1, 0, NULL, NULL);
        CHECK(rc == CUDA_SUCCESS);
        n++;
    }
    cuCtxSynchronize();
    double wall = now_s() - start;
    printf("share %.3f launches %d\n", (double)(fake_kernel_ns_total() - k0) / 1e9 / wall, n);
}

/* The same loop spread over many streams, or with every launch from a thread of its own: the
 * share is the container's per device, whatever the launch pattern. */
static void *launch_once(void *stream) {
    CHECK(cuLaunchKernel(NULL, 1, 1, 1, 1, 1, 1, 0, (CUstream)stream, NULL, NULL) == CUDA_SUCCESS);
    return NULL;
}

static void scenario_throttle_pattern(const char *pattern, double seconds) {
    double start = now_s();
    uint64_t k0 = fake_kernel_ns_total();
    int n = 0;
    while (now_s() - start < seconds) {
        void *stream = (void *)(uintptr_t)(1 + n % 8);
        if (!strcmp(pattern, "threads")) {
            pthread_t t;
            CHECK(pthread_create(&t, NULL, launch_once, stream) == 0);
            pthread_join(t, NULL);
        } else {
            launch_once(stream);
        }
        n++;
    }
    cuCtxSynchronize();
    double wall = now_s() - start;
    printf("share %.3f launches %d events %ld\n",
           (double)(fake_kernel_ns_total() - k0) / 1e9 / wall, n, fake_events_live());
}

/* A job that leaves the device idle between launches: one kernel, then GAP_US of host time,
 * or ("bursts") BURST kernels, a synchronisation, then GAP_US. Its idle time is not work: under
 * the limit it keeps its pace, over it it gets the limit. */
static void sleep_us(long us) {
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    nanosleep(&ts, NULL);
}

static void scenario_sparse(long gap_us, int burst, double seconds) {
    double start = now_s();
    uint64_t k0 = fake_kernel_ns_total();
    int n = 0;
    while (now_s() - start < seconds) {
        for (int i = 0; i < burst; i++, n++)
            CHECK(cuLaunchKernel(NULL, 1, 1, 1, 1, 1, 1, 0, NULL, NULL, NULL) == CUDA_SUCCESS);
        if (burst > 1) CHECK(cuCtxSynchronize() == CUDA_SUCCESS);
        sleep_us(gap_us);
    }
    cuCtxSynchronize();
    double wall = now_s() - start;
    printf("share %.3f launches %d\n", (double)(fake_kernel_ns_total() - k0) / 1e9 / wall, n);
}

/* A stream with work no marker covers yet is destroyed: its handle is never used again, and the
 * sparse job that follows on the default stream keeps its pace. */
static void scenario_stream_gone(long gap_us, double seconds) {
    CUstream s = NULL;
    CHECK(cuStreamCreate(&s, 0) == CUDA_SUCCESS);
    for (int i = 0; i < 2; i++) /* the second follows at once: no marker behind it */
        CHECK(cuLaunchKernel(NULL, 1, 1, 1, 1, 1, 1, 0, s, NULL, NULL) == CUDA_SUCCESS);
    CHECK(cuStreamDestroy_v2(s) == CUDA_SUCCESS);
    scenario_sparse(gap_us, 1, seconds);
    printf("dead %ld\n", fake_dead_stream_uses());
}

static void scenario_launch_refused(void) {
    CHECK(cuLaunchKernel(NULL, 1, 1, 1, 1, 1, 1, 0, NULL, NULL, NULL) == CUDA_ERROR_NOT_PERMITTED);
}

static void scenario_launch_rate(int launches) {
    double start = now_s();
    for (int i = 0; i < launches; i++) cuLaunchKernel(NULL, 1, 1, 1, 1, 1, 1, 0, NULL, NULL, NULL);
    printf("ns_per_launch %.1f\n", (now_s() - start) * 1e9 / launches);
}

static void scenario_pool_rate(int n) {
    double start = now_s();
    for (int i = 0; i < n; i++) {
        CUdeviceptr p = 0;
        cuMemAllocAsync(&p, 4096, NULL);
        cuMemFreeAsync(p, NULL);
    }
    printf("ns_per_async_alloc_free %.1f\n", (now_s() - start) * 1e9 / n);
}

static void scenario_alloc_rate(int n) {
    double start = now_s();
    for (int i = 0; i < n; i++) {
        CUdeviceptr p = 0;
        cuMemAlloc_v2(&p, 4096);
        cuMemFree_v2(p);
    }
    printf("ns_per_alloc_free %.1f\n", (now_s() - start) * 1e9 / n);
}

/* ---- routes a hostile tenant takes around the plain allocation calls ---- */

static size_t free_on(int dev) {
    fake_set_device(dev);
    size_t f = free_now();
    fake_set_device(0);
    return f;
}

/* Frees racing allocations that get the same address back on other threads: after everything
 * is freed the container holds nothing. */
static void *churn(void *arg) {
    (void)arg;
    for (int i = 0; i < 20000; i++) {
        CUdeviceptr p = 0;
        if (cuMemAlloc_v2(&p, 4096 + (size_t)(i % 3) * 512) == CUDA_SUCCESS) CHECK(cuMemFree_v2(p) == CUDA_SUCCESS);
    }
    return NULL;
}

static void scenario_free_race(void) {
    size_t before = free_now();
    pthread_t t[8];
    for (int i = 0; i < 8; i++) CHECK(pthread_create(&t[i], NULL, churn, NULL) == 0);
    for (int i = 0; i < 8; i++) pthread_join(t[i], NULL);
    CHECK(free_now() == before);
}

/* A pool keeps what it is allowed to keep: charged until it trims. Growth in chunks past the
 * limit is refused and undone. Allocations are charged to the stream's and the pool's device. */
static void scenario_pools(void) {
    CUmemoryPool pool = NULL;
    CHECK(cuDeviceGetDefaultMemPool(&pool, 0) == CUDA_SUCCESS);
    cuuint64_t keep_all = UINT64_MAX;
    CHECK(cuMemPoolSetAttribute(pool, CU_MEMPOOL_ATTR_RELEASE_THRESHOLD, &keep_all) == CUDA_SUCCESS);
    size_t before = free_now();
    CUdeviceptr p = 0, q = 0;
    CHECK(cuMemAllocAsync(&p, 48 * MB, NULL) == CUDA_SUCCESS);
    CHECK(cuMemFreeAsync(p, NULL) == CUDA_SUCCESS);
    CHECK(cuStreamSynchronize(NULL) == CUDA_SUCCESS);
    CHECK(free_now() == before - 48 * MB);           /* the pool still holds it */
    CHECK(cuMemAlloc_v2(&q, 32 * MB) == CUDA_ERROR_OUT_OF_MEMORY);
    CHECK(cuMemAllocAsync(&p, 40 * MB, NULL) == CUDA_SUCCESS); /* served from what it holds */
    CHECK(cuMemFreeAsync(p, NULL) == CUDA_SUCCESS);
    CHECK(cuMemPoolTrimTo(pool, 0) == CUDA_SUCCESS);
    CHECK(free_now() == before);
    CHECK(cuMemAlloc_v2(&q, 32 * MB) == CUDA_SUCCESS && cuMemFree_v2(q) == CUDA_SUCCESS);
    /* Release threshold 0 again: freed memory goes back at the next synchronisation. */
    cuuint64_t keep_none = 0;
    CHECK(cuMemPoolSetAttribute(pool, CU_MEMPOOL_ATTR_RELEASE_THRESHOLD, &keep_none) == CUDA_SUCCESS);
    CHECK(cuMemAllocAsync(&p, 48 * MB, NULL) == CUDA_SUCCESS && cuMemFreeAsync(p, NULL) == CUDA_SUCCESS);
    CHECK(cuCtxSynchronize() == CUDA_SUCCESS);
    CHECK(free_now() == before);
    /* A pool made for device 1, used while device 0 is current: device 1's limit binds. */
    CUmemPoolProps props;
    memset(&props, 0, sizeof(props));
    props.allocType = CU_MEM_ALLOCATION_TYPE_PINNED;
    props.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    props.location.id = 1;
    CUmemoryPool pool1 = NULL;
    CHECK(cuMemPoolCreate(&pool1, &props) == CUDA_SUCCESS);
    CHECK(cuMemAllocFromPoolAsync(&p, 80 * MB, pool1, NULL) == CUDA_ERROR_OUT_OF_MEMORY);
    CHECK(cuMemAllocFromPoolAsync(&p, 16 * MB, pool1, NULL) == CUDA_SUCCESS);
    CHECK(free_on(1) == 48 * MB && free_now() == before);
    CHECK(cuMemFreeAsync(p, NULL) == CUDA_SUCCESS && cuMemPoolDestroy(pool1) == CUDA_SUCCESS);
    CHECK(free_on(1) == 64 * MB);
    /* A stream of device 1, device 0 current: charged to device 1. */
    fake_set_device(1);
    CUstream s1 = NULL;
    CHECK(cuStreamCreate(&s1, 0) == CUDA_SUCCESS);
    fake_set_device(0);
    CHECK(cuMemAllocAsync(&p, 80 * MB, s1) == CUDA_ERROR_OUT_OF_MEMORY);
    CHECK(cuMemAllocAsync(&p, 16 * MB, s1) == CUDA_SUCCESS);
    CHECK(free_on(1) == 48 * MB);
    CHECK(cuMemFreeAsync(p, s1) == CUDA_SUCCESS && cuStreamSynchronize(s1) == CUDA_SUCCESS);
    CHECK(free_on(1) == 64 * MB);
}

/* The pool grows in chunks bigger than the request: that growth is what the device loses, so
 * it must fit the limit too (FAKE_POOL_CHUNK_MB=128 against a 64 MiB limit). */
static void scenario_pool_chunks(void) {
    CUdeviceptr p = 0;
    CHECK(cuMemAllocAsync(&p, 8 * MB, NULL) == CUDA_ERROR_OUT_OF_MEMORY);
    CHECK(fake_used(0) == 0); /* undone: the pool gave its chunk back */
    CHECK(free_now() == 64 * MB);
}

static CUgraph graph_with_allocation(size_t bytes, int dev) {
    CUgraph g = NULL;
    CHECK(cuGraphCreate(&g, 0) == CUDA_SUCCESS);
    CUDA_MEM_ALLOC_NODE_PARAMS params;
    memset(&params, 0, sizeof(params));
    params.poolProps.allocType = CU_MEM_ALLOCATION_TYPE_PINNED;
    params.poolProps.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    params.poolProps.location.id = dev;
    params.bytesize = bytes;
    CUgraphNode node = NULL;
    CHECK(cuGraphAddMemAllocNode(&node, g, NULL, 0, &params) == CUDA_SUCCESS);
    return g;
}

/* Graph memory nodes, directly, inside a child graph and inside a conditional's body. */
static void scenario_graphs(void) {
    size_t before = free_now();
    CUgraphExec a = NULL, b = NULL, c = NULL;
    CHECK(cuGraphInstantiateWithFlags(&a, graph_with_allocation(48 * MB, 0), 0) == CUDA_SUCCESS);
    CHECK(free_now() == before - 48 * MB);
    CHECK(cuGraphInstantiateWithFlags(&b, graph_with_allocation(32 * MB, 0), 0) ==
          CUDA_ERROR_OUT_OF_MEMORY);
    CHECK(b == NULL);
    CUgraph outer = NULL;
    CHECK(cuGraphCreate(&outer, 0) == CUDA_SUCCESS);
    CUgraphNode child = NULL;
    CHECK(cuGraphAddChildGraphNode(&child, outer, NULL, 0, graph_with_allocation(32 * MB, 0)) ==
          CUDA_SUCCESS);
    CHECK(cuGraphInstantiate(&b, outer, NULL, NULL, 0) == CUDA_ERROR_OUT_OF_MEMORY); /* 48 + 32 */
    CHECK(cuGraphLaunch(a, NULL) == CUDA_SUCCESS);
    CHECK(cuGraphExecDestroy(a) == CUDA_SUCCESS);
    CHECK(free_now() == before - 48 * MB); /* the device keeps launched graph memory cached */
    CHECK(cuDeviceGraphMemTrim(0) == CUDA_SUCCESS);
    CHECK(free_now() == before);
    CUDA_GRAPH_INSTANTIATE_PARAMS ip = {0};
    CHECK(cuGraphInstantiateWithParams(&b, outer, &ip) == CUDA_SUCCESS);
    CHECK(free_now() == before - 32 * MB);
    CUgraph cond = NULL;
    CHECK(cuGraphCreate(&cond, 0) == CUDA_SUCCESS);
    CUgraphNodeParams np;
    memset(&np, 0, sizeof(np));
    np.type = CU_GRAPH_NODE_TYPE_CONDITIONAL;
    np.conditional.type = CU_GRAPH_COND_TYPE_IF;
    np.conditional.size = 1;
    CUgraphNode cnode = NULL;
    CHECK(cuGraphAddNode_v2(&cnode, cond, NULL, NULL, 0, &np) == CUDA_SUCCESS);
    CUgraphNodeParams alloc;
    memset(&alloc, 0, sizeof(alloc));
    alloc.type = CU_GRAPH_NODE_TYPE_MEM_ALLOC;
    alloc.alloc.poolProps.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    alloc.alloc.bytesize = 40 * MB;
    CUgraphNode inner = NULL;
    CHECK(cuGraphAddNode_v2(&inner, np.conditional.phGraph_out[0], NULL, NULL, 0, &alloc) ==
          CUDA_SUCCESS);
    CHECK(cuGraphInstantiateWithFlags(&c, cond, 0) == CUDA_ERROR_OUT_OF_MEMORY); /* 32 + 40 */
    CHECK(cuGraphExecDestroy(b) == CUDA_SUCCESS);
    CHECK(cuGraphInstantiateWithFlags(&c, cond, 0) == CUDA_SUCCESS);
    CHECK(cuGraphExecDestroy(c) == CUDA_SUCCESS);
    CHECK(free_now() == before);
}

/* The context's heap, printf FIFO and stack are device memory: growing them is charged. */
static void scenario_ctx_limits(void) {
    size_t before = free_now();
    CHECK(cuCtxSetLimit(CU_LIMIT_MALLOC_HEAP_SIZE, 100 * MB) == CUDA_ERROR_OUT_OF_MEMORY);
    CHECK(cuCtxSetLimit(CU_LIMIT_MALLOC_HEAP_SIZE, 32 * MB) == CUDA_SUCCESS);
    CHECK(free_now() == before - 24 * MB); /* 8 MiB is the context's own */
    /* 4 KiB of stack for each of 4 x 2048 resident threads: 32 MiB, 8 of them the default. */
    CHECK(cuCtxSetLimit(CU_LIMIT_STACK_SIZE, 16384) == CUDA_ERROR_OUT_OF_MEMORY);
    CHECK(cuCtxSetLimit(CU_LIMIT_STACK_SIZE, 4096) == CUDA_SUCCESS);
    CHECK(free_now() == before - 48 * MB);
    CHECK(cuCtxSetLimit(CU_LIMIT_MALLOC_HEAP_SIZE, 8 * MB) == CUDA_SUCCESS);
    CHECK(cuCtxSetLimit(CU_LIMIT_STACK_SIZE, 1024) == CUDA_SUCCESS);
    CHECK(free_now() == before);
    CHECK(cuCtxSetLimit(CU_LIMIT_PRINTF_FIFO_SIZE, SIZE_MAX) == CUDA_ERROR_OUT_OF_MEMORY);
}

/* Mipmapped arrays: every level counts. 2048 x 2048 floats is 16 MiB; its 12 levels 21.3. */
static void scenario_mipmaps(void) {
    size_t before = free_now();
    CUDA_ARRAY3D_DESCRIPTOR d = {.Width = 2048, .Height = 2048, .Format = CU_AD_FORMAT_FLOAT,
                                 .NumChannels = 1};
    CUmipmappedArray m[3] = {NULL, NULL, NULL};
    CHECK(cuMipmappedArrayCreate(&m[0], &d, 12) == CUDA_SUCCESS);
    CHECK(cuMipmappedArrayCreate(&m[1], &d, 12) == CUDA_SUCCESS);
    CHECK(cuMipmappedArrayCreate(&m[2], &d, 12) == CUDA_ERROR_OUT_OF_MEMORY); /* 3 x 21.3 > 64 */
    CHECK(free_now() < before - 42 * MB);
    CUDA_ARRAY3D_DESCRIPTOR huge = {.Width = (size_t)1 << 40, .Height = (size_t)1 << 40,
                                    .Format = CU_AD_FORMAT_FLOAT, .NumChannels = 4};
    CUmipmappedArray h = NULL;
    CHECK(cuMipmappedArrayCreate(&h, &huge, 100000) == CUDA_ERROR_OUT_OF_MEMORY);
    CHECK(cuMipmappedArrayDestroy(m[0]) == CUDA_SUCCESS && cuMipmappedArrayDestroy(m[1]) == CUDA_SUCCESS);
    CHECK(free_now() == before);
}

/* With oversubscription, nothing past the limit lands in device memory, pitched rows included,
 * and a stream-ordered free of such memory works. */
static void scenario_oversub_routes(void) {
    CUdeviceptr a = 0, b = 0, c = 0;
    size_t pitch = 0;
    CHECK(cuMemAlloc_v2(&a, 48 * MB) == CUDA_SUCCESS);
    uint64_t device_before = fake_used(0), managed = fake_managed_allocs();
    CHECK(cuMemAllocPitch_v2(&b, &pitch, 1000, 32768, 4) == CUDA_SUCCESS); /* 32 MiB of rows */
    CHECK(pitch >= 1000 && pitch % 512 == 0);
    CHECK(cuMemAllocAsync(&c, 32 * MB, NULL) == CUDA_SUCCESS);
    CHECK(fake_used(0) == device_before && fake_managed_allocs() == managed + 2);
    CHECK(cuMemFreeAsync(c, NULL) == CUDA_SUCCESS);
    CHECK(cuMemFree_v2(b) == CUDA_SUCCESS && cuMemFree_v2(a) == CUDA_SUCCESS);
}

/* The context reserve is charged once per process and device, however many threads allocate. */
static void *alloc_one(void *arg) {
    CUdeviceptr p = 0;
    CHECK(cuMemAlloc_v2(&p, MB) == CUDA_SUCCESS);
    *(CUdeviceptr *)arg = p;
    return NULL;
}

static void scenario_context_reserve(void) {
    size_t before = free_now();
    pthread_t t[4];
    CUdeviceptr p[4];
    for (int i = 0; i < 4; i++) CHECK(pthread_create(&t[i], NULL, alloc_one, &p[i]) == 0);
    for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
    CHECK(free_now() == before - 8 * MB - 4 * MB);
}

static void scenario_free(void) {
    printf("free %zu\n", free_now() / (size_t)MB);
}

/* The compute share under every launch pattern: "streams N" round robin from one thread,
 * "threads N" each looping on a stream of its own, "ptds N" threads on the per-thread default
 * stream, "graphs N" graph launches over N streams (FAKE_GRAPH_KERNELS kernels each), "legacy"
 * the deprecated entry points. Prints the share of the device the kernels used. */
static unsigned long long share_runqueue_ns; /* summed over the launching threads */
struct share_run { const char *pattern; int index, streams; double until; };

static CUresult launch_by(const char *pattern, CUstream s, int n) {
    if (!strcmp(pattern, "graphs")) return cuGraphLaunch(NULL, s);
    if (!strcmp(pattern, "ptds"))
        return cuLaunchKernel_ptsz(NULL, 1, 1, 1, 1, 1, 1, 0, CU_STREAM_PER_THREAD, NULL, NULL);
    if (!strcmp(pattern, "legacy")) {
        CUDA_LAUNCH_PARAMS p = {.hStream = s};
        return n % 4 == 0 ? cuLaunch(NULL)
               : n % 4 == 1 ? cuLaunchGrid(NULL, 1, 1)
               : n % 4 == 2 ? cuLaunchGridAsync(NULL, 1, 1, s)
                            : cuLaunchCooperativeKernelMultiDevice(&p, 1, 0);
    }
    return cuLaunchKernel(NULL, 1, 1, 1, 1, 1, 1, 0, s, NULL, NULL);
}

static void *share_loop(void *arg) {
    struct share_run *r = arg;
    for (int n = 0; now_s() < r->until; n++) {
        CUstream s = (CUstream)(uintptr_t)(1 + (r->index + n) % r->streams);
        CHECK(launch_by(r->pattern, s, n) == CUDA_SUCCESS);
    }
    /* How long this thread was runnable but not running (schedstat's second field): a share
     * under the limit with launchers that waited this long is the host's, not the library's. */
    FILE *f = fopen("/proc/thread-self/schedstat", "r");
    unsigned long long ran = 0, waited = 0;
    if (f != NULL) {
        if (fscanf(f, "%llu %llu", &ran, &waited) != 2) waited = 0;
        fclose(f);
    }
    __atomic_add_fetch(&share_runqueue_ns, waited, __ATOMIC_RELAXED);
    return NULL;
}

static void scenario_share(const char *pattern, int n, double seconds) {
    int threads = !strcmp(pattern, "threads") || !strcmp(pattern, "ptds") ? n : 1;
    int streams = !strcmp(pattern, "threads") ? 1 : n;
    double start = now_s();
    uint64_t k0 = fake_kernel_ns_total();
    pthread_t t[64];
    struct share_run runs[64];
    for (int i = 0; i < threads && i < 64; i++) {
        runs[i] = (struct share_run){pattern, i, streams, start + seconds};
        if (!strcmp(pattern, "threads")) runs[i].index = i, runs[i].streams = 64;
        CHECK(pthread_create(&t[i], NULL, share_loop, &runs[i]) == 0);
    }
    for (int i = 0; i < threads && i < 64; i++) pthread_join(t[i], NULL);
    cuCtxSynchronize();
    double wall = now_s() - start;
    printf("share %.3f events %ld runqueue %.3f s\n",
           (double)(fake_kernel_ns_total() - k0) / 1e9 / wall, fake_events_live(),
           (double)share_runqueue_ns / 1e9);
}

/* PyTorch captures CUDA graphs in global mode while other streams keep running. Nothing the
 * library does may invalidate the capture: no event on the capturing stream, no event query
 * that counts as an unsafe call. The captured graph is throttled when it runs. */
static void scenario_capture(double seconds) {
    CUstream capturing = NULL, other = NULL;
    CHECK(cuStreamCreate(&capturing, 0) == CUDA_SUCCESS && cuStreamCreate(&other, 0) == CUDA_SUCCESS);
    /* Work launched before the capture leaves the stream dirty (the second launch follows the
     * first at once, so no marker is recorded behind it): its marker must wait. */
    for (int i = 0; i < 2; i++)
        CHECK(cuLaunchKernel(NULL, 1, 1, 1, 1, 1, 1, 0, capturing, NULL, NULL) == CUDA_SUCCESS);
    CHECK(cuStreamBeginCapture_v2(capturing, CU_STREAM_CAPTURE_MODE_GLOBAL) == CUDA_SUCCESS);
    uint64_t k0 = fake_kernel_ns_total();
    for (int i = 0; i < 300; i++) {
        CHECK(cuLaunchKernel(NULL, 1, 1, 1, 1, 1, 1, 0, capturing, NULL, NULL) == CUDA_SUCCESS);
        CHECK(cuLaunchKernel(NULL, 1, 1, 1, 1, 1, 1, 0, other, NULL, NULL) == CUDA_SUCCESS);
    }
    CUgraph graph = NULL;
    CHECK(cuStreamEndCapture(capturing, &graph) == CUDA_SUCCESS);
    CHECK(fake_capture_violations() == 0);
    CHECK(fake_kernel_ns_total() - k0 == 300 * 100000ULL); /* only the other stream's ran */
    CUgraphExec exec = NULL;
    CHECK(cuGraphInstantiateWithFlags(&exec, graph, 0) == CUDA_SUCCESS);
    /* The capture phase ran 30 ms of kernels, more than the bucket holds: let the budget refill
     * so the share measured is the graph's alone. */
    cuCtxSynchronize();
    sleep_us(100000);
    double start = now_s();
    k0 = fake_kernel_ns_total();
    while (now_s() - start < seconds) CHECK(cuGraphLaunch(exec, capturing) == CUDA_SUCCESS);
    cuCtxSynchronize();
    printf("share %.3f\n", (double)(fake_kernel_ns_total() - k0) / 1e9 / (now_s() - start));
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    const char *s = argv[1];
    cuInit(0);
    if (!strcmp(s, "paths")) scenario_paths();
    else if (!strcmp(s, "meminfo")) scenario_meminfo();
    else if (!strcmp(s, "legacy")) scenario_legacy();
    else if (!strcmp(s, "vmm")) scenario_vmm();
    else if (!strcmp(s, "grab") && argc == 4) scenario_grab(atol(argv[2]), atoi(argv[3]));
    else if (!strcmp(s, "oversub")) scenario_oversub();
    else if (!strcmp(s, "hold") && argc == 4) scenario_hold(atol(argv[2]), argv[3]);
    else if (!strcmp(s, "refused")) scenario_refused();
    else if (!strcmp(s, "throttle") && argc == 3) scenario_throttle(atof(argv[2]));
    else if (!strcmp(s, "throttle-streams") && argc == 3)
        scenario_throttle_pattern("streams", atof(argv[2]));
    else if (!strcmp(s, "throttle-threads") && argc == 3)
        scenario_throttle_pattern("threads", atof(argv[2]));
    else if (!strcmp(s, "sparse") && argc == 4) scenario_sparse(atol(argv[2]), 1, atof(argv[3]));
    else if (!strcmp(s, "stream-gone") && argc == 4)
        scenario_stream_gone(atol(argv[2]), atof(argv[3]));
    else if (!strcmp(s, "bursts") && argc == 5)
        scenario_sparse(atol(argv[3]), atoi(argv[2]), atof(argv[4]));
    else if (!strcmp(s, "launch-refused")) scenario_launch_refused();
    else if (!strcmp(s, "launch-rate") && argc == 3) scenario_launch_rate(atoi(argv[2]));
    else if (!strcmp(s, "alloc-rate") && argc == 3) scenario_alloc_rate(atoi(argv[2]));
    else if (!strcmp(s, "pool-rate") && argc == 3) scenario_pool_rate(atoi(argv[2]));
    else if (!strcmp(s, "free-race")) scenario_free_race();
    else if (!strcmp(s, "pools")) scenario_pools();
    else if (!strcmp(s, "pool-chunks")) scenario_pool_chunks();
    else if (!strcmp(s, "graphs")) scenario_graphs();
    else if (!strcmp(s, "ctx-limits")) scenario_ctx_limits();
    else if (!strcmp(s, "mipmaps")) scenario_mipmaps();
    else if (!strcmp(s, "oversub-routes")) scenario_oversub_routes();
    else if (!strcmp(s, "context-reserve")) scenario_context_reserve();
    else if (!strcmp(s, "free")) scenario_free();
    else if (!strcmp(s, "share") && argc == 5) scenario_share(argv[2], atoi(argv[3]), atof(argv[4]));
    else if (!strcmp(s, "capture") && argc == 3) scenario_capture(atof(argv[2]));
    else return 2;
    if (failures == 0) printf("ok\n");
    return failures ? 1 : 0;
}
