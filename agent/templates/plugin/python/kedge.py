"""Conveniences over the bindings componentize-py generates for kedge plugins.

Written by `kedge plugin new --lang python`; kedge's plugins/API-python.md describes them. The
generated types stay available as `wit_world.imports.types`.
"""

from wit_world.imports import types


class Fail(Exception):
    """Raised from a handler given to `each`: that event alone goes to the dead-letter topic,
    with the message as its reason."""


def each(batch, handle):
    """Exactly one verdict per event, in order: `handle(event)` returns a verdict, or None to
    keep the event; raising Fail(reason) fails that event alone. Any other exception fails the
    whole call (every event of it is dead-lettered)."""
    verdicts = []
    for event in batch:
        try:
            verdict = handle(event)
        except Fail as e:
            verdict = types.Verdict_Fail(str(e))
        verdicts.append(types.Verdict_Keep() if verdict is None else verdict)
    return verdicts


def keep():
    return types.Verdict_Keep()


def drop():
    return types.Verdict_Drop()


def route(topic):
    return types.Verdict_Route(topic)


def replace(*outputs):
    return types.Verdict_Replace(list(outputs))


def header(name, value):
    """A header; a str value is encoded as UTF-8."""
    return types.Header(name, value.encode() if isinstance(value, str) else value)


def output_from(event, value=None, topic=None, headers=None):
    """A copy of `event` as an output: its key, headers (the MQTT user properties) and
    timestamp, with `value`, `topic` or `headers` replaced where given. A topic left None is
    kedge's to keep: the one the event is bound for."""
    return types.Output(
        topic=topic,
        key=event.key,
        value=event.value if value is None else value,
        headers=list(event.headers) if headers is None else headers,
        timestamp_ms=event.timestamp_ms,
    )


def with_header(headers, name, value):
    """`headers` with every header `name` replaced by one with `value` (added at the end if
    there was none)."""
    new = header(name, value)
    out, placed = [], False
    for h in headers:
        if h.name != name:
            out.append(h)
        elif not placed:
            out.append(new)
            placed = True
    return out if placed else out + [new]


def duration(text):
    """A config duration, a number and a unit (ms, s, m or h: "250ms", "10s"), in seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    for unit in ("ms", "s", "m", "h"):
        if text.endswith(unit):
            number = text[: -len(unit)].strip()
            try:
                seconds = float(number) * units[unit]
            except ValueError:
                break
            if seconds >= 0 and seconds != float("inf"):
                return seconds
            break
    raise ValueError(f'expected a duration with a unit: ms, s, m or h (e.g. "10s"), got {text!r}')
