// Package export_wit_world is {{name}}, a kedge transform plugin in Go (`kedge plugin new`). It
// adds the MQTT topic each JSON reading came from as member `subject`, drops empty readings,
// and sends readings that are not JSON objects to the dead-letter topic. Change `eventVerdict`
// (and `Process`, which drops the empty ones) to do what you need.
//
// The rest of the module (package main, the WIT types and the host imports) is generated from
// wit/transform.wit by `wit-bindgen go` when build.sh runs; the contract is explained in
// kedge's wit/README.md, the generated API in kedge's plugins/API-go.md.
package export_wit_world

import (
	"bytes"
	"encoding/json"
	"fmt"
	"runtime"
	"runtime/debug"
	"runtime/metrics"

	witTypes "go.bytecodealliance.org/pkg/wit/types"
	host "wit_component/kedge_transform_host"
	types "wit_component/kedge_transform_types"
)

// The member the MQTT topic goes into (config `field`).
var field = "subject"

// --- The Go GC: never inside cabi_realloc ---------------------------------------------------
//
// kedge hands a batch over by calling the plugin's cabi_realloc once per string and list. A
// collection starting inside one of those calls reads the clock, which a component may not do
// there: the call traps and kedge recycles the instance. So automatic GC is off, and process
// collects at its start, between calls, when the heap has grown as GOGC=100 would allow. Keep
// these lines in any Go plugin for kedge.

const minGCHeap = 4 << 20 // collect no more often than every 4 MiB of growth

var (
	liveAfterGC uint64
	heapSample  = []metrics.Sample{
		{Name: "/memory/classes/heap/objects:bytes"},
	}
)

func init() {
	debug.SetGCPercent(-1)
}

func heapBytes() uint64 {
	metrics.Read(heapSample)
	return heapSample[0].Value.Uint64()
}

func collectBetweenCalls() {
	if heapBytes() > liveAfterGC+max(liveAfterGC, minGCHeap) {
		runtime.GC()
		liveAfterGC = heapBytes()
	}
}

// --- The exports -----------------------------------------------------------------------------

// Init runs once per instance with the plugin's [plugin.config] table (every value a string);
// an error refuses the plugin (`kedge check` reports it).
func Init(config []witTypes.Tuple2[string, string]) witTypes.Result[witTypes.Unit, types.PluginError] {
	field = "subject"
	for _, kv := range config {
		switch kv.F0 {
		case "field":
			field = kv.F1
		default:
			return witTypes.Err[witTypes.Unit](types.PluginError{
				Message: fmt.Sprintf("unknown config key %q (expected field)", kv.F0),
			})
		}
	}
	return witTypes.Ok[witTypes.Unit, types.PluginError](witTypes.Unit{})
}

// Process must return exactly one verdict per event, in order.
func Process(info types.BatchInfo, batch []types.Event) witTypes.Result[[]types.Verdict, types.PluginError] {
	collectBetweenCalls()
	verdicts := make([]types.Verdict, len(batch))
	var empty uint64
	for i, event := range batch {
		if len(event.Value) == 0 {
			empty++
			verdicts[i] = types.MakeVerdictDrop()
			continue
		}
		verdicts[i] = eventVerdict(info, event)
	}
	// One host call per counter and batch, not per event.
	if empty > 0 {
		host.CounterAdd("empty", empty)
	}
	return witTypes.Ok[[]types.Verdict, types.PluginError](verdicts)
}

// eventVerdict decides one event: keep, drop, route(topic), replace(outputs) or fail(reason).
func eventVerdict(info types.BatchInfo, event types.Event) types.Verdict {
	var reading map[string]json.RawMessage
	if err := json.Unmarshal(event.Value, &reading); err != nil || reading == nil {
		if _, wrongType := err.(*json.UnmarshalTypeError); err != nil && !wrongType {
			return types.MakeVerdictFail(fmt.Sprintf("invalid JSON: %v", err))
		}
		return types.MakeVerdictFail("the reading is not a JSON object")
	}
	subject, _ := json.Marshal(info.Subject)
	reading[field] = subject
	// Members in name order; `<`, `>` and `&` as they came, not escaped for HTML.
	var out bytes.Buffer
	encoder := json.NewEncoder(&out)
	encoder.SetEscapeHTML(false)
	if err := encoder.Encode(reading); err != nil {
		return types.MakeVerdictFail(err.Error())
	}
	value := bytes.TrimSuffix(out.Bytes(), []byte("\n"))
	// From the event: key, headers (the MQTT user properties) and timestamp stay; the topic
	// is left to kedge, which keeps the one the event is bound for.
	output := types.Output{
		Topic:       witTypes.None[string](),
		Key:         event.Key,
		Value:       value,
		Headers:     event.Headers,
		TimestampMs: witTypes.Some(event.TimestampMs),
	}
	return types.MakeVerdictReplace([]types.Output{output})
}
