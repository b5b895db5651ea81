//! Unit tests: the forward pass against a convolution written out in plain Rust, strict loading,
//! output shapes, options.
use super::*;
use std::path::PathBuf;

fn temp_file(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "virb-template-encoder-{}-{name}",
        std::process::id()
    ))
}

/// Random weights as PyTorch would save them; `edit` changes the list before writing.
fn weights(name: &str, edit: impl FnOnce(&mut Vec<(String, tch::Tensor)>)) -> PathBuf {
    tch::manual_seed(7);
    let mut tensors: Vec<(String, tch::Tensor)> = model::PARAMETERS
        .iter()
        .map(|(n, shape)| {
            (
                n.to_string(),
                tch::Tensor::randn(*shape, (tch::Kind::Float, tch::Device::Cpu)) * 0.3,
            )
        })
        .collect();
    edit(&mut tensors);
    let path = temp_file(name);
    tch::Tensor::write_safetensors(&tensors, &path).unwrap();
    path
}

fn load(path: &Path, options: &str) -> Result<EncoderBox, PluginError> {
    TinyConvFactory
        .load(EncoderRequest {
            weights: path.display().to_string().into(),
            device: "cpu".into(),
            options_json: options.into(),
        })
        .into_result()
}

/// 3x3, stride 2, padding 1 convolution and ReLU, one output value at a time.
fn naive_conv(x: &[Vec<Vec<f32>>], w: &tch::Tensor, b: &tch::Tensor) -> Vec<Vec<Vec<f32>>> {
    let (cin, h, wd) = (x.len(), x[0].len(), x[0][0].len());
    let (ho, wo) = (
        model::conv_side(h as i64) as usize,
        model::conv_side(wd as i64) as usize,
    );
    let cout = w.size()[0] as usize;
    let mut out = vec![vec![vec![0f32; wo]; ho]; cout];
    for (o, plane) in out.iter_mut().enumerate() {
        for (i, row) in plane.iter_mut().enumerate() {
            for (j, value) in row.iter_mut().enumerate() {
                let mut acc = b.double_value(&[o as i64]);
                for (c, xc) in x.iter().enumerate().take(cin) {
                    for ki in 0..3 {
                        for kj in 0..3 {
                            let (y, z) = ((2 * i + ki) as i64 - 1, (2 * j + kj) as i64 - 1);
                            if y >= 0 && z >= 0 && (y as usize) < h && (z as usize) < wd {
                                let wv =
                                    w.double_value(&[o as i64, c as i64, ki as i64, kj as i64]);
                                acc += wv * f64::from(xc[y as usize][z as usize]);
                            }
                        }
                    }
                }
                *value = acc.max(0.0) as f32;
            }
        }
    }
    out
}

