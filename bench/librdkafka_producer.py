"""The librdkafka side of producer-bench (confluent-kafka from PyPI, librdkafka 2.16).

Reads the same records file as the kedge side (fixed-size entries: key, then value) in blocks of
4096 entries and produces every record with the same two headers kedge writes (`kedge-device`,
`kedge-seq`), so that both sides put the same bytes on the wire and `kedge audit` can check both.
Idempotent, acks=all, the codec given (zstd unless told), and the linger/batch limits given (kedge's defaults).

Prints one line `RESULT key=value ...`: elapsed seconds and user/system CPU seconds from the
producer's construction to the end of flush(), and delivery errors. Peak RSS and the CPU of the
whole process are taken by the parent from wait4.
"""

import argparse
import resource
import sys
import time

from confluent_kafka import KafkaException, Producer, libversion

BLOCK_RECORDS = 4096


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--records-file", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--key-bytes", type=int, required=True)
    parser.add_argument("--value-bytes", type=int, required=True)
    parser.add_argument("--device", default="bench")
    parser.add_argument("--linger-ms", type=int, required=True)
    parser.add_argument("--batch-records", type=int, required=True)
    parser.add_argument("--batch-bytes", type=int, required=True)
    parser.add_argument("--compression", default="zstd")
    args = parser.parse_args()

    key_bytes = args.key_bytes
    entry = key_bytes + args.value_bytes
    device = args.device.encode()
    topic = args.topic
    errors = []

    def on_delivery(error, _message):
        # With delivery.report.only.error this runs for failed records only.
        if error is not None:
            errors.append(error)

    records = open(args.records_file, "rb")
    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    started = time.monotonic()
    producer = Producer(
        {
            "bootstrap.servers": args.bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "compression.type": args.compression,
            "linger.ms": args.linger_ms,
            "batch.num.messages": args.batch_records,
            "batch.size": args.batch_bytes,
            "max.in.flight.requests.per.connection": 5,
            "delivery.report.only.error": True,
            "on_delivery": on_delivery,
        }
    )
    produce = producer.produce
    poll = producer.poll
    seq = 0
    full_waits = 0
    while seq < args.count:
        n = min(BLOCK_RECORDS, args.count - seq)
        block = records.read(n * entry)
        if len(block) != n * entry:
            sys.exit(f"records file too short at record {seq}")
        for i in range(n):
            at = i * entry
            key = block[at : at + key_bytes]
            value = block[at + key_bytes : at + entry]
            headers = [("kedge-device", device), ("kedge-seq", str(seq).encode())]
            while True:
                try:
                    produce(topic, value, key, headers=headers)
                    break
                except BufferError:
                    # queue.buffering.max.messages reached: serve delivery reports, then retry.
                    full_waits += 1
                    poll(0.005)
            seq += 1
        poll(0)
    remaining = producer.flush(300)
    elapsed = time.monotonic() - started
    usage1 = resource.getrusage(resource.RUSAGE_SELF)
    print(
        "RESULT"
        f" librdkafka={libversion()[0]} delivered={args.count - remaining - len(errors)}"
        f" undelivered={remaining} errors={len(errors)} full_waits={full_waits}"
        f" total_s={elapsed:.4f}"
        f" total_user_s={usage1.ru_utime - usage0.ru_utime:.4f}"
        f" total_sys_s={usage1.ru_stime - usage0.ru_stime:.4f}"
    )
    if errors:
        print(f"librdkafka_producer: first errors: {errors[:5]}", file=sys.stderr)
    return 0 if remaining == 0 and not errors else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KafkaException as error:
        sys.exit(f"librdkafka_producer: {error}")
