/*
 * stridemap.h — a header-only C11 reader of stridemap descriptors (SPEC.md, version 1.0).
 *
 * It decodes and validates the fixed 1024-byte record (SPEC §2, §3) and the compact form
 * (§4), computes the span and contiguity of the layout (§1.2, §1.3), and opens a descriptor
 * (§6): checks the path, the file and its identity, and maps the enclosing buffer.
 *
 * - Values are read byte by byte as little-endian: a record may start at any address.
 * - Arithmetic is checked 64-bit arithmetic (SPEC §1.2): nothing wraps, nothing overflows.
 * - No allocation, no global state; every function is `static inline`.
 * - Functions that check return 0 or the id of the first rule broken (enum stridemap_rule:
 *   STRIDEMAP_R4, STRIDEMAP_O7, ...; stridemap_rule_name() spells it "R4", "O7"), or a
 *   negative value that is not a rule: a call that makes no sense (STRIDEMAP_EINVAL), a
 *   segment its producer kept locked (STRIDEMAP_EBUSY, SPEC §7), a failed system call outside
 *   any check (STRIDEMAP_ESYS).
 * - Segments (descriptors with generation != 0, SPEC §7, §8): stridemap_open() locks the file
 *   shared (flock), checks its segment header (rule O10), and the lock then lasts as long as
 *   the mapping, until stridemap_close(); the producer cannot delete or recycle the segment
 *   meanwhile.
 *
 * Usage:
 *
 *     #define _GNU_SOURCE        // or _POSIX_C_SOURCE 200809L, before any #include
 *     #include "stridemap.h"
 *
 *     struct stridemap_desc d;
 *     int rule = stridemap_decode(buf, len, &d);       // or stridemap_decode_compact()
 *     if (rule != 0) {
 *         fprintf(stderr, "bad descriptor: %s\n", stridemap_rule_name(rule));
 *         return 1;
 *     }
 *     const char *roots[] = {"/dev/shm/myapp"};  // besides this user's own private
 *     struct stridemap_open_options opt = {      // stridemap-* folders (SPEC §6 default roots)
 *         .roots = roots, .nroots = 1, .fd = -1, .mode = STRIDEMAP_MODE_R,
 *     };
 *     struct stridemap_view v;
 *     rule = stridemap_open(&d, &opt, &v);
 *     if (rule != 0) {
 *         fprintf(stderr, "cannot open: %s (%s)\n", stridemap_rule_name(rule),
 *                 strerror(v.sys_errno));
 *         return 1;
 *     }
 *     uint64_t index[2] = {1, 2};
 *     const unsigned char *x = stridemap_element(&d, &v, index);  // NULL when out of range
 *     double value;
 *     memcpy(&value, x, sizeof value);   // elements need not be aligned (SPEC §1.1)
 *     stridemap_close(&v);
 *
 * Define STRIDEMAP_NO_OPEN to leave out stridemap_open() and its POSIX headers: what remains
 * is plain C11.
 */
#ifndef STRIDEMAP_H
#define STRIDEMAP_H

#if !defined(STRIDEMAP_NO_OPEN) && !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L /* effective only when this header comes first */
#endif

#include <assert.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define STRIDEMAP_RECORD_SIZE 1024u
#define STRIDEMAP_MAX_NDIM 32u
#define STRIDEMAP_MAX_PATH 256u
#define STRIDEMAP_MAX_TYPESTR 16u

/* Flag bits (SPEC §2.1). */
#define STRIDEMAP_FLAG_ORDER_F 0x1u
#define STRIDEMAP_FLAG_MODE_SHIFT 1u
#define STRIDEMAP_FLAG_MODE_MASK 0x6u
#define STRIDEMAP_FLAG_SOURCE_FD 0x8u

/* Modes (SPEC §2.1): the descriptor's grant and what a consumer asks for. */
enum stridemap_mode { STRIDEMAP_MODE_R = 0, STRIDEMAP_MODE_RW = 1, STRIDEMAP_MODE_COW = 2 };

/* Rule ids: R1-R22 are 1-22, C1-C4 are 101-104, O1-O12 are 201-212. Negative values are not
 * rules. */
enum stridemap_rule {
    STRIDEMAP_ESYS = -3,   /* a system call failed outside any check (sys_errno says which) */
    STRIDEMAP_EBUSY = -2,  /* the segment stayed locked by its producer (SPEC §7): ask again */
    STRIDEMAP_EINVAL = -1, /* not a rule: the call itself is wrong (e.g. a missing fd) */
    STRIDEMAP_OK = 0,
    STRIDEMAP_R1 = 1, STRIDEMAP_R2, STRIDEMAP_R3, STRIDEMAP_R4, STRIDEMAP_R5, STRIDEMAP_R6,
    STRIDEMAP_R7, STRIDEMAP_R8, STRIDEMAP_R9, STRIDEMAP_R10, STRIDEMAP_R11, STRIDEMAP_R12,
    STRIDEMAP_R13, STRIDEMAP_R14, STRIDEMAP_R15, STRIDEMAP_R16, STRIDEMAP_R17, STRIDEMAP_R18,
    STRIDEMAP_R19, STRIDEMAP_R20, STRIDEMAP_R21, STRIDEMAP_R22,
    STRIDEMAP_C1 = 101, STRIDEMAP_C2, STRIDEMAP_C3, STRIDEMAP_C4,
    STRIDEMAP_O1 = 201, STRIDEMAP_O2, STRIDEMAP_O3, STRIDEMAP_O4, STRIDEMAP_O5, STRIDEMAP_O6,
    STRIDEMAP_O7, STRIDEMAP_O8, STRIDEMAP_O9, STRIDEMAP_O10, STRIDEMAP_O11, STRIDEMAP_O12
};

/* "R1".."R22", "C1".."C4", "O1".."O12", "OK", "EBUSY", "ESYS" or "EINVAL". */
static inline const char *stridemap_rule_name(int rule) {
    static const char *const names[] = {
        "OK", "R1", "R2", "R3", "R4", "R5", "R6", "R7", "R8", "R9", "R10", "R11", "R12",
        "R13", "R14", "R15", "R16", "R17", "R18", "R19", "R20", "R21", "R22",
        "C1", "C2", "C3", "C4",
        "O1", "O2", "O3", "O4", "O5", "O6", "O7", "O8", "O9", "O10", "O11", "O12",
    };
    if (rule >= 0 && rule <= STRIDEMAP_R22) return names[rule];
    if (rule >= STRIDEMAP_C1 && rule <= STRIDEMAP_C4) return names[23 + rule - STRIDEMAP_C1];
    if (rule >= STRIDEMAP_O1 && rule <= STRIDEMAP_O12) return names[27 + rule - STRIDEMAP_O1];
    if (rule == STRIDEMAP_EBUSY) return "EBUSY";
    if (rule == STRIDEMAP_ESYS) return "ESYS";
    return "EINVAL";
}

