#define _GNU_SOURCE
#include "region.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"

uint64_t hami_process_start_ticks(int pid) {
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    FILE *f = fopen(path, "re");
    if (f == NULL) return 0;
    char buf[1024];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* The command name (field 2) may hold spaces and parentheses: count from the last ')'. */
    char *p = strrchr(buf, ')');
    if (p == NULL) return 0;
    int field = 2;
    for (p++; *p != '\0' && field < 22; p++) {
        if (*p == ' ') field++;
    }
    return strtoull(p, NULL, 10);
}

/* Slot ownership. Where the region is a file, a process owns its slot by holding an
 * open-file-description lock on one byte past the end of the file (offset region size + slot
 * index): the kernel drops the lock when the process dies (or execs), whatever PID namespace it
 * or the reader lives in, and a new process with a reused PID cannot hold it. Slots of that
 * kind carry SLOT_LOCKED; without OFD locks (an anonymous region, or a kernel without them)
 * liveness falls back to the PID and its start time. */
#define SLOT_LOCKED 1
static int lock_fd = -1;          /* this process's own open file description of the region */
static int cached_pid;            /* getpid() is a system call: asked once per process */

int hami_pid(void) {
    int pid = __atomic_load_n(&cached_pid, __ATOMIC_RELAXED);
    if (pid == 0) {
        pid = getpid();
        __atomic_store_n(&cached_pid, pid, __ATOMIC_RELAXED);
    }
    return pid;
}
static char lock_path[4096];
static int own_slot = -1, own_pid;

static struct flock slot_lock(int index, short type) {
    struct flock l = {0};
    l.l_type = type;
    l.l_whence = SEEK_SET;
    l.l_start = (off_t)sizeof(struct hami_region) + index;
    l.l_len = 1;
    return l;
}

/* 1 when the slot's owner is certainly gone. */
static int process_gone(const struct hami_region *r, const struct hami_proc_slot *s) {
    if (s->reserved & SLOT_LOCKED) {
        if (lock_fd < 0) return 0; /* cannot tell: assume alive (keeps its charge) */
        struct flock probe = slot_lock((int)(s - r->slots), F_WRLCK);
        if (fcntl(lock_fd, F_OFD_GETLK, &probe) != 0) return 0;
        return probe.l_type == F_UNLCK;
    }
    if (kill(s->pid, 0) != 0 && errno == ESRCH) return 1;
    uint64_t ticks = hami_process_start_ticks(s->pid);
    return ticks != 0 && s->start_ticks != 0 && ticks != s->start_ticks;
}

/* After fork the child shares the parent's open file description, and so its locks: it gets
 * one of its own, and a slot of its own on first use. */
