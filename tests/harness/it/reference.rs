//! Numbers checked against PyTorch itself (values produced by scripts/py/torch_reference.py).
use std::path::Path;
use tch::{Device, Tensor};
use virb_encoder_resnet::model::{Arch, ResNet, ResNetOptions};
use virb_tests::reference_dir;

fn load(file: &str) -> Vec<(String, Tensor)> {
    Tensor::read_safetensors(reference_dir().join(file)).unwrap()
}

fn get<'a>(tensors: &'a [(String, Tensor)], name: &str) -> &'a Tensor {
    &tensors.iter().find(|(n, _)| n == name).unwrap().1
}

pub(crate) fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    f64::try_from((a - b).abs().max()).unwrap()
}

fn check_resnet(weights: &Path, channels_last: bool) {
    check_arch(
        weights,
        Arch::RESNET50,
        "expected.safetensors",
        channels_last,
    );
}

fn check_arch(weights: &Path, arch: Arch, expected: &str, channels_last: bool) {
    let net = ResNet::load(
        weights,
        arch,
        Device::Cpu,
        ResNetOptions {
            channels_last,
            kind: tch::Kind::Float,
        },
    )
    .unwrap();
    let input = load("input.safetensors");
    let expected = load(expected);
    let names = ["conv", "block1", "block2", "block3", "block4", "embedding"];
    let out = net.forward(get(&input, "images"), &names).unwrap();
    for name in names {
        let ours = &out.iter().find(|(n, _)| n == name).unwrap().1;
        let diff = max_abs_diff(ours, get(&expected, name));
        assert!(
            diff <= 1e-4,
            "{}: `{name}` differs from torchvision by {diff}",
            weights.display()
        );
    }
}

#[test]
fn resnet50_matches_torchvision_for_every_weight_format() {
    for file in [
        "weights.pt",
        "weights_virb.pt",
        "weights_legacy.pt",
        "weights.safetensors",
        "nested.pt",
    ] {
        check_resnet(&reference_dir().join(file), true);
    }
    check_resnet(&reference_dir().join("weights.pt"), false);
}

#[test]
fn resnet18_basic_blocks_match_torchvision() {
    let weights = reference_dir().join("weights_resnet18.pt");
    check_arch(
        &weights,
        Arch::RESNET18,
        "expected_resnet18.safetensors",
        true,
    );
    check_arch(
        &weights,
        Arch::RESNET18,
        "expected_resnet18.safetensors",
        false,
    );
}

#[test]
fn resnet_output_shapes_follow_the_reference_rule() {
    let shapes = Arch::RESNET50.output_shapes(224, 224);
    let get = |n: &str| shapes.iter().find(|(k, _)| *k == n).unwrap().1.clone();
    assert_eq!(get("conv"), vec![64, 112, 112]);
    assert_eq!(get("block4"), vec![2048, 7, 7]);
    assert_eq!(get("embedding"), vec![2048]);
    let shapes = Arch::RESNET50.output_shapes(375, 1242);
    assert_eq!(
        shapes.iter().find(|(k, _)| *k == "block4").unwrap().1,
        vec![2048, 12, 39]
    );
    let shapes = Arch::RESNET18.output_shapes(224, 224);
    let get = |n: &str| shapes.iter().find(|(k, _)| *k == n).unwrap().1.clone();
    assert_eq!(get("block1"), vec![64, 56, 56]);
    assert_eq!(get("block4"), vec![512, 7, 7]);
    assert_eq!(get("embedding"), vec![512]);
}

#[test]
fn checkpoint_formats_agree_tensor_for_tensor() {
    let zip = virb_checkpoint::load(&reference_dir().join("weights_virb.pt")).unwrap();
    let legacy = virb_checkpoint::load(&reference_dir().join("weights_legacy.pt")).unwrap();
    assert_eq!(zip.format, virb_checkpoint::Format::TorchZip);
    assert_eq!(legacy.format, virb_checkpoint::Format::TorchLegacy);
    assert_eq!(zip.tensors.len(), legacy.tensors.len());
    for ((kz, tz), (kl, tl)) in zip.tensors.iter().zip(&legacy.tensors) {
        assert_eq!(kz.strip_prefix("model.").unwrap(), kl);
        assert_eq!(tz.kind(), tl.kind());
        assert!(tz.equal(tl), "{kl} differs");
    }
    let nested = virb_checkpoint::load(&reference_dir().join("nested.pt")).unwrap();
    assert_eq!(nested.nested_under.as_deref(), Some("state_dict"));
    // num_batches_tracked is int64 and survives as such.
    let nbt = &legacy
        .tensors
        .iter()
        .find(|(k, _)| k == "bn1.num_batches_tracked")
        .unwrap()
        .1;
    assert_eq!(nbt.kind(), tch::Kind::Int64);
}

#[test]
fn preprocessing_matches_torchvision_resize_to_tensor_normalize() {
    let ours = virb_plugin_kit::image::load_input(&reference_dir().join("image.jpg"), 56).unwrap();
    let expected = load("image_expected.safetensors");
    let reference = get(&expected, "image");
    // One 8-bit level is at most 1/255/0.225 = 0.0174 after normalisation. JPEG decoders
    // (libjpeg-turbo for PIL, zune-jpeg here) may round a few pixels differently.
    let level = 1.0 / 255.0 / 0.225;
    let max = max_abs_diff(&ours, reference);
    let mean = f64::try_from((&ours - reference).abs().mean(tch::Kind::Double)).unwrap();
    assert!(
        max <= 3.0 * level,
        "preprocessing differs from torchvision by up to {max}"
    );
    assert!(
        mean <= 0.5 * level,
        "preprocessing differs from torchvision by {mean} on average"
    );
}
