/*
 * jsondiff.c — tokenizer, pointer look-up and diff.
 *
 * The documents are crwatch's own compact output, but the tokenizer
 * accepts any JSON (whitespace included) and rejects what is not.
 * Diff rules: equal text is equal (jsonb orders keys, so equal values print
 * alike); objects are compared member by member, arrays element by element
 * (extra elements are added or removed at the end); anything else that
 * differs is replaced.
 */
#include "map/jsondiff.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"

#define MAX_DEPTH 256

typedef struct {
    crw_jdoc_t *d;
    const char *s;
    size_t n, i;
} parser_t;

static void skip_ws(parser_t *p) {
    while (p->i < p->n && (p->s[p->i] == ' ' || p->s[p->i] == '\t' || p->s[p->i] == '\n' || p->s[p->i] == '\r'))
        p->i++;
}

static uint32_t push(parser_t *p, char type) {
    crw_jdoc_t *d = p->d;
    if (d->ntoks == d->cap) {
        d->cap = d->cap ? d->cap * 2 : 64;
        d->toks = crw_realloc(d->toks, sizeof *d->toks * d->cap);
    }
    crw_jtok_t *t = &d->toks[d->ntoks];
    t->type = type;
    t->start = (uint32_t)p->i;
    t->end = t->start;
    t->count = 0;
    t->next = 0;
    return d->ntoks++;
}

static int parse_value(parser_t *p, int depth);

static int parse_string(parser_t *p) {
    uint32_t t = push(p, 's');
    p->i++; /* opening quote */
    /* Jump from quote to quote with memchr (long spec strings dominate); a
     * quote preceded by an odd run of backslashes is escaped. */
    for (;;) {
        const char *q = memchr(p->s + p->i, '"', p->n - p->i);
        if (!q)
            return -1;
        size_t bs = 0;
        while (q - bs > p->s + p->i && q[-1 - (ptrdiff_t)bs] == '\\')
            bs++;
        p->i = (size_t)(q - p->s) + 1;
        if (bs % 2 == 0)
            break;
    }
    /* Raw control characters are not JSON (crwatch never writes them). */
    for (uint32_t k = p->d->toks[t].start; k < p->i; k++)
        if ((unsigned char)p->s[k] < 0x20)
            return -1;
    p->d->toks[t].end = (uint32_t)p->i;
    p->d->toks[t].next = t + 1;
    return 0;
}

static int parse_value(parser_t *p, int depth) {
    if (depth > MAX_DEPTH)
        return -1;
    skip_ws(p);
    if (p->i >= p->n)
        return -1;
    char c = p->s[p->i];
    if (c == '"')
        return parse_string(p);
    if (c == '{' || c == '[') {
        uint32_t t = push(p, c == '{' ? 'o' : 'a');
        char close = c == '{' ? '}' : ']';
        p->i++;
        skip_ws(p);
        uint32_t count = 0;
        if (p->i < p->n && p->s[p->i] == close)
            p->i++;
        else
            for (;;) {
                if (c == '{') {
                    skip_ws(p);
                    if (p->i >= p->n || p->s[p->i] != '"' || parse_string(p) < 0)
                        return -1;
                    skip_ws(p);
                    if (p->i >= p->n || p->s[p->i++] != ':')
                        return -1;
                }
                if (parse_value(p, depth + 1) < 0)
                    return -1;
                count++;
                skip_ws(p);
                if (p->i >= p->n)
                    return -1;
                char sep = p->s[p->i++];
                if (sep == close)
                    break;
                if (sep != ',')
                    return -1;
            }
        p->d->toks[t].end = (uint32_t)p->i;
        p->d->toks[t].count = count;
        p->d->toks[t].next = p->d->ntoks;
        return 0;
    }
    /* number, true, false, null: the run of characters up to a delimiter */
    uint32_t t = push(p, 'p');
    size_t st = p->i;
    while (p->i < p->n && !strchr(",:]} \t\n\r", p->s[p->i]))
        p->i++;
    if (p->i == st)
        return -1;
    p->d->toks[t].end = (uint32_t)p->i;
    p->d->toks[t].next = t + 1;
    return 0;
}

