//! The pixel-wise metrics and the KITTI flow decoder against NumPy on fixed seeded tensors
//! (`scripts/py/dense_metrics_reference.py`), fed in uneven batches so that what is checked is
//! the accumulation over a whole split, not one batch; and ViRB's pixel-wise decoders against
//! the same modules built in PyTorch, on the same weights.
use std::collections::HashMap;
use tch::Tensor;
use virb_plugin_kit::{deeplab, dense_losses, dense_metrics, flow_png, pixel_heads};
use virb_tests::{dense_reference_dir, read_json};

fn inputs() -> HashMap<String, Tensor> {
    Tensor::read_safetensors(dense_reference_dir().join("inputs.safetensors"))
        .unwrap()
        .into_iter()
        .collect()
}

fn expected() -> serde_json::Value {
    read_json(&dense_reference_dir().join("expected.json"))
}

fn close(what: &str, got: f64, want: f64) {
    assert!(
        (got - want).abs() <= 1e-9 * want.abs().max(1.0),
        "{what}: virb {got}, NumPy {want}"
    );
}

/// Feeds `(output, target)` in batches of the given sizes along the first dimension.
fn batches(output: &Tensor, target: &Tensor, sizes: &[i64], mut add: impl FnMut(&Tensor, &Tensor)) {
    let mut start = 0;
    for &n in sizes {
        add(&output.narrow(0, start, n), &target.narrow(0, start, n));
        start += n;
    }
    assert_eq!(start, output.size()[0]);
}

#[test]
fn segmentation_miou_is_one_confusion_matrix_over_the_split() {
    let (t, e) = (inputs(), expected());
    let mut m = dense_metrics::Segmentation::new(5, Some(255));
    batches(&t["seg_logits"], &t["seg_target"], &[3, 1, 3], |o, g| {
        m.add_labels(&o.argmax(1, false), g).unwrap()
    });
    let iou = m.per_class_iou();
    for (k, want) in e["seg"]["iou"].as_array().unwrap().iter().enumerate() {
        match want.as_f64() {
            Some(w) => close(&format!("IoU of class {k}"), iou[k].unwrap(), w),
            None => assert_eq!(iou[k], None, "class {k} is absent from both: skipped"),
        }
    }
    close("mIoU", m.miou(), e["seg"]["miou"].as_f64().unwrap());
    close(
        "pixel accuracy",
        m.pixel_accuracy(),
        e["seg"]["pixel_accuracy"].as_f64().unwrap(),
    );

    let mut b = dense_metrics::Segmentation::binary(1, None);
    batches(&t["bin_logits"], &t["bin_target"], &[2, 3], |o, g| {
        b.add_labels(&o.argmax(1, false), g).unwrap()
    });
    close(
        "IoU of the positive class",
        b.per_class_iou()[1].unwrap(),
        e["binary"]["iou_positive"].as_f64().unwrap(),
    );
    close(
        "binary pixel accuracy",
        b.pixel_accuracy(),
        e["binary"]["pixel_accuracy"].as_f64().unwrap(),
    );
}

#[test]
fn segmentation_refuses_class_ids_outside_its_classes() {
    let mut m = dense_metrics::Segmentation::new(3, Some(255));
    let pred = Tensor::from_slice(&[0i64, 1, 2, 1]);
    let target = Tensor::from_slice(&[0i64, 7, 255, 1]);
    let err = m.add_labels(&pred, &target).unwrap_err();
    assert!(
        err.message
            .contains("a target class id is outside 0..2 (ids 0..=7)"),
        "{}",
        err.message
    );
}

#[test]
fn depth_metrics_are_per_image_over_valid_pixels() {
    let (t, e) = (inputs(), expected());
    let d = &e["depth"];
    let mut m = dense_metrics::Depth::new(d["min"].as_f64().unwrap(), d["max"].as_f64().unwrap());
    batches(&t["depth_pred"], &t["depth_gt"], &[4, 2], |p, g| {
        m.add(p, g).unwrap()
    });
    let names = ["L1", "RMSE", "AbsRel", "delta1", "delta2", "delta3"];
    for ((name, got), want) in names
        .iter()
        .zip(m.values())
        .zip(d["values"].as_array().unwrap())
    {
        close(name, got, want.as_f64().unwrap());
    }
    assert_eq!(m.non_finite, d["non_finite"].as_u64().unwrap());
    assert_eq!(m.empty_images, d["empty_images"].as_u64().unwrap());
}

