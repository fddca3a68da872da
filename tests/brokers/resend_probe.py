#!/usr/bin/env python3
"""Does an MQTT 3.1.1 broker resend, on reconnect, what a persistent session had not acknowledged?

MQTT 3.1.1 §4.4 [MQTT-4.4.0-1]: when a client reconnects with CleanSession 0, the server MUST
resend unacknowledged QoS 1 and 2 PUBLISH packets with their original packet ids. kedge relies on
it: a message journaled but not acknowledged before a crash comes back, and one not journaled
comes back too (docs/ARCHITECTURE.md §9).

A subscriber with CleanSession 0 subscribes at QoS 1, receives 10 messages without acknowledging
them, drops the connection (RST, as a kill -9 with unread data does; FIN with --fin), reconnects
with CleanSession 0 and prints what the broker resends: packet ids and DUP flags, which
MQTT-3.3.1-1 requires on a resend.

    python3 tests/brokers/resend_probe.py PORT [--fin]    # a broker listening on 127.0.0.1:PORT

Standard library only; nothing leaves 127.0.0.1.
"""
import socket
import struct
import sys
import time
import uuid

from mqtt_wire import packet, split, string


def connect(port, client_id, clean):
    s = socket.create_connection(("127.0.0.1", port))
    flags = b"\x02" if clean else b"\x00"
    s.sendall(packet(0x10, string(b"MQTT") + b"\x04" + flags + b"\x00\x3c" + string(client_id)))
    connack = s.recv(4)
    return s, connack[2] & 1


def publishes(s, seconds):
    """(packet id, DUP, payload) of the PUBLISHes that arrive within `seconds`."""
    s.settimeout(seconds)
    buf, got = b"", []
    try:
        while True:
            data = s.recv(65536)
            if not data:
                break
            packets, buf = split(buf + data)
            for first, body in packets:
                if first >> 4 == 3:
                    topic_len = struct.unpack(">H", body[:2])[0]
                    pkid = struct.unpack(">H", body[2 + topic_len:4 + topic_len])[0]
                    got.append((pkid, bool(first & 8), body[4 + topic_len:].decode()))
    except socket.timeout:
        pass
    return got


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    port = int(sys.argv[1])
    fin = "--fin" in sys.argv[2:]
    run = uuid.uuid4().hex[:8].encode()
    topic = b"resend-probe/" + run
    sub_id = b"resend-probe-sub-" + run
    sub, _ = connect(port, sub_id, clean=False)
    sub.sendall(packet(0x82, b"\x00\x01" + string(topic) + b"\x01"))
    time.sleep(0.3)
    sub.recv(16)
    pub, _ = connect(port, b"resend-probe-pub-" + run, clean=True)
    for i in range(10):
        pub.sendall(packet(0x32, string(topic) + struct.pack(">H", i + 1) + b"m%d" % i))
    first = publishes(sub, 1.5)
    print(f"first connection: {len(first)} messages received, none acknowledged: "
          + " ".join(f"{p}:{'DUP' if d else 'new'}:{m}" for p, d, m in first))
    if not fin:
        sub.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sub.close()
    time.sleep(0.5)
    sub, present = connect(port, sub_id, clean=False)
    again = publishes(sub, 2.0)
    print(f"reconnected ({'FIN' if fin else 'RST'}), session present {present}: {len(again)} resent: "
          + " ".join(f"{p}:{'DUP' if d else 'new'}:{m}" for p, d, m in again))
    for p, _, _ in again:
        sub.sendall(packet(0x40, struct.pack(">H", p)))
    # Leave no session behind.
    sub.close()
    sub, _ = connect(port, sub_id, clean=True)
    sub.sendall(packet(0xe0, b""))
    sub.close()
    pub.close()
    resent = "keeps" if len(again) == len(first) else "BREAKS"
    print(f"{resent} MQTT-4.4.0-1: {len(again)} of {len(first)} unacknowledged messages resent")
    if again:
        same = [p for p, _, _ in again] == [p for p, _, _ in first[:len(again)]]
        dup = all(d for _, d, _ in again)
        print(f"{'keeps' if dup else 'BREAKS'} MQTT-3.3.1-1: DUP {'set' if dup else 'not set'} on resends; "
              f"packet ids {'as before' if same else 'renumbered'}")


if __name__ == "__main__":
    main()
