//! KITTI's optical-flow files (`training/flow_occ/*_10.png`, the devkit's encoding): 16-bit RGB
//! PNGs where u = (R - 2^15) / 64 and v = (G - 2^15) / 64 in pixels, and B > 0 marks a valid
//! pixel. An 8-bit file (for example the colour visualisation ViRB regressed) is refused by name.
use image::{DynamicImage, ImageBuffer, Rgb};
use std::path::Path;
use virb_plugin_api::PluginError;

/// A decoded flow field, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowField {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Horizontal flow per pixel, in pixels.
    pub u: Vec<f32>,
    /// Vertical flow per pixel, in pixels.
    pub v: Vec<f32>,
    /// Whether the pixel has ground truth.
    pub valid: Vec<bool>,
}

/// Reads a KITTI flow PNG.
pub fn read(path: &Path) -> Result<FlowField, PluginError> {
    let img = image::open(path)
        .map_err(|e| PluginError::data(format!("cannot read flow file {}: {e}", path.display())))?;
    let rgb = match img {
        DynamicImage::ImageRgb16(buf) => buf,
        DynamicImage::ImageRgba16(buf) => DynamicImage::ImageRgba16(buf).into_rgb16(),
        other => {
            return Err(PluginError::data(format!(
                "flow file {} is a {:?} image, not a 16-bit RGB PNG",
                path.display(),
                other.color()
            ))
            .with_help("KITTI flow ground truth is training/flow_occ/*_10.png from the KITTI flow 2015 archive (16-bit PNGs), not the colour visualisation"))
        }
    };
    let (width, height) = rgb.dimensions();
    let n = (width * height) as usize;
    let (mut u, mut v, mut valid) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for px in rgb.pixels() {
        let [r, g, b] = px.0;
        u.push((r as f32 - 32768.0) / 64.0);
        v.push((g as f32 - 32768.0) / 64.0);
        valid.push(b > 0);
    }
    Ok(FlowField {
        width,
        height,
        u,
        v,
        valid,
    })
}

/// Writes a flow field in KITTI's encoding (values are rounded to 1/64 px and clamped to the
/// representable range; invalid pixels are written as zero flow with B = 0).
pub fn write(path: &Path, flow: &FlowField) -> Result<(), PluginError> {
    let encode = |x: f32| (x * 64.0 + 32768.0).round().clamp(0.0, 65535.0) as u16;
    let mut buf: ImageBuffer<Rgb<u16>, Vec<u16>> = ImageBuffer::new(flow.width, flow.height);
    for (i, px) in buf.pixels_mut().enumerate() {
        *px = if flow.valid[i] {
            Rgb([encode(flow.u[i]), encode(flow.v[i]), 1])
        } else {
            Rgb([32768, 32768, 0])
        };
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| PluginError::data(format!("cannot create {}: {e}", dir.display())))?;
    }
    buf.save(path)
        .map_err(|e| PluginError::data(format!("cannot write flow file {}: {e}", path.display())))
}
