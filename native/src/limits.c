#include "limits.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

int hami_parse_size(const char *text, uint64_t *bytes) {
    if (text == NULL) return -1;
    while (isspace((unsigned char)*text)) text++;
    if (!isdigit((unsigned char)*text)) return -1;
    errno = 0;
    char *end = NULL;
    unsigned long long value = strtoull(text, &end, 10);
    if (errno != 0) return -1;
    uint64_t unit = 1;
    switch (tolower((unsigned char)*end)) {
    case '\0': break;
    case 'k': unit = 1ULL << 10; end++; break;
    case 'm': unit = 1ULL << 20; end++; break;
    case 'g': unit = 1ULL << 30; end++; break;
    case 't': unit = 1ULL << 40; end++; break;
    default: return -1;
    }
    if (unit > 1 && (*end == 'i' || *end == 'I')) end++;
    if (unit > 1 && (*end == 'b' || *end == 'B')) end++;
    while (isspace((unsigned char)*end)) end++;
    if (*end != '\0') return -1;
    if (value > UINT64_MAX / unit) return -1;
    *bytes = (uint64_t)value * unit;
    return 0;
}

static int parse_percent(const char *text, int *out) {
    if (text == NULL || *text == '\0') return -1;
    char *end = NULL;
    errno = 0;
    long value = strtol(text, &end, 10);
    if (errno != 0 || *end != '\0' || value < 0 || value > 100) return -1;
    *out = (int)value;
    return 0;
}

void hami_limits_load(struct hami_limits *out, const char *(*lookup)(const char *name)) {
    memset(out, 0, sizeof(*out));
    out->priority = 1;
    uint64_t all = 0;
    int all_invalid = 0;
    const char *text = lookup("CUDA_DEVICE_MEMORY_LIMIT");
    if (text != NULL && *text != '\0' && hami_parse_size(text, &all) != 0) {
        LOG_ERROR("CUDA_DEVICE_MEMORY_LIMIT=%s is malformed: device memory allocations refused", text);
        all_invalid = 1;
    }
    for (int i = 0; i < HAMI_MAX_DEVICES; i++) {
        char name[64];
        snprintf(name, sizeof(name), "CUDA_DEVICE_MEMORY_LIMIT_%d", i);
        out->memory[i] = all;
        out->memory_invalid[i] = all_invalid;
        text = lookup(name);
        if (text == NULL || *text == '\0') continue;
        uint64_t bytes = 0;
        if (hami_parse_size(text, &bytes) != 0) {
            LOG_ERROR("%s=%s is malformed: allocations on device %d refused", name, text, i);
            out->memory_invalid[i] = 1;
        } else {
            out->memory[i] = bytes;
            out->memory_invalid[i] = 0;
        }
    }
    text = lookup("CUDA_DEVICE_SM_LIMIT");
    if (text != NULL && *text != '\0' && parse_percent(text, &out->sm_percent) != 0) {
        LOG_ERROR("CUDA_DEVICE_SM_LIMIT=%s is malformed (0-100): kernel launches refused", text);
        out->sm_invalid = 1;
    }
    text = lookup("GPU_CORE_UTILIZATION_POLICY");
    if (text != NULL && strcasecmp(text, "force") == 0) out->policy = HAMI_POLICY_FORCE;
    else if (text != NULL && strcasecmp(text, "disable") == 0) out->policy = HAMI_POLICY_DISABLE;
    text = lookup("CUDA_TASK_PRIORITY");
    if (text != NULL && strcmp(text, "0") == 0) out->priority = 0;
    text = lookup("CUDA_OVERSUBSCRIBE");
    out->oversubscribe = text != NULL && (strcasecmp(text, "true") == 0 || strcmp(text, "1") == 0);
}
