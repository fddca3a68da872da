"""python-enrich: adds site facts from a lookup table to each JSON reading.

Config (from the plugin's `config` table in kedge.toml):
  sites     required; a JSON object mapping sensor id -> object of fields to add, e.g.
            {"t1": {"site": "plant-a", "floor": 2}}. A TOML table arrives as such a JSON string.
  id_field  optional; the reading's field holding the sensor id (default "sensor").

Per event:
  payload not UTF-8 JSON       -> fail("invalid JSON: ...")
  payload not a JSON object    -> fail("reading is not a JSON object")
  no/unknown/non-string id     -> keep
  known id                     -> replace with the reading plus the table's fields (they
                                  overwrite same-named fields), as compact JSON; key and
                                  headers are copied from the input, topic and timestamp
                                  left to the host.
"""

import json

import wit_world
from componentize_py_types import Err
from wit_world.imports import host, types

_sites: dict = {}
_id_field: str = "sensor"


def _encode(obj) -> bytes:
    # Compact, key order as read (reading's keys first, then added ones), UTF-8 unescaped:
    # the same bytes for the same input, every time.
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


class WitWorld(wit_world.WitWorld):
    def init(self, config):
        global _sites, _id_field
        cfg = dict(config)
        for name in cfg:
            if name not in ("sites", "id_field"):
                raise Err(types.PluginError(f"unknown config key {name!r} (expected sites, id_field)"))
        raw = cfg.get("sites")
        if raw is None:
            raise Err(types.PluginError("config key 'sites' is required"))
        try:
            sites = json.loads(raw)
        except ValueError as e:
            raise Err(types.PluginError(f"config 'sites' is not JSON: {e}"))
        if not isinstance(sites, dict) or not all(isinstance(v, dict) for v in sites.values()):
            raise Err(types.PluginError("config 'sites' must map sensor ids to objects"))
        _sites = sites
        _id_field = cfg.get("id_field", "sensor")
        host.log(host.Level.INFO, f"python-enrich: {len(sites)} sensors, id field {_id_field!r}")

    def process(self, info, batch):
        verdicts = []
        enriched = unknown = invalid = 0
        for event in batch:
            try:
                reading = json.loads(event.value.decode("utf-8"))
            except UnicodeDecodeError:
                verdicts.append(types.Verdict_Fail("invalid JSON: not UTF-8"))
                invalid += 1
                continue
            except json.JSONDecodeError as e:
                verdicts.append(
                    types.Verdict_Fail(f"invalid JSON: {e.msg} at line {e.lineno} column {e.colno}")
                )
                invalid += 1
                continue
            if not isinstance(reading, dict):
                verdicts.append(types.Verdict_Fail("reading is not a JSON object"))
                invalid += 1
                continue
            sensor = reading.get(_id_field)
            extra = _sites.get(sensor) if isinstance(sensor, str) else None
            if extra is None:
                verdicts.append(types.Verdict_Keep())
                unknown += 1
                continue
            reading.update(extra)
            out = types.Output(
                topic=None,
                key=event.key,
                value=_encode(reading),
                headers=event.headers,
                timestamp_ms=None,
            )
            verdicts.append(types.Verdict_Replace([out]))
            enriched += 1
        if enriched:
            host.counter_add("enriched", enriched)
        if unknown:
            host.counter_add("unknown_sensor", unknown)
        if invalid:
            host.counter_add("invalid", invalid)
        return verdicts
