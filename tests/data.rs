//! The MNIST loader on the shipped files, and on corrupted copies of them.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use hnca::data::{default_data_dir, load_mnist, load_split, DataError, TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS};
use md5::{Digest, Md5};

fn shipped(name: &str) -> PathBuf {
    default_data_dir().join(name)
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes).read_to_end(&mut out).unwrap();
    out
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

#[test]
fn shipped_files_are_the_original_mnist_files() {
    let published = [
        (TRAIN_IMAGES, "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
        (TRAIN_LABELS, "d53e105ee54ea40749a09fcbcd1e9432"),
        (TEST_IMAGES, "9fb629c4189551a2d022fa330f9573f3"),
        (TEST_LABELS, "ec29112dd5afa0611ce80d1b7f02629c"),
    ];
    for (name, md5) in published {
        let digest = Md5::digest(std::fs::read(shipped(name)).unwrap());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, md5, "{name}");
    }
}

#[test]
fn loads_the_shipped_mnist() {
    let m = load_mnist(&default_data_dir()).unwrap();
    for (split, n) in [(&m.train, 60_000), (&m.test, 10_000)] {
        assert_eq!((split.n, split.rows, split.cols, split.pixels()), (n, 28, 28, 784));
        assert_eq!(split.images.len(), n * 784);
        assert_eq!(split.labels.len(), n);
        assert_eq!(*split.images.iter().max().unwrap(), 255);
        let mut hist = [0usize; 10];
        split.labels.iter().for_each(|&l| hist[l as usize] += 1);
        assert_eq!(hist.iter().sum::<usize>(), n);
        assert!(hist.iter().all(|&c| c > n / 20), "{hist:?}");
    }
    assert_eq!(m.train.labels[0], 5);
    assert_eq!(m.test.labels[0], 7);
    // The first training image (a 5) has ink in its middle rows and none in its top row.
    assert!(m.train.image(0)[..28].iter().all(|&p| p == 0));
    assert!(m.train.image(0)[14 * 28..15 * 28].iter().any(|&p| p > 200));
}

/// A directory holding the test split's two files, with `images` and `labels` as their bytes.
fn split_dir(images: &[u8], labels: &[u8]) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let (ip, lp) = (dir.path().join(TEST_IMAGES), dir.path().join(TEST_LABELS));
    std::fs::write(&ip, images).unwrap();
    std::fs::write(&lp, labels).unwrap();
    (dir, ip, lp)
}

/// Asserts that loading fails with a one-line message naming `file` and containing `word`.
fn assert_error(result: Result<hnca::data::Split, DataError>, file: &Path, word: &str) {
    let msg = match result {
        Ok(_) => panic!("expected an error mentioning {word:?} for {}", file.display()),
        Err(e) => e.to_string(),
    };
    assert!(!msg.contains('\n'), "message is not one line: {msg}");
    assert!(msg.contains(&file.display().to_string()), "message does not name {}: {msg}", file.display());
    assert!(msg.contains(word), "message does not say {word:?}: {msg}");
}

#[test]
fn corrupt_files_give_one_line_errors_naming_the_file() {
    let images_gz = std::fs::read(shipped(TEST_IMAGES)).unwrap();
    let labels_gz = std::fs::read(shipped(TEST_LABELS)).unwrap();
    let images = gunzip(&images_gz);
    let labels = gunzip(&labels_gz);

    // Sanity: the untouched copies load.
    let (_d, ip, lp) = split_dir(&images_gz, &labels_gz);
    assert_eq!(load_split(&ip, &lp).unwrap().n, 10_000);

    // Missing file.
    let (_d, ip, lp) = split_dir(&images_gz, &labels_gz);
    std::fs::remove_file(&lp).unwrap();
    assert_error(load_split(&ip, &lp), &lp, "cannot read");

    // Not gzip at all.
    let (_d, ip, lp) = split_dir(&images, &labels_gz);
    assert_error(load_split(&ip, &lp), &ip, "not a gzip file");

    // A gzip stream cut in half.
    let (_d, ip, lp) = split_dir(&images_gz[..images_gz.len() / 2], &labels_gz);
    assert_error(load_split(&ip, &lp), &ip, "corrupt or truncated gzip");

    // Valid gzip, wrong magic number (the labels' magic in the images file).
    let mut bad = images.clone();
    bad[3] = 0x01;
    let (_d, ip, lp) = split_dir(&gzip(&bad), &labels_gz);
    assert_error(load_split(&ip, &lp), &ip, "wrong IDX magic");

    // Valid gzip, payload shorter than the header promises.
    let (_d, ip, lp) = split_dir(&gzip(&images[..images.len() - 100]), &labels_gz);
    assert_error(load_split(&ip, &lp), &ip, "truncated");

    // Valid gzip, trailing bytes after the payload.
    let mut long = labels.clone();
    long.extend_from_slice(&[0; 7]);
    let (_d, ip, lp) = split_dir(&images_gz, &gzip(&long));
    assert_error(load_split(&ip, &lp), &lp, "padded");

    // Zero-sized images.
    let mut flat = images[..16].to_vec();
    flat[8..12].copy_from_slice(&0u32.to_be_bytes());
    let (_d, ip, lp) = split_dir(&gzip(&flat), &labels_gz);
    assert_error(load_split(&ip, &lp), &ip, "implausible IDX header");

    // Header shorter than the IDX header itself.
    let (_d, ip, lp) = split_dir(&gzip(&images[..6]), &labels_gz);
    assert_error(load_split(&ip, &lp), &ip, "too short");

    // Labels for a different number of images: 9,999 labels, consistently so.
    let mut fewer = labels[..labels.len() - 1].to_vec();
    fewer[4..8].copy_from_slice(&9_999u32.to_be_bytes());
    let (_d, ip, lp) = split_dir(&images_gz, &gzip(&fewer));
    assert_error(load_split(&ip, &lp), &lp, "9999 labels");
}

#[test]
fn missing_or_unusable_directories_are_reported_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere");
    let msg = load_mnist(&missing).unwrap_err().to_string();
    assert!(msg.contains("data directory") && msg.contains("nowhere") && !msg.contains('\n'), "{msg}");

    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let msg = load_mnist(&file).unwrap_err().to_string();
    assert!(msg.contains("not a directory"), "{msg}");

    // An empty directory: the first file is named as missing.
    let msg = load_mnist(dir.path()).unwrap_err().to_string();
    assert!(msg.contains(TRAIN_IMAGES) && msg.contains("cannot read"), "{msg}");
}
