//! Unique-visitor sets that merge exactly across hours.
//!
//! A [`VisitorSet`] holds the 64-bit hashes of the visitors it saw. Up to
//! [`EXACT_LIMIT`] hashes it is an exact set, so its count is exact (up to
//! 64-bit hash collisions: about one in 10^10 for a million visitors).
//! Beyond that it turns into a HyperLogLog sketch with 2^14 registers
//! (16 KiB, relative standard error 1.04 / sqrt(16384) = 0.81%). Both
//! forms merge: the union of two exact sets stays exact while it is small
//! enough (in memory the limit is [`MERGE_EXACT_LIMIT`]), and anything
//! merged with a sketch is a sketch. So a site whose hours each see at
//! most 2048 visitors, over a range with at most 100,000 distinct ones,
//! gets exact counts; bigger ones get HyperLogLog counts within about 1%.
//!
//! Stored form (a `BLOB`/`bytea`): one tag byte, then either the sorted
//! hashes (8 bytes each, little-endian) or the 16384 registers.
//!
//! A daily rollup splits its large exact sets (more than [`SPLIT_MIN`]
//! hashes): the cell keeps the set's sketch (tag 2, then the sketch's
//! stored form) and the hashes are kept apart, in a row of their own (see
//! [`VisitorSet::to_split_bytes`]). A query merging many such cells
//! reads the sketches first; when their union is clearly beyond its exact
//! limit, the answer is that sketch, which is exactly the sketch that
//! merging every hash gives (a HyperLogLog register is the maximum over
//! the hashes, so the sketch of a union is the register-wise maximum of
//! the sketches). Otherwise it reads the hashes and merges them exactly.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};

/// The hasher of a set of visitor hashes: they are already well mixed
/// ([`visitor_hash`] ends in a SplitMix64 finaliser), so the set uses
/// them as they are instead of hashing them again.
#[derive(Debug, Clone, Copy, Default)]
pub struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `u64`s go in; anything else is folded in FNV-style.
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// A set of visitor hashes.
pub type HashSet64 = HashSet<u64, BuildHasherDefault<Prehashed>>;

/// Hashes stored exactly per rollup cell before it becomes a sketch (the
/// stored form is then at most 16 KiB either way).
pub const EXACT_LIMIT: usize = 2048;
/// Hashes kept exactly while merging in memory (a query's union).
pub const MERGE_EXACT_LIMIT: usize = 100_000;
/// HyperLogLog precision: 2^14 registers.
const P: u32 = 14;
const REGISTERS: usize = 1 << P;
const TAG_EXACT: u8 = 0;
const TAG_HLL: u8 = 1;
const TAG_SPLIT: u8 = 2;
/// Hashes beyond which a daily rollup keeps a cell's exact set apart,
/// with only its sketch (16 KiB, half the set or less) in the cell.
pub const SPLIT_MIN: usize = 4096;
/// How far beyond its exact limit a union's sketch estimate must be for
/// a query to take the sketch without reading the hashes: 25%, about 30
/// standard errors of the estimate (0.81%), so a union within the limit
/// is never taken for a bigger one.
pub const SKETCH_MARGIN_PERCENT: u64 = 125;

/// A stable 64-bit hash of a visitor key (the same in every build and on
/// every machine, unlike `std`'s `DefaultHasher`): FNV-1a, then a
/// SplitMix64 finaliser so that every bit depends on every input byte
/// (HyperLogLog reads the top bits and counts leading zeros).
#[must_use]
pub fn visitor_hash(key: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// A set of visitor hashes: exact while small, HyperLogLog beyond.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VisitorSet {
    /// Every hash.
    Exact(HashSet64),
    /// HyperLogLog registers.
    Sketch(Box<[u8; REGISTERS]>),
}

impl Default for VisitorSet {
    fn default() -> Self {
        Self::Exact(HashSet64::default())
    }
}

impl VisitorSet {
    /// Adds one visitor hash; `limit` is when an exact set turns into a
    /// sketch.
    pub fn insert(&mut self, hash: u64, limit: usize) {
        match self {
            Self::Exact(set) => {
                set.insert(hash);
                if set.len() > limit {
                    *self = Self::Sketch(to_registers(set));
                }
            }
            Self::Sketch(regs) => add(regs, hash),
        }
    }

    /// Makes room for `more` hashes in an exact set (no more than `limit`
    /// in all, beyond which it would turn into a sketch anyway), so that
    /// merging them does not grow the set step by step.
    pub fn reserve(&mut self, more: usize, limit: usize) {
        if let Self::Exact(set) = self {
            let room = more.min(limit.saturating_add(1).saturating_sub(set.len()));
            set.reserve(room);
        }
    }