/* The fixed record, field for field (SPEC §2). Decoded values are in host byte order. */
struct stridemap_record {
    uint8_t magic[8];
    uint16_t version_major;
    uint16_t version_minor;
    uint32_t flags;
    uint8_t dtype_byteorder;
    uint8_t dtype_kind;
    uint8_t ndim;
    uint8_t reserved0;
    uint32_t itemsize;
    uint16_t path_len;
    uint8_t reserved1[6];
    uint64_t buffer_offset;
    uint64_t buffer_len;
    uint64_t offset;
    uint64_t file_len;
    uint64_t device;
    uint64_t inode;
    uint64_t generation;
    uint8_t segment_id[16];
    uint8_t reserved2[24];
    uint64_t shape[STRIDEMAP_MAX_NDIM];
    int64_t strides[STRIDEMAP_MAX_NDIM];
    uint8_t path[STRIDEMAP_MAX_PATH];
    uint8_t reserved3[124];
    uint32_t crc32c;
};

#define STRIDEMAP__AT(field, at) \
    static_assert(offsetof(struct stridemap_record, field) == (at), #field " is at byte " #at)
STRIDEMAP__AT(magic, 0);
STRIDEMAP__AT(version_major, 8);
STRIDEMAP__AT(version_minor, 10);
STRIDEMAP__AT(flags, 12);
STRIDEMAP__AT(dtype_byteorder, 16);
STRIDEMAP__AT(dtype_kind, 17);
STRIDEMAP__AT(ndim, 18);
STRIDEMAP__AT(reserved0, 19);
STRIDEMAP__AT(itemsize, 20);
STRIDEMAP__AT(path_len, 24);
STRIDEMAP__AT(reserved1, 26);
STRIDEMAP__AT(buffer_offset, 32);
STRIDEMAP__AT(buffer_len, 40);
STRIDEMAP__AT(offset, 48);
STRIDEMAP__AT(file_len, 56);
STRIDEMAP__AT(device, 64);
STRIDEMAP__AT(inode, 72);
STRIDEMAP__AT(generation, 80);
STRIDEMAP__AT(segment_id, 88);
STRIDEMAP__AT(reserved2, 104);
STRIDEMAP__AT(shape, 128);
STRIDEMAP__AT(strides, 384);
STRIDEMAP__AT(path, 640);
STRIDEMAP__AT(reserved3, 896);
STRIDEMAP__AT(crc32c, 1020);
#undef STRIDEMAP__AT
static_assert(sizeof(struct stridemap_record) == STRIDEMAP_RECORD_SIZE, "a record is 1024 bytes");

/* A validated descriptor: the record (for a compact input, the equivalent record, with the
 * magic, reserved bytes and crc32c left zero) and the derived facts of SPEC §1.3. */
struct stridemap_desc {
    struct stridemap_record rec;
    char dtype[STRIDEMAP_MAX_TYPESTR]; /* the typestr, NUL-terminated, e.g. "<f8" */
    uint64_t itemsize;
    uint64_t len;    /* number of elements */
    uint64_t nbytes; /* len * itemsize */
    int64_t span_lo; /* the bytes [span_lo, span_hi) of the buffer the array touches */
    int64_t span_hi;
    bool c_contiguous;
    bool f_contiguous;
};

/* ---- little-endian reads and checked arithmetic -------------------------------------------- */

static inline uint64_t stridemap__le(const uint8_t *p, unsigned n) {
    uint64_t v = 0;
    for (unsigned i = n; i-- > 0;) v = v << 8 | p[i];
    return v;
}

/* Two's complement without implementation-defined conversions. */
static inline int64_t stridemap__to_i64(uint64_t u) {
    return u <= (uint64_t)INT64_MAX ? (int64_t)u : -(int64_t)(~u) - 1;
}

static inline uint64_t stridemap__magnitude(int64_t s) {
    return s < 0 ? (uint64_t)0 - (uint64_t)s : (uint64_t)s;
}

/* *r = a + b; false on overflow. */
static inline bool stridemap__add(int64_t a, int64_t b, int64_t *r) {
    if ((b > 0 && a > INT64_MAX - b) || (b < 0 && a < INT64_MIN - b)) return false;
    *r = a + b;
    return true;
}

/* *r = n * s for n >= 0; false on overflow. */
static inline bool stridemap__mul(uint64_t n, int64_t s, int64_t *r) {
    uint64_t m = stridemap__magnitude(s);
    if (n != 0 && m > UINT64_MAX / n) return false;
    uint64_t p = n * m;
    if (s >= 0) {
        if (p > (uint64_t)INT64_MAX) return false;
        *r = (int64_t)p;
    } else {
        if (p > (uint64_t)INT64_MAX + 1) return false;
        *r = stridemap__to_i64((uint64_t)0 - p);
    }
    return true;
}

/* CRC-32C (Castagnoli, reflected, init and final XOR 0xFFFFFFFF; SPEC §2.3). */
static inline uint32_t stridemap_crc32c(const void *data, size_t n) {
    const uint8_t *p = (const uint8_t *)data;
    uint32_t crc = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        crc ^= p[i];
        for (int k = 0; k < 8; k++) crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
    }
    return crc ^ 0xFFFFFFFFu;
}

/* Whether s[0..n) is UTF-8 as RFC 3629 defines it: no overlong forms, no surrogates, nothing
 * above U+10FFFF (SPEC R15). */
static inline bool stridemap__utf8(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        unsigned more;
        uint8_t lo = 0x80, hi = 0xBF; /* the allowed range of the second byte */
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xC2 && c <= 0xDF) {
            more = 1;
        } else if (c >= 0xE0 && c <= 0xEF) {
            more = 2;
            if (c == 0xE0) lo = 0xA0;
            if (c == 0xED) hi = 0x9F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            more = 3;
            if (c == 0xF0) lo = 0x90;
            if (c == 0xF4) hi = 0x8F;
        } else {
            return false;
        }
        if (n - i <= more) return false;
        if (s[i + 1] < lo || s[i + 1] > hi) return false;
        for (unsigned k = 2; k <= more; k++)
            if ((s[i + k] & 0xC0) != 0x80) return false;
        i += more + 1;
    }
    return true;
}

/* ---- the rules both forms share ----------------------------------------------------------- */

