//! The `torchscript` encoder plugin on models the libtorch venv's PyTorch exports
//! (`scripts/py/export_torchscript.py`, through `virb_tests::torchscript_dir`):
//!
//! * numbers: each model, loaded from the built plugin library the way the host loads it, gives
//!   PyTorch's own outputs to 1e-4 (the ResNet-50 also the native `resnet50` plugin's on the same
//!   weights), with the options (`mean`, `std`, `input_size`, `channels_last`) applied as
//!   documented, and `output_shapes` reports the probed shapes;
//! * end to end through `virb-host run` (experiment lists with `encoder: torchscript` and
//!   `options:`): the ResNet-50 gives the native plugin's results in the same run, a small ViT
//!   learns CalTech-101 far above chance, an EfficientNet-B0 pyramid dict serves THORDepth far
//!   below the train-mean baseline (pre-encoded) and live (its head built from the probed shapes);
//! * bad models (a tuple output, a dict without `embedding`, an embedding whose width changes
//!   between batches, a model that fails at the task's size, a state-dict file, an unknown
//!   option) each fail their experiment with a clear error while another experiment of the same
//!   run succeeds.
use std::{path::Path, process::Command};
use tch::Tensor;
use virb_plugin_api::{
    abi_stable::{library::lib_header_from_path, std_types::RString},
    EncoderBox, EncoderPluginRef, EncoderRequest, TensorRef,
};
use virb_tests::{plugin_lib, python, read_json, torchscript_dir, weights, Env, IMAGE_SIZE};

/// Loads encoder `name` from the built plugin library `package`, as the host does.
fn load(package: &str, name: &str, weights: &Path, options: &str) -> EncoderBox {
    let header = lib_header_from_path(&plugin_lib(package)).unwrap();
    let module = header.init_root_module::<EncoderPluginRef>().unwrap();
    let factories = (module.encoders())().into_result().unwrap();
    let factory = factories
        .into_iter()
        .find(|f| f.info().into_result().unwrap().name.as_str() == name)
        .unwrap();
    factory
        .load(EncoderRequest {
            weights: weights.to_str().unwrap().into(),
            device: "cpu".into(),
            options_json: options.into(),
        })
        .into_result()
        .unwrap()
}

fn torchscript(file: &str, options: &str) -> EncoderBox {
    load(
        "virb-encoder-torchscript",
        "torchscript",
        &torchscript_dir().join(file),
        options,
    )
}

fn forward(encoder: &EncoderBox, images: &Tensor, outputs: &[&str]) -> Vec<Tensor> {
    let names: Vec<RString> = outputs.iter().map(|s| RString::from(*s)).collect();
    let outs = encoder
        .forward(TensorRef::of(images), names.as_slice().into())
        .into_result()
        .unwrap();
    let got: Vec<String> = outs.iter().map(|o| o.name.to_string()).collect();
    assert_eq!(got, outputs);
    outs.into_iter().map(|o| o.tensor.into_tch()).collect()
}

fn shapes(encoder: &EncoderBox, h: i64, w: i64) -> Vec<(String, Vec<i64>)> {
    let specs = encoder.output_shapes(h, w).into_result().unwrap();
    specs
        .iter()
        .map(|s| (s.name.to_string(), s.shape.to_vec()))
        .collect()
}

fn expected(file: &str) -> Vec<(String, Tensor)> {
    Tensor::read_safetensors(torchscript_dir().join(file)).unwrap()
}

fn get<'a>(tensors: &'a [(String, Tensor)], name: &str) -> &'a Tensor {
    &tensors.iter().find(|(n, _)| n == name).unwrap().1
}

/// `ours` equals `theirs` to `tol` (absolute), or to `tol` relative to their largest value.
fn assert_close(ours: &Tensor, theirs: &Tensor, tol: f64, relative: bool, what: &str) {
    assert_eq!(ours.size(), theirs.size(), "{what}");
    let diff = f64::try_from((ours - theirs).abs().max()).unwrap();
    let scale = f64::try_from(theirs.abs().max()).unwrap();
    // A meaningful comparison: the values are not all tiny.
    assert!(scale > 0.05, "{what}: values up to {scale} only");
    let limit = if relative { tol * scale } else { tol };
    assert!(
        diff <= limit,
        "{what}: differs by {diff} (values up to {scale})"
    );
}

