//! Resume identity through the real binary: every field a checkpoint's header writes to say
//! which run it belongs to is tried, one at a time, with a different value on `--resume`. Each
//! must be refused as the run's own error (status 1, one `error:` line naming that field with
//! both values), leaving the checkpoint byte-identical and the metrics file as it was; the
//! unchanged resume, and a changed `--lr` (the one field a resume may change, with a note), are
//! accepted. The list of fields is read out of the checkpoint file the program wrote (parsed
//! here, not by the code under test), and the tables must cover every one of its keys, so a field
//! added to the identity later without a case here fails these tests. Covers the VAE, the linear
//! bandit and the convolutional bandit (whose identity has fields of its own), and a checkpoint
//! of one experiment given to the other.

use std::io::Write;
use std::path::Path;

use assert_cmd::Command;

/// Header keys that record progress and provenance, not which run it is.
const NOT_IDENTITY: [&str; 4] = ["experiment", "written_by", "step", "epoch"];

/// A random-byte data set in MNIST's four files: `train` training and 20 test images of
/// `rows` x `cols`, labels cycling through the ten digits.
fn write_data(dir: &Path, train: u32, rows: u32, cols: u32) {
    std::fs::create_dir_all(dir).unwrap();
    let mut state = 0x2545_F491_4F6C_DD1Du64 ^ (u64::from(train) << 32) ^ u64::from(rows * 100 + cols);
    let mut byte = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 56) as u8
    };
    let gzip = |path: &Path, bytes: &[u8]| {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(bytes).unwrap();
        std::fs::write(path, enc.finish().unwrap()).unwrap();
    };
    for (images, labels, n) in [
        ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", train),
        ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", 20),
    ] {
        let mut img = vec![0u8, 0, 8, 3];
        for d in [n, rows, cols] {
            img.extend_from_slice(&d.to_be_bytes());
        }
        img.extend((0..n * rows * cols).map(|_| byte()));
        gzip(&dir.join(images), &img);
        let mut lab = vec![0u8, 0, 8, 1];
        lab.extend_from_slice(&n.to_be_bytes());
        lab.extend((0..n).map(|i| (i % 10) as u8));
        gzip(&dir.join(labels), &lab);
    }
}

/// The data sets every case draws from, under `dir`: `data` (60 training images of 8x10, six
/// batches of 10), `size` (another image size, 9x9), `count` (70 training images of 8x10) and
/// `transposed` (60 of 10x8: the same number of pixels, and the same number of positions after
/// any number of 3x3 convolutions, as 8x10).
fn write_data_sets(dir: &Path) {
    write_data(&dir.join("data"), 60, 8, 10);
    write_data(&dir.join("size"), 60, 9, 9);
    write_data(&dir.join("count"), 70, 8, 10);
    write_data(&dir.join("transposed"), 60, 10, 8);
}

/// The JSON header of a checkpoint file, read by the format's documented layout (magic, u32
/// version, u32 header length, the header), independently of the program's reader.
fn header_of(path: &Path) -> serde_json::Map<String, serde_json::Value> {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..8], b"HNCACKPT");
    assert_eq!(u32::from_le_bytes(bytes[8..12].try_into().unwrap()), 1, "format version");
    let len = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
    let serde_json::Value::Object(header) = serde_json::from_slice(&bytes[16..16 + len]).unwrap() else {
        panic!("header is not an object")
    };
    header
}

/// The identity keys of a checkpoint's header: every key but the tensor table and
/// [`NOT_IDENTITY`].
fn identity_keys(path: &Path) -> Vec<String> {
    let mut keys: Vec<String> =
        header_of(path).keys().filter(|k| *k != "tensors" && !NOT_IDENTITY.contains(&k.as_str())).cloned().collect();
    keys.sort();
    keys
}

/// Command-line options in order; `None` as a value is a flag.
type Options = Vec<(&'static str, Option<&'static str>)>;