int crw_jdoc_parse(crw_jdoc_t *doc, const char *text, size_t len) {
    parser_t p = {doc, text, len, 0};
    doc->text = text;
    doc->ntoks = 0;
    if (len > UINT32_MAX || parse_value(&p, 0) < 0)
        return -1;
    skip_ws(&p);
    return p.i == len ? 0 : -1;
}

void crw_jdoc_free(crw_jdoc_t *doc) {
    free(doc->toks);
    doc->toks = NULL;
    doc->ntoks = doc->cap = 0;
}

/* ---- JSON strings and RFC 6901 pointers ------------------------------ */

static int read_u4(const char *p, const char *end, unsigned *cp) {
    if (end - p < 4)
        return -1;
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        int h = crw_hexval(p[i]);
        if (h < 0)
            return -1;
        v = v << 4 | (unsigned)h;
    }
    *cp = v;
    return 0;
}

static int put_utf8(char *o, unsigned cp) {
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | cp >> 6);
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | cp >> 12);
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | cp >> 18);
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/*
 * Decodes the character of a JSON string body at *pp (before end) into out
 * as UTF-8 and moves *pp past it.  A \uD8xx\uDCxx pair is one code point;
 * a lone surrogate becomes U+FFFD.  @returns its byte count (1-4), or -1
 * for a malformed escape.
 */
static int json_char(const char **pp, const char *end, char out[4]) {
    const char *p = *pp;
    if (*p != '\\') {
        out[0] = *p;
        *pp = p + 1;
        return 1;
    }
    if (++p >= end)
        return -1;
    char c = *p++, e;
    switch (c) {
    case '"': case '\\': case '/': e = c; break;
    case 'b': e = '\b'; break;
    case 'f': e = '\f'; break;
    case 'n': e = '\n'; break;
    case 'r': e = '\r'; break;
    case 't': e = '\t'; break;
    case 'u': {
        unsigned cp, lo;
        if (read_u4(p, end, &cp) < 0)
            return -1;
        p += 4;
        if (cp >= 0xD800 && cp < 0xDC00 && end - p >= 6 && p[0] == '\\' && p[1] == 'u' &&
            read_u4(p + 2, end, &lo) == 0 && lo >= 0xDC00 && lo < 0xE000) {
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            p += 6;
        } else if (cp >= 0xD800 && cp < 0xE000)
            cp = 0xFFFD;
        *pp = p;
        return put_utf8(out, cp);
    }
    default: return -1;
    }
    out[0] = e;
    *pp = p;
    return 1;
}

int crw_json_unescape(crw_buf_t *b, const char *body, size_t n) {
    const char *p = body, *end = body + n;
    crw_buf_grow(b, n);
    while (p < end) {
        char ch[4];
        int k = json_char(&p, end, ch);
        if (k < 0)
            return -1;
        crw_buf_put(b, ch, (size_t)k);
    }
    return 0;
}

void crw_json_pointer_append(crw_buf_t *b, const char *seg, size_t n) {
    crw_buf_putc(b, '/');
    for (size_t i = 0; i < n; i++) {
        if (seg[i] == '~')
            crw_buf_put(b, "~0", 2);
        else if (seg[i] == '/')
            crw_buf_put(b, "~1", 2);
        else
            crw_buf_putc(b, seg[i]);
    }
}

/* Does the raw JSON string token (quotes included) spell the pointer
 * segment seg[0..n) (RFC 6901 escaped)?  Both sides are decoded: JSON
 * escapes in the key, ~0 and ~1 in the segment. */
