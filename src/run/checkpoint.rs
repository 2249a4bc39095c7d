//! The checkpoint format: everything a run needs to continue exactly where it stopped, as a
//! JSON header and named f32 tensors. Knows no experiment: each writes its own identity and
//! tensors through [`Checkpoint`], and the state helpers at the end of this file.
//!
//! File layout (version 1), all integers little-endian:
//!
//! ```text
//! 0       8 bytes   magic "HNCACKPT"
//! 8       u32       format version (1)
//! 12      u32       header length h (at most 1 MiB)
//! 16      h bytes   header: UTF-8 JSON: the run's identity, its progress (step, epoch), and
//!                   the name and length of every tensor, in file order
//! 16+h    4·Σlen    the tensors' f32 values, one after another
//! end-4   u32       CRC-32 of every byte before it
//! ```
//!
//! The header says how long every tensor is, so the parser checks that the lengths add up to
//! the bytes actually present before it allocates anything: no input can make it allocate
//! more than the file's own size. Randomness is counter-based (keyed by seed, step and stream),
//! so the step and the seed are the whole random state; nothing else needs saving.

use std::path::Path;

use byteorder::{ByteOrder, LittleEndian};

use crate::backend::Backend;
pub use crate::error::CheckpointError;
use crate::error::{quoted, Error};

pub const MAGIC: &[u8; 8] = b"HNCACKPT";
pub const VERSION: u32 = 1;
const MAX_HEADER: usize = 1 << 20;
const MAX_TENSORS: usize = 4096;
const PREFIX: usize = 16;

/// A checkpoint in memory: a JSON header and named f32 tensors.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    /// The run's identity and progress; the tensor table is added on writing.
    pub header: serde_json::Map<String, serde_json::Value>,
    pub tensors: Vec<(String, Vec<f32>)>,
}

impl Checkpoint {
    pub fn new(header: serde_json::Map<String, serde_json::Value>) -> Self {
        Checkpoint { header, tensors: Vec::new() }
    }

    /// An empty checkpoint of `experiment` ("vae" or "bandit") at `step`, after `epoch` whole
    /// epochs, whose header also holds the run's `identity` (a JSON object of its settings).
    pub fn of_run(experiment: &str, step: u64, epoch: u64, identity: serde_json::Value) -> Self {
        let serde_json::Value::Object(mut header) = identity else { panic!("a run's identity is a JSON object") };
        header.insert("experiment".into(), experiment.into());
        header.insert("written_by".into(), concat!("hnca ", env!("CARGO_PKG_VERSION")).into());
        header.insert("step".into(), step.into());
        header.insert("epoch".into(), epoch.into());
        Checkpoint::new(header)
    }

    pub fn push(&mut self, name: impl Into<String>, values: Vec<f32>) {
        self.tensors.push((name.into(), values));
    }

