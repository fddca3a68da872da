#!/usr/bin/env python3
"""How many QoS 1 messages does a broker have out to a subscriber without its PUBACK?

MQTT bounds it: by the subscriber's Receive Maximum (MQTT 5) or the broker's own limit
(mosquitto: max_inflight_messages). kedge's redelivery window must cover what the broker may
resend after a crash, so this matters (docs/ARCHITECTURE.md §9).

Starts mosquitto on a free loopback port with max_inflight_messages 5, subscribes at QoS 1
with Receive Maximum 5, publishes 300 messages, and counts the subscriber's unacknowledged
messages twice: once never acknowledging, once acknowledging one message per 10 ms.

    python3 tests/brokers/inflight_probe.py [path/to/mosquitto]

Standard library only; nothing leaves 127.0.0.1.
"""
import socket
import struct
import subprocess
import sys
import tempfile
import time

from mqtt_wire import packet, remaining_length, split, string

LIMIT = 5
MESSAGES = 300


def connect(port, client_id, v5):
    s = socket.create_connection(("127.0.0.1", port))
    if v5:
        props = b"\x21" + struct.pack(">H", LIMIT)  # Receive Maximum
        body = string(b"MQTT") + b"\x05\x02\x00\x3c" + remaining_length(len(props)) + props
    else:
        body = string(b"MQTT") + b"\x04\x02\x00\x3c"
    s.sendall(packet(0x10, body + string(client_id)))
    s.recv(64)
    return s


def probe(port, v5, ack_every):
    sub = connect(port, b"probe-sub-%d-%d" % (v5, ack_every is not None), v5)
    sub.sendall(packet(0x82, b"\x00\x01" + (b"\x00" if v5 else b"") + string(b"probe") + b"\x01"))
    time.sleep(0.3)
    sub.recv(64)
    pub = connect(port, b"probe-pub", v5)
    for i in range(MESSAGES):
        props = b"\x00" if v5 else b""
        pub.sendall(packet(0x32, string(b"probe") + struct.pack(">H", i + 1) + props + b"m%d" % i))
    sub.settimeout(2)
    received, acked, most, pending, buf = 0, 0, 0, [], b""
    try:
        while True:
            got, buf = split(buf + sub.recv(65536))
            for first, body in got:
                if first >> 4 == 3:
                    topic_len = struct.unpack(">H", body[:2])[0]
                    pending.append(body[2 + topic_len:4 + topic_len])
                    received += 1
            most = max(most, received - acked)
            if ack_every is not None and pending:
                sub.sendall(packet(0x40, pending.pop(0)))
                acked += 1
                time.sleep(ack_every)
    except socket.timeout:
        pass
    sub.close()
    pub.close()
    return received, most


def main():
    mosquitto = sys.argv[1] if len(sys.argv) > 1 else "mosquitto"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.NamedTemporaryFile("w", suffix=".conf") as conf:
        conf.write(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                   f"max_queued_messages 100000\nmax_inflight_messages {LIMIT}\n")
        conf.flush()
        broker = subprocess.Popen([mosquitto, "-c", conf.name], stderr=subprocess.DEVNULL)
        try:
            time.sleep(0.5)
            version = subprocess.run([mosquitto, "-h"], capture_output=True, text=True).stdout.split("\n")[0]
            print(f"{version.strip()}; limit {LIMIT} (max_inflight_messages, and Receive Maximum at MQTT 5)")
            for v5 in (False, True):
                for ack_every in (None, 0.01):
                    received, most = probe(port, v5, ack_every)
                    how = "never acknowledging" if ack_every is None else "acknowledging one per 10 ms"
                    print(f"  MQTT {'5' if v5 else '3.1.1'}, {how}: {received} received, "
                          f"at most {most} unacknowledged at once")
        finally:
            broker.terminate()
            broker.wait()


if __name__ == "__main__":
    main()
