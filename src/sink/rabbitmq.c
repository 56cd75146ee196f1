/*
 * rabbitmq.c — the RabbitMQ sink (docs/rabbitmq.md): AMQP 0-9-1 with
 * librabbitmq, acknowledged by publisher confirms.
 *
 * Every event is one persistent message (delivery_mode 2, message_id = the
 * event id) published, mandatory, to the exchange and routing key its
 * templates name, on one channel in confirm mode.  The message holds its
 * pipeline transaction until the broker confirms it (basic.ack, single or
 * multiple), so the slot is confirmed only past what the broker has.
 *
 * The unconfirmed window.  A message is copied into a ring of at most
 * rabbitmq.max.unconfirmed entries, in emit order: first the messages
 * published on the current channel (each with its delivery tag: the tags of
 * the ring are consecutive, so a confirm finds its entry by subtraction),
 * then those not published yet (the broker is away, or blocks publishers).
 * A full ring makes emit() wait (backpressure), keeping the source alive.
 * Confirmed entries leave from the front.
 *
 * The broker goes away (socket error, heartbeat timeout, connection.close,
 * a channel closed under us, a basic.nack): the connection is dropped and
 * every unconfirmed message becomes unpublished again; after a backoff
 * (100 ms doubling up to reconnect.backoff.max.ms) the sink connects again
 * and publishes them in their order before anything newer.  Nothing is
 * lost (what is not confirmed is still here, or, after a crash, not
 * confirmed to PostgreSQL), each queue gets every key's changes in commit
 * order (one channel, published in order), and a message the broker took
 * but did not confirm before it went away comes twice: at-least-once.
 *
 * Unroutable messages (mandatory): the broker sends basic.return (reply
 * NO_ROUTE, with the message's properties) before the basic.ack of that
 * message.  The returned message is found by its message_id among the
 * unconfirmed (the oldest not returned yet: returns come in publish
 * order), written to the dead-letter file (fsynced) and released; the
 * stream goes on.
 *
 * librabbitmq is single-threaded: every frame is read on the main thread,
 * in poll(), while emit() waits for room, and every READ_EVERY publishes.
 * Exchanges are declared on a channel of their own (a failed passive
 * declare closes its channel); frames for the publishing channel that come
 * during such a call are queued by librabbitmq and read afterwards.
 */
#include <amqp.h>
#include <amqp_ssl_socket.h>
#include <amqp_tcp_socket.h>
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/buf.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/log.h"
#include "core/lsn.h"
#include "core/metrics.h"
#include "core/strmap.h"
#include "sink/sink.h"

#define CH_PUB 1                  /* the publishing channel, in confirm mode */
#define CH_DECL 2                 /* exchange declarations */
#define HEARTBEAT_S 30            /* AMQP heartbeat: a silent broker is dropped after two */
#define CONNECT_TIMEOUT_MS 5000   /* TCP (and TLS) connect */
#define HANDSHAKE_TIMEOUT_MS 10000
#define RPC_TIMEOUT_MS 15000      /* channel.open, confirm.select, exchange.declare, close */
#define WAIT_SLICE_MS 100         /* frame reads while emit() or drain() waits */
#define WARN_EVERY_MS 10000
#define READ_EVERY 64             /* publishes between two reads of what the broker sent */
#define FRAMES_PER_READ 100000    /* a read gives the caller back its thread after this many */
#define BIG_BUF (1u << 20)        /* an entry's buffer above this is freed when it leaves */
#define MAX_ATTRS 12              /* CloudEvents attributes kept per message (binary mode; crwatch makes 9) */
#define AMQP_SHORTSTR_MAX 255

/* What a ring entry is. */
enum { M_PENDING = 0, M_SENT = 1, M_DONE = 2 };

/* The parts of a message, spans of its buffer. */
enum { F_EXCH, F_RK, F_MID, F_KEY, F_CTYPE, F_VALUE, F_ATTRS };

typedef struct {
    uint32_t off, len;
} span_t;

typedef struct {
    int state;           /* M_* */
    uint64_t tag;        /* M_SENT: its delivery tag on the current channel */
    uint64_t seq;        /* the pipeline transaction it holds */
    uint64_t lsn;        /* identity, for a dead-letter record */
    uint32_t ordinal, xid;
    const char *source;  /* interned */
    crw_buf_t b;         /* every part below, copied */
    span_t f[F_ATTRS + 2 * MAX_ATTRS];
    int nattrs;          /* binary mode: header name/value pairs after F_ATTRS */
    uint32_t body_off, body_len; /* the body inside F_VALUE (binary mode: data alone) */
} msg_t;

typedef struct {
    char *copy;        /* the URL, parsed in place (ci points into it) */
    size_t copy_len;
    struct amqp_connection_info ci;
    char shown[300];   /* amqp://user@host:port/vhost, never the password */
} url_t;

typedef struct {
    crw_sink_t base;
    const crw_config_t *conf;
    crw_pipeline_t *pipeline;
    bool binary;
    bool exch_fixed;              /* the exchange template has no placeholder: declared at connect */

    url_t *urls;
    int nurls, cur_url;

    amqp_connection_state_t conn; /* NULL: not connected */
    bool decl_open;               /* CH_DECL is open */
    bool blocked;                 /* connection.blocked: publishing would block */
    uint64_t next_tag;            /* the delivery tag of the next publish */
    int64_t next_connect_ms;
    int backoff_ms;
    bool ever_connected;
    int since_read;
    int failures;                 /* connection attempts failed in a row */
    /* a basic.return being read: its content header and body follow */
    bool in_return;
    uint64_t return_body_left;
    uint16_t return_code;
    char return_text[256];

    msg_t *ring;
    int cap, head, n, nsent;

    char **exchanges;             /* declared (or found) on this connection */
    int nexchanges, last_exchange;
    crw_names_t sources; /* one copy of each event source, for the records to point at */
    crw_buf_t scratch_ex, scratch_rk;

    bool fatal;
    uint64_t confirmed, deadlettered, republished;
    int64_t last_warn_ms;
} rmq_sink_t;

/* ---------------------------------------------------------------- small parts */

static void set_fatal(rmq_sink_t *s, const char *msg) {
    if (s->fatal)
        return;
    s->fatal = true;
    crw_error("rabbitmq: %s; stopping with nothing confirmed past it", msg);
}

static bool warn_due(rmq_sink_t *s) {
    int64_t now = crw_clock_mono_ms();
    if (now - s->last_warn_ms < WARN_EVERY_MS)
        return false;
    s->last_warn_ms = now;
    return true;
}

static void keepalive(rmq_sink_t *s) {
    const crw_sink_env_t *env = s->base.env;
    if (env->keepalive)
        env->keepalive(env->keepalive_opaque);
}

