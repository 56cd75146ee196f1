/* test_copytext.c — COPY text rows into tuples (decode/copytext.c). */
#include <criterion/criterion.h>
#include <string.h>

#include "decode/copytext.h"

static crw_buf_t scratch = CRW_BUF_INIT;
static crw_pgo_col_t cols[8];

static void col_is(int i, const char *want) {
    cr_assert_eq(cols[i].kind, CRW_PGO_COL_TEXT, "column %d is text", i);
    cr_assert_eq(cols[i].len, strlen(want), "column %d: length %u, want %zu", i, cols[i].len, strlen(want));
    cr_assert(memcmp(cols[i].data, want, cols[i].len) == 0, "column %d: '%.*s', want '%s'", i, (int)cols[i].len,
              cols[i].data, want);
}

Test(copytext, plain_values_point_into_the_line) {
    const char *line = "1\tabc\t{\"a\": 1}\n";
    cr_assert_eq(crw_copytext_row(line, strlen(line), 3, cols, &scratch), 0);
    col_is(0, "1");
    col_is(1, "abc");
    col_is(2, "{\"a\": 1}");
    cr_assert(cols[1].data == line + 2, "no copy of an unescaped value");
}

Test(copytext, null_and_empty) {
    const char *line = "\\N\t\t\\N\n";
    cr_assert_eq(crw_copytext_row(line, strlen(line), 3, cols, &scratch), 0);
    cr_assert_eq(cols[0].kind, CRW_PGO_COL_NULL);
    col_is(1, "");
    cr_assert_eq(cols[2].kind, CRW_PGO_COL_NULL);
}

Test(copytext, escapes) {
    /* what COPY writes for: a\tb, line1\nline2, back\slash, {"k":"q\"x"}, octal \101, hex \x41, \N as text */
    const char *line = "a\\tb\tline1\\nline2\tback\\\\slash\t{\"k\":\"q\\\\\"x\"}\t\\101\\x41\t\\\\N\n";
    cr_assert_eq(crw_copytext_row(line, strlen(line), 6, cols, &scratch), 0);
    col_is(0, "a\tb");
    col_is(1, "line1\nline2");
    col_is(2, "back\\slash");
    col_is(3, "{\"k\":\"q\\\"x\"}");
    col_is(4, "AA");
    col_is(5, "\\N");
}

Test(copytext, wrong_column_counts_are_refused) {
    const char *few = "1\t2\n", *many = "1\t2\t3\t4\n";
    cr_assert_eq(crw_copytext_row(few, strlen(few), 3, cols, &scratch), -1);
    cr_assert_eq(crw_copytext_row(many, strlen(many), 3, cols, &scratch), -1);
    cr_assert_eq(crw_copytext_row("", 0, 0, cols, &scratch), 0);
    cr_assert_eq(crw_copytext_row("x", 1, 0, cols, &scratch), -1);
}

Test(copytext, many_escaped_values_survive_scratch_growth) {
    crw_buf_t line = CRW_BUF_INIT;
    for (int i = 0; i < 8; i++) {
        if (i)
            crw_buf_putc(&line, '\t');
        for (int k = 0; k < 300; k++)
            crw_buf_puts(&line, "\\\\");
    }
    cr_assert_eq(crw_copytext_row(line.data, line.len, 8, cols, &scratch), 0);
    for (int i = 0; i < 8; i++) {
        cr_assert_eq(cols[i].len, 300);
        for (int k = 0; k < 300; k++)
            cr_assert_eq(cols[i].data[k], '\\');
    }
    crw_buf_free(&line);
}
