/* smopen: opens a descriptor with stridemap.h and prints the elements it sees.
 *
 *   smopen [--root DIR]... [--fd N] [--mode r|r+|c] [--allow-unsealed] [--fill BYTE] [--hold]
 *          < HEX
 *
 * Each stdin line holds a fixed record in hex. For each, prints {"ok": true, "bytes": "HEX"} with
 * every element's bytes in C order (read through stridemap_element), or
 * {"ok": false, "rule": "O7", "errno": N}.
 * With --fill, every byte of every element is then set to BYTE (for r+ and c mappings).
 * With --hold, the --fd is closed once a record was opened, and each view stays open until one
 * more stdin line is read (to look at the segment lock a view holds by itself, SPEC §7). */
#define _GNU_SOURCE
#include "../stridemap.h"

#include <stdio.h>
#include <stdlib.h>

enum { MAX_ROOTS = 8 };

/* Calls f on each element's first byte, in C order. */
static void for_each(const struct stridemap_desc *d, const struct stridemap_view *v,
                     void (*f)(unsigned char *, const struct stridemap_desc *, int), int arg) {
    uint64_t index[STRIDEMAP_MAX_NDIM] = {0};
    unsigned ndim = d->rec.ndim;
    for (uint64_t i = 0; i < d->len; i++) {
        f(stridemap_element(d, v, index), d, arg);
        for (unsigned k = ndim; k-- > 0;) {
            if (++index[k] < d->rec.shape[k]) break;
            index[k] = 0;
        }
    }
}

static void print_element(unsigned char *e, const struct stridemap_desc *d, int arg) {
    (void)arg;
    for (uint64_t b = 0; b < d->itemsize; b++) printf("%02x", e[b]);
}

static void fill_element(unsigned char *e, const struct stridemap_desc *d, int byte) {
    memset(e, byte, d->itemsize);
}

static char *line = NULL;
static size_t cap = 0;

static void open_one(const uint8_t *rec, size_t n, struct stridemap_open_options *o, int fill,
                     bool hold) {
    struct stridemap_desc d;
    int rule = stridemap_decode(rec, n, &d);
    if (rule) {
        printf("{\"ok\": false, \"rule\": \"%s\", \"errno\": 0}\n", stridemap_rule_name(rule));
        return;
    }
    struct stridemap_view v;
    rule = stridemap_open(&d, o, &v);
    if (hold && o->fd >= 0) {
        close(o->fd);
        o->fd = -2; /* any later record is a usage error */
    }
    if (rule) {
        printf("{\"ok\": false, \"rule\": \"%s\", \"errno\": %d}\n", stridemap_rule_name(rule),
               v.sys_errno);
        return;
    }
    printf("{\"ok\": true, \"bytes\": \"");
    for_each(&d, &v, print_element, 0);
    printf("\"}\n");
    if (fill >= 0) for_each(&d, &v, fill_element, fill);
    if (hold) {
        fflush(stdout);
        if (getline(&line, &cap, stdin) < 0) clearerr(stdin); /* EOF also lets go */
    }
    stridemap_close(&v);
}

int main(int argc, char **argv) {
    const char *roots[MAX_ROOTS];
    struct stridemap_open_options o = {.roots = roots, .fd = -1, .mode = STRIDEMAP_MODE_R};
    int fill = -1;
    bool hold = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *next = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--allow-unsealed") == 0) {
            o.allow_unsealed = true;
            continue;
        }
        if (strcmp(a, "--hold") == 0) {
            hold = true;
            continue;
        }
        if (next == NULL) {
            fprintf(stderr, "smopen: %s needs a value\n", a);
            return 2;
        }
        i++;
        if (strcmp(a, "--root") == 0 && o.nroots < MAX_ROOTS)
            roots[o.nroots++] = next;
        else if (strcmp(a, "--fd") == 0)
            o.fd = atoi(next);
        else if (strcmp(a, "--fill") == 0)
            fill = atoi(next);
        else if (strcmp(a, "--mode") == 0)
            o.mode = strcmp(next, "r+") == 0 ? STRIDEMAP_MODE_RW
                     : strcmp(next, "c") == 0 ? STRIDEMAP_MODE_COW
                     : strcmp(next, "r") == 0 ? STRIDEMAP_MODE_R
                                              : 99;
        else {
            fprintf(stderr, "smopen: unknown option %s\n", a);
            return 2;
        }
    }
    while (getline(&line, &cap, stdin) > 0) {
        uint8_t rec[STRIDEMAP_RECORD_SIZE];
        size_t n = 0;
        unsigned byte;
        for (const char *p = line; n < sizeof rec && sscanf(p, "%2x", &byte) == 1; p += 2)
            rec[n++] = (uint8_t)byte;
        open_one(rec, n, &o, fill, hold);
    }
    free(line);
    return 0;
}
