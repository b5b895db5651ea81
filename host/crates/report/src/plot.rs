//! PNG plots: each job against Imagenet, and the experiments x jobs heatmap.
//!
//! Text is drawn with DejaVu Sans, embedded in the binary (see [`crate::canvas`]): no system
//! font is needed.
use crate::canvas::{measure, Canvas};
use crate::model::Model;
use crate::tables::TEST_MARK;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::FontTransform;

/// Why a plot could not be drawn.
#[derive(Debug)]
pub(crate) struct PlotError(pub String);

impl<E: std::error::Error> From<E> for PlotError {
    fn from(e: E) -> Self {
        PlotError(e.to_string())
    }
}

/// A canvas on `buf`, or why not.
fn canvas(buf: &mut [u8], size: (u32, u32)) -> Result<Canvas<'_>, PlotError> {
    Canvas::new(buf, size)
        .ok_or_else(|| PlotError("the embedded font DejaVuSans.ttf could not be loaded".into()))
}

/// A text style at `size` pixels (the family is ignored: [`Canvas`] has one font).
fn font(size: u32) -> FontDesc<'static> {
    ("sans-serif", size).into_font()
}

/// Width and height in pixels of `text` at `size`.
fn text_size(text: &str, size: u32) -> (i32, i32) {
    measure(text, size as f64)
}

fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

fn encode_png(buf: Vec<u8>, w: u32, h: u32) -> Result<Vec<u8>, PlotError> {
    let img = image::RgbImage::from_raw(w, h, buf)
        .ok_or_else(|| PlotError("bitmap buffer has the wrong size".into()))?;
    let mut bytes = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )?;
    Ok(bytes)
}

const INK: RGBColor = RGBColor(33, 33, 33);
const MUTED: RGBColor = RGBColor(90, 90, 90);
const MISSING: RGBColor = RGBColor(178, 178, 178);
const POINT: RGBColor = RGBColor(31, 119, 180);
const FIT: RGBColor = RGBColor(214, 39, 40);

// ---------------------------------------------------------------------------------------------
// Statistics

