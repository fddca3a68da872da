"""Publish-to-Kafka latency for e2e-bench: an independent consumer (confluent-kafka, librdkafka).

Reads every partition of the topic from offset 0 with assign() (no group: tansu holds JoinGroup
for half the session timeout) and, for each record, takes the publisher's wall-clock time from
the `"ts":"<microseconds>"` field of the value and the wall-clock time the record reached this
consumer. The difference bounds the time from MQTT publish to Kafka acknowledgement from above:
it adds the consumer's own fetch delay (fetch.wait.max.ms, 5 ms here, bounds the broker's hold).

Records published in the first --warmup-s seconds are left out of the percentiles. Stops after
--expect records or --timeout seconds. Prints one line "RESULT key=value ...".
"""

import argparse
import re
import sys
import time

from confluent_kafka import Consumer, TopicPartition

TS = re.compile(rb'"ts":"(\d+)"')


def percentile(sorted_values, p):
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(p / 100.0 * (len(sorted_values) - 1))))
    return sorted_values[k]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--expect", type=int, required=True)
    parser.add_argument("--timeout", type=float, required=True)
    parser.add_argument("--warmup-s", type=float, default=2.0)
    parser.add_argument("--fetch-wait-ms", type=int, default=5)
    args = parser.parse_args()

    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": "kedge-bench-latency",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": args.fetch_wait_ms,
            "fetch.min.bytes": 1,
            "allow.auto.create.topics": False,
        }
    )
    metadata = consumer.list_topics(args.topic, timeout=10)
    partitions = sorted(metadata.topics[args.topic].partitions)
    consumer.assign([TopicPartition(args.topic, p, 0) for p in partitions])
    print("READY", flush=True)
    started = time.monotonic()
    deadline = started + args.timeout
    first_ts = None
    latencies = []
    count = 0
    unparsed = 0
    while count < args.expect and time.monotonic() < deadline:
        # One record per poll: consume(num_messages=N) would hold records back until N arrive
        # or its timeout passes, which adds up to that timeout to every latency.
        message = consumer.poll(0.1)
        if message is None or message.error() is not None:
            continue
        now_us = time.time() * 1e6
        count += 1
        m = TS.search(message.value() or b"")
        if m is None:
            unparsed += 1
            continue
        ts = int(m.group(1))
        if first_ts is None or ts < first_ts:
            first_ts = ts
        latencies.append((ts, now_us - ts))
    consumer.close()
    cutoff = (first_ts or 0) + args.warmup_s * 1e6
    measured = sorted(lat / 1000.0 for ts, lat in latencies if ts >= cutoff)
    print(
        "RESULT"
        f" received={count} unparsed={unparsed} measured={len(measured)}"
        f" p50_ms={percentile(measured, 50):.2f} p95_ms={percentile(measured, 95):.2f}"
        f" p99_ms={percentile(measured, 99):.2f} max_ms={(measured[-1] if measured else float('nan')):.2f}",
        flush=True,
    )
    return 0 if count >= args.expect else 1


if __name__ == "__main__":
    sys.exit(main())
