/* Process-wide state of the library, set up once by hami_init(). */
#ifndef HAMI_VGPU_H
#define HAMI_VGPU_H

#include "hooks.h"
#include "limits.h"
#include "region.h"

struct hami_state {
    struct hami_limits limits;
    struct hami_region *region; /* NULL: accounting unavailable (fails closed where limited) */
    struct hami_region *compute; /* the compute budget: the shared region, else a private one */
    uint64_t context_reserve;   /* bytes charged per process per device on first use */
    int throttle;               /* compute limit active for this process */
};
extern struct hami_state hami;

int hami_current_device(void);
uint64_t hami_now_ns(void);
/* Launch bookkeeping for stream's device dev (sampler.c): the throttle returns the time the
 * launch may go, which the sample after it is given (one clock read per launch). */
uint64_t hami_throttle_launch(CUstream stream, int dev);
void hami_sample_after_launch(CUstream stream, int dev, uint64_t now);
/* Before the host waits for the device (a synchronisation). */
void hami_sample_before_wait(void);
/* Before a stream is destroyed. */
void hami_sample_stream_gone(CUstream stream);
/* Stream captures in progress in this process (capture hooks): 0 means no stream captures. */
extern int hami_captures;

#endif
