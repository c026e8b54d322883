#define _GNU_SOURCE
#include "charge.h"

#include <unistd.h>

#include "log.h"
#include "vgpu.h"

#define SMALL_ALIGN 512ULL
#define PAGE (2ULL << 20)

uint64_t hami_charged_bytes(uint64_t bytes) {
    if (bytes > HAMI_MAX_CHARGE) return HAMI_TOO_LARGE;
    uint64_t align = bytes < PAGE ? SMALL_ALIGN : PAGE;
    return (bytes + align - 1) / align * align;
}

uint64_t hami_product(uint64_t a, uint64_t b) {
    uint64_t p;
    return __builtin_mul_overflow(a, b, &p) || p > HAMI_MAX_CHARGE ? HAMI_TOO_LARGE : p;
}

uint64_t hami_sum(uint64_t a, uint64_t b) {
    uint64_t s;
    return __builtin_add_overflow(a, b, &s) || s > HAMI_MAX_CHARGE ? HAMI_TOO_LARGE : s;
}

static uint64_t stricter(uint64_t a, uint64_t b) {
    if (a == 0) return b;
    if (b == 0) return a;
    return a < b ? a : b;
}

uint64_t hami_limit(int dev) {
    uint64_t own = hami.limits.memory[dev];
    if (hami.region == NULL) return own;
    return stricter(own, __atomic_load_n(&hami.region->limit[dev], __ATOMIC_RELAXED));
}

void hami_charge_context(int dev) {
    static int charged_pid[HAMI_MAX_DEVICES]; /* per process, not per thread */
    int pid = hami_pid();
    if (hami.context_reserve == 0 || hami.region == NULL) return;
    if (__atomic_load_n(&charged_pid[dev], __ATOMIC_ACQUIRE) == pid) return; /* the usual case */
    if (__atomic_exchange_n(&charged_pid[dev], pid, __ATOMIC_ACQ_REL) == pid) return;
    /* The context's own memory is charged whatever the limit says: it exists. */
    hami_region_reserve(hami.region, dev, hami.context_reserve, 0, 0);
}

CUresult hami_reserve(int dev, uint64_t bytes, int *oversub) {
    const struct hami_limits *l = &hami.limits;
    if (oversub != NULL) *oversub = 0;
    if (l->memory_invalid[dev]) return CUDA_ERROR_OUT_OF_MEMORY; /* fail closed, logged at init */
    if (bytes == HAMI_TOO_LARGE) return CUDA_ERROR_OUT_OF_MEMORY; /* no device has this much */
    uint64_t limit = hami_limit(dev);
    if (hami.region == NULL) return limit == 0 ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY;
    hami_charge_context(dev);
    if (hami_region_reserve(hami.region, dev, bytes, limit, 0) == 0) return CUDA_SUCCESS;
    /* Before refusing: a pool or graph cache may have given memory back since we counted. */
    if (hami_cached_recount(dev) && hami_region_reserve(hami.region, dev, bytes, limit, 0) == 0)
        return CUDA_SUCCESS;
    if (oversub != NULL && l->oversubscribe &&
        hami_region_reserve(hami.region, dev, bytes, 0, 1) == 0) {
        *oversub = 1;
        return CUDA_SUCCESS;
    }
    LOG_INFO("device %d: %llu bytes refused (limit %llu)", dev, (unsigned long long)bytes,
             (unsigned long long)limit);
    return CUDA_ERROR_OUT_OF_MEMORY;
}

void hami_unreserve(int dev, uint64_t bytes, int oversub) {
    if (hami.region != NULL && bytes != 0) hami_region_release(hami.region, dev, bytes, oversub);
}

void hami_charge_taken(int dev, uint64_t bytes) {
    if (hami.region != NULL && bytes != 0) hami_region_reserve(hami.region, dev, bytes, 0, 0);
}

static int clamp_device(int dev) { return dev >= 0 && dev < HAMI_MAX_DEVICES ? dev : 0; }

int hami_stream_device(CUstream stream) {
    CUdevice dev = 0;
    /* The default streams (legacy, per-thread) belong to the current context. */
    if (stream == NULL || stream == CU_STREAM_LEGACY || stream == CU_STREAM_PER_THREAD ||
        hami_real.cuStreamGetDevice == NULL || hami_real.cuStreamGetDevice(stream, &dev) != CUDA_SUCCESS)
        return hami_current_device();
    return clamp_device(dev);
}

int hami_stream_capturing(CUstream stream) {
    CUstreamCaptureStatus status = CU_STREAM_CAPTURE_STATUS_NONE;
    if (__atomic_load_n(&hami_captures, __ATOMIC_RELAXED) == 0) return 0; /* none begun */
    if (hami_real.cuStreamIsCapturing == NULL) return 0;
    /* An error here is CUDA_ERROR_STREAM_CAPTURE_IMPLICIT (the legacy stream while another
     * stream captures in global mode): touching the stream would invalidate that capture. */
    if (hami_real.cuStreamIsCapturing(stream, &status) != CUDA_SUCCESS) return 1;
    return status != CU_STREAM_CAPTURE_STATUS_NONE;
}