static bool stop_asked(const rmq_sink_t *s) { return s->base.env->stop && *s->base.env->stop; }

static void nap_ms(int ms) {
    if (ms <= 0)
        return;
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static msg_t *at(rmq_sink_t *s, int i) { return &s->ring[(s->head + i) % s->cap]; }

static amqp_bytes_t part(const msg_t *m, int f) {
    return (amqp_bytes_t){m->f[f].len, m->b.data + m->f[f].off};
}

static void put_part(msg_t *m, int f, const char *p, size_t len) {
    m->f[f] = (span_t){(uint32_t)m->b.len, (uint32_t)len};
    crw_buf_put(&m->b, p, len);
}

/* ---------------------------------------------------------------- templates */

static const char *const placeholders[] = {"{schema}", "{table}", "{kind}", "{key}"};
#define NPH 4

/* Characters RabbitMQ takes in an exchange name. */
static bool exchange_char(unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
           c == '-' || c == ':';
}

static int placeholder_at(const char *p, int nallowed) {
    for (int i = 0; i < nallowed; i++)
        if (!strncmp(p, placeholders[i], strlen(placeholders[i])))
            return i;
    return -1;
}

/* A template's placeholders (the first nallowed of placeholders[]) and, for an exchange, its characters. */
static int template_check(const char *key, const char *tmpl, int nallowed, bool exchange, bool *has_placeholder,
                          char *errstr, size_t n) {
    *has_placeholder = false;
    for (const char *p = tmpl; *p;) {
        if (*p == '{') {
            int i = placeholder_at(p, NPH);
            if (i < 0 || i >= nallowed) {
                snprintf(errstr, n, "%s: '%s': %s placeholder at '%.16s' (%s)", key, tmpl,
                         i < 0 ? "unknown" : "a per-event", p,
                         nallowed == NPH ? "{schema}, {table}, {kind}, {key}" : "{schema}, {table}, {kind}");
                return CRW_ERR_CONFIG;
            }
            *has_placeholder = true;
            p += strlen(placeholders[i]);
            continue;
        }
        if (exchange && !exchange_char((unsigned char)*p)) {
            snprintf(errstr, n, "%s: '%s': '%c' is not allowed in an exchange name ([A-Za-z0-9._:-])", key, tmpl, *p);
            return CRW_ERR_CONFIG;
        }
        p++;
    }
    if (strlen(tmpl) > AMQP_SHORTSTR_MAX) {
        snprintf(errstr, n, "%s: longer than AMQP's 255 bytes", key);
        return CRW_ERR_CONFIG;
    }
    return 0;
}

/* Expands tmpl into out; in an exchange name, substituted bytes outside its alphabet become '_'. */
static void expand(crw_buf_t *out, const char *tmpl, const crw_event_t *ev, bool exchange) {
    crw_buf_reset(out);
    for (const char *p = tmpl; *p;) {
        int i = *p == '{' ? placeholder_at(p, NPH) : -1;
        if (i < 0) {
            crw_buf_putc(out, *p++);
            continue;
        }
        p += strlen(placeholders[i]);
        const char *v = "";
        size_t len = 0;
        if (ev) {
            v = i == 0 ? ev->schema : i == 1 ? ev->table : i == 2 ? ev->kind : ev->key;
            v = v ? v : "";
            len = i == 3 ? ev->keylen : strlen(v);
        }
        for (size_t k = 0; k < len; k++)
            crw_buf_putc(out, !exchange || exchange_char((unsigned char)v[k]) ? v[k] : '_');
    }
    crw_buf_putc(out, '\0');
    out->len--;
}

/* ---------------------------------------------------------------- dead letters */

/* A durable record of m (then m may be confirmed). @returns 0 or CRW_ERR_IO. */
static int dead_letter(rmq_sink_t *s, const char *reason, const char *source, uint64_t lsn, uint32_t xid,
                       uint32_t ordinal, const char *value, size_t len) {
    char pglsn[CRW_LSN_BUFSIZE];
    crw_lsn_format(pglsn, lsn);
    crw_deadletter_rec_t rec = {reason, source, lsn ? pglsn : NULL, xid, ordinal, value, value ? len : 0};
    crw_warn("%s: a %zu-byte event dead-lettered", reason, value ? len : 0);
    if (crw_deadletter_write(s->base.env->deadletter, &rec) < 0) {
        char msg[600];
        snprintf(msg, sizeof msg, "cannot write the dead-letter file %s", s->conf->deadletter_file);
        set_fatal(s, msg);
        return CRW_ERR_IO;
    }
    return 0;
}

/* ---------------------------------------------------------------- the ring */

/* m was confirmed (or dead-lettered): its hold goes. */
static void done(rmq_sink_t *s, msg_t *m) {
    if (m->state == M_DONE)
        return;
    m->state = M_DONE;
    crw_pipeline_release(s->pipeline, m->seq, 1);
}

/* Done entries leave from the front. */
static void pop_done(rmq_sink_t *s) {
    while (s->n > 0 && at(s, 0)->state == M_DONE) {
        msg_t *m = at(s, 0);
        if (m->b.cap > BIG_BUF)
            crw_buf_free(&m->b);
        crw_buf_reset(&m->b);
        m->state = M_PENDING;
        s->head = (s->head + 1) % s->cap;
        s->n--;
        if (s->nsent > 0)
            s->nsent--;
    }
}

/* basic.ack: tag, or every tag up to it (multiple; 0: all). */
static void on_ack(rmq_sink_t *s, uint64_t tag, bool multiple) {
    if (s->nsent == 0)
        return;
    uint64_t first = at(s, 0)->tag;
    if (multiple) {
        for (int i = 0; i < s->nsent; i++) {
            msg_t *m = at(s, i);
            if (tag && m->tag > tag)
                break;
            if (m->state == M_SENT)
                s->confirmed++;
            done(s, m);
        }
    } else if (tag >= first && tag - first < (uint64_t)s->nsent) {
        msg_t *m = at(s, (int)(tag - first));
        if (m->state == M_SENT)
            s->confirmed++;
        done(s, m);
    }
    s->backoff_ms = 100; /* a broker that confirms is a healthy one */
    pop_done(s);
}

/* ---------------------------------------------------------------- the connection */

static void log_reply(char *out, size_t n, amqp_rpc_reply_t r) {
    switch (r.reply_type) {
    case AMQP_RESPONSE_NORMAL:
        snprintf(out, n, "ok");
        break;
    case AMQP_RESPONSE_NONE:
        snprintf(out, n, "no reply");
        break;
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
        snprintf(out, n, "%s", amqp_error_string2(r.library_error));
        break;
    case AMQP_RESPONSE_SERVER_EXCEPTION:
        if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD || r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
            /* connection.close and channel.close share their first fields' layout */
            const amqp_channel_close_t *c = r.reply.decoded;
            snprintf(out, n, "%u %.*s", c->reply_code, (int)c->reply_text.len, (const char *)c->reply_text.bytes);
        } else
            snprintf(out, n, "server method 0x%08x", r.reply.id);
        break;
    }
}

