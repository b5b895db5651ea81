//! Plugins built outside the workspace: `templates/task-plugin` and `templates/encoder-plugin`
//! are copied to a temporary folder, built there with cargo (sharing this workspace's target
//! folder, Cargo.lock and debug settings, so only the template itself is compiled) and run by the
//! unchanged, already built `virb-host`. Also the versioning rules of docs/plugin-guide.md that
//! need a plugin built against another version: a plugin built against plugin-api 0.3.1 in this
//! 0.3.0 host, and a plugin built for another libtorch.
mod build;

use build::{build_template, Api, Copy};
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};
use virb_tests::{
    build_dir, experiment_list, python, read_json, resnet18_weights, Env, IMAGE_SIZE,
};

/// The templates' own unit tests pass in a copy outside the workspace, as `cargo test` in the
/// template's folder runs them.
#[test]
fn template_unit_tests_pass_outside_the_workspace() {
    for (template, package, count) in [
        ("task-plugin", "virb-template-task", 8),
        ("encoder-plugin", "virb-template-encoder", 3),
    ] {
        let (stdout, _) = Copy::new(template, package, Api::Current).cargo(&["test", "--lib"]);
        let expected = format!("test result: ok. {count} passed; 0 failed");
        assert!(stdout.contains(&expected), "{template}: {stdout}");
    }
}

fn add_plugin(env: &Env, lib: &Path) {
    fs::copy(lib, env.plugins.join(lib.file_name().unwrap())).unwrap();
}

/// Runs a Python snippet with the venv's python (torch, safetensors, PIL), in `dir`.
fn py(dir: &Path, code: &str) -> String {
    let out = Command::new(python())
        .args(["-c", code])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Copies `tiny.safetensors` (the template encoder's PyTorch model, seeded) and
/// `broken.safetensors` (the same without `conv2.bias`), written once by PyTorch, into the test
/// folder.
fn tinyconv_weights(env: &Env) {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let dir = build_dir().join("virb-test-cache/templates/tinyconv");
        fs::create_dir_all(&dir).unwrap();
        py(
            &dir,
            "import torch, torch.nn as nn\n\
             from safetensors.torch import save_file\n\
             torch.manual_seed(0)\n\
             class TinyConv(nn.Module):\n\
             \x20   def __init__(self):\n\
             \x20       super().__init__()\n\
             \x20       self.conv1 = nn.Conv2d(3, 16, 3, stride=2, padding=1)\n\
             \x20       self.conv2 = nn.Conv2d(16, 32, 3, stride=2, padding=1)\n\
             state = TinyConv().state_dict()\n\
             save_file(state, 'tiny.safetensors')\n\
             del state['conv2.bias']\n\
             save_file(state, 'broken.safetensors')\n",
        );
        dir
    });
    for file in ["tiny.safetensors", "broken.safetensors"] {
        fs::copy(dir.join(file), env.path(file)).unwrap();
    }
}

fn job(name: &str, task: &str, lr: f64, epochs: u32) -> String {
    format!(
        "{name}:\n  task: {task}\n  training_configs:\n    adam:\n      optimizer: adam\n      lr: {lr}\n  num_epochs: {epochs}\n  batch_size: 6\n  image_size: {IMAGE_SIZE}\n"
    )
}