    /// The file's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut header = self.header.clone();
        let table: Vec<serde_json::Value> =
            self.tensors.iter().map(|(name, v)| serde_json::json!({ "name": name, "len": v.len() })).collect();
        header.insert("tensors".into(), table.into());
        let header = serde_json::Value::Object(header).to_string().into_bytes();
        let values: usize = self.tensors.iter().map(|(_, v)| v.len()).sum();
        let mut out = Vec::with_capacity(PREFIX + header.len() + 4 * values + 4);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&(header.len() as u32).to_le_bytes());
        out.extend_from_slice(&header);
        for (_, v) in &self.tensors {
            for x in v {
                out.extend_from_slice(&x.to_le_bytes());
            }
        }
        let crc = crc32(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Parses a checkpoint; never panics, and allocates at most about the input's size.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CheckpointError> {
        if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
            return Err(CheckpointError::Foreign);
        }
        if bytes.len() < PREFIX + 4 {
            return Err(CheckpointError::Truncated(format!("{} bytes, shorter than the fixed header", bytes.len())));
        }
        let version = LittleEndian::read_u32(&bytes[8..12]);
        if version != VERSION {
            return Err(CheckpointError::Version { found: version, supported: VERSION });
        }
        let (body, tail) = bytes.split_at(bytes.len() - 4);
        let header_len = LittleEndian::read_u32(&bytes[12..16]) as usize;
        if header_len > MAX_HEADER {
            return Err(CheckpointError::Header(format!("header length {header_len} exceeds {MAX_HEADER}")));
        }
        if PREFIX + header_len > body.len() {
            return Err(CheckpointError::Truncated(format!("the header needs {header_len} bytes, {} remain", body.len() - PREFIX)));
        }
        let stored = LittleEndian::read_u32(tail);
        let computed = crc32(body);
        let header: serde_json::Value = serde_json::from_slice(&body[PREFIX..PREFIX + header_len]).map_err(|e| {
            if stored != computed {
                CheckpointError::Checksum { stored, computed }
            } else {
                CheckpointError::Header(e.to_string())
            }
        })?;
        let serde_json::Value::Object(mut header) = header else {
            return Err(CheckpointError::Header("not a JSON object".into()));
        };
        let table = match header.remove("tensors") {
            Some(serde_json::Value::Array(t)) if t.len() <= MAX_TENSORS => t,
            Some(serde_json::Value::Array(t)) => {
                return Err(CheckpointError::Header(format!("{} tensors, at most {MAX_TENSORS}", t.len())))
            }
            _ => return Err(CheckpointError::Header("no tensor table".into())),
        };
        let mut entries = Vec::with_capacity(table.len());
        let mut total: u64 = 0;
        for entry in &table {
            let name = entry.get("name").and_then(|n| n.as_str());
            let len = entry.get("len").and_then(|n| n.as_u64());
            let (Some(name), Some(len)) = (name, len) else {
                return Err(CheckpointError::Header(format!("bad tensor entry {}", quoted(&entry.to_string()))));
            };
            total = total.saturating_add(len);
            entries.push((name.to_string(), len));
        }
        let data = &body[PREFIX + header_len..];
        let needed = total.saturating_mul(4);
        if needed != data.len() as u64 {
            let what = format!("the tensor table needs {needed} bytes of values, the file holds {}", data.len());
            return Err(if stored != computed || needed > data.len() as u64 {
                CheckpointError::Truncated(what)
            } else {
                CheckpointError::Header(what)
            });
        }
        if stored != computed {
            return Err(CheckpointError::Checksum { stored, computed });
        }
        let mut offset = 0;
        let mut tensors = Vec::with_capacity(entries.len());
        for (name, len) in entries {
            let n = len as usize;
            let mut v = vec![0.0f32; n];
            LittleEndian::read_f32_into(&data[offset..offset + 4 * n], &mut v);
            offset += 4 * n;
            tensors.push((name, v));
        }
        Ok(Checkpoint { header, tensors })
    }

    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let bytes = std::fs::read(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
        Checkpoint::from_bytes(&bytes).map_err(|source| Error::Checkpoint { path: path.to_path_buf(), source })
    }

    /// Writes atomically and durably: a crash at any point leaves either the old file or the new one.
    pub fn save(&self, path: &Path) -> Result<(), Error> {
        super::files::write_atomically(path, &self.to_bytes())
    }

    /// Removes and returns tensor `name`, which must hold `len` values.
    pub fn take(&mut self, name: &str, len: usize) -> Result<Vec<f32>, CheckpointError> {
        let i = self
            .tensors
            .iter()
            .position(|(n, _)| n == name)
            .ok_or_else(|| CheckpointError::Mismatch(format!("it has no tensor {name}")))?;
        let (_, v) = self.tensors.swap_remove(i);
        if v.len() != len {
            return Err(CheckpointError::Mismatch(format!("tensor {name} holds {} values, this model needs {len}", v.len())));
        }
        Ok(v)
    }

    /// Header field `key` read by `get`, or an error naming the `kind` of field expected.
    fn field<'a, T>(&'a self, key: &str, kind: &str, get: impl FnOnce(&'a serde_json::Value) -> Option<T>) -> Result<T, CheckpointError> {
        self.header.get(key).and_then(get).ok_or_else(|| CheckpointError::Header(format!("no {kind} field \"{key}\"")))
    }

    pub fn str_field(&self, key: &str) -> Result<&str, CheckpointError> {
        self.field(key, "string", |v| v.as_str())
    }

    /// Checks the header names `wanted` as its experiment.
    pub fn expect_experiment(&self, wanted: &super::describe::Description) -> Result<(), CheckpointError> {
        let found = self.str_field("experiment")?;
        if found != wanted.name {
            return Err(CheckpointError::WrongExperiment { found: super::describe::display_name(found), wanted: wanted.display.into() });
        }
        Ok(())
    }

    /// A field holding one of the names of a command-line choice (an estimator, a binarization).
    pub fn enum_field<T: clap::ValueEnum>(&self, key: &str) -> Result<T, CheckpointError> {
        let name = self.str_field(key)?;
        T::from_str(name, false).map_err(|_| CheckpointError::Header(format!("unknown {key} {}", quoted(name))))
    }

    pub fn u64_field(&self, key: &str) -> Result<u64, CheckpointError> {
        self.field(key, "integer", |v| v.as_u64())
    }

    pub fn f64_field(&self, key: &str) -> Result<f64, CheckpointError> {
        self.field(key, "number", |v| v.as_f64())
    }

    pub fn bool_field(&self, key: &str) -> Result<bool, CheckpointError> {
        self.field(key, "boolean", |v| v.as_bool())
    }

    /// A list of small positive integers (layer widths), each at most `max`.
    pub fn widths_field(&self, key: &str, max: usize) -> Result<Vec<usize>, CheckpointError> {
        let bad = || CheckpointError::Header(format!("\"{key}\" is not a list of 1 to 16 widths of 1 to {max}"));
        let list = self.header.get(key).and_then(|v| v.as_array()).ok_or_else(bad)?;
        if list.is_empty() || list.len() > 16 {
            return Err(bad());
        }
        list.iter().map(|w| w.as_u64().filter(|&w| w >= 1 && w <= max as u64).map(|w| w as usize).ok_or_else(bad)).collect()
    }
}

