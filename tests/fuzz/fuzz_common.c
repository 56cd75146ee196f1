/*
 * fuzz_common.c — the harnesses' shared oracles and input cursor (fuzz_common.h).
 */
#include "fuzz_common.h"

#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void fz_fail(const char *what, const void *bytes, size_t n) {
    const unsigned char *b = bytes;
    fprintf(stderr, "\nfuzz invariant broken: %s\n  %zu bytes: \"", what, n);
    for (size_t i = 0; b && i < n && i < 512; i++) {
        if (b[i] >= 0x20 && b[i] < 0x7f && b[i] != '"' && b[i] != '\\')
            fputc(b[i], stderr);
        else
            fprintf(stderr, "\\x%02x", b[i]);
    }
    fprintf(stderr, "%s\"\n", n > 512 ? "..." : "");
    abort();
}

bool fz_utf8_valid(const void *s, size_t n) {
    const unsigned char *p = s;
    size_t i = 0;
    while (i < n) {
        unsigned char c = p[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t len;
        uint32_t cp, min;
        if (c >= 0xC2 && c <= 0xDF)
            len = 2, cp = c & 0x1F, min = 0x80;
        else if (c >= 0xE0 && c <= 0xEF)
            len = 3, cp = c & 0x0F, min = 0x800;
        else if (c >= 0xF0 && c <= 0xF4)
            len = 4, cp = c & 0x07, min = 0x10000;
        else
            return false;
        if (n - i < len)
            return false;
        for (size_t k = 1; k < len; k++) {
            if ((p[i + k] & 0xC0) != 0x80)
                return false;
            cp = cp << 6 | (p[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += len;
    }
    return true;
}

/* ---- RFC 8259, iteratively: a rendering may nest as deep as its input -------------- */

static void skip_ws(const char *s, size_t n, size_t *i) {
    while (*i < n && (s[*i] == ' ' || s[*i] == '\t' || s[*i] == '\n' || s[*i] == '\r'))
        (*i)++;
}

static bool is_hex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

static bool string_at(const char *s, size_t n, size_t *i) {
    if (*i >= n || s[*i] != '"')
        return false;
    for (size_t k = *i + 1; k < n; k++) {
        unsigned char c = (unsigned char)s[k];
        if (c < 0x20)
            return false;
        if (c == '"') {
            *i = k + 1;
            return true;
        }
        if (c == '\\') {
            if (++k >= n)
                return false;
            switch (s[k]) {
            case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't': break;
            case 'u':
                if (n - k < 5 || !is_hex(s[k + 1]) || !is_hex(s[k + 2]) || !is_hex(s[k + 3]) || !is_hex(s[k + 4]))
                    return false;
                k += 4;
                break;
            default: return false;
            }
        }
    }
    return false;
}

static bool digits_at(const char *s, size_t n, size_t *i) {
    size_t st = *i;
    while (*i < n && s[*i] >= '0' && s[*i] <= '9')
        (*i)++;
    return *i > st;
}

static bool number_at(const char *s, size_t n, size_t *i) {
    if (*i < n && s[*i] == '-')
        (*i)++;
    if (*i >= n)
        return false;
    if (s[*i] == '0')
        (*i)++;
    else if (!digits_at(s, n, i))
        return false;
    if (*i < n && s[*i] == '.') {
        (*i)++;
        if (!digits_at(s, n, i))
            return false;
    }
    if (*i < n && (s[*i] == 'e' || s[*i] == 'E')) {
        (*i)++;
        if (*i < n && (s[*i] == '+' || s[*i] == '-'))
            (*i)++;
        if (!digits_at(s, n, i))
            return false;
    }
    return true;
}

static bool literal_at(const char *s, size_t n, size_t *i, const char *lit) {
    size_t l = strlen(lit);
    if (n - *i < l || memcmp(s + *i, lit, l) != 0)
        return false;
    *i += l;
    return true;
}

bool fz_json_valid(const char *s, size_t n) {
    char *stack = malloc(n + 1); /* one entry per open container: never more than n */
    size_t sp = 0, i = 0;
    bool ok = false;
    enum { VALUE, KEY, AFTER } st = VALUE;
    for (;;) {
        skip_ws(s, n, &i);
        if (st == KEY) {
            if (!string_at(s, n, &i))
                goto out;
            skip_ws(s, n, &i);
            if (i >= n || s[i] != ':')
                goto out;
            i++;
            st = VALUE;
            continue;
        }
        if (st == VALUE) {
            if (i >= n)
                goto out;
            char c = s[i];
            if (c == '{' || c == '[') {
                stack[sp++] = c;
                i++;
                skip_ws(s, n, &i);
                if (i < n && s[i] == (c == '{' ? '}' : ']')) {
                    sp--;
                    i++;
                    st = AFTER;
                } else
                    st = c == '{' ? KEY : VALUE;
                continue;
            }
            bool v = c == '"'   ? string_at(s, n, &i)
                     : c == 't' ? literal_at(s, n, &i, "true")
                     : c == 'f' ? literal_at(s, n, &i, "false")
                     : c == 'n' ? literal_at(s, n, &i, "null")
                                : number_at(s, n, &i);
            if (!v)
                goto out;
            st = AFTER;
            continue;
        }
        /* AFTER a value */
        if (sp == 0) {
            ok = i == n;
            goto out;
        }
        if (i >= n)
            goto out;
        char top = stack[sp - 1];
        if (s[i] == ',') {
            i++;
            st = top == '{' ? KEY : VALUE;
        } else if (s[i] == (top == '{' ? '}' : ']')) {
            i++;
            sp--;
        } else
            goto out;
    }
out:
    free(stack);
    return ok;
}

bool fz_jsonc_parse(const char *s, size_t n, struct json_object **out) {
    static struct json_tokener *tok;
    if (!tok) {
        /* deep enough for anything a few-kB input renders into */
        tok = json_tokener_new_ex(8192);
        if (!tok)
            abort();
    }
    json_tokener_reset(tok);
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    /* The terminating NUL tells json-c the input ends (a bare number is complete). */
    char *copy = fz_strndup(s, n);
    json_object *o = json_tokener_parse_ex(tok, copy, (int)n + 1);
    bool ok = json_tokener_get_error(tok) == json_tokener_success && json_tokener_get_parse_end(tok) == n;
    free(copy);
    if (ok && out)
        *out = o;
    else
        json_object_put(o);
    return ok;
}

void fz_check_json(const char *what, const char *s, size_t n) {
    char msg[256];
    if (!fz_utf8_valid(s, n)) {
        snprintf(msg, sizeof msg, "%s: output is not valid UTF-8", what);
        fz_fail(msg, s, n);
    }
    if (!fz_json_valid(s, n)) {
        snprintf(msg, sizeof msg, "%s: output is not one RFC 8259 JSON value", what);
        fz_fail(msg, s, n);
    }
    if (!fz_jsonc_parse(s, n, NULL)) {
        snprintf(msg, sizeof msg, "%s: json-c (strict) does not parse the output", what);
        fz_fail(msg, s, n);
    }
}

uint8_t fz_u8(fz_in_t *in) { return in->i < in->n ? in->p[in->i++] : 0; }

uint16_t fz_u16(fz_in_t *in) {
    uint16_t hi = fz_u8(in);
    return (uint16_t)(hi << 8 | fz_u8(in));
}

uint32_t fz_u32(fz_in_t *in) {
    uint32_t hi = fz_u16(in);
    return hi << 16 | fz_u16(in);
}

const uint8_t *fz_take(fz_in_t *in, size_t n, size_t *len) {
    size_t have = in->n - in->i;
    *len = n < have ? n : have;
    const uint8_t *p = in->p + in->i;
    in->i += *len;
    return p;
}

const uint8_t *fz_until(fz_in_t *in, uint8_t sep, size_t *len) {
    if (in->i >= in->n)
        return NULL;
    const uint8_t *p = in->p + in->i, *e = memchr(p, sep, in->n - in->i);
    *len = e ? (size_t)(e - p) : in->n - in->i;
    in->i += *len + (e ? 1 : 0);
    return p;
}

char *fz_strndup(const void *b, size_t n) {
    char *s = malloc(n + 1);
    if (!s)
        abort();
    memcpy(s, b, n);
    s[n] = '\0';
    return s;
}
