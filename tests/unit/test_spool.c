/* test_spool.c — streamed transactions: replay in order, abort without trace. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/buf.h"
#include "source/spool.h"

static int collect(void *opaque, const char *msg, size_t len) {
    crw_buf_t *b = opaque;
    crw_buf_put(b, msg, len);
    crw_buf_putc(b, '|');
    return 0;
}

static void put(crw_spool_t *sp, uint32_t top, uint32_t sub, const char *s) {
    cr_assert_eq(crw_spool_append(sp, top, sub, s, strlen(s)), 0);
}

Test(spool, replays_in_order_and_forgets) {
    crw_spool_t *sp = crw_spool_new("/tmp");
    put(sp, 7, 7, "a");
    put(sp, 8, 8, "x");
    put(sp, 7, 7, "bb");
    put(sp, 7, 7, "");
    crw_buf_t out = CRW_BUF_INIT;
    cr_assert_eq(crw_spool_replay(sp, 7, collect, &out), 0);
    cr_assert_str_eq(out.data, "a|bb||");
    crw_buf_reset(&out);
    cr_assert_eq(crw_spool_replay(sp, 7, collect, &out), 0); /* gone after replay */
    cr_assert_eq(out.len, 0);
    cr_assert_eq(crw_spool_bytes(sp), 4 + 1);
    crw_spool_destroy(sp);
    crw_buf_free(&out);
}

Test(spool, whole_abort_leaves_nothing) {
    crw_spool_t *sp = crw_spool_new("/tmp");
    put(sp, 7, 7, "a");
    put(sp, 7, 9, "b");
    cr_assert_eq(crw_spool_abort(sp, 7, 7), 0);
    crw_buf_t out = CRW_BUF_INIT;
    cr_assert_eq(crw_spool_replay(sp, 7, collect, &out), 0);
    cr_assert_eq(out.len, 0);
    cr_assert_eq(crw_spool_bytes(sp), 0);
    crw_spool_destroy(sp);
}

Test(spool, subtransaction_abort_truncates_it_and_its_children) {
    crw_spool_t *sp = crw_spool_new("/tmp");
    put(sp, 7, 7, "top1");
    put(sp, 7, 8, "sub8");
    put(sp, 7, 9, "sub9-child-of-8");
    cr_assert_eq(crw_spool_abort(sp, 7, 8), 0);
    put(sp, 7, 10, "sub10");
    put(sp, 7, 7, "top2");
    cr_assert_eq(crw_spool_abort(sp, 7, 12345), 0); /* unknown subxact: nothing */
    crw_buf_t out = CRW_BUF_INIT;
    cr_assert_eq(crw_spool_replay(sp, 7, collect, &out), 0);
    cr_assert_str_eq(out.data, "top1|sub10|top2|");
    crw_spool_destroy(sp);
    crw_buf_free(&out);
}

/* The mode of the spool file this process has open (spool files are unlinked at once: found by /proc/self/fd). */
static int spool_file_mode(void) {
    DIR *d = opendir("/proc/self/fd");
    cr_assert(d);
    int mode = -1;
    struct dirent *e;
    while ((e = readdir(d))) {
        char link[300], target[4096];
        snprintf(link, sizeof link, "/proc/self/fd/%s", e->d_name);
        ssize_t n = readlink(link, target, sizeof target - 1);
        if (n <= 0)
            continue;
        target[n] = '\0';
        struct stat st;
        if (strstr(target, "/crwatch-spool-") && stat(link, &st) == 0) {
            cr_assert_eq(mode, -1, "more than one spool file open");
            mode = (int)(st.st_mode & 07777);
        }
    }
    closedir(d);
    cr_assert_neq(mode, -1, "no spool file open");
    return mode;
}

Test(spool, files_are_for_their_owner_only) {
    /* They hold row data.  umask 0 lets the mode crwatch asks for through unchanged. */
    char dir[] = "/tmp/crw-spool-XXXXXX";
    cr_assert(mkdtemp(dir));
    mode_t old = umask(0);
    crw_spool_t *sp = crw_spool_new(dir);
    put(sp, 7, 7, "row data");
    umask(old);
    cr_assert_eq(spool_file_mode(), 0600);
    crw_spool_destroy(sp);
    cr_assert_eq(rmdir(dir), 0, "the spool left a file behind");
}
