//! The optimiser step of a stack on the CPU as one pass over its memory: for every element, the
//! whole of PyTorch's Adam or SGD update (the same operations in the same order as `optim.rs`
//! does them with one libtorch call each), with each head's learning rate, weight decay and
//! momentum (Adam's beta1). A grid's heads are small: what costs is not the arithmetic but the
//! ten passes over the parameters and the calls, so one pass makes the step several times
//! cheaper. It runs on the calling thread: on two cores, a second thread competing with
//! libtorch's own made it slower, not faster.
//!
//! Only float32, contiguous CPU tensors that share no memory qualify ([`qualifies`], checked in
//! [`update`]); any other stack (on a GPU) takes the libtorch path of `update.rs`.
use tch::{Device, Kind, Tensor};

const ADAM_BETA2: f64 = 0.999;
const ADAM_EPS: f64 = 1e-8;

/// One head's hyperparameters at this step.
#[derive(Clone, Copy)]
pub(super) struct Hyper {
    /// Learning rate.
    pub lr: f64,
    /// Weight decay (0: none).
    pub decay: f64,
    /// SGD's momentum, or Adam's beta1.
    pub momentum: f64,
}

/// The update rule of a stack.
#[derive(Clone, Copy)]
pub(super) enum Rule {
    /// Adam at step `step` (counted from 1).
    Adam { step: i32 },
    /// SGD; `first`: the momentum buffer is not yet set (it becomes the gradient).
    Sgd {
        momentum: bool,
        nesterov: bool,
        first: bool,
    },
}

/// Whether `t` can be updated here: a defined, contiguous float32 CPU tensor.
pub(super) fn qualifies(t: &Tensor) -> bool {
    t.defined() && t.device() == Device::Cpu && t.kind() == Kind::Float && t.is_contiguous()
}

/// A tensor's elements as a mutable slice.
///
/// # Safety
/// `t` must qualify ([`qualifies`]), and no other reference to its elements may be used while the
/// slice lives (the caller's tensors are distinct, and libtorch does not touch them meanwhile).
unsafe fn elements<'a>(t: &Tensor) -> &'a mut [f32] {
    let n = t.numel();
    if n == 0 {
        return &mut [];
    }
    // SAFETY: a contiguous float tensor's storage holds `numel` f32 from `data_ptr`.
    unsafe { std::slice::from_raw_parts_mut(t.data_ptr().cast::<f32>(), n) }
}

/// Updates `params` (each `[H*rows, ...]`) head by head, with the gradients `grads` and each
/// parameter's optimiser state `state[i]` (Adam: first and second moments; SGD with momentum:
/// the momentum buffer; plain SGD: nothing), all of the parameter's shape. Returns false, touching
/// nothing, when a tensor does not qualify, two share memory or the shapes disagree; the caller
/// then takes the libtorch path.
pub(super) fn update(
    params: &[&Tensor],
    grads: &[&Tensor],
    state: &[Vec<&Tensor>],
    heads: &[Hyper],
    rule: Rule,
) -> bool {
    let h = heads.len();
    let states = match rule {
        Rule::Adam { .. } => 2,
        Rule::Sgd { momentum, .. } => usize::from(momentum),
    };
    let all: Vec<&Tensor> = params
        .iter()
        .chain(grads)
        .chain(state.iter().flatten())
        .copied()
        .collect();
    // Byte ranges of the tensors' elements: none may overlap another.
    let mut ranges: Vec<(usize, usize)> = all
        .iter()
        .map(|t| {
            let start = t.data_ptr() as usize;
            (start, start + t.numel() * std::mem::size_of::<f32>())
        })
        .filter(|(a, b)| a < b)
        .collect();
    ranges.sort_unstable();
    let distinct = ranges.windows(2).all(|w| w[0].1 <= w[1].0);
    let ok = h > 0
        && distinct
        && all.iter().all(|t| qualifies(t))
        && grads.len() == params.len()
        && state.len() == params.len()
        && params.iter().enumerate().all(|(i, p)| {
            let n = p.numel();
            n % h == 0
                && grads[i].numel() == n
                && state[i].len() == states
                && state[i].iter().all(|s| s.numel() == n)
        });
    if !ok {
        return false;
    }
    for (i, p) in params.iter().enumerate() {
        let per = (p.numel() / h).max(1);
        // SAFETY: every tensor qualifies and none shares memory with another (checked above);
        // nothing else reads or writes them during this call.
        let (mut pc, mut gc) =
            unsafe { (elements(p).chunks_mut(per), elements(grads[i]).chunks(per)) };
        // SAFETY: as above.
        let mut sc: Vec<_> = state[i]
            .iter()
            .map(|t| unsafe { elements(t) }.chunks_mut(per))
            .collect();
        for hy in heads {
            let (Some(p), Some(g)) = (pc.next(), gc.next()) else {
                break;
            };
            let mut s: Vec<&mut [f32]> = sc.iter_mut().filter_map(|c| c.next()).collect();
            match (rule, s.as_mut_slice()) {
                (Rule::Adam { step }, [m, v]) => adam_dispatch(p, g, m, v, hy, step),
                (
                    Rule::Sgd {
                        nesterov, first, ..
                    },
                    [b],
                ) => sgd_dispatch(p, g, Some(b), hy, nesterov, first),
                (Rule::Sgd { .. }, []) => sgd_dispatch(p, g, None, hy, false, false),
                // The state's count was checked above.
                _ => {}
            }
        }
    }
    true
}

