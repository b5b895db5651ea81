//! `CLEVRDist`: the distance of the object closest to the scene origin, in half units:
//! `floor(2 * min |3d_coords|)`.
use crate::clevr::{ClevrSpec, FixtureObject};
use virb_plugin_kit::draw::Rng;

fn label(objects: &[[f64; 3]]) -> i64 {
    let min = objects
        .iter()
        .map(|c| (c[0] * c[0] + c[1] * c[1] + c[2] * c[2]).sqrt())
        .fold(f64::INFINITY, f64::min);
    if min.is_finite() {
        (2.0 * min).floor() as i64
    } else {
        0
    }
}

/// Fixture class `c`: the closest object lies at distance `(c + 0.5) / 2` and looks larger the
/// closer it is (as under perspective); two small objects lie farther away.
fn fixture_scene(class: u32, classes: u32, rng: &mut Rng) -> Vec<FixtureObject> {
    let d = (class as f64 + 0.5) / 2.0;
    let angle = rng.uniform() as f64 * std::f64::consts::TAU;
    let near = (
        [d * angle.cos(), d * angle.sin(), 0.0],
        0.32 - 0.26 * class as f32 / classes as f32,
    );
    let far = |rng: &mut Rng| {
        let r = classes as f64 / 2.0 + 1.0 + rng.uniform() as f64;
        ([r, -r, 0.0], 0.03)
    };
    vec![near, far(rng), far(rng)]
}

/// The task's description.
pub const SPEC: ClevrSpec = ClevrSpec {
    name: "CLEVRDist",
    label,
    // Half-units from the origin: CLEVR scenes lie within a few units of it.
    max_classes: 100,
    fixture_scene,
};

virb_plugin_kit::register_task!(crate::clevr::ClevrTask(&SPEC));