static uint16_t reply_code(amqp_rpc_reply_t r) {
    if (r.reply_type != AMQP_RESPONSE_SERVER_EXCEPTION ||
        (r.reply.id != AMQP_CONNECTION_CLOSE_METHOD && r.reply.id != AMQP_CHANNEL_CLOSE_METHOD))
        return 0;
    return ((const amqp_channel_close_t *)r.reply.decoded)->reply_code;
}

/* Drops the connection; every unconfirmed message is published again on the next one. */
static void disconnect(rmq_sink_t *s, const char *why) {
    if (!s->conn)
        return;
    amqp_destroy_connection(s->conn);
    s->conn = NULL;
    s->decl_open = false;
    s->blocked = false;
    s->in_return = false;
    for (int i = 0; i < s->nexchanges; i++)
        free(s->exchanges[i]);
    s->nexchanges = 0;
    s->last_exchange = -1;
    /* Done entries go (they are released); the rest keep their order, unpublished. */
    int w = 0;
    for (int i = 0; i < s->n; i++) {
        msg_t *m = at(s, i);
        if (m->state == M_DONE) {
            crw_buf_free(&m->b);
            continue;
        }
        if (w != i) {
            msg_t *to = at(s, w);
            crw_buf_free(&to->b);
            *to = *m;
            m->b = (crw_buf_t)CRW_BUF_INIT;
        }
        at(s, w)->state = M_PENDING;
        w++;
    }
    s->n = w;
    s->nsent = 0;
    s->next_connect_ms = crw_clock_mono_ms() + s->backoff_ms / 2 + rand() % (s->backoff_ms / 2 + 1);
    crw_warn("rabbitmq: %s; %d unconfirmed messages are published again on reconnect (in %d ms at most); nothing "
             "past them is confirmed to PostgreSQL meanwhile",
             why, s->n, s->backoff_ms);
    int cap = s->conf->reconnect_max_ms;
    s->backoff_ms = s->backoff_ms * 2 > cap ? cap : s->backoff_ms * 2;
}

/* The password: rabbitmq.password.file's first line when set (read at every connect), else the URL's. */
static int read_password(const rmq_sink_t *s, char *out, size_t n, char *errstr, size_t en) {
    FILE *f = fopen(s->conf->rabbitmq_password_file, "r");
    if (!f) {
        snprintf(errstr, en, "rabbitmq.password.file: cannot read %s: %s", s->conf->rabbitmq_password_file,
                 strerror(errno));
        return CRW_ERR_CONFIG;
    }
    if (!fgets(out, (int)n, f))
        out[0] = '\0';
    fclose(f);
    out[strcspn(out, "\r\n")] = '\0';
    return 0;
}

/* The system's CA bundle (Debian and Ubuntu, RHEL and Fedora, Alpine and others), or NULL. */
static const char *system_ca_bundle(void) {
    static const char *const paths[] = {"/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt",
                                        "/etc/ssl/cert.pem"};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        FILE *f = fopen(paths[i], "r");
        if (f) {
            fclose(f);
            return paths[i];
        }
    }
    return NULL;
}

static int open_channel(rmq_sink_t *s, amqp_channel_t ch, char *why, size_t n) {
    amqp_channel_open(s->conn, ch);
    amqp_rpc_reply_t r = amqp_get_rpc_reply(s->conn);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        char e[300];
        log_reply(e, sizeof e, r);
        snprintf(why, n, "cannot open channel %u: %s", ch, e);
        return -1;
    }
    return 0;
}

static int ensure_exchange(rmq_sink_t *s, const char *name);
static int flush_pending(rmq_sink_t *s);

/*
 * Connects to the next URL: TCP or TLS, login, the confirm-mode channel, the
 * declaring channel, the fixed exchange; then publishes what is unconfirmed.
 * @returns 0 connected; CRW_ERR_CONN (try again later); CRW_ERR_AUTH, with
 * why, when the broker refused the login or the vhost; CRW_ERR_SINK fatal.
 */
