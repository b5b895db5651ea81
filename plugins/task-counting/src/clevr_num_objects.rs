//! `CLEVRNumObjects`: how many objects a CLEVR scene holds (3 to 10 in CLEVR, so 11 outputs).
use crate::clevr::{ClevrSpec, FixtureObject};
use virb_plugin_kit::draw::Rng;

fn label(objects: &[[f64; 3]]) -> i64 {
    objects.len() as i64
}

/// Fixture class `c` holds `3 + c` objects of equal size.
fn fixture_scene(class: u32, _classes: u32, rng: &mut Rng) -> Vec<FixtureObject> {
    (0..3 + class)
        .map(|_| {
            (
                [
                    rng.uniform() as f64 * 6.0 - 3.0,
                    rng.uniform() as f64 * 6.0 - 3.0,
                    0.35,
                ],
                0.09,
            )
        })
        .collect()
}

/// The task's description.
pub const SPEC: ClevrSpec = ClevrSpec {
    name: "CLEVRNumObjects",
    label,
    // CLEVR scenes hold 3 to 10 objects.
    max_classes: 100,
    fixture_scene,
};

virb_plugin_kit::register_task!(crate::clevr::ClevrTask(&SPEC));
