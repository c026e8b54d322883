/* Initialisation, symbol resolution, and the two ways callers find driver functions at run
 * time: dlsym and cuGetProcAddress. */
#define _GNU_SOURCE
#include "vgpu.h"

#include <dlfcn.h>
#include <elf.h>
#include <link.h>
#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

struct hami_real hami_real;
struct hami_state hami;
int hami_log_level;

/* dlsym is called by other runtimes' constructors before anything is set up (a sanitizer's
 * own initialisation resolves its interceptors through it): that path must not be
 * instrumented. */
#define EARLY __attribute__((no_sanitize("address", "undefined")))

typedef void *(*pfn_dlsym)(void *, const char *);
static pfn_dlsym real_dlsym;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static __thread int initialising;

EARLY static void find_real_dlsym(void) {
    if (real_dlsym != NULL) return;
    real_dlsym = (pfn_dlsym)dlvsym(RTLD_NEXT, "dlsym", "GLIBC_2.34");
    if (real_dlsym == NULL) real_dlsym = (pfn_dlsym)dlvsym(RTLD_NEXT, "dlsym", "GLIBC_2.2.5");
}

static void *open_driver(const char *name) {
    void *h = dlopen(name, RTLD_LAZY | RTLD_GLOBAL | RTLD_NOLOAD);
    return h != NULL ? h : dlopen(name, RTLD_LAZY | RTLD_GLOBAL);
}

static const char *env(const char *name) { return getenv(name); }

static void init_once(void) {
    initialising = 1;
    const char *level = getenv("LIBCUDA_LOG_LEVEL");
    hami_log_level = level != NULL ? atoi(level) : 0;
    find_real_dlsym();
    void *cuda = open_driver("libcuda.so.1");
    void *nvml = open_driver("libnvidia-ml.so.1");
#define RESOLVE(lib, name) hami_real.name = (pfn_##name)((lib) != NULL ? real_dlsym((lib), #name) : NULL);
#define RESOLVE_CUDA(name, ret, params, args) RESOLVE(cuda, name)
#define RESOLVE_NVML(name, ret, params, args) RESOLVE(nvml, name)
    HAMI_CUDA_HOOKS(RESOLVE_CUDA)
    HAMI_CUDA_USES(RESOLVE_CUDA)
    HAMI_NVML_HOOKS(RESOLVE_NVML)
    HAMI_NVML_USES(RESOLVE_NVML)
#undef RESOLVE_CUDA
#undef RESOLVE_NVML
#undef RESOLVE
    hami_limits_load(&hami.limits, env);
    const char *shared = getenv("CUDA_DEVICE_MEMORY_SHARED_CACHE");
    static char file_cache[4096];
    int authoritative = 0;
    const char *files[] = {HAMI_DEFAULT_LIMITS_FILE, getenv("HAMI_LIMITS_FILE")};
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        struct hami_limits from_file;
        char cache[4096];
        if (files[i] == NULL || *files[i] == '\0' ||
            !hami_limits_read_file(files[i], &from_file, cache, sizeof(cache)))
            continue;
        if (access(files[i], W_OK) == 0)
            LOG_WARN("limits file %s is writable by this job: its limits are advisory", files[i]);
        if (!authoritative) {
            /* The first file places the region: the environment cannot move the job to a
             * fresh, private one. */
            if (cache[0] != '\0') {
                strcpy(file_cache, cache);
                shared = file_cache;
            }
            hami_limits_merge(&hami.limits, &from_file);
            authoritative = 1;
        } else {
            struct hami_limits first = hami.limits;
            hami_limits_merge(&hami.limits, &from_file);
            hami.limits.policy = first.policy; /* only the first file's word on these */
            hami.limits.priority = first.priority;
            hami.limits.oversubscribe = first.oversubscribe;
        }
    }
    hami.context_reserve = 0;
    const char *reserve = getenv("HAMI_CONTEXT_RESERVE");
    if (reserve != NULL && hami_parse_size(reserve, &hami.context_reserve) != 0) {
        LOG_ERROR("HAMI_CONTEXT_RESERVE=%s is malformed; charging 0", reserve);
        hami.context_reserve = 0;
    }
    hami.region = hami_region_open(shared, &hami.limits);
    hami.compute = hami.region;
    if (hami.compute == NULL) {
        /* Fail closed: memory is refused where limited (no shared accounting), and the compute
         * share is still enforced, per process, from a private budget. */
        LOG_ERROR("shared region unavailable: memory limits refuse allocations, the compute "
                  "share is enforced per process");
        hami.compute = hami_region_open(NULL, &hami.limits);
    }
    /* A process started without the environment (or with a laxer one) is still bound by the
     * container's share as the region records it. */
    int region_sm = hami.region != NULL ? hami.region->sm_limit : 0;
    if (region_sm > 0 && region_sm < 100 && !hami.limits.sm_invalid &&
        (hami.limits.sm_percent <= 0 || hami.limits.sm_percent >= 100 ||
         region_sm < hami.limits.sm_percent))
        hami.limits.sm_percent = region_sm;
    int sm = hami.limits.sm_percent;
    hami.throttle = sm > 0 && sm < 100 && hami.limits.policy != HAMI_POLICY_DISABLE &&
                    hami.limits.priority != 0 && hami.compute != NULL;
    LOG_INFO("initialised: cuda=%s nvml=%s sm_limit=%d throttle=%d", cuda ? "yes" : "no",
             nvml ? "yes" : "no", sm, hami.throttle);
    initialising = 0;
}

