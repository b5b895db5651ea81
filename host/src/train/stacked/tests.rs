//! The CPU kernels of the stacked heads against libtorch: the fused optimiser step against
//! `optim.rs` run on each head alone, and the fused cross-entropy against autograd.
use super::fused::{self, Hyper, Rule};
use super::xent;
use crate::config::{OptimizerKind, TrainingConfig};
use crate::train::optim::Optimizer;
use tch::{Device, Kind, Tensor};

const HEADS: i64 = 3;
const CLASSES: i64 = 4;
const DIM: i64 = 6;

fn close(a: &Tensor, b: &Tensor, what: &str) {
    let diff = (a - b).abs().max().double_value(&[]);
    let scale = b.abs().max().double_value(&[]).max(1e-6);
    assert!(
        diff <= 1e-5 * scale,
        "{what}: differs by {diff} (scale {scale})\n{a}\n{b}"
    );
}

/// Trains `HEADS` heads for `steps` steps on the same random gradients, stacked (fused) and
/// alone (`optim.rs`), and compares their parameters after every step.
fn compare(kind: OptimizerKind, heads: [Hyper; HEADS as usize], nesterov: bool, steps: i32) {
    tch::manual_seed(7);
    let rows = HEADS * CLASSES;
    let w = Tensor::randn([rows, DIM], (Kind::Float, Device::Cpu));
    let b = Tensor::randn([rows], (Kind::Float, Device::Cpu));
    let (sw, sb) = (w.copy(), b.copy());
    let momentum = heads.iter().any(|h| h.momentum != 0.0);
    let adam = kind == OptimizerKind::Adam;
    let mut state: Option<(Tensor, Tensor, Tensor, Tensor)> = None;
    let mut alone: Vec<Optimizer> = (0..HEADS)
        .map(|j| {
            let h = heads[j as usize];
            let cfg = TrainingConfig {
                optimizer: kind,
                lr: h.lr,
                momentum: Some(h.momentum),
                weight_decay: Some(h.decay),
                nesterov: Some(nesterov),
                scheduler: None,
            };
            let params = [&w, &b]
                .iter()
                .map(|t| {
                    t.narrow(0, j * CLASSES, CLASSES)
                        .copy()
                        .set_requires_grad(true)
                })
                .collect();
            Optimizer::new(&cfg, params)
        })
        .collect();
    for step in 1..=steps {
        let (gw, gb) = (w.randn_like(), b.randn_like());
        let first = state.is_none();
        let st = state.get_or_insert_with(|| {
            (
                sw.zeros_like(),
                sb.zeros_like(),
                sw.zeros_like(),
                sb.zeros_like(),
            )
        });
        let states: Vec<Vec<&Tensor>> = if adam {
            vec![vec![&st.0, &st.2], vec![&st.1, &st.3]]
        } else if momentum {
            vec![vec![&st.0], vec![&st.1]]
        } else {
            vec![vec![], vec![]]
        };
        let rule = if adam {
            Rule::Adam { step }
        } else {
            Rule::Sgd {
                momentum,
                nesterov,
                first,
            }
        };
        assert!(fused::update(
            &[&sw, &sb],
            &[&gw, &gb],
            &states,
            &heads,
            rule
        ));
        for (j, opt) in alone.iter_mut().enumerate() {
            let j = j as i64;
            opt.zero_grad();
            let loss = (&opt.params[0] * gw.narrow(0, j * CLASSES, CLASSES)).sum(Kind::Float)
                + (&opt.params[1] * gb.narrow(0, j * CLASSES, CLASSES)).sum(Kind::Float);
            loss.backward();
            let m = heads[j as usize].momentum;
            opt.step(heads[j as usize].lr, Some(m))
                .expect("a head's step");
            let what = format!("step {step}, head {j}");
            close(&sw.narrow(0, j * CLASSES, CLASSES), &opt.params[0], &what);
            close(&sb.narrow(0, j * CLASSES, CLASSES), &opt.params[1], &what);
        }
    }
}

