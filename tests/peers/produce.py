"""Third-party Kafka producer for kedge's end-to-end tests (confluent-kafka / librdkafka).

Writes records that look like kedge's, with crafted `kedge-device`/`kedge-seq` headers, so that
`kedge audit` can be checked against loss and duplicates it did not cause itself:

    produce.py --bootstrap HOST:PORT --topic T --record PARTITION:DEVICE:SEQ [--record ...]
               [--compression none|gzip|snappy|lz4|zstd] [--linger-ms MS]

Records are written in the order given, one flush at the end; it exits 1 if any failed. With a
linger, librdkafka gathers them into batches of several records, compressed as one.
"""

import argparse
import sys

from confluent_kafka import Producer


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--record", action="append", required=True, help="PARTITION:DEVICE:SEQ")
    parser.add_argument("--compression", default="none")
    parser.add_argument("--linger-ms", type=int, default=0)
    args = parser.parse_args()

    producer = Producer(
        {
            "bootstrap.servers": args.bootstrap,
            "compression.type": args.compression,
            # One request at a time keeps the order given even across retries.
            "max.in.flight.requests.per.connection": 1,
            "linger.ms": args.linger_ms,
        }
    )
    failed = []

    def delivered(error, message):
        if error is not None:
            failed.append(error)

    for spec in args.record:
        partition, device, seq = spec.split(":", 2)
        producer.produce(
            args.topic,
            value=f"{device}:{seq}".encode(),
            partition=int(partition),
            headers=[("kedge-device", device.encode()), ("kedge-seq", seq.encode())],
            on_delivery=delivered,
        )
        producer.poll(0)
    remaining = producer.flush(30)
    if remaining or failed:
        print(f"produce: {remaining} undelivered, errors: {failed[:5]}", file=sys.stderr)
        return 1
    print(f"produce: {len(args.record)} records to {args.topic}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