/// Parameters and both Adam moments of a trainer, each a list of tensors in one order, named
/// by `names` (name, length); saved as "param/NAME", "adam_m/NAME", "adam_v/NAME".
pub(crate) const STATE_SETS: [&str; 3] = ["param", "adam_m", "adam_v"];

/// Adds the tensors of `sets` (in [`STATE_SETS`] order) to `ck`, downloaded from `be`.
pub(crate) fn push_state<B: Backend>(ck: &mut Checkpoint, be: &B, names: &[(String, usize)], sets: [Vec<&B::Buf>; 3]) {
    for (prefix, set) in STATE_SETS.iter().zip(sets) {
        for ((name, _), t) in names.iter().zip(set) {
            ck.push(format!("{prefix}/{name}"), be.download(t));
        }
    }
}

/// Loads the tensors of `sets` (in [`STATE_SETS`] order) from `ck`, checking every length.
pub(crate) fn take_state<B: Backend>(
    ck: &mut Checkpoint,
    be: &B,
    names: &[(String, usize)],
    sets: [Vec<&mut B::Buf>; 3],
) -> Result<(), CheckpointError> {
    for (prefix, set) in STATE_SETS.iter().zip(sets) {
        for ((name, len), t) in names.iter().zip(set) {
            be.write(t, &ck.take(&format!("{prefix}/{name}"), *len)?);
        }
    }
    Ok(())
}

