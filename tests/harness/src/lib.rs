//! Test harness: runs the real `virb-host` binary with the real built plugins in a fresh
//! temporary folder per test, on generated data sets and weights.
//!
//! The binary and plugins are those of `target/<profile>` (profile from `VIRB_TEST_PROFILE`,
//! default `debug`), built by `scripts/test.sh`. Reference values come from PyTorch in the
//! libtorch venv (`VIRB_PYTHON_BIN`, or the venv `scripts/setup-libtorch.sh` prints).
#![allow(clippy::unwrap_used, missing_docs)]

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// `target/<profile>`.
pub fn build_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    let target = if target.is_absolute() {
        target
    } else {
        root().join(target)
    };
    target.join(std::env::var("VIRB_TEST_PROFILE").unwrap_or_else(|_| "debug".into()))
}

/// The built `virb-host`.
pub fn host_bin() -> PathBuf {
    let bin = build_dir().join("virb-host");
    assert!(
        bin.exists(),
        "{} missing: run the tests with scripts/test.sh",
        bin.display()
    );
    bin
}

/// `virb-host` built against plugin-api 0.3.1 with one more capability
/// (`tests/fixtures/host-next`).
pub fn host_next_bin() -> PathBuf {
    let bin = build_dir().join("virb-host-next");
    assert!(
        bin.exists(),
        "{} missing: run the tests with scripts/test.sh",
        bin.display()
    );
    bin
}

/// A built plugin library by package name (`virb-encoder-resnet`).
pub fn plugin_lib(package: &str) -> PathBuf {
    let lib = build_dir().join(format!("lib{}.so", package.replace('-', "_")));
    assert!(
        lib.exists(),
        "{} missing: run the tests with scripts/test.sh",
        lib.display()
    );
    lib
}

/// The project's own plugins.
pub const OWN_PLUGINS: [&str; 9] = [
    "virb-encoder-resnet",
    "virb-task-classification",
    "virb-task-counting",
    "virb-task-egomotion",
    "virb-task-action",
    "virb-task-segmentation",
    "virb-task-depth",
    "virb-task-flow",
    "virb-encoder-torchscript",
];

/// The libtorch venv's python.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("VIRB_PYTHON_BIN") {
        return PathBuf::from(p);
    }
    let out = Command::new("bash")
        .arg(root().join("scripts/setup-libtorch.sh"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "setup-libtorch.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim()).join("bin/python")
}

fn cache_dir() -> PathBuf {
    let dir = build_dir().join("virb-test-cache");
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// Produces `name` in the shared test cache once (across threads and processes), keyed by
/// `key` (for example the generating script's content), by calling `make(dir)`.
fn cached(name: &str, key: &str, make: impl FnOnce(&Path)) -> PathBuf {
    let dir = cache_dir().join(name);
    let lock = fs::File::create(cache_dir().join(format!("{name}.lock"))).unwrap();
    lock.lock().unwrap();
    let stamp = dir.join(".complete");
    if fs::read_to_string(&stamp).ok().as_deref() != Some(key) {
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        make(&dir);
        fs::write(&stamp, key).unwrap();
    }
    lock.unlock().unwrap();
    dir
}

fn run_python(args: &[&std::ffi::OsStr]) {
    let out = Command::new(python()).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "python {:?} failed:\n{}",
        args,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Files written by `scripts/py/torch_reference.py` (see its docstring).
pub fn reference_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let script = root().join("scripts/py/torch_reference.py");
        // It imports make_weights.py, so both scripts key the cache.
        let key = fs::read_to_string(&script).unwrap()
            + &fs::read_to_string(root().join("scripts/py/make_weights.py")).unwrap();
        cached("reference", &key, |dir| {
            run_python(&[script.as_os_str(), dir.as_os_str()]);
        })
    })
}

