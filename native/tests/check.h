/* The one assertion the native test programs share: report and count, keep going. */
#ifndef HAMI_TEST_CHECK_H
#define HAMI_TEST_CHECK_H

#include <stdio.h>

static int failures;
#define CHECK(cond)                                                                              \
    do {                                                                                         \
        if (!(cond)) {                                                                           \
            fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);                      \
            failures++;                                                                          \
        }                                                                                        \
    } while (0)

#endif