#[test]
fn template_task_builds_outside_the_workspace_trains_and_is_scored() {
    let lib = build_template("task-plugin", "virb-template-task", Api::Current);
    let env = Env::with_plugins(&["virb-encoder-resnet"]);
    add_plugin(&env, &lib);
    let listed = env.host(&["plugins"]);
    assert!(
        listed
            .stdout
            .contains("task     virb-template-task 0.1.0 (plugin-api 0.3.0,")
            && listed.stdout.contains("tasks: TemplateShapes")
            && listed.stdout.contains("rejected (0):"),
        "{}",
        listed.stdout
    );
    env.fixture("TemplateShapes", 3, 6, 4, IMAGE_SIZE);
    // The generator writes real PPM files: PIL reads every one.
    let checked = py(
        &env.path("data/template-shapes"),
        "import glob\nfrom PIL import Image\n\
         files = sorted(glob.glob('*/*/*.ppm'))\n\
         assert all(Image.open(f).convert('RGB').size == (64, 64) for f in files)\n\
         print(len(files), sorted({f.split('/')[1] for f in files}))",
    );
    assert_eq!(checked.trim(), "30 ['disc', 'hbar', 'square']");
    env.write(
        "experiments.yaml",
        &experiment_list(resnet18_weights(), "resnet18"),
    );
    env.write("virb.yaml", &job("Shapes", "TemplateShapes", 0.001, 10));
    let out = env.run();
    assert!(out.ok(), "{}\n{}", out.stdout, out.stderr);
    let r = read_json(&env.path("out/probe/Shapes-adam/results.json"));
    assert_eq!(r["status"], "ok", "{r}");
    assert_eq!(r["task"]["plugin"]["name"], "virb-template-task");
    let top1 = r["test_metrics"]["top1_accuracy"].as_f64().unwrap();
    let mean_class = r["test_metrics"]["mean_class_accuracy"].as_f64().unwrap();
    assert!(top1 >= 0.75, "chance is 0.33: {r}");
    // 4 test images per class: the mean of per-class accuracies is the overall accuracy, and
    // it is the mean of the per-class values the metric reports in test_details.
    assert!((top1 - mean_class).abs() < 1e-12, "{r}");
    let per_class: Vec<f64> = r["test_details"]["per_class_accuracy"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(per_class.len(), 3, "{r}");
    assert!(
        (per_class.iter().sum::<f64>() / 3.0 - mean_class).abs() < 1e-12,
        "{r}"
    );
    let head =
        tch::Tensor::read_safetensors(env.path("out/probe/Shapes-adam/seed-0/head.safetensors"))
            .unwrap();
    let shapes: Vec<(String, Vec<i64>)> = head.iter().map(|(n, t)| (n.clone(), t.size())).collect();
    assert!(
        shapes.contains(&("head.weight".into(), vec![3, 512])),
        "{shapes:?}"
    );
}

#[test]
fn template_encoder_builds_outside_the_workspace_and_serves_an_existing_task() {
    let lib = build_template("encoder-plugin", "virb-template-encoder", Api::Current);
    let env = Env::with_plugins(&["virb-task-classification"]);
    add_plugin(&env, &lib);
    let listed = env.host(&["encoders"]);
    assert!(
        listed
            .stdout
            .contains("template-tinyconv  (virb-template-encoder 0.1.0)")
            && listed
                .stdout
                .contains("outputs: embedding[32], block1[16], block2[32]"),
        "{}\n{}",
        listed.stdout,
        listed.stderr
    );
    tinyconv_weights(&env);
    env.caltech_fixture(3, 6, 4);
    env.write(
        "experiments.yaml",
        "tiny:\n  weights: tiny.safetensors\n  encoder: template-tinyconv\n\
         broken:\n  weights: broken.safetensors\n  encoder: template-tinyconv\n",
    );
    env.write("virb.yaml", &job("CalTech-101", "CalTech-101", 0.01, 20));
    let out = env.run();
    // The broken weights file fails its experiment alone, naming the tensor.
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr
            .contains("broken.safetensors: tensor `conv2.bias` is missing"),
        "{}",
        out.stderr
    );
    let r = read_json(&env.path("out/tiny/CalTech-101-adam/results.json"));
    assert_eq!(r["status"], "ok", "{r}");
    assert_eq!(r["encoder"]["plugin"]["name"], "virb-template-encoder");
    let top1 = r["test_metrics"]["top1_accuracy"].as_f64().unwrap();
    assert!(top1 >= 0.75, "chance is 0.33: {r}");
    assert!(!env.path("out/broken/CalTech-101-adam").exists());
}

#[test]
fn a_plugin_built_against_a_later_patch_of_plugin_api_loads_and_runs_in_this_host() {
    let lib = build_template("encoder-plugin", "virb-template-encoder-next", Api::Next);
    let env = Env::with_plugins(&["virb-task-classification"]);
    add_plugin(&env, &lib);
    let listed = env.host(&["plugins"]);
    assert!(
        listed
            .stdout
            .contains("encoder  virb-template-encoder-next 0.1.0 (plugin-api 0.3.1,")
            && listed.stdout.contains("plugin-api 0.3.0, libtorch")
            && listed.stdout.contains("rejected (0):"),
        "{}",
        listed.stdout
    );
    tinyconv_weights(&env);
    env.caltech_fixture(3, 4, 2);
    env.write(
        "experiments.yaml",
        "tiny:\n  weights: tiny.safetensors\n  encoder: template-tinyconv\n",
    );
    env.write("virb.yaml", &job("CalTech-101", "CalTech-101", 0.01, 2));
    let out = env.run();
    assert!(out.ok(), "{}\n{}", out.stdout, out.stderr);
    let r = read_json(&env.path("out/tiny/CalTech-101-adam/results.json"));
    assert_eq!(r["status"], "ok", "{r}");
    assert_eq!(r["encoder"]["plugin"]["name"], "virb-template-encoder-next");
    assert_eq!(r["versions"]["plugin_api"], "0.3.0", "{r}");
}

/// `bytes` with every occurrence of `from` replaced by `to` (same length); how many there were.
fn replace_all(bytes: &mut [u8], from: &[u8], to: &[u8]) -> usize {
    assert_eq!(from.len(), to.len());
    let mut count = 0;
    let mut at = 0;
    while let Some(pos) = bytes[at..].windows(from.len()).position(|w| w == from) {
        bytes[at + pos..at + pos + to.len()].copy_from_slice(to);
        at += pos + to.len();
        count += 1;
    }
    count
}