#[test]
fn flow_epe_and_fl_all_in_original_pixels() {
    let (t, e) = (inputs(), expected());
    let mut m = dense_metrics::Flow::new();
    batches(&t["flow_pred"], &t["flow_target"], &[1, 3], |p, g| {
        m.add(p, g).unwrap()
    });
    let [epe, fl] = m.values();
    close("EPE", epe, e["flow"]["epe"].as_f64().unwrap());
    close("Fl-all", fl, e["flow"]["fl_all"].as_f64().unwrap());
    assert_eq!(m.empty_images, 1);
    let err = m
        .add(
            &Tensor::zeros([1, 3, 4, 4], tch::kind::FLOAT_CPU),
            &Tensor::zeros([1, 3, 4, 4], tch::kind::FLOAT_CPU),
        )
        .unwrap_err();
    assert!(
        err.message.contains("flow: output has shape [1, 3, 4, 4]"),
        "{}",
        err.message
    );
}

#[test]
fn kitti_flow_png_decodes_as_the_devkit_does() {
    let t = inputs();
    let dir = dense_reference_dir();
    let f = flow_png::read(&dir.join("flow16.png")).unwrap();
    assert_eq!((f.width, f.height), (6, 5));
    let u: Vec<f32> = Vec::try_from(&t["png_u"].flatten(0, -1)).unwrap();
    let v: Vec<f32> = Vec::try_from(&t["png_v"].flatten(0, -1)).unwrap();
    let valid: Vec<u8> = Vec::try_from(&t["png_valid"].flatten(0, -1)).unwrap();
    assert_eq!(f.u, u);
    assert_eq!(f.v, v);
    assert_eq!(f.valid, valid.iter().map(|&x| x > 0).collect::<Vec<_>>());
    // Our writer round-trips exactly.
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("copy.png");
    flow_png::write(&copy, &f).unwrap();
    let back = flow_png::read(&copy).unwrap();
    assert_eq!(back.valid, f.valid);
    for i in 0..f.u.len() {
        if f.valid[i] {
            assert_eq!((back.u[i], back.v[i]), (f.u[i], f.v[i]));
        }
    }
    let err = flow_png::read(&dir.join("flow8.png")).unwrap_err();
    assert!(
        err.message
            .contains("flow8.png is a Rgb8 image, not a 16-bit RGB PNG"),
        "{}",
        err.message
    );
}

/// Copies the reference weights under `prefix` into `vs`, checking that both name the same
/// tensors with the same shapes.
fn load_prefixed(vs: &tch::nn::VarStore, all: &HashMap<String, Tensor>, prefix: &str) {
    let mut own = vs.variables();
    let theirs: Vec<(&String, &Tensor)> =
        all.iter().filter(|(k, _)| k.starts_with(prefix)).collect();
    assert_eq!(theirs.len(), own.len(), "tensor count");
    for (k, src) in theirs {
        let name = &k[prefix.len()..];
        let dst = own
            .get_mut(name)
            .unwrap_or_else(|| panic!("virb has no `{name}`"));
        assert_eq!(dst.size(), src.size(), "{name}");
        tch::no_grad(|| dst.copy_(src));
    }
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a - b).abs().max().double_value(&[])
}

#[test]
fn pixel_decoders_match_pytorch_on_the_same_weights() {
    let t: HashMap<String, Tensor> =
        Tensor::read_safetensors(dense_reference_dir().join("pixel_heads.safetensors"))
            .unwrap()
            .into_iter()
            .collect();
    let channels = [8, 12, 16, 20, 24];
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let dec = pixel_heads::PixelDecoder::new(&vs.root(), &channels, 3).unwrap();
    load_prefixed(&vs, &t, "dec/");
    let levels: Vec<Tensor> = (0..5)
        .map(|i| t[&format!("dec_in_{i}")].shallow_clone())
        .collect();
    let out = tch::no_grad(|| dec.forward(&levels)).unwrap();
    assert!(out.abs().max().double_value(&[]) > 0.1, "a trivial output");
    let d = max_diff(&out, &t["dec_out"]);
    assert!(d <= 1e-4, "PixelWise decoder: max |virb - PyTorch| = {d}");

    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let fusion = pixel_heads::SiameseFusion::new(&vs.root(), &channels);
    let dec = pixel_heads::PixelDecoder::new(&vs.root(), &channels, 1).unwrap();
    load_prefixed(&vs, &t, "sia/");
    let pairs: Vec<Tensor> = (0..5)
        .map(|i| t[&format!("sia_in_{i}")].shallow_clone())
        .collect();
    let out = tch::no_grad(|| dec.forward(&fusion.forward(&pairs).unwrap())).unwrap();
    let d = max_diff(&out, &t["sia_out"]);
    assert!(
        d <= 1e-4,
        "SiamesePixelWise head: max |virb - PyTorch| = {d}"
    );
}