/* R8, R9, R10. */
static inline int stridemap__check_dtype(uint8_t byteorder, uint8_t kind, uint64_t itemsize) {
    bool ok;
    switch (kind) {
    case 'b': ok = itemsize == 1; break;
    case 'i':
    case 'u': ok = itemsize == 1 || itemsize == 2 || itemsize == 4 || itemsize == 8; break;
    case 'f': ok = itemsize == 2 || itemsize == 4 || itemsize == 8 || itemsize == 16; break;
    case 'c': ok = itemsize == 8 || itemsize == 16 || itemsize == 32; break;
    case 'V': ok = itemsize >= 1 && itemsize <= 0x7FFFFFFFu; break;
    default: return STRIDEMAP_R8;
    }
    if (!ok) return STRIDEMAP_R9;
    bool one_byte = itemsize == 1 || kind == 'V';
    if (one_byte ? byteorder != '|' : (byteorder != '<' && byteorder != '>')) return STRIDEMAP_R10;
    return STRIDEMAP_OK;
}

/* R15, R16, R17. */
static inline int stridemap__check_path(const uint8_t *path, size_t len, bool from_fd) {
    if (!stridemap__utf8(path, len)) return STRIDEMAP_R15;
    if (memchr(path, 0, len) != NULL) return STRIDEMAP_R16;
    if (from_fd != (len == 0)) return STRIDEMAP_R17;
    return STRIDEMAP_OK;
}

/* The span [*lo, *hi) of a layout (SPEC §1.2). Returns STRIDEMAP_R22 when it does not fit in
 * 64 bits, which for a layout that keeps R18, R20 and R21 means it breaks R22. */
static inline int stridemap_span(uint64_t itemsize, unsigned ndim, const uint64_t *shape,
                                 const int64_t *strides, uint64_t offset, int64_t *lo,
                                 int64_t *hi) {
    if (offset > (uint64_t)INT64_MAX || itemsize > (uint64_t)INT64_MAX) return STRIDEMAP_R22;
    int64_t l = (int64_t)offset, h = (int64_t)offset;
    for (unsigned k = 0; k < ndim; k++) {
        if (shape[k] == 0) {
            *lo = *hi = (int64_t)offset;
            return STRIDEMAP_OK;
        }
    }
    for (unsigned k = 0; k < ndim; k++) {
        int64_t extent;
        if (!stridemap__mul(shape[k] - 1, strides[k], &extent)) return STRIDEMAP_R22;
        if (!stridemap__add(extent < 0 ? l : h, extent, extent < 0 ? &l : &h)) return STRIDEMAP_R22;
    }
    if (!stridemap__add(h, (int64_t)itemsize, &h)) return STRIDEMAP_R22;
    *lo = l;
    *hi = h;
    return STRIDEMAP_OK;
}

/* numpy's relaxed contiguity (SPEC §1.3): walk the axes last to first (C) or first to last (F). */
static inline bool stridemap__contiguous(uint64_t itemsize, unsigned ndim, const uint64_t *shape,
                                         const int64_t *strides, bool fortran) {
    for (unsigned k = 0; k < ndim; k++)
        if (shape[k] == 0) return true;
    uint64_t expected = itemsize;
    for (unsigned i = 0; i < ndim; i++) {
        unsigned k = fortran ? i : ndim - 1 - i;
        if (shape[k] == 1) continue;
        if (strides[k] < 0 || (uint64_t)strides[k] != expected) return false;
        expected *= shape[k]; /* <= the array's size, which R20 keeps below 2^63 */
    }
    return true;
}

/* R18-R22, then the derived facts. d->rec and d->itemsize are filled in. */
static inline int stridemap__check_layout(struct stridemap_desc *d) {
    const struct stridemap_record *r = &d->rec;
    if (r->buffer_offset > (uint64_t)INT64_MAX ||
        r->buffer_len > (uint64_t)INT64_MAX - r->buffer_offset)
        return STRIDEMAP_R18;
    if (r->file_len < r->buffer_offset + r->buffer_len) return STRIDEMAP_R19;
    uint64_t size = d->itemsize, len = 1;
    for (unsigned k = 0; k < r->ndim; k++) {
        uint64_t n = r->shape[k] ? r->shape[k] : 1;
        if (size > (uint64_t)INT64_MAX / n) return STRIDEMAP_R20;
        size *= n;
        len = r->shape[k] ? len * n : 0;
    }
    for (unsigned k = 0; k < r->ndim; k++)
        if (stridemap__magnitude(r->strides[k]) > r->buffer_len) return STRIDEMAP_R21;
    int64_t lo, hi;
    if (stridemap_span(d->itemsize, r->ndim, r->shape, r->strides, r->offset, &lo, &hi) ||
        lo < 0 || (uint64_t)hi > r->buffer_len)
        return STRIDEMAP_R22;
    d->len = len;
    d->nbytes = len * d->itemsize;
    d->span_lo = lo;
    d->span_hi = hi;
    d->c_contiguous = stridemap__contiguous(d->itemsize, r->ndim, r->shape, r->strides, false);
    d->f_contiguous = stridemap__contiguous(d->itemsize, r->ndim, r->shape, r->strides, true);
    return STRIDEMAP_OK;
}