static int connect_broker(rmq_sink_t *s, char *why, size_t wn) {
    const url_t *u = &s->urls[s->cur_url];
    s->cur_url = (s->cur_url + 1) % s->nurls;
    char password[1024];
    snprintf(password, sizeof password, "%s", u->ci.password ? u->ci.password : "");
    if (*s->conf->rabbitmq_password_file && read_password(s, password, sizeof password, why, wn) < 0)
        return CRW_ERR_AUTH;
    const crw_config_t *c = s->conf;

    s->conn = amqp_new_connection();
    amqp_socket_t *sock = u->ci.ssl ? amqp_ssl_socket_new(s->conn) : amqp_tcp_socket_new(s->conn);
    int rc = CRW_ERR_CONN;
    if (!sock) {
        snprintf(why, wn, "cannot make a %s socket", u->ci.ssl ? "TLS" : "TCP");
        goto fail;
    }
    if (u->ci.ssl) {
        amqp_ssl_socket_set_verify_peer(sock, c->rabbitmq_tls_verify);
        amqp_ssl_socket_set_verify_hostname(sock, c->rabbitmq_tls_verify);
        /* librabbitmq trusts nothing by default: without rabbitmq.tls.ca.file, the system's bundle. */
        const char *ca = *c->rabbitmq_tls_ca_file ? c->rabbitmq_tls_ca_file : system_ca_bundle();
        if (ca && amqp_ssl_socket_set_cacert(sock, ca) != AMQP_STATUS_OK) {
            snprintf(why, wn, "rabbitmq.tls.ca.file: cannot load %s", ca);
            rc = CRW_ERR_SINK;
            goto fail;
        }
        if (*c->rabbitmq_tls_cert_file &&
            amqp_ssl_socket_set_key(sock, c->rabbitmq_tls_cert_file, c->rabbitmq_tls_key_file) != AMQP_STATUS_OK) {
            snprintf(why, wn, "rabbitmq.tls.cert.file / rabbitmq.tls.key.file: cannot load %s and its key",
                     c->rabbitmq_tls_cert_file);
            rc = CRW_ERR_SINK;
            goto fail;
        }
    }
    struct timeval tv = {CONNECT_TIMEOUT_MS / 1000, 0};
    int st = amqp_socket_open_noblock(sock, u->ci.host, u->ci.port, &tv);
    if (st != AMQP_STATUS_OK) {
        snprintf(why, wn, "cannot connect to %s: %s", u->shown, amqp_error_string2(st));
        if (st == AMQP_STATUS_SSL_PEER_VERIFY_FAILED || st == AMQP_STATUS_SSL_HOSTNAME_VERIFY_FAILED)
            rc = CRW_ERR_AUTH; /* the server is not who it should be: refused as a login is */
        goto fail;
    }
    struct timeval hs = {HANDSHAKE_TIMEOUT_MS / 1000, 0}, rpc = {RPC_TIMEOUT_MS / 1000, 0};
    amqp_set_handshake_timeout(s->conn, &hs);
    amqp_set_rpc_timeout(s->conn, &rpc);

    /* Client properties: a name the management UI shows, and connection.blocked notifications. */
    char name[160];
    snprintf(name, sizeof name, "crwatch %s", s->base.env->checkpoint_id ? s->base.env->checkpoint_id : c->slot_name);
    amqp_table_entry_t capv[1] = {
        {amqp_cstring_bytes("connection.blocked"), {AMQP_FIELD_KIND_BOOLEAN, {.boolean = 1}}},
    };
    amqp_table_entry_t propv[2] = {
        {amqp_cstring_bytes("connection_name"), {AMQP_FIELD_KIND_UTF8, {.bytes = amqp_cstring_bytes(name)}}},
        {amqp_cstring_bytes("capabilities"), {AMQP_FIELD_KIND_TABLE, {.table = {1, capv}}}},
    };
    amqp_table_t props = {2, propv};
    amqp_rpc_reply_t r = amqp_login_with_properties(s->conn, u->ci.vhost, 0, 131072, HEARTBEAT_S, &props,
                                                    AMQP_SASL_METHOD_PLAIN, u->ci.user, password);
    memset(password, 0, sizeof password);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        char e[300];
        log_reply(e, sizeof e, r);
        uint16_t code = reply_code(r);
        if (code == AMQP_ACCESS_REFUSED || code == AMQP_NOT_ALLOWED) {
            /* a bad user or password (RabbitMQ says so before it closes: authentication_failure_close), or a vhost
             * the user may not open */
            snprintf(why, wn, "%s refused the login of user '%s' on vhost '%s' (%s)", u->shown, u->ci.user,
                     u->ci.vhost, e);
            rc = CRW_ERR_AUTH;
        } else
            snprintf(why, wn, "cannot log in to %s: %s", u->shown, e);
        goto fail;
    }
    if (open_channel(s, CH_PUB, why, wn) < 0)
        goto fail;
    amqp_confirm_select(s->conn, CH_PUB);
    r = amqp_get_rpc_reply(s->conn);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        char e[300];
        log_reply(e, sizeof e, r);
        snprintf(why, wn, "%s: confirm.select (publisher confirms) failed: %s", u->shown, e);
        goto fail;
    }
    if (open_channel(s, CH_DECL, why, wn) < 0)
        goto fail;
    s->decl_open = true;
    s->next_tag = 1;
    s->blocked = false;
    s->since_read = 0;
    s->failures = 0;
    int unconfirmed = s->n;
    if (s->ever_connected)
        crw_info("rabbitmq: connected again to %s; publishing %d unconfirmed messages again, in order", u->shown,
                 unconfirmed);
    else
        crw_info("rabbitmq: connected to %s (exchange %s, routing key %s, publisher confirms, at most %d "
                 "unconfirmed, CloudEvents %s mode)",
                 u->shown, *c->rabbitmq_exchange ? c->rabbitmq_exchange : "(default)", c->rabbitmq_routing_key,
                 c->rabbitmq_max_unconfirmed, s->binary ? "binary" : "structured");
    if (s->ever_connected && unconfirmed) {
        s->republished += (uint64_t)unconfirmed;
        crw_metric_add(CRW_M_RETRIES, (uint64_t)unconfirmed);
    }
    s->ever_connected = true;
    if (s->exch_fixed) {
        expand(&s->scratch_ex, c->rabbitmq_exchange, NULL, true);
        if (ensure_exchange(s, s->scratch_ex.data) < 0)
            return s->fatal ? CRW_ERR_SINK : CRW_ERR_CONN;
    }
    flush_pending(s);
    return s->fatal ? CRW_ERR_SINK : s->conn ? 0 : CRW_ERR_CONN;

fail:
    amqp_destroy_connection(s->conn);
    s->conn = NULL;
    s->decl_open = false;
    return rc;
}

/* Not connected: tries again once the backoff has passed. */
static void maybe_connect(rmq_sink_t *s) {
    if (s->conn || s->fatal || crw_clock_mono_ms() < s->next_connect_ms)
        return;
    char why[700] = "";
    int rc = connect_broker(s, why, sizeof why);
    if (rc == 0 || s->conn)
        return;
    if (rc == CRW_ERR_SINK) {
        set_fatal(s, why);
        return;
    }
    int cap = s->conf->reconnect_max_ms;
    int wait = s->backoff_ms / 2 + rand() % (s->backoff_ms / 2 + 1);
    s->next_connect_ms = crw_clock_mono_ms() + wait;
    /* Said once, then every WARN_EVERY_MS while it lasts. */
    CRW_LOG(s->failures++ == 0 || warn_due(s) ? CRW_LOG_WARN : CRW_LOG_DEBUG,
            "rabbitmq: %s; trying again in %d ms (%d messages wait, nothing past them is confirmed)", why, wait, s->n);
    s->backoff_ms = s->backoff_ms * 2 > cap ? cap : s->backoff_ms * 2;
}

/* ---------------------------------------------------------------- exchanges */

