/* Units without a driver: size parsing, limits (fail closed), throttle arithmetic, region.
 * `test_units` runs them; `test_units lock-and-die PATH` locks a region's mutex and is killed
 * holding it (the kill -9 test); `test_units used PATH DEV` prints the container's use. */
#define _GNU_SOURCE
#include <assert.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "limits.h"
#include "region.h"
#include "throttle.h"

int hami_log_level = 0;
#include "check.h"

static const char *fake_env[][2] = {
    {"CUDA_DEVICE_MEMORY_LIMIT", "1g"}, {"CUDA_DEVICE_MEMORY_LIMIT_1", "3000m"},
    {"CUDA_DEVICE_MEMORY_LIMIT_2", "lots"}, {"CUDA_DEVICE_SM_LIMIT", "30"},
    {"GPU_CORE_UTILIZATION_POLICY", "FORCE"}, {"CUDA_TASK_PRIORITY", "0"},
    {"CUDA_OVERSUBSCRIBE", "true"}, {NULL, NULL}};
static const char *lookup(const char *name) {
    for (int i = 0; fake_env[i][0]; i++)
        if (!strcmp(fake_env[i][0], name)) return fake_env[i][1];
    return NULL;
}
static const char *bad_sm(const char *name) {
    return !strcmp(name, "CUDA_DEVICE_SM_LIMIT") ? "150" : NULL;
}

static void test_sizes(void) {
    uint64_t b = 0;
    CHECK(hami_parse_size("3000m", &b) == 0 && b == 3000ULL << 20);
    CHECK(hami_parse_size("3g", &b) == 0 && b == 3ULL << 30);
    CHECK(hami_parse_size("3Gi", &b) == 0 && b == 3ULL << 30);
    CHECK(hami_parse_size("2GB", &b) == 0 && b == 2ULL << 30);
    CHECK(hami_parse_size("4096", &b) == 0 && b == 4096);
    CHECK(hami_parse_size("1k", &b) == 0 && b == 1024);
    CHECK(hami_parse_size("-1", &b) != 0);
    CHECK(hami_parse_size("3x", &b) != 0);
    CHECK(hami_parse_size("", &b) != 0);
    CHECK(hami_parse_size("99999999999999999999", &b) != 0);
    CHECK(hami_parse_size("99999999999t", &b) != 0);
}

static void test_limits(void) {
    struct hami_limits l;
    hami_limits_load(&l, lookup);
    CHECK(l.memory[0] == 1ULL << 30 && l.memory[5] == 1ULL << 30);
    CHECK(l.memory[1] == 3000ULL << 20);
    CHECK(l.memory_invalid[2] == 1 && l.memory_invalid[1] == 0);
    CHECK(l.sm_percent == 30 && !l.sm_invalid);
    CHECK(l.policy == HAMI_POLICY_FORCE && l.priority == 0 && l.oversubscribe == 1);
    hami_limits_load(&l, bad_sm);
    CHECK(l.sm_invalid == 1 && l.memory[0] == 0 && l.priority == 1);
}

static void test_bucket(void) {
    struct hami_bucket b = {0, 0};
    const int64_t cap = 20000000;
    hami_bucket_refill(&b, 1000000000ULL, 30, cap); /* first refill only sets the clock */
    CHECK(b.tokens_ns == 0 && b.refill_ns == 1000000000ULL);
    hami_bucket_refill(&b, 1010000000ULL, 30, cap); /* +10 ms wall at 30% = 3 ms */
    CHECK(b.tokens_ns == 3000000);
    hami_bucket_consume(&b, 9000000); /* 9 ms of GPU time used: 6 ms in debt */
    CHECK(b.tokens_ns == -6000000);
    CHECK(hami_bucket_wait_ns(&b, 30) == 20000000); /* 6 ms / 0.3 = 20 ms of wall time */
    hami_bucket_refill(&b, 1030000000ULL, 30, cap);
    CHECK(b.tokens_ns == 0 && hami_bucket_wait_ns(&b, 30) == 0);
    hami_bucket_refill(&b, 5030000000ULL, 30, cap); /* long idle: capped, no unbounded burst */
    CHECK(b.tokens_ns == cap);
    /* Convergence: a job that always has work and obeys the wait uses share * T (+ cap). */
    struct hami_bucket c = {0, 1};
    uint64_t now = 1, used = 0;
    for (int i = 0; i < 100000; i++) {
        hami_bucket_refill(&c, now, 25, cap);
        uint64_t wait = hami_bucket_wait_ns(&c, 25);
        if (wait) { now += wait; continue; }
        hami_bucket_consume(&c, 100000); /* a 100 us kernel */
        used += 100000;
        now += 100000;
    }
    double share = (double)used / (double)now;
    CHECK(share > 0.24 && share < 0.26);
}

static void test_region(void) {
    char path[] = "/tmp/hami-region-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    close(fd);
    unlink(path);
    struct hami_limits l;
    memset(&l, 0, sizeof(l));
    l.memory[0] = 100;
    struct hami_region *r = hami_region_open(path, &l);
    CHECK(r != NULL && r->magic == HAMI_REGION_MAGIC && r->version == HAMI_REGION_VERSION);
    CHECK(hami_region_reserve(r, 0, 60, 100, 0) == 0);
    CHECK(hami_region_reserve(r, 0, 50, 100, 0) == -1); /* would pass 100 */
    CHECK(hami_region_reserve(r, 0, 40, 100, 0) == 0);
    CHECK(hami_region_reserve(r, 0, 500, 100, 1) == 0); /* oversubscription: counted apart */
    hami_region_lock(r);
    CHECK(hami_region_used(r, 0) == 100 && hami_region_oversub(r, 0) == 500);
    hami_region_unlock(r);
    hami_region_release(r, 0, 1000, 0); /* more than held: clamps at zero, no underflow */
    hami_region_lock(r);
    CHECK(hami_region_used(r, 0) == 0);
    hami_region_unlock(r);
    /* A second opener with a stricter limit tightens it; a looser one does not loosen it. */
    l.memory[0] = 50;
    struct hami_region *again = hami_region_open(path, &l);
    CHECK(again != NULL && again->limit[0] == 50);
    l.memory[0] = 500;
    again = hami_region_open(path, &l);
    CHECK(again != NULL && again->limit[0] == 50);
    unlink(path);
}

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "lock-and-die")) {
        struct hami_limits l;
        memset(&l, 0, sizeof(l));
        struct hami_region *r = hami_region_open(argv[2], &l);
        if (r == NULL) return 2;
        hami_region_lock(r);
        hami_region_slot(r)->used[0] = 12345; /* held by a process about to die, and the */
        /* total not yet updated: recovery must recount */
        printf("locked\n");
        fflush(stdout);
        raise(SIGKILL);
    }
    if (argc == 4 && !strcmp(argv[1], "used")) {
        struct hami_limits l;
        memset(&l, 0, sizeof(l));
        struct hami_region *r = hami_region_open(argv[2], &l);
        if (r == NULL) return 2;
        hami_region_lock(r);
        hami_region_reap(r);
        printf("%llu\n", (unsigned long long)hami_region_used(r, atoi(argv[3])));
        hami_region_unlock(r);
        return 0;
    }
    test_sizes();
    test_limits();
    test_bucket();
    test_region();
    printf("test_units: %s\n", failures ? "FAILED" : "ok");
    return failures ? 1 : 0;
}
