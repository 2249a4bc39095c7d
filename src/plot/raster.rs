//! A small software rasterizer that renders a [`Figure`] to RGB pixels: anti-aliased lines (by
//! distance to each segment), polygons filled by scanlines with 4 sub-scanlines and exact
//! horizontal coverage, alpha blending, and text in the built-in bitmap font.

use super::figure::{Anchor, Figure, Prim, Rgb};
use super::font;

/// Sub-scanlines per pixel row when filling polygons.
const SUB: usize = 4;

/// An RGB image being painted, with a coverage buffer: each primitive first accumulates its
/// coverage per pixel, then blends its colour once, so overlapping parts of one polyline or
/// polygon are not painted twice.
pub struct Canvas {
    pub width: usize,
    pub height: usize,
    /// Row-major RGB, 3 bytes per pixel.
    pub rgb: Vec<u8>,
    cover: Vec<f32>,
    touched: Vec<usize>,
}

impl Canvas {
    /// A white canvas.
    pub fn new(width: usize, height: usize) -> Self {
        Canvas { width, height, rgb: vec![255; width * height * 3], cover: vec![0.0; width * height], touched: Vec::new() }
    }

    fn index(&self, x: i64, y: i64) -> Option<usize> {
        (x >= 0 && y >= 0 && (x as usize) < self.width && (y as usize) < self.height).then(|| y as usize * self.width + x as usize)
    }

    /// Adds coverage `c` at a pixel: the maximum with what is there (`max`), or the sum.
    fn add_cover(&mut self, x: i64, y: i64, c: f32, max: bool) {
        if c <= 0.0 {
            return;
        }
        if let Some(i) = self.index(x, y) {
            if self.cover[i] == 0.0 {
                self.touched.push(i);
            }
            self.cover[i] = if max { self.cover[i].max(c) } else { self.cover[i] + c };
        }
    }

    /// Blends `color` at `alpha` times the accumulated coverage into every touched pixel, and
    /// clears the coverage.
    fn flush(&mut self, color: Rgb, alpha: f64) {
        let touched = std::mem::take(&mut self.touched);
        for &i in &touched {
            let a = self.cover[i].min(1.0) * alpha as f32;
            self.cover[i] = 0.0;
            for (k, src) in [color.0, color.1, color.2].into_iter().enumerate() {
                let dst = &mut self.rgb[3 * i + k];
                *dst = (*dst as f32 * (1.0 - a) + src as f32 * a).round() as u8;
            }
        }
        self.touched = touched;
        self.touched.clear();
    }

    fn put(&mut self, x: i64, y: i64, color: Rgb) {
        if let Some(i) = self.index(x, y) {
            self.rgb[3 * i..3 * i + 3].copy_from_slice(&[color.0, color.1, color.2]);
        }
    }

    /// Coverage of a round-capped segment of half-width `r`.
    fn segment(&mut self, a: (f64, f64), b: (f64, f64), r: f64) {
        let pad = r + 1.0;
        let x_lo = (a.0.min(b.0) - pad).floor().max(0.0) as i64;
        let x_hi = (a.0.max(b.0) + pad).ceil().min(self.width as f64 - 1.0) as i64;
        let y_lo = (a.1.min(b.1) - pad).floor().max(0.0) as i64;
        let y_hi = (a.1.max(b.1) + pad).ceil().min(self.height as f64 - 1.0) as i64;
        let (dx, dy) = (b.0 - a.0, b.1 - a.1);
        let len2 = dx * dx + dy * dy;
        for y in y_lo..=y_hi {
            for x in x_lo..=x_hi {
                let (px, py) = (x as f64 + 0.5, y as f64 + 0.5);
                let t = if len2 > 0.0 { (((px - a.0) * dx + (py - a.1) * dy) / len2).clamp(0.0, 1.0) } else { 0.0 };
                let d = ((px - a.0 - t * dx).powi(2) + (py - a.1 - t * dy).powi(2)).sqrt();
                self.add_cover(x, y, (r + 0.5 - d).clamp(0.0, 1.0) as f32, true);
            }
        }
    }

    /// A polyline `width` pixels wide (at least 1), with round joins and caps.
    pub fn polyline(&mut self, points: &[(f64, f64)], width: f64, color: Rgb) {
        let r = width.max(1.0) / 2.0;
        if let [p] = points {
            self.segment(*p, *p, r);
        }
        for s in points.windows(2) {
            self.segment(s[0], s[1], r);
        }
        self.flush(color, 1.0);
    }

    /// Adds `weight` times the horizontal coverage of [xa, xb) on row `y`.
    fn span(&mut self, y: i64, xa: f64, xb: f64, weight: f32) {
        let (xa, xb) = (xa.max(0.0), xb.min(self.width as f64));
        if xb <= xa {
            return;
        }
        for x in xa.floor() as i64..xb.ceil() as i64 {
            let c = (xb.min(x as f64 + 1.0) - xa.max(x as f64)).max(0.0);
            self.add_cover(x, y, c as f32 * weight, false);
        }
    }