/// Checkpoints in every layout `virb-host convert` reads, with torchvision's outputs on a fixed
/// input, written by `scripts/py/make_checkpoint_layouts.py` (see its docstring).
pub fn layouts_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let script = root().join("scripts/py/make_checkpoint_layouts.py");
        // It imports make_weights.py, so both scripts key the cache.
        let key = fs::read_to_string(&script).unwrap()
            + &fs::read_to_string(root().join("scripts/py/make_weights.py")).unwrap();
        cached("checkpoint-layouts", &key, |dir| {
            run_python(&[script.as_os_str(), dir.as_os_str()]);
        })
    })
}

/// Inputs and NumPy reference values of the pixel-wise metrics and KITTI flow files, written by
/// `scripts/py/dense_metrics_reference.py` (see its docstring).
pub fn dense_reference_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let script = root().join("scripts/py/dense_metrics_reference.py");
        let key = fs::read_to_string(&script).unwrap();
        cached("dense-reference", &key, |dir| {
            run_python(&[script.as_os_str(), dir.as_os_str()]);
        })
    })
}

/// TorchScript models and PyTorch's outputs of them, written by
/// `scripts/py/export_torchscript.py` (see its docstring); its ResNet-50 has [`weights`].
pub fn torchscript_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let script = root().join("scripts/py/export_torchscript.py");
        let resnet = weights();
        let meta = fs::metadata(resnet).unwrap();
        let key = fs::read_to_string(&script).unwrap()
            + &format!("{} {:?}", meta.len(), meta.modified().unwrap());
        cached("torchscript", &key, |dir| {
            run_python(&[
                script.as_os_str(),
                dir.as_os_str(),
                "--resnet-weights".as_ref(),
                resnet.as_os_str(),
            ]);
        })
    })
}

/// Image side used by the end-to-end tests (small, so ResNet-50 runs quickly on a CPU).
pub const IMAGE_SIZE: u32 = 64;

/// A torchvision-format ResNet-50 weights file whose features separate the fixture classes
/// (random weights, batch-norm statistics calibrated on fixture images).
pub fn weights() -> &'static Path {
    static FILE: OnceLock<PathBuf> = OnceLock::new();
    FILE.get_or_init(|| make_weights("weights", "v1", &[]))
}

/// Like [`weights`], but with the frozen `embedding` made nearly constant across images
/// (`make_weights.py --degrade-embedding`): a linear probe on it stays near chance, while
/// fine-tuning the encoder repairs it within a few epochs.
pub fn degraded_weights() -> &'static Path {
    static FILE: OnceLock<PathBuf> = OnceLock::new();
    FILE.get_or_init(|| make_weights("degraded-weights", "degraded-v1", &["--degrade-embedding"]))
}

/// A torchvision-format ResNet-18 weights file made like [`weights`]. Its pyramid has 64..512
/// channels, so ViRB's PixelWise head on it has ~6 M parameters instead of ~100 M on
/// ResNet-50's: the pixel-wise tests that train that head many times use it (each step of the
/// larger head is dominated by its Adam update, ~0.6 s on two cores).
pub fn resnet18_weights() -> &'static Path {
    static FILE: OnceLock<PathBuf> = OnceLock::new();
    FILE.get_or_init(|| make_weights("weights-resnet18", "v1", &["--arch", "resnet18"]))
}

/// An experiment list with one experiment, `probe`, of `encoder` with `weights`.
pub fn experiment_list(weights: &Path, encoder: &str) -> String {
    format!(
        "probe:\n  weights: '{}'\n  encoder: {encoder}\n",
        weights.display()
    )
}