#[test]
fn resnet50_matches_the_native_plugin_and_pytorch() {
    let reference = expected("resnet_expected.safetensors");
    let images = get(&reference, "images");
    let native = load("virb-encoder-resnet", "resnet50", weights(), "{}");
    let native_emb = forward(&native, images, &["embedding"]).remove(0);
    for options in ["{}", r#"{"channels_last": true}"#] {
        let ts = torchscript("resnet.ts", options);
        let emb = forward(&ts, images, &["embedding"]).remove(0);
        assert_close(
            &emb,
            &native_emb,
            1e-4,
            false,
            &format!("{options}: vs resnet50"),
        );
        assert_close(
            &emb,
            get(&reference, "embedding"),
            1e-4,
            false,
            &format!("{options}: vs PyTorch"),
        );
        assert_eq!(shapes(&ts, 64, 80), [("embedding".to_string(), vec![2048])]);
        // A pixel-wise task's outputs are not there: a clear error, not a panic.
        let names = [RString::from("block4")];
        let err = ts
            .forward(TensorRef::of(images), names.as_slice().into())
            .into_result()
            .unwrap_err();
        assert!(
            err.message
                .contains("has no `block4` output (it returns `embedding`)"),
            "{err}"
        );
    }
}

#[test]
fn vit_options_renormalise_and_resize_as_pytorch_does() {
    let reference = expected("vit_expected.safetensors");
    let options = r#"{"input_size": 32, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}"#;
    let vit = torchscript("vit.ts", options);
    let emb = forward(&vit, get(&reference, "images"), &["embedding"]).remove(0);
    assert_close(
        &emb,
        get(&reference, "embedding"),
        1e-4,
        false,
        "ViT embedding",
    );
    // Whatever the task's size, the model sees 32x32.
    assert_eq!(shapes(&vit, 48, 40), [("embedding".to_string(), vec![64])]);
    assert_eq!(shapes(&vit, 96, 96), [("embedding".to_string(), vec![64])]);
}

const LEVELS: [&str; 6] = ["conv", "block1", "block2", "block3", "block4", "embedding"];