#[test]
fn forward_matches_a_plain_convolution() {
    let path = weights("ok", |_| {});
    let encoder = load(&path, "{}").unwrap();
    tch::manual_seed(1);
    let images = tch::Tensor::randn([2, 3, 9, 7], (tch::Kind::Float, tch::Device::Cpu));
    let wanted = [RString::from("block2"), RString::from("embedding")];
    let out = encoder
        .forward(TensorRef::of(&images), wanted.as_slice().into())
        .into_result()
        .unwrap();
    let names: Vec<&str> = out.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["block2", "embedding"]);
    let mut out = out.into_iter().map(|o| o.tensor.into_tch());
    let (block2, embedding) = (out.next().unwrap(), out.next().unwrap());
    let file: std::collections::HashMap<String, tch::Tensor> = tch::Tensor::read_safetensors(&path)
        .unwrap()
        .into_iter()
        .collect();
    for n in 0..2 {
        let x: Vec<Vec<Vec<f32>>> = (0..3)
            .map(|c| {
                (0..9)
                    .map(|i| {
                        (0..7)
                            .map(|j| images.double_value(&[n, c, i, j]) as f32)
                            .collect()
                    })
                    .collect()
            })
            .collect();
        let b1 = naive_conv(&x, &file["conv1.weight"], &file["conv1.bias"]);
        let b2 = naive_conv(&b1, &file["conv2.weight"], &file["conv2.bias"]);
        assert_eq!(block2.size(), [2, 32, 3, 2]);
        for (c, plane) in b2.iter().enumerate() {
            let mut sum = 0f64;
            for (i, row) in plane.iter().enumerate() {
                for (j, v) in row.iter().enumerate() {
                    let got = block2.double_value(&[n, c as i64, i as i64, j as i64]);
                    assert!((got - f64::from(*v)).abs() < 1e-4, "{got} vs {v}");
                    sum += f64::from(*v);
                }
            }
            let mean = sum / 6.0;
            assert!((embedding.double_value(&[n, c as i64]) - mean).abs() < 1e-4);
        }
    }
    // The shapes announced before encoding are the shapes produced.
    let shapes = encoder.output_shapes(9, 7).into_result().unwrap();
    let block2_spec = shapes.iter().find(|s| s.name.as_str() == "block2").unwrap();
    assert_eq!(block2_spec.shape.as_slice(), &[32, 3, 2]);
    let all = ["embedding", "block1", "block2"].map(RString::from);
    let produced = encoder
        .forward(TensorRef::of(&images), all.as_slice().into())
        .into_result()
        .unwrap();
    for (spec, t) in shapes.iter().zip(produced) {
        assert_eq!(
            &t.tensor.into_tch().size()[1..],
            spec.shape.as_slice(),
            "{}",
            spec.name
        );
    }
    std::fs::remove_file(path).unwrap();
}

#[test]
fn loading_is_strict_and_errors_name_the_file_and_tensor() {
    type Edit = Box<dyn FnOnce(&mut Vec<(String, tch::Tensor)>)>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "missing",
            Box::new(|t| drop(t.remove(3))),
            "tensor `conv2.bias` is missing",
        ),
        (
            "extra",
            Box::new(|t| {
                t.push((
                    "fc.weight".into(),
                    tch::Tensor::zeros([2], tch::kind::FLOAT_CPU),
                ))
            }),
            "unexpected tensor `fc.weight`",
        ),
        (
            "shape",
            Box::new(|t| t[1].1 = tch::Tensor::zeros([15], tch::kind::FLOAT_CPU)),
            "tensor `conv1.bias` has shape [15], expected [16]",
        ),
        (
            "kind",
            Box::new(|t| t[1].1 = tch::Tensor::zeros([16], tch::kind::INT64_CPU)),
            "tensor `conv1.bias` is Int64, not floating point",
        ),
    ];
    for (name, edit, expected) in cases {
        let path = weights(name, edit);
        let err = load(&path, "{}").err().unwrap();
        assert!(err.message.contains(&path.display().to_string()), "{err}");
        assert!(err.message.contains(expected), "{name}: {err}");
        std::fs::remove_file(path).unwrap();
    }
    let not_safetensors = temp_file("text");
    std::fs::write(&not_safetensors, "not a weights file").unwrap();
    let err = load(&not_safetensors, "{}").err().unwrap();
    assert!(
        err.message.contains("cannot read") && err.message.contains("as safetensors"),
        "{err}"
    );
    std::fs::remove_file(not_safetensors).unwrap();
    let err = load(Path::new("/nonexistent/w.safetensors"), "{}")
        .err()
        .unwrap();
    assert!(
        err.message.contains("/nonexistent/w.safetensors not found"),
        "{err}"
    );
}

#[test]
fn options_and_fine_tuning_are_refused_with_what_to_do() {
    let path = weights("options", |_| {});
    let err = load(&path, r#"{"channels_last": true}"#).err().unwrap();
    assert!(
        err.message.contains("unknown option `channels_last`"),
        "{err}"
    );
    let encoder = load(&path, "{}").unwrap();
    let err = encoder.trainable_parameters().into_result().err().unwrap();
    assert!(
        err.message.contains("does not support fine-tuning"),
        "{err}"
    );
    std::fs::remove_file(path).unwrap();
}
