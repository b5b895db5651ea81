//! The fixture generator: frame pairs in KITTI's layout whose second frame is the first
//! translated by a known whole-pixel shift, with the real flow file and its visualisation.
//!
//! Each sample views a random scene: a colour ramp (red grows to the right, green downwards) under
//! a random smooth texture (plane waves of 16 to 40 px). Frame B is the scene moved by the
//! sample's shift `(dx, dy)`, so the flow is `(dx, dy)` at every pixel; a band of top rows (as
//! KITTI's sky) and about a tenth of the other pixels are marked invalid. Shift `k` of `classes`
//! points in direction `2πk / classes` with a length of `max(2, size / 16)` pixels (4 at 64 px),
//! rounded to whole pixels.
//!
//! Frame B is also tinted (40%) with the hue of its shift's direction, as the egomotion fixture
//! tints its second view: a few pixels of translation change a frozen *random* encoder's
//! features too little for a head trained for a few epochs to read them (tried: it stays at the
//! mean flow), while the tint makes the pairing of frames and flow learnable. The translation is
//! exact, so the flow file is the true flow of the scene; shuffling the flow files among the pairs
//! leaves nothing to learn.
//!
//! Sample `i` gets shift `i % classes`, so ViRB's split (the last 10% of the sorted list) holds
//! every shift when it has `classes` samples or more. Every fifth sample is one row taller (as
//! KITTI's 375- and 376-row frames).
use crate::{
    data::{training_dir, NAME},
    options::Target,
};
use std::path::Path;
use virb_plugin_api::{FixtureRequest, PluginError};
use virb_plugin_kit::{
    draw::{self, hue_to_rgb, Rng},
    flow_png::{self, FlowField},
};

/// How much frame B is tinted with its shift's hue.
const TINT: f32 = 0.4;

/// Most distinct shifts the generator writes.
pub const MAX_SHIFTS: u32 = 8;

/// Shift `k` of `shifts`, in whole pixels, for frames of side `size`.
pub fn shift(k: u32, shifts: u32, size: u32) -> (i64, i64) {
    let length = (size as f64 / 16.0).max(2.0);
    let angle = std::f64::consts::TAU * k as f64 / shifts.max(1) as f64;
    (
        (length * angle.cos()).round() as i64,
        (length * angle.sin()).round() as i64,
    )
}

/// A random scene of `w` x `h` pixels, RGB in [0, 1], row-major.
fn scene(w: usize, h: usize, rng: &mut Rng) -> Vec<[f32; 3]> {
    // A few random plane waves make a smooth texture.
    let waves: Vec<(f32, f32, f32, usize)> = (0..6)
        .map(|i| {
            let angle = rng.uniform() * std::f32::consts::TAU;
            let period = 16.0 + rng.uniform() * 24.0;
            let k = std::f32::consts::TAU / period;
            (
                k * angle.cos(),
                k * angle.sin(),
                rng.uniform() * std::f32::consts::TAU,
                i % 3,
            )
        })
        .collect();
    let mut out = Vec::with_capacity(w * h);
    for y in 0..h {
        for x in 0..w {
            let mut texture = [0f32; 3];
            for &(kx, ky, phase, c) in &waves {
                texture[c] += (kx * x as f32 + ky * y as f32 + phase).sin();
            }
            out.push([
                0.1 + 0.8 * x as f32 / w as f32 + 0.02 * texture[0],
                0.1 + 0.8 * y as f32 / h as f32 + 0.02 * texture[1],
                0.5 + 0.15 * texture[2],
            ]);
        }
    }
    out
}