void hami_init(void) {
    if (initialising) return; /* a hook reached from our own initialisation */
    pthread_once(&once, init_once);
}

uint64_t hami_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* String helpers of our own: libc's may be intercepted by a runtime that is not ready yet. */
EARLY static int same(const char *a, const char *b) {
    while (*a != '\0' && *a == *b) a++, b++;
    return *a == *b;
}

EARLY static int starts_with(const char *s, const char *prefix) {
    while (*prefix != '\0' && *s == *prefix) s++, prefix++;
    return *prefix == '\0';
}

/* ---- dispatch tables generated from the hook list ---- */

#define DECLARE_HOOK(name, ret, params, args) extern ret name params;
HAMI_CUDA_HOOKS(DECLARE_HOOK)
HAMI_NVML_HOOKS(DECLARE_HOOK)
#undef DECLARE_HOOK

struct hook_entry {
    const char *name;
    void *hook;
    size_t real_offset;
};

#define ENTRY(name, ret, params, args) {#name, (void *)&name, offsetof(struct hami_real, name)},
static const struct hook_entry hook_table[] = {HAMI_CUDA_HOOKS(ENTRY) HAMI_NVML_HOOKS(ENTRY)};
#undef ENTRY
#define HOOK_COUNT (sizeof(hook_table) / sizeof(hook_table[0]))

EARLY void *hami_hook_for_name(const char *symbol) {
    if (symbol == NULL) return NULL;
    for (size_t i = 0; i < HOOK_COUNT; i++)
        if (same(hook_table[i].name, symbol)) return hook_table[i].hook;
    return NULL;
}

void *hami_hook_for_real(void *real) {
    if (real == NULL) return NULL;
    for (size_t i = 0; i < HOOK_COUNT; i++) {
        void *candidate = *(void **)((char *)&hami_real + hook_table[i].real_offset);
        if (candidate == real) return hook_table[i].hook;
    }
    return NULL;
}

/* ---- dlsym ---- */

/* RTLD_NEXT must mean "after the caller's object", not after us. Walk the link map from the
 * caller's object and look the name up in each later object's own GNU hash table: no dlopen,
 * no handles, nothing another runtime may be intercepting while it initialises. */
EARLY static uint32_t gnu_hash(const char *name) {
    uint32_t h = 5381;
    for (const unsigned char *c = (const unsigned char *)name; *c; c++) h = h * 33 + *c;
    return h;
}

