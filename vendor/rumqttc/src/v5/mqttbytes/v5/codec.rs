// Modified for kedge (see KEDGE.md): skip the payload of a too large incoming publish.
use bytes::{Buf, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::{Error, Packet, PacketType, Publish};

/// MQTT v5 codec
///
/// An incoming packet whose *remaining length* (the packet size without its 2 to 5 bytes of
/// fixed header) exceeds `max_incoming_size` is an error, except a PUBLISH: that one is decoded
/// without its payload (see [`Publish::oversized`]) and the rest of its bytes are skipped as they
/// arrive, so it is never buffered whole.
#[derive(Debug, Clone)]
pub struct Codec {
    /// Maximum packet size allowed by client
    pub max_incoming_size: Option<u32>,
    /// Maximum packet size allowed by broker
    pub max_outgoing_size: Option<u32>,
    /// Bytes of an oversized publish still to be skipped
    discard: usize,
}

impl Codec {
    /// A codec with these limits (see the fields)
    pub fn new(max_incoming_size: Option<u32>, max_outgoing_size: Option<u32>) -> Codec {
        Codec {
            max_incoming_size,
            max_outgoing_size,
            discard: 0,
        }
    }

    /// Hands on an oversized publish without its payload, and skips the rest of it. Failing the
    /// connection instead would not help: the broker delivers the same publish again on
    /// reconnect, forever, and nothing queued behind it gets through.
    fn read_oversized_publish(&mut self, src: &mut BytesMut, max: u32) -> Result<Packet, Error> {
        let (publish, frame_length) = Publish::read_oversized(src, max as usize)?;
        let buffered = frame_length.min(src.len());
        src.advance(buffered);
        self.discard = frame_length - buffered;
        Ok(Packet::Publish(publish))
    }
}

impl Decoder for Codec {
    type Item = Packet;
    type Error = Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>, Self::Error> {
        // Skip what arrived of the oversized publish handed on last (see `read_oversized_publish`)
        if self.discard > 0 {
            let skipped = self.discard.min(src.len());
            src.advance(skipped);
            self.discard -= skipped;
            if self.discard > 0 {
                return Ok(None);
            }
        }

        let result = match Packet::read(src, self.max_incoming_size) {
            Err(Error::PayloadSizeLimitExceeded { max, .. })
                if src[0] >> 4 == PacketType::Publish as u8 =>
            {
                self.read_oversized_publish(src, max)
            }
            result => result,
        };
        match result {
            Ok(packet) => Ok(Some(packet)),
            Err(Error::InsufficientBytes(b)) => {
                // Get more packets to construct the incomplete packet
                src.reserve(b);
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

impl Encoder<Packet> for Codec {
    type Error = Error;

    fn encode(&mut self, item: Packet, dst: &mut BytesMut) -> Result<(), Self::Error> {
        item.write(dst, self.max_outgoing_size)?;

        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use bytes::{Bytes, BytesMut};
    use tokio_util::codec::{Decoder, Encoder};

    use super::Codec;
    use crate::v5::{
        mqttbytes::{
            v5::{PublishProperties, SubAck, SubscribeReasonCode},
            Error, QoS,
        },
        Packet, Publish,
    };

    const MAX: u32 = 1024;
    const LIMIT: Option<u32> = Some(MAX);

    fn publish(topic: &str, qos: QoS, pkid: u16, payload_len: usize) -> Publish {
        let mut publish = Publish::new(topic, qos, vec![0xAB; payload_len], None);
        publish.pkid = pkid;
        publish
    }

    fn properties(user_property_len: usize) -> Option<PublishProperties> {
        Some(PublishProperties {
            content_type: Some("application/octet-stream".to_owned()),
            user_properties: vec![("key".to_owned(), "v".repeat(user_property_len))],
            ..Default::default()
        })
    }

    fn encode(packets: &[Packet]) -> Vec<u8> {
        let mut buf = BytesMut::new();
        for packet in packets {
            packet.write(&mut buf, None).unwrap();
        }
        buf.to_vec()
    }

    /// What the codec makes of `publish` when it is too large
    fn cut(publish: &Publish, keeps_properties: bool) -> Publish {
        // The remaining length, after the packet type byte
        let bytes = encode(&[Packet::Publish(publish.clone())]);
        let (mut remaining_len, mut shift) = (0, 0);
        for byte in &bytes[1..5] {
            remaining_len |= ((byte & 0x7F) as usize) << shift;
            shift += 7;
            if byte & 0x80 == 0 {
                break;
            }
        }
        Publish {
            payload: Bytes::new(),
            oversized: Some(remaining_len),
            properties: publish.properties.clone().filter(|_| keeps_properties),
            ..publish.clone()
        }
    }

    /// Splits `stream` into chunks of `next_len()` bytes
    fn split(stream: &[u8], mut next_len: impl FnMut() -> usize) -> Vec<&[u8]> {
        let mut chunks = Vec::new();
        let mut rest = stream;
        while !rest.is_empty() {
            let (chunk, tail) = rest.split_at(next_len().clamp(1, rest.len()));
            chunks.push(chunk);
            rest = tail;
        }
        chunks
    }

    /// xorshift: random chunk sizes, reproducible without a rand dependency
    fn random_lens(mut seed: u64, max: u64) -> impl FnMut() -> usize {
        move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % max) as usize + 1
        }
    }

    /// Feeds the chunks to the codec as a socket would, decoding all it can after each one.
    /// Returns the packets and the largest length and capacity the buffer had.
    fn feed<'a>(
        codec: &mut Codec,
        chunks: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<(Vec<Packet>, usize, usize), Error> {
        let mut buf = BytesMut::new();
        let (mut packets, mut max_len, mut max_capacity) = (Vec::new(), 0, 0);
        for chunk in chunks {
            buf.extend_from_slice(chunk);
            max_len = max_len.max(buf.len());
            while let Some(packet) = codec.decode(&mut buf)? {
                packets.push(packet);
            }
            max_capacity = max_capacity.max(buf.capacity());
        }
        assert!(buf.is_empty(), "{} bytes left", buf.len());
        Ok((packets, max_len, max_capacity))
    }

    /// An oversized publish followed by a small one, fed at once, byte by byte, 7 bytes at a time
    /// and in random chunks: the first comes out cut, the second intact, and the buffer holds
    /// little more than the limit plus a chunk.
    fn check_oversized_then_small(big: Publish, keeps_properties: bool) {
        let mut small = publish("small", QoS::AtLeastOnce, 8, 100);
        small.properties = properties(10);
        let stream = encode(&[Packet::Publish(big.clone()), Packet::Publish(small.clone())]);
        let expected = vec![
            Packet::Publish(cut(&big, keeps_properties)),
            Packet::Publish(small),
        ];

        let (packets, _, _) = feed(&mut Codec::new(LIMIT, LIMIT), [&stream[..]]).unwrap();
        assert_eq!(packets, expected);

        let max = MAX as usize;
        let mut splits = vec![(split(&stream, || 1), 1), (split(&stream, || 7), 7)];
        for seed in 1..=20 {
            splits.push((split(&stream, random_lens(seed, 2 * max as u64)), 2 * max));
        }
        for (chunks, max_chunk) in splits {
            let (packets, max_len, max_capacity) =
                feed(&mut Codec::new(LIMIT, LIMIT), chunks).unwrap();
            assert_eq!(packets, expected);
            assert!(max_len <= max + 5 + max_chunk, "buffered {max_len}");
            assert!(
                max_capacity <= 2 * (max + 5 + max_chunk),
                "capacity {max_capacity}"
            );
        }
    }

    #[test]
    fn oversized_qos1_publish_is_cut_and_skipped() {
        let mut big = publish("big/topic", QoS::AtLeastOnce, 7, 10 * MAX as usize);
        big.dup = true;
        big.retain = true;
        big.properties = properties(100);
        check_oversized_then_small(big, true);
    }

    #[test]
    fn oversized_qos0_and_qos2_publishes_are_cut_and_skipped() {
        check_oversized_then_small(
            publish("big/qos0", QoS::AtMostOnce, 0, 3 * MAX as usize),
            true,
        );
        check_oversized_then_small(publish("big/qos2", QoS::ExactlyOnce, 9, MAX as usize), true);
    }

    #[test]
    fn properties_too_large_are_skipped_with_the_payload() {
        let mut big = publish("big/topic", QoS::AtLeastOnce, 7, 10);
        big.properties = properties(2 * MAX as usize);
        check_oversized_then_small(big, false);
    }

    #[test]
    fn publish_at_the_limit_is_not_cut() {
        // The limit applies to the remaining length: 2 + 5 + 2 + 1 + (MAX - 10) = MAX
        let publish = publish("topic", QoS::AtLeastOnce, 7, MAX as usize - 10);
        let stream = encode(&[Packet::Publish(publish.clone())]);
        let (packets, _, _) = feed(&mut Codec::new(LIMIT, LIMIT), split(&stream, || 7)).unwrap();
        assert_eq!(packets, vec![Packet::Publish(publish)]);
    }

    #[test]
    fn largest_possible_publish_is_skipped_with_bounded_buffer() {
        // Remaining length 268_435_455, the MQTT maximum, streamed in 64 KiB reads
        let payload_len = 268_435_455 - (2 + 3 + 2 + 1);
        let header = &encode(&[Packet::Publish(publish("big", QoS::AtLeastOnce, 7, 0))])[..];
        let mut header = header.to_vec();
        header.splice(1..2, [0xFF, 0xFF, 0xFF, 0x7F]); // the remaining length
        let zeros = vec![0u8; 64 * 1024];
        let mut chunks: Vec<&[u8]> = vec![&header];
        chunks.extend(std::iter::repeat(&zeros[..]).take(payload_len / zeros.len()));
        chunks.push(&zeros[..payload_len % zeros.len()]);
        let small = publish("small", QoS::AtLeastOnce, 8, 100);
        let small_bytes = encode(&[Packet::Publish(small.clone())]);
        chunks.push(&small_bytes);

        let (packets, max_len, max_capacity) = feed(&mut Codec::new(LIMIT, LIMIT), chunks).unwrap();
        let mut expected = publish("big", QoS::AtLeastOnce, 7, 0);
        expected.oversized = Some(268_435_455);
        assert_eq!(
            packets,
            vec![Packet::Publish(expected), Packet::Publish(small)]
        );
        let max = MAX as usize;
        assert!(max_len <= zeros.len() + max, "buffered {max_len}");
        assert!(
            max_capacity <= 2 * (zeros.len() + max),
            "capacity {max_capacity}"
        );
    }

    #[test]
    fn oversized_non_publish_is_still_an_error() {
        let suback = SubAck {
            pkid: 1,
            return_codes: vec![SubscribeReasonCode::Success(QoS::AtLeastOnce); 2 * MAX as usize],
            properties: None,
        };
        let stream = encode(&[Packet::SubAck(suback)]);
        // Known as soon as the fixed header is in
        let mut buf = BytesMut::from(&stream[..4]);
        match Codec::new(LIMIT, LIMIT).decode(&mut buf) {
            Err(Error::PayloadSizeLimitExceeded { pkt_size, max }) => {
                assert_eq!((pkt_size, max), (3 + 2 * MAX as usize, MAX))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn outgoing_max_packet_size_check() {
        let mut buf = BytesMut::new();
        let mut codec = Codec::new(Some(100), Some(200));

        let mut small_publish = Publish::new("hello/world", QoS::AtLeastOnce, vec![1; 100], None);
        small_publish.pkid = 1;
        codec
            .encode(Packet::Publish(small_publish), &mut buf)
            .unwrap();

        let large_publish = Publish::new("hello/world", QoS::AtLeastOnce, vec![1; 265], None);
        match codec.encode(Packet::Publish(large_publish), &mut buf) {
            Err(Error::OutgoingPacketTooLarge {
                pkt_size: 282,
                max: 200,
            }) => {}
            _ => unreachable!(),
        }
    }
}
