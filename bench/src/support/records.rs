//! The records both sides send, generated once per benchmark and read by each side from the same
//! file (on tmpfs), in blocks: byte-identical records, no per-side generator cost, and no side
//! holds all of them in memory.
//!
//! Layout: fixed-size entries of `KEY_BYTES` key bytes followed by the value, no framing.

use std::io::Write;
use std::path::Path;

/// Keys are `dev-0000` … `dev-0999`: 1,000 devices, spread over the partitions by murmur2.
pub const KEY_BYTES: usize = 8;
/// Distinct keys.
pub const DEVICES: u64 = 1000;
/// Entries per block read (both sides read the same block size).
pub const BLOCK_RECORDS: usize = 4096;

/// Writes `count` records with `value_bytes`-byte values to `path`.
pub fn generate(path: &Path, count: u64, value_bytes: usize) {
    let file = std::fs::File::create(path).expect("create the records file");
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    for n in 0..count {
        let key = format!("dev-{:04}", n % DEVICES);
        debug_assert_eq!(key.len(), KEY_BYTES);
        out.write_all(key.as_bytes()).expect("write records");
        out.write_all(&reading(n, &mut rng, value_bytes))
            .expect("write records");
    }
    out.flush().expect("write records");
}

/// A sensor reading of exactly `size` bytes: JSON with changing numbers, padded with letters,
/// compressible like real telemetry (the generator of `queue-bench`).
pub fn reading(n: u64, rng: &mut u64, size: usize) -> Vec<u8> {
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    let mut s = format!(
        r#"{{"n":{n},"device":"dev-{:04}","temp":{}.{},"hum":{},"volt":3.{},"status":"ok","note":""#,
        n % DEVICES,
        15 + *rng % 20,
        *rng % 10,
        30 + (*rng >> 8) % 60,
        (*rng >> 16) % 1000
    );
    while s.len() < size.saturating_sub(2) {
        s.push(char::from(b'a' + ((*rng >> (s.len() % 50)) % 26) as u8));
    }
    s.push_str(r#""}"#);
    let mut v = s.into_bytes();
    v.truncate(size);
    v
}