/// Least-squares line `y = slope * x + intercept`; `None` when all x are equal.
pub(crate) fn least_squares(xs: &[f64], ys: &[f64]) -> Option<(f64, f64)> {
    let n = xs.len() as f64;
    if xs.len() < 2 || xs.len() != ys.len() {
        return None;
    }
    let mx = xs.iter().sum::<f64>() / n;
    let my = ys.iter().sum::<f64>() / n;
    let sxx: f64 = xs.iter().map(|x| (x - mx) * (x - mx)).sum();
    let sxy: f64 = xs.iter().zip(ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    if sxx <= 0.0 {
        return None;
    }
    let slope = sxy / sxx;
    Some((slope, my - slope * mx))
}

/// Pearson correlation; `None` when either variable is constant.
pub(crate) fn pearson(xs: &[f64], ys: &[f64]) -> Option<f64> {
    let n = xs.len() as f64;
    if xs.len() < 2 || xs.len() != ys.len() {
        return None;
    }
    let mx = xs.iter().sum::<f64>() / n;
    let my = ys.iter().sum::<f64>() / n;
    let sxx: f64 = xs.iter().map(|x| (x - mx) * (x - mx)).sum();
    let syy: f64 = ys.iter().map(|y| (y - my) * (y - my)).sum();
    let sxy: f64 = xs.iter().zip(ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    if sxx <= 0.0 || syy <= 0.0 {
        return None;
    }
    Some((sxy / (sxx * syy).sqrt()).clamp(-1.0, 1.0))
}

/// Ranks from 1, ties get their average rank.
fn ranks(v: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut r = vec![0.0; v.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for k in &idx[i..=j] {
            r[*k] = avg;
        }
        i = j + 1;
    }
    r
}

/// Spearman rank correlation (Pearson on average ranks).
pub(crate) fn spearman(xs: &[f64], ys: &[f64]) -> Option<f64> {
    pearson(&ranks(xs), &ranks(ys))
}

/// `v` with 3 decimals and a typographic minus.
fn signed(v: f64) -> String {
    let t = format!("{v:.3}");
    match t.strip_prefix('-') {
        Some(rest) => format!("−{rest}"),
        None => t,
    }
}

fn fmt_stat(v: Option<f64>) -> String {
    v.map(signed).unwrap_or_else(|| "n/a".into())
}

// ---------------------------------------------------------------------------------------------
// Scatter

/// One experiment in a scatter plot.
#[derive(Debug, Clone)]
pub(crate) struct Point {
    pub label: String,
    pub x: f64,
    pub y: f64,
    /// Standard deviation over repeats of x (drawn as an error bar).
    pub x_std: Option<f64>,
    /// Standard deviation over repeats of y (drawn as an error bar).
    pub y_std: Option<f64>,
}

/// A scatter of one job against the Imagenet job.
#[derive(Debug, Clone)]
pub(crate) struct Scatter {
    pub title: String,
    pub x_desc: String,
    pub y_desc: String,
    pub points: Vec<Point>,
    /// A footnote under the plot (for test-selected points).
    pub note: Option<String>,
}

/// Axis range around `v` with a margin; never empty.
fn padded_range(v: impl Iterator<Item = f64> + Clone) -> (f64, f64) {
    let lo = v.clone().fold(f64::INFINITY, f64::min);
    let hi = v.fold(f64::NEG_INFINITY, f64::max);
    let span = hi - lo;
    let pad = if span > 0.0 {
        span * 0.12
    } else {
        (lo.abs() * 0.05).max(0.01)
    };
    (lo - pad, hi + pad)
}

/// Decimals that tell ticks `span / 8` apart.
fn tick_decimals(span: f64) -> usize {
    if span <= 0.0 || !span.is_finite() {
        return 2;
    }
    (-(span / 8.0).log10()).ceil().clamp(0.0, 6.0) as usize
}

type Rect = (i32, i32, i32, i32);

fn overlap(a: Rect, b: Rect) -> i64 {
    let w = (a.2.min(b.2) - a.0.max(b.0)).max(0) as i64;
    let h = (a.3.min(b.3) - a.1.max(b.1)).max(0) as i64;
    w * h
}

/// Top-left corners for each label, avoiding the points, the `line` (pixel end points), each
/// other and the frame; `true` where a label is far from its point (draw a leader line).
fn place_labels(
    anchors: &[(i32, i32)],
    sizes: &[(i32, i32)],
    frame: Rect,
    line: Option<((i32, i32), (i32, i32))>,
) -> Vec<((i32, i32), bool)> {
    const R: i32 = 7;
    let mut obstacles: Vec<Rect> = anchors
        .iter()
        .map(|&(x, y)| (x - R, y - R, x + R, y + R))
        .collect();
    if let Some(((x0, y0), (x1, y1))) = line {
        let steps = ((x1 - x0).abs().max((y1 - y0).abs()) / 4).max(1);
        obstacles.extend((0..=steps).map(|i| {
            let x = x0 + (x1 - x0) * i / steps;
            let y = y0 + (y1 - y0) * i / steps;
            (x - 2, y - 2, x + 2, y + 2)
        }));
    }
    let mut placed: Vec<Rect> = Vec::new();
    let mut out = Vec::new();
    for (&(cx, cy), &(tw, th)) in anchors.iter().zip(sizes) {
        let mut best: Option<(i64, (i32, i32), bool)> = None;
        for (ring, g) in [(false, 9), (true, 26), (true, 48)] {
            let d = g * 7 / 10;
            let candidates = [
                (cx + g, cy - th / 2),
                (cx - g - tw, cy - th / 2),
                (cx - tw / 2, cy - g - th),
                (cx - tw / 2, cy + g),
                (cx + d, cy - d - th),
                (cx + d, cy + d),
                (cx - d - tw, cy - d - th),
                (cx - d - tw, cy + d),
            ];
            for (x, y) in candidates {
                let r = (x, y, x + tw, y + th);
                let mut cost: i64 = obstacles.iter().map(|o| overlap(r, *o)).sum::<i64>() * 4
                    + placed.iter().map(|p| overlap(r, *p)).sum::<i64>() * 8;
                let inside = overlap(r, frame);
                cost += ((tw * th) as i64 - inside) * 16;
                // Prefer near positions: a far one must be clearly better.
                cost += if ring { 40 + g as i64 } else { 0 };
                if best.as_ref().is_none_or(|b| cost < b.0) {
                    best = Some((cost, (x, y), ring));
                }
            }
            if best.as_ref().is_some_and(|b| b.0 == 0) {
                break;
            }
        }
        let ((x, y), far) = best.map(|b| (b.1, b.2)).unwrap_or(((cx + 9, cy), false));
        placed.push((x, y, x + tw, y + th));
        out.push(((x, y), far));
    }
    out
}

/// Draws a scatter plot; returns the PNG bytes.
pub(crate) fn scatter(s: &Scatter) -> Result<Vec<u8>, PlotError> {
    let (w, h) = (1000u32, 760u32);
    let mut buf = vec![255u8; (w * h * 3) as usize];
    let xs: Vec<f64> = s.points.iter().map(|p| p.x).collect();
    let ys: Vec<f64> = s.points.iter().map(|p| p.y).collect();
    let fit = least_squares(&xs, &ys);
    let r = pearson(&xs, &ys);
    let rho = spearman(&xs, &ys);
    {
        let root = canvas(&mut buf, (w, h))?.into_drawing_area();
        root.fill(&WHITE)?;
        root.draw(&Text::new(
            s.title.clone(),
            (w as i32 / 2, 14),
            font(22).color(&INK).pos(Pos::new(HPos::Center, VPos::Top)),
        ))?;
        // Subtitle: a line sample, then the fit and the correlations.
        let fit_text = match fit {
            Some((a, b)) => format!(
                "least squares: y = {}·x {} {:.3}",
                signed(a),
                if b < 0.0 { "−" } else { "+" },
                b.abs()
            ),
            None => "least squares: n/a (all x equal)".into(),
        };
        let sub = format!(
            "{fit_text}     Pearson r = {}     Spearman ρ = {}     n = {}",
            fmt_stat(r),
            fmt_stat(rho),
            s.points.len()
        );
        let (sw, _) = text_size(&sub, 16);
        let sx = (w as i32 - sw) / 2 + 18;
        root.draw(&PathElement::new(
            vec![(sx - 34, 55), (sx - 8, 55)],
            FIT.stroke_width(3),
        ))?;
        root.draw(&Text::new(
            sub,
            (sx, 55),
            font(16)
                .color(&MUTED)
                .pos(Pos::new(HPos::Left, VPos::Center)),
        ))?;
        let bottom = if s.note.is_some() { 34 } else { 12 };
        let area = root.margin(80, bottom, 16, 30);
        let (x0, x1) = padded_range(s.points.iter().flat_map(|p| {
            let e = p.x_std.unwrap_or(0.0);
            [p.x - e, p.x + e]
        }));
        let (y0, y1) = padded_range(s.points.iter().flat_map(|p| {
            let e = p.y_std.unwrap_or(0.0);
            [p.y - e, p.y + e]
        }));
        let mut chart = ChartBuilder::on(&area)
            .x_label_area_size(62)
            .y_label_area_size(86)
            .build_cartesian_2d(x0..x1, y0..y1)?;
        let (xd, yd) = (tick_decimals(x1 - x0), tick_decimals(y1 - y0));
        let xf = move |v: &f64| format!("{v:.xd$}");
        let yf = move |v: &f64| format!("{v:.yd$}");
        chart
            .configure_mesh()
            .x_desc(s.x_desc.as_str())
            .y_desc(s.y_desc.as_str())
            .x_labels(8)
            .y_labels(8)
            .x_label_formatter(&xf)
            .y_label_formatter(&yf)
            .label_style(font(15).color(&INK))
            .axis_desc_style(font(17).color(&INK))
            .bold_line_style(RGBColor(222, 222, 222))
            .light_line_style(RGBColor(244, 244, 244))
            .axis_style(MUTED)
            .draw()?;
        let mut line_px = None;
        if let Some((a, b)) = fit {
            // The part of the line inside the y range.
            let (mut lo, mut hi) = (x0, x1);
            if a != 0.0 {
                let (ya, yb) = ((y0 - b) / a, (y1 - b) / a);
                lo = lo.max(ya.min(yb));
                hi = hi.min(ya.max(yb));
            }
            if lo < hi {
                let ends = [(lo, a * lo + b), (hi, a * hi + b)];
                line_px = Some((chart.backend_coord(&ends[0]), chart.backend_coord(&ends[1])));
                chart.draw_series(std::iter::once(PathElement::new(
                    ends.to_vec(),
                    FIT.stroke_width(2),
                )))?;
            }
        }
        // Error bars (± std over repeats), in pixels so the caps keep their size.
        for p in &s.points {
            let (cx, cy) = chart.backend_coord(&(p.x, p.y));
            if let Some(e) = p.y_std.filter(|e| *e > 0.0) {
                let (_, top) = chart.backend_coord(&(p.x, p.y + e));
                let (_, bottom) = chart.backend_coord(&(p.x, p.y - e));
                for seg in [
                    [(cx, top), (cx, bottom)],
                    [(cx - 5, top), (cx + 5, top)],
                    [(cx - 5, bottom), (cx + 5, bottom)],
                ] {
                    root.draw(&PathElement::new(seg.to_vec(), MUTED.stroke_width(1)))?;
                }
            }
            if let Some(e) = p.x_std.filter(|e| *e > 0.0) {
                let (left, _) = chart.backend_coord(&(p.x - e, p.y));
                let (right, _) = chart.backend_coord(&(p.x + e, p.y));
                for seg in [
                    [(left, cy), (right, cy)],
                    [(left, cy - 5), (left, cy + 5)],
                    [(right, cy - 5), (right, cy + 5)],
                ] {
                    root.draw(&PathElement::new(seg.to_vec(), MUTED.stroke_width(1)))?;
                }
            }
        }
        chart.draw_series(
            s.points
                .iter()
                .map(|p| Circle::new((p.x, p.y), 6, POINT.mix(0.85).filled())),
        )?;
        chart.draw_series(
            s.points
                .iter()
                .map(|p| Circle::new((p.x, p.y), 6, INK.stroke_width(1))),
        )?;
        let (px, py) = chart.plotting_area().get_pixel_range();
        let frame = (px.start + 2, py.start + 2, px.end - 2, py.end - 2);
        let anchors: Vec<(i32, i32)> = s
            .points
            .iter()
            .map(|p| chart.backend_coord(&(p.x, p.y)))
            .collect();
        let sizes: Vec<(i32, i32)> = s.points.iter().map(|p| text_size(&p.label, 15)).collect();
        let spots = place_labels(&anchors, &sizes, frame, line_px);
        for ((p, &(ax, ay)), &((lx, ly), far)) in s.points.iter().zip(&anchors).zip(&spots) {
            if far {
                let (tw, th) = text_size(&p.label, 15);
                let tx = (ax).clamp(lx, lx + tw);
                let ty = (ay).clamp(ly, ly + th);
                root.draw(&PathElement::new(vec![(ax, ay), (tx, ty)], MUTED.mix(0.6)))?;
            }
            root.draw(&Text::new(
                p.label.clone(),
                (lx, ly),
                font(15).color(&INK).pos(Pos::new(HPos::Left, VPos::Top)),
            ))?;
        }
        if let Some(note) = &s.note {
            root.draw(&Text::new(
                note.clone(),
                (16, h as i32 - 8),
                font(14)
                    .color(&MUTED)
                    .pos(Pos::new(HPos::Left, VPos::Bottom)),
            ))?;
        }
        root.present()?;
    }
    encode_png(buf, w, h)
}

// ---------------------------------------------------------------------------------------------
// Heatmap

/// ColorBrewer RdYlBu, reversed: blue (worse) to red (better) through pale yellow.
const STOPS: [(u8, u8, u8); 11] = [
    (0x31, 0x36, 0x95),
    (0x45, 0x75, 0xb4),
    (0x74, 0xad, 0xd1),
    (0xab, 0xd9, 0xe9),
    (0xe0, 0xf3, 0xf8),
    (0xff, 0xff, 0xbf),
    (0xfe, 0xe0, 0x90),
    (0xfd, 0xae, 0x61),
    (0xf4, 0x6d, 0x43),
    (0xd7, 0x30, 0x27),
    (0xa5, 0x00, 0x26),
];

/// Colour for `t` in [0, 1] (1 = best).
pub(crate) fn colormap(t: f64) -> RGBColor {
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.5
    };
    let f = t * (STOPS.len() - 1) as f64;
    let i = (f.floor() as usize).min(STOPS.len() - 2);
    let u = f - i as f64;
    let (a, b) = (STOPS[i], STOPS[i + 1]);
    let mix = |p: u8, q: u8| (p as f64 + (q as f64 - p as f64) * u).round() as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// Black or white, whichever reads better on `c`.
fn ink_on(c: RGBColor) -> RGBColor {
    let lum = 0.299 * c.0 as f64 + 0.587 * c.1 as f64 + 0.114 * c.2 as f64;
    if lum < 140.0 {
        WHITE
    } else {
        RGBColor(20, 20, 20)
    }
}

/// One heatmap cell.
#[derive(Debug, Clone)]
pub(crate) struct HeatCell {
    pub text: String,
    /// Normalised value, 1 = best of the column; `None` = missing (grey).
    pub t: Option<f64>,
}

/// Heatmap cells from the model: per-job min..max normalisation, flipped where lower is better.
pub(crate) fn heat_cells(m: &Model<'_>) -> Vec<Vec<HeatCell>> {
    let ne = m.experiments.len();
    let mut grid = vec![Vec::with_capacity(m.jobs.len()); ne];
    for (ji, job) in m.jobs.iter().enumerate() {
        let values: Vec<Option<f64>> = (0..ne).map(|ei| m.value(ei, ji)).collect();
        let lo = values
            .iter()
            .flatten()
            .copied()
            .fold(f64::INFINITY, f64::min);
        let hi = values
            .iter()
            .flatten()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max);
        for (ei, v) in values.iter().enumerate() {
            let cell = m.cell(ei, ji);
            let cell = match (v, cell) {
                (Some(v), Some(c)) => {
                    let mut t = if hi > lo { (v - lo) / (hi - lo) } else { 0.5 };
                    if !job.higher_is_better {
                        t = 1.0 - t;
                    }
                    let test = c
                        .selection
                        .as_ref()
                        .is_some_and(|s| s.selected_by.is_test());
                    let decimals = if v.abs() >= 1000.0 {
                        0
                    } else if v.abs() >= 100.0 {
                        1
                    } else {
                        3
                    };
                    HeatCell {
                        text: format!("{v:.decimals$}{}", if test { TEST_MARK } else { "" }),
                        t: Some(t),
                    }
                }
                (_, Some(c)) => HeatCell {
                    text: c.status().to_string(),
                    t: None,
                },
                _ => HeatCell {
                    text: "—".into(),
                    t: None,
                },
            };
            grid[ei].push(cell);
        }
    }
    grid
}

/// Labels and cells of a heatmap.
#[derive(Debug, Clone)]
pub(crate) struct Heatmap {
    pub rows: Vec<String>,
    pub cols: Vec<String>,
    pub cells: Vec<Vec<HeatCell>>,
    pub notes: Vec<String>,
}

/// Draws the heatmap; returns the PNG bytes.
pub(crate) fn heatmap(hm: &Heatmap) -> Result<Vec<u8>, PlotError> {
    const LABEL: u32 = 15;
    const CELL: u32 = 14;
    let rows: Vec<String> = hm.rows.iter().map(|r| shorten(r, 36)).collect();
    let cols: Vec<String> = hm.cols.iter().map(|c| shorten(c, 36)).collect();
    let row_w = rows
        .iter()
        .map(|r| text_size(r, LABEL).0)
        .max()
        .unwrap_or(0)
        + 22;
    let cell_text_w = hm
        .cells
        .iter()
        .flatten()
        .map(|c| text_size(&c.text, CELL).0)
        .max()
        .unwrap_or(0);
    let cell_w = (cell_text_w + 18).max(78);
    let cell_h = 34;
    let col_w = cols
        .iter()
        .map(|c| text_size(c, LABEL).0)
        .max()
        .unwrap_or(0);
    let rotate = col_w > cell_w - 8;
    let header_h = if rotate {
        col_w + 16
    } else {
        LABEL as i32 + 18
    };
    let title = "Selected test metric per experiment and job";
    let subtitle = "colour: normalised per job (column) from its worst to its best experiment";
    let title_h = 66;
    let legend_h = 44 + 22 * hm.notes.len() as i32 + 12;
    let grid_w = cell_w * cols.len() as i32;
    let grid_h = cell_h * rows.len() as i32;
    let text_w = [title]
        .iter()
        .map(|t| text_size(t, 20).0)
        .chain(std::iter::once(text_size(subtitle, 15).0))
        .chain(hm.notes.iter().map(|n| text_size(n, 14).0))
        .max()
        .unwrap_or(0);
    let w = (row_w + grid_w + 28).max(text_w + 40).max(480) as u32;
    let h = (title_h + header_h + grid_h + legend_h) as u32;
    let mut buf = vec![255u8; (w * h * 3) as usize];
    {
        let root = canvas(&mut buf, (w, h))?.into_drawing_area();
        root.fill(&WHITE)?;
        root.draw(&Text::new(
            title,
            (16, 14),
            font(20).color(&INK).pos(Pos::new(HPos::Left, VPos::Top)),
        ))?;
        root.draw(&Text::new(
            subtitle,
            (16, 42),
            font(15).color(&MUTED).pos(Pos::new(HPos::Left, VPos::Top)),
        ))?;
        let gx = row_w;
        let gy = title_h + header_h;
        for (ci, c) in cols.iter().enumerate() {
            let cx = gx + ci as i32 * cell_w + cell_w / 2;
            let style = font(LABEL).color(&INK);
            if rotate {
                root.draw(&Text::new(
                    c.clone(),
                    (cx, gy - 8),
                    style
                        .transform(FontTransform::Rotate270)
                        .pos(Pos::new(HPos::Left, VPos::Center)),
                ))?;
            } else {
                root.draw(&Text::new(
                    c.clone(),
                    (cx, gy - 8),
                    style.pos(Pos::new(HPos::Center, VPos::Bottom)),
                ))?;
            }
        }
        for (ri, r) in rows.iter().enumerate() {
            let cy = gy + ri as i32 * cell_h + cell_h / 2;
            root.draw(&Text::new(
                r.clone(),
                (gx - 10, cy),
                font(LABEL)
                    .color(&INK)
                    .pos(Pos::new(HPos::Right, VPos::Center)),
            ))?;
            for (ci, cell) in hm.cells.get(ri).into_iter().flatten().enumerate() {
                let x = gx + ci as i32 * cell_w;
                let y = gy + ri as i32 * cell_h;
                let fill = cell.t.map(colormap).unwrap_or(MISSING);
                root.draw(&Rectangle::new(
                    [(x + 1, y + 1), (x + cell_w - 1, y + cell_h - 1)],
                    fill.filled(),
                ))?;
                let size = if cell.t.is_some() { CELL } else { CELL - 1 };
                root.draw(&Text::new(
                    cell.text.clone(),
                    (x + cell_w / 2, y + cell_h / 2),
                    font(size)
                        .color(&ink_on(fill))
                        .pos(Pos::new(HPos::Center, VPos::Center)),
                ))?;
            }
        }
        // Colour bar.
        let ly = gy + grid_h + 22;
        let (bx, bw, bh) = (16 + text_size("worse", 14).0 + 10, 240, 14);
        root.draw(&Text::new(
            "worse",
            (16, ly + bh / 2),
            font(14).color(&INK).pos(Pos::new(HPos::Left, VPos::Center)),
        ))?;
        for i in 0..bw {
            let c = colormap(i as f64 / (bw - 1) as f64);
            root.draw(&PathElement::new(
                vec![(bx + i, ly), (bx + i, ly + bh)],
                c.stroke_width(1),
            ))?;
        }
        root.draw(&Rectangle::new(
            [(bx - 1, ly - 1), (bx + bw, ly + bh + 1)],
            MUTED.stroke_width(1),
        ))?;
        root.draw(&Text::new(
            "better",
            (bx + bw + 10, ly + bh / 2),
            font(14).color(&INK).pos(Pos::new(HPos::Left, VPos::Center)),
        ))?;
        let gx2 = bx + bw + 10 + text_size("better", 14).0 + 24;
        root.draw(&Rectangle::new(
            [(gx2, ly), (gx2 + 26, ly + bh)],
            MISSING.filled(),
        ))?;
        root.draw(&Text::new(
            "no result",
            (gx2 + 34, ly + bh / 2),
            font(14).color(&INK).pos(Pos::new(HPos::Left, VPos::Center)),
        ))?;
        for (i, note) in hm.notes.iter().enumerate() {
            root.draw(&Text::new(
                note.clone(),
                (16, ly + bh + 14 + 22 * i as i32),
                font(14).color(&MUTED).pos(Pos::new(HPos::Left, VPos::Top)),
            ))?;
        }
        root.present()?;
    }
    encode_png(buf, w, h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-9)
    }

    #[test]
    fn statistics() {
        let x = [1.0, 2.0, 3.0, 4.0];
        let y = [2.0, 4.1, 5.9, 8.0];
        let (a, b) = least_squares(&x, &y).expect("fit");
        assert!(
            (a - 1.98).abs() < 1e-9 && (b - 0.05).abs() < 1e-9,
            "{a} {b}"
        );
        assert!(pearson(&x, &y).is_some_and(|r| r > 0.99));
        // Monotone but not linear: Spearman 1, Pearson < 1.
        let y = [1.0, 10.0, 100.0, 1000.0];
        assert!(close(spearman(&x, &y), 1.0));
        assert!(pearson(&x, &y).is_some_and(|r| r < 0.95));
        assert!(close(spearman(&x, &[4.0, 3.0, 2.0, 1.0]), -1.0));
        assert_eq!(ranks(&[3.0, 1.0, 3.0, 2.0]), [3.5, 1.0, 3.5, 2.0]);
        assert_eq!(pearson(&[1.0, 1.0], &[1.0, 2.0]), None);
        assert_eq!(least_squares(&[1.0], &[1.0]), None);
        assert_eq!(signed(-0.5), "−0.500");
    }

    #[test]
    fn colours() {
        assert_eq!(colormap(0.0), RGBColor(0x31, 0x36, 0x95));
        assert_eq!(colormap(1.0), RGBColor(0xa5, 0x00, 0x26));
        assert_eq!(colormap(0.5), RGBColor(0xff, 0xff, 0xbf));
        assert_eq!(colormap(f64::NAN), colormap(0.5));
        assert_eq!(ink_on(colormap(0.0)), WHITE);
        assert_ne!(ink_on(colormap(0.5)), WHITE);
    }

    #[test]
    fn labels_avoid_each_other() {
        let anchors = [(100, 100), (104, 100), (108, 100)];
        let sizes = [(60, 16); 3];
        let spots = place_labels(&anchors, &sizes, (0, 0, 400, 400), None);
        let rects: Vec<Rect> = spots
            .iter()
            .zip(sizes)
            .map(|(((x, y), _), (w, h))| (*x, *y, x + w, y + h))
            .collect();
        for i in 0..rects.len() {
            for j in i + 1..rects.len() {
                assert_eq!(overlap(rects[i], rects[j]), 0, "{rects:?}");
            }
        }
    }
}
