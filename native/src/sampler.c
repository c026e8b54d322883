/* Measuring the container's GPU time with CUDA events, and waiting when its budget is spent.
 *
 * One chain of marker events per process and device, whatever stream or thread launched:
 * about once per millisecond a marker is recorded after a launch. The chain keeps the marker
 * that completed latest (its "frontier"); a newly completed marker after the frontier moves it,
 * and the time it moved (cuEventElapsedTime works across streams of a context) is work done on
 * the device. Work of several streams that overlaps is counted once (as device time, which is what
 * a share of the device means). Idle time between two markers would be counted too, so the
 * chain restarts across idle time: whenever the device has drained (every marker completed and
 * every stream launched into since idle) at a launch that follows GAP_NS without launches, a
 * sampling period without samples, or a throttle sleep, a marker recorded before that launch
 * starts a new chain. A launch after a gap is sampled at once (a marker behind it), and a
 * synchronisation records markers before it waits, so the end of a sparse launch or of a
 * burst is known; idle stretches shorter than GAP_NS between launches still count as work
 * (conservative). Before the throttle sleeps it records a marker (so every launch so far is
 * covered).
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
#define GAP_NS 200000ULL       /* no launch on a device for this long: it may have drained */

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
    uint64_t last_launch_ns; /* when the device was last given work, to GAP_NS / 8 */
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
/* This thread's launch followed a gap (set by the throttle, taken by the sample after it). */
static __thread int after_gap;

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

/* Take the chain (lock it, and relax this thread's capture mode for our event calls), and give
 * it back. */
static CUstreamCaptureMode enter(void) {
    pthread_mutex_lock(&chain_lock);
    return relax();
}

