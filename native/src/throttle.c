#include "throttle.h"

void hami_bucket_refill(struct hami_bucket *b, uint64_t now_ns, int share_percent, int64_t cap_ns) {
    if (b->refill_ns == 0 || now_ns < b->refill_ns) {
        b->refill_ns = now_ns;
        if (b->tokens_ns > cap_ns) b->tokens_ns = cap_ns;
        return;
    }
    uint64_t elapsed = now_ns - b->refill_ns;
    int64_t add = (int64_t)(elapsed / 100 * (uint64_t)share_percent);
    b->tokens_ns = b->tokens_ns + add > cap_ns ? cap_ns : b->tokens_ns + add;
    b->refill_ns = now_ns;
}

void hami_bucket_consume(struct hami_bucket *b, uint64_t busy_ns) {
    b->tokens_ns -= (int64_t)busy_ns;
}

uint64_t hami_bucket_wait_ns(const struct hami_bucket *b, int share_percent) {
    if (b->tokens_ns >= 0 || share_percent <= 0) return 0;
    return (uint64_t)(-b->tokens_ns) * 100 / (uint64_t)share_percent;
}
