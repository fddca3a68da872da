"""The few MQTT packet helpers the broker probes in this directory share (standard library)."""
import struct


def remaining_length(n):
    """MQTT's variable-length encoding of a packet's remaining length."""
    out = b""
    while True:
        b, n = n % 128, n // 128
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out


def packet(first, body):
    """A packet: its first byte, the remaining length, the body."""
    return bytes([first]) + remaining_length(len(body)) + body


def string(s):
    """A length-prefixed string."""
    return struct.pack(">H", len(s)) + s


def split(buf):
    """The whole packets at the start of `buf` as (first byte, body), and the rest."""
    out = []
    while len(buf) >= 2:
        length, mult, i = 0, 1, 1
        while True:
            if i >= len(buf):
                return out, buf
            length += (buf[i] & 127) * mult
            mult *= 128
            i += 1
            if not buf[i - 1] & 128:
                break
        if len(buf) < i + length:
            break
        out.append((buf[0], buf[i:i + length]))
        buf = buf[i + length:]
    return out, buf
