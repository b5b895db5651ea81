//! Fine-tuning through the plugin's `Encoder` trait object, as the host drives it:
//! `trainable_parameters`, `forward_train` + backward + an optimiser step on the returned handles,
//! `forward` for evaluation, `state` for saving. Reference values come from PyTorch itself
//! (scripts/py/finetune_reference.py, run with the libtorch venv's python).
#![allow(clippy::unwrap_used, missing_docs)]

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};
use tch::{Kind, Tensor};
use virb_plugin_api::{
    abi_stable::std_types::{RResult, RString},
    EncoderBox, EncoderRequest, PluginError, TensorRef,
};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// The libtorch venv's python (`VIRB_PYTHON_BIN`, as scripts/env.sh sets it, or the venv
/// scripts/setup-libtorch.sh prints).
fn python() -> PathBuf {
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

fn script() -> PathBuf {
    root().join("scripts/py/finetune_reference.py")
}

/// Runs the reference script, returning its stdout.
fn run_python(args: &[&std::ffi::OsStr]) -> String {
    let out = Command::new(python())
        .arg(script())
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "finetune_reference.py {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The files `finetune_reference.py make` writes, produced once and cached (keyed by the scripts'
/// content) across test threads and processes.
fn reference() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let key = fs::read_to_string(script()).unwrap()
            + &fs::read_to_string(root().join("scripts/py/make_weights.py")).unwrap();
        let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
        fs::create_dir_all(base).unwrap();
        let dir = base.join("finetune-reference");
        let lock = fs::File::create(base.join("finetune-reference.lock")).unwrap();
        lock.lock().unwrap();
        let stamp = dir.join(".complete");
        if fs::read_to_string(&stamp).ok().as_deref() != Some(key.as_str()) {
            let _ = fs::remove_dir_all(&dir);
            run_python(&["make".as_ref(), dir.as_os_str()]);
            fs::write(&stamp, &key).unwrap();
        }
        lock.unlock().unwrap();
        dir
    })
}

fn ok<T>(result: RResult<T, PluginError>) -> T {
    result.into_result().unwrap_or_else(|e| panic!("{e}"))
}

fn resnet50(weights: &Path, channels_last: bool) -> EncoderBox {
    let factory = virb_encoder_resnet::factories().into_iter().next().unwrap();
    assert_eq!(ok(factory.info()).name.as_str(), "resnet50");
    ok(factory.load(EncoderRequest {
        weights: weights.to_str().unwrap().into(),
        device: "cpu".into(),
        options_json: format!("{{\"channels_last\": {channels_last}}}").into(),
    }))
}

fn read(file: &str) -> HashMap<String, Tensor> {
    Tensor::read_safetensors(reference().join(file))
        .unwrap()
        .into_iter()
        .collect()
}

fn images() -> Tensor {
    read("input.safetensors").remove("images").unwrap()
}

fn as_map(
    tensors: virb_plugin_api::abi_stable::std_types::RVec<virb_plugin_api::NamedTensor>,
) -> HashMap<String, Tensor> {
    tensors
        .into_iter()
        .map(|n| (n.name.into_string(), n.tensor.into_tch()))
        .collect()
}

fn embedding(encoder: &EncoderBox, images: &Tensor, train: bool) -> Tensor {
    let wanted = [RString::from("embedding")];
    let out = if train {
        encoder.forward_train(TensorRef::of(images), wanted.as_slice().into())
    } else {
        encoder.forward(TensorRef::of(images), wanted.as_slice().into())
    };
    as_map(ok(out)).remove("embedding").unwrap()
}

fn max_abs(t: &Tensor) -> f64 {
    f64::try_from(t.abs().max()).unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    max_abs(&(a - b))
}

/// Max abs difference relative to the reference's largest magnitude.
fn rel_diff(ours: &Tensor, reference: &Tensor) -> f64 {
    max_abs_diff(ours, reference) / max_abs(reference)
}

