"""Independent Kafka consumer for kedge's end-to-end tests (confluent-kafka / librdkafka).

Reads every partition of one topic from offset 0 with assign() (no consumer group: tansu holds
JoinGroup for half the session timeout) and prints one JSON object per record to stdout:

    {"partition": p, "offset": o, "key": <base64 or null>, "value": <base64 or null>,
     "headers": [[name, <base64 or null>], ...], "received_at": <unix seconds, float>}

Headers are a list of pairs, not a dict, so duplicate names stay visible. It stops once --expect
records were read and about a second passes without another one, or when --timeout expires.
It exits 0 even if fewer records arrived: the caller asserts on counts. A summary goes to stderr.
With --pretty it prints one readable line per record instead (for people, e.g. scripts/demo).
"""

import argparse
import base64
import json
import sys
import time

from confluent_kafka import Consumer, KafkaException, TopicPartition

IDLE_AFTER_EXPECTED = 1.0


def b64(data):
    """Base64 text of bytes, or None for a null key/value/header."""
    return None if data is None else base64.b64encode(data).decode("ascii")


def text(data):
    """Bytes as text for people: UTF-8 where possible, else base64."""
    if data is None:
        return "null"
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return "base64:" + b64(data)


def pretty(message):
    """One readable line for a record: where it landed, key, headers, value."""
    headers = " ".join(f"{name}={text(value)}" for name, value in (message.headers() or []))
    return (
        f"partition {message.partition()} offset {message.offset():>3}  key={text(message.key()):<6} "
        f"[{headers}]  {text(message.value())}"
    )


def partitions_of(consumer, topic, deadline):
    """Partition ids of the topic, retrying until it exists or the deadline passes."""
    while True:
        remaining = deadline - time.monotonic()
        try:
            metadata = consumer.list_topics(topic, timeout=max(0.5, min(5.0, remaining)))
            entry = metadata.topics.get(topic)
            if entry is not None and entry.error is None and entry.partitions:
                return sorted(entry.partitions)
            why = entry.error if entry is not None else "absent"
        except KafkaException as error:
            why = error
        if time.monotonic() >= deadline:
            print(f"consume: topic {topic!r} not available: {why}", file=sys.stderr)
            return []
        time.sleep(0.2)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--expect", type=int, required=True)
    parser.add_argument("--timeout", type=float, required=True)
    parser.add_argument("--pretty", action="store_true", help="readable lines instead of JSON")
    args = parser.parse_args()

    started = time.monotonic()
    deadline = started + args.timeout
    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            # librdkafka wants a group id, but assign() never joins the group and nothing commits.
            "group.id": "kedge-e2e-assign-only",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": False,
            "allow.auto.create.topics": False,
            "topic.metadata.refresh.interval.ms": 1000,
        }
    )
    count = 0
    errors = 0
    try:
        partitions = partitions_of(consumer, args.topic, deadline)
        consumer.assign([TopicPartition(args.topic, p, 0) for p in partitions])
        last_record = time.monotonic()
        out = sys.stdout
        while partitions:
            now = time.monotonic()
            if now >= deadline:
                break
            if count >= args.expect and now - last_record >= IDLE_AFTER_EXPECTED:
                break
            batch = consumer.consume(num_messages=1000, timeout=min(0.25, deadline - now))
            for message in batch:
                if message.error() is not None:
                    errors += 1
                    if errors <= 20:
                        print(f"consume: error: {message.error()}", file=sys.stderr)
                    continue
                count += 1
                last_record = time.monotonic()
                record = {
                    "partition": message.partition(),
                    "offset": message.offset(),
                    "key": b64(message.key()),
                    "value": b64(message.value()),
                    "headers": [[name, b64(value)] for name, value in (message.headers() or [])],
                    "received_at": time.time(),
                }
                if args.pretty:
                    out.write(pretty(message))
                else:
                    out.write(json.dumps(record, separators=(",", ":")))
                out.write("\n")
        out.flush()
    finally:
        consumer.close()
    elapsed = time.monotonic() - started
    print(
        f"consume: topic={args.topic} partitions={len(partitions)} records={count} "
        f"expected={args.expect} errors={errors} elapsed={elapsed:.2f}s",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
