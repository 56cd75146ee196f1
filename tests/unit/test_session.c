/* test_session.c — the connection settings' check (crw_session_check_conninfo): no server needed. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "source/session.h"

static char err[512];

static void no_env(void) {
    unsetenv("PGPORT");
    unsetenv("PGHOST");
    unsetenv("PGHOSTADDR");
}

TestSuite(session, .init = no_env);

static void expect_refused(const char *conninfo, const char *want) {
    err[0] = '\0';
    cr_assert_eq(crw_session_check_conninfo(conninfo, "-d/--dbname", err, sizeof err), CRW_ERR_CONFIG,
                 "'%s' was accepted", conninfo);
    cr_assert(!strncmp(err, "-d/--dbname: ", 13), "'%s': the message names the option: %s", conninfo, err);
    cr_assert(strstr(err, want), "'%s': %s (wanted %s)", conninfo, err, want);
}

Test(session, a_malformed_conninfo_is_refused_with_libpqs_reason) {
    expect_refused("host=x junk", "missing \"=\" after \"junk\" in connection info string");
    expect_refused("host=x foo=bar", "invalid connection option \"foo\"");
    expect_refused("host='x", "unterminated quoted string");
    expect_refused("postgresql://localhost/db?foo=bar", "invalid URI query parameter: \"foo\"");
}

Test(session, ports_libpq_checks_only_when_it_connects_are_refused_up_front) {
    expect_refused("postgresql://localhost:99999/db", "port \"99999\" is not a port number (1 to 65535)");
    expect_refused("host=x port=0", "port \"0\"");
    expect_refused("host=x port=5432x", "port \"5432x\"");
    expect_refused("host=a,b port=5432,5433,5434", "3 ports for 2 hosts");
    expect_refused("postgresql://a:5432,b:70000/db", "port \"70000\"");
    expect_refused("host=x connect_timeout=soon", "connect_timeout \"soon\" is not an integer");
}

Test(session, what_libpq_accepts_passes) {
    const char *good[] = {"",
                          "app", /* a word: a database name, as libpq reads it */
                          "host=db dbname=app user=crwatch",
                          "host=db port=' 5432 ' connect_timeout=5",
                          "host=a,b port=5432,5433",
                          "host=a,b port=5432",
                          "host=a,b,c port=,5433,",
                          "postgresql://crwatch@db/app",
                          "postgres://a:5432,b:5433/app?connect_timeout=3",
                          NULL};
    for (int i = 0; good[i]; i++)
        cr_assert_eq(crw_session_check_conninfo(good[i], "-d/--dbname", err, sizeof err), 0, "'%s': %s", good[i],
                     err);
    cr_assert_eq(crw_session_check_conninfo(NULL, "-d/--dbname", err, sizeof err), 0, "%s", err);
}

Test(session, pgport_is_checked_when_the_conninfo_names_no_port) {
    setenv("PGPORT", "99999", 1);
    cr_assert_eq(crw_session_check_conninfo("dbname=app", "-d/--dbname", err, sizeof err), CRW_ERR_CONFIG);
    cr_assert(strstr(err, "PGPORT: port \"99999\""), "%s", err);
    cr_assert_eq(crw_session_check_conninfo(NULL, "-d/--dbname", err, sizeof err), CRW_ERR_CONFIG);
    cr_assert_eq(crw_session_check_conninfo("host=db port=5432", "-d/--dbname", err, sizeof err), 0, "%s", err);
    setenv("PGPORT", "5432,5433", 1);
    setenv("PGHOST", "a,b,c", 1);
    cr_assert_eq(crw_session_check_conninfo("dbname=app", "-d/--dbname", err, sizeof err), CRW_ERR_CONFIG);
    cr_assert(strstr(err, "2 ports for 3 hosts"), "%s", err);
}
