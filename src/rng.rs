//! Philox4x32-10 (Salmon et al., SC'11), the counter-based generator behind every random draw.
//!
//! A draw is a pure function of `(seed, step, stream, index)`, so the CPU backend and a CUDA
//! kernel compute the same samples in any order and any degree of parallelism. The layout:
//!
//! - key     = (seed low 32 bits, seed high 32 bits)
//! - counter = (index / 4, stream, step low 32 bits, step high 32 bits)
//! - element `index` takes output word `index % 4` of that block.
//!
//! The float conversion `(x >> 8) * 2^-24` is exact in f32 (24 significant bits), so there is
//! no rounding mode for two implementations to disagree about; a Bernoulli draw is `u < p`.

const MUL_A: u32 = 0xD251_1F53;
const MUL_B: u32 = 0xCD9E_8D57;
const BUMP_A: u32 = 0x9E37_79B9;
const BUMP_B: u32 = 0xBB67_AE85;
/// Philox blocks that [`RngKey::fill_uniform`] computes together.
const WIDE: usize = 16;

#[inline(always)]
fn mulhilo(a: u32, b: u32) -> (u32, u32) {
    let p = (a as u64) * (b as u64);
    ((p >> 32) as u32, p as u32)
}

/// The raw Philox4x32 block function with 10 rounds.
#[inline(always)]
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mut c = counter;
    let mut k = key;
    for round in 0..10 {
        if round > 0 {
            k[0] = k[0].wrapping_add(BUMP_A);
            k[1] = k[1].wrapping_add(BUMP_B);
        }
        let (hi0, lo0) = mulhilo(MUL_A, c[0]);
        let (hi1, lo1) = mulhilo(MUL_B, c[2]);
        c = [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0];
    }
    c
}

/// A 32-bit word mapped to [0, 1): the top 24 bits times 2^-24, exact in f32.
#[inline(always)]
pub fn u32_to_unit(x: u32) -> f32 {
    (x >> 8) as f32 * (1.0 / 16_777_216.0)
}

/// Identifies one independent sequence: which seed, which update step and which use (stream).
/// Element `index` of the sequence is `uniform(index)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RngKey {
    pub seed: u64,
    pub step: u64,
    pub stream: u32,
}

impl RngKey {
    pub fn new(seed: u64, step: u64, stream: u32) -> Self {
        RngKey { seed, step, stream }
    }

    #[inline(always)]
    fn key(&self) -> [u32; 2] {
        [self.seed as u32, (self.seed >> 32) as u32]
    }

    #[inline(always)]
    fn block(&self, block: u32) -> [u32; 4] {
        philox4x32_10([block, self.stream, self.step as u32, (self.step >> 32) as u32], self.key())
    }

    /// The raw 32-bit word for element `index`.
    #[inline]
    pub fn word(&self, index: u32) -> u32 {
        self.block(index >> 2)[(index & 3) as usize]
    }

    /// The uniform in [0, 1) for element `index`.
    #[inline]
    pub fn uniform(&self, index: u32) -> f32 {
        u32_to_unit(self.word(index))
    }

    /// The [`WIDE`] blocks of elements `first..first + 4·WIDE` (`first` a multiple of 4; indices
    /// wrap as [`Self::word`]'s do), word w of block l at `[w][l]`: their ten
    /// rounds interleaved, so that the independent multiplies overlap instead of each waiting for
    /// the last (and the loop vectorises). The same words as [`Self::block`], block by block.
    #[inline(always)]
    fn blocks_wide(&self, first: u32) -> [[u32; WIDE]; 4] {
        let mut c = [[0u32; WIDE]; 4];
        for (l, c0) in c[0].iter_mut().enumerate() {
            *c0 = first.wrapping_add(4 * l as u32) >> 2;
        }
        c[1] = [self.stream; WIDE];
        c[2] = [self.step as u32; WIDE];
        c[3] = [(self.step >> 32) as u32; WIDE];
        let mut k = self.key();
        for round in 0..10 {
            if round > 0 {
                k[0] = k[0].wrapping_add(BUMP_A);
                k[1] = k[1].wrapping_add(BUMP_B);
            }
            for l in 0..WIDE {
                let (hi0, lo0) = mulhilo(MUL_A, c[0][l]);
                let (hi1, lo1) = mulhilo(MUL_B, c[2][l]);
                (c[0][l], c[1][l], c[2][l], c[3][l]) = (hi1 ^ c[1][l] ^ k[0], lo1, hi0 ^ c[3][l] ^ k[1], lo0);
            }
        }
        c
    }

