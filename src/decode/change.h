/*
 * change.h — one row change as every source hands it on: the relation, the
 * operation and the tuples.  The logical source makes it from a pgoutput
 * Insert, Update, Delete or Truncate; the polling and snapshot sources from
 * rows they read.  Tuples hold PostgreSQL's text output (crw_pgo_col_t).
 *
 * Everything is borrowed: valid during the source's callback only.
 */
#ifndef CRW_CHANGE_H
#define CRW_CHANGE_H

#include <stdint.h>

#include "decode/pgoutput.h"
#include "decode/relcache.h"

typedef enum {
    CRW_OP_INSERT = 'I',
    CRW_OP_UPDATE = 'U',
    CRW_OP_DELETE = 'D',
    CRW_OP_TRUNCATE = 'T', /* no tuples */
    CRW_OP_READ = 'R',     /* a row read outside replication (snapshot): newtup only */
} crw_op_t;

typedef struct crw_change {
    char op;                        /* crw_op_t */
    const crw_relation_t *rel;
    const crw_pgo_tuple_t *newtup;  /* insert, update, read; NULL otherwise */
    const crw_pgo_tuple_t *oldtup;  /* update, delete: NULL when the source has no old row */
    char oldkind;                   /* 'K' old key columns only, 'O' the whole old row, 0 none */
    uint64_t lsn;                   /* the change's own WAL position; 0 when unknown */
    const char *id;                 /* the change's own event id; NULL: <commit position>/<ordinal> */
    size_t idlen;
    uint32_t xid;                   /* its own writer (a polled row's); 0: the transaction's */
    int64_t time;                   /* its own time, PostgreSQL epoch µs; 0: the transaction's commit time */
    bool old_rows_whole;            /* every update and delete of rel brings its whole old row (pgoutput and
                                     * REPLICA IDENTITY FULL), this change's too */
    bool values_once;               /* the tuples' bytes are the source's own and read once: the mapper may
                                     * give a large value's memory back as it renders it (they read as zeros
                                     * after), so whoever reads the change again clears this first */
} crw_change_t;

/*
 * The change in m, a pgoutput Insert, Update or Delete of rel.
 * @returns 0, or -1 when m is no row change.
 */
static inline int crw_change_from_msg(crw_change_t *c, const crw_relation_t *rel, const crw_pgo_msg_t *m) {
    *c = (crw_change_t){.op = m->type, .rel = rel, .lsn = m->lsn, .old_rows_whole = rel->replident == 'f'};
    switch (m->type) {
    case CRW_PGO_INSERT: c->newtup = &m->u.insert.newtup; return 0;
    case CRW_PGO_UPDATE:
        c->newtup = &m->u.update.newtup;
        c->oldkind = m->u.update.oldkind;
        c->oldtup = c->oldkind ? &m->u.update.oldtup : NULL;
        return 0;
    case CRW_PGO_DELETE:
        c->oldkind = m->u.del.oldkind;
        c->oldtup = c->oldkind ? &m->u.del.oldtup : NULL;
        return 0;
    default: return -1;
    }
}

#endif