/// `opts` with each of `changes` applied: an option given replaces the one of that name (or is
/// added), and `("--x", Some("-"))` removes `--x`.
fn changed(opts: &Options, changes: &[(&'static str, Option<&'static str>)]) -> Options {
    let mut out = opts.clone();
    for &(name, value) in changes {
        let at = out.iter().position(|(n, _)| *n == name);
        match (at, value) {
            (Some(i), Some("-")) => {
                out.remove(i);
            }
            (Some(i), _) => out[i].1 = value,
            (None, _) => out.push((name, value)),
        }
    }
    out
}

fn hnca(dir: &Path, opts: &Options) -> Command {
    let mut cmd = Command::cargo_bin("hnca").unwrap();
    cmd.current_dir(dir);
    for (name, value) in opts {
        cmd.arg(name);
        if let Some(v) = value {
            cmd.arg(v);
        }
    }
    cmd
}

/// One identity field and a resume that changes it.
struct Case {
    /// The header key the case changes.
    key: &'static str,
    /// The options the resume changes (see [`changed`]).
    change: &'static [(&'static str, Option<&'static str>)],
    /// What the one error line must contain: the field's name with both values.
    names: &'static [&'static str],
    /// How many fields the error lists as differing, where the change can only alter one.
    diffs: Option<usize>,
}

/// A field a resume may change: its header key, the option and value that change it, and the
/// note the resume prints.
type Allowed = (&'static str, &'static str, &'static str, &'static str);