static void close_ok(rmq_sink_t *s, amqp_channel_t ch) {
    amqp_channel_close_ok_t ok = {0};
    amqp_send_method(s->conn, ch, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
}

/*
 * name exists on the broker: found (a passive declare), or declared as a
 * durable topic exchange.  "" is the default exchange.  @returns 0, or -1
 * when the connection went (disconnected) or the broker refused (fatal).
 */
static int ensure_exchange(rmq_sink_t *s, const char *name) {
    if (!*name)
        return 0;
    if (s->last_exchange >= 0 && !strcmp(s->exchanges[s->last_exchange], name))
        return 0;
    for (int i = 0; i < s->nexchanges; i++)
        if (!strcmp(s->exchanges[i], name)) {
            s->last_exchange = i;
            return 0;
        }
    char why[700], e[300];
    if (!s->decl_open) {
        if (open_channel(s, CH_DECL, why, sizeof why) < 0) {
            disconnect(s, why);
            return -1;
        }
        s->decl_open = true;
    }
    amqp_table_t none = {0, NULL};
    amqp_exchange_declare(s->conn, CH_DECL, amqp_cstring_bytes(name), amqp_cstring_bytes("topic"), 1, 1, 0, 0, none);
    amqp_rpc_reply_t r = amqp_get_rpc_reply(s->conn);
    if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION && r.reply.id == AMQP_CHANNEL_CLOSE_METHOD &&
        reply_code(r) == AMQP_NOT_FOUND) {
        /* Missing: its channel is closed; declare it on a new one. */
        close_ok(s, CH_DECL);
        s->decl_open = false;
        if (open_channel(s, CH_DECL, why, sizeof why) < 0) {
            disconnect(s, why);
            return -1;
        }
        s->decl_open = true;
        amqp_exchange_declare(s->conn, CH_DECL, amqp_cstring_bytes(name), amqp_cstring_bytes("topic"), 0, 1, 0, 0,
                              none);
        r = amqp_get_rpc_reply(s->conn);
        if (r.reply_type == AMQP_RESPONSE_NORMAL)
            crw_info("rabbitmq: declared the durable topic exchange %s", name);
    }
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        log_reply(e, sizeof e, r);
        if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION && r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
            close_ok(s, CH_DECL);
            s->decl_open = false;
            snprintf(why, sizeof why, "the broker refused exchange %s: %s", name, e);
            set_fatal(s, why);
        } else {
            snprintf(why, sizeof why, "declaring exchange %s: %s", name, e);
            disconnect(s, why);
        }
        return -1;
    }
    amqp_maybe_release_buffers_on_channel(s->conn, CH_DECL);
    s->exchanges = crw_realloc(s->exchanges, sizeof *s->exchanges * (size_t)(s->nexchanges + 1));
    s->exchanges[s->nexchanges] = crw_strdup(name);
    s->last_exchange = s->nexchanges++;
    return 0;
}

/* ---------------------------------------------------------------- publishing */

/* Publishes the first unpublished entry.  @returns 0, or -1 when the connection went. */
static int publish_next(rmq_sink_t *s) {
    msg_t *m = at(s, s->nsent);
    if (ensure_exchange(s, m->b.data + m->f[F_EXCH].off) < 0)
        return -1;
    amqp_table_entry_t hv[1 + MAX_ATTRS];
    int nh = 0;
    hv[nh].key = amqp_cstring_bytes("crwatch_key");
    hv[nh].value.kind = AMQP_FIELD_KIND_UTF8;
    hv[nh++].value.value.bytes = part(m, F_KEY);
    for (int i = 0; i < m->nattrs; i++) {
        hv[nh].key = part(m, F_ATTRS + 2 * i);
        hv[nh].value.kind = AMQP_FIELD_KIND_UTF8;
        hv[nh++].value.value.bytes = part(m, F_ATTRS + 2 * i + 1);
    }
    amqp_basic_properties_t p;
    memset(&p, 0, sizeof p);
    p._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_MESSAGE_ID_FLAG |
               AMQP_BASIC_HEADERS_FLAG | AMQP_BASIC_APP_ID_FLAG;
    p.content_type = part(m, F_CTYPE);
    p.delivery_mode = AMQP_DELIVERY_PERSISTENT;
    p.message_id = part(m, F_MID);
    p.app_id = amqp_cstring_bytes("crwatch");
    p.headers = (amqp_table_t){nh, hv};
    amqp_bytes_t body = {m->body_len, m->b.data + m->body_off};
    int st = amqp_basic_publish(s->conn, CH_PUB, part(m, F_EXCH), part(m, F_RK), s->conf->rabbitmq_mandatory, 0, &p,
                                body);
    if (st != AMQP_STATUS_OK) {
        char why[300];
        snprintf(why, sizeof why, "publishing failed: %s", amqp_error_string2(st));
        disconnect(s, why);
        return -1;
    }
    m->state = M_SENT;
    m->tag = s->next_tag++;
    s->nsent++;
    return 0;
}

static int read_frames(rmq_sink_t *s, int timeout_ms);

/* Publishes every unpublished entry, in order, while connected and not blocked. */
static int flush_pending(rmq_sink_t *s) {
    while (s->conn && !s->blocked && s->nsent < s->n && !s->fatal) {
        if (publish_next(s) < 0)
            return -1;
        if (++s->since_read >= READ_EVERY) {
            s->since_read = 0;
            read_frames(s, 0);
        }
    }
    return 0;
}

/* ---------------------------------------------------------------- reading */

/* The content header of a basic.return: the message is found by its message_id and dead-lettered. */
static void on_returned(rmq_sink_t *s, const amqp_basic_properties_t *p) {
    amqp_bytes_t mid = (p->_flags & AMQP_BASIC_MESSAGE_ID_FLAG) ? p->message_id : amqp_empty_bytes;
    for (int i = 0; i < s->nsent; i++) {
        msg_t *m = at(s, i);
        if (m->state != M_SENT || m->f[F_MID].len != mid.len ||
            (mid.len && memcmp(m->b.data + m->f[F_MID].off, mid.bytes, mid.len)))
            continue;
        char reason[900];
        snprintf(reason, sizeof reason,
                 "rabbitmq: returned %u %s: no queue is bound for routing key '%.*s' on exchange '%.*s'",
                 s->return_code, s->return_text, (int)m->f[F_RK].len, m->b.data + m->f[F_RK].off, (int)m->f[F_EXCH].len,
                 m->b.data + m->f[F_EXCH].off);
        if (dead_letter(s, reason, m->source, m->lsn, m->xid, m->ordinal, m->b.data + m->f[F_VALUE].off,
                        m->f[F_VALUE].len) == 0) {
            s->deadlettered++;
            done(s, m);
        }
        return;
    }
    crw_warn("rabbitmq: the broker returned a message (%u %s) that is not among the unconfirmed ones",
             s->return_code, s->return_text);
}

/*
 * A channel closed for a message above the broker's max_message_size
 * ("message size N is larger than configured max size M"): every
 * unconfirmed message larger than M is dead-lettered, so that publishing
 * them all again does not close the next channel too.
 */
static void too_large(rmq_sink_t *s, amqp_bytes_t text) {
    char t[256];
    snprintf(t, sizeof t, "%.*s", (int)text.len, (const char *)text.bytes);
    const char *p = strstr(t, "larger than configured max size ");
    if (!p)
        return;
    unsigned long long max = strtoull(p + strlen("larger than configured max size "), NULL, 10);
    for (int i = 0; i < s->n; i++) {
        msg_t *m = at(s, i);
        if (m->state == M_DONE || m->body_len <= max)
            continue;
        char reason[300];
        snprintf(reason, sizeof reason, "rabbitmq: larger than the broker's max_message_size (%llu bytes)", max);
        if (dead_letter(s, reason, m->source, m->lsn, m->xid, m->ordinal, m->b.data + m->f[F_VALUE].off,
                        m->f[F_VALUE].len) < 0)
            return;
        s->deadlettered++;
        done(s, m);
    }
}

