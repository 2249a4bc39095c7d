//! MNIST-format IDX files (gzip-compressed), as distributed for MNIST and Fashion-MNIST.
//! Every failure is a [`DataError`] whose message is one line naming the file and the problem.

use std::io::Read;
use std::path::{Path, PathBuf};

use byteorder::{BigEndian, ByteOrder};

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
    Length { path: PathBuf, expected: u64, found: u64 },
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
    })
}

/// Loads one images file and its labels file, checking that they belong together.
pub fn load_split(images: &Path, labels: &Path) -> Result<Split, DataError> {
    let img = read_gzip(images)?;
    let (dims, pixels) = parse_idx(images, &img, IMAGES_MAGIC, 3, "images")?;
    let lab = read_gzip(labels)?;
    let (ldims, label_bytes) = parse_idx(labels, &lab, LABELS_MAGIC, 1, "labels")?;
    let (n, rows, cols) = (dims[0] as usize, dims[1] as usize, dims[2] as usize);
    if ldims[0] as usize != n {
        return Err(DataError::CountMismatch {
            images_path: images.into(),
            images: n,
            labels_path: labels.into(),
            labels: ldims[0] as usize,
        });
    }
    Ok(Split { images: pixels.to_vec(), labels: label_bytes.to_vec(), n, rows, cols })
}

fn read_gzip(path: &Path) -> Result<Vec<u8>, DataError> {
    let raw = std::fs::read(path).map_err(|source| DataError::Unreadable { path: path.into(), source })?;
    if raw.len() < 2 || raw[0] != 0x1f || raw[1] != 0x8b {
        return Err(DataError::NotGzip { path: path.into() });
    }
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(&raw[..]).read_to_end(&mut out).map_err(|source| DataError::Gzip { path: path.into(), source })?;
    Ok(out)
}

/// Checks an IDX header (magic, then `ndim` big-endian u32 dimensions) and the payload length;
/// returns the dimensions and the payload.
fn parse_idx<'a>(path: &Path, bytes: &'a [u8], magic: u32, ndim: usize, what: &'static str) -> Result<(Vec<u32>, &'a [u8]), DataError> {
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
    let expected: u64 = dims.iter().map(|&d| d as u64).product();
    let payload = &bytes[header..];
    if payload.len() as u64 != expected {
        return Err(DataError::Length { path: path.into(), expected, found: payload.len() as u64 });
    }
    Ok((dims, payload))
}
