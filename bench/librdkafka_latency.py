"""Latency baseline for e2e-bench: a librdkafka producer (confluent-kafka) straight to Kafka.

Produces the same 200-byte readings as e2e-bench's MQTT publisher (with the `"ts"` field the
latency consumer reads) at a fixed rate, idempotent, acks=all, zstd, linger 5 ms: what the latency
consumer reports for these records is the share of the broker and the consumer itself, the floor
under kedge's publish-to-consumer figure. Also prints librdkafka's own produce-to-ack latency.
"""

import argparse
import re
import sys
import time

from confluent_kafka import Producer

TS = re.compile(rb'"ts":"(\d+)"')


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--linger-ms", type=int, default=5)
    args = parser.parse_args()

    acked = []

    def on_delivery(error, message):
        if error is None:
            acked.append(time.time() * 1e6 - int(TS.search(message.value()).group(1)))

    producer = Producer(
        {
            "bootstrap.servers": args.bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "compression.type": "zstd",
            "linger.ms": args.linger_ms,
            "on_delivery": on_delivery,
        }
    )
    started = time.monotonic()
    for n in range(args.count):
        delay = started + n / args.rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        ts = int(time.time() * 1e6)
        value = f'{{"sensor":"dev-{n % 50}","temp_f":{50 + (n % 400) / 10:.1f},"n":{n},"ts":"{ts}","pad":"'
        value += "x" * (198 - len(value)) + '"}'
        producer.produce(args.topic, value.encode(), f"dev-{n % 50}".encode())
        producer.poll(0)
    producer.flush(60)
    measured = sorted(acked[len(acked) // 10 :])
    pick = lambda p: measured[min(len(measured) - 1, round(p / 100 * (len(measured) - 1)))] / 1000
    print(
        f"RESULT acked={len(acked)} ack_p50_ms={pick(50):.2f} ack_p95_ms={pick(95):.2f}"
        f" ack_p99_ms={pick(99):.2f}"
    )
    return 0 if len(acked) == args.count else 1


if __name__ == "__main__":
    sys.exit(main())