    /// The number of hashes of an exact set; `None` for a sketch.
    #[must_use]
    pub fn exact_len(&self) -> Option<usize> {
        match self {
            Self::Exact(set) => Some(set.len()),
            Self::Sketch(_) => None,
        }
    }

    /// The number of hashes of a stored exact set; `None` for a stored
    /// sketch or anything else.
    #[must_use]
    pub fn stored_exact_len(bytes: &[u8]) -> Option<usize> {
        match bytes.split_first() {
            Some((&TAG_EXACT, rest)) if rest.len() % 8 == 0 => Some(rest.len() / 8),
            _ => None,
        }
    }

    /// The number of hashes of a stored exact set (0 for a sketch or
    /// anything else): what merging it adds at most.
    #[must_use]
    pub fn stored_len(bytes: &[u8]) -> usize {
        match bytes.split_first() {
            Some((&TAG_EXACT, rest)) => rest.len() / 8,
            _ => 0,
        }
    }

    /// Adds every visitor of `other`.
    pub fn merge(&mut self, other: &Self, limit: usize) {
        match (&mut *self, other) {
            (Self::Exact(a), Self::Exact(b)) => {
                a.extend(b.iter().copied());
                if a.len() > limit {
                    *self = Self::Sketch(to_registers(a));
                }
            }
            (Self::Exact(a), Self::Sketch(b)) => {
                let mut regs = b.clone();
                for h in a.iter() {
                    add(&mut regs, *h);
                }
                *self = Self::Sketch(regs);
            }
            (Self::Sketch(a), Self::Exact(b)) => {
                for h in b {
                    add(a, *h);
                }
            }
            (Self::Sketch(a), Self::Sketch(b)) => {
                for (x, y) in a.iter_mut().zip(b.iter()) {
                    *x = (*x).max(*y);
                }
            }
        }
    }

    /// Adds every visitor of a stored set (see [`Self::to_bytes`])
    /// without building it first: what a query does with each rollup
    /// cell it reads. `None` (and nothing added) when the bytes are not a
    /// stored set.
    pub fn merge_stored(&mut self, bytes: &[u8], limit: usize) -> Option<()> {
        let (&tag, rest) = bytes.split_first()?;
        match tag {
            TAG_EXACT if rest.len() % 8 == 0 => {
                let hashes = rest
                    .chunks_exact(8)
                    .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()));
                match self {
                    Self::Exact(set) => {
                        set.extend(hashes);
                        if set.len() > limit {
                            *self = Self::Sketch(to_registers(set));
                        }
                    }
                    Self::Sketch(regs) => hashes.for_each(|h| add(regs, h)),
                }
            }
            TAG_HLL if rest.len() == REGISTERS => {
                if let Self::Exact(set) = self {
                    *self = Self::Sketch(to_registers(set));
                }
                if let Self::Sketch(regs) = self {
                    for (x, y) in regs.iter_mut().zip(rest) {
                        *x = (*x).max(*y);
                    }
                }
            }
            _ => return None,
        }
        Some(())
    }

    /// The number of distinct visitors: exact for an exact set, the
    /// HyperLogLog estimate for a sketch.
    #[must_use]
    pub fn count(&self) -> u64 {
        match self {
            Self::Exact(set) => set.len() as u64,
            Self::Sketch(regs) => estimate(regs),
        }
    }

    /// Whether the count is exact.
    #[must_use]
    pub fn is_exact(&self) -> bool {
        matches!(self, Self::Exact(_))
    }

    /// The stored form.
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Self::Exact(set) => {
                let mut hashes: Vec<u64> = set.iter().copied().collect();
                hashes.sort_unstable();
                let mut out = Vec::with_capacity(1 + 8 * hashes.len());
                out.push(TAG_EXACT);
                for h in hashes {
                    out.extend_from_slice(&h.to_le_bytes());
                }
                out
            }
            Self::Sketch(regs) => {
                let mut out = Vec::with_capacity(1 + REGISTERS);
                out.push(TAG_HLL);
                out.extend_from_slice(&regs[..]);
                out
            }
        }
    }

    /// The stored form of a cell of a pack that keeps large sets apart:
    /// an exact set of more than [`SPLIT_MIN`] hashes is appended to
    /// `apart` (its [`Self::to_bytes`] form) and the cell keeps its sketch
    /// (see [`Self::split_sketch`]); any other set is its
    /// [`Self::to_bytes`] form, and `apart` is left alone.
    #[must_use]
    pub fn to_split_bytes(&self, apart: &mut Vec<u8>) -> Vec<u8> {
        match self {
            Self::Exact(set) if set.len() > SPLIT_MIN => {
                apart.extend_from_slice(&self.to_bytes());
                let mut out = Vec::with_capacity(2 + REGISTERS);
                out.extend_from_slice(&[TAG_SPLIT, TAG_HLL]);
                out.extend_from_slice(&to_registers(set)[..]);
                out
            }
            _ => self.to_bytes(),
        }
    }

    /// The stored form of a split set's sketch (a stored sketch, for
    /// [`Self::merge_stored`]) when `bytes` are a split set's cell form
    /// from [`Self::to_split_bytes`]; `None` for any other stored set.
    #[must_use]
    pub fn split_sketch(bytes: &[u8]) -> Option<&[u8]> {
        match bytes.split_first() {
            Some((&TAG_SPLIT, rest)) => Some(rest),
            _ => None,
        }
    }

    /// Whether this set is surely bigger than `limit`: a sketch whose
    /// estimate is beyond `limit` by the margin of
    /// [`SKETCH_MARGIN_PERCENT`] (an exact set never is: it turns into a
    /// sketch beyond its limit).
    #[must_use]
    pub fn surely_beyond(&self, limit: usize) -> bool {
        match self {
            Self::Exact(set) => {
                (set.len() as u64).saturating_mul(100)
                    > (limit as u64).saturating_mul(SKETCH_MARGIN_PERCENT)
            }
            Self::Sketch(regs) => {
                estimate(regs).saturating_mul(100)
                    > (limit as u64).saturating_mul(SKETCH_MARGIN_PERCENT)
            }
        }
    }

    /// This set turned into a sketch (a copy of it when it is one).
    #[must_use]
    pub fn to_sketch(&self) -> Self {
        match self {
            Self::Exact(set) => Self::Sketch(to_registers(set)),
            Self::Sketch(regs) => Self::Sketch(regs.clone()),
        }
    }

    /// Reads the stored form; `None` when the bytes are not one.
    #[must_use]
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let mut set = Self::default();
        set.merge_stored(bytes, usize::MAX)?;
        Some(set)
    }
}

