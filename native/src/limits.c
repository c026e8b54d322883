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

/* ---- the limits file: the same names, one NAME=VALUE per line, written by whoever placed the
 * job (the node agent, `hami run`) where the job cannot write it ---- */

#define FILE_MAX 16384
#define FILE_ENTRIES 64
static char file_text[FILE_MAX];
static const char *file_names[FILE_ENTRIES], *file_values[FILE_ENTRIES];
static int file_count;

static const char *file_lookup(const char *name) {
    for (int i = 0; i < file_count; i++)
        if (strcmp(file_names[i], name) == 0) return file_values[i];
    return NULL;
}

static char *trim(char *s) {
    while (isspace((unsigned char)*s)) s++;
    char *end = s + strlen(s);
    while (end > s && isspace((unsigned char)end[-1])) *--end = '\0';
    return s;
}

int hami_limits_read_file(const char *path, struct hami_limits *out, char *cache,
                          size_t cache_len) {
    FILE *f = fopen(path, "re");
    if (f == NULL) return 0;
    size_t n = fread(file_text, 1, sizeof(file_text) - 1, f);
    int too_long = !feof(f);
    fclose(f);
    file_text[n] = '\0';
    file_count = 0;
    if (too_long) {
        /* Fail closed: a limits file we cannot read whole limits everything. */
        LOG_ERROR("limits file %s is larger than %d bytes: device memory refused", path, FILE_MAX);
        hami_limits_load(out, file_lookup);
        for (int i = 0; i < HAMI_MAX_DEVICES; i++) out->memory_invalid[i] = 1;
        return 1;
    }
    for (char *line = strtok(file_text, "\n"); line != NULL && file_count < FILE_ENTRIES;
         line = strtok(NULL, "\n")) {
        line = trim(line);
        char *eq = strchr(line, '=');
        if (*line == '#' || *line == '\0') continue;
        if (eq == NULL) {
            LOG_ERROR("limits file %s: line \"%s\" is not NAME=VALUE; ignored", path, line);
            continue;
        }
        *eq = '\0';
        file_names[file_count] = trim(line);
        file_values[file_count] = trim(eq + 1);
        file_count++;
    }
    hami_limits_load(out, file_lookup);
    const char *named = file_lookup("CUDA_DEVICE_MEMORY_SHARED_CACHE");
    if (cache != NULL && cache_len > 0) {
        cache[0] = '\0';
        if (named != NULL && strlen(named) < cache_len) strcpy(cache, named);
    }
    file_count = 0;
    return 1;
}

static uint64_t stricter_bytes(uint64_t a, uint64_t b) {
    if (a == 0) return b;
    if (b == 0) return a;
    return a < b ? a : b;
}

static int throttles(int percent) { return percent > 0 && percent < 100; }

void hami_limits_merge(struct hami_limits *into, const struct hami_limits *file) {
    for (int i = 0; i < HAMI_MAX_DEVICES; i++) {
        into->memory[i] = stricter_bytes(into->memory[i], file->memory[i]);
        into->memory_invalid[i] |= file->memory_invalid[i];
    }
    if (throttles(file->sm_percent) &&
        (!throttles(into->sm_percent) || file->sm_percent < into->sm_percent))
        into->sm_percent = file->sm_percent;
    into->sm_invalid |= file->sm_invalid;
    /* The placement's own word on how the share is applied: the job cannot loosen it. */
    into->policy = file->policy;
    into->priority = file->priority;
    into->oversubscribe = file->oversubscribe;
}