    /// A filled polygon (non-zero winding) blended at `opacity`.
    pub fn polygon(&mut self, points: &[(f64, f64)], color: Rgb, opacity: f64) {
        if points.len() < 3 {
            return;
        }
        let y_lo = points.iter().map(|p| p.1).fold(f64::INFINITY, f64::min).floor().max(0.0) as i64;
        let y_hi = points.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max).ceil().min(self.height as f64) as i64;
        let mut crossings: Vec<(f64, i32)> = Vec::new();
        for row in y_lo..y_hi {
            for s in 0..SUB {
                let sy = row as f64 + (s as f64 + 0.5) / SUB as f64;
                crossings.clear();
                for (i, &a) in points.iter().enumerate() {
                    let b = points[(i + 1) % points.len()];
                    if (a.1 <= sy) != (b.1 <= sy) {
                        let x = a.0 + (sy - a.1) / (b.1 - a.1) * (b.0 - a.0);
                        crossings.push((x, if b.1 > a.1 { 1 } else { -1 }));
                    }
                }
                crossings.sort_by(|p, q| p.0.total_cmp(&q.0));
                let (mut winding, mut start) = (0, 0.0);
                for &(x, dir) in &crossings {
                    if winding == 0 {
                        start = x;
                    }
                    winding += dir;
                    if winding == 0 {
                        self.span(row, start, x, 1.0 / SUB as f32);
                    }
                }
            }
        }
        self.flush(color, opacity);
    }

    /// Text in the bitmap font at the integer scale for `size`, capitals centred on `y` (or, when
    /// `vertical`, reading upwards with capitals centred on `x`).
    pub fn text(&mut self, x: f64, y: f64, text: &str, size: f64, anchor: Anchor, color: Rgb, vertical: bool) {
        let scale = font::scale(size) as i64;
        let width = font::text_width(text, size);
        let along = match anchor {
            Anchor::Start => 0.0,
            Anchor::Middle => -width / 2.0,
            Anchor::End => -width,
        };
        let across = -font::cap_height(size) / 2.0;
        // Top-left corner of the first glyph in text coordinates (along the line, down from the
        // cap line), then placed on the canvas.
        let (ox, oy) = if vertical {
            ((x + across).round() as i64, (y - along).round() as i64)
        } else {
            ((x + along).round() as i64, (y + across).round() as i64)
        };
        for (i, c) in text.chars().enumerate() {
            let bits = font::glyph(c);
            for row in 0..font::GLYPH_H {
                for col in 0..font::GLYPH_W {
                    if !font::ink(bits, col, row) {
                        continue;
                    }
                    let lx = (i as i64 * font::ADVANCE as i64 + col as i64) * scale;
                    let ly = row as i64 * scale;
                    for d in 0..scale * scale {
                        let (u, v) = (lx + d % scale, ly + d / scale);
                        if vertical {
                            self.put(ox + v, oy - u - 1, color);
                        } else {
                            self.put(ox + u, oy + v, color);
                        }
                    }
                }
            }
        }
    }
}

/// Paints the figure; returns row-major RGB bytes.
pub fn render(fig: &Figure) -> Vec<u8> {
    let mut c = Canvas::new(fig.width as usize, fig.height as usize);
    for p in &fig.prims {
        match p {
            Prim::Polyline { points, color, width } => c.polyline(points, *width, *color),
            Prim::Polygon { points, color, opacity } => c.polygon(points, *color, *opacity),
            Prim::Rect { x, y, w, h, fill, stroke } => {
                let corners = [(*x, *y), (x + w, *y), (x + w, y + h), (*x, y + h)];
                if let Some(f) = fill {
                    c.polygon(&corners, *f, 1.0);
                }
                if let Some(s) = stroke {
                    let mut ring = corners.to_vec();
                    ring.push(corners[0]);
                    c.polyline(&ring, 1.0, *s);
                }
            }
            Prim::Text { x, y, text, size, anchor, color, vertical } => c.text(*x, *y, text, *size, *anchor, *color, *vertical),
        }
    }
    c.rgb
}

#[cfg(test)]
mod tests {
    use super::*;

    const RED: Rgb = Rgb(255, 0, 0);

    fn at(c: &Canvas, x: usize, y: usize) -> [u8; 3] {
        let i = 3 * (y * c.width + x);
        [c.rgb[i], c.rgb[i + 1], c.rgb[i + 2]]
    }

    #[test]
    fn a_one_pixel_line_on_a_pixel_centre_is_crisp() {
        let mut c = Canvas::new(20, 20);
        c.polyline(&[(2.5, 5.5), (17.5, 5.5)], 1.0, RED);
        assert_eq!(at(&c, 10, 5), [255, 0, 0]);
        assert_eq!(at(&c, 10, 4), [255, 255, 255]);
        assert_eq!(at(&c, 10, 6), [255, 255, 255]);
    }

    #[test]
    fn a_square_is_filled_exactly_and_blended_at_its_opacity() {
        let mut c = Canvas::new(10, 10);
        c.polygon(&[(2.0, 2.0), (6.0, 2.0), (6.0, 6.0), (2.0, 6.0)], RED, 0.5);
        assert_eq!(at(&c, 3, 3), [255, 128, 128]);
        assert_eq!(at(&c, 6, 3), [255, 255, 255]);
        assert_eq!(at(&c, 3, 1), [255, 255, 255]);
        // Half a pixel covered: a quarter of the colour.
        let mut c = Canvas::new(10, 10);
        c.polygon(&[(2.0, 2.0), (6.5, 2.0), (6.5, 6.0), (2.0, 6.0)], RED, 0.5);
        assert_eq!(at(&c, 6, 3), [255, 191, 191]);
    }

    #[test]
    fn text_is_drawn_in_the_font_at_its_scale() {
        let mut c = Canvas::new(40, 30);
        // 'I' at scale 2: its top bar spans columns 1..4 of row 0.
        c.text(10.0, 15.0, "I", 16.0, Anchor::Start, RED, false);
        let top = (15.0 - font::cap_height(16.0) / 2.0) as usize;
        assert_eq!(at(&c, 12, top), [255, 0, 0]);
        assert_eq!(at(&c, 10, top), [255, 255, 255]);
        let painted = c.rgb.chunks(3).filter(|p| p == &[255, 0, 0]).count();
        assert_eq!(painted, (3 + 5 + 3) * 4);
    }
}
