//! The data: MNIST-format IDX files (gzip-compressed), as distributed for MNIST and
//! Fashion-MNIST, and how their grey pixels become the bits every experiment trains on. Every
//! failure is a [`DataError`] whose message is one line naming the file and the problem.

use std::io::Read;
use std::path::{Path, PathBuf};

use byteorder::{BigEndian, ByteOrder};

use crate::rng::RngKey;

pub const TRAIN_IMAGES: &str = "train-images-idx3-ubyte.gz";
pub const TRAIN_LABELS: &str = "train-labels-idx1-ubyte.gz";
pub const TEST_IMAGES: &str = "t10k-images-idx3-ubyte.gz";
pub const TEST_LABELS: &str = "t10k-labels-idx1-ubyte.gz";

const IMAGES_MAGIC: u32 = 0x0000_0803;
const LABELS_MAGIC: u32 = 0x0000_0801;
const MAX_SIDE: u32 = 4096;

/// One split: `images` is (n, rows·cols) row-major pixels 0..=255, `labels` is (n).
#[derive(Clone, Debug)]
pub struct Split {
    pub images: Vec<u8>,
    pub labels: Vec<u8>,
    pub n: usize,
    pub rows: usize,
    pub cols: usize,
}

impl Split {
    pub fn pixels(&self) -> usize {
        self.rows * self.cols
    }
    pub fn image(&self, i: usize) -> &[u8] {
        let p = self.pixels();
        &self.images[i * p..(i + 1) * p]
    }
}

#[derive(Clone, Debug)]
pub struct Mnist {
    pub train: Split,
    pub test: Split,
    /// Training images held out for validation ([`Mnist::hold_out`]).
    pub valid: Option<Split>,
}

impl Split {
    /// Images `range` of the split, as a split of their own.
    pub fn slice(&self, range: std::ops::Range<usize>) -> Split {
        let p = self.pixels();
        Split {
            images: self.images[range.start * p..range.end * p].to_vec(),
            labels: self.labels[range.clone()].to_vec(),
            n: range.len(),
            rows: self.rows,
            cols: self.cols,
        }
    }
}

impl Mnist {
    /// Keeps the first `n` training images for training and the rest as the validation set
    /// (DisARM's protocol: 50,000 and 10,000). An error if the training set has no image left
    /// over, or fewer than `n` (the reason in one line).
    pub fn hold_out(&mut self, n: usize) -> Result<(), String> {
        let total = self.train.n;
        if n == 0 || n >= total {
            return Err(format!(
                "--train-images {n}: the training set has {total} images; keep 1 to {} for training and the rest for validation",
                total.saturating_sub(1)
            ));
        }
        self.valid = Some(self.train.slice(n..total));
        self.train = self.train.slice(0..n);
        Ok(())
    }
}

/// How grey MNIST pixels become bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Binarize {
    /// A fresh Bernoulli(pixel/255) draw for every image every epoch (the paper's protocol).
    Dynamic,
    /// A fixed threshold, pixel/255 > 0.5.
    Threshold,
}

/// Rows `indices` of the split as bits, (indices.len(), n0). Dynamic draws are keyed by image
/// index, so an image's bits in an epoch do not depend on where the shuffle put it.
pub fn binarize_batch(split: &Split, indices: &[u32], mode: Binarize, key: RngKey, n0: usize) -> Vec<f32> {
    let mut x = vec![0.0f32; indices.len() * n0];
    binarize_rows(&mut x, &split.images, n0, indices, mode, key);
    x
}

/// [`binarize_batch`] into `x` (rows.len(), n0), from `images` (count, n0): the rule the
/// backends' `gather_binarize` follows.
pub fn binarize_rows(x: &mut [f32], images: &[u8], n0: usize, rows: &[u32], mode: Binarize, key: RngKey) {
    let mut u = vec![0.0f32; n0];
    for (row, &img) in x.chunks_mut(n0).zip(rows) {
        let pixels = &images[img as usize * n0..(img as usize + 1) * n0];
        match mode {
            Binarize::Dynamic => {
                key.fill_uniform(img.wrapping_mul(n0 as u32), &mut u);
                for ((xi, &px), &ui) in row.iter_mut().zip(pixels).zip(&u) {
                    *xi = (ui < px as f32 / 255.0) as u8 as f32;
                }
            }
            Binarize::Threshold => {
                for (xi, &px) in row.iter_mut().zip(pixels) {
                    *xi = (px as f32 / 255.0 > 0.5) as u8 as f32;
                }
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("data directory {}: {reason}", dir.display())]
    Directory { dir: PathBuf, reason: String },
    #[error("{}: cannot read: {source}", path.display())]
    Unreadable { path: PathBuf, source: std::io::Error },
    #[error("{}: not a gzip file (it does not start with the gzip magic bytes 1f 8b)", path.display())]
    NotGzip { path: PathBuf },
    #[error("{}: corrupt or truncated gzip stream: {source}", path.display())]
    Gzip { path: PathBuf, source: std::io::Error },
    #[error("{}: wrong IDX magic number {found:#010x}, expected {expected:#010x} ({what})", path.display())]
    Magic { path: PathBuf, found: u32, expected: u32, what: &'static str },
    #[error("{}: implausible IDX header: {detail}", path.display())]
    Header { path: PathBuf, detail: String },
    #[error("{}: truncated or padded: the header promises {expected} bytes of data, the file holds {found}", path.display())]
    Length { path: PathBuf, expected: u64, found: String },
    #[error("{} has {images} images but {} has {labels} labels", images_path.display(), labels_path.display())]
    CountMismatch { images_path: PathBuf, images: usize, labels_path: PathBuf, labels: usize },
}

/// The directory of MNIST files that ships with the crate.
pub fn default_data_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/data"))
}

/// Loads the four standard files from `dir`.
pub fn load_mnist(dir: &Path) -> Result<Mnist, DataError> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(DataError::Directory { dir: dir.into(), reason: "not a directory".into() }),
        Err(e) => return Err(DataError::Directory { dir: dir.into(), reason: e.to_string() }),
    }
    if let Err(e) = std::fs::read_dir(dir) {
        return Err(DataError::Directory { dir: dir.into(), reason: e.to_string() });
    }
    Ok(Mnist {
        train: load_split(&dir.join(TRAIN_IMAGES), &dir.join(TRAIN_LABELS))?,
        test: load_split(&dir.join(TEST_IMAGES), &dir.join(TEST_LABELS))?,
        valid: None,
    })
}

