/* Launch hooks: every entry point that starts work on the device waits while the container's
 * compute budget on that device is spent (sampler.c), whatever the stream, thread or route.
 * A launch into a capturing stream runs nothing (the capture records it), so it neither waits
 * nor is measured, and nothing is recorded on that stream: the graph is throttled when it is
 * launched, like any other work. */
#define _GNU_SOURCE
#include "charge.h"
#include "vgpu.h"

#define EXPORT __attribute__((visibility("default")))
#define REAL_OR_FAIL(name)                                                                        \
    if (hami_real.name == NULL) return CUDA_ERROR_NOT_INITIALIZED

#define LAUNCH(stream, call)                                                                      \
    do { /* the hook has called hami_init() */                                                    \
        if (hami.limits.sm_invalid) return CUDA_ERROR_NOT_PERMITTED;                              \
        int measured_ = hami.throttle && !hami_stream_capturing(stream), dev_ = 0;                \
        uint64_t at_ = 0;                                                                         \
        if (measured_) {                                                                          \
            dev_ = hami_stream_device(stream);                                                    \
            at_ = hami_throttle_launch(stream, dev_);                                             \
        }                                                                                         \
        CUresult rc_ = (call);                                                                    \
        if (measured_ && rc_ == CUDA_SUCCESS) hami_sample_after_launch(stream, dev_, at_);        \
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

/* The legacy entry points (deprecated, still exported by libcuda): cuLaunch and cuLaunchGrid
 * run on the legacy default stream. */
EXPORT CUresult cuLaunch(CUfunction f) {
    hami_init();
    REAL_OR_FAIL(cuLaunch);
    LAUNCH(CU_STREAM_LEGACY, hami_real.cuLaunch(f));
}

EXPORT CUresult cuLaunchGrid(CUfunction f, int w, int h) {
    hami_init();
    REAL_OR_FAIL(cuLaunchGrid);
    LAUNCH(CU_STREAM_LEGACY, hami_real.cuLaunchGrid(f, w, h));
}

EXPORT CUresult cuLaunchGridAsync(CUfunction f, int w, int h, CUstream s) {
    hami_init();
    REAL_OR_FAIL(cuLaunchGridAsync);
    LAUNCH(s, hami_real.cuLaunchGridAsync(f, w, h, s));
}

/* One launch over several devices: each device's budget must allow it. */
EXPORT CUresult cuLaunchCooperativeKernelMultiDevice(CUDA_LAUNCH_PARAMS *list, unsigned int n,
                                                     unsigned int flags) {
    hami_init();
    REAL_OR_FAIL(cuLaunchCooperativeKernelMultiDevice);
    if (hami.limits.sm_invalid) return CUDA_ERROR_NOT_PERMITTED;
    int measured = hami.throttle && list != NULL;
    for (unsigned i = 0; measured && i < n; i++)
        hami_throttle_launch(list[i].hStream, hami_stream_device(list[i].hStream));
    CUresult rc = hami_real.cuLaunchCooperativeKernelMultiDevice(list, n, flags);
    for (unsigned i = 0; measured && rc == CUDA_SUCCESS && i < n; i++)
        hami_sample_after_launch(list[i].hStream, hami_stream_device(list[i].hStream),
                                 hami_now_ns());
    return rc;
}

/* ---- stream capture: counted, so that a launch asks whether its stream captures only while
 * some stream of the process does ---- */

int hami_captures;

static CUresult began(CUresult rc) {
    if (rc == CUDA_SUCCESS) __atomic_add_fetch(&hami_captures, 1, __ATOMIC_RELAXED);
    return rc;
}

static CUresult ended(CUresult rc) {
    /* An invalidated capture is over too; a refused end (wrong thread) is not. */
    if ((rc == CUDA_SUCCESS || rc == CUDA_ERROR_STREAM_CAPTURE_INVALIDATED) &&
        __atomic_load_n(&hami_captures, __ATOMIC_RELAXED) > 0)
        __atomic_sub_fetch(&hami_captures, 1, __ATOMIC_RELAXED);
    return rc;
}

EXPORT CUresult cuStreamBeginCapture(CUstream s) {
    hami_init();
    REAL_OR_FAIL(cuStreamBeginCapture);
    return began(hami_real.cuStreamBeginCapture(s));
}

EXPORT CUresult cuStreamBeginCapture_ptsz(CUstream s) {
    hami_init();
    REAL_OR_FAIL(cuStreamBeginCapture_ptsz);
    return began(hami_real.cuStreamBeginCapture_ptsz(s));
}

EXPORT CUresult cuStreamBeginCapture_v2(CUstream s, CUstreamCaptureMode mode) {
    hami_init();
    REAL_OR_FAIL(cuStreamBeginCapture_v2);
    return began(hami_real.cuStreamBeginCapture_v2(s, mode));
}

EXPORT CUresult cuStreamBeginCapture_v2_ptsz(CUstream s, CUstreamCaptureMode mode) {
    hami_init();
    REAL_OR_FAIL(cuStreamBeginCapture_v2_ptsz);
    return began(hami_real.cuStreamBeginCapture_v2_ptsz(s, mode));
}

EXPORT CUresult cuStreamBeginCaptureToGraph(CUstream s, CUgraph g, const CUgraphNode *deps,
                                            const CUgraphEdgeData *edges, size_t n,
                                            CUstreamCaptureMode mode) {
    hami_init();
    REAL_OR_FAIL(cuStreamBeginCaptureToGraph);
    return began(hami_real.cuStreamBeginCaptureToGraph(s, g, deps, edges, n, mode));
}

EXPORT CUresult cuStreamBeginCaptureToGraph_ptsz(CUstream s, CUgraph g, const CUgraphNode *deps,
                                                 const CUgraphEdgeData *edges, size_t n,
                                                 CUstreamCaptureMode mode) {
    hami_init();
    REAL_OR_FAIL(cuStreamBeginCaptureToGraph_ptsz);
    return began(hami_real.cuStreamBeginCaptureToGraph_ptsz(s, g, deps, edges, n, mode));
}

EXPORT CUresult cuStreamEndCapture(CUstream s, CUgraph *g) {
    hami_init();
    REAL_OR_FAIL(cuStreamEndCapture);
    return ended(hami_real.cuStreamEndCapture(s, g));
}

EXPORT CUresult cuStreamEndCapture_ptsz(CUstream s, CUgraph *g) {
    hami_init();
    REAL_OR_FAIL(cuStreamEndCapture_ptsz);
    return ended(hami_real.cuStreamEndCapture_ptsz(s, g));
}
