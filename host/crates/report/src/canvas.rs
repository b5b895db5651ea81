//! A plotters bitmap backend that draws text itself, with ab_glyph and the embedded DejaVu Sans.
//!
//! plotters' own `ab_glyph` text ignores each glyph's left side bearing (letters are spaced
//! unevenly) and its other font options need system fonts; so text goes through [`Canvas`].
use ab_glyph::{point, Font, FontRef, OutlinedGlyph, PxScale, ScaleFont};
use plotters::prelude::BitMapBackend;
use plotters_backend::text_anchor::{HPos, VPos};
use plotters_backend::{
    BackendColor, BackendCoord, BackendStyle, BackendTextStyle, DrawingBackend, DrawingErrorKind,
};
use std::sync::OnceLock;

/// DejaVu Sans 2.37 (Bitstream Vera / Arev licence: fonts/LICENSE-DejaVu).
static FONT_BYTES: &[u8] = include_bytes!("../fonts/DejaVuSans.ttf");

/// The embedded font, parsed once.
pub(crate) fn face() -> Option<&'static FontRef<'static>> {
    static FACE: OnceLock<Option<FontRef<'static>>> = OnceLock::new();
    FACE.get_or_init(|| FontRef::try_from_slice(FONT_BYTES).ok())
        .as_ref()
}

/// Glyphs of a line of text, positioned from a top-left origin.
struct Laid {
    glyphs: Vec<OutlinedGlyph>,
    width: f32,
    height: f32,
}

fn lay_out(font: &FontRef<'static>, text: &str, size: f32) -> Laid {
    let scaled = font.as_scaled(PxScale::from(size));
    let ascent = scaled.ascent();
    let mut caret = 0.0f32;
    let mut prev = None;
    let mut glyphs = Vec::new();
    for c in text.chars() {
        let id = scaled.glyph_id(c);
        if let Some(p) = prev {
            caret += scaled.kern(p, id);
        }
        let glyph = id.with_scale_and_position(scaled.scale(), point(caret, ascent));
        caret += scaled.h_advance(id);
        prev = Some(id);
        if let Some(outlined) = font.outline_glyph(glyph) {
            glyphs.push(outlined);
        }
    }
    Laid {
        glyphs,
        width: caret,
        height: ascent - scaled.descent(),
    }
}

/// Width and height in pixels of `text` drawn at `size` (the font's ascent - descent).
pub(crate) fn measure(text: &str, size: f64) -> (i32, i32) {
    match face() {
        Some(f) => {
            let l = lay_out(f, text, size as f32);
            (l.width.ceil() as i32, l.height.ceil() as i32)
        }
        None => (
            (text.chars().count() as f64 * size * 0.6) as i32,
            size as i32,
        ),
    }
}

/// [`BitMapBackend`] with text drawn by [`lay_out`].
pub(crate) struct Canvas<'a> {
    inner: BitMapBackend<'a>,
    font: &'static FontRef<'static>,
}

impl<'a> Canvas<'a> {
    /// A canvas on an RGB buffer of `size`; `None` when the embedded font does not load.
    pub fn new(buf: &'a mut [u8], size: (u32, u32)) -> Option<Self> {
        Some(Canvas {
            inner: BitMapBackend::with_buffer(buf, size),
            font: face()?,
        })
    }
}

type Error = <BitMapBackend<'static> as DrawingBackend>::ErrorType;

impl DrawingBackend for Canvas<'_> {
    type ErrorType = Error;

    fn get_size(&self) -> (u32, u32) {
        self.inner.get_size()
    }

    fn ensure_prepared(&mut self) -> Result<(), DrawingErrorKind<Error>> {
        self.inner.ensure_prepared()
    }

    fn present(&mut self) -> Result<(), DrawingErrorKind<Error>> {
        self.inner.present()
    }

    fn draw_pixel(
        &mut self,
        point: BackendCoord,
        color: BackendColor,
    ) -> Result<(), DrawingErrorKind<Error>> {
        self.inner.draw_pixel(point, color)
    }

    fn draw_line<S: BackendStyle>(
        &mut self,
        from: BackendCoord,
        to: BackendCoord,
        style: &S,
    ) -> Result<(), DrawingErrorKind<Error>> {
        self.inner.draw_line(from, to, style)
    }

    fn draw_rect<S: BackendStyle>(
        &mut self,
        upper_left: BackendCoord,
        bottom_right: BackendCoord,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<Error>> {
        self.inner.draw_rect(upper_left, bottom_right, style, fill)
    }

    fn draw_path<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        path: I,
        style: &S,
    ) -> Result<(), DrawingErrorKind<Error>> {
        self.inner.draw_path(path, style)
    }

    fn draw_circle<S: BackendStyle>(
        &mut self,
        center: BackendCoord,
        radius: u32,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<Error>> {
        self.inner.draw_circle(center, radius, style, fill)
    }

    fn fill_polygon<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        vert: I,
        style: &S,
    ) -> Result<(), DrawingErrorKind<Error>> {
        self.inner.fill_polygon(vert, style)
    }

    fn blit_bitmap(
        &mut self,
        pos: BackendCoord,
        size: (u32, u32),
        src: &[u8],
    ) -> Result<(), DrawingErrorKind<Error>> {
        self.inner.blit_bitmap(pos, size, src)
    }

    fn estimate_text_size<S: BackendTextStyle>(
        &self,
        text: &str,
        style: &S,
    ) -> Result<(u32, u32), DrawingErrorKind<Error>> {
        let l = lay_out(self.font, text, style.size() as f32);
        Ok((l.width.ceil() as u32, l.height.ceil() as u32))
    }

    fn draw_text<S: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &S,
        pos: BackendCoord,
    ) -> Result<(), DrawingErrorKind<Error>> {
        let color = style.color();
        if color.alpha == 0.0 {
            return Ok(());
        }
        let l = lay_out(self.font, text, style.size() as f32);
        let anchor = style.anchor();
        let dx = match anchor.h_pos {
            HPos::Left => 0.0,
            HPos::Center => -l.width / 2.0,
            HPos::Right => -l.width,
        }
        .round() as i32;
        let dy = match anchor.v_pos {
            VPos::Top => 0.0,
            VPos::Center => -l.height / 2.0,
            VPos::Bottom => -l.height,
        }
        .round() as i32;
        let transform = style.transform();
        let mut pixels = Vec::new();
        for g in &l.glyphs {
            let b = g.px_bounds();
            let (gx, gy) = (b.min.x as i32, b.min.y as i32);
            g.draw(|x, y, coverage| {
                if coverage > 0.0 {
                    pixels.push((gx + x as i32, gy + y as i32, coverage.min(1.0)));
                }
            });
        }
        for (x, y, coverage) in pixels {
            let (tx, ty) = transform.transform(x + dx, y + dy);
            self.inner.draw_pixel(
                (pos.0 + tx, pos.1 + ty),
                BackendColor {
                    alpha: color.alpha * coverage as f64,
                    rgb: color.rgb,
                },
            )?;
        }
        Ok(())
    }
}