static bool key_matches(const char *tok, size_t toklen, const char *seg, size_t n) {
    const char *k = tok + 1, *ke = tok + toklen - 1;
    size_t j = 0;
    while (k < ke) {
        char kc[4];
        int kn = json_char(&k, ke, kc);
        if (kn < 0)
            return false;
        for (int b = 0; b < kn; b++, j++) {
            if (j >= n)
                return false;
            char sc = seg[j];
            if (sc == '~' && j + 1 < n) {
                sc = seg[j + 1] == '1' ? '/' : '~';
                j++;
            }
            if (kc[b] != sc)
                return false;
        }
    }
    return j == n;
}

uint64_t crw_jdoc_fingerprint(const crw_jdoc_t *doc, int tok) {
    uint64_t h = UINT64_C(14695981039346656037);
    if (tok < 0 || (uint32_t)tok >= doc->ntoks)
        return 0;
    for (uint32_t i = (uint32_t)tok, end = doc->toks[tok].next; i < end; i++) {
        const crw_jtok_t *t = &doc->toks[i];
        h = (h ^ (uint8_t)t->type) * UINT64_C(1099511628211);
        if (t->type == 's' || t->type == 'p')
            for (uint32_t k = t->start; k < t->end; k++)
                h = (h ^ (uint8_t)doc->text[k]) * UINT64_C(1099511628211);
        else
            h = (h ^ t->count) * UINT64_C(1099511628211);
    }
    return h;
}

int crw_jdoc_lookup(const crw_jdoc_t *doc, const char *pointer) {
    if (doc->ntoks == 0)
        return -1;
    uint32_t cur = 0;
    const char *p = pointer;
    while (*p) {
        if (*p != '/')
            return -1;
        const char *seg = ++p;
        while (*p && *p != '/')
            p++;
        size_t n = (size_t)(p - seg);
        const crw_jtok_t *t = &doc->toks[cur];
        uint32_t child = cur + 1;
        bool found = false;
        if (t->type == 'o') {
            for (uint32_t m = 0; m < t->count && !found; m++) {
                const crw_jtok_t *k = &doc->toks[child];
                if (key_matches(doc->text + k->start, k->end - k->start, seg, n)) {
                    cur = child + 1;
                    found = true;
                } else
                    child = doc->toks[child + 1].next;
            }
        } else if (t->type == 'a') {
            char *end;
            unsigned long idx = strtoul(seg, &end, 10);
            if (end != p || n == 0)
                return -1;
            for (uint32_t e = 0; e < t->count; e++) {
                if (e == idx) {
                    cur = child;
                    found = true;
                    break;
                }
                child = doc->toks[child].next;
            }
        }
        if (!found)
            return -1;
    }
    return (int)cur;
}

typedef struct {
    const crw_jdoc_t *a, *b;
    crw_buf_t *changed, *patch;
    const char *skip;
    crw_buf_t path;
    crw_buf_t key; /* scratch: one member key, decoded */
} diff_t;

static void tok_text(const crw_jdoc_t *d, uint32_t t, const char **s, size_t *n) {
    *s = d->text + d->toks[t].start;
    *n = d->toks[t].end - d->toks[t].start;
}

/* Appends a member key (raw JSON string token) to the path: the key's
 * real text (JSON escapes decoded), RFC 6901-escaped. */
static void path_push_key(diff_t *df, const char *tok, size_t n) {
    crw_buf_reset(&df->key);
    if (crw_json_unescape(&df->key, tok + 1, n - 2) < 0) {
        crw_buf_reset(&df->key); /* not from the tokenizer's JSON: keep the raw text */
        crw_buf_put(&df->key, tok + 1, n - 2);
    }
    crw_json_pointer_append(&df->path, df->key.data, df->key.len);
}

static bool skipped(const diff_t *df) {
    if (!df->skip)
        return false;
    /* skip holds "\"/a\",\"/b\"": look for the quoted path (which may hold a NUL: a key's \u0000) */
    size_t n = df->path.len;
    const char *end = df->skip + strlen(df->skip);
    for (const char *s = df->skip; (s = strchr(s, '"')); s++) {
        if ((size_t)(end - s) > n + 1 && !memcmp(s + 1, df->path.data, n) && s[1 + n] == '"')
            return true;
        s = strchr(s + 1, '"');
        if (!s)
            break;
    }
    return false;
}