/// Trains and saves `base` for one epoch (`run.ck`, `run.jsonl`), then resumes it once per case
/// of `cases`, each with one field changed, and checks each is refused without touching either
/// file; then that the unchanged resume and each `allowed` change are accepted. Returns the
/// identity keys of the checkpoint's header, for [`assert_every_key_tried`].
fn check_identity(dir: &Path, what: &str, base: &Options, cases: &[Case], allowed: &[Allowed]) -> Vec<String> {
    hnca(dir, &changed(base, &[("--save", Some("run.ck")), ("--metrics", Some("run.jsonl"))])).assert().success();
    let (ck, metrics) = (dir.join("run.ck"), dir.join("run.jsonl"));
    let (ck_bytes, metrics_text) = (std::fs::read(&ck).unwrap(), std::fs::read_to_string(&metrics).unwrap());
    assert_eq!(metrics_text.lines().count(), 1, "{what}: the saved run is one epoch");
    let keys = identity_keys(&ck);

    let resume = [("--resume", Some("run.ck")), ("--save", Some("run.ck")), ("--metrics", Some("run.jsonl")), ("--epochs", Some("2"))];
    for case in cases {
        let opts = changed(&changed(base, &resume), case.change);
        let out = hnca(dir, &opts).assert().failure().code(1);
        let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
        let label = format!("{what}: {} changed by {:?}", case.key, case.change);
        assert!(!stderr.contains("panicked"), "{label}: {stderr}");
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error: ")).collect();
        assert_eq!(errors.len(), 1, "{label}: one error line: {stderr}");
        let line = errors[0];
        assert!(line.starts_with("error: run.ck: does not match this run: "), "{label}: {line}");
        for name in case.names {
            assert!(line.contains(name), "{label}: the error should name {name:?}: {line}");
        }
        if let Some(n) = case.diffs {
            assert_eq!(line.matches(" (checkpoint) vs ").count(), n, "{label}: fields listed as differing: {line}");
        }
        assert!(std::fs::read(&ck).unwrap() == ck_bytes, "{label}: the checkpoint was written over");
        assert_eq!(std::fs::read_to_string(&metrics).unwrap(), metrics_text, "{label}: the metrics file changed");
        assert!(!dir.join("run.ck.tmp").exists() && !dir.join("run.jsonl.tmp").exists(), "{label}: a temporary file is left");
    }

    // Accepted: the same options, and each change a resume may make. Each continues a copy of
    // the checkpoint by one epoch: two metrics lines, the first the saved run's.
    let first_line: serde_json::Value = serde_json::from_str(metrics_text.lines().next().unwrap()).unwrap();
    let steps_per_epoch = first_line["step"].as_u64().unwrap();
    let unchanged = ("", "", "", "");
    for &(key, option, value, note) in std::iter::once(&unchanged).chain(allowed) {
        let label = format!("{what}: resume with {option} {value}");
        std::fs::copy(&ck, dir.join("ok.ck")).unwrap();
        std::fs::copy(&metrics, dir.join("ok.jsonl")).unwrap();
        let mut opts = changed(
            base,
            &[("--resume", Some("ok.ck")), ("--save", Some("ok.ck")), ("--metrics", Some("ok.jsonl")), ("--epochs", Some("2"))],
        );
        if !key.is_empty() {
            opts = changed(&opts, &[(option, Some(value))]);
        }
        let out = hnca(dir, &opts).assert().success();
        let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
        assert_eq!(stderr.contains("note:"), !note.is_empty(), "{label}: {stderr}");
        assert!(stderr.contains(note), "{label}: the note should say {note:?}: {stderr}");
        let lines: Vec<serde_json::Value> =
            std::fs::read_to_string(dir.join("ok.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 2, "{label}");
        assert_eq!(lines[0], first_line, "{label}: the saved epoch's line is kept as it was");
        assert_eq!(lines[1]["step"].as_u64(), Some(2 * steps_per_epoch), "{label}");
        let header = header_of(&dir.join("ok.ck"));
        assert_eq!(header["step"].as_u64(), Some(2 * steps_per_epoch), "{label}");
        if !key.is_empty() {
            let want: f64 = value.parse().unwrap();
            assert_eq!(header[key].as_f64(), Some(want), "{label}: the continued run's checkpoint records the new value");
        }
    }
    keys
}

/// Every identity key of a checkpoint (`keys`) is one that `tried` changes (refused, or accepted
/// as a resume may change it), and `tried` names no other: a field added to the identity
/// without a case here fails.
fn assert_every_key_tried(what: &str, keys: &[String], tried: &[&str]) {
    let mut tried: Vec<String> = tried.iter().map(|k| k.to_string()).collect();
    tried.sort();
    tried.dedup();
    assert_eq!(tried, keys, "{what}: the cases must try every identity field of the checkpoint's header");
}

/// The header keys the cases and the allowed changes try.
fn keys_of(cases: &[Case], allowed: &[Allowed]) -> Vec<&'static str> {
    cases.iter().map(|c| c.key).chain(allowed.iter().map(|a| a.0)).collect()
}

/// The VAE: 8x10 images, two latent layers, HNCA, every optimiser option at its default.
fn vae_base() -> Options {
    vec![
        ("vae", None),
        ("--data-dir", Some("data")),
        ("--layers", Some("6,4")),
        ("--batch-size", Some("10")),
        ("--epochs", Some("1")),
        ("--test-every", Some("0")),
        ("--lr", Some("3e-3")),
        ("--device", Some("cpu")),
        ("--threads", Some("1")),
    ]
}

#[test]
fn a_vae_checkpoint_refuses_a_resume_that_changes_any_identity_field() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_data_sets(dir);
    let case = |key, change, names, diffs| Case { key, change, names, diffs: Some(diffs) };
    // HNCA's K, --all-child and --full-reward are part of the estimator the error names.
    let hnca_cases = [
        case("data_dim", &[("--data-dir", Some("size"))], &["image size 80 (checkpoint) vs 81"], 1),
        case("train_images", &[("--train-images", Some("50"))], &["training images 60 (checkpoint) vs 50"], 1),
        case("layers", &[("--layers", Some("6,5"))], &["--layers [6, 4] (checkpoint) vs [6, 5]"], 1),
        case("estimator", &[("--estimator", Some("reinforce"))], &["--estimator hnca (checkpoint) vs reinforce"], 1),
        case("samples", &[("--samples", Some("2"))], &["--estimator hnca (checkpoint) vs hnca-k2"], 1),
        case("all_child", &[("--all-child", None)], &["--estimator hnca (checkpoint) vs hnca+all-child"], 1),
        case("full_reward", &[("--full-reward", None)], &["--estimator hnca (checkpoint) vs hnca+full-reward"], 1),
        case("batch_size", &[("--batch-size", Some("12"))], &["--batch-size 10 (checkpoint) vs 12"], 1),
        case("seed", &[("--seed", Some("1"))], &["--seed 0 (checkpoint) vs 1"], 1),
        case("binarize", &[("--binarize", Some("threshold"))], &["--binarize dynamic (checkpoint) vs threshold"], 1),
        case("prior_lr", &[("--prior-lr", Some("0.002"))], &["--prior-lr (the --lr) (checkpoint) vs 0.002"], 1),
        case("prior_optimizer", &[("--prior-optimizer", Some("sgd"))], &["--prior-optimizer adam (checkpoint) vs sgd"], 1),
    ];
    // --lr may change: the prior's rate follows it, so that is no second difference.
    let allowed = [("lr", "--lr", "2e-3", "note: --lr 2e-3 replaces the checkpoint's 3e-3")];
    let keys = check_identity(dir, "vae hnca", &vae_base(), &hnca_cases, &allowed);
    // --cv-lr applies to the estimators that learn control variates only.
    let double_cv = changed(&vae_base(), &[("--estimator", Some("double-cv"))]);
    let double_cv_cases = [
        case("cv_lr", &[("--cv-lr", Some("0.01"))], &["--cv-lr 0.001 (checkpoint) vs 0.01"], 1),
        case("samples", &[("--samples", Some("3"))], &["--estimator double-cv (checkpoint) vs double-cv-k3"], 1),
    ];
    let double_cv_keys = check_identity(dir, "vae double-cv", &double_cv, &double_cv_cases, &[]);
    assert_eq!(double_cv_keys, keys, "every VAE checkpoint has the same identity fields");
    let tried = [keys_of(&hnca_cases, &allowed), keys_of(&double_cv_cases, &[])].concat();
    assert_every_key_tried("vae", &keys, &tried);
}