/// Loads one images file and its labels file, checking that they belong together.
pub fn load_split(images: &Path, labels: &Path) -> Result<Split, DataError> {
    let (dims, pixels) = decode_idx(images, &read_file(images)?, IdxKind::Images)?;
    let (ldims, label_bytes) = decode_idx(labels, &read_file(labels)?, IdxKind::Labels)?;
    let (n, rows, cols) = (dims[0] as usize, dims[1] as usize, dims[2] as usize);
    if ldims[0] as usize != n {
        return Err(DataError::CountMismatch {
            images_path: images.into(),
            images: n,
            labels_path: labels.into(),
            labels: ldims[0] as usize,
        });
    }
    Ok(Split { images: pixels, labels: label_bytes, n, rows, cols })
}

fn read_file(path: &Path) -> Result<Vec<u8>, DataError> {
    std::fs::read(path).map_err(|source| DataError::Unreadable { path: path.into(), source })
}

/// Which of the two IDX files of a split.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdxKind {
    /// (n, rows, cols) unsigned bytes.
    Images,
    /// (n) unsigned bytes.
    Labels,
}

/// The most payload an IDX file may claim: 2 GiB, forty times MNIST's training images. The
/// header is checked against this before any payload is read, so a file claiming 10^12 values
/// (or a gzip bomb) is an error, not an attempt to allocate them.
pub const MAX_IDX_PAYLOAD: u64 = 1 << 31;

/// Decompresses and parses a gzip-compressed IDX file (`path` is only for messages): checks
/// the magic, the header's plausibility, then that the payload has exactly the promised length.
/// Never panics; allocates no more than the payload actually present, and at most
/// [`MAX_IDX_PAYLOAD`].
pub fn decode_idx(path: &Path, gz: &[u8], kind: IdxKind) -> Result<(Vec<u32>, Vec<u8>), DataError> {
    let (magic, ndim, what) = match kind {
        IdxKind::Images => (IMAGES_MAGIC, 3, "images"),
        IdxKind::Labels => (LABELS_MAGIC, 1, "labels"),
    };
    if gz.len() < 2 || gz[0] != 0x1f || gz[1] != 0x8b {
        return Err(DataError::NotGzip { path: path.into() });
    }
    let mut stream = flate2::read::GzDecoder::new(gz);
    let gzip_error = |source| DataError::Gzip { path: path.into(), source };
    let header_len = 4 * (1 + ndim);
    let mut header = Vec::with_capacity(header_len);
    (&mut stream).take(header_len as u64).read_to_end(&mut header).map_err(gzip_error)?;
    let dims = parse_idx_header(path, &header, magic, ndim, what)?;
    let expected: u64 = dims.iter().map(|&d| d as u64).product();
    if expected > MAX_IDX_PAYLOAD {
        return Err(DataError::Header {
            path: path.into(),
            detail: format!("it claims {expected} bytes of {what}, more than the {MAX_IDX_PAYLOAD} this reader accepts"),
        });
    }
    // One byte more than promised tells a padded file from an exact one without reading the rest.
    let mut payload = Vec::new();
    stream.take(expected + 1).read_to_end(&mut payload).map_err(gzip_error)?;
    if payload.len() as u64 != expected {
        let found = if payload.len() as u64 > expected { "more".to_string() } else { payload.len().to_string() };
        return Err(DataError::Length { path: path.into(), expected, found });
    }
    Ok((dims, payload))
}

/// Checks an IDX header (magic, then `ndim` big-endian u32 dimensions); returns the dimensions.
fn parse_idx_header(path: &Path, bytes: &[u8], magic: u32, ndim: usize, what: &'static str) -> Result<Vec<u32>, DataError> {
    let header = 4 * (1 + ndim);
    if bytes.len() < header {
        return Err(DataError::Header {
            path: path.into(),
            detail: format!("{} bytes, too short for a {ndim}-dimensional IDX header", bytes.len()),
        });
    }
    let found = BigEndian::read_u32(&bytes[..4]);
    if found != magic {
        return Err(DataError::Magic { path: path.into(), found, expected: magic, what });
    }
    let dims: Vec<u32> = (0..ndim).map(|i| BigEndian::read_u32(&bytes[4 + 4 * i..8 + 4 * i])).collect();
    if dims[0] == 0 {
        return Err(DataError::Header { path: path.into(), detail: "zero items".into() });
    }
    if dims[1..].iter().any(|&d| d == 0 || d > MAX_SIDE) {
        return Err(DataError::Header {
            path: path.into(),
            detail: format!(
                "image size {}, expected sides of 1 to {MAX_SIDE}",
                dims[1..].iter().map(u32::to_string).collect::<Vec<_>>().join("x")
            ),
        });
    }
    Ok(dims)
}