#[test]
fn one_sgd_step_on_forward_train_changes_the_encoder() {
    let weights = reference().join("weights.safetensors");
    let encoder = resnet50(&weights, true);
    let x = images();
    let eval_before = embedding(&encoder, &x, false);

    let params = as_map(ok(encoder.trainable_parameters()));
    // ResNet-50 without fc: 53 convolutions, 53 batch norms (weight and bias).
    assert_eq!(params.len(), 53 + 2 * 53);
    assert!(params.values().all(|p| p.requires_grad()));
    assert!(
        params.keys().all(|k| !k.contains("running")),
        "buffers are not parameters"
    );
    let before: HashMap<&str, Tensor> = [
        "conv1.weight",
        "layer4.2.conv3.weight",
        "layer4.2.bn3.weight",
    ]
    .into_iter()
    .map(|k| (k, params[k].detach().copy()))
    .collect();

    let emb = embedding(&encoder, &x, true);
    assert!(emb.requires_grad(), "forward_train must record the graph");
    let loss = emb.square().mean(Kind::Float);
    let loss_before = f64::try_from(&loss).unwrap();
    loss.backward();

    for (name, p) in &params {
        let g = p.grad();
        assert!(g.defined(), "{name} got no gradient");
        assert!(
            bool::try_from(g.isfinite().all()).unwrap(),
            "{name}: non-finite gradient"
        );
        if name == "conv1.weight" || name.starts_with("layer4.") && name.ends_with("weight") {
            assert!(max_abs(&g) > 0.0, "{name}: zero gradient");
        }
    }
    println!(
        "grad max |.|: conv1.weight {:.3e}, layer4.0.conv1.weight {:.3e}, layer4.2.bn3.weight {:.3e}",
        max_abs(&params["conv1.weight"].grad()),
        max_abs(&params["layer4.0.conv1.weight"].grad()),
        max_abs(&params["layer4.2.bn3.weight"].grad())
    );

    // The host's SGD: in place, under no_grad, on the handles it was given.
    let lr = 0.01;
    tch::no_grad(|| {
        for p in params.values() {
            let mut p = p.shallow_clone();
            let step = p.grad() * lr;
            let _ = p.f_sub_(&step).unwrap();
            let _ = p.grad().zero_();
        }
    });
    for (name, old) in &before {
        let diff = max_abs_diff(&params[*name].detach(), old);
        println!("{name} moved by up to {diff:.3e}");
        assert!(diff > 0.0, "{name} did not change");
    }
    // The encoder's own weights are the handles the host updated.
    let state = as_map(ok(encoder.state()));
    assert_eq!(
        max_abs_diff(&state["conv1.weight"], &params["conv1.weight"].detach()),
        0.0
    );

    // The step lowers the loss on the same batch.
    let emb = embedding(&encoder, &x, true);
    let loss_after = f64::try_from(emb.square().mean(Kind::Float)).unwrap();
    println!("loss {loss_before:.6} -> {loss_after:.6}");
    assert!(
        loss_after < loss_before,
        "loss {loss_before} -> {loss_after}"
    );

    // Evaluation stays eval mode without a graph, and sees the new weights and statistics.
    let eval_after = embedding(&encoder, &x, false);
    assert!(
        !eval_after.requires_grad(),
        "forward must not record a graph"
    );
    assert!(max_abs_diff(&eval_after, &eval_before) > 0.0);
    // Eval mode does not depend on the rest of the batch (batch norm uses running statistics).
    let single = embedding(&encoder, &x.narrow(0, 0, 1), false);
    assert!(max_abs_diff(&single, &eval_after.narrow(0, 0, 1)) < 1e-4);
}

#[test]
fn forward_train_matches_torchvision_train_mode() {
    let expected = read("expected.safetensors");
    let x = images();
    for channels_last in [true, false] {
        let encoder = resnet50(&reference().join("weights.safetensors"), channels_last);
        let params = as_map(ok(encoder.trainable_parameters()));
        let emb = embedding(&encoder, &x, true);
        emb.sum(Kind::Float).backward();
        let state = as_map(ok(encoder.state()));
        let eval = embedding(&encoder, &x, false);
        let checks = [
            ("embedding", emb.detach(), 1e-5),
            // Through 53 train-mode batch norms, float32 rounding alone (PyTorch's included)
            // leaves ~1e-3 relative error on this gradient: see finetune_reference.py.
            ("grad.conv1.weight", params["conv1.weight"].grad(), 5e-3),
            (
                "grad.layer4.2.bn3.weight",
                params["layer4.2.bn3.weight"].grad(),
                1e-4,
            ),
            (
                "bn1.running_mean",
                state["bn1.running_mean"].shallow_clone(),
                1e-5,
            ),
            (
                "bn1.running_var",
                state["bn1.running_var"].shallow_clone(),
                1e-5,
            ),
            (
                "layer4.2.bn3.running_mean",
                state["layer4.2.bn3.running_mean"].shallow_clone(),
                1e-5,
            ),
            (
                "layer4.2.bn3.running_var",
                state["layer4.2.bn3.running_var"].shallow_clone(),
                1e-5,
            ),
            ("eval_embedding", eval, 1e-5),
        ];
        for (name, ours, tol) in checks {
            let reference = &expected[name];
            let rel = rel_diff(&ours, reference);
            println!(
                "channels_last={channels_last} {name}: max |diff| {:.3e} (max |ref| {:.3e}, relative {rel:.3e})",
                max_abs_diff(&ours, reference),
                max_abs(reference)
            );
            assert!(
                rel <= tol,
                "channels_last={channels_last}: {name} differs from PyTorch by {rel:e} (relative)"
            );
        }
    }
}

