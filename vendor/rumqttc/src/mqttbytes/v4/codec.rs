// Modified for kedge (see KEDGE.md): skip the payload of a too large incoming publish.
use bytes::{Buf, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::{Error, Packet, PacketType, Publish};

/// MQTT v4 codec
///
/// An incoming packet whose *remaining length* (the packet size without its 2 to 5 bytes of
/// fixed header) exceeds `max_incoming_size` is an error, except a PUBLISH: that one is decoded
/// without its payload (see [`Publish::oversized`]) and the rest of its bytes are skipped as they
/// arrive, so it is never buffered whole.
#[derive(Debug, Clone)]
pub struct Codec {
    /// Maximum packet size allowed by client
    pub max_incoming_size: usize,
    /// Maximum packet size allowed by broker
    pub max_outgoing_size: usize,
    /// Bytes of an oversized publish still to be skipped
    discard: usize,
}

impl Codec {
    /// A codec with these limits (see the fields)
    pub fn new(max_incoming_size: usize, max_outgoing_size: usize) -> Codec {
        Codec {
            max_incoming_size,
            max_outgoing_size,
            discard: 0,
        }
    }

    /// Hands on an oversized publish without its payload, and skips the rest of it. Failing the
    /// connection instead would not help: the broker delivers the same publish again on
    /// reconnect, forever, and nothing queued behind it gets through.
    fn read_oversized_publish(&mut self, src: &mut BytesMut) -> Result<Packet, Error> {
        let (publish, frame_length) = Publish::read_oversized(src)?;
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
            Err(Error::PayloadSizeLimitExceeded(_)) if src[0] >> 4 == PacketType::Publish as u8 => {
                self.read_oversized_publish(src)
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
    use crate::{mqttbytes::Error, Packet, Publish, QoS, SubAck, SubscribeReasonCode};

    const MAX: usize = 1024;

    fn publish(topic: &str, qos: QoS, pkid: u16, payload_len: usize) -> Publish {
        let mut publish = Publish::new(topic, qos, vec![0xAB; payload_len]);
        publish.pkid = pkid;
        publish
    }

    fn encode(packets: &[Packet]) -> Vec<u8> {
        let mut buf = BytesMut::new();
        for packet in packets {
            packet.write(&mut buf, usize::MAX).unwrap();
        }
        buf.to_vec()
    }

    /// What the codec makes of `publish` when it is too large
    fn cut(publish: &Publish) -> Publish {
        let pkid_len = if publish.qos == QoS::AtMostOnce { 0 } else { 2 };
        let remaining_len = 2 + publish.topic.len() + pkid_len + publish.payload.len();
        Publish {
            payload: Bytes::new(),
            oversized: Some(remaining_len),
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
    fn check_oversized_then_small(big: Publish) {
        let small = publish("small", QoS::AtLeastOnce, 8, 100);
        let stream = encode(&[Packet::Publish(big.clone()), Packet::Publish(small.clone())]);
        let expected = vec![Packet::Publish(cut(&big)), Packet::Publish(small)];

        let (packets, _, _) = feed(&mut Codec::new(MAX, MAX), [&stream[..]]).unwrap();
        assert_eq!(packets, expected);

        let mut splits = vec![(split(&stream, || 1), 1), (split(&stream, || 7), 7)];
        for seed in 1..=20 {
            splits.push((split(&stream, random_lens(seed, 2 * MAX as u64)), 2 * MAX));
        }
        for (chunks, max_chunk) in splits {
            let (packets, max_len, max_capacity) = feed(&mut Codec::new(MAX, MAX), chunks).unwrap();
            assert_eq!(packets, expected);
            assert!(max_len <= MAX + 5 + max_chunk, "buffered {max_len}");
            assert!(
                max_capacity <= 2 * (MAX + 5 + max_chunk),
                "capacity {max_capacity}"
            );
        }
    }

    #[test]
    fn oversized_qos1_publish_is_cut_and_skipped() {
        let mut big = publish("big/topic", QoS::AtLeastOnce, 7, 10 * MAX);
        big.dup = true;
        big.retain = true;
        check_oversized_then_small(big);
    }

    #[test]
    fn oversized_qos0_and_qos2_publishes_are_cut_and_skipped() {
        check_oversized_then_small(publish("big/qos0", QoS::AtMostOnce, 0, 3 * MAX));
        check_oversized_then_small(publish("big/qos2", QoS::ExactlyOnce, 9, MAX - 10));
    }

    #[test]
    fn publish_at_the_limit_is_not_cut() {
        // The limit applies to the remaining length: 2 + 5 + 2 + (MAX - 9) = MAX
        let publish = publish("topic", QoS::AtLeastOnce, 7, MAX - 9);
        let stream = encode(&[Packet::Publish(publish.clone())]);
        let (packets, _, _) = feed(&mut Codec::new(MAX, MAX), split(&stream, || 7)).unwrap();
        assert_eq!(packets, vec![Packet::Publish(publish)]);
    }

    #[test]
    fn largest_possible_publish_is_skipped_with_bounded_buffer() {
        // Remaining length 268_435_455, the MQTT maximum, streamed in 64 KiB reads
        let payload_len = 268_435_455 - (2 + 3 + 2);
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

        let (packets, max_len, max_capacity) = feed(&mut Codec::new(MAX, MAX), chunks).unwrap();
        let mut expected = publish("big", QoS::AtLeastOnce, 7, 0);
        expected.oversized = Some(268_435_455);
        assert_eq!(
            packets,
            vec![Packet::Publish(expected), Packet::Publish(small)]
        );
        assert!(max_len <= zeros.len() + MAX, "buffered {max_len}");
        assert!(
            max_capacity <= 2 * (zeros.len() + MAX),
            "capacity {max_capacity}"
        );
    }

    #[test]
    fn oversized_non_publish_is_still_an_error() {
        let suback = SubAck::new(
            1,
            vec![SubscribeReasonCode::Success(QoS::AtLeastOnce); 2 * MAX],
        );
        let stream = encode(&[Packet::SubAck(suback)]);
        // Known as soon as the fixed header is in
        let mut buf = BytesMut::from(&stream[..4]);
        match Codec::new(MAX, MAX).decode(&mut buf) {
            Err(Error::PayloadSizeLimitExceeded(len)) => assert_eq!(len, 2 + 2 * MAX),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn oversized_publish_with_non_utf8_topic_is_still_an_error() {
        let big = publish("topic", QoS::AtLeastOnce, 7, 2 * MAX);
        let mut stream = encode(&[Packet::Publish(big)]);
        stream[5] = 0xFF; // the 't' after 3 bytes of fixed header and 2 of topic length
        match feed(&mut Codec::new(MAX, MAX), split(&stream, || 3)) {
            Err(Error::TopicNotUtf8) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn outgoing_max_packet_size_check() {
        let mut buf = BytesMut::new();
        let mut codec = Codec::new(100, 200);

        let mut small_publish = Publish::new("hello/world", QoS::AtLeastOnce, vec![1; 100]);
        small_publish.pkid = 1;
        codec
            .encode(Packet::Publish(small_publish), &mut buf)
            .unwrap();

        let large_publish = Publish::new("hello/world", QoS::AtLeastOnce, vec![1; 265]);
        match codec.encode(Packet::Publish(large_publish), &mut buf) {
            Err(Error::OutgoingPacketTooLarge {
                pkt_size: 281,
                max: 200,
            }) => {}
            _ => unreachable!(),
        }
    }
}
