/*
 * mock_kafka.c — crwatch-mock-kafka: librdkafka's mock cluster in a process
 * of its own, for integration tests and bench/kafka.sh, so
 * crwatch can be killed and restarted while the broker and its data live.
 *
 *   crwatch-mock-kafka [--transactions] [BROKERS]      (default 1)
 *
 * Prints the bootstrap address on the first stdout line, then reads one
 * command per stdin line and answers each with one line, "ok" or
 * "error: ...":
 *   down | up                         every broker unreachable / back
 *   create TOPIC PARTITIONS           create a topic (the mock has no CreateTopics controller)
 *   error API CODE COUNT              the next COUNT requests of ApiKey API fail with error CODE
 *                                     (e.g. "error 0 29 1": one Produce, TOPIC_AUTHORIZATION_FAILED)
 *   refuse TOPIC CODE COUNT           --transactions only: the next COUNT Produce requests carrying TOPIC
 *                                     fail with error CODE, other topics' not ("refuse t 10 1": one
 *                                     MESSAGE_TOO_LARGE for t, whatever else is in flight)
 *   topic-config TOPIC                --transactions only: "ok partitions=N replication=R configs=k=v,..."
 *                                     as a client's CreateTopics asked for TOPIC
 *   quit
 * It exits 0 at end of stdin, on quit, SIGTERM or SIGINT.
 *
 * What the mock does not do (librdkafka 2.0.2): transaction markers — Fetch
 * answers with LastStableOffset = high watermark and no aborted
 * transactions, so a read_committed consumer also sees aborted and open
 * transactions.  With --transactions the printed address is that of a relay
 * in front of the mock that adds them (mock_kafka_txn.h): read_committed
 * consumers, kcat included, then see only committed transactions.  Topics
 * are never compacted; there is no CreateTopics; each partition keeps only
 * its last ~5 MB (older message sets are dropped, the low watermark moves).
 */
#include <errno.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mock_kafka_txn.h"

static volatile sig_atomic_t stop;

static void on_signal(int sig) {
    (void)sig;
    stop = 1;
}

/* The mock's handle has no bootstrap.servers on purpose: keep its notice quiet. */
static void quiet_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {
    (void)rk;
    if (level <= 3)
        fprintf(stderr, "crwatch-mock-kafka: [%s] %s\n", fac, buf);
}

static void reply(const char *fmt, const char *arg) {
    printf(fmt, arg);
    putchar('\n');
    fflush(stdout);
}

static void command(rd_kafka_mock_cluster_t *m, crw_txnlayer_t *txl, int brokers, char *line) {
    char *save = NULL, *cmd = strtok_r(line, " \t\r\n", &save);
    if (!cmd)
        return;
    if (!strcmp(cmd, "down") || !strcmp(cmd, "up")) {
        for (int b = 1; b <= brokers; b++)
            if (*cmd == 'd')
                rd_kafka_mock_broker_set_down(m, b);
            else
                rd_kafka_mock_broker_set_up(m, b);
        reply("ok", NULL);
    } else if (!strcmp(cmd, "create")) {
        char *topic = strtok_r(NULL, " \t\r\n", &save), *parts = strtok_r(NULL, " \t\r\n", &save);
        int np = parts ? atoi(parts) : 0;
        if (!topic || np < 1) {
            reply("error: usage: create TOPIC PARTITIONS%s", "");
            return;
        }
        rd_kafka_resp_err_t err = rd_kafka_mock_topic_create(m, topic, np, brokers < 3 ? brokers : 3);
        if (err)
            reply("error: %s", rd_kafka_err2str(err));
        else
            reply("ok", NULL);
    } else if (!strcmp(cmd, "error")) {
        char *api = strtok_r(NULL, " \t\r\n", &save), *code = strtok_r(NULL, " \t\r\n", &save),
             *count = strtok_r(NULL, " \t\r\n", &save);
        if (!api || !code || !count || atoi(count) < 1) {
            reply("error: usage: error API CODE COUNT%s", "");
            return;
        }
        int n = atoi(count);
        rd_kafka_resp_err_t *errs = calloc((size_t)n, sizeof *errs);
        for (int i = 0; i < n; i++)
            errs[i] = (rd_kafka_resp_err_t)atoi(code);
        rd_kafka_mock_push_request_errors_array(m, (int16_t)atoi(api), (size_t)n, errs);
        free(errs);
        reply("ok", NULL);
    } else if (!strcmp(cmd, "topic-config")) {
        char *topic = strtok_r(NULL, " \t\r\n", &save), cfg[1024];
        if (!topic || !txl)
            reply("error: usage: topic-config TOPIC (with --transactions)%s", "");
        else if (crw_txnlayer_topic_config(txl, topic, cfg, sizeof cfg) < 0)
            reply("error: no CreateTopics made %s", topic);
        else
            reply("ok %s", cfg);
    } else if (!strcmp(cmd, "refuse")) {
        char *topic = strtok_r(NULL, " \t\r\n", &save), *code = strtok_r(NULL, " \t\r\n", &save),
             *count = strtok_r(NULL, " \t\r\n", &save);
        if (!topic || !code || !count || atoi(count) < 1 || !txl)
            reply("error: usage: refuse TOPIC CODE COUNT (with --transactions)%s", "");
        else {
            crw_txnlayer_refuse(txl, topic, (int16_t)atoi(code), atoi(count));
            reply("ok", NULL);
        }
    } else if (!strcmp(cmd, "quit")) {
        stop = 1;
        reply("ok", NULL);
    } else
        reply("error: unknown command '%s' (down, up, create, error, refuse, topic-config, quit)", cmd);
}