/// Runs `make_weights.py` (calibrated on a fresh CalTech fixture) once per cache key.
fn make_weights(name: &str, version: &str, extra: &[&str]) -> PathBuf {
    let script = root().join("scripts/py/make_weights.py");
    let key = fs::read_to_string(&script).unwrap() + version;
    cached(name, &key, |dir| {
        let data = dir.join("calibration");
        let out = host(
            &["fixtures", "CalTech-101"],
            dir,
            &[&data],
            &plugins_dir_of(&OWN_PLUGINS, dir),
            false,
        );
        assert!(out.ok(), "{}", out.stderr);
        let size = IMAGE_SIZE.to_string();
        let w = dir.join("resnet50.pt");
        let mut args: Vec<&std::ffi::OsStr> = vec![
            script.as_os_str(),
            w.as_os_str(),
            "--calibrate-dir".as_ref(),
            data.as_os_str(),
            "--calibrate-size".as_ref(),
            size.as_ref(),
        ];
        args.extend(extra.iter().map(|a| std::ffi::OsStr::new(*a)));
        run_python(&args);
        fs::remove_dir_all(&data).unwrap();
    })
    .join("resnet50.pt")
}

fn plugins_dir_of(packages: &[&str], parent: &Path) -> PathBuf {
    let dir = parent.join("plugins");
    fs::create_dir_all(&dir).unwrap();
    for p in packages {
        let lib = plugin_lib(p);
        std::os::unix::fs::symlink(&lib, dir.join(lib.file_name().unwrap())).unwrap();
    }
    dir
}

/// What a `virb-host` call produced.
#[derive(Debug)]
pub struct Output {
    /// Exit code.
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Output {
    /// Exit code 0.
    pub fn ok(&self) -> bool {
        self.code == 0
    }
}

fn host(args: &[&str], cwd: &Path, paths: &[&Path], plugins: &Path, stamps: bool) -> Output {
    let mut cmd = Command::new(host_bin());
    cmd.arg("--plugins-dir")
        .arg(plugins)
        .args(args)
        .args(paths)
        .current_dir(cwd)
        .env_remove("RUST_BACKTRACE")
        .env("NO_COLOR", "1")
        // Each test folder has its own feature cache, rerun stamps, and no site config of the
        // user's.
        .env("VIRB_FEATURE_CACHE", cwd.join("cache"))
        .env("XDG_CONFIG_HOME", cwd.join(".config"))
        .env("VIRB_RERUN_DIR", cwd.join("reruns"))
        // The numbers tests compare with PyTorch's fp32 unless they ask for another precision
        // (`auto` is bf16 on a CPU with bf16 instructions); `it/precision.rs` checks `auto`.
        .env("VIRB_PRECISION", "fp32");
    if !stamps {
        // A test's identical reruns check what the run does (skips, verifications, messages),
        // not the launcher's answer from a stamp: `it/rerun.rs` checks that.
        cmd.env("VIRB_NO_RERUN_STAMP", "1");
    }
    let out = cmd.output().unwrap();
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The arguments of `virb-host run` on the folder's `experiments.yaml`, `virb.yaml`, `data/` and
/// `out/`, then `extra`.
fn run_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "run",
        "--experiment-list",
        "experiments.yaml",
        "--virb-configs",
        "virb.yaml",
        "--data-root",
        "data",
        "--out",
        "out",
    ];
    args.extend_from_slice(extra);
    args
}

/// A fresh temporary folder with a plugin folder.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub plugins: PathBuf,
}