#[test]
fn pyramid_dict_matches_pytorch_and_reports_its_shapes() {
    let reference = expected("pyramid_expected.safetensors");
    let images = get(&reference, "images");
    for options in ["{}", r#"{"channels_last": true}"#] {
        let net = torchscript("pyramid.ts", options);
        let outs = forward(&net, images, &LEVELS);
        // Relative: `block4` reaches ~27, where channels-last kernels round differently.
        for (name, ours) in LEVELS.iter().zip(&outs) {
            assert_close(
                ours,
                get(&reference, name),
                1e-5,
                true,
                &format!("{options}: {name}"),
            );
        }
        // Strides 2, 4, 8, 16, 32 of a 65-px input (rounded up), from one probe.
        let expected_shapes: Vec<(String, Vec<i64>)> = [
            ("embedding", vec![1280]),
            ("conv", vec![16, 33, 33]),
            ("block1", vec![24, 17, 17]),
            ("block2", vec![40, 9, 9]),
            ("block3", vec![112, 5, 5]),
            ("block4", vec![320, 3, 3]),
        ]
        .into_iter()
        .map(|(n, s)| (n.to_string(), s))
        .collect();
        let mut probed = shapes(&net, 65, 65);
        probed.sort_by_key(|(n, _)| LEVELS.iter().position(|l| l == n));
        let mut want = expected_shapes.clone();
        want.sort_by_key(|(n, _)| LEVELS.iter().position(|l| l == n));
        assert_eq!(probed, want);
    }
    // `outputs:` renames: the model's `conv` serves as virb's `block1`, whose own key is hidden.
    let net = torchscript("pyramid.ts", r#"{"outputs": {"block1": "conv"}}"#);
    let block1 = forward(&net, images, &["block1"]).remove(0);
    assert_close(&block1, get(&reference, "conv"), 1e-5, true, "renamed conv");
    let probed: Vec<String> = shapes(&net, 65, 65).into_iter().map(|(n, _)| n).collect();
    assert!(!probed.contains(&"conv".to_string()), "{probed:?}");
    assert_eq!(
        shapes(&net, 65, 65)
            .iter()
            .find(|(n, _)| n == "block1")
            .unwrap()
            .1,
        [16, 33, 33]
    );
}

/// An experiment list entry.
fn entry(name: &str, file: &Path, encoder: &str, options: &str) -> String {
    format!(
        "{name}:\n  weights: '{}'\n  encoder: {encoder}\n  options: {options}\n",
        file.display()
    )
}

const VIT_OPTIONS: &str = "{input_size: 32, mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5]}";

/// One CalTech-101 job, batches of 8.
fn caltech_job(env: &Env, epochs: u32) {
    env.write(
        "virb.yaml",
        &format!("CalTech-101:\n  task: CalTech-101\n  training_configs:\n    adam:\n      optimizer: adam\n      lr: 0.001\n  num_epochs: {epochs}\n  batch_size: 8\n  image_size: {IMAGE_SIZE}\n"),
    );
}

#[test]
fn resnet50_and_vit_run_end_to_end() {
    let env = Env::new();
    env.caltech_fixture(4, 5, 3);
    let dir = torchscript_dir();
    env.write(
        "experiments.yaml",
        &[
            entry("native", weights(), "resnet50", "{}"),
            entry(
                "scripted",
                &dir.join("resnet.ts"),
                "torchscript",
                "{channels_last: true}",
            ),
            entry("vit", &dir.join("vit.ts"), "torchscript", VIT_OPTIONS),
        ]
        .concat(),
    );
    caltech_job(&env, 25);
    let out = env.run();
    assert!(out.ok(), "{}\n{}", out.stdout, out.stderr);
    let result =
        |exp: &str| read_json(&env.path(&format!("out/{exp}/CalTech-101-adam/results.json")));
    let (native, scripted, vit) = (result("native"), result("scripted"), result("vit"));
    assert_eq!(scripted["encoder"]["name"], "torchscript");
    // Same features (to float16 storage), same seeded head: the same numbers.
    assert_eq!(
        native["test_metrics"], scripted["test_metrics"],
        "native {native}\ntorchscript {scripted}"
    );
    let acc = native["test_metrics"]["top1_accuracy"].as_f64().unwrap();
    assert!(acc >= 0.9, "ResNet-50 accuracy {acc} (chance 0.25)");
    let acc = vit["test_metrics"]["top1_accuracy"].as_f64().unwrap();
    eprintln!("ViT top-1 accuracy {acc}");
    assert!(acc >= 0.6, "ViT accuracy {acc} (chance 0.25)");
}

/// THORDepth's train-mean baseline: the mean of the training targets (ViRB's normalised depth),
/// scored on the test split as the task scores (L1 per image, averaged over images).
const THOR_BASELINE: &str = r#"
import glob, sys
import numpy as np
from PIL import Image
def load(split):
    files = sorted(glob.glob(f"{sys.argv[1]}/thor_depth_prediction/{split}/*/*depth.jpg"))
    return [(np.asarray(Image.open(f).convert("L"), np.float64) / 255 - 0.5) / 0.25 for f in files]
mean = np.concatenate([g.ravel() for g in load("train")]).mean()
print(np.mean([np.abs(g - mean).mean() for g in load("test")]))
"#;

#[test]
fn pyramid_dict_serves_a_pixel_wise_task() {
    let env = Env::new();
    env.fixture("THORDepth", 4, 2, 1, 65);
    env.write(
        "experiments.yaml",
        &entry(
            "effnet",
            &torchscript_dir().join("pyramid.ts"),
            "torchscript",
            "{}",
        ),
    );
    let job = |name: &str, epochs: u32, batch: u32, pre_encode: bool| {
        format!("{name}:\n  task: THORDepth\n  training_configs:\n    adam:\n      optimizer: adam\n      lr: 0.0003\n  num_epochs: {epochs}\n  batch_size: {batch}\n  image_size: 65\n  pre_encode: {pre_encode}\n")
    };
    // Live encoding builds the head from the shapes `output_shapes` probed (pre-encoding from
    // the stored features): a short run checks that path.
    env.write(
        "virb.yaml",
        &(job("encoded", 8, 2, true) + &job("live", 2, 4, false)),
    );
    let out = env.run();
    assert!(out.ok(), "{}\n{}", out.stdout, out.stderr);
    let script = env.write("baseline.py", THOR_BASELINE);
    let py = Command::new(python())
        .arg(&script)
        .arg(env.path("data"))
        .output()
        .unwrap();
    assert!(
        py.status.success(),
        "{}",
        String::from_utf8_lossy(&py.stderr)
    );
    let base: f64 = String::from_utf8_lossy(&py.stdout).trim().parse().unwrap();
    let r = read_json(&env.path("out/effnet/encoded-adam/results.json"));
    let l1 = r["test_metrics"]["l1"].as_f64().unwrap();
    eprintln!("THORDepth test L1 {l1}, train-mean baseline {base}");
    assert!(l1 < 0.5 * base, "test L1 {l1}, baseline {base}");
    let live = read_json(&env.path("out/effnet/live-adam/results.json"));
    assert_eq!(live["timings_s"]["features"]["train"], "live", "{live}");
    let l1 = live["test_metrics"]["l1"].as_f64().unwrap();
    assert!(
        l1.is_finite() && l1 < 2.0 * base,
        "live: test L1 {l1}, baseline {base}"
    );
}

#[test]
fn bad_models_fail_their_experiment_clearly_and_the_run_goes_on() {
    let env = Env::new();
    // The test split (2 images) is encoded first, then 10 training images in batches of 8.
    env.caltech_fixture(2, 5, 1);
    let dir = torchscript_dir();
    let ts = |name: &str, file: &str, options: &str| {
        entry(name, &dir.join(file), "torchscript", options)
    };
    env.write(
        "experiments.yaml",
        &[
            ts("tuple", "bad_tuple.ts", "{}"),
            ts("nokey", "bad_nokey.ts", "{}"),
            ts("width", "bad_width.ts", "{}"),
            ts("size", "vit.ts", "{}"),
            ts("statedict", "state_dict.pt", "{}"),
            ts("option", "vit.ts", "{input_size: 32, colour: true}"),
            ts("good", "vit.ts", VIT_OPTIONS),
        ]
        .concat(),
    );
    caltech_job(&env, 1);
    let out = env.run();
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    let failed = |exp: &str, says: &[&str]| {
        let prefix = format!("error: experiment `{exp}`, job `CalTech-101`: ");
        let at = out
            .stderr
            .find(&prefix)
            .unwrap_or_else(|| panic!("{exp}:\n{}", out.stderr));
        let text = &out.stderr[at..];
        let text = &text[..text[1..].find("\nerror: ").map_or(text.len(), |e| e + 1)];
        for s in says {
            assert!(text.contains(s), "{exp}: `{s}` not in\n{text}");
        }
        assert!(!text.contains("panicked"), "{text}");
        assert!(!env
            .path(&format!("out/{exp}/CalTech-101-adam/results.json"))
            .exists());
    };
    failed(
        "tuple",
        &[
            "bad_tuple.ts returns a tuple of 2 values (a tensor of shape [2, 3], a tensor of shape [2, 3]); virb needs a tensor [N, D] (the embedding) or a dict with `embedding`",
            "help: re-export the model",
        ],
    );
    failed(
        "nokey",
        &["bad_nokey.ts returns a dict without `embedding` (keys: `features`)"],
    );
    failed(
        "width",
        &["bad_width.ts: output `embedding` has 24 channels in this batch (shape [8, 24]) but 6 in an earlier one"],
    );
    failed(
        "size",
        &[
            "vit.ts fails on a batch of shape [2, 3, 64, 64]: ",
            "Wrong image height! Expected 32 but got 64!",
            "set `input_size: <that size>`",
        ],
    );
    failed(
        "statedict",
        &[
            "state_dict.pt is a torch.save checkpoint (weights without the model's code), not a TorchScript archive",
            "help: for a torchvision ResNet state dict use `encoder: resnet50`",
        ],
    );
    failed(
        "option",
        &[
            "unknown option `colour`",
            "help: torchscript options: `mean: [r, g, b]`",
        ],
    );
    let good = read_json(&env.path("out/good/CalTech-101-adam/results.json"));
    assert!(
        good["test_metrics"]["top1_accuracy"].as_f64().is_some(),
        "{good}"
    );
}
