/* smdecode: decodes descriptors with stridemap.h and prints each as a vector's JSON (SPEC §10).
 *
 * Reads lines "fixed HEX" or "compact HEX" from stdin and prints one line per input:
 * {"valid": true, "fields": {...}, "derived": {...}} or {"valid": false, "rule": "R4"}.
 * The conformance tests compare these with the vectors' JSON and with the Python reader. */
#define _GNU_SOURCE
#include "../stridemap.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

static void print_string(const uint8_t *s, size_t n) {
    putchar('"');
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '"' || s[i] == '\\')
            printf("\\%c", s[i]);
        else if (s[i] < 0x20)
            printf("\\u%04x", s[i]);
        else
            putchar(s[i]);
    }
    putchar('"');
}

static void print_desc(const struct stridemap_desc *d) {
    const struct stridemap_record *r = &d->rec;
    static const char *const modes[] = {"r", "r+", "c"};
    printf("{\"valid\": true, \"fields\": {\"version\": [%u, %u], \"dtype\": \"%s\", "
           "\"order\": \"%s\", \"mode\": \"%s\", \"source\": \"%s\", \"path\": ",
           r->version_major, r->version_minor, d->dtype,
           (r->flags & STRIDEMAP_FLAG_ORDER_F) ? "F" : "C",
           modes[(r->flags & STRIDEMAP_FLAG_MODE_MASK) >> STRIDEMAP_FLAG_MODE_SHIFT],
           (r->flags & STRIDEMAP_FLAG_SOURCE_FD) ? "fd" : "path");
    print_string(r->path, r->path_len);
    printf(", \"ndim\": %u, \"shape\": [", r->ndim);
    for (unsigned k = 0; k < r->ndim; k++) printf("%s%" PRIu64, k ? ", " : "", r->shape[k]);
    printf("], \"strides\": [");
    for (unsigned k = 0; k < r->ndim; k++) printf("%s%" PRId64, k ? ", " : "", r->strides[k]);
    printf("], \"offset\": %" PRIu64 ", \"buffer_offset\": %" PRIu64 ", \"buffer_len\": %" PRIu64
           ", \"file_len\": %" PRIu64 ", \"device\": %" PRIu64 ", \"inode\": %" PRIu64
           ", \"generation\": %" PRIu64 ", \"segment_id\": \"",
           r->offset, r->buffer_offset, r->buffer_len, r->file_len, r->device, r->inode,
           r->generation);
    for (unsigned i = 0; i < 16; i++) printf("%02x", r->segment_id[i]);
    printf("\"}, \"derived\": {\"itemsize\": %" PRIu64 ", \"len\": %" PRIu64
           ", \"nbytes\": %" PRIu64 ", \"span\": [%" PRId64 ", %" PRId64 "], \"c_contiguous\": %s, \"f_contiguous\": %s}}\n",
           d->itemsize, d->len, d->nbytes, d->span_lo, d->span_hi,
           d->c_contiguous ? "true" : "false", d->f_contiguous ? "true" : "false");
}

static int hex_value(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

int main(void) {
    char *line = NULL;
    size_t cap = 0;
    ssize_t got;
    while ((got = getline(&line, &cap, stdin)) > 0) {
        char *hex = strchr(line, ' ');
        if (hex == NULL) {
            fprintf(stderr, "smdecode: expected 'fixed HEX' or 'compact HEX'\n");
            return 2;
        }
        *hex++ = '\0';
        size_t n = 0;
        uint8_t *bytes = malloc(strlen(hex) / 2 + 1);
        for (char *p = hex; hex_value(p[0]) >= 0 && hex_value(p[1]) >= 0; p += 2)
            bytes[n++] = (uint8_t)(hex_value(p[0]) << 4 | hex_value(p[1]));
        /* a copy of exactly n bytes, so that the sanitizers see any read past the input */
        uint8_t *input = malloc(n ? n : 1);
        memcpy(input, bytes, n);
        struct stridemap_desc d;
        int rule = strcmp(line, "compact") == 0 ? stridemap_decode_compact(input, n, &d)
                                                : stridemap_decode(input, n, &d);
        if (rule)
            printf("{\"valid\": false, \"rule\": \"%s\"}\n", stridemap_rule_name(rule));
        else
            print_desc(&d);
        free(input);
        free(bytes);
    }
    free(line);
    return 0;
}
