//! JPEG decoding: libjpeg-turbo through its TurboJPEG API (the decoder PIL uses, with PIL's
//! defaults: accurate integer IDCT, smooth chroma upsampling), at a reduced scale where the target
//! is much smaller than the image, as PIL's `Image.draft` does; zune-jpeg for the colour spaces
//! TurboJPEG will not turn into RGB (CMYK, YCCK).
use super::Rgb;
use std::cell::RefCell;
use turbojpeg::{Colorspace, Decompressor, Image, PixelFormat, ScalingFactor};
use zune_core::{colorspace::ColorSpace, options::DecoderOptions};

/// The largest JPEG IDCT reduction (1, 2, 4 or 8) that keeps both sides of a `width` x `height`
/// image at least `min_side`. The reduced size of a side is `ceil(side / reduction)`.
pub fn jpeg_reduction(width: u32, height: u32, min_side: u32) -> u32 {
    [8, 4, 2]
        .into_iter()
        .find(|&r| width.div_ceil(r) >= min_side && height.div_ceil(r) >= min_side)
        .unwrap_or(1)
}

/// The reduction [`decode`] applies for a target side: colour images keep both sides at least
/// twice the target (PIL's `reducing_gap=2`: the resize that follows still averages at least two
/// decoded pixels per output pixel, and half-resolution chroma stays at least the target), grayscale
/// ones at least the target.
fn reduction_for(width: u32, height: u32, gray: bool, min_side: u32) -> u32 {
    let keep = if gray {
        min_side
    } else {
        min_side.saturating_mul(2)
    };
    jpeg_reduction(width, height, keep)
}

thread_local! {
    // tj3Init allocates the decoder's state; one per thread, reused.
    static TURBO: RefCell<Option<Decompressor>> = const { RefCell::new(None) };
}

/// Decodes a JPEG to 8-bit RGB, reduced by [`reduction_for`] when `min_side` is given.
///
/// TurboJPEG fails on libjpeg's warnings too (say "premature end of JPEG file"); such files are
/// decoded again by zune-jpeg, leniently (missing rows come out grey, as they always did here), at
/// full scale. The error names both decoders' complaints when neither can decode the file.
pub(super) fn decode(bytes: &[u8], min_side: Option<u32>) -> Result<Rgb, String> {
    let turbo = TURBO.with_borrow_mut(|slot| {
        let turbo = match slot {
            Some(d) => d,
            None => slot.insert(Decompressor::new().map_err(|e| Failed::Turbo(e.to_string()))?),
        };
        decode_turbo(turbo, bytes, min_side)
    });
    turbo.or_else(|failed| match failed {
        Failed::Final(e) => Err(e),
        Failed::Turbo(turbo_err) => {
            decode_zune(bytes).map_err(|zune_err| format!("{turbo_err} (zune-jpeg: {zune_err})"))
        }
    })
}

/// PIL's decompression-bomb limit (`Image.MAX_IMAGE_PIXELS` x 2, where PIL raises): a few hundred
/// bytes can declare a 65535 x 65535 JPEG, whose decoding would take 12 GB and minutes.
const MAX_PIXELS: u64 = 178_956_970;

/// Why TurboJPEG did not decode a file: for `Turbo`, zune-jpeg tries; `Final` is the answer.
enum Failed {
    Turbo(String),
    Final(String),
}

impl From<String> for Failed {
    fn from(e: String) -> Self {
        Failed::Turbo(e)
    }
}

fn decode_turbo(
    turbo: &mut Decompressor,
    bytes: &[u8],
    min_side: Option<u32>,
) -> Result<Rgb, Failed> {
    let header = turbo.read_header(bytes).map_err(|e| {
        Failed::Turbo(match e {
            // A header without a frame (image size) reads as width -1.
            turbojpeg::Error::IntegerOverflow(_) => "no image size before the data ends".into(),
            e => e.to_string(),
        })
    })?;
    let pixels = header.width as u64 * header.height as u64;
    if pixels > MAX_PIXELS {
        return Err(Failed::Final(format!(
            "the JPEG declares {}x{} = {pixels} pixels, more than PIL's decompression-bomb limit \
             of {MAX_PIXELS}; downscale the file or remove it from the split",
            header.width, header.height
        )));
    }
    if matches!(header.colorspace, Colorspace::CMYK | Colorspace::YCCK) {
        return decode_zune(bytes).map_err(Failed::Final);
    }
    let (w, h) = (dim(header.width)?, dim(header.height)?);
    let r = match min_side {
        Some(side) if !header.is_lossless => {
            reduction_for(w, h, header.colorspace == Colorspace::Gray, side)
        }
        _ => 1,
    };
    let scaling = ScalingFactor::new(1, r as usize);
    turbo
        .set_scaling_factor(scaling)
        .map_err(|e| e.to_string())?;
    let scaled = header.scaled(scaling);
    let mut pixels = vec![0u8; scaled.width * scaled.height * 3];
    let image = Image {
        pixels: pixels.as_mut_slice(),
        width: scaled.width,
        pitch: scaled.width * 3,
        height: scaled.height,
        format: PixelFormat::RGB,
    };
    turbo.decompress(bytes, image).map_err(|e| e.to_string())?;
    Ok(Rgb {
        width: dim(scaled.width)?,
        height: dim(scaled.height)?,
        pixels,
    })
}

fn dim(v: usize) -> Result<u32, String> {
    u32::try_from(v).map_err(|_| format!("image side {v} is too large"))
}

/// Full-scale decoding with zune-jpeg, straight to RGB (CMYK and YCCK are converted).
fn decode_zune(bytes: &[u8]) -> Result<Rgb, String> {
    let options = DecoderOptions::default()
        .set_strict_mode(false)
        .set_max_width(usize::MAX)
        .set_max_height(usize::MAX)
        .jpeg_set_out_colorspace(ColorSpace::RGB);
    let mut decoder = zune_jpeg::JpegDecoder::new_with_options(
        zune_core::bytestream::ZCursor::new(bytes),
        options,
    );
    let pixels = decoder
        .decode()
        .map_err(|e| e.to_string().trim_end().to_string())?;
    let (width, height) = decoder.dimensions().ok_or("no JPEG header")?;
    if pixels.len() != width * height * 3 {
        return Err(format!(
            "decoded {} bytes for {width}x{height} RGB",
            pixels.len()
        ));
    }
    Ok(Rgb {
        width: dim(width)?,
        height: dim(height)?,
        pixels,
    })
}
