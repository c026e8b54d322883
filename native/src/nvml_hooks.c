/* NVML memory queries report the container's limit and use, like cuMemGetInfo. */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>

#include "charge.h"
#include "vgpu.h"

#define EXPORT __attribute__((visibility("default")))

/* The position of an NVML device in CUDA_VISIBLE_DEVICES (UUIDs or indices), or -1. */
static int visible_index(nvmlDevice_t device) {
    const char *visible = getenv("CUDA_VISIBLE_DEVICES");
    if (visible == NULL || *visible == '\0') {
        unsigned int index = 0;
        if (hami_real.nvmlDeviceGetIndex == NULL ||
            hami_real.nvmlDeviceGetIndex(device, &index) != NVML_SUCCESS)
            return -1;
        return index < HAMI_MAX_DEVICES ? (int)index : -1;
    }
    char uuid[96] = {0};
    unsigned int index = 0;
    int have_uuid = hami_real.nvmlDeviceGetUUID != NULL &&
                    hami_real.nvmlDeviceGetUUID(device, uuid, sizeof(uuid)) == NVML_SUCCESS;
    int have_index = hami_real.nvmlDeviceGetIndex != NULL &&
                     hami_real.nvmlDeviceGetIndex(device, &index) == NVML_SUCCESS;
    int position = 0;
    for (const char *p = visible; *p != '\0' && position < HAMI_MAX_DEVICES; position++) {
        size_t len = strcspn(p, ",");
        char item[96] = {0};
        memcpy(item, p, len < sizeof(item) - 1 ? len : sizeof(item) - 1);
        if (have_uuid && strcmp(item, uuid) == 0) return position;
        char *end = NULL;
        long n = strtol(item, &end, 10);
        if (have_index && end != item && *end == '\0' && n == (long)index) return position;
        p += len;
        if (*p == ',') p++;
    }
    return -1;
}

static int limited(nvmlDevice_t device, uint64_t *limit, uint64_t *used) {
    int dev = visible_index(device);
    if (dev < 0 || hami_limit(dev) == 0) return 0;
    *limit = hami_limit(dev);
    *used = hami.region != NULL ? hami_region_used_now(hami.region, dev) : 0;
    return 1;
}

/* Rewrite what the driver said for a limited device: the limit as total, the container's use as
 * used, and never more free than the card really has. */
static int virtualise(nvmlDevice_t device, unsigned long long *total, unsigned long long *free_b,
                      unsigned long long *used_b) {
    uint64_t limit, used;
    if (!limited(device, &limit, &used)) return 0;
    uint64_t left = used >= limit ? 0 : limit - used;
    *total = limit < *total ? limit : *total;
    *free_b = left < *free_b ? left : *free_b;
    *used_b = used;
    return 1;
}

EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t device, nvmlMemory_t *memory) {
    hami_init();
    if (hami_real.nvmlDeviceGetMemoryInfo == NULL) return NVML_ERROR_UNINITIALIZED;
    nvmlReturn_t rc = hami_real.nvmlDeviceGetMemoryInfo(device, memory);
    if (rc == NVML_SUCCESS && memory != NULL)
        virtualise(device, &memory->total, &memory->free, &memory->used);
    return rc;
}

EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t device, nvmlMemory_v2_t *memory) {
    hami_init();
    if (hami_real.nvmlDeviceGetMemoryInfo_v2 == NULL) return NVML_ERROR_UNINITIALIZED;
    nvmlReturn_t rc = hami_real.nvmlDeviceGetMemoryInfo_v2(device, memory);
    if (rc == NVML_SUCCESS && memory != NULL &&
        virtualise(device, &memory->total, &memory->free, &memory->used))
        memory->reserved = 0; /* the container's view: nothing held back */
    return rc;
}