static void leave(CUstreamCaptureMode mode) {
    restore(mode);
    pthread_mutex_unlock(&chain_lock);
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
 * marker could not be recorded stays dirty, and so does one that began a capture since its
 * launch (a marker there would become a node of the program's graph). */
static void mark_dirty(struct chain *c) {
    int kept = 0;
    for (int i = 0; i < c->ndirty; i++)
        if (hami_stream_capturing(c->dirty[i]) || !mark(c, c->dirty[i]))
            c->dirty[kept++] = c->dirty[i];
    c->ndirty = kept;
    __atomic_store_n(&c->epoch, c->epoch + 1, __ATOMIC_RELEASE);
}

/* Nothing the device was given is pending (chain_lock held, relaxed, after collect): every
 * marker has completed (the frontier always has), and every stream launched into since its last
 * marker is idle, so the chain may restart without losing work. Asking the streams, not only
 * the markers, matters: a stream whose marker could not be recorded (a full ring, a thread
 * descheduled between its launch and its next sample) would otherwise keep the chain from
 * restarting across a throttle sleep, and the sleep would be counted as work, which makes the
 * next sleep longer. A capturing stream must not be queried: it counts as busy. */
static int drained(const struct chain *c) {
    if (c->count != 0 || c->overflow) return 0;
    for (int i = 0; i < c->ndirty; i++)
        if (hami_real.cuStreamQuery == NULL || hami_stream_capturing(c->dirty[i]) ||
            hami_real.cuStreamQuery(c->dirty[i]) != CUDA_SUCCESS)
            return 0;
    return 1;
}

/* Drop the frontier and start a new chain at a marker recorded on stream before the launch that
 * follows, so the idle time since the last work is not counted (chain_lock held, relaxed, the
 * chain drained: no stream has uncovered work, so none stays dirty). */
static void restart(struct chain *c, CUstream stream) {
    give_event(c, c->last_done.event);
    c->last_done = (struct marker){NULL, NULL};
    c->ndirty = 0;
    __atomic_store_n(&c->epoch, c->epoch + 1, __ATOMIC_RELEASE);
    mark(c, stream);
}

/* A sampling period has passed since last, which another thread may have moved past now. */
static int period_over(uint64_t now, uint64_t last) {
    return now >= last + SAMPLE_NS;
}

static int settles(int dev) {
    return !(hami.limits.policy == HAMI_POLICY_DEFAULT && hami.compute->relaxed[dev]);
}

void hami_sample_after_launch(CUstream stream, int dev, uint64_t now) {
    if (hami_real.cuEventRecord == NULL || hami_real.cuEventQuery == NULL) return;
    struct chain *c = &chains[dev];
    int due = after_gap; /* a launch after a gap is timed to its end: the next may restart */
    after_gap = 0;
    uint64_t epoch = __atomic_load_n(&c->epoch, __ATOMIC_ACQUIRE);
    int known = noted.stream == stream && noted.dev == dev && noted.epoch == epoch;
    if (known && !due && !period_over(now, __atomic_load_n(&c->last_sample_ns, __ATOMIC_RELAXED)))
        return; /* already dirty, and not time to sample: nothing to do */
    pthread_mutex_lock(&chain_lock);
    note_launch(c, stream);
    noted.stream = stream;
    noted.dev = dev;
    noted.epoch = c->epoch;
    now = hami_now_ns(); /* the launch may have blocked: the budget is settled at this time */
    if (!due && !period_over(now, c->last_sample_ns)) {
        pthread_mutex_unlock(&chain_lock);
        return;
    }
    __atomic_store_n(&c->last_sample_ns, now, __ATOMIC_RELAXED);
    CUstreamCaptureMode mode = relax();
    uint64_t busy = collect(c);
    mark_dirty(c);
    c->overflow = 0;
    leave(mode);
    if (settles(dev)) settle(dev, busy, now);
}

/* A launch after GAP_NS without launches, or a sampling period after the last sample: if
 * everything before it has completed, the device has been idle since, and the chain restarts
 * here rather than count that idle time (however long) as work at the next sample. The sample
 * after a launch that follows a gap records a marker right behind it, so a job of sparse
 * launches is measured launch by launch (two markers per launch, paid only by launches that
 * follow a gap of at least GAP_NS). */
static void restart_after_gap(struct chain *c, CUstream stream, int dev, uint64_t now, int gap) {
    if (hami_real.cuEventRecord == NULL || hami_real.cuEventQuery == NULL) return;
    pthread_mutex_lock(&chain_lock);
    if (!gap && !period_over(now, c->last_sample_ns)) { /* another thread sampled meanwhile */
        pthread_mutex_unlock(&chain_lock);
        return;
    }
    CUstreamCaptureMode mode = relax();
    uint64_t busy = collect(c);
    if (drained(c)) restart(c, stream);
    leave(mode);
    if (busy > 0 && settles(dev)) settle(dev, busy, now);
}

/* Before the host waits for the device, cover every stream's work with a marker: the marker
 * completes when that work does, so the last launches of a burst are timed to their end and the
 * idle time after the wait is not. One marker per stream launched into since its last one. */
void hami_sample_before_wait(void) {
    if (!hami.throttle || hami_real.cuEventRecord == NULL) return;
    int locked = 0;
    CUstreamCaptureMode mode = CU_STREAM_CAPTURE_MODE_RELAXED;
    for (int d = 0; d < HAMI_MAX_DEVICES; d++) {
        if (__atomic_load_n(&chains[d].ndirty, __ATOMIC_RELAXED) == 0) continue;
        if (!locked) {
            mode = enter();
            locked = 1;
        }
        mark_dirty(&chains[d]);
    }
    if (locked) leave(mode);
}

/* A stream about to be destroyed leaves the dirty lists with a marker covering its work: its
 * handle must not be used again (a driver may give it to a new stream). If the marker cannot be
 * recorded, the chain does not restart before the next sample (it could lose that work). */
void hami_sample_stream_gone(CUstream stream) {
    if (!hami.throttle || hami_real.cuEventRecord == NULL) return;
    CUstreamCaptureMode mode = enter();
    for (int d = 0; d < HAMI_MAX_DEVICES; d++) {
        struct chain *c = &chains[d];
        for (int i = 0; i < c->ndirty; i++) {
            if (c->dirty[i] != stream) continue;
            if (hami_stream_capturing(stream) || !mark(c, stream)) c->overflow = 1;
            c->dirty[i] = c->dirty[--c->ndirty];
            __atomic_store_n(&c->epoch, c->epoch + 1, __ATOMIC_RELEASE);
            break;
        }
    }
    leave(mode);
}

static uint64_t collect_locked(struct chain *c) {
    CUstreamCaptureMode mode = enter();
    uint64_t busy = collect(c);
    leave(mode);
    return busy;
}

uint64_t hami_throttle_launch(CUstream stream, int dev) {
    struct chain *c = &chains[dev];
    struct hami_region *r = hami.compute;
    uint64_t now = hami_now_ns();
    uint64_t last_launch = __atomic_load_n(&c->last_launch_ns, __ATOMIC_RELAXED);
    after_gap = now >= last_launch + GAP_NS;
    if (now >= last_launch + GAP_NS / 8) /* a coarse time: threads rarely write the line */
        __atomic_store_n(&c->last_launch_ns, now, __ATOMIC_RELAXED);
    if (after_gap || period_over(now, __atomic_load_n(&c->last_sample_ns, __ATOMIC_RELAXED)))
        restart_after_gap(c, stream, dev, now, after_gap);
    /* Tokens left: no wait (a refill only adds). The common case costs one load. */
    if (__atomic_load_n(&r->tokens_ns[dev], __ATOMIC_RELAXED) >= 0) return now;
    if (!settles(dev)) return now;
    int slept = 0;
    for (int rounds = 0; rounds < 1000; rounds++) {
        /* Unlocked read: a stale value only delays the decision by one round. */
        struct hami_bucket b = {__atomic_load_n(&r->tokens_ns[dev], __ATOMIC_RELAXED),
                                __atomic_load_n(&r->refill_ns[dev], __ATOMIC_RELAXED)};
        hami_bucket_refill(&b, now, hami.limits.sm_percent, BURST_NS);
        uint64_t wait = hami_bucket_wait_ns(&b, hami.limits.sm_percent);
        if (wait == 0) break;
        if (!slept) { /* cover every launch made so far, on every stream */
            CUstreamCaptureMode mode = enter();
            mark_dirty(c);
            leave(mode);
        }
        slept = 1;
        if (wait > 50000000ULL) wait = 50000000ULL;
        struct timespec ts = {(time_t)(wait / 1000000000ULL), (long)(wait % 1000000000ULL)};
        nanosleep(&ts, NULL);
        now = hami_now_ns();
        /* While we wait, work already queued completes: count it, or we would wait forever. */
        settle(dev, collect_locked(c), now);
    }
    if (slept && hami_real.cuEventQuery != NULL) {
        CUstreamCaptureMode mode = enter();
        uint64_t busy = collect(c);
        /* Drained while we slept, and no work is left uncovered (another thread may have
         * launched since): restart the chain before this launch, so the sleep is not work. */
        if (drained(c)) {
            restart(c, stream);
            __atomic_store_n(&c->last_sample_ns, now, __ATOMIC_RELAXED);
        }
        leave(mode);
        settle(dev, busy, now);
    }
    return now;
}
