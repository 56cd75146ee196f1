/*
 * fuzz_jsondiff.c — the JSON tokenizer, pointer look-up and structural diff
 * of src/map/jsondiff.c, over two documents.
 *
 * Input: document a, a NUL, document b, and optionally a NUL and the skip
 * list crw_jdoc_diff takes (comma-separated JSON strings of pointers).
 *
 * Invariants, beyond ASan/UBSan, for documents that are JSON (RFC 8259,
 * fuzz_common.h's own check):
 *   - the tokenizer accepts them, and the root look-up ("") is token 0;
 *   - a document with whitespace added has the same fingerprint, and no
 *     difference from itself;
 *   - `changed` and the patch are JSON arrays once bracketed;
 *   - the patch turns a into b (applied here with json-c, RFC 6902 add,
 *     remove, replace), and each path it names is found where it must be
 *     (in a for remove and replace, in b for add and replace).
 */
#include <json-c/json.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "fuzz_common.h"
#include "map/jsondiff.h"

#define TOKENIZER_MAX_DEPTH 256 /* jsondiff.c's bound */

/* Nesting depth of JSON text (brackets outside strings). */
static int depth_of(const char *s, size_t n) {
    int d = 0, max = 0;
    bool in_str = false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (in_str) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_str = false;
        } else if (c == '"')
            in_str = true;
        else if (c == '{' || c == '[') {
            if (++d > max)
                max = d;
        } else if (c == '}' || c == ']')
            d--;
    }
    return max;
}

/* s with a space after every ',' and ':' outside strings, and around the whole. */
static void spaced(crw_buf_t *out, const char *s, size_t n) {
    bool in_str = false;
    crw_buf_putc(out, '\n');
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        crw_buf_putc(out, c);
        if (in_str) {
            if (c == '\\' && i + 1 < n)
                crw_buf_putc(out, s[++i]);
            else if (c == '"')
                in_str = false;
        } else if (c == '"')
            in_str = true;
        else if (c == ',' || c == ':')
            crw_buf_puts(out, " \t");
    }
    crw_buf_puts(out, " \r\n");
}

/* True when some object of doc has two members whose keys decode alike (json-c keeps one). */
static bool dup_keys(const crw_jdoc_t *d) {
    crw_buf_t x = CRW_BUF_INIT, y = CRW_BUF_INIT;
    bool dup = false;
    for (uint32_t t = 0; t < d->ntoks && !dup; t++) {
        if (d->toks[t].type != 'o')
            continue;
        for (uint32_t k = t + 1, i = 0; i < d->toks[t].count && !dup; i++, k = d->toks[k + 1].next) {
            crw_buf_reset(&x);
            crw_json_unescape(&x, d->text + d->toks[k].start + 1, d->toks[k].end - d->toks[k].start - 2);
            for (uint32_t l = d->toks[k + 1].next, j = i + 1; j < d->toks[t].count && !dup;
                 j++, l = d->toks[l + 1].next) {
                crw_buf_reset(&y);
                crw_json_unescape(&y, d->text + d->toks[l].start + 1, d->toks[l].end - d->toks[l].start - 2);
                dup = x.len == y.len && (x.len == 0 || !memcmp(x.data, y.data, x.len));
            }
        }
    }
    crw_buf_free(&x);
    crw_buf_free(&y);
    return dup;
}

/* True when s has a \uD800-\uDFFF escape (half of a surrogate pair, or a lone one). */
static bool surrogates(const char *s) {
    for (const char *p = s; (p = strstr(p, "\\u")); p += 2)
        if ((p[2] == 'd' || p[2] == 'D') && p[3] && strchr("89abcdefABCDEF", p[3]))
            return true;
    return false;
}

/* ---- RFC 6902, the three operations the diff writes -------------------------------------- */

/* The next RFC 6901 segment of *p (after its '/'), decoded into seg; false at the end. */
static bool next_segment(const char **p, crw_buf_t *seg) {
    if (**p != '/')
        return false;
    crw_buf_grow(seg, 1);
    crw_buf_reset(seg); /* terminated even when the segment is empty */
    const char *s = *p + 1;
    for (; *s && *s != '/'; s++) {
        if (*s == '~' && (s[1] == '0' || s[1] == '1')) {
            crw_buf_putc(seg, s[1] == '0' ? '~' : '/');
            s++;
        } else
            crw_buf_putc(seg, *s);
    }
    *p = s;
    return true;
}

