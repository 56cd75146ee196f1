/*
 * test_lsn.c — LSN text both ways (core/lsn.c) and ISO times (core/clock.c).
 */
#include <criterion/criterion.h>
#include <string.h>

#include "core/clock.h"
#include "core/lsn.h"

Test(lsn, formats_as_postgresql_prints) {
    char b[CRW_LSN_BUFSIZE];
    cr_assert_eq(crw_lsn_format(b, 0), 3);
    cr_assert_str_eq(b, "0/0");
    crw_lsn_format(b, 0x16B374D848ULL);
    cr_assert_str_eq(b, "16/B374D848");
    cr_assert_eq(crw_lsn_format(b, UINT64_MAX), 17);
    cr_assert_str_eq(b, "FFFFFFFF/FFFFFFFF");
    crw_lsn_format(b, 0x100000000ULL);
    cr_assert_str_eq(b, "1/0");
}

Test(lsn, parses_and_round_trips) {
    uint64_t v;
    cr_assert_eq(crw_lsn_parse("16/B374D848", &v), 0);
    cr_assert_eq(v, 0x16B374D848ULL);
    cr_assert_eq(crw_lsn_parse("0/1a2b", &v), 0);
    cr_assert_eq(v, 0x1A2BULL);
    char b[CRW_LSN_BUFSIZE];
    const uint64_t samples[] = {1, 0xFFFFFFFFULL, 0xABCDEF0123456789ULL};
    for (size_t i = 0; i < 3; i++) {
        crw_lsn_format(b, samples[i]);
        cr_assert_eq(crw_lsn_parse(b, &v), 0);
        cr_assert_eq(v, samples[i], "%s", b);
    }
}

Test(lsn, refuses_what_is_not_an_lsn) {
    uint64_t v = 7;
    cr_assert_eq(crw_lsn_parse("16B374D848", &v), -1);
    cr_assert_eq(crw_lsn_parse("1/2x", &v), -1);
    cr_assert_eq(crw_lsn_parse("", &v), -1);
    cr_assert_eq(crw_lsn_parse("/5", &v), -1);
    cr_assert_eq(v, 7);
}

Test(clock, iso_times_in_utc_with_microseconds) {
    char b[40];
    crw_clock_format_iso(b, sizeof b, INT64_C(1704067200123456));
    cr_assert_str_eq(b, "2024-01-01T00:00:00.123456Z");
    crw_clock_format_iso(b, sizeof b, -1); /* before the epoch: the fraction stays positive */
    cr_assert_str_eq(b, "1969-12-31T23:59:59.999999Z");
    crw_clock_format_iso(b, sizeof b, CRW_PG_EPOCH_OFFSET_US);
    cr_assert_str_eq(b, "2000-01-01T00:00:00.000000Z");
}

Test(clock, monotonic_does_not_go_back) {
    int64_t a = crw_clock_mono_us(), b = crw_clock_mono_us();
    cr_assert_geq(b, a);
    cr_assert_gt(crw_clock_wall_us(), INT64_C(1700000000000000));
}
