//! The `list<event>` argument of `process`, lowered into the plugin's memory, in one of two ways
//! that store the same bytes through the same guest allocations in the same order:
//!
//! - [`Lowering::Derived`], always built: the events as borrowed records (`EventRef`) whose
//!   lowering wasmtime's derive macros generate, as they do for the bindings' own `Event`. It
//!   uses wasmtime's public API only: wasmtime keeps what its macros generate in step with its
//!   canonical ABI, and a change to the API it uses fails the build instead of storing wrong
//!   bytes.
//! - `Lowering::ByHand`, with the cargo feature `hand-lowering` (off by default, see
//!   agent/Cargo.toml): `Batch`. wasmtime 48's derived lowering looks the instance's memory up
//!   again for every field it stores (`LowerContext::get` → `Instance::options_memory_mut`):
//!   about 18 lookups per event with one header, a quarter of the host's time per record in
//!   plugin-bench (bench/README.md). `Batch` takes the memory once for all of a batch's stores
//!   and copies: first every `realloc` call (each may grow, and so move, the memory), then every
//!   write. It implements wasmtime's `ComponentType` and `Lower` by hand with wasmtime's
//!   `__internal` API, which may change in any release. With the feature on, the tests compare
//!   the guest memory both ways leave, byte for byte: after a wasmtime upgrade they say whether
//!   `Batch` still matches the new version's canonical ABI (ARCHITECTURE.md §5).
//!
//! `Plugin::process` uses [`Lowering::HOT`]. The events are read through [`WitEvent`], so that
//! the pipeline lowers its own events (`event::Event`, whose payloads are `Bytes`) straight from
//! where they are, without first copying each into a WIT `Event`.

use wasmtime::Store;
use wasmtime::component::{ComponentNamedList, ComponentType, Func, Lift, Lower};

use super::host;
use crate::event;

#[cfg(feature = "hand-lowering")]
pub use by_hand::Batch;

/// How `process`'s events get into the plugin's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lowering {
    /// wasmtime's derived lowering, of borrowed records. With `hand-lowering` only the tests
    /// choose it, to hold the two to the same bytes.
    #[cfg_attr(
        all(feature = "hand-lowering", not(test)),
        expect(dead_code, reason = "the tests compare it with the hand lowering")
    )]
    Derived,
    /// kedge's own, [`Batch`].
    #[cfg(feature = "hand-lowering")]
    ByHand,
}

impl Lowering {
    /// The lowering `Plugin::process` uses: kedge's own when it is built.
    #[cfg(feature = "hand-lowering")]
    pub const HOT: Lowering = Lowering::ByHand;
    /// The lowering `Plugin::process` uses: wasmtime's, since kedge's own is not built.
    #[cfg(not(feature = "hand-lowering"))]
    pub const HOT: Lowering = Lowering::Derived;
}

/// Calls `func`, a plugin's `process` (or, in the tests, a function taking the same arguments),
/// with `info` (the `batch-info` of the plugin's contract version) and `events` lowered the
/// `lowering` way; `R` is what it returns. The call checks `func`'s type against the arguments'
/// either way.
pub fn call<T: 'static, I: ComponentType + Lower, E: WitEvent, R: ComponentNamedList + Lift>(
    func: Func,
    store: &mut Store<T>,
    info: &I,
    events: &[E],
    lowering: Lowering,
) -> wasmtime::Result<R> {
    match lowering {
        Lowering::Derived => {
            // All the batch's headers in one vector, each event's a slice of it: two host
            // allocations per call, none per event.
            let headers: Vec<HeaderRef<'_>> = events
                .iter()
                .flat_map(WitEvent::headers)
                .map(|(name, value)| HeaderRef { name, value })
                .collect();
            let mut rest = headers.as_slice();
            let batch: Vec<EventRef<'_>> = events
                .iter()
                .map(|event| {
                    let (own, after) = rest.split_at(event.headers().len());
                    rest = after;
                    EventRef {
                        key: event.key(),
                        value: event.value(),
                        headers: own,
                        timestamp_ms: event.timestamp_ms(),
                    }
                })
                .collect();
            func.typed::<(&I, &[EventRef<'_>]), R>(&*store)?
                .call(store, (info, &batch))
        }
        #[cfg(feature = "hand-lowering")]
        Lowering::ByHand => func
            .typed::<(&I, Batch<'_, E>), R>(&*store)?
            .call(store, (info, Batch(events))),
    }
}

/// The WIT `header`, borrowed.
#[derive(ComponentType, Lower)]
#[component(record)]
struct HeaderRef<'a> {
    name: &'a str,
    value: &'a [u8],
}

/// The WIT `event`, borrowed.
#[derive(ComponentType, Lower)]
#[component(record)]
struct EventRef<'a> {
    key: Option<&'a [u8]>,
    value: &'a [u8],
    headers: &'a [HeaderRef<'a>],
    #[component(name = "timestamp-ms")]
    timestamp_ms: i64,
}

