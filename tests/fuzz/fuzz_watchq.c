/*
 * fuzz_watchq.c — the watch API's selectors (src/app/watchapi.c, through
 * crw_wapi_selector_match): labelSelector and fieldSelector as a request
 * gives them, matched against one object.
 *
 * Input: a flags byte (bit 0: no labelSelector, bit 1: no fieldSelector),
 * then NUL-separated: the labelSelector, the fieldSelector, the object's
 * namespace, its name, then its labels as key, value, key, value, ...
 *
 * Invariants, beyond ASan/UBSan: the answer is 1, 0 or -1; for each label
 * with a plain key and value (the first of its key), "k=v", "k==v", "k",
 * "k in (x,v)" match and "k!=v", "!k", "k notin (v)" do not; an empty
 * labelSelector selects everything the fieldSelector does; a plain name
 * and namespace are selected by metadata.name / metadata.namespace.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/watchapi.h"
#include "fuzz_common.h"

#define MAX_LABELS 16

/* Label keys and values as Kubernetes allows them (and nothing the selector grammar uses). */
static bool plain(const char *s) {
    size_t n = strlen(s);
    return n > 0 && n < 64 &&
           strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._/-") == n &&
           strcmp(s, "in") && strcmp(s, "notin");
}

static int match(const char *ls, const char *fs, const char *ns, const char *name, const char *const *labels,
                 int n) {
    int rc = crw_wapi_selector_match(ls, fs, ns, name, labels, n);
    FZ_ASSERT(rc == -1 || rc == 0 || rc == 1, "selector_match returned something else than -1, 0, 1", ls,
              ls ? strlen(ls) : 0);
    return rc;
}

static void expect(int want, const char *sel, const char *ns, const char *name, const char *const *labels, int n) {
    int got = match(sel, NULL, ns, name, labels, n);
    if (got != want) {
        char what[96];
        snprintf(what, sizeof what, "labelSelector gave %d, not %d, for a label the object has", got, want);
        fz_fail(what, sel, strlen(sel));
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fz_in_t in = {data, size, 0};
    uint8_t flags = fz_u8(&in);
    char *part[4 + 2 * MAX_LABELS];
    int np = 0;
    size_t len;
    const uint8_t *p;
    while (np < (int)(sizeof part / sizeof part[0]) && (p = fz_until(&in, 0, &len)))
        part[np++] = fz_strndup(p, len);
    while (np < 4)
        part[np++] = fz_strndup("", 0);
    const char *ls = flags & 1 ? NULL : part[0], *fs = flags & 2 ? NULL : part[1], *ns = part[2], *name = part[3];
    const char *const *labels = (const char *const *)part + 4;
    int nl = (np - 4) / 2;

    int rc = match(ls, fs, ns, name, labels, nl);
    int fields_only = match(NULL, fs, ns, name, labels, nl);
    FZ_ASSERT(match("", fs, ns, name, labels, nl) == fields_only, "an empty labelSelector changed the answer", fs,
              fs ? strlen(fs) : 0);
    if (rc == 1)
        FZ_ASSERT(fields_only == 1, "the fieldSelector refuses what both selectors select", fs, fs ? strlen(fs) : 0);

    char sel[256];
    for (int i = 0; i < nl; i++) {
        const char *k = labels[2 * i], *v = labels[2 * i + 1];
        bool first = true;
        for (int j = 0; j < i; j++)
            first = first && strcmp(labels[2 * j], k) != 0;
        if (!first || !plain(k) || !plain(v))
            continue;
        snprintf(sel, sizeof sel, "%s=%s", k, v);
        expect(1, sel, ns, name, labels, nl);
        snprintf(sel, sizeof sel, " %s == %s ", k, v);
        expect(1, sel, ns, name, labels, nl);
        snprintf(sel, sizeof sel, "%s", k);
        expect(1, sel, ns, name, labels, nl);
        snprintf(sel, sizeof sel, "%s in (x, %s)", k, v);
        expect(1, sel, ns, name, labels, nl);
        snprintf(sel, sizeof sel, "%s!=%s", k, v);
        expect(0, sel, ns, name, labels, nl);
        snprintf(sel, sizeof sel, "!%s", k);
        expect(0, sel, ns, name, labels, nl);
        snprintf(sel, sizeof sel, "%s notin (%s)", k, v);
        expect(0, sel, ns, name, labels, nl);
        snprintf(sel, sizeof sel, "%s=%s,!%s", k, v, k);
        expect(0, sel, ns, name, labels, nl);
    }
    if (plain(name) && plain(ns)) {
        snprintf(sel, sizeof sel, "metadata.name=%s,metadata.namespace==%s", name, ns);
        FZ_ASSERT(match(NULL, sel, ns, name, labels, nl) == 1, "fieldSelector refuses the object's own name", sel,
                  strlen(sel));
        snprintf(sel, sizeof sel, "metadata.name!=%s", name);
        FZ_ASSERT(match(NULL, sel, ns, name, labels, nl) == 0, "fieldSelector != selects the object's own name", sel,
                  strlen(sel));
    }
    for (int i = 0; i < np; i++)
        free(part[i]);
    return 0;
}