/// The bandit over the pixels: 8x10 images, two hidden layers.
fn bandit_base() -> Options {
    vec![
        ("bandit", None),
        ("--data-dir", Some("data")),
        ("--layers", Some("6,4")),
        ("--batch-size", Some("10")),
        ("--epochs", Some("1")),
        ("--test-every", Some("0")),
        ("--lr", Some("3e-3")),
        ("--device", Some("cpu")),
        ("--threads", Some("1")),
    ]
}

/// The bandit's own fields, which the linear and the convolutional bandit share. With
/// convolutions, another image size also changes the image's rows and columns: how many
/// fields that lists is left open there (`diffs` None), the image size must be among them.
fn shared_bandit_cases(conv: bool) -> Vec<Case> {
    let case = |key, change, names, diffs| Case { key, change, names, diffs: Some(diffs) };
    vec![
        Case {
            key: "data_dim",
            change: &[("--data-dir", Some("size"))],
            names: &["image size 80 (checkpoint) vs 81"],
            diffs: (!conv).then_some(1),
        },
        case("train_images", &[("--data-dir", Some("count"))], &["training images 60 (checkpoint) vs 70"], 1),
        if conv {
            case("layers", &[("--layers", Some("5"))], &["--layers [6] (checkpoint) vs [5]"], 1)
        } else {
            case("layers", &[("--layers", Some("6,5"))], &["--layers [6, 4] (checkpoint) vs [6, 5]"], 1)
        },
        case("estimator", &[("--estimator", Some("reinforce"))], &["--estimator hnca (checkpoint) vs reinforce"], 1),
        case("batch_size", &[("--batch-size", Some("12"))], &["--batch-size 10 (checkpoint) vs 12"], 1),
        case("seed", &[("--seed", Some("1"))], &["--seed 0 (checkpoint) vs 1"], 1),
    ]
}

#[test]
fn a_linear_bandit_checkpoint_refuses_a_resume_that_changes_any_identity_field() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_data_sets(dir);
    let allowed = [("lr", "--lr", "2e-3", "note: --lr 2e-3 replaces the checkpoint's 3e-3")];
    let cases = shared_bandit_cases(false);
    let keys = check_identity(dir, "linear bandit", &bandit_base(), &cases, &allowed);
    assert_every_key_tried("linear bandit", &keys, &keys_of(&cases, &allowed));
}

