/* Measuring the container's GPU time with CUDA events, and waiting when its budget is spent.
 *
 * One chain of marker events per process and device, whatever stream or thread launched:
 * about once per millisecond a marker is recorded after a launch. The chain keeps the marker
 * that completed latest (its "frontier"); a newly completed marker after the frontier moves it,
 * and the time it moved (cuEventElapsedTime works across streams of a context) is work done on
 * the device. Work of several streams that overlaps is counted once (as device time, which is what
 * a share of the device means); idle time between markers is counted too, which throttles a
 * sparse job slightly more than needed, never less. Before the throttle sleeps it records a
 * marker (so every launch so far is covered); after the sleep, if everything drained, the chain
 * restarts at a marker recorded before the next launch, so the sleep is not counted as work.
 * Every launch notes its stream; each sample, and the throttle before it sleeps, records a
 * marker on every stream launched into since its last one, so the work of every stream is
 * covered, and the chain restarts only when nothing is left uncovered. The chain is shared by
 * all threads (one lock), so a new thread per launch, many streams or the per-thread default
 * stream cannot slip work past it, and no thread leaves events behind. */
#define _GNU_SOURCE
#include <pthread.h>
#include <string.h>
#include <time.h>

#include "charge.h"
#include "log.h"
#include "throttle.h"
#include "vgpu.h"

#define SAMPLE_NS 1000000ULL   /* record an event at most this often per process and device */
#define BURST_NS 20000000LL    /* bucket cap: 20 ms of GPU time */
#define RING 256
#define DIRTY 64               /* streams with work no marker covers yet */

struct marker {
    CUevent event;
    CUstream stream;
};

/* One chain per device: markers of one device are timed against each other only. */
struct chain {
    struct marker ring[RING];
    int head, count;         /* pending markers, oldest at head */
    struct marker last_done; /* the frontier: the completed marker that finished last */
    uint64_t last_sample_ns;
    CUevent spare[RING];
    int spares;
    CUstream dirty[DIRTY]; /* launched into since their last marker */
    int ndirty;
    int overflow; /* more streams than DIRTY: the chain must not restart (it could lose work) */
    uint64_t epoch; /* bumped whenever the dirty streams are marked: a thread's note is stale */
};

/* The stream this thread last noted dirty, and in which epoch: launching on it again before the
 * chain marks it needs no lock. */
static __thread struct { CUstream stream; int dev; uint64_t epoch; } noted = {NULL, -1, 0};

static pthread_mutex_t chain_lock = PTHREAD_MUTEX_INITIALIZER;
static struct chain chains[HAMI_MAX_DEVICES];

/* After fork the child has no CUDA context and maybe a lock held by a thread that is gone. */
static void reset_chains(void) {
    pthread_mutex_init(&chain_lock, NULL);
    for (int d = 0; d < HAMI_MAX_DEVICES; d++) {
        uint64_t epoch = chains[d].epoch + 1; /* every thread's note is stale in the child */
        memset(&chains[d], 0, sizeof(chains[d]));
        chains[d].epoch = epoch;
    }
}

__attribute__((constructor)) static void chain_atfork(void) {
    pthread_atfork(NULL, NULL, reset_chains);
}

/* Our event calls must never count as the program's "potentially unsafe" calls during a stream
 * capture in global mode (PyTorch's default), which would invalidate the capture: this thread
 * is relaxed while it touches the chain. The events themselves are recorded only on streams
 * that are not capturing. Call with chain_lock held. */
static CUstreamCaptureMode relax(void) {
    CUstreamCaptureMode mode = CU_STREAM_CAPTURE_MODE_RELAXED;
    if (hami_real.cuThreadExchangeStreamCaptureMode != NULL)
        hami_real.cuThreadExchangeStreamCaptureMode(&mode);
    return mode;
}

static void restore(CUstreamCaptureMode mode) {
    if (hami_real.cuThreadExchangeStreamCaptureMode != NULL)
        hami_real.cuThreadExchangeStreamCaptureMode(&mode);
}

static CUevent take_event(struct chain *c) {
    if (c->spares > 0) return c->spare[--c->spares];
    CUevent e = NULL;
    if (hami_real.cuEventCreate == NULL || hami_real.cuEventCreate(&e, 0) != CUDA_SUCCESS)
        return NULL;
    return e;
}

static void give_event(struct chain *c, CUevent e) {
    if (e == NULL) return;
    if (c->spares < RING) c->spare[c->spares++] = e;
    else if (hami_real.cuEventDestroy_v2 != NULL) hami_real.cuEventDestroy_v2(e);
}

/* GPU time completed since the last call, in ns (chain_lock held, relaxed). */
static uint64_t collect(struct chain *c) {
    uint64_t busy = 0;
    while (c->count > 0) {
        struct marker m = c->ring[c->head];
        if (hami_real.cuEventQuery(m.event) != CUDA_SUCCESS) break;
        c->head = (c->head + 1) % RING;
        c->count--;
        float ms = 0;
        if (c->last_done.event == NULL) {
            c->last_done = m;
        } else if (hami_real.cuEventElapsedTime(&ms, c->last_done.event, m.event) == CUDA_SUCCESS &&
                   ms > 0) {
            busy += (uint64_t)(ms * 1e6); /* the frontier moved: that much device time */
            give_event(c, c->last_done.event);
            c->last_done = m;
        } else {
            give_event(c, m.event); /* finished before the frontier: already counted */
        }
    }
    return busy;
}

/* The shared budget's lock is unusable: the share is enforced from a private budget instead,
 * never switched off. */
