//! Unit tests of the shared head, loss and metrics.
#![allow(clippy::unwrap_used)]
use super::*;
use tch::Device;
use virb_plugin_api::FeatureSpec;

const CH: [i64; 5] = [4, 8, 8, 16, 16];

/// The pyramid sizes of a ResNet for an input side: conv = ceil(s/2), then halving 4 times.
fn sides(s: i64) -> Vec<i64> {
    let mut out = vec![(s - 1) / 2 + 1];
    for _ in 0..4 {
        let last = out[out.len() - 1];
        out.push((last - 1) / 2 + 1);
    }
    out
}

fn request() -> HeadRequest {
    HeadRequest {
        features: LEVELS
            .iter()
            .zip(CH)
            .map(|(n, c)| FeatureSpec {
                name: (*n).into(),
                shape: vec![c, 1, 1].into(),
            })
            .collect(),
        num_outputs: 1,
        device: "cpu".into(),
        seed: 1,
        options_json: "{}".into(),
        input_height: 64,
        input_width: 64,
        encoder_state: RVec::new(),
    }
}

fn forward(head: &HeadBox, h: i64, w: i64) -> T {
    let (hs, ws) = (sides(h), sides(w));
    let feats: Vec<T> = (0..5)
        .map(|i| T::randn([2, CH[i], hs[i], ws[i]], (Kind::Float, Device::Cpu)))
        .collect();
    let refs: Vec<NamedTensorRef<'_>> = LEVELS
        .iter()
        .zip(&feats)
        .map(|(n, t)| NamedTensorRef {
            name: (*n).into(),
            tensor: TensorRef::of(t),
        })
        .collect();
    let ctx = ForwardContext {
        train: true,
        input_height: h as u32,
        input_width: w as u32,
    };
    head.forward(RSlice::from_slice(&refs), ctx)
        .into_result()
        .unwrap()
        .into_tch()
}

#[test]
fn output_has_the_input_size_for_odd_and_even_sides() {
    let head = PixelHead::build(&request(), Validity::Finite, Scoring::L1).unwrap();
    for (h, w) in [(64, 64), (65, 65), (48, 65), (33, 40)] {
        assert_eq!(forward(&head, h, w).size(), [2, 1, h, w], "{h}x{w}");
    }
    let names: Vec<String> = head
        .state()
        .into_result()
        .unwrap()
        .iter()
        .map(|t| t.name.to_string())
        .collect();
    assert_eq!(
        names,
        [
            "up1.0.bias",
            "up1.0.weight",
            "up2.0.bias",
            "up2.0.weight",
            "up3.0.bias",
            "up3.0.weight",
            "up4.0.bias",
            "up4.0.weight",
            "up5.0.bias",
            "up5.0.weight"
        ]
    );
    let state = head.state().into_result().unwrap();
    let shapes: Vec<Vec<i64>> = state
        .iter()
        .map(|t| t.tensor.shallow_clone().into_tch().size())
        .collect();
    assert_eq!(shapes[1], [64, 16, 3, 3]); // up1: block4 (16) -> 4 x block3 (16)
    assert_eq!(shapes[9], [4, 4, 3, 3]); // up5: conv (4) -> 4 x 1 output
    let mut three = request();
    three.num_outputs = 3;
    let head = PixelHead::build(&three, Validity::Finite, Scoring::Inpainting).unwrap();
    assert_eq!(forward(&head, 65, 64).size(), [2, 3, 65, 64]);
}

#[test]
fn a_missing_level_or_wrong_channels_is_an_error() {
    let mut r = request();
    r.features.pop();
    let e = PixelHead::build(&r, Validity::Finite, Scoring::L1)
        .err()
        .unwrap();
    assert!(e.message.as_str().contains("`block4`"), "{}", e.message);
    let head = PixelHead::build(&request(), Validity::Finite, Scoring::L1).unwrap();
    let t = T::zeros([1, 5, 2, 2], (Kind::Float, Device::Cpu));
    let refs = [NamedTensorRef {
        name: "conv".into(),
        tensor: TensorRef::of(&t),
    }];
    let ctx = ForwardContext {
        train: false,
        input_height: 4,
        input_width: 4,
    };
    let e = head
        .forward(RSlice::from_slice(&refs), ctx)
        .into_result()
        .err()
        .unwrap();
    assert!(
        e.message
            .as_str()
            .contains("feature `conv` has shape [1, 5, 2, 2]"),
        "{}",
        e.message
    );
}