/// An event as `process` hands it to a plugin (the WIT `event` record).
pub trait WitEvent: Sync {
    /// The partitioning key, if set.
    fn key(&self) -> Option<&[u8]>;
    /// The payload.
    fn value(&self) -> &[u8];
    /// The headers: names and values, the same ones each time (they are walked twice).
    fn headers(&self) -> impl ExactSizeIterator<Item = (&str, &[u8])>;
    /// Receive time, milliseconds since the Unix epoch.
    fn timestamp_ms(&self) -> i64;
}

impl WitEvent for host::Event {
    fn key(&self) -> Option<&[u8]> {
        self.key.as_deref()
    }

    fn value(&self) -> &[u8] {
        &self.value
    }

    fn headers(&self) -> impl ExactSizeIterator<Item = (&str, &[u8])> {
        self.headers
            .iter()
            .map(|h| (h.name.as_str(), h.value.as_slice()))
    }

    fn timestamp_ms(&self) -> i64 {
        self.timestamp_ms
    }
}

impl WitEvent for event::Event {
    fn key(&self) -> Option<&[u8]> {
        self.key.as_deref()
    }

    fn value(&self) -> &[u8] {
        &self.payload
    }

    fn headers(&self) -> impl ExactSizeIterator<Item = (&str, &[u8])> {
        self.headers.iter().map(|h| (h.name.as_str(), &h.value[..]))
    }

    fn timestamp_ms(&self) -> i64 {
        self.timestamp_ms
    }
}

impl<E: WitEvent> WitEvent for &E {
    fn key(&self) -> Option<&[u8]> {
        (**self).key()
    }

    fn value(&self) -> &[u8] {
        (**self).value()
    }

    fn headers(&self) -> impl ExactSizeIterator<Item = (&str, &[u8])> {
        (**self).headers()
    }

    fn timestamp_ms(&self) -> i64 {
        (**self).timestamp_ms()
    }
}

/// kedge's own lowering of the batch (see the module's documentation).
#[cfg(feature = "hand-lowering")]
mod by_hand {
    use std::mem::MaybeUninit;

    use wasmtime::ValRaw;
    use wasmtime::component::__internal::wasmtime_environ::component::StringEncoding;
    use wasmtime::component::__internal::{
        CanonicalAbiInfo, InstanceType, InterfaceType, LowerContext,
    };
    use wasmtime::component::{ComponentType, Lower};

    use super::WitEvent;
    use crate::host::Event;

    /// Canonical layout of `event` (wit/transform.wit): `key: option<list<u8>>` (a discriminant
    /// byte, then pointer and length), `value`, `headers`, `timestamp-ms: s64`. The tests check it
    /// against the layout wasmtime derives.
    const EVENT_SIZE: usize = 40;
    const EVENT_ALIGN: u32 = 8;
    const EVENT_KEY: usize = 0;
    const EVENT_KEY_PAYLOAD: usize = 4;
    const EVENT_VALUE: usize = 12;
    const EVENT_HEADERS: usize = 20;
    const EVENT_TIMESTAMP: usize = 32;
    /// Canonical layout of `header`: `name: string`, `value: list<u8>`.
    const HEADER_SIZE: usize = 16;
    const HEADER_ALIGN: u32 = 4;
    const HEADER_NAME: usize = 0;
    const HEADER_VALUE: usize = 8;
    /// Longest string the canonical ABI can pass (the top bit of a length tags UTF-16).
    const MAX_STRING: usize = (1 << 31) - 1;

