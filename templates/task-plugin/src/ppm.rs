//! Binary PPM (`P6`, 8 bits per channel): the template's image format. Small enough to read by
//! hand, written by PIL (`Image.save("x.ppm")`), ImageMagick and netpbm.
use std::path::Path;
use virb_plugin_api::PluginError;

/// An RGB image, row-major, 3 bytes per pixel.
#[derive(Debug, Clone, PartialEq)]
pub struct Rgb {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// `height * width * 3` bytes.
    pub data: Vec<u8>,
}

/// The largest side accepted, so a damaged header cannot ask for gigabytes.
const MAX_SIDE: usize = 16_384;

/// Reads a binary PPM file; errors name the file and what is wrong with it.
pub fn read(path: &Path) -> Result<Rgb, PluginError> {
    let bytes = std::fs::read(path)
        .map_err(|e| PluginError::data(format!("cannot read image {}: {e}", path.display())))?;
    parse(&bytes).map_err(|why| {
        PluginError::data(format!("cannot decode image {}: {why}", path.display())).with_help(
            "images must be binary PPM files (P6, maxval 255), e.g. PIL's Image.save(\"x.ppm\")",
        )
    })
}

/// Parses a binary PPM image held in memory.
pub fn parse(bytes: &[u8]) -> Result<Rgb, String> {
    let mut at = 0;
    let mut fields = [0usize; 3];
    if bytes.get(0..2) != Some(b"P6") {
        return Err("not a binary PPM file (it does not start with `P6`)".into());
    }
    at += 2;
    for (i, name) in ["width", "height", "maxval"].iter().enumerate() {
        // Whitespace and `#` comments up to the end of their line.
        loop {
            match bytes.get(at) {
                Some(b) if b.is_ascii_whitespace() => at += 1,
                Some(b'#') => {
                    while bytes.get(at).is_some_and(|b| *b != b'\n') {
                        at += 1;
                    }
                }
                _ => break,
            }
        }
        let start = at;
        while bytes.get(at).is_some_and(u8::is_ascii_digit) {
            at += 1;
        }
        let text = std::str::from_utf8(&bytes[start..at]).unwrap_or("");
        fields[i] = text
            .parse()
            .map_err(|_| format!("the header has no valid {name}"))?;
    }
    let [width, height, maxval] = fields;
    if maxval != 255 {
        return Err(format!(
            "maxval {maxval} is not supported (only 255: 8 bits per channel)"
        ));
    }
    if width == 0 || height == 0 || width > MAX_SIDE || height > MAX_SIDE {
        return Err(format!("size {width}x{height} is outside 1..={MAX_SIDE}"));
    }
    // Exactly one whitespace byte separates the header from the pixels.
    if !bytes.get(at).is_some_and(u8::is_ascii_whitespace) {
        return Err("the header does not end with a whitespace byte".into());
    }
    at += 1;
    let len = width * height * 3;
    let data = bytes
        .get(at..at + len)
        .ok_or_else(|| {
            format!(
                "truncated: {width}x{height} needs {len} bytes of pixels, the file has {}",
                bytes.len() - at
            )
        })?
        .to_vec();
    Ok(Rgb {
        width,
        height,
        data,
    })
}

/// Encodes an image as binary PPM.
pub fn encode(image: &Rgb) -> Vec<u8> {
    let mut out = format!("P6\n{} {}\n255\n", image.width, image.height).into_bytes();
    out.extend_from_slice(&image.data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_a_comment_in_the_header() {
        let image = Rgb {
            width: 2,
            height: 1,
            data: vec![1, 2, 3, 250, 251, 252],
        };
        assert_eq!(parse(&encode(&image)).unwrap(), image);
        let commented = b"P6\n# written by hand\n2 1\n255\n\x01\x02\x03\xfa\xfb\xfc";
        assert_eq!(parse(commented).unwrap(), image);
    }

    #[test]
    fn damaged_files_are_refused_with_the_reason() {
        let full = encode(&Rgb {
            width: 4,
            height: 4,
            data: vec![7; 48],
        });
        let cut = parse(&full[..full.len() - 1]).unwrap_err();
        assert!(cut.contains("truncated: 4x4 needs 48 bytes"), "{cut}");
        assert!(parse(b"P3\n1 1\n255\n0 0 0").unwrap_err().contains("P6"));
        assert!(parse(b"P6\n1 1\n65535\n\0\0\0\0\0\0")
            .unwrap_err()
            .contains("maxval 65535"));
        assert!(parse(b"P6\nx 1\n255\n").unwrap_err().contains("width"));
        let err = read(Path::new("/nonexistent/a.ppm")).unwrap_err();
        assert!(err.message.contains("/nonexistent/a.ppm"), "{err}");
    }
}
