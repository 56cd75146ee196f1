/* test_pipeline.c — the confirmed LSN never passes an unacknowledged change. */
#include <criterion/criterion.h>

#include "core/pipeline.h"

Test(pipeline, confirms_only_fully_acked_prefix) {
    crw_pipeline_t *p = crw_pipeline_new(100);
    uint64_t a = crw_pipeline_begin(p);
    crw_pipeline_hold(p, a, 2);
    crw_pipeline_commit(p, a, 200);
    uint64_t b = crw_pipeline_begin(p);
    crw_pipeline_hold(p, b, 1);
    crw_pipeline_commit(p, b, 300);
    cr_assert_eq(crw_pipeline_confirmed(p), 100);
    crw_pipeline_release(p, b, 1); /* b acked before a: still nothing */
    cr_assert_eq(crw_pipeline_confirmed(p), 100);
    crw_pipeline_release(p, a, 1);
    cr_assert_eq(crw_pipeline_confirmed(p), 100);
    crw_pipeline_release(p, a, 1);
    cr_assert_eq(crw_pipeline_confirmed(p), 300);
    cr_assert(crw_pipeline_idle(p));
    crw_pipeline_destroy(p);
}

Test(pipeline, open_transaction_blocks_confirmation) {
    crw_pipeline_t *p = crw_pipeline_new(0);
    uint64_t a = crw_pipeline_begin(p);
    cr_assert_not(crw_pipeline_idle(p));
    crw_pipeline_follow(p, 5000); /* not idle: must not move */
    cr_assert_eq(crw_pipeline_confirmed(p), 0);
    crw_pipeline_commit(p, a, 50);
    cr_assert_eq(crw_pipeline_confirmed(p), 50);
    crw_pipeline_follow(p, 5000);
    cr_assert_eq(crw_pipeline_confirmed(p), 5000);
    crw_pipeline_follow(p, 10); /* never backwards */
    cr_assert_eq(crw_pipeline_confirmed(p), 5000);
    crw_pipeline_destroy(p);
}

Test(pipeline, abandoned_transaction_is_never_confirmed) {
    crw_pipeline_t *p = crw_pipeline_new(10);
    uint64_t a = crw_pipeline_begin(p);
    crw_pipeline_hold(p, a, 1);
    crw_pipeline_commit(p, a, 20);
    uint64_t b = crw_pipeline_begin(p);
    crw_pipeline_abandon(p, b);
    cr_assert_eq(crw_pipeline_confirmed(p), 10);
    crw_pipeline_release(p, a, 1);
    cr_assert_eq(crw_pipeline_confirmed(p), 20);
    crw_pipeline_commit(p, b, 999); /* late calls on a dropped transaction change nothing */
    cr_assert_eq(crw_pipeline_confirmed(p), 20);
    cr_assert(crw_pipeline_idle(p));
    crw_pipeline_destroy(p);
}

Test(pipeline, ring_grows_past_its_initial_size) {
    crw_pipeline_t *p = crw_pipeline_new(0);
    uint64_t first = crw_pipeline_begin(p);
    crw_pipeline_hold(p, first, 1);
    crw_pipeline_commit(p, first, 1);
    for (uint64_t i = 2; i <= 1000; i++) {
        uint64_t s = crw_pipeline_begin(p);
        crw_pipeline_commit(p, s, i);
    }
    cr_assert_eq(crw_pipeline_in_flight(p), 1000);
    cr_assert_eq(crw_pipeline_confirmed(p), 0);
    crw_pipeline_release(p, first, 1);
    cr_assert_eq(crw_pipeline_confirmed(p), 1000);
    crw_pipeline_destroy(p);
}
