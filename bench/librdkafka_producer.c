/*
 * The librdkafka side of producer-bench without Python: the same records, headers and settings
 * as librdkafka_producer.py, produced from C, so that the interpreter's share of the Python
 * side's CPU and memory is visible.
 *
 * producer-bench compiles it against Debian's <librdkafka/rdkafka.h> (2.0.2; the calls used
 * here are unchanged since) and links it to the librdkafka 2.16 shared library inside the
 * confluent-kafka wheel, which speaks tansu's ApiVersions v3 (Debian's 2.0.2 does not).
 *
 * Usage: librdkafka_producer BOOTSTRAP TOPIC RECORDS_FILE COUNT KEY_BYTES VALUE_BYTES
 *                            LINGER_MS BATCH_RECORDS BATCH_BYTES
 * Prints one line "RESULT key=value ...", like the Python side.
 */
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#define BLOCK_RECORDS 4096

static long errors;

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    (void)rk;
    (void)opaque;
    if (m->err && errors++ < 5)
        fprintf(stderr, "delivery failed: %s\n", rd_kafka_err2str(m->err));
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static double tv(struct timeval t) { return t.tv_sec + t.tv_usec / 1e6; }

static void set(rd_kafka_conf_t *conf, const char *name, const char *value) {
    char err[512];
    if (rd_kafka_conf_set(conf, name, value, err, sizeof err) != RD_KAFKA_CONF_OK) {
        fprintf(stderr, "%s=%s: %s\n", name, value, err);
        exit(2);
    }
}

int main(int argc, char **argv) {
    if (argc != 10 && argc != 11) {
        fprintf(stderr, "usage: %s BOOTSTRAP TOPIC RECORDS_FILE COUNT KEY_BYTES VALUE_BYTES "
                        "LINGER_MS BATCH_RECORDS BATCH_BYTES [CODEC]\n", argv[0]);
        return 2;
    }
    const char *topic = argv[2];
    long count = atol(argv[4]);
    size_t key_bytes = (size_t)atol(argv[5]), value_bytes = (size_t)atol(argv[6]);
    size_t entry = key_bytes + value_bytes;
    FILE *records = fopen(argv[3], "rb");
    if (!records) {
        perror(argv[3]);
        return 2;
    }
    char *block = malloc(BLOCK_RECORDS * entry);

    struct rusage u0, u1;
    getrusage(RUSAGE_SELF, &u0);
    double started = now();
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    set(conf, "bootstrap.servers", argv[1]);
    set(conf, "enable.idempotence", "true");
    set(conf, "acks", "all");
    set(conf, "compression.type", argc == 11 ? argv[10] : "zstd");
    set(conf, "linger.ms", argv[7]);
    set(conf, "batch.num.messages", argv[8]);
    set(conf, "batch.size", argv[9]);
    set(conf, "max.in.flight.requests.per.connection", "5");
    set(conf, "delivery.report.only.error", "true");
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    char err[512];
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    if (!rk) {
        fprintf(stderr, "rd_kafka_new: %s\n", err);
        return 2;
    }
    long full_waits = 0;
    char seq_text[24];
    for (long seq = 0; seq < count;) {
        long n = count - seq < BLOCK_RECORDS ? count - seq : BLOCK_RECORDS;
        if (fread(block, entry, (size_t)n, records) != (size_t)n) {
            fprintf(stderr, "records file too short at record %ld\n", seq);
            return 2;
        }
        for (long i = 0; i < n; i++, seq++) {
            char *at = block + i * entry;
            int len = snprintf(seq_text, sizeof seq_text, "%ld", seq);
            for (;;) {
                rd_kafka_resp_err_t e = rd_kafka_producev(
                    rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                    RD_KAFKA_V_KEY(at, key_bytes), RD_KAFKA_V_VALUE(at + key_bytes, value_bytes),
                    RD_KAFKA_V_HEADER("kedge-device", "bench", 5),
                    RD_KAFKA_V_HEADER("kedge-seq", seq_text, len), RD_KAFKA_V_END);
                if (e == RD_KAFKA_RESP_ERR_NO_ERROR)
                    break;
                if (e != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
                    fprintf(stderr, "produce: %s\n", rd_kafka_err2str(e));
                    return 1;
                }
                full_waits++;
                rd_kafka_poll(rk, 5);
            }
        }
        rd_kafka_poll(rk, 0);
    }
    rd_kafka_flush(rk, 300 * 1000);
    int remaining = rd_kafka_outq_len(rk);
    double elapsed = now() - started;
    getrusage(RUSAGE_SELF, &u1);
    printf("RESULT librdkafka=%s delivered=%ld undelivered=%d errors=%ld full_waits=%ld "
           "total_s=%.4f total_user_s=%.4f total_sys_s=%.4f\n",
           rd_kafka_version_str(), count - remaining - errors, remaining, errors, full_waits,
           elapsed, tv(u1.ru_utime) - tv(u0.ru_utime), tv(u1.ru_stime) - tv(u0.ru_stime));
    rd_kafka_destroy(rk);
    free(block);
    fclose(records);
    return remaining == 0 && errors == 0 ? 0 : 1;
}