static bool array_index(const crw_buf_t *seg, size_t *idx) {
    if (seg->len == 0 || seg->len > 9 || (seg->len > 1 && seg->data[0] == '0'))
        return false;
    size_t v = 0;
    for (size_t i = 0; i < seg->len; i++) {
        if (seg->data[i] < '0' || seg->data[i] > '9')
            return false;
        v = v * 10 + (size_t)(seg->data[i] - '0');
    }
    *idx = v;
    return true;
}

/* Applies one operation to *doc; false when it cannot apply (a path that is not there). */
static bool apply_op(json_object **doc, const char *op, const char *path, json_object *value) {
    if (!*path) { /* the root */
        if (strcmp(op, "replace") && strcmp(op, "add"))
            return false;
        json_object_put(*doc);
        *doc = json_object_get(value);
        return true;
    }
    crw_buf_t seg = CRW_BUF_INIT;
    const char *p = path;
    json_object *cur = *doc;
    bool ok = false;
    while (next_segment(&p, &seg)) {
        bool last = *p == '\0';
        if (json_object_is_type(cur, json_type_object)) {
            if (memchr(seg.data, '\0', seg.len))
                break;
            json_object *child;
            bool has = json_object_object_get_ex(cur, seg.data, &child);
            if (!last) {
                if (!has)
                    break;
                cur = child;
                continue;
            }
            if (!strcmp(op, "remove")) {
                if (!has)
                    break;
                json_object_object_del(cur, seg.data);
            } else {
                if (!strcmp(op, "replace") && !has)
                    break;
                json_object_object_add(cur, seg.data, json_object_get(value));
            }
            ok = true;
        } else if (json_object_is_type(cur, json_type_array)) {
            size_t idx, len = json_object_array_length(cur);
            if (!array_index(&seg, &idx))
                break;
            if (!last) {
                if (idx >= len)
                    break;
                cur = json_object_array_get_idx(cur, idx);
                continue;
            }
            if (!strcmp(op, "remove")) {
                if (idx >= len)
                    break;
                json_object_array_del_idx(cur, idx, 1);
            } else if (!strcmp(op, "replace")) {
                if (idx >= len)
                    break;
                json_object_array_put_idx(cur, idx, json_object_get(value));
            } else {
                if (idx > len)
                    break;
                /* insert: the tail moves up one */
                json_object_array_add(cur, NULL);
                for (size_t k = len; k > idx; k--)
                    json_object_array_put_idx(cur, k, json_object_get(json_object_array_get_idx(cur, k - 1)));
                json_object_array_put_idx(cur, idx, json_object_get(value));
            }
            ok = true;
        }
        break;
    }
    crw_buf_free(&seg);
    return ok;
}