static void region_after_fork(void) {
    cached_pid = getpid();
    own_slot = -1;
    if (lock_fd < 0) return;
    int fd = open(lock_path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
    close(lock_fd); /* the parent's lock stays: the parent still holds the description */
    lock_fd = fd;
}

__attribute__((constructor)) static void region_atfork(void) {
    pthread_atfork(NULL, NULL, region_after_fork);
}

static void init_header(struct hami_region *r, const struct hami_limits *limits) {
    memset(r, 0, offsetof(struct hami_region, slots));
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
    pthread_mutex_init(&r->lock, &attr);
    pthread_mutexattr_destroy(&attr);
    for (int i = 0; i < HAMI_MAX_DEVICES; i++) r->limit[i] = limits->memory[i];
    r->sm_limit = limits->sm_percent;
    r->header_bytes = (uint32_t)offsetof(struct hami_region, slots);
    r->slot_count = HAMI_MAX_PROCS;
    r->version = HAMI_REGION_VERSION;
    __atomic_store_n(&r->magic, HAMI_REGION_MAGIC, __ATOMIC_RELEASE); /* last: marks it ready */
}

struct hami_region *hami_region_open(const char *path, const struct hami_limits *limits) {
    size_t size = sizeof(struct hami_region);
    if (path == NULL || *path == '\0') {
        void *mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (mem == MAP_FAILED) return NULL;
        init_header(mem, limits);
        return mem;
    }
    /* 0600 whatever the umask: the region is the container's own (its processes share a uid). */
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        LOG_ERROR("cannot open shared region %s: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    /* flock is released by the kernel if we die here, so initialisation cannot wedge others. */
    if (flock(fd, LOCK_EX) != 0 || fstat(fd, &st) != 0) {
        LOG_ERROR("cannot lock shared region %s: %s", path, strerror(errno));
        close(fd);
        return NULL;
    }
    if (st.st_size == 0) { /* ours to create: size and mode it */
        if (fchmod(fd, 0600) != 0 || ftruncate(fd, (off_t)size) != 0 || fstat(fd, &st) != 0) {
            LOG_ERROR("cannot size shared region %s: %s", path, strerror(errno));
            close(fd);
            return NULL;
        }
    } else if ((size_t)st.st_size != size) {
        /* Another layout (or not a region): never modified, never truncated. */
        LOG_ERROR("shared region %s is %lld bytes, not the %zu of layout version %u; left as it is",
                  path, (long long)st.st_size, size, HAMI_REGION_VERSION);
        close(fd);
        return NULL;
    }
    struct hami_region *r = NULL;
    if ((size_t)st.st_size == size) {
        void *mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (mem != MAP_FAILED) r = mem;
    }
    if (r != NULL) {
        if (__atomic_load_n(&r->magic, __ATOMIC_ACQUIRE) != HAMI_REGION_MAGIC) {
            init_header(r, limits);
        } else if (r->version != HAMI_REGION_VERSION ||
                   r->header_bytes != offsetof(struct hami_region, slots) ||
                   r->slot_count != HAMI_MAX_PROCS) {
            LOG_ERROR("shared region %s has layout version %u (%u header bytes, %u slots), this "
                      "library %u: not used", path, r->version, r->header_bytes, r->slot_count,
                      HAMI_REGION_VERSION);
            munmap(r, size);
            r = NULL;
        } else if (hami_region_lock(r) != 0) {
            LOG_ERROR("shared region %s: its lock is unusable (corrupt): not used", path);
            munmap(r, size);
            r = NULL;
        } else {
            for (int i = 0; i < HAMI_MAX_DEVICES; i++) {
                uint64_t mine = limits->memory[i];
                if (mine != 0 && (r->limit[i] == 0 || mine < r->limit[i])) {
                    if (r->limit[i] != 0)
                        LOG_WARN("device %d: limit %llu differs from the region's %llu; using the "
                                 "stricter", i, (unsigned long long)mine,
                                 (unsigned long long)r->limit[i]);
                    r->limit[i] = mine;
                }
            }
            int sm = limits->sm_percent;
            if (sm > 0 && sm < 100 && (r->sm_limit <= 0 || r->sm_limit >= 100 || sm < r->sm_limit))
                r->sm_limit = sm;
            hami_region_unlock(r);
        }
    }
    flock(fd, LOCK_UN);
    if (r != NULL && lock_fd < 0 && strlen(path) < sizeof(lock_path)) {
        strcpy(lock_path, path);
        lock_fd = fd; /* kept open: the slot's ownership lock lives on this description */
    } else {
        close(fd);
    }
    return r;
}

int hami_region_lock(struct hami_region *r) {
    int rc = pthread_mutex_lock(&r->lock);
    if (rc == EOWNERDEAD) {
        /* Its owner died inside the critical section. Our updates are single stores, so the
         * counters are whole; the dead process's slot is reaped below. */
        LOG_WARN("shared region lock owner died; recovering");
        if (pthread_mutex_consistent(&r->lock) != 0) rc = ENOTRECOVERABLE;
        else rc = 0;
        if (rc == 0) {
            hami_region_reap(r);
            hami_region_recount(r); /* it may have died between a slot update and the total's */
        }
    }
    if (rc != 0) {
        /* ENOTRECOVERABLE, EINVAL (bytes that are not a mutex any more), EDEADLK: the region
         * cannot be trusted; callers refuse (memory) or fall back to a private budget. */
        static int told;
        if (!__atomic_exchange_n(&told, 1, __ATOMIC_RELAXED))
            LOG_ERROR("shared region lock failed (%s): failing closed", strerror(rc));
        return -1;
    }
    return 0;
}

void hami_region_unlock(struct hami_region *r) { pthread_mutex_unlock(&r->lock); }

/* Claim slot i for this process: with OFD locks, only if nobody holds its lock. */
static int claim(struct hami_region *r, int i) {
    int locked = 0;
    if (lock_fd >= 0 && r != NULL) {
        struct flock l = slot_lock(i, F_WRLCK);
        if (fcntl(lock_fd, F_OFD_SETLK, &l) != 0) {
            if (errno == EAGAIN || errno == EACCES) return 0; /* someone alive owns it */
        } else {
            locked = 1;
        }
    }
    struct hami_proc_slot *s = &r->slots[i];
    if (s->pid != 0) { /* a dead owner's charge leaves with it */
        for (int d = 0; d < HAMI_MAX_DEVICES; d++)
            r->used[d] = r->used[d] >= s->used[d] ? r->used[d] - s->used[d] : 0;
    }
    memset(s, 0, sizeof(*s));
    s->start_ticks = hami_process_start_ticks(hami_pid());
    s->pid = hami_pid();
    s->reserved = locked ? SLOT_LOCKED : 0;
    return 1;
}

struct hami_proc_slot *hami_region_slot(struct hami_region *r) {
    int pid = hami_pid();
    if (own_pid == pid && own_slot >= 0) return &r->slots[own_slot];
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < HAMI_MAX_PROCS; i++) {
            struct hami_proc_slot *s = &r->slots[i];
            int free_now = s->pid == 0 || (pass == 1 && process_gone(r, s));
            if (free_now && claim(r, i)) {
                own_pid = pid;
                own_slot = i;
                return s;
            }
        }
    }
    return NULL;
}

