//! Idempotent-producer sequence arithmetic.
//!
//! Kafka sequence numbers are non-negative `int32`s that wrap from `i32::MAX` back to 0
//! (`DefaultRecordBatch.incrementSequence`; the broker's `ProducerStateManager` accepts
//! `i32::MAX` followed by 0 as in order). They therefore live on a ring of 2^31 values, not on
//! the two's-complement `i32` ring, so `wrapping_add` is wrong for them.

/// Number of distinct sequence numbers: the ring size (0..=i32::MAX).
const RING: i64 = 1 << 31;

/// Half the ring: the farthest one sequence can be ahead of another and still be called "after".
const HALF_RING: i32 = 1 << 30;

/// `seq` advanced by `by` steps, wrapping to 0 after `i32::MAX` as Kafka does.
///
/// For `seq` and `by` in `0..=i32::MAX` this equals Kafka's
/// `DefaultRecordBatch.incrementSequence`. Other inputs are reduced onto the ring too, so the
/// result is always a valid sequence number and the function never overflows.
pub fn increment(seq: i32, by: i32) -> i32 {
    // The ring has 2^31 elements, so the reduced value always fits in 0..=i32::MAX.
    (i64::from(seq) + i64::from(by)).rem_euclid(RING) as i32
}

/// Sequence of the last record of a batch of `record_count` records starting at `base`.
///
/// Mirrors Kafka's `DefaultRecordBatch.lastSequence` (`incrementSequence(base, count - 1)`).
pub fn last_sequence(base: i32, record_count: i32) -> i32 {
    increment(base, record_count.saturating_sub(1))
}

/// How many increments take `from` to `to` on the sequence ring (0 when equal).
pub fn distance(from: i32, to: i32) -> i32 {
    (i64::from(to) - i64::from(from)).rem_euclid(RING) as i32
}

/// Whether the broker's last sequence `broker_last` covers the whole batch `[base, base + count)`.
///
/// "Covers" means the batch's last sequence is at or before `broker_last` on the ring. As with
/// serial number arithmetic (RFC 1982), the order is only meaningful within half the ring: a
/// `broker_last` more than 2^30 steps past the batch's end is taken to be *before* it. Kafka's
/// broker only remembers the last few batches per producer, so any sane gap is far smaller.
pub fn covers(broker_last: i32, base: i32, record_count: i32) -> bool {
    distance(last_sequence(base, record_count), broker_last) < HALF_RING
}

/// How many records a batch starting at `base` can hold before its sequences would wrap.
///
/// A record batch carries only its base sequence; kafka-protocol derives per-record sequences
/// with two's-complement arithmetic (and splits batches whose `offset - sequence` changes), so a
/// batch straddling `i32::MAX` → 0 cannot be encoded faithfully. The dispatcher must cut a batch
/// at this many records and start the next one at sequence 0. Negative (invalid) bases get 0.
pub fn room_before_wrap(base: i32) -> u64 {
    if base < 0 {
        0
    } else {
        // base <= i32::MAX, so this is in 1..=2^31.
        (RING - i64::from(base)) as u64
    }
}

