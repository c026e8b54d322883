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
static CUresult via_free_async(CUdeviceptr p) { return cuMemFreeAsync(p, NULL); }
static CUresult via_pool(CUdeviceptr *p, size_t n) { return cuMemAllocFromPoolAsync(p, n, NULL, NULL); }
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

static void scenario_launch_refused(void) {
    CHECK(cuLaunchKernel(NULL, 1, 1, 1, 1, 1, 1, 0, NULL, NULL, NULL) == CUDA_ERROR_NOT_PERMITTED);
}

static void scenario_launch_rate(int launches) {
    double start = now_s();
    for (int i = 0; i < launches; i++) cuLaunchKernel(NULL, 1, 1, 1, 1, 1, 1, 0, NULL, NULL, NULL);
    printf("ns_per_launch %.1f\n", (now_s() - start) * 1e9 / launches);
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
    else if (!strcmp(s, "refused")) scenario_refused();
    else if (!strcmp(s, "throttle") && argc == 3) scenario_throttle(atof(argv[2]));
    else if (!strcmp(s, "throttle-streams") && argc == 3)
        scenario_throttle_pattern("streams", atof(argv[2]));
    else if (!strcmp(s, "throttle-threads") && argc == 3)
        scenario_throttle_pattern("threads", atof(argv[2]));
    else if (!strcmp(s, "launch-refused")) scenario_launch_refused();
    else if (!strcmp(s, "launch-rate") && argc == 3) scenario_launch_rate(atoi(argv[2]));
    else if (!strcmp(s, "alloc-rate") && argc == 3) scenario_alloc_rate(atoi(argv[2]));
    else if (!strcmp(s, "all")) { scenario_paths(); }
    else return 2;
    if (failures == 0) printf("ok\n");
    return failures ? 1 : 0;
}