/* The patch's operations, each applied to *doc and its path looked up in a and b. */
static void apply_patch(json_object **doc, json_object *patch, const crw_jdoc_t *a, const crw_jdoc_t *b,
                        const char *all, size_t alln) {
    for (size_t i = 0; i < json_object_array_length(patch); i++) {
        json_object *o = json_object_array_get_idx(patch, i), *jop, *jpath, *jval = NULL;
        FZ_ASSERT(json_object_is_type(o, json_type_object) && json_object_object_get_ex(o, "op", &jop) &&
                      json_object_object_get_ex(o, "path", &jpath) && json_object_is_type(jpath, json_type_string),
                  "patch: an operation without op and path", all, alln);
        const char *op = json_object_get_string(jop), *path = json_object_get_string(jpath);
        bool has_value = json_object_object_get_ex(o, "value", &jval);
        FZ_ASSERT(!strcmp(op, "remove") ? !has_value : (!strcmp(op, "add") || !strcmp(op, "replace")) && has_value,
                  "patch: an operation other than add, remove, replace, or its value", all, alln);
        bool nul = (size_t)json_object_get_string_len(jpath) != strlen(path); /* a key with U+0000 */
        if (!nul) {
            if (strcmp(op, "add"))
                FZ_ASSERT(crw_jdoc_lookup(a, path) >= 0, "lookup: a removed or replaced path is not in a", path,
                          strlen(path));
            if (strcmp(op, "remove"))
                FZ_ASSERT(crw_jdoc_lookup(b, path) >= 0, "lookup: an added or replaced path is not in b", path,
                          strlen(path));
        }
        FZ_ASSERT(nul || apply_op(doc, op, path, jval), "patch: an operation does not apply to a", all, alln);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fz_in_t in = {data, size, 0};
    size_t an = 0, bn = 0, sn = 0;
    const uint8_t *ap = fz_until(&in, 0, &an), *bp = fz_until(&in, 0, &bn), *sp = fz_until(&in, 0, &sn);
    /* Exactly sized copies: ASan sees a read past a document's end. */
    char *a = fz_strndup(ap ? ap : data, an), *b = fz_strndup(bp ? bp : data, bn);
    char *skip = sp ? fz_strndup(sp, sn) : NULL;
    crw_jdoc_t da = CRW_JDOC_INIT, db = CRW_JDOC_INIT, dx = CRW_JDOC_INIT;
    crw_buf_t changed = CRW_BUF_INIT, patch = CRW_BUF_INIT, x = CRW_BUF_INIT;

    bool aj = fz_json_valid(a, an), bj = fz_json_valid(b, bn);
    bool ap_ok = crw_jdoc_parse(&da, a, an) == 0, bp_ok = crw_jdoc_parse(&db, b, bn) == 0;
    FZ_ASSERT(!aj || depth_of(a, an) > TOKENIZER_MAX_DEPTH || ap_ok, "tokenizer: refuses JSON", a, an);
    FZ_ASSERT(!bj || depth_of(b, bn) > TOKENIZER_MAX_DEPTH || bp_ok, "tokenizer: refuses JSON", b, bn);

    if (ap_ok) {
        FZ_ASSERT(da.ntoks > 0 && crw_jdoc_lookup(&da, "") == 0, "lookup: the root is not token 0", a, an);
        for (uint32_t t = 0; t < da.ntoks; t++)
            FZ_ASSERT(da.toks[t].start <= da.toks[t].end && da.toks[t].end <= an && da.toks[t].next > t &&
                          da.toks[t].next <= da.ntoks,
                      "tokenizer: a token outside the text or its tree", a, an);
        /* The same document, spaced out: the same fingerprint, no difference. */
        if (aj) {
            spaced(&x, a, an);
            FZ_ASSERT(crw_jdoc_parse(&dx, x.data, x.len) == 0, "tokenizer: refuses JSON with more whitespace", x.data,
                      x.len);
            FZ_ASSERT(crw_jdoc_fingerprint(&dx, 0) == crw_jdoc_fingerprint(&da, 0),
                      "fingerprint: whitespace changes it", x.data, x.len);
            crw_jdoc_diff(&da, &dx, &changed, &patch, NULL);
            FZ_ASSERT(changed.len == 0 && patch.len == 0, "diff: a document differs from itself spaced out",
                      changed.data, changed.len);
        }
    }
    if (ap_ok && bp_ok) {
        crw_jdoc_diff(&da, &db, &changed, &patch, skip);
        crw_buf_reset(&changed);
        crw_buf_reset(&patch);
        crw_jdoc_diff(&da, &db, &changed, &patch, NULL);
        if (aj && bj && fz_utf8_valid(a, an) && fz_utf8_valid(b, bn)) {
            crw_buf_reset(&x);
            crw_buf_printf(&x, "[%s]", changed.data ? changed.data : "");
            fz_check_json("diff: changed", x.data, x.len);
            crw_buf_reset(&x);
            crw_buf_printf(&x, "[%s]", patch.data ? patch.data : "");
            fz_check_json("diff: patch", x.data, x.len);
            json_object *ja = NULL, *jb = NULL, *jp = NULL;
            /* json-c keys are C strings: a key with U+0000 is not what the text says;
             * and json-c 0.16 decodes some surrogate pairs (\ud837\ude00) as U+FFFD */
            bool nul = strstr(a, "\\u0000") || strstr(b, "\\u0000");
            bool comparable = !nul && !surrogates(a) && !surrogates(b) && !dup_keys(&da) && !dup_keys(&db);
            if (comparable && fz_jsonc_parse(a, an, &ja) && fz_jsonc_parse(b, bn, &jb) &&
                fz_jsonc_parse(x.data, x.len, &jp)) {
                apply_patch(&ja, jp, &da, &db, x.data, x.len);
                FZ_ASSERT(json_object_equal(ja, jb), "patch: a patched is not b", x.data, x.len);
            }
            json_object_put(ja);
            json_object_put(jb);
            json_object_put(jp);
        }
    }
    crw_buf_free(&changed);
    crw_buf_free(&patch);
    crw_buf_free(&x);
    crw_jdoc_free(&da);
    crw_jdoc_free(&db);
    crw_jdoc_free(&dx);
    free(a);
    free(b);
    free(skip);
    return 0;
}
