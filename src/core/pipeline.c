/*
 * pipeline.c — the in-flight transaction ring and the confirmed LSN.
 *
 * Transactions complete in order of their sequence numbers only when their
 * acks happen to arrive in order; acks may come in any order (a Kafka
 * delivery report for partition 3 before one for partition 1).  The ring
 * keeps every transaction from the oldest unconfirmed one on, so advancing
 * is a pop from the front while the front is closed and fully acked.
 */
#include "core/pipeline.h"

#include "core/clock.h"
#include "core/metrics.h"

#include <stdlib.h>

#include "core/log.h"

typedef struct {
    uint64_t end_lsn;
    int64_t commit_time;  /* crw_pipeline_stamp's (0: not timed) */
    uint32_t outstanding;
    bool closed;
    bool abandoned;
} txn_t;

struct crw_pipeline {
    txn_t *ring;
    uint32_t cap;    /* power of two */
    uint64_t head;   /* seq of the oldest tracked transaction */
    uint64_t tail;   /* next seq to hand out */
    uint64_t confirmed;
    uint64_t outstanding; /* deliveries held, over every tracked transaction */
};

crw_pipeline_t *crw_pipeline_new(uint64_t start_lsn) {
    crw_pipeline_t *p = crw_calloc(1, sizeof *p);
    p->cap = 64;
    p->ring = crw_calloc(p->cap, sizeof *p->ring);
    p->confirmed = start_lsn;
    return p;
}

void crw_pipeline_destroy(crw_pipeline_t *p) {
    if (!p)
        return;
    free(p->ring);
    free(p);
}

static txn_t *slot(const crw_pipeline_t *p, uint64_t seq) { return &p->ring[seq & (p->cap - 1)]; }

/* Pops every leading transaction that is closed with nothing outstanding. */
static void advance(crw_pipeline_t *p) {
    while (p->head < p->tail) {
        txn_t *t = slot(p, p->head);
        if (!(t->abandoned || (t->closed && t->outstanding == 0)))
            break;
        if (!t->abandoned && t->end_lsn > p->confirmed)
            p->confirmed = t->end_lsn;
        if (!t->abandoned && t->commit_time)
            crw_metric_commit_to_ack(crw_clock_pg_us() - t->commit_time);
        p->outstanding -= t->outstanding; /* an abandoned one's late acks are not waited for */
        p->head++;
    }
}

uint64_t crw_pipeline_begin(crw_pipeline_t *p) {
    if (p->tail - p->head == p->cap) {
        uint32_t ncap = p->cap * 2;
        txn_t *nr = crw_calloc(ncap, sizeof *nr);
        for (uint64_t s = p->head; s < p->tail; s++)
            nr[s & (ncap - 1)] = *slot(p, s);
        free(p->ring);
        p->ring = nr;
        p->cap = ncap;
    }
    uint64_t seq = p->tail++;
    *slot(p, seq) = (txn_t){0};
    return seq;
}

void crw_pipeline_hold(crw_pipeline_t *p, uint64_t seq, uint32_t n) {
    if (seq >= p->head && seq < p->tail) {
        slot(p, seq)->outstanding += n;
        p->outstanding += n;
    }
}

void crw_pipeline_release(crw_pipeline_t *p, uint64_t seq, uint32_t n) {
    if (seq < p->head || seq >= p->tail)
        return; /* an ack for a transaction already abandoned and popped */
    txn_t *t = slot(p, seq);
    uint32_t k = t->outstanding >= n ? n : t->outstanding;
    t->outstanding -= k;
    p->outstanding -= k;
    advance(p);
}

void crw_pipeline_commit(crw_pipeline_t *p, uint64_t seq, uint64_t end_lsn) {
    if (seq < p->head || seq >= p->tail)
        return;
    txn_t *t = slot(p, seq);
    t->closed = true;
    t->end_lsn = end_lsn;
    advance(p);
}

void crw_pipeline_abandon(crw_pipeline_t *p, uint64_t seq) {
    if (seq < p->head || seq >= p->tail)
        return;
    /* An abandoned transaction must not be confirmed, and nothing after it
     * may be confirmed either until it is delivered again: the server will
     * resend it from the confirmed position, so simply stop here by marking
     * it and everything later abandoned. */
    for (uint64_t s = seq; s < p->tail; s++)
        slot(p, s)->abandoned = true;
    advance(p);
}

uint64_t crw_pipeline_confirmed(const crw_pipeline_t *p) { return p->confirmed; }

bool crw_pipeline_idle(const crw_pipeline_t *p) { return p->head == p->tail; }

void crw_pipeline_follow(crw_pipeline_t *p, uint64_t lsn) {
    if (crw_pipeline_idle(p) && lsn > p->confirmed)
        p->confirmed = lsn;
}

uint32_t crw_pipeline_in_flight(const crw_pipeline_t *p) { return (uint32_t)(p->tail - p->head); }

uint64_t crw_pipeline_outstanding(const crw_pipeline_t *p) { return p->outstanding; }

void crw_pipeline_stamp(crw_pipeline_t *p, uint64_t seq, int64_t commit_time) {
    if (seq >= p->head && seq < p->tail)
        slot(p, seq)->commit_time = commit_time;
}
