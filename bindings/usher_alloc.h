/* Zeroed memory for the compiled hash tables (the engine's KeyTable, the replay's
   NameCache), released with free(). A table of 2 MiB or more is 2 MiB-aligned and asks
   for transparent huge pages: a probe into the 128 MB table of a million users then
   costs one cache miss instead of a cache miss plus a page-table walk (a 4 KiB page TLB
   covers a few MB; in a virtual machine a walk is itself several misses). Included by
   bindings/_engine.pyx and formats/_replayloop.pyx (setup.py puts bindings/ on their
   include path). */
#ifndef USHER_ALLOC_H
#define USHER_ALLOC_H

#include <stdlib.h>
#include <string.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif

static void* usher_table_alloc(size_t nbytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    const size_t huge = (size_t)2 << 20;
    if (nbytes >= huge) {
        void* p = NULL;
        if (posix_memalign(&p, huge, nbytes) != 0)
            return NULL;
        (void)madvise(p, nbytes, MADV_HUGEPAGE);  /* a hint: no error is fatal */
        memset(p, 0, nbytes);
        return p;
    }
#endif
    return calloc(nbytes, 1);
}

#endif
