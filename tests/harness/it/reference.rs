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

/// The kit's linear layers (every classification head) start where PyTorch's `nn.Linear` does
/// after the same `manual_seed`, value for value; so does the two-layer head, drawn in order.
#[test]
fn linear_heads_are_initialised_exactly_as_pytorch() {
    use virb_plugin_kit::heads::torch_linear;
    let init = load("linear_init.safetensors");
    let vs = tch::nn::VarStore::new(Device::Cpu);
    tch::manual_seed(3);
    let lin = torch_linear(vs.root() / "lin", 2048, 12);
    tch::manual_seed(4);
    let mlp0 = torch_linear(vs.root() / "mlp0", 96, 512);
    let mlp2 = torch_linear(vs.root() / "mlp2", 512, 5);
    for (layer, prefix) in [(&lin, ""), (&mlp0, "mlp0_"), (&mlp2, "mlp2_")] {
        let bias = layer.bs.as_ref().unwrap();
        for (ours, name) in [(&layer.ws, "weight"), (bias, "bias")] {
            let theirs = get(&init, &format!("{prefix}{name}"));
            assert_eq!(ours.size(), theirs.size(), "{prefix}{name}");
            assert!(ours.equal(theirs), "{prefix}{name} differs from PyTorch's");
        }
    }
}

#[test]
fn preprocessing_matches_torchvision_resize_to_tensor_normalize() {
    let ours = virb_plugin_kit::image::load_input(&reference_dir().join("image.jpg"), 56).unwrap();
    let expected = load("image_expected.safetensors");
    let reference = get(&expected, "image");
    // One 8-bit level is at most 1/255/0.224 = 0.0175 after normalisation. The decoded pixels are
    // PIL's (the same libjpeg-turbo); the antialiased resize may round a pixel differently.
    let max = max_abs_diff(&ours, reference);
    assert!(
        max <= 1.0 * LEVEL + 1e-6,
        "preprocessing differs from torchvision by up to {max}"
    );
}

/// One 8-bit level after normalisation, at most (the smallest standard deviation, 0.224).
const LEVEL: f64 = 1.0 / 255.0 / 0.224;

fn rgb_tensor(img: &virb_plugin_kit::image::Rgb) -> Tensor {
    Tensor::from_slice(&img.pixels).view([i64::from(img.height), i64::from(img.width), 3])
}

/// JPEGs are decoded by the libjpeg-turbo PIL uses, with PIL's settings: at full scale, and at the
/// reduced scales PIL's `Image.draft` picks (IDCT scaling), the pixels are PIL's exactly; grayscale
/// files come out as PIL's `convert("RGB")` of them.
#[test]
fn jpeg_decoding_matches_pil_exactly_at_every_scale() {
    use virb_plugin_kit::image::load_rgb_at_least;
    let small = load("image_expected.safetensors");
    let big = load("big_expected.safetensors");
    let cases = [
        ("image.jpg", None, get(&small, "image_rgb")),
        ("big.jpg", None, get(&big, "big_rgb")),
        // 112: 1/2 keeps both sides at least 2 x 112 (500x380), 1/4 would not.
        ("big.jpg", Some(112), get(&big, "big_half_rgb")),
        ("big.jpg", Some(64), get(&big, "big_quarter_rgb")),
        ("gray.jpg", None, get(&big, "gray_rgb")),
        // Grayscale keeps the target itself: 1/4 is 180x140.
        ("gray.jpg", Some(112), get(&big, "gray_quarter_rgb")),
    ];
    for (file, min_side, pil) in cases {
        let ours = rgb_tensor(&load_rgb_at_least(&reference_dir().join(file), min_side).unwrap());
        assert_eq!(ours.size(), pil.size(), "{file} at {min_side:?}");
        let differing = i64::try_from(ours.ne_tensor(pil).sum(tch::Kind::Int64)).unwrap();
        assert_eq!(
            differing, 0,
            "{file} at {min_side:?}: {differing} values differ from PIL's"
        );
    }
}

/// CMYK JPEGs (TurboJPEG will not turn them into RGB) go through zune-jpeg: PIL's colours, up to
/// the two decoders' rounding.
#[test]
fn cmyk_jpeg_decodes_to_pil_colours() {
    let big = load("big_expected.safetensors");
    let pil = get(&big, "cmyk_rgb");
    let img = virb_plugin_kit::image::load_rgb(&reference_dir().join("cmyk.jpg")).unwrap();
    let ours = rgb_tensor(&img);
    assert_eq!(ours.size(), pil.size());
    let diff = (ours.to_kind(tch::Kind::Float) - pil.to_kind(tch::Kind::Float)).abs();
    let mean = f64::try_from(diff.mean(tch::Kind::Double)).unwrap();
    let max = f64::try_from(diff.max()).unwrap();
    eprintln!("CMYK JPEG vs PIL: max {max} levels, mean {mean:.3}");
    assert!(mean <= 1.0 && max <= 8.0, "max {max}, mean {mean}");
}

/// The reduced-scale path (1/2 here) against torchvision's full decode + resize: the same image
/// within a few levels, as PIL's `reducing_gap=2` promises.
#[test]
fn reduced_scale_input_is_close_to_torchvision_at_full_scale() {
    let ours = virb_plugin_kit::image::load_input(&reference_dir().join("big.jpg"), 112).unwrap();
    let expected = load("big_expected.safetensors");
    let reference = get(&expected, "big");
    let max = max_abs_diff(&ours, reference) / LEVEL;
    let mean = f64::try_from((&ours - reference).abs().mean(tch::Kind::Double)).unwrap() / LEVEL;
    eprintln!("1/2-scale decode vs torchvision at full scale: max {max:.2} levels, mean {mean:.3}");
    // Measured: max 1.97, mean 0.150.
    assert!(max <= 4.0, "differs by up to {max:.2} levels");
    assert!(mean <= 0.4, "differs by {mean:.3} levels on average");
}
