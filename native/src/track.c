#include "track.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct entry {
    uint64_t key; /* 0: empty; keys are device addresses or handles, never 0 */
    struct hami_alloc value;
    int tombstone;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct entry *table;
static size_t capacity; /* power of two */
static size_t used;     /* live + tombstones */
static size_t live;

static size_t slot_of(uint64_t key) {
    key ^= key >> 33;
    key *= 0xff51afd7ed558ccdULL;
    key ^= key >> 33;
    return (size_t)key & (capacity - 1);
}

static int grow(void) {
    size_t old_capacity = capacity;
    struct entry *old = table;
    /* Double only when live entries need it; otherwise rehash in place to drop tombstones. */
    size_t next = capacity == 0 ? 1024 : (live + 1) * 4 > capacity ? capacity * 2 : capacity;
    struct entry *fresh = calloc(next, sizeof(*fresh));
    if (fresh == NULL) return -1;
    table = fresh;
    capacity = next;
    used = 0;
    for (size_t i = 0; i < old_capacity; i++) {
        if (old[i].key != 0 && !old[i].tombstone) {
            size_t j = slot_of(old[i].key);
            while (table[j].key != 0) j = (j + 1) & (capacity - 1);
            table[j] = old[i];
            used++;
        }
    }
    free(old);
    return 0;
}

void hami_track_put(uint64_t key, struct hami_alloc value) {
    if (key == 0) return;
    pthread_mutex_lock(&lock);
    if ((used + 1) * 2 > capacity && grow() != 0) {
        pthread_mutex_unlock(&lock);
        return; /* out of host memory: the allocation is counted but will not be untracked */
    }
    size_t i = slot_of(key), reuse = SIZE_MAX;
    while (table[i].key != 0) {
        if (table[i].key == key && !table[i].tombstone) break; /* replace a live entry */
        if (table[i].tombstone && reuse == SIZE_MAX) reuse = i;
        i = (i + 1) & (capacity - 1);
    }
    if (table[i].key == 0) {
        live++;
        if (reuse != SIZE_MAX) i = reuse; /* a freed slot on the way: no new slot used */
        else used++;
    }
    table[i].key = key;
    table[i].value = value;
    table[i].tombstone = 0;
    pthread_mutex_unlock(&lock);
}

int hami_track_take(uint64_t key, struct hami_alloc *out) {
    int found = 0;
    pthread_mutex_lock(&lock);
    if (capacity != 0) {
        size_t i = slot_of(key);
        while (table[i].key != 0) {
            if (table[i].key == key && !table[i].tombstone) {
                *out = table[i].value;
                table[i].tombstone = 1;
                live--;
                found = 1;
                break;
            }
            i = (i + 1) & (capacity - 1);
        }
    }
    pthread_mutex_unlock(&lock);
    return found;
}

int hami_track_update(uint64_t key, int (*fn)(struct hami_alloc *, void *), void *ctx,
                      struct hami_alloc *out) {
    int found = 0;
    pthread_mutex_lock(&lock);
    if (capacity != 0) {
        size_t i = slot_of(key);
        while (table[i].key != 0) {
            if (table[i].key == key && !table[i].tombstone) {
                found = 1;
                if (!fn(&table[i].value, ctx)) {
                    table[i].tombstone = 1;
                    live--;
                }
                *out = table[i].value;
                break;
            }
            i = (i + 1) & (capacity - 1);
        }
    }
    pthread_mutex_unlock(&lock);
    return found;
}