#[test]
fn a_plugin_built_for_another_libtorch_is_refused_clearly_and_the_other_experiments_run() {
    let lib = build_template("encoder-plugin", "virb-template-encoder", Api::Current);
    let env = Env::with_plugins(&["virb-encoder-resnet", "virb-task-classification"]);
    // The host's libtorch version, e.g. `2.11.0+cu130`, from its plugin listing.
    let listed = env.host(&["plugins"]);
    let host_torch = listed
        .stdout
        .lines()
        .next()
        .and_then(|l| l.split("libtorch ").nth(1))
        .map(|v| v.trim_end_matches("):").to_string())
        .unwrap();
    // The same plugin as if built with a libtorch one minor version away (same text length):
    // the version plugin-api recorded at build time, in the manifest and the root module.
    let (major, rest) = host_torch.split_once('.').unwrap();
    let (minor, tail) = rest.split_once('.').unwrap();
    let minor: u32 = minor.parse().unwrap();
    let other_minor = if (minor + 1).to_string().len() == minor.to_string().len() {
        minor + 1
    } else {
        minor - 1
    };
    let other_torch = format!("{major}.{other_minor}.{tail}");
    let mut bytes = fs::read(&lib).unwrap();
    let patched = replace_all(&mut bytes, host_torch.as_bytes(), other_torch.as_bytes());
    assert!(patched >= 1, "{host_torch} not found in {}", lib.display());
    fs::write(env.plugins.join("libvirb_template_encoder.so"), bytes).unwrap();
    // Built against another libtorch version with tch's version check bypassed: a libtorch
    // symbol it imports does not exist in this host's libtorch (the last character of one
    // imported `c10::` symbol changed, as a changed signature changes it), so the loader refuses
    // it before its manifest can be read.
    let nm = Command::new("nm")
        .args(["-D", "--undefined-only"])
        .arg(&lib)
        .output()
        .unwrap();
    let imported = String::from_utf8(nm.stdout).unwrap();
    let symbol = imported
        .split_whitespace()
        .find(|s| s.starts_with("_ZN3c10"))
        .unwrap_or_else(|| panic!("no c10 symbol imported by {}:\n{imported}", lib.display()));
    let last = if symbol.ends_with('X') { "Y" } else { "X" };
    let renamed = format!("{}{last}", &symbol[..symbol.len() - 1]);
    let mut bytes = fs::read(&lib).unwrap();
    assert!(replace_all(&mut bytes, symbol.as_bytes(), renamed.as_bytes()) >= 1);
    fs::write(
        env.plugins.join("libvirb_template_encoder_symbols.so"),
        bytes,
    )
    .unwrap();

    let listed = env.host(&["plugins"]);
    let expected = format!(
        "libvirb_template_encoder.so: virb-template-encoder 0.1.0 was built for libtorch {other_torch}; this virb-host uses libtorch {host_torch}"
    );
    assert!(listed.stdout.contains(&expected), "{}", listed.stdout);
    assert!(listed.stdout.contains("loaded (2):"), "{}", listed.stdout);
    assert!(
        listed.stdout.contains(&format!(
            "help: rebuild virb-template-encoder with LIBTORCH set to a libtorch {major}.{minor}"
        )),
        "{}",
        listed.stdout
    );
    let expected_symbol = format!(
        "libvirb_template_encoder_symbols.so: cannot be loaded: {}: undefined symbol: {renamed} (a libtorch symbol: it was built against another libtorch than this virb-host's {host_torch})",
        env.plugins.join("libvirb_template_encoder_symbols.so").display()
    );
    assert!(
        listed.stdout.contains(&expected_symbol),
        "{}",
        listed.stdout
    );
    assert!(
        listed.stdout.contains(&format!(
            "help: rebuild it with LIBTORCH set to a libtorch {major}.{minor}"
        )),
        "{}",
        listed.stdout
    );
    tinyconv_weights(&env);
    env.caltech_fixture(3, 4, 2);
    env.write(
        "experiments.yaml",
        &format!(
            "tiny:\n  weights: tiny.safetensors\n  encoder: template-tinyconv\n{}",
            experiment_list(resnet18_weights(), "resnet18")
        ),
    );
    env.write("virb.yaml", &job("CalTech-101", "CalTech-101", 0.001, 1));
    // The survey lists the experiment of the refused plugin as a problem, with the reason;
    // with --keep-going the other one runs.
    let out = env.run_with(&["--keep-going"]);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    let line = out
        .stderr
        .lines()
        .find(|l| l.trim_start().starts_with("experiment `tiny`"))
        .unwrap_or_else(|| panic!("{}", out.stderr));
    assert!(
        line.contains("unknown encoder `template-tinyconv`"),
        "{line}"
    );
    assert!(line.contains(&expected), "{line}");
    assert!(
        line.contains(&format!("undefined symbol: {renamed} (a libtorch symbol")),
        "{line}"
    );
    let r = read_json(&env.path("out/probe/CalTech-101-adam/results.json"));
    assert_eq!(r["status"], "ok", "{r}");
    assert!(!env.path("out/tiny").exists());
}