#[test]
fn state_round_trips_through_safetensors_the_loader_and_torchvision() {
    let weights = reference().join("weights.safetensors");
    let encoder = resnet50(&weights, true);
    let x = images();
    // Train one step so that the state differs from the file it was loaded from.
    let params = as_map(ok(encoder.trainable_parameters()));
    embedding(&encoder, &x, true)
        .square()
        .mean(Kind::Float)
        .backward();
    tch::no_grad(|| {
        for p in params.values() {
            let mut p = p.shallow_clone();
            let _ = p.f_sub_(&(p.grad() * 0.01)).unwrap();
        }
    });
    let ours = embedding(&encoder, &x, false);

    let state: Vec<(String, Tensor)> = ok(encoder.state())
        .into_iter()
        .map(|n| (n.name.into_string(), n.tensor.into_tch()))
        .collect();
    // Everything the torchvision file holds, but `fc.*` and `num_batches_tracked`.
    let mut names: Vec<&str> = state.iter().map(|(n, _)| n.as_str()).collect();
    names.sort();
    let file = Tensor::read_safetensors(&weights).unwrap();
    let mut expected: Vec<&str> = file
        .iter()
        .map(|(n, _)| n.as_str())
        .filter(|n| !n.starts_with("fc.") && !n.ends_with("num_batches_tracked"))
        .collect();
    expected.sort();
    assert_eq!(names, expected);
    assert!(state.iter().all(|(_, t)| !t.requires_grad()));

    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("finetune-state-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let saved = dir.join("encoder.safetensors");
    Tensor::write_safetensors(&state, &saved).unwrap();

    for channels_last in [true, false] {
        let reloaded = resnet50(&saved, channels_last);
        let theirs = embedding(&reloaded, &x, false);
        let diff = max_abs_diff(&theirs, &ours);
        println!("reloaded (channels_last={channels_last}): max |diff| {diff:.3e}");
        assert!(diff <= 1e-5, "reloaded encoder differs by {diff}");
    }

    // torchvision loads it with strict=False, missing only fc and num_batches_tracked.
    let torch_out = dir.join("torchvision.safetensors");
    let report = run_python(&[
        "check-state".as_ref(),
        saved.as_os_str(),
        reference().join("input.safetensors").as_os_str(),
        torch_out.as_os_str(),
    ]);
    let report: serde_json::Value = serde_json::from_str(report.trim()).unwrap();
    assert_eq!(
        report["unexpected"].as_array().unwrap().len(),
        0,
        "{report}"
    );
    for key in report["missing"].as_array().unwrap() {
        let key = key.as_str().unwrap();
        assert!(
            key.starts_with("fc.") || key.ends_with("num_batches_tracked"),
            "torchvision misses `{key}`"
        );
    }
    let torch_emb = Tensor::read_safetensors(&torch_out).unwrap().remove(0).1;
    let rel = rel_diff(&ours, &torch_emb);
    println!("torchvision eval embedding of the saved state: relative max |diff| {rel:.3e}");
    assert!(
        rel <= 1e-5,
        "torchvision's embedding differs by {rel:e} (relative)"
    );
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn forward_train_refuses_a_batch_norm_with_one_value_per_channel() {
    let encoder = resnet50(&reference().join("weights.safetensors"), true);
    let one = Tensor::zeros([1, 3, 32, 32], (Kind::Float, tch::Device::Cpu));
    let wanted = [RString::from("embedding")];
    let err = encoder
        .forward_train(TensorRef::of(&one), wanted.as_slice().into())
        .into_result()
        .err()
        .unwrap();
    assert_eq!(
        err.kind(),
        Some(virb_plugin_api::ErrorKind::InvalidInput),
        "{err}"
    );
    assert!(err.message.contains("`block4` would be 1x1"), "{err}");
    // Two images, or a shallower output, are fine; eval mode never needs more.
    let two = Tensor::zeros([2, 3, 32, 32], (Kind::Float, tch::Device::Cpu));
    ok(encoder.forward_train(TensorRef::of(&two), wanted.as_slice().into()));
    let block3 = [RString::from("block3")];
    ok(encoder.forward_train(TensorRef::of(&one), block3.as_slice().into()));
    ok(encoder.forward(TensorRef::of(&one), wanted.as_slice().into()));
}