fn to_registers(set: &HashSet64) -> Box<[u8; REGISTERS]> {
    let mut regs = Box::new([0u8; REGISTERS]);
    for h in set {
        add(&mut regs, *h);
    }
    regs
}

fn add(regs: &mut [u8; REGISTERS], hash: u64) {
    let index = (hash >> (64 - P)) as usize;
    // The rank of the remaining 50 bits: leading zeros + 1 (a sentinel bit
    // bounds it at 51).
    let rest = (hash << P) | (1 << (P - 1));
    let rank = u8::try_from(rest.leading_zeros() + 1).unwrap_or(u8::MAX);
    if regs[index] < rank {
        regs[index] = rank;
    }
}

fn estimate(regs: &[u8; REGISTERS]) -> u64 {
    let m = REGISTERS as f64;
    let mut sum = 0.0;
    let mut zeros = 0u32;
    for &r in regs {
        sum += 1.0 / f64::from(1u32 << r.min(31));
        if r == 0 {
            zeros += 1;
        }
    }
    let alpha = 0.7213 / (1.0 + 1.079 / m);
    let raw = alpha * m * m / sum;
    // Small range: linear counting while registers are still empty.
    let e = if raw <= 2.5 * m && zeros > 0 {
        m * (m / f64::from(zeros)).ln()
    } else {
        raw
    };
    // A count; the estimate is finite and positive.
    e.round() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set_of(range: std::ops::Range<u64>, limit: usize) -> VisitorSet {
        let mut s = VisitorSet::default();
        for i in range {
            s.insert(visitor_hash(&format!("visitor-{i}")), limit);
        }
        s
    }

    #[test]
    fn small_sets_are_exact_and_merge_exactly() {
        let a = set_of(0..1500, EXACT_LIMIT);
        let b = set_of(1000..2000, EXACT_LIMIT);
        assert!(a.is_exact());
        let mut u = a.clone();
        u.merge(&b, MERGE_EXACT_LIMIT);
        assert!(u.is_exact());
        assert_eq!(u.count(), 2000);
        // Stored and read back: the same set.
        assert_eq!(VisitorSet::from_bytes(&a.to_bytes()), Some(a));
    }

    #[test]
    fn big_sets_become_sketches_within_two_percent() {
        for n in [3_000u64, 50_000, 1_000_000] {
            let s = set_of(0..n, EXACT_LIMIT);
            assert!(!s.is_exact());
            let err = (s.count() as f64 - n as f64).abs() / n as f64;
            assert!(err < 0.02, "{n}: estimate {} ({err:.4})", s.count());
            assert_eq!(VisitorSet::from_bytes(&s.to_bytes()), Some(s));
        }
    }

    #[test]
    fn merging_sketches_is_a_union() {
        // Hours with overlapping visitors: the union counts each once.
        let mut total = VisitorSet::default();
        for hour in 0..24u64 {
            let s = set_of(hour * 1000..hour * 1000 + 5000, EXACT_LIMIT);
            total.merge(&s, MERGE_EXACT_LIMIT);
        }
        let n = 23_000.0 + 5000.0;
        let err = (total.count() as f64 - n).abs() / n;
        assert!(err < 0.02, "estimate {} for {n}", total.count());
    }

    #[test]
    fn merging_a_stored_set_is_merging_the_set() {
        let small = set_of(0..1500, EXACT_LIMIT);
        let other = set_of(1000..2400, EXACT_LIMIT);
        let sketch = set_of(0..5000, EXACT_LIMIT);
        for (first, second, limit) in [
            (&small, &other, MERGE_EXACT_LIMIT),
            (&small, &other, 2000),
            (&small, &sketch, MERGE_EXACT_LIMIT),
            (&sketch, &small, MERGE_EXACT_LIMIT),
            (&sketch, &sketch, MERGE_EXACT_LIMIT),
        ] {
            let mut merged = first.clone();
            merged.merge(second, limit);
            let mut stored = first.clone();
            stored.merge_stored(&second.to_bytes(), limit).unwrap();
            assert_eq!(stored, merged);
        }
        assert_eq!(
            set_of(0..3000, MERGE_EXACT_LIMIT).count(),
            3000,
            "an exact set counts every hash"
        );
        let mut untouched = small.clone();
        assert!(
            untouched
                .merge_stored(&[0, 1, 2], MERGE_EXACT_LIMIT)
                .is_none()
        );
        assert!(untouched.merge_stored(&[1, 0], MERGE_EXACT_LIMIT).is_none());
        assert_eq!(untouched, small);
    }

    #[test]
    fn large_sets_split_and_sketches_are_taken_only_when_surely_beyond() {
        // At most SPLIT_MIN hashes: stored whole, nothing apart.
        let mut apart = Vec::new();
        let small = set_of(0..SPLIT_MIN as u64, usize::MAX);
        assert_eq!(small.to_split_bytes(&mut apart), small.to_bytes());
        assert!(apart.is_empty());
        // One more: the cell keeps the sketch, the hashes go apart.
        let big = set_of(0..SPLIT_MIN as u64 + 1, usize::MAX);
        let cell = big.to_split_bytes(&mut apart);
        assert_eq!(VisitorSet::from_bytes(&apart), Some(big.clone()));
        let sketch = VisitorSet::split_sketch(&cell).unwrap();
        assert_eq!(VisitorSet::from_bytes(sketch), Some(big.to_sketch()));
        assert_eq!(VisitorSet::split_sketch(&big.to_bytes()), None);
        // A split cell is not a stored set: it is never merged as one.
        assert_eq!(VisitorSet::from_bytes(&cell), None);
        // Beyond the limit by the margin, and only then.
        let limit = 100_000;
        assert!(set_of(0..130_000, 1).surely_beyond(limit));
        assert!(!set_of(0..118_000, 1).surely_beyond(limit));
        assert!(!set_of(0..90_000, usize::MAX).surely_beyond(limit));
    }

    #[test]
    fn garbage_is_not_a_set() {
        assert_eq!(VisitorSet::from_bytes(&[]), None);
        assert_eq!(VisitorSet::from_bytes(&[0, 1, 2]), None);
        assert_eq!(VisitorSet::from_bytes(&[1, 0]), None);
        assert_eq!(VisitorSet::from_bytes(&[7]), None);
    }

    #[test]
    fn the_hash_is_stable() {
        // Stored sets stay valid across builds: the hash never changes.
        assert_eq!(visitor_hash(""), visitor_hash(""));
        assert_ne!(visitor_hash("a"), visitor_hash("b"));
        assert_eq!(visitor_hash("visitor-1"), 7_101_142_699_719_807_866);
    }
}