fn hyper(lr: f64, decay: f64, momentum: f64) -> Hyper {
    Hyper {
        lr,
        decay,
        momentum,
    }
}

#[test]
fn fused_adam_is_optims_adam_for_each_head() {
    // Per-head beta1 (OneCycle's momentum), one of them above 0.5 and one below (libtorch's lerp
    // changes its formula there), and weight decay on one head.
    let heads = [
        hyper(1e-2, 0.0, 0.9),
        hyper(3e-3, 1e-2, 0.85),
        hyper(1e-1, 0.0, 0.3),
    ];
    compare(OptimizerKind::Adam, heads, false, 5);
}

#[test]
fn fused_sgd_is_optims_sgd_for_each_head() {
    let heads = [
        hyper(0.1, 0.0, 0.9),
        hyper(0.05, 1e-3, 0.8),
        hyper(0.5, 0.0, 0.5),
    ];
    compare(OptimizerKind::Sgd, heads, false, 4);
    compare(OptimizerKind::Sgd, heads, true, 4);
    let plain = [
        hyper(0.1, 0.0, 0.0),
        hyper(0.05, 1e-2, 0.0),
        hyper(0.5, 0.0, 0.0),
    ];
    compare(OptimizerKind::Sgd, plain, false, 3);
}

#[test]
fn fused_update_refuses_what_it_cannot_update() {
    let p = Tensor::zeros([4, 2], (Kind::Float, Device::Cpu));
    let g = Tensor::ones([4, 2], (Kind::Float, Device::Cpu));
    let heads = [hyper(0.1, 0.0, 0.0); 2];
    let plain = Rule::Sgd {
        momentum: false,
        nesterov: false,
        first: true,
    };
    // A gradient that is the parameter itself, a non-contiguous one, a double one.
    assert!(!fused::update(&[&p], &[&p], &[vec![]], &heads, plain));
    let t = Tensor::ones([2, 4], (Kind::Float, Device::Cpu)).tr();
    assert!(!fused::update(&[&p], &[&t], &[vec![]], &heads, plain));
    let d = g.to_kind(Kind::Double);
    assert!(!fused::update(&[&p], &[&d], &[vec![]], &heads, plain));
    assert_eq!(p.abs().sum(Kind::Float).double_value(&[]), 0.0);
    assert!(fused::update(&[&p], &[&g], &[vec![]], &heads, plain));
    close(&p, &(&g * -0.1), "plain SGD");
}

#[test]
fn fused_cross_entropy_is_autograds() {
    tch::manual_seed(3);
    let n = 5;
    let out = (Tensor::randn([n, HEADS * CLASSES], (Kind::Float, Device::Cpu)) * 3.0)
        .set_requires_grad(true);
    let y = Tensor::from_slice(&[0i64, 3, 1, 1, 2]);
    let (losses, d_out) = xent::cpu(&out, &y, HEADS, CLASSES)
        .expect("cross-entropy")
        .expect("CPU tensors");
    let mut total = Tensor::zeros([], (Kind::Float, Device::Cpu));
    for h in 0..HEADS {
        let logits = out.narrow(1, h * CLASSES, CLASSES);
        let loss = logits
            .log_softmax(-1, Kind::Float)
            .nll_loss(&y)
            .reshape([1]);
        close(&losses.narrow(0, h, 1), &loss.detach(), "loss");
        total += loss.sum(Kind::Float);
    }
    total.backward();
    close(&d_out, &out.grad(), "d logits");
    // The GPU's path, in libtorch calls, on the same logits.
    let (l2, d2) = super::step::libtorch_xent(&out.detach(), &y, HEADS, CLASSES)
        .expect("libtorch cross-entropy");
    close(&l2, &losses, "libtorch loss");
    close(&d2, &d_out, "libtorch d logits");
    let bad = Tensor::from_slice(&[0i64, 4, 1, 1, 2]);
    let err = xent::cpu(&out, &bad, HEADS, CLASSES).expect_err("class 4 of 4");
    assert!(
        err.to_string().contains("class index 4 out of range"),
        "{err}"
    );
}