int main(int argc, char **argv) {
    bool transactions = argc > 1 && !strcmp(argv[1], "--transactions");
    int brokers = argc > 1 + transactions ? atoi(argv[1 + transactions]) : 1;
    if (brokers < 1 || brokers > 9 || argc > 2 + transactions) {
        fprintf(stderr, "usage: crwatch-mock-kafka [--transactions] [BROKERS (1-9)]\n");
        return 2;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    char errstr[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(conf, quiet_log);
    /* The mock brokers' sockets take this handle's settings: without TCP_NODELAY a response sent right
     * after another waits for the client's delayed ACK (40 ms on Linux), as no broker's does
     * (bench/README.md, bench/latency.sh). */
    rd_kafka_conf_set(conf, "socket.nagle.disable", "true", errstr, sizeof errstr);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    if (!rk) {
        fprintf(stderr, "crwatch-mock-kafka: %s\n", errstr);
        return 1;
    }
    rd_kafka_mock_cluster_t *m = rd_kafka_mock_cluster_new(rk, brokers);
    if (!m) {
        fprintf(stderr, "crwatch-mock-kafka: cannot create the mock cluster\n");
        rd_kafka_destroy(rk);
        return 1;
    }
    crw_txnlayer_t *txl = NULL;
    if (transactions && !(txl = crw_txnlayer_new(m, errstr, sizeof errstr))) {
        fprintf(stderr, "crwatch-mock-kafka: %s\n", errstr);
        rd_kafka_mock_cluster_destroy(m);
        rd_kafka_destroy(rk);
        return 1;
    }
    printf("%s\n", txl ? crw_txnlayer_bootstraps(txl) : rd_kafka_mock_cluster_bootstraps(m));
    fflush(stdout);

    char line[1024];
    size_t len = 0;
    while (!stop) {
        if (txl) {
            if (!crw_txnlayer_poll(txl, STDIN_FILENO, 200))
                continue;
        } else {
            struct pollfd pfd = {STDIN_FILENO, POLLIN, 0};
            int r = poll(&pfd, 1, 200);
            if (r < 0 && errno != EINTR)
                break;
            if (r <= 0)
                continue;
        }
        ssize_t got = read(STDIN_FILENO, line + len, sizeof line - 1 - len);
        if (got <= 0)
            break; /* stdin closed: the parent is gone */
        len += (size_t)got;
        line[len] = '\0';
        char *nl;
        while ((nl = strchr(line, '\n'))) {
            *nl = '\0';
            command(m, txl, brokers, line);
            size_t rest = len - (size_t)(nl + 1 - line);
            memmove(line, nl + 1, rest + 1);
            len = rest;
        }
        if (len == sizeof line - 1)
            len = 0; /* an over-long line: drop it */
    }
    crw_txnlayer_destroy(txl);
    rd_kafka_mock_cluster_destroy(m);
    rd_kafka_destroy(rk);
    return 0;
}