/* Writes the typestr of a checked dtype into d->dtype ("<f8", "|V12"). */
static inline void stridemap__typestr(struct stridemap_desc *d) {
    char digits[12];
    unsigned n = 0;
    uint64_t v = d->itemsize;
    do {
        digits[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    d->dtype[0] = (char)d->rec.dtype_byteorder;
    d->dtype[1] = (char)d->rec.dtype_kind;
    for (unsigned i = 0; i < n; i++) d->dtype[2 + i] = digits[n - 1 - i];
    d->dtype[2 + n] = '\0';
}

/* ---- the fixed record --------------------------------------------------------------------- */

/* Reads the 1024 bytes at src into r, field by field, without checking anything. */
static inline void stridemap_record_read(const void *src, struct stridemap_record *r) {
    const uint8_t *b = (const uint8_t *)src;
    memcpy(r->magic, b, 8);
    r->version_major = (uint16_t)stridemap__le(b + 8, 2);
    r->version_minor = (uint16_t)stridemap__le(b + 10, 2);
    r->flags = (uint32_t)stridemap__le(b + 12, 4);
    r->dtype_byteorder = b[16];
    r->dtype_kind = b[17];
    r->ndim = b[18];
    r->reserved0 = b[19];
    r->itemsize = (uint32_t)stridemap__le(b + 20, 4);
    r->path_len = (uint16_t)stridemap__le(b + 24, 2);
    memcpy(r->reserved1, b + 26, 6);
    r->buffer_offset = stridemap__le(b + 32, 8);
    r->buffer_len = stridemap__le(b + 40, 8);
    r->offset = stridemap__le(b + 48, 8);
    r->file_len = stridemap__le(b + 56, 8);
    r->device = stridemap__le(b + 64, 8);
    r->inode = stridemap__le(b + 72, 8);
    r->generation = stridemap__le(b + 80, 8);
    memcpy(r->segment_id, b + 88, 16);
    memcpy(r->reserved2, b + 104, 24);
    for (unsigned k = 0; k < STRIDEMAP_MAX_NDIM; k++) {
        r->shape[k] = stridemap__le(b + 128 + 8 * k, 8);
        r->strides[k] = stridemap__to_i64(stridemap__le(b + 384 + 8 * k, 8));
    }
    memcpy(r->path, b + 640, STRIDEMAP_MAX_PATH);
    memcpy(r->reserved3, b + 896, 124);
    r->crc32c = (uint32_t)stridemap__le(b + 1020, 4);
}

/* Decodes and validates a fixed record: the first 1024 of the len bytes at buf (any
 * alignment). Returns 0, or the first rule broken in the order of SPEC §3. */
static inline int stridemap_decode(const void *buf, size_t len, struct stridemap_desc *d) {
    memset(d, 0, sizeof *d);
    if (len < STRIDEMAP_RECORD_SIZE) return STRIDEMAP_R1;
    const uint8_t *b = (const uint8_t *)buf;
    struct stridemap_record *r = &d->rec;
    stridemap_record_read(b, r);
    if (memcmp(r->magic, "\x89SMD\r\n\x1a\n", 8) != 0) return STRIDEMAP_R2;
    if (r->version_major != 1) return STRIDEMAP_R3;
    if (r->crc32c != stridemap_crc32c(b, 1020)) return STRIDEMAP_R4;
    bool known_minor = r->version_minor == 0;
    if (known_minor && (r->flags & ~0xFu) != 0) return STRIDEMAP_R5;
    if ((r->flags & STRIDEMAP_FLAG_MODE_MASK) >> STRIDEMAP_FLAG_MODE_SHIFT == 3)
        return STRIDEMAP_R6;
    if (known_minor) {
        static const struct {
            unsigned at, n;
        } reserved[] = {{19, 1}, {26, 6}, {104, 24}, {896, 124}};
        for (unsigned i = 0; i < 4; i++)
            for (unsigned k = 0; k < reserved[i].n; k++)
                if (b[reserved[i].at + k] != 0) return STRIDEMAP_R7;
    }
    int rule = stridemap__check_dtype(r->dtype_byteorder, r->dtype_kind, r->itemsize);
    if (rule) return rule;
    if (r->ndim > STRIDEMAP_MAX_NDIM) return STRIDEMAP_R11;
    for (unsigned k = r->ndim; k < STRIDEMAP_MAX_NDIM; k++)
        if (r->shape[k] != 0 || r->strides[k] != 0) return STRIDEMAP_R12;
    if (r->path_len > STRIDEMAP_MAX_PATH) return STRIDEMAP_R13;
    for (unsigned i = r->path_len; i < STRIDEMAP_MAX_PATH; i++)
        if (r->path[i] != 0) return STRIDEMAP_R14;
    rule = stridemap__check_path(r->path, r->path_len, (r->flags & STRIDEMAP_FLAG_SOURCE_FD) != 0);
    if (rule) return rule;
    d->itemsize = r->itemsize;
    rule = stridemap__check_layout(d);
    if (rule) return rule;
    stridemap__typestr(d);
    return STRIDEMAP_OK;
}

/* ---- the compact form --------------------------------------------------------------------- */

struct stridemap__cursor {
    const uint8_t *p;
    size_t n, at;
};

/* A postcard varint of at most `most` bytes whose last byte is at most last_max (SPEC §4). */
static inline bool stridemap__varint(struct stridemap__cursor *c, unsigned most, uint8_t last_max,
                                     uint64_t *v) {
    uint64_t value = 0;
    for (unsigned i = 0; i < most && c->at < c->n; i++) {
        uint8_t byte = c->p[c->at++];
        if (i == most - 1 && byte > last_max) return false;
        value |= (uint64_t)(byte & 0x7F) << (7 * i);
        if ((byte & 0x80) == 0) {
            *v = value;
            return true;
        }
    }
    return false;
}
#define STRIDEMAP__U16 3, 0x03
#define STRIDEMAP__U32 5, 0x0F
#define STRIDEMAP__U64 10, 0x01

/* A string of at most `limit` bytes: varint length, then UTF-8 bytes. */
static inline bool stridemap__string(struct stridemap__cursor *c, size_t limit, const uint8_t **s,
                                     size_t *len) {
    uint64_t n;
    if (!stridemap__varint(c, STRIDEMAP__U64, &n) || n > limit || n > c->n - c->at) return false;
    *s = c->p + c->at;
    *len = (size_t)n;
    c->at += (size_t)n;
    return stridemap__utf8(*s, *len);
}

static inline bool stridemap__enum(struct stridemap__cursor *c, uint64_t variants, uint64_t *v) {
    return stridemap__varint(c, STRIDEMAP__U32, v) && *v < variants;
}

static inline bool stridemap__count(struct stridemap__cursor *c, uint64_t *n) {
    return stridemap__varint(c, STRIDEMAP__U64, n) && *n <= STRIDEMAP_MAX_NDIM;
}

/* C4: byte order byte, kind byte, decimal itemsize below 2^64 without a leading zero. */
static inline int stridemap__parse_typestr(const uint8_t *s, size_t n, struct stridemap_desc *d) {
    if (n < 3 || (n > 3 && s[2] == '0')) return STRIDEMAP_C4;
    uint64_t v = 0;
    for (size_t i = 2; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return STRIDEMAP_C4;
        unsigned digit = (unsigned)(s[i] - '0');
        if (v > (UINT64_MAX - digit) / 10) return STRIDEMAP_C4;
        v = v * 10 + digit;
    }
    d->rec.dtype_byteorder = s[0];
    d->rec.dtype_kind = s[1];
    d->itemsize = v;
    return STRIDEMAP_OK;
}

/* Decodes and validates a compact form: the len bytes at buf. Returns 0, or the first rule
 * broken in the order of SPEC §4. */
static inline int stridemap_decode_compact(const void *buf, size_t len, struct stridemap_desc *d) {
    memset(d, 0, sizeof *d);
    const uint8_t *b = (const uint8_t *)buf;
    if (len < 4 || memcmp(b, "\x89SMC", 4) != 0) return STRIDEMAP_C2;
    struct stridemap__cursor c = {b, len, 4};
    struct stridemap_record *r = &d->rec;
    uint64_t major, minor, order, mode, source, nshape, nstrides, v;
    if (!stridemap__varint(&c, STRIDEMAP__U16, &major) ||
        !stridemap__varint(&c, STRIDEMAP__U16, &minor))
        return STRIDEMAP_C1;
    r->version_major = (uint16_t)major;
    r->version_minor = (uint16_t)minor;
    if (major != 1) return STRIDEMAP_R3;
    const uint8_t *typestr, *path = NULL;
    size_t typestr_len, path_len = 0;
    if (!stridemap__string(&c, STRIDEMAP_MAX_TYPESTR, &typestr, &typestr_len) ||
        !stridemap__enum(&c, 2, &order) || !stridemap__enum(&c, 3, &mode) ||
        !stridemap__enum(&c, 2, &source) ||
        (source == 0 && !stridemap__string(&c, STRIDEMAP_MAX_PATH, &path, &path_len)) ||
        !stridemap__count(&c, &nshape))
        return STRIDEMAP_C1;
    for (unsigned k = 0; k < nshape; k++)
        if (!stridemap__varint(&c, STRIDEMAP__U64, &r->shape[k])) return STRIDEMAP_C1;
    if (!stridemap__count(&c, &nstrides)) return STRIDEMAP_C1;
    for (unsigned k = 0; k < nstrides; k++) {
        if (!stridemap__varint(&c, STRIDEMAP__U64, &v)) return STRIDEMAP_C1;
        r->strides[k] = stridemap__to_i64((v >> 1) ^ ((uint64_t)0 - (v & 1)));
    }
    uint64_t *tail[] = {&r->offset, &r->buffer_offset, &r->buffer_len, &r->file_len,
                        &r->device, &r->inode, &r->generation};
    for (unsigned i = 0; i < 7; i++)
        if (!stridemap__varint(&c, STRIDEMAP__U64, tail[i])) return STRIDEMAP_C1;
    if (c.n - c.at < 16) return STRIDEMAP_C1;
    memcpy(r->segment_id, b + c.at, 16);
    c.at += 16;
    if (minor == 0 && c.at != c.n) return STRIDEMAP_C1;
    if (nshape != nstrides) return STRIDEMAP_C3;
    int rule = stridemap__parse_typestr(typestr, typestr_len, d);
    if (rule) return rule;
    rule = stridemap__check_dtype(r->dtype_byteorder, r->dtype_kind, d->itemsize);
    if (rule) return rule;
    r->itemsize = (uint32_t)d->itemsize;
    r->ndim = (uint8_t)nshape;
    r->flags = (uint32_t)(order | mode << STRIDEMAP_FLAG_MODE_SHIFT | source << 3);
    r->path_len = (uint16_t)path_len;
    if (path_len) memcpy(r->path, path, path_len);
    rule = stridemap__check_path(r->path, path_len, source == 1);
    if (rule) return rule;
    rule = stridemap__check_layout(d);
    if (rule) return rule;
    stridemap__typestr(d);
    return STRIDEMAP_OK;
}

/* ---- the segment header (SPEC §8) -------------------------------------------------------- */

#define STRIDEMAP_SEGMENT_HEADER_SIZE 64u
#define STRIDEMAP_SEGMENT_DATA_OFFSET 4096u /* where stridemap's producers put the data */

/* A segment header, decoded (host byte order). */
struct stridemap_segment_header {
    uint16_t version_major, version_minor;
    uint32_t data_offset;
    uint8_t segment_id[16];
    uint64_t generation;
    uint64_t capacity;
    uint32_t owner_pid;
};

/* Decodes the first 64 of the len bytes at buf. Returns whether they are a valid header: the
 * magic, major version 1, the CRC-32C of bytes 0-59, data_offset >= 64 and generation >= 1. */
static inline bool stridemap_segment_header_decode(const void *buf, size_t len,
                                                   struct stridemap_segment_header *h) {
    const uint8_t *b = (const uint8_t *)buf;
    memset(h, 0, sizeof *h);
    if (len < STRIDEMAP_SEGMENT_HEADER_SIZE || memcmp(b, "\x89SMS\r\n\x1a\n", 8) != 0)
        return false;
    h->version_major = (uint16_t)stridemap__le(b + 8, 2);
    h->version_minor = (uint16_t)stridemap__le(b + 10, 2);
    h->data_offset = (uint32_t)stridemap__le(b + 12, 4);
    memcpy(h->segment_id, b + 16, 16);
    h->generation = stridemap__le(b + 32, 8);
    h->capacity = stridemap__le(b + 40, 8);
    h->owner_pid = (uint32_t)stridemap__le(b + 48, 4);
    return h->version_major == 1 && (uint32_t)stridemap__le(b + 60, 4) == stridemap_crc32c(b, 60) &&
           h->data_offset >= STRIDEMAP_SEGMENT_HEADER_SIZE && h->generation >= 1;
}

/* Whether a valid header h is the one the descriptor d was made for (SPEC §8): the same
 * segment_id, not all zero, the same generation, and the buffer inside the data area. */
static inline bool stridemap_segment_header_matches(const struct stridemap_segment_header *h,
                                                    const struct stridemap_desc *d) {
    static const uint8_t none[16] = {0};
    const struct stridemap_record *r = &d->rec;
    /* buffer_offset + buffer_len < 2^63 (R18); data_offset + capacity may not fit: compare
     * the buffer's end with the capacity instead. */
    return memcmp(r->segment_id, h->segment_id, 16) == 0 && memcmp(r->segment_id, none, 16) != 0 &&
           r->generation == h->generation && r->buffer_offset >= h->data_offset &&
           r->buffer_offset + r->buffer_len - h->data_offset <= h->capacity;
}

/* ---- opening (SPEC §6) -------------------------------------------------------------------- */
#ifndef STRIDEMAP_NO_OPEN

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h> /* realpath, getenv */
#include <sys/file.h> /* flock: not POSIX, but on every system stridemap's producers run on */
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#if defined(__linux__)
#include <sys/vfs.h> /* fstatfs: is the file on a tmpfs (memfds are)? */
#endif

/* How long a reader retries LOCK_SH | LOCK_NB on a segment (SPEC §7), in milliseconds. */
#ifndef STRIDEMAP_LOCK_PATIENCE_MS
#define STRIDEMAP_LOCK_PATIENCE_MS 2000
#endif

#ifdef O_PATH /* folders on the walk need only be searchable */
#define STRIDEMAP__DIR_FLAGS (O_PATH | O_DIRECTORY)
#else
#define STRIDEMAP__DIR_FLAGS (O_RDONLY | O_DIRECTORY)
#endif
#if defined(F_GET_SEALS)
#define STRIDEMAP__F_GET_SEALS F_GET_SEALS
#define STRIDEMAP__F_SEAL_SHRINK F_SEAL_SHRINK
#elif defined(__linux__) /* the values of linux/fcntl.h, for builds without _GNU_SOURCE */
#define STRIDEMAP__F_GET_SEALS 1034
#define STRIDEMAP__F_SEAL_SHRINK 0x0002
#endif

struct stridemap_open_options {
    const char *const *roots; /* allowed root folders (absolute); their components are trusted
                               * (they may be symbolic links: a path below the root as given
                               * or as resolved by realpath() is below it) */
    size_t nroots;
    /* Unless set, the default roots of SPEC §6 are allowed too: a "stridemap-*" folder directly
     * in $STRIDEMAP_TEMP_FOLDER, /dev/shm or $TMPDIR (else /tmp) that belongs to this process's
     * effective uid with mode 0700 (checked on the opened folder; otherwise O2). */
    bool no_default_roots;
    int fd;              /* source fd: the received fd (not closed); source path: -1 */
    int mode;            /* asked for: STRIDEMAP_MODE_R (0), _COW, or _RW (descriptor r+ only) */
    bool allow_unsealed; /* accept an fd not sealed against shrinking (SPEC §6 O9) */
};

struct stridemap_view {
    void *map;            /* the mapping, NULL when the buffer is empty (not mapped) */
    size_t map_len;
    unsigned char *elem0; /* element (0, ..., 0) */
    int mode;             /* the granted mode */
    int sys_errno;        /* errno of the system call that failed, 0 if none did */
};

/* Splits the NUL-terminated path p (at most 256 bytes) in place into components, checking O1.
 * Returns the number of components, 0 for an O1 failure. */
static inline unsigned stridemap__components(char *p, char **comp) {
    if (p[0] != '/') return 0;
    unsigned n = 0;
    for (char *s = p + 1;; s++) {
        char *end = strchr(s, '/');
        if (end) *end = '\0';
        if (s[0] == '\0' || strcmp(s, ".") == 0 || strcmp(s, "..") == 0) return 0;
        comp[n++] = s;
        if (!end) return n;
        s = end;
    }
}

/* 1 + the number of components of root if they are the first components of the path (and
 * fewer), 0 if not, -1 if the root is malformed. */
static inline int stridemap__below(const char *root, char *const *comp, unsigned ncomp) {
    if (root == NULL || root[0] != '/') return -1;
    unsigned k = 0;
    for (const char *s = root; *s;) {
        while (*s == '/') s++;
        if (!*s) break;
        size_t n = strcspn(s, "/");
        if ((n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.')) return -1;
        if (k >= ncomp || strlen(comp[k]) != n || memcmp(comp[k], s, n) != 0) return 0;
        k++;
        s += n;
    }
    return k < ncomp ? (int)k + 1 : 0;
}

/* Opens one component below dir_fd with O_NOFOLLOW: O3 for a symbolic link, O4 otherwise. */
static inline int stridemap__open_below(int dir_fd, const char *name, int flags, int *fd,
                                        int *err) {
    *fd = openat(dir_fd, name, flags | O_NOFOLLOW | O_CLOEXEC);
    struct stat st;
    if (*fd < 0) {
        *err = errno;
        bool link = fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode);
        return link ? STRIDEMAP_O3 : STRIDEMAP_O4;
    }
    if (fstat(*fd, &st) == 0 && S_ISLNK(st.st_mode)) { /* O_PATH | O_NOFOLLOW opens a link */
        close(*fd);
        return STRIDEMAP_O3;
    }
    return STRIDEMAP_OK;
}

#define STRIDEMAP__FOLDER_PREFIX "stridemap-"

/* The deepest root so far: 1 + its number of components (0: none), its spelling, whether it
 * is a default root. */
struct stridemap__holder {
    int depth;
    const char *dir;
    bool is_default;
};

/* Considers root (as given, then as resolved by realpath) for the path's components. Returns
 * -1 if the root is malformed, else 0. A default root holds the path only when the component
 * right below it starts with "stridemap-". The spelling kept is copied to spare (a buffer the
 * caller owns, STRIDEMAP__ROOT_MAX bytes) when it is the resolved one. */
#define STRIDEMAP__ROOT_MAX 4096
static inline int stridemap__consider(const char *root, bool is_default, char *const *comp,
                                      unsigned ncomp, struct stridemap__holder *h, char *spare) {
    if (root == NULL || root[0] != '/') return is_default ? 0 : -1;
    for (int pass = 0; pass < 2; pass++) {
        const char *dir = root;
        char *resolved = NULL;
        if (pass == 1) {
            resolved = realpath(root, NULL);
            if (resolved == NULL) return 0;
            dir = resolved;
        }
        int k = stridemap__below(dir, comp, ncomp);
        if (k < 0) {
            free(resolved);
            return is_default ? 0 : -1;
        }
        bool fits = k > 0 && (!is_default || strncmp(comp[k - 1], STRIDEMAP__FOLDER_PREFIX,
                                                    sizeof STRIDEMAP__FOLDER_PREFIX - 1) == 0);
        if (fits && k > h->depth) {
            if (resolved != NULL) {
                size_t n = strlen(resolved);
                if (n >= STRIDEMAP__ROOT_MAX) {
                    free(resolved);
                    return 0;
                }
                memcpy(spare, resolved, n + 1);
                dir = spare;
            }
            h->depth = k;
            h->dir = dir;
            h->is_default = is_default;
        }
        free(resolved);
        if (fits) return 0; /* the given spelling holds it: no need to resolve */
    }
    return 0;
}

/* O2 for a default root: the "stridemap-*" entry is a folder of this process's effective uid
 * with mode 0700, checked on the opened fd. */
static inline int stridemap__private_folder(int fd) {
    struct stat st;
    if (fstat(fd, &st) != 0) return STRIDEMAP_O2;
    if (!S_ISDIR(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 07777) != 0700)
        return STRIDEMAP_O2;
    return STRIDEMAP_OK;
}

/* O1-O4 for a path source. */
static inline int stridemap__open_path(const struct stridemap_record *r,
                                       const struct stridemap_open_options *o, int access,
                                       int *fd, int *err) {
    char path[STRIDEMAP_MAX_PATH + 1];
    char *comp[STRIDEMAP_MAX_PATH / 2];
    char resolved[2][STRIDEMAP__ROOT_MAX]; /* resolved spellings: the holder's and the next */
    memcpy(path, r->path, r->path_len);
    path[r->path_len] = '\0';
    unsigned ncomp = stridemap__components(path, comp);
    if (ncomp == 0) return STRIDEMAP_O1;
    struct stridemap__holder h = {0, NULL, false};
    int which = 0; /* the resolved-spelling buffer the next candidate may use */
    for (size_t i = 0; i < o->nroots; i++) {
        const char *before = h.dir;
        if (stridemap__consider(o->roots[i], false, comp, ncomp, &h, resolved[which]) < 0)
            return STRIDEMAP_EINVAL;
        if (h.dir != before && h.dir == resolved[which]) which ^= 1;
    }
    if (!o->no_default_roots) {
        const char *env = getenv("STRIDEMAP_TEMP_FOLDER");
        const char *tmp = getenv("TMPDIR");
        const char *bases[3] = {env && env[0] ? env : NULL, "/dev/shm",
                                tmp && tmp[0] ? tmp : "/tmp"};
        for (int i = 0; i < 3; i++) {
            const char *before = h.dir;
            if (bases[i] == NULL) continue;
            stridemap__consider(bases[i], true, comp, ncomp, &h, resolved[which]);
            if (h.dir != before && h.dir == resolved[which]) which ^= 1;
        }
    }
    if (h.dir == NULL) return STRIDEMAP_O2;
    int best = h.depth;
    /* A default root holds files in its stridemap-* folders, not the folders themselves. */
    if (h.is_default && (unsigned)best >= ncomp) return STRIDEMAP_O2;
    int dir_fd = open(h.dir, STRIDEMAP__DIR_FLAGS | O_CLOEXEC);
    if (dir_fd < 0) {
        *err = errno;
        return STRIDEMAP_O4;
    }
    /* O_NONBLOCK: opening a FIFO must not hang before O6 refuses it; O_NOCTTY: nor adopt a tty */
    for (unsigned k = (unsigned)best - 1; k < ncomp; k++) {
        bool last = k == ncomp - 1;
        int flags = last ? access | O_NOCTTY | O_NONBLOCK : STRIDEMAP__DIR_FLAGS;
        int next, rule = stridemap__open_below(dir_fd, comp[k], flags, &next, err);
        close(dir_fd);
        if (h.is_default && k == (unsigned)best - 1) {
            /* The stridemap-* folder: a link or plain file there is not a folder of ours. */
            if (rule == STRIDEMAP_O3 || (rule == STRIDEMAP_O4 && (*err == ENOTDIR || *err == ELOOP)))
                return STRIDEMAP_O2;
            if (!rule && stridemap__private_folder(next)) {
                close(next);
                return STRIDEMAP_O2;
            }
        }
        if (rule) return rule;
        dir_fd = next;
    }
    *fd = dir_fd;
    return STRIDEMAP_OK;
}

/* O12: a file sealed against shrinking (a sealed memfd, a peer's) must have at least its
 * buffer's bytes allocated (st_blocks * 512), so that reading its holes cannot allocate more
 * here than its producer already did. Unsealed files are not checked. */
static inline int stridemap__check_allocated(int fd, const struct stat *st,
                                             const struct stridemap_record *r) {
    uint64_t allocated = st->st_blocks < 0 ? 0 : (uint64_t)st->st_blocks * 512;
    if (allocated >= r->buffer_len) return STRIDEMAP_OK;
#if defined(__linux__) && defined(F_GET_SEALS)
    int seals = fcntl(fd, F_GET_SEALS);
    if (seals < 0 || !(seals & F_SEAL_SHRINK)) return STRIDEMAP_OK;
    return STRIDEMAP_O12;
#else
    (void)fd;
    return STRIDEMAP_OK; /* no seals here */
#endif
}

/* O6, O7, O8, O9 for an fd source, and O12. */
static inline int stridemap__check_file(int fd, const struct stridemap_record *r, bool from_fd,
                                        bool allow_unsealed, int *err) {
    struct stat st;
    if (fstat(fd, &st) != 0) {
        *err = errno;
        return STRIDEMAP_O6;
    }
    if (!S_ISREG(st.st_mode)) return STRIDEMAP_O6;
    if (st.st_size < 0 || (uint64_t)st.st_size != r->file_len) return STRIDEMAP_O7;
    if (r->inode != 0 && ((uint64_t)st.st_dev != r->device || (uint64_t)st.st_ino != r->inode))
        return STRIDEMAP_O8;
    if (!from_fd) return stridemap__check_allocated(fd, &st, r);
    if (allow_unsealed) return stridemap__check_allocated(fd, &st, r); /* trusted sender */
#ifdef STRIDEMAP__F_GET_SEALS
    int seals = fcntl(fd, STRIDEMAP__F_GET_SEALS);
    if (seals >= 0 && !(seals & STRIDEMAP__F_SEAL_SHRINK)) return STRIDEMAP_O9;
    if (seals < 0) {
        *err = errno;
        return STRIDEMAP_O9;
    }
#else
    *err = EINVAL;
    return STRIDEMAP_O9;
#endif
    return stridemap__check_allocated(fd, &st, r);
}

static inline int64_t stridemap__now_ns(void) {
    struct timespec t;
    if (clock_gettime(CLOCK_MONOTONIC, &t) != 0) return 0;
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/* flock(LOCK_SH) on fd's open file description (SPEC §7.1). Without wait: one try, and never
 * an error (a file that is not a segment is locked if it can be at once). With wait: retries
 * LOCK_SH | LOCK_NB for STRIDEMAP_LOCK_PATIENCE_MS, then STRIDEMAP_EBUSY. */
static inline int stridemap__lock_shared(int fd, bool wait, int *err) {
    int64_t deadline = stridemap__now_ns() + (int64_t)STRIDEMAP_LOCK_PATIENCE_MS * 1000000;
    long pause_ns = 50000;
    for (;;) {
        if (flock(fd, LOCK_SH | LOCK_NB) == 0) return STRIDEMAP_OK;
        int e = errno;
        if (e == EINTR) continue;
        if (!wait) return STRIDEMAP_OK;
        if (e != EWOULDBLOCK && e != EAGAIN) {
            *err = e;
            return STRIDEMAP_ESYS;
        }
        if (stridemap__now_ns() >= deadline) {
            *err = EWOULDBLOCK;
            return STRIDEMAP_EBUSY;
        }
        struct timespec pause = {0, pause_ns};
        nanosleep(&pause, NULL);
        pause_ns = pause_ns * 2 < 20000000 ? pause_ns * 2 : 20000000;
    }
}

/* SPEC §7 and O10: lock the file shared, then (for a segment) read its header, which must be
 * valid and match the descriptor. The lock stays on fd's open file description, which the
 * mapping made next keeps alive. */
static inline int stridemap__enter_segment(int fd, const struct stridemap_desc *d, int *err) {
    if (d->rec.generation == 0) return stridemap__lock_shared(fd, false, err);
    int rule = stridemap__lock_shared(fd, true, err);
    if (rule) return rule;
    uint8_t buf[STRIDEMAP_SEGMENT_HEADER_SIZE];
    size_t got = 0;
    while (got < sizeof buf) {
        ssize_t n = pread(fd, buf + got, sizeof buf - got, (off_t)got);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) *err = errno;
        if (n <= 0) return STRIDEMAP_O10;
        got += (size_t)n;
    }
    struct stridemap_segment_header h;
    if (!stridemap_segment_header_decode(buf, sizeof buf, &h) ||
        !stridemap_segment_header_matches(&h, d))
        return STRIDEMAP_O10;
    return STRIDEMAP_OK;
}

/* A shared map of 2 MiB or more of a tmpfs or memfd file asks for transparent huge pages, so
 * that pages this reader faults in itself may be huge under shmem_enabled=advise (pages the
 * producer made huge are mapped whole without it), as the Rust and Python readers do. A hint:
 * failures are ignored, and it is compiled only where the system has it. */
static inline void stridemap__advise_huge(int fd, void *map, size_t len, int mode) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    struct statfs sf;
    if (mode == STRIDEMAP_MODE_COW || len < ((size_t)2 << 20)) return;
    if (fstatfs(fd, &sf) == 0 && sf.f_type == 0x01021994 /* TMPFS_MAGIC */)
        (void)madvise(map, len, MADV_HUGEPAGE);
#else
    (void)fd;
    (void)map;
    (void)len;
    (void)mode;
#endif
}

/* O11: map exactly the buffer, its start rounded down to the page size. */
static inline int stridemap__map(int fd, const struct stridemap_record *r, int mode,
                                 struct stridemap_view *v) {
    v->mode = mode;
    if (r->buffer_len == 0) return STRIDEMAP_OK; /* not mapped: the array is empty */
    long page = sysconf(_SC_PAGESIZE);
    uint64_t delta = r->buffer_offset % (uint64_t)(page > 0 ? page : 4096);
    uint64_t start = r->buffer_offset - delta, len = delta + r->buffer_len;
    if (len > SIZE_MAX || (off_t)start < 0 || (uint64_t)(off_t)start != start) {
        v->sys_errno = EOVERFLOW;
        return STRIDEMAP_O11;
    }
    int prot = PROT_READ | (mode == STRIDEMAP_MODE_R ? 0 : PROT_WRITE);
    void *p = mmap(NULL, (size_t)len, prot, mode == STRIDEMAP_MODE_COW ? MAP_PRIVATE : MAP_SHARED,
                   fd, (off_t)start);
    if (p == MAP_FAILED) {
        v->sys_errno = errno;
        return STRIDEMAP_O11;
    }
    v->map = p;
    v->map_len = (size_t)len;
    v->elem0 = (unsigned char *)p + delta + r->offset;
    stridemap__advise_huge(fd, p, (size_t)len, mode);
    return STRIDEMAP_OK;
}

/* Opens a descriptor that stridemap_decode or stridemap_decode_compact validated (SPEC §6) and
 * maps its buffer into *v. Checks, in order: O5, then for a path O1, O2, O3/O4, then O6, O7,
 * O8, O9 (fd), O12, O10, O11. Returns 0 or the rule (or STRIDEMAP_EBUSY: a segment stayed locked
 * by its producer for STRIDEMAP_LOCK_PATIENCE_MS); v->sys_errno tells which system call
 * error, if any, lies behind it. A path source's file is closed before returning; an fd
 * source's fd is left open (close it: the mapping does not need it).
 *
 * The file is locked shared (flock) before O10 (SPEC §7): waited for if it is a segment
 * (generation != 0), else only if free at once. The lock belongs to the file's open file
 * description, which the mapping holds: it lasts until stridemap_close(), and for an fd
 * source also while the fd stays open (so a refused fd stays locked until it is closed). */
static inline int stridemap_open(const struct stridemap_desc *d,
                                 const struct stridemap_open_options *o,
                                 struct stridemap_view *v) {
    memset(v, 0, sizeof *v);
    const struct stridemap_record *r = &d->rec;
    unsigned granted = (r->flags & STRIDEMAP_FLAG_MODE_MASK) >> STRIDEMAP_FLAG_MODE_SHIFT;
    bool from_fd = (r->flags & STRIDEMAP_FLAG_SOURCE_FD) != 0;
    if (!(o->mode == STRIDEMAP_MODE_R || o->mode == STRIDEMAP_MODE_COW ||
          (o->mode == STRIDEMAP_MODE_RW && granted == STRIDEMAP_MODE_RW)))
        return STRIDEMAP_O5;
    if (from_fd ? o->fd < 0 : o->fd != -1) return STRIDEMAP_EINVAL;
    int fd = o->fd, rule = STRIDEMAP_OK;
    if (!from_fd) {
        int access = o->mode == STRIDEMAP_MODE_RW ? O_RDWR : O_RDONLY;
        rule = stridemap__open_path(r, o, access, &fd, &v->sys_errno);
        if (rule) return rule;
    }
    rule = stridemap__check_file(fd, r, from_fd, o->allow_unsealed, &v->sys_errno);
    if (!rule) rule = stridemap__enter_segment(fd, d, &v->sys_errno);
    if (!rule) rule = stridemap__map(fd, r, o->mode, v);
    if (!from_fd) close(fd);
    return rule;
}

/* Unmaps a view opened by stridemap_open (harmless on an empty or zeroed view). */
static inline void stridemap_close(struct stridemap_view *v) {
    if (v->map != NULL) munmap(v->map, v->map_len);
    memset(v, 0, sizeof *v);
}

/* The first byte of the element at index[0..ndim) (SPEC §1.1), NULL if an index is out of
 * range. Validation keeps every partial sum inside the span: nothing overflows. */
static inline unsigned char *stridemap_element(const struct stridemap_desc *d,
                                               const struct stridemap_view *v,
                                               const uint64_t *index) {
    const struct stridemap_record *r = &d->rec;
    int64_t at = 0;
    for (unsigned k = 0; k < r->ndim; k++) {
        if (index[k] >= r->shape[k]) return NULL;
        at += (int64_t)index[k] * r->strides[k];
    }
    return v->elem0 + at;
}

#endif /* STRIDEMAP_NO_OPEN */
#endif /* STRIDEMAP_H */
