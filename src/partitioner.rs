//! Kafka's default partitioner: murmur2 of the key, as the Java client and
//! librdkafka's `murmur2_random` compute it, so the embedded broker places
//! every key where Kafka would.

/// Kafka's murmur2 hash (seed `0x9747b28c`), as in `org.apache.kafka.common.utils.Utils.murmur2`.
pub fn murmur2(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h: u32 = SEED ^ (len as u32);
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= (tail[2] as u32) << 16;
    }
    if tail.len() >= 2 {
        h ^= (tail[1] as u32) << 8;
    }
    if !tail.is_empty() {
        h ^= tail[0] as u32;
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// The partition Kafka's Java client chooses for `key` among `partitions`:
/// `toPositive(murmur2(key)) % partitions`. Fewer than one partition is
/// taken as one (the answer is then 0).
pub fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    ((murmur2(key) & 0x7fff_ffff) % partitions.max(1) as u32) as i32
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Vectors from Kafka's `UtilsTest.testMurmur2` (signed Java ints).
    #[test]
    fn kafka_murmur2_vectors() {
        let cases: &[(&str, i32)] = &[
            ("21", -973932308),
            ("foobar", -790332482),
            ("a-little-bit-long-string", -985981536),
            ("a-little-bit-longer-string", -1486304829),
            (
                "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58897971,
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(
                murmur2(input.as_bytes()) as i32,
                *expected,
                "murmur2({input:?})"
            );
        }
        assert_eq!(murmur2(b"abc") as i32, 479470107);
        assert_eq!(murmur2(&[]) as i32, 275646681);
    }

    /// Partitions the Java client picks (DefaultPartitioner, 3 and 6 partitions).
    #[test]
    fn java_client_partitions() {
        // toPositive(murmur2("foobar")) = -790332482 & 0x7fffffff = 1357151166
        assert_eq!(partition_for_key(b"foobar", 3), 1357151166 % 3);
        assert_eq!(
            partition_for_key(b"21", 6),
            ((-973932308i32 as u32 & 0x7fff_ffff) % 6) as i32
        );
    }

    proptest! {
        #[test]
        fn partition_in_range_and_stable(key in proptest::collection::vec(any::<u8>(), 0..64), n in 1i32..512) {
            let p = partition_for_key(&key, n);
            prop_assert!((0..n).contains(&p));
            prop_assert_eq!(p, partition_for_key(&key.clone(), n));
        }

        #[test]
        fn hash_depends_on_every_byte(key in proptest::collection::vec(any::<u8>(), 1..32), idx: usize, flip in 1u8..=255) {
            let mut other = key.clone();
            let i = idx % key.len();
            other[i] ^= flip;
            // murmur2 is a bijection-ish mix per block; a single flipped byte changes the hash.
            prop_assert_ne!(murmur2(&key), murmur2(&other));
        }
    }
}
