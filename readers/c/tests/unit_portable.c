/* The header in plain C11, without POSIX (STRIDEMAP_NO_OPEN), in a second translation unit. */
#define STRIDEMAP_NO_OPEN
#include "../stridemap.h"

int portable_decode(const void *buf, size_t len);

int portable_decode(const void *buf, size_t len) {
    struct stridemap_desc d;
    return stridemap_decode(buf, len, &d);
}