    /// `out[i] = uniform(first + i)`, computing each Philox block once for four elements, and
    /// [`WIDE`] blocks at a time where whole ones fit. Inlined, so that a caller compiled for a
    /// wider instruction set vectorises the blocks' rounds.
    #[inline(always)]
    pub fn fill_uniform(&self, first: u32, out: &mut [f32]) {
        let mut i = 0usize;
        // Up to the first whole block, then WIDE blocks (4·WIDE elements) at a time.
        if first & 3 != 0 {
            let words = self.block(first >> 2);
            let lane = (first & 3) as usize;
            let take = (4 - lane).min(out.len());
            for j in 0..take {
                out[j] = u32_to_unit(words[lane + j]);
            }
            i = take;
        }
        while out.len() - i >= 4 * WIDE {
            let c = self.blocks_wide(first.wrapping_add(i as u32));
            for (l, o) in out[i..i + 4 * WIDE].chunks_exact_mut(4).enumerate() {
                for (w, o) in o.iter_mut().enumerate() {
                    *o = u32_to_unit(c[w][l]);
                }
            }
            i += 4 * WIDE;
        }
        while i < out.len() {
            let index = first.wrapping_add(i as u32);
            let words = self.block(index >> 2);
            let lane = (index & 3) as usize;
            let take = (4 - lane).min(out.len() - i);
            for j in 0..take {
                out[i + j] = u32_to_unit(words[lane + j]);
            }
            i += take;
        }
    }

    /// A uniform integer in `0..n` (n > 0) from element `index`, by 64-bit multiply-shift;
    /// the bias is below 2^-32 · n, far beneath anything a shuffle of 60,000 images can show.
    #[inline]
    pub fn below(&self, index: u32, n: u32) -> u32 {
        ((self.word(index) as u64 * n as u64) >> 32) as u32
    }
}