static void handle_frame(rmq_sink_t *s, const amqp_frame_t *f) {
    char why[400];
    if (f->frame_type == AMQP_FRAME_HEADER && f->channel == CH_PUB && s->in_return) {
        on_returned(s, f->payload.properties.decoded);
        s->return_body_left = f->payload.properties.body_size;
        s->in_return = s->return_body_left > 0;
        return;
    }
    if (f->frame_type == AMQP_FRAME_BODY && f->channel == CH_PUB && s->in_return) {
        size_t len = f->payload.body_fragment.len;
        s->return_body_left = len >= s->return_body_left ? 0 : s->return_body_left - len;
        s->in_return = s->return_body_left > 0;
        return;
    }
    if (f->frame_type != AMQP_FRAME_METHOD)
        return;
    const amqp_method_t *mt = &f->payload.method;
    switch (mt->id) {
    case AMQP_BASIC_ACK_METHOD: {
        const amqp_basic_ack_t *a = mt->decoded;
        on_ack(s, a->delivery_tag, a->multiple);
        return;
    }
    case AMQP_BASIC_NACK_METHOD: {
        const amqp_basic_nack_t *a = mt->decoded;
        snprintf(why, sizeof why, "the broker refused message %" PRIu64 " (basic.nack: it could not take it)",
                 a->delivery_tag);
        pop_done(s);
        disconnect(s, why);
        return;
    }
    case AMQP_BASIC_RETURN_METHOD: {
        const amqp_basic_return_t *r = mt->decoded;
        s->in_return = true;
        s->return_code = r->reply_code;
        snprintf(s->return_text, sizeof s->return_text, "%.*s", (int)r->reply_text.len,
                 (const char *)r->reply_text.bytes);
        return;
    }
    case AMQP_CONNECTION_BLOCKED_METHOD: {
        const amqp_connection_blocked_t *b = mt->decoded;
        s->blocked = true;
        crw_warn("rabbitmq: the broker blocks publishing (%.*s): waiting, nothing past what it confirmed is "
                 "confirmed to PostgreSQL",
                 (int)b->reason.len, (const char *)b->reason.bytes);
        return;
    }
    case AMQP_CONNECTION_UNBLOCKED_METHOD:
        s->blocked = false;
        crw_info("rabbitmq: the broker takes messages again");
        return;
    case AMQP_CONNECTION_CLOSE_METHOD: {
        const amqp_connection_close_t *c = mt->decoded;
        snprintf(why, sizeof why, "the broker closed the connection: %u %.*s", c->reply_code,
                 (int)c->reply_text.len, (const char *)c->reply_text.bytes);
        amqp_connection_close_ok_t ok = {0};
        amqp_send_method(s->conn, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
        disconnect(s, why);
        return;
    }
    case AMQP_CHANNEL_CLOSE_METHOD: {
        const amqp_channel_close_t *c = mt->decoded;
        snprintf(why, sizeof why, "the broker closed channel %u: %u %.*s", f->channel, c->reply_code,
                 (int)c->reply_text.len, (const char *)c->reply_text.bytes);
        close_ok(s, f->channel);
        if (f->channel == CH_DECL) {
            s->decl_open = false;
            return;
        }
        if (c->reply_code == AMQP_ACCESS_REFUSED) /* publishing is not allowed: no retry helps */
            set_fatal(s, why);
        else {
            if (c->reply_code == AMQP_PRECONDITION_FAILED)
                too_large(s, c->reply_text);
            disconnect(s, why); /* a deleted exchange (404) is declared again on the next connection */
        }
        return;
    }
    default:
        return;
    }
}

/* Reads and applies what the broker sent, waiting up to timeout_ms for the first frame. @returns frames read. */
static int read_frames(rmq_sink_t *s, int timeout_ms) {
    int nread = 0;
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    while (s->conn && nread < FRAMES_PER_READ) {
        amqp_frame_t f;
        int st = amqp_simple_wait_frame_noblock(s->conn, &f, &tv);
        if (st == AMQP_STATUS_TIMEOUT)
            break;
        if (st != AMQP_STATUS_OK) {
            char why[300];
            snprintf(why, sizeof why, "the connection to the broker failed: %s", amqp_error_string2(st));
            disconnect(s, why);
            break;
        }
        handle_frame(s, &f);
        nread++;
        tv = (struct timeval){0, 0};
    }
    if (s->conn && !amqp_frames_enqueued(s->conn))
        amqp_maybe_release_buffers(s->conn);
    return nread;
}

/* One round of the connection's upkeep: connect when due, read frames (up to timeout_ms), publish what waits. */
static void service(rmq_sink_t *s, int timeout_ms) {
    if (!s->conn) {
        maybe_connect(s);
        if (!s->conn) {
            int64_t left = s->next_connect_ms - crw_clock_mono_ms();
            nap_ms((int)(left < timeout_ms ? left : timeout_ms));
            return;
        }
    }
    read_frames(s, timeout_ms);
    if (s->blocked && warn_due(s))
        crw_warn("rabbitmq: still blocked by the broker: %d messages wait", s->n);
    flush_pending(s);
}

/* ---------------------------------------------------------------- ops */

static int rmq_emit(crw_sink_t *base, const crw_event_t *ev) {
    rmq_sink_t *s = (rmq_sink_t *)base;
    const crw_config_t *c = s->conf;
    if (s->fatal)
        return CRW_ERR_SINK;
    if (!ev->value)
        return 0; /* a Debezium tombstone means nothing outside Kafka's compaction */
    if (s->binary && !ev->attrs) {
        set_fatal(s, "binary content mode: an event without CloudEvents attributes");
        return CRW_ERR_SINK;
    }
    expand(&s->scratch_ex, c->rabbitmq_exchange, ev, true);
    expand(&s->scratch_rk, c->rabbitmq_routing_key, ev, false);
    if (s->scratch_ex.len > AMQP_SHORTSTR_MAX || s->scratch_rk.len > AMQP_SHORTSTR_MAX) {
        char reason[200];
        snprintf(reason, sizeof reason, "rabbitmq: the %s is %zu bytes long, AMQP takes 255 at most",
                 s->scratch_rk.len > AMQP_SHORTSTR_MAX ? "routing key" : "exchange name",
                 s->scratch_rk.len > AMQP_SHORTSTR_MAX ? s->scratch_rk.len : s->scratch_ex.len);
        return dead_letter(s, reason, ev->source, ev->lsn, ev->xid, ev->ordinal, ev->value, ev->len);
    }
    crw_pipeline_hold(s->pipeline, ev->txn, 1);
    /* Room in the unconfirmed window: wait for confirms (or the broker), keeping the source alive. */
    bool waited = false;
    while (s->n == s->cap) {
        if (!waited && warn_due(s) && !s->conn)
            crw_warn("rabbitmq: %d messages wait for the broker: not reading the stream", s->n);
        waited = true;
        service(s, WAIT_SLICE_MS);
        keepalive(s);
        if (s->fatal) {
            crw_pipeline_release(s->pipeline, ev->txn, 1);
            return CRW_ERR_SINK;
        }
        if (s->n == s->cap && stop_asked(s)) {
            /* Not taken: its transaction stays unconfirmed, the source sends it again. */
            crw_pipeline_release(s->pipeline, ev->txn, 1);
            return CRW_ERR_STOPPED;
        }
    }
    msg_t *m = at(s, s->n);
    crw_buf_reset(&m->b);
    *m = (msg_t){.state = M_PENDING,
                 .seq = ev->txn,
                 .lsn = ev->lsn,
                 .ordinal = ev->ordinal,
                 .xid = ev->xid,
                 .source = crw_names_intern(&s->sources, ev->source),
                 .b = m->b};
    put_part(m, F_EXCH, s->scratch_ex.data, s->scratch_ex.len);
    crw_buf_putc(&m->b, '\0'); /* the exchange is looked up as a C string */
    put_part(m, F_RK, s->scratch_rk.data, s->scratch_rk.len);
    put_part(m, F_MID, ev->id ? ev->id : "", ev->id ? ev->idlen : 0);
    put_part(m, F_KEY, ev->key ? ev->key : "", ev->key ? ev->keylen : 0);
    put_part(m, F_VALUE, ev->value, ev->len);
    m->body_off = m->f[F_VALUE].off;
    m->body_len = (uint32_t)ev->len;
    const char *ctype = c->event_format == CRW_FORMAT_CLOUDEVENTS ? "application/cloudevents+json" : "application/json";
    size_t ctlen = strlen(ctype);
    if (s->binary) {
        /* CloudEvents' AMQP binding, binary mode: datacontenttype is the content type, every other attribute an
         * application property cloudEvents:<name>, and the body is data alone. */
        ctype = "application/json";
        ctlen = 16;
        for (int i = 0; i < ev->nattrs && m->nattrs < MAX_ATTRS; i++) {
            const crw_event_attr_t *a = &ev->attrs[i];
            if (!strcmp(a->name, "datacontenttype")) {
                ctype = a->value;
                ctlen = a->len;
                continue;
            }
            m->f[F_ATTRS + 2 * m->nattrs] = (span_t){(uint32_t)m->b.len, (uint32_t)(12 + strlen(a->name))};
            crw_buf_put(&m->b, "cloudEvents:", 12);
            crw_buf_puts(&m->b, a->name);
            put_part(m, F_ATTRS + 2 * m->nattrs + 1, a->value, a->len);
            m->nattrs++;
        }
        m->body_off = m->f[F_VALUE].off + (uint32_t)ev->data.off;
        m->body_len = (uint32_t)ev->data.len;
    }
    put_part(m, F_CTYPE, ctype, ctlen);
    s->n++;
    if (s->conn && !s->blocked) {
        flush_pending(s);
    } else if (!s->conn)
        maybe_connect(s);
    return s->fatal ? CRW_ERR_SINK : 0;
}

static int rmq_commit(crw_sink_t *base, uint64_t txn) {
    (void)txn;
    rmq_sink_t *s = (rmq_sink_t *)base;
    return s->fatal ? CRW_ERR_SINK : 0; /* in flight: confirms release the holds */
}

static int rmq_poll(crw_sink_t *base, int timeout_ms) {
    rmq_sink_t *s = (rmq_sink_t *)base;
    if (!s->fatal)
        service(s, timeout_ms);
    return s->fatal ? CRW_ERR_SINK : 0;
}

static int rmq_drain(crw_sink_t *base, int timeout_ms) {
    rmq_sink_t *s = (rmq_sink_t *)base;
    int64_t deadline = crw_clock_mono_ms() + timeout_ms;
    while (s->n > 0 && !s->fatal) {
        int64_t left = deadline - crw_clock_mono_ms();
        if (left <= 0)
            break;
        service(s, left < WAIT_SLICE_MS ? (int)left : WAIT_SLICE_MS);
    }
    if (s->n > 0)
        crw_warn("rabbitmq: %d messages not confirmed at stop; they are sent again on restart", s->n);
    return s->n > 0 || s->fatal ? CRW_ERR_SINK : 0;
}

static void rmq_destroy(crw_sink_t *base) {
    rmq_sink_t *s = (rmq_sink_t *)base;
    if (s->conn) {
        struct timeval rpc = {2, 0};
        amqp_set_rpc_timeout(s->conn, &rpc);
        amqp_channel_close(s->conn, CH_PUB, AMQP_REPLY_SUCCESS);
        amqp_connection_close(s->conn, AMQP_REPLY_SUCCESS);
        amqp_destroy_connection(s->conn);
    }
    if (s->confirmed || s->deadlettered)
        crw_info("rabbitmq: %" PRIu64 " messages confirmed, %" PRIu64 " dead-lettered, %" PRIu64
                 " published again after a reconnect",
                 s->confirmed, s->deadlettered, s->republished);
    for (int i = 0; i < s->cap; i++)
        crw_buf_free(&s->ring[i].b);
    free(s->ring);
    for (int i = 0; i < s->nexchanges; i++)
        free(s->exchanges[i]);
    free(s->exchanges);
    crw_names_free(&s->sources);
    for (int i = 0; i < s->nurls; i++) {
        /* The parsed password points into the copy, or (none in the URL) at librabbitmq's default. */
        url_t *u = &s->urls[i];
        uintptr_t pw = (uintptr_t)u->ci.password, from = (uintptr_t)u->copy;
        if (u->ci.password && pw >= from && pw < from + u->copy_len)
            memset(u->ci.password, 0, strlen(u->ci.password));
        free(s->urls[i].copy);
    }
    free(s->urls);
    crw_buf_free(&s->scratch_ex);
    crw_buf_free(&s->scratch_rk);
    free(s);
}

static const crw_sink_ops_t rmq_ops = {
    .name = "rabbitmq",
    .emit = rmq_emit,
    .commit = rmq_commit,
    .poll = rmq_poll,
    .drain = rmq_drain,
    .destroy = rmq_destroy,
};

/* ---------------------------------------------------------------- create */

/* rabbitmq.url: a comma list of AMQP URLs.  Errors never show a URL (it holds the password). */
static int parse_urls(rmq_sink_t *s, const char *list, char *errstr, size_t n) {
    char *copy = crw_strdup(list);
    int item = 0, rc = 0;
    /* Split at the commas that start another URL: a password may hold a comma. */
    for (char *tok = copy, *next; tok; tok = next) {
        next = NULL;
        for (char *p = strchr(tok, ','); p; p = strchr(p + 1, ',')) {
            const char *q = p + 1 + strspn(p + 1, " \t");
            if (!strncmp(q, "amqp://", 7) || !strncmp(q, "amqps://", 8)) {
                *p = '\0';
                next = p + 1;
                break;
            }
        }
        item++;
        while (*tok == ' ' || *tok == '\t')
            tok++;
        size_t len = strlen(tok);
        while (len && (tok[len - 1] == ' ' || tok[len - 1] == '\t'))
            tok[--len] = '\0';
        url_t u = {crw_strdup(tok), len + 1};
        amqp_default_connection_info(&u.ci);
        if (strncmp(tok, "amqp://", 7) && strncmp(tok, "amqps://", 8)) {
            snprintf(errstr, n, "rabbitmq.url: item %d does not start with amqp:// or amqps:// "
                     "(amqp://user:password@host:port/vhost; the value is not shown: it may hold a password)", item);
            free(u.copy);
            rc = CRW_ERR_CONFIG;
            break;
        }
        if (amqp_parse_url(u.copy, &u.ci) != AMQP_STATUS_OK || !*u.ci.host) {
            snprintf(errstr, n, "rabbitmq.url: item %d is not an AMQP URL (amqp://user:password@host:port/vhost; "
                     "the value is not shown: it may hold a password)", item);
            free(u.copy);
            rc = CRW_ERR_CONFIG;
            break;
        }
        if (!*u.ci.vhost) /* amqp://host/ (as most clients read it): the default vhost */
            u.ci.vhost = "/";
        snprintf(u.shown, sizeof u.shown, "%s://%s@%s:%d vhost %s", u.ci.ssl ? "amqps" : "amqp", u.ci.user,
                 u.ci.host, u.ci.port, u.ci.vhost);
        s->urls = crw_realloc(s->urls, sizeof *s->urls * (size_t)(s->nurls + 1));
        s->urls[s->nurls++] = u;
    }
    if (rc == 0 && s->nurls == 0) {
        snprintf(errstr, n, "rabbitmq.url: required with sink=rabbitmq (amqp://user:password@host:port/vhost)");
        rc = CRW_ERR_CONFIG;
    }
    memset(copy, 0, strlen(list));
    free(copy);
    return rc;
}

CRW_SINK_CONSTRUCTOR(crw_sink_rabbitmq_new) {
    const crw_config_t *c = env->conf;
    size_t n = errstr_size;
    *err = CRW_ERR_CONFIG;
    if (!*c->rabbitmq_url) {
        snprintf(errstr, n, "rabbitmq.url: required with sink=rabbitmq (amqp://user:password@host:port/vhost)");
        return NULL;
    }
    if (c->cloudevents_mode == 1 && c->event_format != CRW_FORMAT_CLOUDEVENTS) {
        snprintf(errstr, n, "cloudevents.mode: binary needs event.format=cloudevents");
        return NULL;
    }
    if (c->delivery == CRW_DELIVERY_EXACTLY_ONCE) {
        /* A restart skips what Kafka's checkpoint covers, whether the broker confirmed it or not. */
        snprintf(errstr, n, "delivery: exactly-once is Kafka's; sink=rabbitmq is at-least-once (consumers deduplicate "
                 "on message_id, the event id)");
        return NULL;
    }
    bool ex_ph, rk_ph;
    if (template_check("rabbitmq.exchange", c->rabbitmq_exchange, 3, true, &ex_ph, errstr, n) < 0 ||
        template_check("rabbitmq.routing.key", c->rabbitmq_routing_key, NPH, false, &rk_ph, errstr, n) < 0)
        return NULL;
    if (!!*c->rabbitmq_tls_cert_file != !!*c->rabbitmq_tls_key_file) {
        snprintf(errstr, n, "rabbitmq.tls.cert.file and rabbitmq.tls.key.file: set both or neither");
        return NULL;
    }

    rmq_sink_t *s = crw_calloc(1, sizeof *s);
    s->base.ops = &rmq_ops;
    s->base.env = env;
    s->conf = c;
    s->pipeline = env->pipeline;
    s->binary = c->cloudevents_mode == 1;
    s->exch_fixed = !ex_ph;
    s->last_exchange = -1;
    s->sources = (crw_names_t)CRW_NAMES_INIT;
    s->backoff_ms = 100;
    s->cap = c->rabbitmq_max_unconfirmed;
    s->ring = crw_calloc((size_t)s->cap, sizeof *s->ring);
    if (parse_urls(s, c->rabbitmq_url, errstr, n) < 0)
        goto fail;
    bool tls = false;
    for (int i = 0; i < s->nurls; i++)
        tls |= s->urls[i].ci.ssl;
    if (!tls && (*c->rabbitmq_tls_ca_file || *c->rabbitmq_tls_cert_file)) {
        snprintf(errstr, n, "rabbitmq.tls.*: set, but no rabbitmq.url is amqps://");
        goto fail;
    }
    if (*c->rabbitmq_password_file) {
        char pw[1024];
        if (read_password(s, pw, sizeof pw, errstr, n) < 0)
            goto fail;
        memset(pw, 0, sizeof pw);
    }

    /* A first connection now: a refused login or exchange stops here (exit 1); a broker that is not
     * there yet is waited for, as when it goes away later. */
    char why[700] = "";
    int rc = connect_broker(s, why, sizeof why);
    if (rc == CRW_ERR_AUTH || rc == CRW_ERR_SINK || s->fatal) {
        snprintf(errstr, n, "rabbitmq: %s", s->fatal ? "the broker refused the exchange (see above)" : why);
        *err = CRW_ERR_SINK;
        goto fail;
    }
    if (rc < 0) {
        crw_warn("rabbitmq: %s; connecting again in the background (nothing is confirmed to PostgreSQL until the "
                 "broker has it)",
                 why);
        s->next_connect_ms = crw_clock_mono_ms() + s->backoff_ms;
        s->backoff_ms *= 2;
    }
    return &s->base;

fail:
    rmq_destroy(&s->base);
    return NULL;
}
