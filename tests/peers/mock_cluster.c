/*
 * A librdkafka mock Kafka cluster driven over stdin, for kedge's end-to-end tests.
 *
 *   mock_cluster BROKERS [TOPIC:PARTITIONS ...]
 *
 * Prints "bootstrap HOST:PORT,..." on stdout once the cluster listens (on 127.0.0.1), then reads
 * one command a line from stdin and answers each with "ok ..." or "error ...":
 *
 *   errors API_KEY_NAME CODE...      push errors for the next requests of that API (any broker)
 *   down BROKER | up BROKER          take a broker down (closes its connections) or up again
 *   rtt BROKER MS                    delay every response of a broker by MS milliseconds
 *   leader TOPIC PARTITION BROKER    move a partition's leadership
 *   version API_KEY_NAME MIN MAX     change the version range advertised (and accepted) for an API
 *   quit                             (or end of input) destroy the cluster and exit
 *
 * API_KEY_NAME is one of produce, fetch, metadata, apiversions, initproducerid, or a number.
 * Build: cc -O1 -o mock_cluster mock_cluster.c $(pkg-config --cflags --libs rdkafka)
 */
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static int api_key(const char *name) {
        static const struct {
                const char *name;
                int key;
        } keys[] = {{"produce", 0},     {"fetch", 1},        {"listoffsets", 2},
                    {"metadata", 3},    {"apiversions", 18}, {"initproducerid", 22}};
        for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
                if (!strcasecmp(name, keys[i].name))
                        return keys[i].key;
        char *end;
        long key = strtol(name, &end, 10);
        return (*name && !*end && key >= 0 && key < 100) ? (int)key : -1;
}

static void reply(rd_kafka_resp_err_t err, const char *line) {
        if (err)
                printf("error %s: %s\n", rd_kafka_err2name(err), line);
        else
                printf("ok %s\n", line);
        fflush(stdout);
}

int main(int argc, char **argv) {
        char errstr[512];
        if (argc < 2 || atoi(argv[1]) < 1) {
                fprintf(stderr, "usage: %s BROKERS [TOPIC:PARTITIONS ...]\n", argv[0]);
                return 2;
        }
        rd_kafka_conf_t *conf = rd_kafka_conf_new();
        /* The mock cluster needs a client handle to run in; this producer never produces. */
        if (rd_kafka_conf_set(conf, "bootstrap.servers", "", errstr, sizeof(errstr)) ||
            rd_kafka_conf_set(conf, "log_level", "4", errstr, sizeof(errstr))) {
                fprintf(stderr, "conf: %s\n", errstr);
                return 1;
        }
        rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
        if (!rk) {
                fprintf(stderr, "rd_kafka_new: %s\n", errstr);
                return 1;
        }
        rd_kafka_mock_cluster_t *mcluster = rd_kafka_mock_cluster_new(rk, atoi(argv[1]));
        if (!mcluster) {
                fprintf(stderr, "rd_kafka_mock_cluster_new failed\n");
                return 1;
        }
        for (int i = 2; i < argc; i++) {
                char topic[256];
                int partitions;
                if (sscanf(argv[i], "%255[^:]:%d", topic, &partitions) != 2) {
                        fprintf(stderr, "bad topic spec %s (want NAME:PARTITIONS)\n", argv[i]);
                        return 2;
                }
                rd_kafka_resp_err_t err =
                    rd_kafka_mock_topic_create(mcluster, topic, partitions, 1);
                if (err) {
                        fprintf(stderr, "create topic %s: %s\n", topic, rd_kafka_err2str(err));
                        return 1;
                }
        }
        printf("bootstrap %s\n", rd_kafka_mock_cluster_bootstraps(mcluster));
        fflush(stdout);

        char line[1024];
        while (fgets(line, sizeof(line), stdin)) {
                line[strcspn(line, "\r\n")] = '\0';
                char cmd[32], a[256];
                int n = 0, b = 0, c = 0;
                int fields = sscanf(line, "%31s %255s %n", cmd, a, &n);
                if (fields < 1)
                        continue;
                rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;
                if (!strcmp(cmd, "quit")) {
                        break;
                } else if (!strcmp(cmd, "errors") && fields == 2 && api_key(a) >= 0) {
                        rd_kafka_resp_err_t codes[64];
                        size_t cnt = 0;
                        char *p = line + n, *end;
                        for (long code; cnt < 64 && (code = strtol(p, &end, 10), end != p);
                             p = end)
                                codes[cnt++] = (rd_kafka_resp_err_t)code;
                        if (cnt == 0) {
                                reply(RD_KAFKA_RESP_ERR__INVALID_ARG, line);
                                continue;
                        }
                        rd_kafka_mock_push_request_errors_array(mcluster, (int16_t)api_key(a),
                                                                cnt, codes);
                } else if (!strcmp(cmd, "down") && fields == 2) {
                        err = rd_kafka_mock_broker_set_down(mcluster, atoi(a));
                } else if (!strcmp(cmd, "up") && fields == 2) {
                        err = rd_kafka_mock_broker_set_up(mcluster, atoi(a));
                } else if (!strcmp(cmd, "rtt") && fields == 2 &&
                           sscanf(line + n, "%d", &b) == 1) {
                        err = rd_kafka_mock_broker_set_rtt(mcluster, atoi(a), b);
                } else if (!strcmp(cmd, "leader") && fields == 2 &&
                           sscanf(line + n, "%d %d", &b, &c) == 2) {
                        err = rd_kafka_mock_partition_set_leader(mcluster, a, b, c);
                } else if (!strcmp(cmd, "version") && fields == 2 && api_key(a) >= 0 &&
                           sscanf(line + n, "%d %d", &b, &c) == 2) {
                        err = rd_kafka_mock_set_apiversion(mcluster, (int16_t)api_key(a),
                                                           (int16_t)b, (int16_t)c);
                } else {
                        err = RD_KAFKA_RESP_ERR__INVALID_ARG;
                }
                reply(err, line);
        }
        rd_kafka_mock_cluster_destroy(mcluster);
        rd_kafka_destroy(rk);
        return 0;
}
