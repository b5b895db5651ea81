//! The Taskonomy layout the three Taskonomy tasks share, and their fixture.
//!
//! `taskonomy/{train,test}/<domain>/<building>/<view>.png` with `<domain>` = `rgb` (the images),
//! `depth_zbuffer` (16-bit depth) or `edges`. A view's key is `<building>/<name>` with the
//! domain part of Taskonomy's names removed (`point_0_view_0_domain_rgb.png` and
//! `point_0_view_0_domain_depth_zbuffer.png` share `point_0_view_0`; files without `_domain_`
//! keep their stem): files are paired by key (ViRB paired sorted lists by position).
//!
//! The fixture writes every domain for every view, whichever Taskonomy task asks, from a
//! generator seeded per (split, view): the three tasks can share one `taskonomy/` folder.
use crate::{
    data::{self, Pair},
    fixture::{self, Ramp},
};
use std::path::{Path, PathBuf};
use virb_plugin_api::{FixtureRequest, PluginError, Split};
use virb_plugin_kit::draw::{self, hue_to_rgb};

/// Folder below the data root.
pub const DIR: &str = "taskonomy";

/// The view key of a file in `building` (see the module's documentation).
pub fn key(building: &str, file: &Path) -> String {
    let stem = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let view = match stem.find("_domain_") {
        Some(at) => &stem[..at],
        None => stem.as_str(),
    };
    format!("{building}/{view}")
}

/// `(key, file)` of every PNG of `domain` in `split`, over every building.
pub fn domain_files(
    task: &str,
    layout: &str,
    root: &Path,
    split: Split,
    domain: &str,
) -> Result<Vec<(String, PathBuf)>, PluginError> {
    let dir = root.join(DIR).join(split.as_str()).join(domain);
    if !dir.is_dir() {
        return Err(data::missing(task, &dir, layout, root));
    }
    let mut out = Vec::new();
    for building in data::subdirs(&dir)? {
        let name = data::file_name(&building);
        for file in data::files(&building)? {
            let png = file
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("png"));
            if png {
                out.push((key(&name, &file), file));
            }
        }
    }
    Ok(out)
}

/// The images of `split` paired with their `domain` files (`kind` names them in messages).
pub fn pairs(
    task: &str,
    layout: &str,
    root: &Path,
    split: Split,
    domain: &str,
    kind: &str,
) -> Result<Vec<Pair>, PluginError> {
    let images = domain_files(task, layout, root, split, "rgb")?;
    let targets = domain_files(task, layout, root, split, domain)?;
    let rule =
        format!("Taskonomy pairs rgb/<building>/<view>*.png with {domain}/<building>/<view>*.png");
    data::pair_by_key(task, images, targets, kind, &rule)
}

/// The images of `split`, each its own target.
pub fn images(
    task: &str,
    layout: &str,
    root: &Path,
    split: Split,
) -> Result<Vec<Pair>, PluginError> {
    let mut files = domain_files(task, layout, root, split, "rgb")?;
    files.sort();
    Ok(files
        .into_iter()
        .map(|(_, image)| Pair {
            image,
            target: None,
        })
        .collect())
}

/// A Taskonomy fixture view: a ramp scene with a disc of another hue (same brightness), whose
/// outline is the edge map.
fn view(size: u32, rng: &mut virb_plugin_kit::draw::Rng) -> (Ramp, Vec<f32>) {
    let mut scene = fixture::ramp_scene(size, rng);
    let s = size as f32;
    let radius = s * (0.15 + 0.1 * rng.uniform());
    let (cx, cy) = (
        radius + rng.uniform() * (s - 2.0 * radius),
        radius + rng.uniform() * (s - 2.0 * radius),
    );
    let hue = hue_to_rgb(rng.uniform());
    let mut edges = vec![0f32; (size * size) as usize];
    for (i, edge) in edges.iter_mut().enumerate() {
        let (x, y) = ((i as u32 % size) as f32, (i as u32 / size) as f32);
        let d = ((x - cx).powi(2) + (y - cy).powi(2)).sqrt();
        *edge = (1.0 - (d - radius).abs() / 1.5).max(0.0);
        if d <= radius {
            let grey = 0.12 + 0.76 * scene.ramp[i];
            for (c, h) in hue.iter().enumerate() {
                scene.rgb[3 * i + c] = ((grey * (0.55 + 0.45 * h)).clamp(0.0, 1.0) * 255.0) as u8;
            }
        }
    }
    (scene, edges)
}

/// Writes the Taskonomy fixture: `classes` buildings of `*_per_class` views per split, each view
/// in `rgb`, `depth_zbuffer` (16-bit, 1000 + 8000 × the ramp: depth follows the brightness) and
/// `edges` (16-bit, the disc's outline), named as Taskonomy does.
pub fn write_fixture(task: &str, request: &FixtureRequest) -> Result<String, PluginError> {
    let root = Path::new(request.data_root.as_str());
    let (buildings, per_split) = fixture::counts(request, task)?;
    let size = request.image_size.max(16);
    let mut total = 0;
    for (split, n) in per_split {
        let base = root.join(DIR).join(split.as_str());
        for i in 0..n {
            let mut rng = fixture::sample_rng(request.seed, split, i);
            let (scene, edges) = view(size, &mut rng);
            let building = format!("building_{:02}", i % buildings);
            let name = |domain: &str| {
                base.join(domain)
                    .join(&building)
                    .join(format!("point_{i}_view_0_domain_{domain}.png"))
            };
            draw::write_png(&name("rgb"), size, size, &scene.rgb)?;
            let depth: Vec<u16> = scene
                .ramp
                .iter()
                .map(|r| (1000.0 + 8000.0 * r) as u16)
                .collect();
            fixture::write_grey_png16(&name("depth_zbuffer"), size, &depth)?;
            let edges: Vec<u16> = edges.iter().map(|e| (e * 60000.0) as u16).collect();
            fixture::write_grey_png16(&name("edges"), size, &edges)?;
            total += 1;
        }
    }
    Ok(format!(
        "{task}: {total} Taskonomy views (rgb, depth_zbuffer, edges; {size} px) in {}",
        root.join(DIR).display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_drop_the_domain() {
        assert_eq!(
            key("b", Path::new("x/point_3_view_1_domain_depth_zbuffer.png")),
            "b/point_3_view_1"
        );
        assert_eq!(
            key("b", Path::new("x/point_3_view_1_domain_rgb.png")),
            "b/point_3_view_1"
        );
        assert_eq!(key("b", Path::new("x/0001.png")), "b/0001");
    }
}