    /// A batch of events as `process` takes it: a `list<event>` with the component type of
    /// `&[Event]`, lowered with one memory lookup per batch instead of one per field.
    pub struct Batch<'a, E>(pub &'a [E]);

    // SAFETY: the lowered form is a pointer and a length, as for every list (`POINTER_PAIR`), and
    // the type check is the one of `[Event]`, whose canonical form this lowers.
    unsafe impl<E: WitEvent> ComponentType for Batch<'_, E> {
        type Lower = [ValRaw; 2];

        const ABI: CanonicalAbiInfo = CanonicalAbiInfo::POINTER_PAIR;

        fn typecheck(ty: &InterfaceType, types: &InstanceType<'_>) -> wasmtime::Result<()> {
            <[Event] as ComponentType>::typecheck(ty, types)
        }
    }

    // SAFETY: both methods write the whole lowered form, or fail.
    unsafe impl<E: WitEvent> Lower for Batch<'_, E> {
        fn linear_lower_to_flat<T>(
            &self,
            cx: &mut LowerContext<'_, T>,
            _ty: InterfaceType,
            dst: &mut MaybeUninit<[ValRaw; 2]>,
        ) -> wasmtime::Result<()> {
            let (ptr, len) = self.store(cx)?;
            // Pointers and lengths travel as i64 in the flat form, as wasmtime's own lists do.
            dst.write([ValRaw::i64(ptr as i64), ValRaw::i64(len as i64)]);
            Ok(())
        }

        fn linear_lower_to_memory<T>(
            &self,
            cx: &mut LowerContext<'_, T>,
            _ty: InterfaceType,
            offset: usize,
        ) -> wasmtime::Result<()> {
            let (ptr, len) = self.store(cx)?;
            put_pair(cx.as_slice_mut(), offset, ptr, len)
        }
    }

    impl<E: WitEvent> Batch<'_, E> {
        /// Allocates and fills the list and everything it points to; returns its address and length.
        fn store<T>(&self, cx: &mut LowerContext<'_, T>) -> wasmtime::Result<(usize, usize)> {
            let events = self.0;
            // Header names are copied as they are when the plugin takes UTF-8 strings (all of
            // kedge's example languages do); other encodings are transcoded by wasmtime's own
            // string lowering, in place, which stores the name's address itself.
            let utf8 = matches!(cx.options().string_encoding, StringEncoding::Utf8);
            // Every allocation, in the order the canonical ABI makes them (list, then per event its
            // key, value, header list, and per header its name and value), so that the plugin's
            // allocator sees the same calls as with wasmtime's lowering.
            let list = alloc(cx, EVENT_ALIGN, events.len(), EVENT_SIZE)?;
            let mut blocks = Vec::with_capacity(events.len() * 4);
            for event in events {
                if let Some(key) = event.key() {
                    blocks.push(alloc(cx, 1, key.len(), 1)?);
                }
                blocks.push(alloc(cx, 1, event.value().len(), 1)?);
                let headers = event.headers();
                let list = alloc(cx, HEADER_ALIGN, headers.len(), HEADER_SIZE)?;
                blocks.push(list);
                for (j, (name, value)) in headers.enumerate() {
                    if utf8 {
                        if name.len() > MAX_STRING {
                            wasmtime::bail!("header name of {} bytes too long", name.len());
                        }
                        blocks.push(alloc(cx, 1, name.len(), 1)?);
                    } else {
                        let at = list + j * HEADER_SIZE + HEADER_NAME;
                        name.linear_lower_to_memory(cx, InterfaceType::String, at)?;
                    }
                    blocks.push(alloc(cx, 1, value.len(), 1)?);
                }
            }
            // Then every write. `realloc` checked each block against the memory's size, and memory
            // only grows, so the slicing below cannot fail for blocks from `alloc`.
            let memory = cx.as_slice_mut();
            let mut blocks = blocks.into_iter();
            let mut next = || blocks.next().expect("one block per list");
            for (i, event) in events.iter().enumerate() {
                let at = list + i * EVENT_SIZE;
                match event.key() {
                    None => memory[at + EVENT_KEY] = 0,
                    Some(key) => {
                        memory[at + EVENT_KEY] = 1;
                        put_bytes(memory, at + EVENT_KEY_PAYLOAD, next(), key)?;
                    }
                }
                put_bytes(memory, at + EVENT_VALUE, next(), event.value())?;
                let headers = event.headers();
                let list = next();
                put_pair(memory, at + EVENT_HEADERS, list, headers.len())?;
                for (j, (name, value)) in headers.enumerate() {
                    let h = list + j * HEADER_SIZE;
                    if utf8 {
                        put_bytes(memory, h + HEADER_NAME, next(), name.as_bytes())?;
                    }
                    put_bytes(memory, h + HEADER_VALUE, next(), value)?;
                }
                memory[at + EVENT_TIMESTAMP..][..8]
                    .copy_from_slice(&event.timestamp_ms().to_le_bytes());
            }
            Ok((list, events.len()))
        }
    }

    /// Asks the plugin for a block for `len` elements of `size` bytes.
    fn alloc<T>(
        cx: &mut LowerContext<'_, T>,
        align: u32,
        len: usize,
        size: usize,
    ) -> wasmtime::Result<usize> {
        let bytes = len
            .checked_mul(size)
            .ok_or_else(|| wasmtime::format_err!("size overflow copying a list"))?;
        cx.realloc(0, 0, align, bytes)
    }

    /// Copies `bytes` to `block` and stores the block's address and length at `at`.
    fn put_bytes(memory: &mut [u8], at: usize, block: usize, bytes: &[u8]) -> wasmtime::Result<()> {
        memory[block..][..bytes.len()].copy_from_slice(bytes);
        put_pair(memory, at, block, bytes.len())
    }

    /// Stores a pointer and a length (32-bit little-endian) at `at`.
    fn put_pair(memory: &mut [u8], at: usize, ptr: usize, len: usize) -> wasmtime::Result<()> {
        memory[at..][..4].copy_from_slice(&u32::try_from(ptr)?.to_le_bytes());
        memory[at + 4..][..4].copy_from_slice(&u32::try_from(len)?.to_le_bytes());
        Ok(())
    }

    #[cfg(test)]
    mod tests {
        use std::sync::LazyLock;

        use proptest::prelude::*;
        use wasm_encoder::{
            BlockType, CanonicalOption, CodeSection, ComponentBuilder, ComponentExportKind,
            ComponentValType, ConstExpr, ExportKind, ExportSection, Function, FunctionSection,
            GlobalSection, GlobalType, Instruction, MemArg, MemorySection, MemoryType, Module,
            PrimitiveValType, TypeSection, ValType,
        };
        use wasmtime::Store;
        use wasmtime::component::{Component, Linker};

        use super::*;
        use crate::engine::{self, Target};
        use crate::host::{BatchInfo, Header};
        use crate::lower::{Lowering, call};

        /// Field offsets as wasmtime's derive computes them.
        fn offsets(fields: &[CanonicalAbiInfo]) -> Vec<usize> {
            let mut offset = 0;
            fields
                .iter()
                .map(|f| f.next_field32_size(&mut offset))
                .collect()
        }

        #[test]
        fn layouts_match_the_derived_ones() {
            assert_eq!(<Event as ComponentType>::SIZE32, EVENT_SIZE);
            assert_eq!(<Event as ComponentType>::ALIGN32, EVENT_ALIGN);
            assert_eq!(
                offsets(&[
                    <Option<Vec<u8>> as ComponentType>::ABI,
                    <Vec<u8> as ComponentType>::ABI,
                    <Vec<Header> as ComponentType>::ABI,
                    <i64 as ComponentType>::ABI,
                ]),
                [EVENT_KEY, EVENT_VALUE, EVENT_HEADERS, EVENT_TIMESTAMP]
            );
            // The option's payload follows its discriminant, aligned for a pointer.
            assert_eq!(
                offsets(&[<u8 as ComponentType>::ABI, <Vec<u8> as ComponentType>::ABI]),
                [EVENT_KEY, EVENT_KEY_PAYLOAD]
            );
            assert_eq!(<Header as ComponentType>::SIZE32, HEADER_SIZE);
            assert_eq!(<Header as ComponentType>::ALIGN32, HEADER_ALIGN);
            assert_eq!(
                offsets(&[
                    <String as ComponentType>::ABI,
                    <Vec<u8> as ComponentType>::ABI
                ]),
                [HEADER_NAME, HEADER_VALUE]
            );
        }

        /// Where the dump component's allocations start: below is its return area.
        const HEAP: i32 = 16;

        /// A component exporting `process: func(info: batch-info, batch: list<event>) ->
        /// list<u8>` lifted with `encoding`, whose `realloc` hands out memory from [`HEAP`] up,
        /// in order, growing the memory as needed, and whose `process` returns all the memory
        /// handed out: whatever a lowering stored, and where.
        fn dump_component(encoding: CanonicalOption) -> Vec<u8> {
            let mut types = TypeSection::new();
            types.ty().function([ValType::I32; 4], [ValType::I32]);
            let mut process_params = vec![ValType::I32; 10];
            process_params.extend([ValType::I64, ValType::I32, ValType::I32]);
            types.ty().function(process_params, [ValType::I32]);
            let mut functions = FunctionSection::new();
            functions.function(0).function(1);
            let mut memories = MemorySection::new();
            memories.memory(MemoryType {
                minimum: 1,
                maximum: None,
                memory64: false,
                shared: false,
                page_size_log2: None,
            });
            let mut globals = GlobalSection::new();
            let top = GlobalType {
                val_type: ValType::I32,
                mutable: true,
                shared: false,
            };
            globals.global(top, &ConstExpr::i32_const(HEAP));
            let mut exports = ExportSection::new();
            exports
                .export("memory", ExportKind::Memory, 0)
                .export("realloc", ExportKind::Func, 0)
                .export("process", ExportKind::Func, 1);
            use Instruction as I;
            // realloc(old, old_size, align, new_size): shrinks in place, else takes the next
            // aligned block (locals 4 and 5: its start and end) and copies the old one into it.
            let mut realloc = Function::new([(2, ValType::I32)]);
            for i in [
                I::LocalGet(3),
                I::LocalGet(1),
                I::I32LeU,
                I::If(BlockType::Empty),
                I::LocalGet(0),
                I::Return,
                I::End,
                I::GlobalGet(0),
                I::LocalGet(2),
                I::I32Add,
                I::I32Const(1),
                I::I32Sub,
                I::I32Const(0),
                I::LocalGet(2),
                I::I32Sub,
                I::I32And,
                I::LocalTee(4),
                I::LocalGet(3),
                I::I32Add,
                I::LocalTee(5),
                I::MemorySize(0),
                I::I32Const(16),
                I::I32Shl,
                I::I32GtU,
                I::If(BlockType::Empty),
                I::LocalGet(5),
                I::MemorySize(0),
                I::I32Const(16),
                I::I32Shl,
                I::I32Sub,
                I::I32Const(0xffff),
                I::I32Add,
                I::I32Const(16),
                I::I32ShrU,
                I::MemoryGrow(0),
                I::I32Const(-1),
                I::I32Eq,
                I::If(BlockType::Empty),
                I::Unreachable,
                I::End,
                I::End,
                I::LocalGet(5),
                I::GlobalSet(0),
                I::LocalGet(4),
                I::LocalGet(0),
                I::LocalGet(1),
                I::MemoryCopy {
                    src_mem: 0,
                    dst_mem: 0,
                },
                I::LocalGet(4),
                I::End,
            ] {
                realloc.instruction(&i);
            }
            // process(…) returns a pointer to (HEAP, top - HEAP), the list<u8> of its result.
            let mut process = Function::new([]);
            let at = |offset| {
                I::I32Store(MemArg {
                    offset,
                    align: 2,
                    memory_index: 0,
                })
            };
            for i in [
                I::I32Const(8),
                I::I32Const(HEAP),
                at(0),
                I::I32Const(8),
                I::GlobalGet(0),
                I::I32Const(HEAP),
                I::I32Sub,
                at(4),
                I::I32Const(8),
                I::End,
            ] {
                process.instruction(&i);
            }
            let mut code = CodeSection::new();
            code.function(&realloc).function(&process);
            let mut module = Module::new();
            module
                .section(&types)
                .section(&functions)
                .section(&memories)
                .section(&globals)
                .section(&exports)
                .section(&code);

            let mut c = ComponentBuilder::default();
            let module = c.core_module(None, &module);
            let instance = c.core_instantiate(None, module, []);
            let memory = c.core_alias_export(None, instance, "memory", ExportKind::Memory);
            let realloc = c.core_alias_export(None, instance, "realloc", ExportKind::Func);
            let process = c.core_alias_export(None, instance, "process", ExportKind::Func);
            // wit/transform.wit's types; records must be exported to appear in an export's type.
            let string = ComponentValType::Primitive(PrimitiveValType::String);
            let s64 = ComponentValType::Primitive(PrimitiveValType::S64);
            let (bytes, t) = c.type_defined(None);
            t.list(PrimitiveValType::U8);
            let bytes = ComponentValType::Type(bytes);
            let (header, t) = c.type_defined(None);
            t.record([("name", string), ("value", bytes)]);
            let header = c.export("header", ComponentExportKind::Type, header, None);
            let (headers, t) = c.type_defined(None);
            t.list(ComponentValType::Type(header));
            let (key, t) = c.type_defined(None);
            t.option(bytes);
            let (event, t) = c.type_defined(None);
            t.record([
                ("key", ComponentValType::Type(key)),
                ("value", bytes),
                ("headers", ComponentValType::Type(headers)),
                ("timestamp-ms", s64),
            ]);
            let event = c.export("event", ComponentExportKind::Type, event, None);
            let (events, t) = c.type_defined(None);
            t.list(ComponentValType::Type(event));
            let (topic, t) = c.type_defined(None);
            t.option(string);
            let (info, t) = c.type_defined(None);
            t.record([
                ("source", string),
                ("subject", string),
                ("default-topic", ComponentValType::Type(topic)),
                ("topic", ComponentValType::Type(topic)),
                ("now-ms", s64),
            ]);
            let info = c.export("batch-info", ComponentExportKind::Type, info, None);
            let (signature, mut f) = c.type_function(None);
            f.params([
                ("info", ComponentValType::Type(info)),
                ("batch", ComponentValType::Type(events)),
            ])
            .result(Some(bytes));
            let options = [
                encoding,
                CanonicalOption::Memory(memory),
                CanonicalOption::Realloc(realloc),
            ];
            let process = c.lift_func(None, process, signature, options);
            c.export("process", ComponentExportKind::Func, process, None);
            c.finish()
        }

        /// The guest memory `lowering` leaves when it lowers `info` and `events` into a fresh
        /// instance of `component`.
        fn lowered(
            component: &Component,
            info: &BatchInfo,
            events: &[Event],
            lowering: Lowering,
        ) -> Vec<u8> {
            let mut store = Store::new(component.engine(), ());
            store.set_epoch_deadline(u64::MAX);
            let instance = Linker::new(component.engine())
                .instantiate(&mut store, component)
                .unwrap();
            let process = instance.get_func(&mut store, "process").unwrap();
            let (memory,): (Vec<u8>,) = call(process, &mut store, info, events, lowering).unwrap();
            memory
        }

        fn header(name: &str, value: &[u8]) -> Header {
            Header {
                name: name.to_owned(),
                value: value.to_vec(),
            }
        }

        /// Strings a plugin may see in every encoding: ASCII, Latin-1, beyond Latin-1 (which
        /// makes compact UTF-16 start over in UTF-16) and beyond the BMP (two UTF-16 units).
        const NAMES: [&str; 5] = ["", "unit", "größe", "µ→x", "t😀"];

        /// A value larger than the dump component's first page, so that its `realloc` grows
        /// the memory while the batch is lowered.
        fn vector() -> (BatchInfo, Vec<Event>) {
            let info = BatchInfo {
                source: "mqtt".into(),
                subject: "sensors/größe".into(),
                default_topic: Some("t".into()),
                topic: Some("lab".into()),
                now_ms: -1,
            };
            let events = vec![
                Event {
                    key: None,
                    value: Vec::new(),
                    headers: Vec::new(),
                    timestamp_ms: i64::MIN,
                },
                Event {
                    key: Some(b"k".to_vec()),
                    value: vec![0xa5; 70_000],
                    headers: NAMES.iter().map(|n| header(n, n.as_bytes())).collect(),
                    timestamp_ms: i64::MAX,
                },
                Event {
                    key: Some(Vec::new()),
                    value: b"{\"t\":21.5}".to_vec(),
                    headers: vec![header("unit", b""), header("", b"\0\xff")],
                    timestamp_ms: 1_700_000_000_000,
                },
            ];
            (info, events)
        }

        /// The dump component for each string encoding, compiled once for all the tests.
        static COMPONENTS: LazyLock<Vec<(CanonicalOption, Component)>> = LazyLock::new(|| {
            let engine = engine::build(&Target::Host).unwrap();
            [
                CanonicalOption::UTF8,
                CanonicalOption::UTF16,
                CanonicalOption::CompactUTF16,
            ]
            .into_iter()
            .map(|encoding| {
                let component = Component::new(&engine, dump_component(encoding)).unwrap();
                (encoding, component)
            })
            .collect()
        });

        #[test]
        fn both_lowerings_leave_the_same_bytes_in_the_plugin_s_memory() {
            let (info, events) = vector();
            for (encoding, component) in COMPONENTS.iter() {
                let derived = lowered(component, &info, &events, Lowering::Derived);
                let by_hand = lowered(component, &info, &events, Lowering::ByHand);
                assert!(
                    derived.len() > 70_000,
                    "{encoding:?}: {} bytes",
                    derived.len()
                );
                assert!(derived == by_hand, "{encoding:?}: the lowerings differ");
            }
        }

        fn arb_event() -> impl Strategy<Value = Event> {
            let header = (
                prop::sample::select(NAMES.to_vec()),
                "\\PC{0,6}",
                prop::collection::vec(any::<u8>(), 0..8),
            )
                .prop_map(|(name, more, value)| Header {
                    name: format!("{name}{more}"),
                    value,
                });
            (
                prop::option::of(prop::collection::vec(any::<u8>(), 0..16)),
                prop::collection::vec(any::<u8>(), 0..256),
                prop::collection::vec(header, 0..4),
                any::<i64>(),
            )
                .prop_map(|(key, value, headers, timestamp_ms)| Event {
                    key,
                    value,
                    headers,
                    timestamp_ms,
                })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(64))]

            #[test]
            fn both_lowerings_leave_the_same_bytes_for_any_batch(
                events in prop::collection::vec(arb_event(), 0..24),
                subject in "\\PC{0,12}",
                default_topic in prop::option::of("[a-z.]{0,8}"),
                topic in prop::option::of("[a-z.]{0,8}"),
                now_ms in any::<i64>(),
            ) {
                let info = BatchInfo {
                    source: "mqtt".into(),
                    subject,
                    default_topic,
                    topic,
                    now_ms,
                };
                for (encoding, component) in COMPONENTS.iter() {
                    let derived = lowered(component, &info, &events, Lowering::Derived);
                    let by_hand = lowered(component, &info, &events, Lowering::ByHand);
                    prop_assert!(derived == by_hand, "{:?}: the lowerings differ", encoding);
                }
            }
        }
    }
}