EARLY static void *defined_in(const struct link_map *m, const char *name) {
    const ElfW(Sym) *symtab = NULL;
    const char *strtab = NULL;
    const uint32_t *table = NULL;
    const ElfW(Half) *versym = NULL;
    for (const ElfW(Dyn) *d = m->l_ld; d != NULL && d->d_tag != DT_NULL; d++) {
        /* The loader relocates these in place, except in objects it did not map (the vDSO). */
        ElfW(Addr) p = d->d_un.d_ptr;
        if (m->l_addr != 0 && p < m->l_addr) p += m->l_addr;
        if (d->d_tag == DT_SYMTAB) symtab = (const ElfW(Sym) *)p;
        else if (d->d_tag == DT_STRTAB) strtab = (const char *)p;
        else if (d->d_tag == DT_GNU_HASH) table = (const uint32_t *)p;
        else if (d->d_tag == DT_VERSYM) versym = (const ElfW(Half) *)p;
    }
    if (symtab == NULL || strtab == NULL || table == NULL) return NULL;
    uint32_t nbuckets = table[0], symoffset = table[1], bloom_size = table[2];
    const uint32_t *buckets = (const uint32_t *)((const ElfW(Addr) *)&table[4] + bloom_size);
    const uint32_t *chain = buckets + nbuckets;
    uint32_t h = gnu_hash(name);
    uint32_t i = buckets[h % nbuckets];
    if (nbuckets == 0 || i < symoffset) return NULL;
    for (;; i++) {
        uint32_t h2 = chain[i - symoffset];
        const ElfW(Sym) *sym = &symtab[i];
        int hidden = versym != NULL && (versym[i] & 0x8000) != 0; /* not the default version */
        if ((h | 1) == (h2 | 1) && !hidden && sym->st_shndx != SHN_UNDEF &&
            same(strtab + sym->st_name, name)) {
            void *address = (void *)(m->l_addr + sym->st_value);
            if (ELF64_ST_TYPE(sym->st_info) == STT_GNU_IFUNC)
                address = ((void *(*)(void))address)();
            return address;
        }
        if (h2 & 1) return NULL;
    }
}

EARLY static void *next_after(const void *caller, const char *symbol) {
    Dl_info info;
    struct link_map *map = NULL;
    if (dladdr1(caller, &info, (void **)&map, RTLD_DL_LINKMAP) == 0 || map == NULL)
        return real_dlsym(RTLD_NEXT, symbol);
    for (const struct link_map *m = map->l_next; m != NULL; m = m->l_next) {
        void *found = defined_in(m, symbol);
        if (found != NULL) return found;
    }
    return NULL;
}

EARLY __attribute__((visibility("default"))) void *dlsym(void *handle, const char *symbol) {
    find_real_dlsym();
    const void *caller = __builtin_return_address(0);
    Dl_info self, from;
    int from_us = dladdr((void *)&dlsym, &self) != 0 && dladdr(caller, &from) != 0 &&
                  self.dli_fbase == from.dli_fbase;
    if (!from_us && (starts_with(symbol, "cu") || starts_with(symbol, "nvml"))) {
        void *hook = hami_hook_for_name(symbol);
        if (hook != NULL) {
            hami_init();
            return hook;
        }
    }
    if (handle == RTLD_NEXT && !from_us) return next_after(caller, symbol);
    return real_dlsym(handle, symbol);
}

/* ---- cuGetProcAddress: hand back our hook for whatever real function the driver chose ---- */

static void swap_for_hook(void **pfn) {
    void *hook = hami_hook_for_real(*pfn);
    if (hook != NULL) *pfn = hook;
}

__attribute__((visibility("default"))) CUresult cuGetProcAddress(const char *symbol, void **pfn,
                                                                 int version, cuuint64_t flags) {
    hami_init();
    if (hami_real.cuGetProcAddress == NULL) return CUDA_ERROR_NOT_INITIALIZED;
    CUresult rc = hami_real.cuGetProcAddress(symbol, pfn, version, flags);
    if (rc == CUDA_SUCCESS && pfn != NULL) swap_for_hook(pfn);
    return rc;
}

__attribute__((visibility("default"))) CUresult cuGetProcAddress_v2(
    const char *symbol, void **pfn, int version, cuuint64_t flags,
    CUdriverProcAddressQueryResult *status) {
    hami_init();
    if (hami_real.cuGetProcAddress_v2 == NULL) return CUDA_ERROR_NOT_INITIALIZED;
    CUresult rc = hami_real.cuGetProcAddress_v2(symbol, pfn, version, flags, status);
    if (rc == CUDA_SUCCESS && pfn != NULL) swap_for_hook(pfn);
    return rc;
}
