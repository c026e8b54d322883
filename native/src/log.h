/* Quiet, prefixed logging: off unless LIBCUDA_LOG_LEVEL (0 off .. 4 debug) asks for it. */
#ifndef HAMI_LOG_H
#define HAMI_LOG_H

#include <stdio.h>

extern int hami_log_level;

#define HAMI_LOG(level, tag, ...)                                                                 \
    do {                                                                                          \
        if (hami_log_level >= (level)) {                                                          \
            fprintf(stderr, "[hami-vgpu " tag "] " __VA_ARGS__);                                  \
            fputc('\n', stderr);                                                                  \
        }                                                                                         \
    } while (0)
#define LOG_ERROR(...) HAMI_LOG(1, "error", __VA_ARGS__)
#define LOG_WARN(...) HAMI_LOG(2, "warn", __VA_ARGS__)
#define LOG_INFO(...) HAMI_LOG(3, "info", __VA_ARGS__)
#define LOG_DEBUG(...) HAMI_LOG(4, "debug", __VA_ARGS__)

#endif