#[test]
fn pixel_losses_match_pytorch_with_their_gradients() {
    let t: HashMap<String, Tensor> =
        Tensor::read_safetensors(dense_reference_dir().join("pixel_heads.safetensors"))
            .unwrap()
            .into_iter()
            .collect();
    let logits = t["ce_logits"].copy().set_requires_grad(true);
    let ce = dense_losses::cross_entropy(
        &logits,
        &t["ce_target"],
        Some(&[0.1, 1.0, 1.0, 1.0, 1.0]),
        Some(255),
    )
    .unwrap();
    ce.backward();
    assert!(
        max_diff(&ce, &t["ce_loss"]) <= 1e-6,
        "CE {ce} vs {}",
        t["ce_loss"]
    );
    assert!(
        max_diff(&logits.grad(), &t["ce_grad"]) <= 1e-6,
        "CE gradient"
    );
    let pred = t["l1_pred"].copy().set_requires_grad(true);
    let l1 = dense_losses::masked_l1(&pred, &t["l1_gt"]).unwrap();
    l1.backward();
    assert!(
        max_diff(&l1, &t["l1_loss"]) <= 1e-6,
        "masked L1 {l1} vs {}",
        t["l1_loss"]
    );
    assert!(
        max_diff(&pred.grad(), &t["l1_grad"]) <= 1e-7,
        "masked L1 gradient"
    );
    // A class id outside the head's classes is named, not a libtorch assertion.
    let bad = t["ce_target"].copy();
    let _ = bad.get(1).get(2).get(3).fill_(9);
    let err = dense_losses::cross_entropy(&t["ce_logits"], &bad, None, Some(255)).unwrap_err();
    assert!(
        err.message.contains("class id 9 is outside 0..4"),
        "{}",
        err.message
    );
    // No valid depth: a zero loss that still has a gradient.
    let none = dense_losses::masked_l1(&pred, &t["l1_gt"].zeros_like()).unwrap();
    assert_eq!(none.double_value(&[]), 0.0);
    assert!(none.requires_grad());
}

#[test]
fn deeplab_matches_pytorch_in_eval_and_train_mode() {
    let t: HashMap<String, Tensor> =
        Tensor::read_safetensors(dense_reference_dir().join("pixel_heads.safetensors"))
            .unwrap()
            .into_iter()
            .collect();
    let cfg = deeplab::DeepLabConfig {
        low_channels: 12,
        mid_channels: 20,
        width: 6,
        aspp: 16,
        low: 8,
        classes: 3,
        bn_momentum: deeplab::BN_MOMENTUM,
    };
    let mut vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let head = deeplab::DeepLab::new(&vs.root(), cfg);
    load_prefixed(&vs, &t, "deeplab/");
    let (b1, b3) = (&t["deeplab_b1"], &t["deeplab_b3"]);
    let eval = tch::no_grad(|| head.forward(b1, b3, [36, 36], false)).unwrap();
    let d = max_diff(&eval, &t["deeplab_eval"]);
    assert!(d <= 1e-4, "DeepLab eval: max |virb - PyTorch| = {d}");
    let train = tch::no_grad(|| head.forward(b1, b3, [36, 36], true)).unwrap();
    let d = max_diff(&train, &t["deeplab_train"]);
    assert!(
        d <= 1e-4,
        "DeepLab train mode (batch statistics): max |virb - PyTorch| = {d}"
    );
    assert!(
        max_diff(&eval, &train) > 1e-3,
        "train and eval mode should differ"
    );
    // Momentum 0.0003 moved the ASPP's running mean a little; the layer4 replica's did not move.
    let vars = vs.variables();
    let d = max_diff(
        &vars["aspp.aspp1_bn.running_mean"],
        &t["deeplab_after_train_aspp1_mean"],
    );
    assert!(d <= 1e-6, "ASPP running mean after a training step: {d}");
    let d = max_diff(
        &vars["block4.upsample_layer.bn1.running_mean"],
        &t["deeplab_after_train_block4_mean"],
    );
    assert!(
        d == 0.0,
        "the layer4 replica's statistics must stay frozen: {d}"
    );
    // The replica starts from the encoder's layer4 (torchvision names).
    let encoder: Vec<(String, Tensor)> = vars
        .iter()
        .filter_map(|(k, v)| {
            let k = k
                .replace("block4.upsample_layer.", "layer4.0.")
                .replace("block4.conv.0.", "layer4.1.")
                .replace("block4.conv.1.", "layer4.2.");
            k.starts_with("layer4.").then(|| (k, v.ones_like()))
        })
        .collect();
    let n = deeplab::DeepLab::load_layer4(&mut vs, "", &encoder).unwrap();
    assert_eq!(n, encoder.len());
    assert_eq!(
        vs.variables()["block4.conv.1.conv3.weight"]
            .mean(tch::Kind::Float)
            .double_value(&[]),
        1.0
    );
    let wrong = vec![(
        "layer4.0.conv1.weight".to_string(),
        Tensor::ones([7, 7, 1, 1], tch::kind::FLOAT_CPU),
    )];
    let err = deeplab::DeepLab::load_layer4(&mut vs, "", &wrong).unwrap_err();
    assert!(
        err.message
            .contains("encoder tensor `layer4.0.conv1.weight` has shape [7, 7, 1, 1]"),
        "{}",
        err.message
    );
}