fn t(values: &[f32], shape: &[i64]) -> T {
    T::from_slice(values).view(shape)
}

#[test]
fn losses_mask_what_each_task_calls_invalid() {
    let p = t(&[1.0, 1.0, 1.0], &[1, 1, 1, 3]).set_requires_grad(true);
    let nyu = masked_l1(&p, &t(&[0.0, f32::NAN, 3.0], &[1, 1, 1, 3])).unwrap();
    assert_eq!(nyu.double_value(&[]), 2.0);
    nyu.backward();
    let thor = finite_l1(&p, &t(&[-2.0, f32::NAN, 0.0], &[1, 1, 1, 3])).unwrap();
    assert_eq!(thor.double_value(&[]), 2.0); // (|1 + 2| + |1 - 0|) / 2
    let none = finite_l1(&p, &t(&[f32::NAN; 3], &[1, 1, 1, 3])).unwrap();
    assert_eq!(none.double_value(&[]), 0.0);
    none.backward();
}

fn metric(scoring: Scoring, p: &T, g: &T) -> (Vec<f64>, serde_json::Value) {
    let mut m = DenseMetric::new(scoring);
    m.add(p, g).unwrap();
    (m.values(), m.details_json())
}

fn close(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-9)
}

#[test]
fn nyu_metrics_skip_missing_and_count_nan() {
    let g = t(&[2.0, 0.0, f32::NAN, 4.0], &[1, 1, 1, 4]);
    let p = t(&[1.0, 5.0, 5.0, 4.0], &[1, 1, 1, 4]);
    let (v, d) = metric(
        Scoring::Metres {
            min: 1e-3,
            max: 10.0,
        },
        &p,
        &g,
    );
    assert!(close(&v, &[0.5, 0.5f64.sqrt(), 0.25, 0.5]), "{v:?}");
    assert_eq!(d["non_finite_target_pixels"], 1);
    assert_eq!(d["images"], 1);
}

#[test]
fn thor_ratios_use_the_denormalised_depth() {
    // t = 0 and -1 are x = 0.5 and 0.25; the predictions 1 and -1 are x = 0.75 and 0.25.
    let g = t(&[0.0, -1.0], &[1, 1, 1, 2]);
    let p = t(&[1.0, -1.0], &[1, 1, 1, 2]);
    let (v, _) = metric(Scoring::Thor, &p, &g);
    assert!(close(&v, &[0.5, 0.5f64.sqrt(), 0.25, 0.5]), "{v:?}");
    // Two images: per-image values are averaged (image 2 is perfect).
    let g2 = t(&[0.0, -1.0, 1.0, 1.0], &[2, 1, 1, 2]);
    let p2 = t(&[1.0, -1.0, 1.0, 1.0], &[2, 1, 1, 2]);
    let (v, _) = metric(Scoring::Thor, &p2, &g2);
    assert!(
        close(&v, &[0.25, 0.5f64.sqrt() / 2.0, 0.125, 0.75]),
        "{v:?}"
    );
}

#[test]
fn inpainting_scores_the_hole_and_the_whole_image() {
    assert_eq!(hole(7), (2, 5));
    let g = T::zeros([1, 3, 7, 7], (Kind::Float, Device::Cpu));
    let p = g.zeros_like();
    let _ = p.narrow(2, 2, 3).narrow(3, 2, 3).fill_(1.0);
    let (v, _) = metric(Scoring::Inpainting, &p, &g);
    assert!(close(&v, &[1.0, 9.0 / 49.0]), "{v:?}");
}
