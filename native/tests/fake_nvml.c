/* A test libnvidia-ml.so.1: FAKE_CUDA_DEVICES devices of FAKE_CUDA_TOTAL_MB, UUIDs GPU-fake-<i>. */
#define _GNU_SOURCE
#include <nvml.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define EXPORT __attribute__((visibility("default")))

static int env_int(const char *name, int fallback) {
    const char *v = getenv(name);
    return v && *v ? atoi(v) : fallback;
}
EXPORT nvmlReturn_t nvmlInit_v2(void) { return NVML_SUCCESS; }
EXPORT nvmlReturn_t nvmlShutdown(void) { return NVML_SUCCESS; }
EXPORT nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *n) {
    *n = (unsigned)env_int("FAKE_CUDA_DEVICES", 2);
    return NVML_SUCCESS;
}
EXPORT nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int i, nvmlDevice_t *d) {
    *d = (nvmlDevice_t)(uintptr_t)(i + 1);
    return NVML_SUCCESS;
}
EXPORT nvmlReturn_t nvmlDeviceGetIndex(nvmlDevice_t d, unsigned int *i) {
    *i = (unsigned)((uintptr_t)d - 1);
    return NVML_SUCCESS;
}
EXPORT nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t d, char *uuid, unsigned int len) {
    snprintf(uuid, len, "GPU-fake-%u", (unsigned)((uintptr_t)d - 1));
    return NVML_SUCCESS;
}
EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t d, nvmlMemory_t *m) {
    (void)d;
    if (m == NULL) return NVML_ERROR_INVALID_ARGUMENT;
    m->total = (unsigned long long)env_int("FAKE_CUDA_TOTAL_MB", 1024) << 20;
    m->used = 1 << 20;
    m->free = m->total - m->used;
    return NVML_SUCCESS;
}
EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t d, nvmlMemory_v2_t *m) {
    nvmlMemory_t v1;
    nvmlReturn_t rc = nvmlDeviceGetMemoryInfo(d, &v1);
    if (rc != NVML_SUCCESS || m == NULL) return rc ? rc : NVML_ERROR_INVALID_ARGUMENT;
    m->total = v1.total;
    m->used = v1.used;
    m->free = v1.free;
    m->reserved = 0;
    return NVML_SUCCESS;
}
