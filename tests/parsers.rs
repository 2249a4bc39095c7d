//! Property tests of the two parsers that read files from outside: the IDX reader and the
//! checkpoint reader. Arbitrary bytes, and valid files mutated at random (flipped bits,
//! truncations, insertions, rewritten headers with a repaired checksum), must give an error or
//! a value, never a panic, and never an allocation beyond what the input holds.
//!
//! The inputs come from Philox, so every failure reproduces from its case number.

use std::io::Write;
use std::path::Path;

use hnca::data::{decode_idx, DataError, IdxKind};
use hnca::rng::RngKey;
use hnca::run::checkpoint::{crc32, Checkpoint};

/// A deterministic stream of random numbers for case `case`.
struct Gen {
    key: RngKey,
    i: u32,
}

impl Gen {
    fn new(case: u64) -> Self {
        Gen { key: RngKey::new(0xf022, case, 0), i: 0 }
    }
    fn below(&mut self, n: usize) -> usize {
        self.i += 1;
        self.key.below(self.i, n.max(1) as u32) as usize
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.below(256) as u8).collect()
    }
    /// One random mutation of `v`.
    fn mutate(&mut self, v: &mut Vec<u8>) {
        match self.below(4) {
            0 if !v.is_empty() => {
                let i = self.below(v.len());
                v[i] ^= 1 << self.below(8);
            }
            1 => {
                let n = self.below(v.len() + 1);
                v.truncate(n);
            }
            2 => {
                let i = self.below(v.len() + 1);
                let len = 1 + self.below(16);
                let extra = self.bytes(len);
                v.splice(i..i, extra);
            }
            _ if !v.is_empty() => {
                let i = self.below(v.len());
                v[i] = self.below(256) as u8;
            }
            _ => v.push(0),
        }
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// A valid uncompressed IDX images file of n images of rows x cols.
fn idx_images(n: u32, rows: u32, cols: u32) -> Vec<u8> {
    let mut v = vec![0, 0, 8, 3];
    for d in [n, rows, cols] {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend((0..n * rows * cols).map(|i| (i * 37 % 256) as u8));
    v
}

#[test]
fn the_idx_reader_never_panics_on_arbitrary_or_mutated_input() {
    let path = Path::new("fuzz.gz");
    let valid = idx_images(3, 4, 5);
    assert_eq!(decode_idx(path, &gzip(&valid), IdxKind::Images).unwrap().1.len(), 60);
    for case in 0..3000u64 {
        let mut g = Gen::new(case);
        // Mutations of the uncompressed file (then compressed), and of the compressed bytes.
        let mut raw = valid.clone();
        for _ in 0..1 + g.below(4) {
            g.mutate(&mut raw);
        }
        let _ = decode_idx(path, &gzip(&raw), IdxKind::Images);
        let _ = decode_idx(path, &gzip(&raw), IdxKind::Labels);
        let mut gz = gzip(&valid);
        for _ in 0..1 + g.below(4) {
            g.mutate(&mut gz);
        }
        let _ = decode_idx(path, &gz, IdxKind::Images);
        let n = g.below(64);
        let noise = g.bytes(n);
        let _ = decode_idx(path, &noise, IdxKind::Labels);
        let _ = decode_idx(path, &gzip(&noise), IdxKind::Images);
    }
}

#[test]
fn an_idx_header_claiming_a_trillion_values_is_an_error_not_an_allocation() {
    let path = Path::new("huge.gz");
    for dims in [[1_000_000u32, 1000, 1000], [u32::MAX, 28, 28], [u32::MAX, 4096, 4096]] {
        let mut v = vec![0, 0, 8, 3];
        dims.iter().for_each(|d| v.extend_from_slice(&d.to_be_bytes()));
        v.extend_from_slice(&[0; 100]);
        match decode_idx(path, &gzip(&v), IdxKind::Images) {
            Err(DataError::Header { detail, .. }) => assert!(detail.contains("more than"), "{detail}"),
            other => panic!("{dims:?}: {other:?}"),
        }
    }
    // A labels file claiming a billion labels (within the limit) but holding 10 is truncated,
    // found after reading the 10: nothing is allocated for the billion.
    let mut v = vec![0, 0, 8, 1];
    v.extend_from_slice(&1_000_000_000u32.to_be_bytes());
    v.extend_from_slice(&[1; 10]);
    assert!(matches!(decode_idx(path, &gzip(&v), IdxKind::Labels), Err(DataError::Length { .. })));
}

fn valid_checkpoint() -> Checkpoint {
    let mut header = serde_json::Map::new();
    header.insert("experiment".into(), "vae".into());
    header.insert("step".into(), 7.into());
    let mut c = Checkpoint::new(header);
    c.push("param/enc1.w", (0..24).map(|i| i as f32 / 7.0).collect());
    c.push("param/prior", vec![0.5; 3]);
    c
}

/// Rewrites a checkpoint's header text and repairs the length field and the checksum, so the
/// parser's later checks, not the checksum, meet the change.
fn with_header(bytes: &[u8], edit: impl Fn(&str) -> String) -> Vec<u8> {
    let h = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
    let header = edit(std::str::from_utf8(&bytes[16..16 + h]).unwrap());
    let mut out = bytes[..12].to_vec();
    out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&bytes[16 + h..bytes.len() - 4]);
    let crc = crc32(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

#[test]
fn the_checkpoint_reader_never_panics_on_arbitrary_or_mutated_input() {
    let valid = valid_checkpoint().to_bytes();
    assert_eq!(Checkpoint::from_bytes(&valid).unwrap(), valid_checkpoint());
    for case in 0..20_000u64 {
        let mut g = Gen::new(case);
        let mut b = valid.clone();
        for _ in 0..1 + g.below(3) {
            g.mutate(&mut b);
        }
        // A mutation the checksum catches, or one that leaves the bytes as they were.
        assert!(Checkpoint::from_bytes(&b).is_err() || b == valid, "case {case}");
        let n = g.below(80);
        let mut noise = b"HNCACKPT".to_vec();
        noise.extend(g.bytes(n));
        assert!(Checkpoint::from_bytes(&noise).is_err(), "case {case}");
    }
    // Headers that are valid JSON with a good checksum but make no sense.
    let edits: [(&str, &str); 7] = [
        ("\"len\":24", "\"len\":1000000000000"),
        ("\"len\":24", "\"len\":-24"),
        ("\"len\":24", "\"len\":18446744073709551615"),
        ("\"len\":24", "\"len\":\"24\""),
        ("\"tensors\":[", "\"tensors\":[{},"),
        ("\"tensors\"", "\"tensorz\""),
        ("{", "["),
    ];
    for (from, to) in edits {
        let b = with_header(&valid, |h| h.replacen(from, to, 1));
        assert_ne!(b, valid, "{from} not in the header");
        assert!(Checkpoint::from_bytes(&b).is_err(), "{from} -> {to}");
    }
}