static struct hami_region *private_budget(void) {
    static pthread_mutex_t once = PTHREAD_MUTEX_INITIALIZER;
    static struct hami_region *fallback;
    pthread_mutex_lock(&once);
    if (fallback == NULL) fallback = hami_region_open(NULL, &hami.limits);
    if (fallback != NULL) __atomic_store_n(&hami.compute, fallback, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&once);
    return fallback;
}

static void settle(int dev, uint64_t busy, uint64_t now) {
    struct hami_region *r = hami.compute;
    struct hami_bucket b;
    if (hami_region_lock(r) != 0 && ((r = private_budget()) == NULL || hami_region_lock(r) != 0))
        return;
    b.tokens_ns = r->tokens_ns[dev];
    b.refill_ns = r->refill_ns[dev];
    hami_bucket_refill(&b, now, hami.limits.sm_percent, BURST_NS);
    hami_bucket_consume(&b, busy);
    r->tokens_ns[dev] = b.tokens_ns;
    r->refill_ns[dev] = b.refill_ns;
    r->busy_ns[dev] += busy;
    hami_region_unlock(r);
}

/* chain_lock held, relaxed. Returns 1 when the marker was recorded. */
static int mark(struct chain *c, CUstream stream) {
    if (c->count >= RING) return 0;
    CUevent e = take_event(c);
    if (e != NULL && hami_real.cuEventRecord(e, stream) == CUDA_SUCCESS) {
        c->ring[(c->head + c->count) % RING] = (struct marker){e, stream};
        c->count++;
        return 1;
    }
    give_event(c, e);
    return 0;
}

/* chain_lock held. */
static void note_launch(struct chain *c, CUstream stream) {
    for (int i = 0; i < c->ndirty; i++)
        if (c->dirty[i] == stream) return;
    if (c->ndirty < DIRTY) c->dirty[c->ndirty++] = stream;
    else c->overflow = 1;
}

/* Cover every stream's work so far with a marker (chain_lock held, relaxed). A stream whose
 * marker could not be recorded stays dirty. */
static void mark_dirty(struct chain *c) {
    int kept = 0;
    for (int i = 0; i < c->ndirty; i++)
        if (!mark(c, c->dirty[i])) c->dirty[kept++] = c->dirty[i];
    c->ndirty = kept;
    __atomic_store_n(&c->epoch, c->epoch + 1, __ATOMIC_RELEASE);
}

void hami_sample_after_launch(CUstream stream, int dev) {
    if (hami_real.cuEventRecord == NULL || hami_real.cuEventQuery == NULL) return;
    struct chain *c = &chains[dev];
    uint64_t now = hami_now_ns();
    uint64_t epoch = __atomic_load_n(&c->epoch, __ATOMIC_ACQUIRE);
    int known = noted.stream == stream && noted.dev == dev && noted.epoch == epoch;
    if (known && now - __atomic_load_n(&c->last_sample_ns, __ATOMIC_RELAXED) < SAMPLE_NS)
        return; /* already dirty, and not time to sample: nothing to do */
    pthread_mutex_lock(&chain_lock);
    note_launch(c, stream);
    noted.stream = stream;
    noted.dev = dev;
    noted.epoch = c->epoch;
    if (now - c->last_sample_ns < SAMPLE_NS) {
        pthread_mutex_unlock(&chain_lock);
        return;
    }
    c->last_sample_ns = now;
    CUstreamCaptureMode mode = relax();
    uint64_t busy = collect(c);
    mark_dirty(c);
    c->overflow = 0;
    restore(mode);
    pthread_mutex_unlock(&chain_lock);
    if (hami.limits.policy == HAMI_POLICY_DEFAULT && hami.compute->relaxed[dev]) return;
    settle(dev, busy, now);
}

static uint64_t collect_locked(struct chain *c) {
    pthread_mutex_lock(&chain_lock);
    CUstreamCaptureMode mode = relax();
    uint64_t busy = collect(c);
    restore(mode);
    pthread_mutex_unlock(&chain_lock);
    return busy;
}

void hami_throttle_launch(CUstream stream, int dev) {
    struct chain *c = &chains[dev];
    struct hami_region *r = hami.compute;
    /* Tokens left: no wait (a refill only adds). The common case costs one load. */
    if (__atomic_load_n(&r->tokens_ns[dev], __ATOMIC_RELAXED) >= 0) return;
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
        if (!slept) { /* cover every launch made so far, on every stream */
            pthread_mutex_lock(&chain_lock);
            CUstreamCaptureMode mode = relax();
            mark_dirty(c);
            restore(mode);
            pthread_mutex_unlock(&chain_lock);
        }
        slept = 1;
        if (wait > 50000000ULL) wait = 50000000ULL;
        struct timespec ts = {(time_t)(wait / 1000000000ULL), (long)(wait % 1000000000ULL)};
        nanosleep(&ts, NULL);
        /* While we wait, work already queued completes: count it, or we would wait forever. */
        settle(dev, collect_locked(c), hami_now_ns());
    }
    if (slept && hami_real.cuEventQuery != NULL) {
        pthread_mutex_lock(&chain_lock);
        CUstreamCaptureMode mode = relax();
        uint64_t busy = collect(c);
        if (c->count == 0 && c->ndirty == 0 && !c->overflow &&
            (c->last_done.event == NULL ||
             hami_real.cuEventQuery(c->last_done.event) == CUDA_SUCCESS)) {
            /* Drained while we slept, and no work is left uncovered (another thread may have
             * launched since): restart the chain before this launch. */
            give_event(c, c->last_done.event);
            c->last_done = (struct marker){NULL, NULL};
            mark(c, stream);
            c->last_sample_ns = hami_now_ns();
        }
        restore(mode);
        pthread_mutex_unlock(&chain_lock);
        settle(dev, busy, hami_now_ns());
    }
}