/// Named streams, so that no two uses of randomness ever share a sequence. The stream word is
/// `kind << 24 | a << 12 | b`: `a` and `b` are small indices such as a layer number.
pub mod stream {
    const fn make(kind: u32, a: u32, b: u32) -> u32 {
        (kind << 24) | ((a & 0xfff) << 12) | (b & 0xfff)
    }
    /// Initial value of parameter tensor `t` (step 0).
    pub const fn init(tensor: u32) -> u32 {
        make(1, tensor, 0)
    }
    /// The epoch's permutation of the training set (step = epoch).
    pub const SHUFFLE: u32 = make(2, 0, 0);
    /// Dynamic binarization of training image pixels (step = epoch, index = image·pixels + j).
    pub const BINARIZE_TRAIN: u32 = make(3, 0, 0);
    /// Binarization of the test set at evaluation `step`.
    pub const BINARIZE_TEST: u32 = make(3, 1, 0);
    /// Binarization of the validation images (held-out training images) at evaluation `step`.
    pub const BINARIZE_VALID: u32 = make(3, 2, 0);
    /// The main sample of encoder layer `l` (1-based).
    pub const fn encoder(layer: u32) -> u32 {
        make(4, layer, 0)
    }
    /// Layer `m` of an alternative chain: the chain in terms block `block` (with two samples
    /// per layer, the block is the layer the chain starts at): its own sample of its first
    /// layer (leave-one-out and the other K-sample estimators) and the fresh upward chain above.
    pub const fn alternate(block: u32, layer: u32) -> u32 {
        make(5, block, layer)
    }
    /// ARMS's K antithetic samples of encoder layer `l`.
    pub const fn arms(layer: u32) -> u32 {
        make(10, layer, 0)
    }
    /// The initial weights of RODEO's control network of encoder layer `l` (step 0).
    pub const fn rodeo_init(layer: u32) -> u32 {
        make(11, layer, 0)
    }
    /// Test-time encoder sample of layer `l`.
    pub const fn eval_encoder(layer: u32) -> u32 {
        make(6, layer, 0)
    }
    /// The bandit agent's initial weights of layer `l` (step 0).
    pub const fn bandit_init(layer: u32) -> u32 {
        make(7, layer, 0)
    }
    /// The initial weights of the bandit's convolution layer `l` (1-based; step 0).
    pub const fn bandit_conv_init(layer: u32) -> u32 {
        make(7, layer, 1)
    }
    /// The bandit's sample of hidden layer `l`, or its action (l = H + 1), in a training step.
    pub const fn bandit(layer: u32) -> u32 {
        make(8, layer, 0)
    }
    /// The same at test time (step = evaluation batch).
    pub const fn bandit_eval(layer: u32) -> u32 {
        make(9, layer, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random123_known_answers() {
        let cases: [([u32; 4], [u32; 2], [u32; 4]); 3] = [
            ([0; 4], [0; 2], [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]),
            ([0xffffffff; 4], [0xffffffff; 2], [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]),
            ([0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344], [0xa4093822, 0x299f31d0], [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]),
        ];
        for (ctr, key, want) in cases {
            assert_eq!(philox4x32_10(ctr, key), want, "counter {ctr:08x?} key {key:08x?}");
        }
    }

    #[test]
    fn fill_matches_elementwise_at_any_offset() {
        let k = RngKey::new(0x1234_5678_9abc_def0, 77, stream::encoder(2));
        // Lengths below, at and across the interleaved blocks' width (4·WIDE elements), and
        // offsets that start inside a block or wrap the index past u32::MAX.
        for first in [0u32, 1, 2, 3, 5, 1000, u32::MAX - 40, u32::MAX - 1] {
            for len in [0usize, 1, 3, 4, 23, 4 * WIDE - 1, 4 * WIDE, 4 * WIDE + 1, 67, 200] {
                let mut out = vec![f32::NAN; len];
                k.fill_uniform(first, &mut out);
                for (i, &u) in out.iter().enumerate() {
                    assert_eq!(u, k.uniform(first.wrapping_add(i as u32)), "first {first}, length {len}, element {i}");
                }
            }
        }
    }

    #[test]
    fn uniform_conversion_is_exact_and_in_range() {
        assert_eq!(u32_to_unit(0), 0.0);
        assert_eq!(u32_to_unit(u32::MAX), 1.0 - 1.0 / 16_777_216.0);
        assert_eq!(u32_to_unit(0x8000_0000), 0.5);
    }

    #[test]
    fn keys_give_distinct_uniform_sequences() {
        let n = 100_000u32;
        let a = RngKey::new(0, 0, stream::encoder(1));
        let b = RngKey::new(0, 1, stream::encoder(1));
        let c = RngKey::new(0, 0, stream::encoder(2));
        let d = RngKey::new(1, 0, stream::encoder(1));
        for k in [a, b, c, d] {
            let mean: f64 = (0..n).map(|i| k.uniform(i) as f64).sum::<f64>() / n as f64;
            assert!((mean - 0.5).abs() < 0.005, "mean {mean} for {k:?}");
        }
        let same = (0..1000).filter(|&i| a.word(i) == b.word(i) || a.word(i) == c.word(i)).count();
        assert!(same < 3, "streams or steps collide: {same} equal words");
        let below_max = (0..n).map(|i| a.below(i, 7)).max().unwrap();
        assert_eq!(below_max, 6);
    }

    #[test]
    fn stream_ids_do_not_collide() {
        let mut ids = vec![stream::SHUFFLE, stream::BINARIZE_TRAIN, stream::BINARIZE_TEST, stream::BINARIZE_VALID];
        for l in 0..8 {
            ids.push(stream::init(l));
            ids.push(stream::encoder(l));
            ids.push(stream::eval_encoder(l));
            ids.push(stream::arms(l));
            ids.push(stream::rodeo_init(l));
            for m in 0..8 {
                ids.push(stream::alternate(l, m));
            }
        }
        let n = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), n);
    }
}