/// Defines `$dispatch`, which runs `$kernel` compiled for the widest vector instructions the CPU
/// has (AVX-512, AVX2, else the baseline). The arithmetic, and so the numbers, are the same in
/// each: Rust never fuses a multiply and an add on its own.
macro_rules! widest {
    ($dispatch:ident => $kernel:ident($($arg:ident: $ty:ty),*)) => {
        fn $dispatch($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                fn avx512($($arg: $ty),*) {
                    $kernel($($arg),*)
                }
                #[target_feature(enable = "avx2")]
                fn avx2($($arg: $ty),*) {
                    $kernel($($arg),*)
                }
                if std::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has the instructions the function is compiled for.
                    return unsafe { avx512($($arg),*) };
                }
                if std::is_x86_feature_detected!("avx2") {
                    // SAFETY: as above.
                    return unsafe { avx2($($arg),*) };
                }
            }
            $kernel($($arg),*)
        }
    };
}

widest!(adam_dispatch => adam_head(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], hy: &Hyper, step: i32));
widest!(sgd_dispatch => sgd_head(
    p: &mut [f32],
    g: &[f32],
    buf: Option<&mut &mut [f32]>,
    hy: &Hyper,
    nesterov: bool,
    first: bool
));

/// PyTorch's Adam on one head's elements, as `optim.rs` computes it.
#[inline(always)]
fn adam_head(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], hy: &Hyper, step: i32) {
    let beta1 = hy.momentum;
    let decay = hy.decay as f32;
    let w = (1.0 - beta1) as f32;
    let beta2 = ADAM_BETA2 as f32;
    let c2 = (1.0 - ADAM_BETA2) as f32;
    let bc2_sqrt = (1.0 - ADAM_BETA2.powi(step)).sqrt() as f32;
    let eps = ADAM_EPS as f32;
    let scale = (-(hy.lr / (1.0 - beta1.powi(step)))) as f32;
    let small = w.abs() < 0.5;
    for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
        let g = if decay != 0.0 { g + *p * decay } else { g };
        // libtorch's lerp: the formula depends on which end the weight is nearer.
        *m = if small {
            *m + w * (g - *m)
        } else {
            g - (g - *m) * (1.0 - w)
        };
        *v = *v * beta2 + g * (g * c2);
        let denom = (v.sqrt() / bc2_sqrt + eps) / scale;
        *p += *m / denom;
    }
}

/// PyTorch's SGD on one head's elements, as `optim.rs` computes it; `buf`: the momentum buffer,
/// if the head uses momentum.
#[inline(always)]
fn sgd_head(
    p: &mut [f32],
    g: &[f32],
    buf: Option<&mut &mut [f32]>,
    hy: &Hyper,
    nesterov: bool,
    first: bool,
) {
    let decay = hy.decay as f32;
    let mom = hy.momentum as f32;
    let lr = hy.lr as f32;
    let Some(buf) = buf else {
        for (p, &g) in p.iter_mut().zip(g) {
            let g = if decay != 0.0 { g + *p * decay } else { g };
            *p -= g * lr;
        }
        return;
    };
    for ((p, &g), b) in p.iter_mut().zip(g).zip(buf.iter_mut()) {
        let g = if decay != 0.0 { g + *p * decay } else { g };
        *b = if first { g } else { *b * mom + g };
        let d = if nesterov { g + *b * mom } else { *b };
        *p -= d * lr;
    }
}
