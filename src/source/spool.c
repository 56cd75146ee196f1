/*
 * spool.c — per-transaction spool files of length-prefixed messages.
 */
#include "source/spool.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/err.h"
#include "core/log.h"

typedef struct {
    uint32_t subxid;
    long offset; /* where its first change starts */
} subxact_t;

typedef struct txspool {
    uint32_t xid;
    FILE *f;
    long size;
    subxact_t *subs;
    int nsubs, capsubs;
    struct txspool *next;
} txspool_t;

struct crw_spool {
    char *dir;
    txspool_t *list;
    uint64_t bytes;
    char err[512]; /* the last failure (crw_spool_error) */
};

/* Notes and logs a failure; @returns CRW_ERR_IO. */
static int fail(crw_spool_t *sp, const char *what, int e) {
    snprintf(sp->err, sizeof sp->err, "spool (spool.dir=%s): %s%s%s", sp->dir, what, e ? ": " : "", e ? strerror(e) : "");
    crw_error("%s", sp->err);
    return CRW_ERR_IO;
}

const char *crw_spool_error(const crw_spool_t *sp) { return sp->err[0] ? sp->err : "spool: failed"; }

crw_spool_t *crw_spool_new(const char *dir) {
    crw_spool_t *sp = crw_calloc(1, sizeof *sp);
    sp->dir = crw_strdup(dir);
    return sp;
}

static void tx_free(crw_spool_t *sp, txspool_t *t) {
    if (t->f)
        fclose(t->f);
    sp->bytes -= (uint64_t)t->size;
    free(t->subs);
    free(t);
}

static txspool_t *tx_find(crw_spool_t *sp, uint32_t xid, txspool_t ***prevp) {
    txspool_t **pp = &sp->list;
    for (; *pp; pp = &(*pp)->next)
        if ((*pp)->xid == xid) {
            if (prevp)
                *prevp = pp;
            return *pp;
        }
    return NULL;
}

static void tx_unlink_free(crw_spool_t *sp, uint32_t xid) {
    txspool_t **pp;
    txspool_t *t = tx_find(sp, xid, &pp);
    if (t) {
        *pp = t->next;
        tx_free(sp, t);
    }
}

void crw_spool_reset(crw_spool_t *sp) {
    while (sp->list) {
        txspool_t *t = sp->list;
        sp->list = t->next;
        tx_free(sp, t);
    }
}

void crw_spool_destroy(crw_spool_t *sp) {
    if (!sp)
        return;
    crw_spool_reset(sp);
    free(sp->dir);
    free(sp);
}

int crw_spool_append(crw_spool_t *sp, uint32_t top_xid, uint32_t subxid, const char *msg, size_t len) {
    txspool_t *t = tx_find(sp, top_xid, NULL);
    if (!t) {
        char path[4096];
        snprintf(path, sizeof path, "%s/crwatch-spool-XXXXXX", sp->dir);
        int fd = mkstemp(path);
        if (fd < 0)
            return fail(sp, "cannot create a file", errno);
        unlink(path); /* anonymous: gone with the process whatever happens */
        t = crw_calloc(1, sizeof *t);
        t->xid = top_xid;
        t->f = fdopen(fd, "w+");
        if (!t->f) {
            int e = errno;
            close(fd);
            free(t);
            return fail(sp, "cannot open a file", e);
        }
        t->next = sp->list;
        sp->list = t;
    }
    if (subxid != top_xid) {
        bool known = false;
        for (int i = 0; i < t->nsubs && !known; i++)
            known = t->subs[i].subxid == subxid;
        if (!known) {
            if (t->nsubs == t->capsubs) {
                t->capsubs = t->capsubs ? t->capsubs * 2 : 8;
                t->subs = crw_realloc(t->subs, sizeof *t->subs * (size_t)t->capsubs);
            }
            t->subs[t->nsubs++] = (subxact_t){subxid, t->size};
        }
    }
    uint32_t l = (uint32_t)len;
    if (fwrite(&l, sizeof l, 1, t->f) != 1 || fwrite(msg, 1, len, t->f) != len)
        return fail(sp, "cannot write a streamed transaction's changes", errno);
    t->size += (long)(sizeof l + len);
    sp->bytes += sizeof l + len;
    return 0;
}

int crw_spool_abort(crw_spool_t *sp, uint32_t top_xid, uint32_t subxid) {
    if (subxid == top_xid) {
        tx_unlink_free(sp, top_xid);
        return 0;
    }
    txspool_t *t = tx_find(sp, top_xid, NULL);
    if (!t)
        return 0;
    for (int i = 0; i < t->nsubs; i++)
        if (t->subs[i].subxid == subxid) {
            long off = t->subs[i].offset;
            if (fflush(t->f) != 0 || ftruncate(fileno(t->f), off) != 0 || fseek(t->f, off, SEEK_SET) != 0)
                return fail(sp, "cannot drop an aborted subtransaction's changes", errno);
            sp->bytes -= (uint64_t)(t->size - off);
            t->size = off;
            t->nsubs = i; /* later subtransactions are its children */
            return 0;
        }
    return 0; /* a subtransaction that changed nothing we saw */
}

int crw_spool_replay(crw_spool_t *sp, uint32_t top_xid, crw_spool_cb cb, void *opaque) {
    txspool_t *t = tx_find(sp, top_xid, NULL);
    if (!t)
        return 0;
    int rc = 0;
    if (fflush(t->f) != 0 || fseek(t->f, 0, SEEK_SET) != 0) {
        rc = CRW_ERR_IO;
        goto done;
    }
    char *msg = NULL;
    size_t cap = 0;
    long pos = 0;
    while (pos < t->size) {
        uint32_t l;
        if (fread(&l, sizeof l, 1, t->f) != 1) {
            rc = CRW_ERR_IO;
            break;
        }
        if (l > cap) {
            cap = l;
            msg = crw_realloc(msg, cap);
        }
        if (l && fread(msg, 1, l, t->f) != l) {
            rc = CRW_ERR_IO;
            break;
        }
        pos += (long)(sizeof l + l);
        rc = cb(opaque, msg, l);
        if (rc < 0)
            break;
    }
    free(msg);
    if (rc == CRW_ERR_IO) {
        char what[96];
        snprintf(what, sizeof what, "cannot read back transaction %u", top_xid);
        fail(sp, what, 0);
    }
done:
    tx_unlink_free(sp, top_xid);
    return rc < 0 ? rc : 0;
}

uint64_t crw_spool_bytes(const crw_spool_t *sp) { return sp->bytes; }
