/* Compute limit: a token bucket of GPU time per device, shared by the container.
 *
 * Tokens refill at share x wall time (share = CUDA_DEVICE_SM_LIMIT / 100) up to a burst cap;
 * measured GPU busy time (CUDA events sampled about every millisecond) is taken out. A launch
 * waits while the bucket is negative. Over any interval T the GPU time used is at most
 * share*T + cap + one sampling period of work, and a job with enough work never waits while
 * tokens are positive, so its long-run share converges to the limit from both sides. The
 * measurement is GPU time itself, so it does not depend on the SM count. */
#ifndef HAMI_THROTTLE_H
#define HAMI_THROTTLE_H

#include <stdint.h>

struct hami_bucket {
    int64_t tokens_ns;
    uint64_t refill_ns;
};

/* Add share * (now - refill_ns) tokens, at most cap_ns in the bucket. */
void hami_bucket_refill(struct hami_bucket *b, uint64_t now_ns, int share_percent, int64_t cap_ns);
void hami_bucket_consume(struct hami_bucket *b, uint64_t busy_ns);
/* How long to wait before launching: 0 when tokens are non-negative. */
uint64_t hami_bucket_wait_ns(const struct hami_bucket *b, int share_percent);

#endif