impl Env {
    /// A folder whose plugin folder holds the given plugin packages.
    pub fn with_plugins(packages: &[&str]) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let plugins = plugins_dir_of(packages, dir.path());
        Env { dir, plugins }
    }

    /// A folder with the project's own plugins.
    pub fn new() -> Env {
        Env::with_plugins(&OWN_PLUGINS)
    }

    /// A path inside the folder.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Writes a file inside the folder.
    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.path(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, text).unwrap();
        p
    }

    /// Runs `virb-host` in the folder.
    pub fn host(&self, args: &[&str]) -> Output {
        host(args, self.dir.path(), &[], &self.plugins, false)
    }

    /// Runs `virb-host` in the folder with rerun stamps on (in `reruns/`).
    pub fn host_stamped(&self, args: &[&str]) -> Output {
        host(args, self.dir.path(), &[], &self.plugins, true)
    }

    /// Writes a CalTech-101 fixture under `data/`.
    pub fn caltech_fixture(&self, classes: u32, train: u32, test: u32) {
        self.fixture("CalTech-101", classes, train, test, IMAGE_SIZE);
    }

    /// Writes `task`'s fixture under `data/` (classes, training and test images per class,
    /// image side), asserting that it succeeds.
    pub fn fixture(&self, task: &str, classes: u32, train: u32, test: u32, size: u32) {
        let out = self.host(&[
            "fixtures",
            task,
            "data",
            "--classes",
            &classes.to_string(),
            "--train-per-class",
            &train.to_string(),
            "--test-per-class",
            &test.to_string(),
            "--image-size",
            &size.to_string(),
        ]);
        assert!(out.ok(), "{task} fixture failed: {}", out.stderr);
    }

    /// Writes an experiment list naming `weights` and a one-job CalTech-101 config.
    pub fn caltech_configs(&self, weights: &Path, epochs: u32) {
        self.write(
            "experiments.yaml",
            &format!("probe: '{}'\n", weights.display()),
        );
        self.write(
            "virb.yaml",
            &format!(
                "CalTech-101:\n  task: CalTech-101\n  training_configs:\n    adam-0.001:\n      optimizer: adam\n      lr: 0.001\n  num_epochs: {epochs}\n  batch_size: 8\n  image_size: {IMAGE_SIZE}\n"
            ),
        );
    }

    /// `virb-host run` with `experiments.yaml` and `virb.yaml`.
    pub fn run(&self) -> Output {
        self.run_with(&[])
    }

    /// `virb-host run` with `experiments.yaml`, `virb.yaml` and more arguments.
    pub fn run_with(&self, extra: &[&str]) -> Output {
        self.host(&run_args(extra))
    }

    /// [`Env::run_with`] with rerun stamps on (in `reruns/`).
    pub fn run_stamped(&self, extra: &[&str]) -> Output {
        self.host_stamped(&run_args(extra))
    }

    /// The `virb-host run` command line of [`Env::run_with`], for a test that starts (and
    /// kills) the process itself.
    pub fn run_command(&self, extra: &[&str]) -> Command {
        let mut cmd = Command::new(host_bin());
        cmd.arg("--plugins-dir")
            .arg(&self.plugins)
            .args([
                "run",
                "--experiment-list",
                "experiments.yaml",
                "--virb-configs",
                "virb.yaml",
                "--data-root",
                "data",
                "--out",
                "out",
            ])
            .args(extra)
            .current_dir(self.dir.path())
            .env("NO_COLOR", "1")
            .env("VIRB_FEATURE_CACHE", self.dir.path().join("cache"))
            .env("XDG_CONFIG_HOME", self.dir.path().join(".config"))
            .env("VIRB_NO_RERUN_STAMP", "1")
            .env("VIRB_PRECISION", "fp32");
        cmd
    }

    /// Every `results.json` under `out/`.
    pub fn results(&self) -> Vec<PathBuf> {
        let mut found = Vec::new();
        let mut stack = vec![self.path("out")];
        while let Some(d) = stack.pop() {
            let Ok(entries) = fs::read_dir(&d) else {
                continue;
            };
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.file_name().is_some_and(|n| n == "results.json") {
                    found.push(p);
                }
            }
        }
        found.sort();
        found
    }
}

impl Default for Env {
    fn default() -> Self {
        Env::new()
    }
}

/// Parses a JSON file.
pub fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap()
}

/// Reads every TensorBoard event file under `dir` with TensorBoard's own reader
/// (`scripts/py/read_tensorboard.py`, run by [`python()`]):
/// `{ "<run folder relative to dir>": { "<tag>": [[step, value], ...] } }`, with non-finite values
/// as the strings `"NaN"`, `"Infinity"`, `"-Infinity"`. Panics with the script's stderr if it
/// fails.
pub fn read_tensorboard(dir: &Path) -> serde_json::Value {
    let script = root().join("scripts/py/read_tensorboard.py");
    let out = Command::new(python())
        .arg(&script)
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} {} failed: {}",
        script.display(),
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}