/* Records the current path as changed; v[0..n) is the new value (NULL for a removal). */
static void record_text(diff_t *df, const char *op, const char *v, size_t n) {
    if (df->changed->len)
        crw_buf_putc(df->changed, ',');
    crw_buf_put_json_str(df->changed, df->path.data ? df->path.data : "", df->path.len);
    if (!df->patch)
        return;
    if (df->patch->len)
        crw_buf_putc(df->patch, ',');
    crw_buf_printf(df->patch, "{\"op\":\"%s\",\"path\":", op);
    crw_buf_put_json_str(df->patch, df->path.data ? df->path.data : "", df->path.len);
    if (v) {
        crw_buf_puts(df->patch, ",\"value\":");
        crw_buf_put(df->patch, v, n);
    }
    crw_buf_putc(df->patch, '}');
}

static void record(diff_t *df, const char *op, const crw_jdoc_t *vd, uint32_t vt) {
    const char *s = NULL;
    size_t n = 0;
    if (vd)
        tok_text(vd, vt, &s, &n);
    record_text(df, op, s, n);
}

/*
 * Do two member keys (raw JSON string tokens) name the same member?  Equal
 * text does; otherwise only when escapes are involved ("\u0061" is "a"):
 * then both are decoded, side by side in the key scratch, and compared.
 */
static bool same_key(diff_t *df, const char *x, size_t xn, const char *y, size_t yn) {
    if (xn == yn && !memcmp(x, y, xn))
        return true;
    if (!memchr(x, '\\', xn) && !memchr(y, '\\', yn))
        return false;
    crw_buf_reset(&df->key);
    if (crw_json_unescape(&df->key, x + 1, xn - 2) < 0)
        return false;
    size_t half = df->key.len;
    if (crw_json_unescape(&df->key, y + 1, yn - 2) < 0)
        return false;
    return df->key.len == 2 * half && !memcmp(df->key.data, df->key.data + half, half);
}

/*
 * The key token of the member of object tok (in d) that is the nth (from 0)
 * to spell the key k[0..kn), or -1.  json keeps a key written twice: the
 * first of one document pairs with the first of the other, the second with
 * the second, so a document does not differ from itself.
 */
static int nth_member(diff_t *df, const crw_jdoc_t *d, uint32_t tok, const char *k, size_t kn, uint32_t nth) {
    uint32_t m = tok + 1;
    for (uint32_t i = 0; i < d->toks[tok].count; i++, m = d->toks[m + 1].next) {
        const char *s;
        size_t n;
        tok_text(d, m, &s, &n);
        if (same_key(df, s, n, k, kn) && nth-- == 0)
            return (int)m;
    }
    return -1;
}

/* How many members of object tok (in d) before the one of key token key spell its key. */
static uint32_t occurrence(diff_t *df, const crw_jdoc_t *d, uint32_t tok, uint32_t key) {
    const char *k;
    size_t kn;
    tok_text(d, key, &k, &kn);
    uint32_t n = 0;
    for (uint32_t m = tok + 1; m != key; m = d->toks[m + 1].next) {
        const char *s;
        size_t sn;
        tok_text(d, m, &s, &sn);
        n += same_key(df, s, sn, k, kn);
    }
    return n;
}

