/* Measuring the container's GPU time with CUDA events, and waiting when its budget is spent.
 *
 * About once per millisecond per thread a marker event is recorded after a launch; the GPU time
 * between two consecutive completed markers of one stream is work done for us. Before the
 * throttle sleeps it records a marker (so every launch so far is covered); after the sleep, if
 * the stream has drained, the chain restarts at a marker recorded before the next launch, so
 * the idle time of the sleep is never counted as work. */
#define _GNU_SOURCE
#include <time.h>

#include "log.h"
#include "throttle.h"
#include "vgpu.h"

#define SAMPLE_NS 1000000ULL   /* record an event at most this often per thread */
#define BURST_NS 20000000LL    /* bucket cap: 20 ms of GPU time */
#define RING 64

struct marker {
    CUevent event;
    CUstream stream;
};

static __thread struct marker ring[RING];
static __thread int head, count;          /* pending markers, oldest at head */
static __thread struct marker last_done;  /* newest completed marker of the chain */
static __thread uint64_t last_sample_ns;
static __thread CUevent spare[RING];
static __thread int spares;

static CUevent take_event(void) {
    if (spares > 0) return spare[--spares];
    CUevent e = NULL;
    if (hami_real.cuEventCreate == NULL || hami_real.cuEventCreate(&e, 0) != CUDA_SUCCESS)
        return NULL;
    return e;
}

static void give_event(CUevent e) {
    if (e == NULL) return;
    if (spares < RING) spare[spares++] = e;
    else if (hami_real.cuEventDestroy_v2 != NULL) hami_real.cuEventDestroy_v2(e);
}

/* GPU time completed since the last call, in ns. */
static uint64_t collect(void) {
    uint64_t busy = 0;
    while (count > 0) {
        struct marker m = ring[head];
        if (hami_real.cuEventQuery(m.event) != CUDA_SUCCESS) break;
        if (last_done.event != NULL && last_done.stream == m.stream) {
            float ms = 0;
            if (hami_real.cuEventElapsedTime(&ms, last_done.event, m.event) == CUDA_SUCCESS &&
                ms > 0)
                busy += (uint64_t)(ms * 1e6);
        }
        give_event(last_done.event);
        last_done = m;
        head = (head + 1) % RING;
        count--;
    }
    return busy;
}

static void settle(int dev, uint64_t busy, uint64_t now) {
    struct hami_region *r = hami.compute;
    struct hami_bucket b;
    hami_region_lock(r);
    b.tokens_ns = r->tokens_ns[dev];
    b.refill_ns = r->refill_ns[dev];
    hami_bucket_refill(&b, now, hami.limits.sm_percent, BURST_NS);
    hami_bucket_consume(&b, busy);
    r->tokens_ns[dev] = b.tokens_ns;
    r->refill_ns[dev] = b.refill_ns;
    r->busy_ns[dev] += busy;
    hami_region_unlock(r);
}

static void mark(CUstream stream) {
    if (count >= RING) return;
    CUevent e = take_event();
    if (e != NULL && hami_real.cuEventRecord(e, stream) == CUDA_SUCCESS) {
        ring[(head + count) % RING] = (struct marker){e, stream};
        count++;
    } else {
        give_event(e);
    }
}

void hami_sample_after_launch(CUstream stream) {
    if (hami_real.cuEventRecord == NULL || hami_real.cuEventQuery == NULL) return;
    uint64_t now = hami_now_ns();
    if (now - last_sample_ns < SAMPLE_NS) return;
    last_sample_ns = now;
    uint64_t busy = collect();
    mark(stream);
    int dev = hami_current_device();
    if (hami.limits.policy == HAMI_POLICY_DEFAULT && hami.compute->relaxed[dev]) return;
    settle(dev, busy, now);
}

void hami_throttle_launch(CUstream stream) {
    int dev = hami_current_device();
    struct hami_region *r = hami.compute;
    if (hami.limits.policy == HAMI_POLICY_DEFAULT && r->relaxed[dev]) return;
    int slept = 0;
    for (int rounds = 0; rounds < 1000; rounds++) {
        /* Unlocked read: a stale value only delays the decision by one round. */
        struct hami_bucket b = {__atomic_load_n(&r->tokens_ns[dev], __ATOMIC_RELAXED),
                                __atomic_load_n(&r->refill_ns[dev], __ATOMIC_RELAXED)};
        uint64_t now = hami_now_ns();
        hami_bucket_refill(&b, now, hami.limits.sm_percent, BURST_NS);
        uint64_t wait = hami_bucket_wait_ns(&b, hami.limits.sm_percent);
        if (wait == 0) break;
        if (!slept) mark(stream); /* cover every launch made so far */
        slept = 1;
        if (wait > 50000000ULL) wait = 50000000ULL;
        struct timespec ts = {(time_t)(wait / 1000000000ULL), (long)(wait % 1000000000ULL)};
        nanosleep(&ts, NULL);
        /* While we wait, work already queued completes: count it, or we would wait forever. */
        settle(dev, collect(), hami_now_ns());
    }
    if (slept && hami_real.cuEventQuery != NULL) {
        settle(dev, collect(), hami_now_ns());
        if (count == 0 && (last_done.event == NULL ||
                           hami_real.cuEventQuery(last_done.event) == CUDA_SUCCESS)) {
            /* Drained while we slept: restart the chain before this launch. */
            give_event(last_done.event);
            last_done = (struct marker){NULL, NULL};
            mark(stream);
            last_sample_ns = hami_now_ns();
        }
    }
}
