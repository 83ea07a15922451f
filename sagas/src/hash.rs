//! A small stable hash (FNV-1a, 64-bit) for jitter and partitioning.
//!
//! Stable across builds, platforms and Rust versions (unlike `DefaultHasher`),
//! so values derived from it may be stored and recomputed later.

/// FNV-1a over the concatenation of `parts`.
#[must_use]
pub fn fnv1a(parts: &[&[u8]]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    parts
        .iter()
        .flat_map(|p| p.iter())
        .fold(OFFSET, |hash, byte| (hash ^ u64::from(*byte)).wrapping_mul(PRIME))
}

/// The partition a saga belongs to, in `0..partitions` (`partitions` ≥ 1).
#[must_use]
pub fn partition_of(saga_id: &str, partitions: u32) -> u32 {
    let n = u64::from(partitions.max(1));
    u32::try_from(fnv1a(&[saga_id.as_bytes()]) % n).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values_never_change() {
        // Stored partitions depend on these: a change here would move sagas.
        assert_eq!(fnv1a(&[b""]), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(&[b"a"]), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(&[b"ab"]), fnv1a(&[b"a", b"b"]));
    }

    #[test]
    fn partitions_spread_and_stay_in_range() {
        let mut counts = [0u32; 8];
        for i in 0..8_000 {
            let p = partition_of(&format!("saga-{i}"), 8);
            counts[p as usize] += 1;
        }
        assert!(counts.iter().all(|c| (800..1_200).contains(c)), "{counts:?}");
        assert_eq!(partition_of("x", 0), 0);
    }
}