/// Two convolution layers of two channels (8x10 -> 6x8 -> 4x6) under one Bernoulli layer.
fn conv_base() -> Options {
    let conv = [("--features", Some("conv")), ("--conv-layers", Some("2")), ("--conv-channels", Some("2")), ("--layers", Some("6"))];
    changed(&bandit_base(), &conv)
}

#[test]
fn a_conv_bandit_checkpoint_refuses_a_resume_that_changes_any_identity_field() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_data_sets(dir);
    let mut cases = shared_bandit_cases(true);
    let linear: &[(&str, Option<&str>)] = &[("--features", Some("-")), ("--conv-layers", Some("-")), ("--conv-channels", Some("-"))];
    cases.extend([
        // Without --features conv the convolutions' options go too; they then differ as well.
        Case { key: "features", change: linear, names: &["--features conv (checkpoint) vs linear"], diffs: None },
        Case { key: "conv_layers", change: &[("--conv-layers", Some("1"))], names: &["--conv-layers 2 (checkpoint) vs 1"], diffs: Some(1) },
        Case {
            key: "conv_channels",
            change: &[("--conv-channels", Some("3"))],
            names: &["--conv-channels 2 (checkpoint) vs 3"],
            diffs: Some(1),
        },
        Case {
            key: "rho_gradient",
            change: &[("--rho-gradient", None)],
            names: &["--rho-gradient false (checkpoint) vs true"],
            diffs: Some(1),
        },
    ]);
    let allowed = [("lr", "--lr", "2e-3", "note: --lr 2e-3 replaces the checkpoint's 3e-3")];
    let keys = check_identity(dir, "conv bandit", &conv_base(), &cases, &allowed);
    let tried = [keys_of(&cases, &allowed), IMAGE_SHAPE.to_vec()].concat();
    assert_every_key_tried("conv bandit", &keys, &tried);
}

/// The identity fields of a conv bandit's image shape, tried by
/// [`a_conv_bandit_checkpoint_refuses_images_of_another_shape`].
const IMAGE_SHAPE: [&str; 2] = ["image_rows", "image_cols"];

/// 10x8 images have the 8x10 images' pixel count and, after the convolutions, as many positions
/// (so every tensor has the saved length, and only the identity can tell), but they are other
/// images under another network: the error must name the image (its shape).
/// (Before the identity compared the shape, this resume was accepted and trained on.)
#[test]
fn a_conv_bandit_checkpoint_refuses_images_of_another_shape() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_data_sets(dir);
    let transposed: &[(&str, Option<&str>)] = &[("--data-dir", Some("transposed"))];
    let cases =
        IMAGE_SHAPE.map(|key| Case { key, change: transposed, names: &["image rows x columns 8x10 (checkpoint) vs 10x8"], diffs: Some(1) });
    check_identity(dir, "conv bandit", &conv_base(), &cases, &[]);
}

#[test]
fn a_checkpoint_of_one_experiment_is_refused_by_the_other() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_data(&dir.join("data"), 60, 8, 10);
    hnca(dir, &changed(&vae_base(), &[("--save", Some("vae.ck"))])).assert().success();
    hnca(dir, &changed(&bandit_base(), &[("--save", Some("bandit.ck"))])).assert().success();
    let cases = [
        (bandit_base(), "vae.ck", "error: vae.ck: a checkpoint of the VAE, not of the bandit"),
        (vae_base(), "bandit.ck", "error: bandit.ck: a checkpoint of the bandit, not of the VAE"),
    ];
    for (base, ck, want) in cases {
        let before = std::fs::read(dir.join(ck)).unwrap();
        let opts = changed(&base, &[("--resume", Some(ck)), ("--save", Some(ck)), ("--metrics", Some("m.jsonl")), ("--epochs", Some("2"))]);
        let out = hnca(dir, &opts).assert().failure().code(1);
        let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error: ")).collect();
        assert_eq!(errors.len(), 1, "{stderr}");
        assert!(errors[0].starts_with(want), "{ck}: {}", errors[0]);
        assert!(std::fs::read(dir.join(ck)).unwrap() == before, "{ck} was written over");
        assert!(!dir.join("m.jsonl").exists(), "{ck}: a metrics file was started");
    }
}
