"""{{name}}: a kedge transform plugin in Python (`kedge plugin new`).

It adds the MQTT topic each JSON reading came from as member `subject` (config `field`
renames it), drops empty readings, and sends readings that are not JSON objects to the
dead-letter topic. Change `reading` to do what you need.

kedge.py holds the conveniences used here; the API: kedge's plugins/API-python.md; the
contract: wit/transform.wit.
"""

import json

import kedge
import wit_world
from kedge import Fail
from wit_world.imports import host

_field = "subject"


class WitWorld(wit_world.WitWorld):
    def init(self, config):
        """Runs once per instance with the [plugin.config] table as (key, value) pairs;
        raising componentize_py_types.Err(types.PluginError(...)) refuses the plugin."""
        global _field
        _field = dict(config).get("field", "subject")

    def process(self, info, batch):
        """Returns exactly one verdict per event, in order: kedge.each does the loop."""
        empty = sum(1 for event in batch if not event.value)
        if empty:
            host.counter_add("empty", empty)
        return kedge.each(batch, lambda event: reading(info, event))


def reading(info, event):
    if not event.value:
        return kedge.drop()
    try:
        doc = json.loads(event.value)
    except ValueError as e:
        raise Fail(f"invalid JSON: {e}")
    if not isinstance(doc, dict):
        raise Fail("the reading is not a JSON object")
    doc[_field] = info.subject
    value = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()
    # Key, headers and timestamp from the event; the topic left to kedge, which keeps the one
    # the event is bound for.
    return kedge.replace(kedge.output_from(event, value=value))