/// The first NaN or infinity among the gradients, parameters and Adam moments, in words.
pub(crate) fn first_non_finite<B: Backend>(be: &B, names: &[(String, usize)], sets: [Vec<&B::Buf>; 4]) -> Option<String> {
    let kinds = ["gradient", "parameter", "Adam first moment", "Adam second moment"];
    for (what, set) in kinds.iter().zip(sets) {
        for ((name, _), t) in names.iter().zip(set) {
            if let Some(found) = non_finite(&format!("{what} {name}"), &be.download(t)) {
                return Some(found);
            }
        }
    }
    None
}

/// `None` if every value is finite, else how many NaNs and infinities `what` holds.
pub fn non_finite(what: &str, values: &[f32]) -> Option<String> {
    let nan = values.iter().filter(|x| x.is_nan()).count();
    let inf = values.iter().filter(|x| x.is_infinite()).count();
    (nan + inf > 0).then(|| format!("{what} holds {nan} NaN and {inf} infinite values (of {})", values.len()))
}

/// CRC-32 (IEEE), as gzip and PNG use.
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = flate2::Crc::new();
    crc.update(bytes);
    crc.sum()
}

/// Compares the fields of a run's identity that must agree for a resume to be exact, and names
/// every one that does not.
pub fn check_same(what: &[(&str, String, String)]) -> Result<(), CheckpointError> {
    let diffs: Vec<String> = what
        .iter()
        .filter(|(_, saved, now)| saved != now)
        .map(|(name, saved, now)| format!("{name} {saved} (checkpoint) vs {now}"))
        .collect();
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(CheckpointError::Mismatch(diffs.join(", ") + "; resume with the options the checkpoint was trained with"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Checkpoint {
        let mut header = serde_json::Map::new();
        header.insert("experiment".into(), "vae".into());
        header.insert("step".into(), 1200.into());
        let mut c = Checkpoint::new(header);
        c.push("a", vec![1.0, -2.5, f32::MIN_POSITIVE]);
        c.push("b", vec![]);
        c.push("c", (0..100).map(|i| i as f32 * 0.1).collect());
        c
    }

    #[test]
    fn round_trips_bit_for_bit() {
        let c = sample();
        let bytes = c.to_bytes();
        let back = Checkpoint::from_bytes(&bytes).unwrap();
        assert_eq!(back, c);
        assert_eq!(back.to_bytes(), bytes);
    }

    #[test]
    fn every_truncation_and_every_flipped_byte_is_an_error() {
        let bytes = sample().to_bytes();
        for n in 0..bytes.len() {
            assert!(Checkpoint::from_bytes(&bytes[..n]).is_err(), "truncated to {n} bytes");
        }
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            assert!(Checkpoint::from_bytes(&b).is_err(), "byte {i} flipped");
        }
    }

    #[test]
    fn a_header_claiming_huge_tensors_is_an_error_not_an_allocation() {
        let mut header = serde_json::Map::new();
        header.insert("x".into(), 1.into());
        let mut c = Checkpoint::new(header);
        c.push("w", vec![0.0; 4]);
        let bytes = c.to_bytes();
        let text = String::from_utf8_lossy(&bytes).to_string();
        // Rewrite the claimed length to 10^12 values, then fix the checksum so only the
        // length check can object.
        let (from, to) = ("\"len\":4", "\"len\":1000000000000");
        let patched = text.replacen(from, to, 1);
        assert_ne!(patched, text);
        let mut b = patched.into_bytes();
        let header_len = LittleEndian::read_u32(&b[12..16]) + (to.len() - from.len()) as u32;
        b[12..16].copy_from_slice(&header_len.to_le_bytes());
        let n = b.len();
        let crc = crc32(&b[..n - 4]);
        b[n - 4..].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(Checkpoint::from_bytes(&b), Err(CheckpointError::Truncated(_))));
    }

    #[test]
    fn foreign_and_future_files_say_so() {
        assert_eq!(Checkpoint::from_bytes(b"\x1f\x8b gzip"), Err(CheckpointError::Foreign));
        let mut b = sample().to_bytes();
        b[8] = 2;
        assert_eq!(Checkpoint::from_bytes(&b), Err(CheckpointError::Version { found: 2, supported: VERSION }));
    }
}