/// KITTI's colour visualisation of a constant flow (hue = direction, value grows with length),
/// black where invalid: the file ViRB regressed the grey level of.
fn visualise(flow: &FlowField, max_length: f32) -> Vec<u8> {
    flow.valid
        .iter()
        .enumerate()
        .flat_map(|(i, &valid)| {
            if !valid {
                return [0u8; 3];
            }
            let (u, v) = (flow.u[i], flow.v[i]);
            let hue = v.atan2(u) / std::f32::consts::TAU + 0.5;
            let value = 0.5 + 0.5 * ((u * u + v * v).sqrt() / max_length).min(1.0);
            hue_to_rgb(hue).map(|c| (c * value * 255.0).round().max(1.0) as u8)
        })
        .collect()
}

/// Writes the fixture; returns its one-line description.
pub fn write(request: &FixtureRequest) -> Result<String, PluginError> {
    let data_root = Path::new(request.data_root.as_str());
    let shifts = request.classes_up_to(NAME, MAX_SHIFTS)?;
    let per_shift = request.train_per_class + request.test_per_class;
    if per_shift == 0 {
        return Err(PluginError::invalid_input(format!(
            "{NAME}: the fixture needs at least one sample per shift"
        ))
        .with_help("pass --train-per-class or --test-per-class above 0"));
    }
    let size = request.image_size.max(16);
    let n = shifts * per_shift;
    let training = training_dir(data_root);
    let mut rng = Rng::new(request.seed);
    let margin = (size as f64 / 16.0).max(2.0).ceil() as usize + 1;
    let mut taller = 0;
    for i in 0..n {
        let (dx, dy) = shift(i % shifts, shifts, size);
        let w = size as usize;
        let h = size as usize + usize::from(i % 5 == 2);
        taller += usize::from(h > w);
        let (sw, sh) = (w + 2 * margin, h + 2 * margin);
        let s = scene(sw, sh, &mut rng);
        // A(p) = S(p + m); B(p + d) = A(p), so B(q) = S(q - d + m).
        let view = |ox: i64, oy: i64, tint: Option<[f32; 3]>| -> Vec<u8> {
            let mut out = Vec::with_capacity(w * h * 3);
            for y in 0..h as i64 {
                for x in 0..w as i64 {
                    let mut px = s[((y + oy) as usize) * sw + (x + ox) as usize];
                    if let Some(t) = tint {
                        for (c, t) in px.iter_mut().zip(t) {
                            *c = (1.0 - TINT) * *c + TINT * t;
                        }
                    }
                    out.extend(px.map(|c| (c.clamp(0.0, 1.0) * 255.0).round() as u8));
                }
            }
            out
        };
        let m = margin as i64;
        let a = view(m, m, None);
        let tint = hue_to_rgb((i % shifts) as f32 / shifts as f32);
        let b = view(m - dx, m - dy, Some(tint));
        let band = rng.below(h as u64 / 4 + 1) as usize;
        let valid: Vec<bool> = (0..w * h)
            .map(|p| p / w >= band && rng.below(10) != 0)
            .collect();
        let flow = FlowField {
            width: w as u32,
            height: h as u32,
            u: vec![dx as f32; w * h],
            v: vec![dy as f32; w * h],
            valid,
        };
        let stem = format!("{i:06}");
        let images = training.join("image_2");
        draw::write_png(
            &images.join(format!("{stem}_10.png")),
            w as u32,
            h as u32,
            &a,
        )?;
        draw::write_png(
            &images.join(format!("{stem}_11.png")),
            w as u32,
            h as u32,
            &b,
        )?;
        flow_png::write(
            &training
                .join(Target::Flow.folder())
                .join(format!("{stem}_10.png")),
            &flow,
        )?;
        draw::write_png(
            &training
                .join(Target::Viz.folder())
                .join(format!("{stem}_10.png")),
            w as u32,
            h as u32,
            &visualise(&flow, (size as f32 / 16.0).max(2.0)),
        )?;
    }
    let train = n as usize * 9 / 10;
    Ok(format!(
        "{NAME}: {n} frame pairs ({size}x{size}, {taller} of them one row taller) with {shifts} whole-pixel shifts, real flow and its visualisation, in {}; ViRB's split: {train} train, {} test",
        training.display(),
        n as usize - train
    ))
}
