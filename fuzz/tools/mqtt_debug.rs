//! Prints what the rumqttc codec makes of an mqtt_publish input (fuzz/fuzz_targets/mqtt_publish.rs
//! layout), for looking into a finding.
//!
//!   fuzz/target/x86_64-unknown-linux-gnu/release/mqtt_debug INPUT   (built by scripts/fuzz)
use bytes::BytesMut;
use tokio_util::codec::Decoder;

fn main() {
    let data = std::fs::read(std::env::args().nth(1).expect("input file")).unwrap();
    let (flags, max, piece) = (data[0], 16usize << (data[1] % 17), 1 + usize::from(data[2]));
    let stream = &data[3..];
    println!(
        "mqtt5 {} max {max} piece {piece} stream {:02x?}",
        flags & 1 == 1,
        stream
    );
    let mut buf = BytesMut::new();
    if flags & 1 == 1 {
        let mut c = rumqttc::v5::mqttbytes::v5::Codec::new(Some(max as u32), None);
        for part in stream.chunks(piece) {
            buf.extend_from_slice(part);
            loop {
                let before = buf.len();
                let r = c.decode(&mut buf);
                println!("  buffered {before} -> {}: {r:?}", buf.len());
                if !matches!(r, Ok(Some(_))) {
                    break;
                }
            }
        }
    } else {
        let mut c = rumqttc::mqttbytes::v4::Codec::new(max, max);
        for part in stream.chunks(piece) {
            buf.extend_from_slice(part);
            loop {
                let before = buf.len();
                let r = c.decode(&mut buf);
                println!("  buffered {before} -> {}: {r:?}", buf.len());
                if !matches!(r, Ok(Some(_))) {
                    break;
                }
            }
        }
    }
}
