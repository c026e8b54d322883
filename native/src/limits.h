/* Limits from the environment HAMi's device plugin sets, decoded once. */
#ifndef HAMI_LIMITS_H
#define HAMI_LIMITS_H

#include <stddef.h>
#include <stdint.h>

#define HAMI_MAX_DEVICES 16

enum hami_policy { HAMI_POLICY_DEFAULT = 0, HAMI_POLICY_FORCE = 1, HAMI_POLICY_DISABLE = 2 };

struct hami_limits {
    uint64_t memory[HAMI_MAX_DEVICES]; /* bytes; 0 = unlimited */
    int memory_invalid[HAMI_MAX_DEVICES]; /* malformed: refuse every allocation (fail closed) */
    int sm_percent;                       /* 0 or 100 = not throttled */
    int sm_invalid;
    enum hami_policy policy;
    int priority;     /* 0 high, 1 low */
    int oversubscribe;
};

/* Parse "3000m", "3g", "1024k", "12345" (bytes); returns 0 on success. */
int hami_parse_size(const char *text, uint64_t *bytes);
/* Fill limits from a getenv-like lookup (injectable for tests). */
void hami_limits_load(struct hami_limits *out, const char *(*lookup)(const char *name));

/* Read a limits file (NAME=VALUE lines, the environment's names) into out; its
 * CUDA_DEVICE_MEMORY_SHARED_CACHE into cache. Returns 0 when there is no readable file. */
int hami_limits_read_file(const char *path, struct hami_limits *out, char *cache,
                          size_t cache_len);
/* The stricter of into and file for memory and the share; the file's policy, priority and
 * oversubscription (the environment cannot loosen them). */
void hami_limits_merge(struct hami_limits *into, const struct hami_limits *file);

/* Where the node agent mounts the container's limits file, read-only. */
#ifndef HAMI_DEFAULT_LIMITS_FILE
#define HAMI_DEFAULT_LIMITS_FILE "/usr/local/vgpu/limits"
#endif

#endif