/// Whether `record_count` records starting at `base` fit before the wrap (see [`room_before_wrap`]).
pub fn fits_before_wrap(base: i32, record_count: usize) -> bool {
    u64::try_from(record_count).is_ok_and(|n| n <= room_before_wrap(base))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Kafka's `DefaultRecordBatch.incrementSequence`, transcribed literally as the reference.
    fn kafka_increment(seq: i32, inc: i32) -> i32 {
        if seq > i32::MAX - inc {
            inc - (i32::MAX - seq) - 1
        } else {
            seq + inc
        }
    }

    #[test]
    fn increment_vectors() {
        assert_eq!(increment(0, 0), 0);
        assert_eq!(increment(0, 1), 1);
        assert_eq!(increment(i32::MAX - 1, 1), i32::MAX);
        assert_eq!(increment(i32::MAX, 1), 0);
        assert_eq!(increment(i32::MAX, 2), 1);
        assert_eq!(increment(i32::MAX - 2, 5), 2);
        assert_eq!(increment(i32::MAX, i32::MAX), i32::MAX - 1);
    }

    #[test]
    fn invalid_inputs_stay_on_the_ring() {
        assert_eq!(increment(-1, 1), 0);
        assert_eq!(increment(0, -1), i32::MAX);
        assert_eq!(increment(i32::MIN, i32::MIN), 0);
        assert_eq!(last_sequence(5, 0), 4);
        assert_eq!(last_sequence(0, 0), i32::MAX);
    }

    #[test]
    fn last_sequence_straddling_the_wrap() {
        assert_eq!(last_sequence(0, 1), 0);
        assert_eq!(last_sequence(10, 5), 14);
        assert_eq!(last_sequence(i32::MAX, 1), i32::MAX);
        assert_eq!(last_sequence(i32::MAX - 1, 4), 1);
        assert_eq!(last_sequence(i32::MAX, 3), 1);
    }

    #[test]
    fn distance_vectors() {
        assert_eq!(distance(5, 5), 0);
        assert_eq!(distance(5, 6), 1);
        assert_eq!(distance(6, 5), i32::MAX);
        assert_eq!(distance(i32::MAX, 0), 1);
        assert_eq!(distance(i32::MAX - 1, 2), 4);
    }

    #[test]
    fn covers_vectors() {
        // Batch [10, 14].
        assert!(covers(14, 10, 5));
        assert!(covers(20, 10, 5));
        assert!(!covers(13, 10, 5));
        assert!(!covers(9, 10, 5));
        // Batch [MAX-1, 1] is not encodable but the ring order still holds for the broker's view.
        assert!(covers(1, i32::MAX - 1, 4));
        assert!(covers(3, i32::MAX - 1, 4));
        assert!(!covers(0, i32::MAX - 1, 4));
        assert!(!covers(i32::MAX, i32::MAX - 1, 4));
        // Batch [MAX, MAX], broker already past the wrap.
        assert!(covers(7, i32::MAX, 1));
        // Beyond half the ring counts as "before".
        assert!(covers(14 + (HALF_RING - 1), 10, 5));
        assert!(!covers(14 + HALF_RING, 10, 5));
    }

    #[test]
    fn room_and_fit_at_the_wrap() {
        assert_eq!(room_before_wrap(0), 1 << 31);
        assert_eq!(room_before_wrap(i32::MAX), 1);
        assert_eq!(room_before_wrap(i32::MAX - 9), 10);
        assert_eq!(room_before_wrap(-1), 0);
        assert!(fits_before_wrap(i32::MAX - 9, 10));
        assert!(!fits_before_wrap(i32::MAX - 9, 11));
        assert!(fits_before_wrap(i32::MAX, 1));
        assert!(!fits_before_wrap(i32::MAX, 2));
        assert!(!fits_before_wrap(-1, 1));
        assert!(fits_before_wrap(0, 0));
    }

    proptest! {
        #[test]
        fn increment_matches_kafka(seq in 0..=i32::MAX, by in 0..=i32::MAX) {
            prop_assert_eq!(increment(seq, by), kafka_increment(seq, by));
        }

        #[test]
        fn increment_is_repeated_plus_one(seq in prop_oneof![0..=i32::MAX, (i32::MAX - 100)..=i32::MAX], by in 0..200i32) {
            let mut stepped = seq;
            for _ in 0..by {
                stepped = increment(stepped, 1);
            }
            prop_assert_eq!(increment(seq, by), stepped);
        }

        #[test]
        fn increment_stays_non_negative(seq in any::<i32>(), by in any::<i32>()) {
            prop_assert!(increment(seq, by) >= 0);
        }

        #[test]
        fn distance_inverts_increment(seq in 0..=i32::MAX, by in 0..=i32::MAX) {
            prop_assert_eq!(distance(seq, increment(seq, by)), by);
        }

        #[test]
        fn batch_covers_itself_and_later(base in 0..=i32::MAX, count in 1..1000i32, extra in 0..HALF_RING) {
            let last = last_sequence(base, count);
            prop_assert_eq!(distance(base, last), count - 1);
            prop_assert!(covers(increment(last, extra), base, count));
            prop_assert!(!covers(increment(last, -1 - extra), base, count));
        }

        #[test]
        fn fitting_batches_do_not_wrap(base in 0..=i32::MAX, count in 1usize..100_000) {
            let last = last_sequence(base, count as i32);
            prop_assert_eq!(fits_before_wrap(base, count), last >= base);
        }
    }
}
