/* unit: checks of stridemap.h that need no input files.
 *
 * Built together with unit_portable.c, which includes the header a second time, in plain C11
 * without the open part: the header works in several translation units and without POSIX. */
#define _GNU_SOURCE
#include "../stridemap.h"

#include <stdio.h>

int portable_decode(const void *buf, size_t len);

static int failures;
#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) {                                                               \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            failures++;                                                              \
        }                                                                            \
    } while (0)

/* A valid 1.0 record of 4 <f8 at buffer offset 8 of a 40-byte file, path /tmp/x. */
static void make_record(uint8_t *b) {
    memset(b, 0, STRIDEMAP_RECORD_SIZE);
    memcpy(b, "\x89SMD\r\n\x1a\n", 8);
    b[8] = 1;
    b[16] = '<';
    b[17] = 'f';
    b[18] = 1;
    b[20] = 8;
    b[24] = 6;
    b[32] = 8;  /* buffer_offset */
    b[40] = 32; /* buffer_len */
    b[56] = 40; /* file_len */
    b[128] = 4; /* shape[0] */
    b[384] = 8; /* strides[0] */
    memcpy(b + 640, "/tmp/x", 6);
    uint32_t crc = stridemap_crc32c(b, 1020);
    for (int i = 0; i < 4; i++) b[1020 + i] = (uint8_t)(crc >> (8 * i));
}

int main(void) {
    CHECK(stridemap_crc32c("123456789", 9) == 0xE3069283u);
    CHECK(strcmp(stridemap_rule_name(STRIDEMAP_R22), "R22") == 0);
    CHECK(strcmp(stridemap_rule_name(STRIDEMAP_C4), "C4") == 0);
    CHECK(strcmp(stridemap_rule_name(STRIDEMAP_O11), "O11") == 0);
    CHECK(strcmp(stridemap_rule_name(STRIDEMAP_O12), "O12") == 0);
    CHECK(strcmp(stridemap_rule_name(STRIDEMAP_EINVAL), "EINVAL") == 0);
    CHECK(strcmp(stridemap_rule_name(STRIDEMAP_EBUSY), "EBUSY") == 0);
    CHECK(strcmp(stridemap_rule_name(STRIDEMAP_ESYS), "ESYS") == 0);

    /* a segment header (SPEC §8): valid, then each condition broken */
    uint8_t h[64] = {0};
    memcpy(h, "\x89SMS\r\n\x1a\n", 8);
    h[8] = 1;      /* version_major */
    h[13] = 0x10;  /* data_offset = 4096 */
    h[16] = 7;     /* segment_id[0] */
    h[32] = 5;     /* generation */
    h[42] = 1;     /* capacity = 65536 */
    uint32_t hcrc = stridemap_crc32c(h, 60);
    for (int i = 0; i < 4; i++) h[60 + i] = (uint8_t)(hcrc >> (8 * i));
    struct stridemap_segment_header sh;
    CHECK(stridemap_segment_header_decode(h, sizeof h, &sh));
    CHECK(sh.data_offset == 4096 && sh.generation == 5 && sh.capacity == 65536);
    CHECK(sh.segment_id[0] == 7 && sh.version_major == 1);
    CHECK(!stridemap_segment_header_decode(h, 63, &sh));
    for (unsigned at = 0; at < 64; at += 7) {
        h[at] ^= 0x20;
        CHECK(!stridemap_segment_header_decode(h, sizeof h, &sh));
        h[at] ^= 0x20;
    }
    struct stridemap_desc sd;
    memset(&sd, 0, sizeof sd);
    sd.rec.segment_id[0] = 7;
    sd.rec.generation = 5;
    sd.rec.buffer_offset = 4096;
    sd.rec.buffer_len = 65536;
    CHECK(stridemap_segment_header_decode(h, sizeof h, &sh) &&
          stridemap_segment_header_matches(&sh, &sd));
    sd.rec.buffer_len = 65537; /* past the data area */
    CHECK(!stridemap_segment_header_matches(&sh, &sd));
    sd.rec.buffer_len = 1;
    sd.rec.buffer_offset = 4095; /* over the header */
    CHECK(!stridemap_segment_header_matches(&sh, &sd));
    sd.rec.buffer_offset = 4096;
    sd.rec.generation = 4; /* stale */
    CHECK(!stridemap_segment_header_matches(&sh, &sd));
    sd.rec.generation = 5;
    sd.rec.segment_id[0] = 0; /* no id matches no header, not even one with no id */
    sh.segment_id[0] = 0;
    CHECK(!stridemap_segment_header_matches(&sh, &sd));

    /* a record at every alignment inside a larger buffer, with bytes after it */
    static uint8_t big[STRIDEMAP_RECORD_SIZE + 16];
    for (unsigned shift = 0; shift < 9; shift++) {
        memset(big, 0xEE, sizeof big);
        make_record(big + shift);
        struct stridemap_desc d;
        CHECK(stridemap_decode(big + shift, sizeof big - shift, &d) == STRIDEMAP_OK);
        CHECK(d.rec.buffer_offset == 8 && d.len == 4 && d.span_hi == 32 && d.c_contiguous);
        CHECK(strcmp(d.dtype, "<f8") == 0);
        CHECK(portable_decode(big + shift, STRIDEMAP_RECORD_SIZE) == STRIDEMAP_OK);
        CHECK(stridemap_decode(big + shift, STRIDEMAP_RECORD_SIZE - 1, &d) == STRIDEMAP_R1);
    }

    /* the span with 64-bit overflow is R22 (SPEC §1.2) */
    uint64_t shape[2] = {UINT64_C(1) << 62, 3};
    int64_t strides[2] = {INT64_C(1) << 62, -(INT64_C(1) << 62)};
    int64_t lo, hi;
    CHECK(stridemap_span(1, 2, shape, strides, 0, &lo, &hi) == STRIDEMAP_R22);
    shape[0] = shape[1] = 2;
    CHECK(stridemap_span(1, 2, shape, strides, UINT64_C(1) << 63, &lo, &hi) == STRIDEMAP_R22);
    strides[0] = (INT64_C(1) << 62) - 1; /* hi = 2^62 + 2^62 - 1 + 1: one past INT64_MAX */
    CHECK(stridemap_span(1, 2, shape, strides, UINT64_C(1) << 62, &lo, &hi) == STRIDEMAP_R22);
    strides[0] = (INT64_C(1) << 62) - 2;
    CHECK(stridemap_span(1, 2, shape, strides, UINT64_C(1) << 62, &lo, &hi) == STRIDEMAP_OK);
    CHECK(lo == 0 && hi == INT64_MAX);

    /* an empty view is harmless to close */
    struct stridemap_view v = {0};
    stridemap_close(&v);

    if (failures) {
        fprintf(stderr, "unit: %d checks failed\n", failures);
        return 1;
    }
    printf("unit: all checks passed\n");
    return 0;
}