static void diff_at(diff_t *df, uint32_t ta, uint32_t tb) {
    const crw_jtok_t *x = &df->a->toks[ta], *y = &df->b->toks[tb];
    const char *sa, *sb;
    size_t na, nb;
    tok_text(df->a, ta, &sa, &na);
    tok_text(df->b, tb, &sb, &nb);
    if (na == nb && memcmp(sa, sb, na) == 0)
        return;
    size_t mark = df->path.len;
    if (x->type == 'o' && y->type == 'o') {
        /* members of b: changed or added */
        uint32_t kb = tb + 1;
        for (uint32_t i = 0; i < y->count; i++) {
            const char *kbs;
            size_t kbn;
            tok_text(df->b, kb, &kbs, &kbn);
            int found = nth_member(df, df->a, ta, kbs, kbn, occurrence(df, df->b, tb, kb));
            path_push_key(df, kbs, kbn);
            if (found >= 0)
                diff_at(df, (uint32_t)found + 1, kb + 1);
            else
                record(df, "add", df->b, kb + 1);
            df->path.len = mark;
            df->path.data[mark] = '\0';
            kb = df->b->toks[kb + 1].next;
        }
        /* members of a missing from b: removed (unless merely unknown) */
        uint32_t ka = ta + 1;
        for (uint32_t j = 0; j < x->count; j++) {
            const char *kas;
            size_t kan;
            tok_text(df->a, ka, &kas, &kan);
            if (nth_member(df, df->b, tb, kas, kan, occurrence(df, df->a, ta, ka)) < 0) {
                path_push_key(df, kas, kan);
                if (!skipped(df))
                    record(df, "remove", NULL, 0);
                df->path.len = mark;
                df->path.data[mark] = '\0';
            }
            ka = df->a->toks[ka + 1].next;
        }
        return;
    }
    if (x->type == 'a' && y->type == 'a') {
        uint32_t ea = ta + 1, eb = tb + 1, common = x->count < y->count ? x->count : y->count;
        for (uint32_t i = 0; i < common; i++) {
            crw_buf_printf(&df->path, "/%u", i);
            diff_at(df, ea, eb);
            df->path.len = mark;
            df->path.data[mark] = '\0';
            ea = df->a->toks[ea].next;
            eb = df->b->toks[eb].next;
        }
        for (uint32_t i = common; i < y->count; i++) {
            crw_buf_printf(&df->path, "/%u", i);
            record(df, "add", df->b, eb);
            df->path.len = mark;
            df->path.data[mark] = '\0';
            eb = df->b->toks[eb].next;
        }
        /* Removals from the end backwards, so each index is valid when applied. */
        for (uint32_t i = x->count; i > y->count; i--) {
            crw_buf_printf(&df->path, "/%u", i - 1);
            record(df, "remove", NULL, 0);
            df->path.len = mark;
            df->path.data[mark] = '\0';
        }
        return;
    }
    record(df, "replace", df->b, tb);
}

void crw_jdoc_diff(const crw_jdoc_t *a, const crw_jdoc_t *b, crw_buf_t *changed, crw_buf_t *patch, const char *skip) {
    if (a->ntoks == 0 || b->ntoks == 0)
        return;
    diff_t df = {a, b, changed, patch, skip, CRW_BUF_INIT, CRW_BUF_INIT};
    crw_buf_grow(&df.path, 64);
    df.path.data[0] = '\0';
    diff_at(&df, 0, 0);
    crw_buf_free(&df.path);
    crw_buf_free(&df.key);
}

void crw_jdoc_diff_member(const char *pointer, const char *a, size_t an, const char *b, size_t bn, crw_jdoc_t *da,
                          crw_jdoc_t *db, crw_buf_t *changed, crw_buf_t *patch, const char *skip) {
    if ((!a && !b) || (a && b && an == bn && memcmp(a, b, an) == 0))
        return;
    diff_t df = {da, db, changed, patch, skip, CRW_BUF_INIT, CRW_BUF_INIT};
    crw_buf_puts(&df.path, pointer);
    if (!b) {
        if (!skipped(&df))
            record_text(&df, "remove", NULL, 0);
    } else if (!a)
        record_text(&df, "add", b, bn);
    else if (crw_jdoc_parse(da, a, an) == 0 && crw_jdoc_parse(db, b, bn) == 0)
        diff_at(&df, 0, 0);
    else
        record_text(&df, "replace", b, bn); /* not JSON (cannot come from the renderer): the whole value */
    crw_buf_free(&df.path);
    crw_buf_free(&df.key);
}
