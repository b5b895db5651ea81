use crate::cityscapes::Cityscapes;
use crate::head::{DenseHead, Loss};
use crate::metric::Scoring;
use crate::pets_detection::PetsDetection;
use tch::{nn, Kind, Tensor};
use virb_plugin_api::{FeatureSpec, ForwardContext, HeadRequest, NamedTensor, Task};
use virb_plugin_kit::deeplab::{DeepLab, DeepLabConfig};

/// ResNet's size rule: `(n - 1) / 2 + 1` per stride-2 stage.
fn down(n: i64, times: u32) -> i64 {
    (0..times).fold(n, |n, _| (n - 1) / 2 + 1)
}

/// A small pyramid (channels conv 8, block1 16, block2 24, block3 32, block4 40) for an
/// `h` x `w` input: per-sample specs and a batch of random features.
fn pyramid(b: i64, h: i64, w: i64) -> (Vec<FeatureSpec>, Vec<(&'static str, Tensor)>) {
    let levels = [
        ("conv", 8, 1),
        ("block1", 16, 2),
        ("block2", 24, 3),
        ("block3", 32, 4),
        ("block4", 40, 5),
    ];
    let specs = levels
        .iter()
        .map(|(n, c, t)| FeatureSpec {
            name: (*n).into(),
            shape: vec![*c, down(h, *t), down(w, *t)].into(),
        })
        .collect();
    let feats = levels
        .iter()
        .map(|(n, c, t)| {
            (
                *n,
                Tensor::randn(
                    [b, *c, down(h, *t), down(w, *t)],
                    (Kind::Float, tch::Device::Cpu),
                ),
            )
        })
        .collect();
    (specs, feats)
}

fn head_request(features: Vec<FeatureSpec>, outputs: u32, state: Vec<NamedTensor>) -> HeadRequest {
    HeadRequest {
        features: features.into(),
        num_outputs: outputs,
        device: "cpu".into(),
        seed: 3,
        options_json: "{}".into(),
        input_height: 64,
        input_width: 64,
        encoder_state: state.into(),
    }
}

/// A `layer4` state of bottleneck width 8 on 32 input channels, named like torchvision's.
fn layer4_state() -> Vec<NamedTensor> {
    let vs = nn::VarStore::new(tch::Device::Cpu);
    let config = DeepLabConfig {
        low_channels: 16,
        mid_channels: 32,
        width: 8,
        ..DeepLabConfig::resnet50(20)
    };
    let _ = DeepLab::new(&vs.root(), config);
    let mut state: Vec<NamedTensor> = vs
        .variables()
        .into_iter()
        .filter_map(|(n, t)| {
            let r = n.strip_prefix("block4.")?;
            let name = if let Some(r) = r.strip_prefix("upsample_layer.") {
                format!("layer4.0.{r}")
            } else if let Some(r) = r.strip_prefix("conv.0.") {
                format!("layer4.1.{r}")
            } else {
                format!("layer4.2.{}", r.strip_prefix("conv.1.")?)
            };
            Some(NamedTensor::new(name, t.detach().rand_like()))
        })
        .collect();
    state.push(NamedTensor::new(
        "layer4.0.bn1.num_batches_tracked",
        Tensor::from(0i64),
    ));
    state
}

fn ctx(train: bool, h: i64, w: i64) -> ForwardContext {
    ForwardContext {
        train,
        input_height: h as u32,
        input_width: w as u32,
    }
}

#[test]
fn pixel_head_output_has_the_input_size_even_when_odd() {
    for (h, w) in [(64, 64), (33, 47)] {
        let (specs, feats) = pyramid(2, h, w);
        let head = DenseHead::pixel(
            &head_request(specs, 1, vec![]),
            Loss::Binary,
            Scoring::Binary { names: ["a", "b"] },
        )
        .unwrap();
        let out = head.run(&feats, ctx(true, h, w)).unwrap();
        assert_eq!(out.size(), vec![2, 1, h, w]);
    }
    // Built through the task, with ViRB's parameter names.
    let (specs, _) = pyramid(1, 32, 32);
    let head = PetsDetection
        .build_head(head_request(specs, 1, vec![]))
        .into_result()
        .unwrap();
    let names: Vec<String> = head
        .state()
        .into_result()
        .unwrap()
        .iter()
        .map(|n| n.name.to_string())
        .collect();
    assert!(
        names.contains(&"up1.0.weight".to_string()) && names.contains(&"up5.0.bias".to_string()),
        "{names:?}"
    );
}

#[test]
fn deeplab_starts_from_layer4_and_outputs_the_input_size() {
    let state = layer4_state();
    let (specs, feats) = pyramid(2, 40, 72);
    let head = Cityscapes
        .build_head(head_request(specs.clone(), 20, state.clone()))
        .into_result()
        .unwrap();
    // The replica holds the encoder's weights.
    let own = head.state().into_result().unwrap();
    let get = |v: &[NamedTensor], n: &str| {
        v.iter()
            .find(|t| t.name.as_str() == n)
            .unwrap()
            .tensor
            .shallow_clone()
            .into_tch()
    };
    assert!(get(&own, "block4.conv.1.conv2.weight").equal(&get(&state, "layer4.2.conv2.weight")));
    let dl = DenseHead::deeplab(
        "t",
        &head_request(specs.clone(), 20, state.clone()),
        Loss::CrossEntropy(None),
        Scoring::Binary { names: ["a", "b"] },
    )
    .unwrap();
    for train in [true, false] {
        assert_eq!(
            dl.run(&feats, ctx(train, 40, 72)).unwrap().size(),
            vec![2, 20, 40, 72]
        );
    }
    // A lone training sample works (the pooled branch's batch norm needs two values).
    let one: Vec<(&str, Tensor)> = feats.iter().map(|(n, t)| (*n, t.narrow(0, 0, 1))).collect();
    assert_eq!(
        dl.run(&one, ctx(true, 40, 72)).unwrap().size(),
        vec![1, 20, 40, 72]
    );
    // Without the encoder's layer4, or with one tensor missing, the error says what is missing.
    let e = Cityscapes
        .build_head(head_request(specs.clone(), 20, vec![]))
        .into_result()
        .err()
        .unwrap();
    assert!(
        e.message.contains("starts from a ResNet's layer4")
            && e.message.contains("layer4.0.conv1.weight"),
        "{}",
        e.message
    );
    let partial: Vec<NamedTensor> = state
        .into_iter()
        .filter(|n| n.name.as_str() != "layer4.1.bn2.running_var")
        .collect();
    let e = Cityscapes
        .build_head(head_request(specs, 20, partial))
        .into_result()
        .err()
        .unwrap();
    assert!(
        e.message.contains("`layer4.1.bn2.running_var`"),
        "{}",
        e.message
    );
}

#[test]
fn losses_skip_ignored_pixels() {
    let (specs, _) = pyramid(1, 8, 8);
    let bin = DenseHead::pixel(
        &head_request(specs.clone(), 1, vec![]),
        Loss::Binary,
        Scoring::Binary { names: ["a", "b"] },
    )
    .unwrap();
    let logits = Tensor::from_slice(&[0.5f32, -1.0, 2.0, 3.0]).view([1, 1, 2, 2]);
    let target = Tensor::from_slice(&[1i64, 0, 255, 1]).view([1, 2, 2]);
    let got = bin.loss_of(&logits, &target).unwrap().double_value(&[]);
    let bce = |x: f64, y: f64| x.max(0.0) - x * y + (-x.abs()).exp().ln_1p();
    let want = (bce(0.5, 1.0) + bce(-1.0, 0.0) + bce(3.0, 1.0)) / 3.0;
    assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    assert!(bin
        .loss_of(
            &logits,
            &Tensor::from_slice(&[1i64, 2, 0, 0]).view([1, 2, 2])
        )
        .is_err());
    // All ignored: a zero that keeps the graph, not NaN.
    let all = Tensor::full([1, 2, 2], 255, (Kind::Int64, tch::Device::Cpu));
    let x = logits.set_requires_grad(true);
    let zero = bin.loss_of(&x, &all).unwrap();
    assert_eq!(zero.double_value(&[]), 0.0);
    zero.backward();
    // Cross-entropy with class weights and the ignored id, as PyTorch's.
    let ce = DenseHead::pixel(
        &head_request(specs, 3, vec![]),
        Loss::CrossEntropy(Some(vec![0.1, 1.0, 1.0])),
        Scoring::Binary { names: ["a", "b"] },
    )
    .unwrap();
    let logits = Tensor::from_slice(&[
        1.0f32, 0.0, 0.0, 2.0, 0.0, 1.0, 0.0, 0.0, 3.0, 0.0, 0.0, 0.0,
    ])
    .view([1, 3, 2, 2]);
    let target = Tensor::from_slice(&[0i64, 1, 255, 2]).view([1, 2, 2]);
    let got = ce.loss_of(&logits, &target).unwrap().double_value(&[]);
    let lsm = logits.log_softmax(1, Kind::Double);
    let nll = |c: i64, y: i64, x: i64| -lsm.double_value(&[0, c, y, x]);
    let want = (0.1 * nll(0, 0, 0) + nll(1, 0, 1) + nll(2, 1, 1)) / 2.1;
    assert!((got - want).abs() < 1e-6, "{got} vs {want}");
}

#[test]
fn state_round_trips_strictly() {
    let (specs, _) = pyramid(1, 16, 16);
    let req = head_request(specs, 1, vec![]);
    let a = PetsDetection.build_head(req.clone()).into_result().unwrap();
    let mut b = PetsDetection
        .build_head(HeadRequest { seed: 9, ..req })
        .into_result()
        .unwrap();
    let state = a.state().into_result().unwrap();
    b.load_state(state.clone()).into_result().unwrap();
    let again = b.state().into_result().unwrap();
    for (x, y) in state.iter().zip(again.iter()) {
        assert!(x
            .tensor
            .shallow_clone()
            .into_tch()
            .equal(&y.tensor.shallow_clone().into_tch()));
    }
    let short: Vec<NamedTensor> = state.into_iter().skip(1).collect();
    let e = b.load_state(short.into()).into_result().err().unwrap();
    assert!(e.message.contains("missing"), "{}", e.message);
}