void hami_region_recount(struct hami_region *r) {
    for (int d = 0; d < HAMI_MAX_DEVICES; d++) {
        uint64_t total = 0;
        for (int i = 0; i < HAMI_MAX_PROCS; i++)
            if (r->slots[i].pid != 0) total += r->slots[i].used[d];
        r->used[d] = total;
    }
}

int hami_region_reap(struct hami_region *r) {
    int freed = 0;
    for (int i = 0; i < HAMI_MAX_PROCS; i++) {
        struct hami_proc_slot *s = &r->slots[i];
        if (s->pid != 0 && !(own_pid == hami_pid() && i == own_slot) && process_gone(r, s)) {
            for (int d = 0; d < HAMI_MAX_DEVICES; d++)
                r->used[d] = r->used[d] >= s->used[d] ? r->used[d] - s->used[d] : 0;
            /* Slots stay where they are: others keep their indices. */
            memset(s, 0, sizeof(*s));
            freed++;
        }
    }
    return freed;
}

uint64_t hami_region_used(const struct hami_region *r, int dev) { return r->used[dev]; }

uint64_t hami_region_used_now(struct hami_region *r, int dev) {
    if (hami_region_lock(r) != 0) return UINT64_MAX; /* unusable: nothing is free */
    hami_region_reap(r);
    uint64_t used = r->used[dev];
    hami_region_unlock(r);
    return used;
}

uint64_t hami_region_oversub(const struct hami_region *r, int dev) {
    uint64_t total = 0;
    for (int i = 0; i < HAMI_MAX_PROCS; i++)
        if (r->slots[i].pid != 0) total += r->slots[i].oversub[dev];
    return total;
}

int hami_region_reserve(struct hami_region *r, int dev, uint64_t bytes, uint64_t limit,
                        int oversub) {
    if (hami_region_lock(r) != 0) return -1;
    struct hami_proc_slot *slot = hami_region_slot(r);
    int ok = slot != NULL;
    if (ok && !oversub && limit != 0) {
        uint64_t used = hami_region_used(r, dev);
        if (used + bytes > limit || used + bytes < used) {
            hami_region_reap(r); /* a dead process may still hold some: count again */
            used = hami_region_used(r, dev);
            ok = used + bytes <= limit && used + bytes >= used;
        }
    }
    if (ok && oversub) {
        slot->oversub[dev] += bytes;
    } else if (ok) {
        slot->used[dev] += bytes;
        r->used[dev] += bytes;
    }
    hami_region_unlock(r);
    return ok ? 0 : -1;
}

void hami_region_release(struct hami_region *r, int dev, uint64_t bytes, int oversub) {
    if (hami_region_lock(r) != 0) return; /* the charge stays: never less than what is held */
    struct hami_proc_slot *slot = hami_region_slot(r);
    if (slot != NULL) {
        uint64_t *counter = oversub ? &slot->oversub[dev] : &slot->used[dev];
        uint64_t taken = *counter >= bytes ? bytes : *counter; /* never underflow */
        *counter -= taken;
        if (!oversub) r->used[dev] = r->used[dev] >= taken ? r->used[dev] - taken : 0;
    }
    hami_region_unlock(r);
}
