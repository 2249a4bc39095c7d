//! The figure, laid out once as a list of drawing primitives that svg.rs and raster.rs render:
//! a title, a legend, and panels side by side that share the steps axis.

use super::axis::{self, Axis, Labels};
use super::data::Band;
use super::font;

/// An opaque colour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rgb(pub u8, pub u8, pub u8);

impl Rgb {
    /// `#rrggbb`.
    pub fn hex(self) -> String {
        format!("#{:02x}{:02x}{:02x}", self.0, self.1, self.2)
    }
}

/// One colour per estimator, in order of first appearance (matplotlib's "tab10"); more than ten
/// estimators reuse them.
pub const PALETTE: [Rgb; 10] = [
    Rgb(0x1f, 0x77, 0xb4),
    Rgb(0xff, 0x7f, 0x0e),
    Rgb(0x2c, 0xa0, 0x2c),
    Rgb(0xd6, 0x27, 0x28),
    Rgb(0x94, 0x67, 0xbd),
    Rgb(0x8c, 0x56, 0x4b),
    Rgb(0xe3, 0x77, 0xc2),
    Rgb(0x7f, 0x7f, 0x7f),
    Rgb(0xbc, 0xbd, 0x22),
    Rgb(0x17, 0xbe, 0xcf),
];

pub const WHITE: Rgb = Rgb(255, 255, 255);
const INK: Rgb = Rgb(0x22, 0x22, 0x22);
const FRAME: Rgb = Rgb(0x55, 0x55, 0x55);
const GRID: Rgb = Rgb(0xe6, 0xe6, 0xe6);

const TICK_LEN: f64 = 5.0;
const BAND_OPACITY: f64 = 0.2;
const LINE_WIDTH: f64 = 2.0;

/// Font sizes and spacing in pixels: text at twice the bitmap font's size, or at its own size
/// in figures too small for that.
struct Style {
    title: f64,
    label: f64,
    tick: f64,
    legend: f64,
    margin: f64,
    legend_row: f64,
    swatch: f64,
    legend_gap: f64,
}

impl Style {
    fn for_size(w: f64, h: f64) -> Style {
        let k = if w >= 760.0 && h >= 360.0 { 1.0 } else { 0.5 };
        Style {
            title: 22.0 * k,
            label: 16.0 * k,
            tick: 14.0 * k,
            legend: 15.0 * k,
            margin: 14.0 * k,
            legend_row: 26.0 * k,
            swatch: 26.0 * k,
            legend_gap: 30.0 * k,
        }
    }

    fn entry_width(&self, e: &LegendEntry) -> f64 {
        self.swatch + 8.0 + font::text_width(&e.label, self.legend)
    }
}

/// `s` at `size`, or else at `smaller`, cut short with "..." if it is still wider than `room`.
fn fit(s: &str, size: f64, smaller: f64, room: f64) -> (String, f64) {
    if font::text_width(s, size) <= room {
        return (s.to_string(), size);
    }
    let mut s = s.to_string();
    if font::text_width(&s, smaller) > room {
        while !s.is_empty() && font::text_width(&s, smaller) + font::text_width("...", smaller) > room {
            s.pop();
        }
        s.push_str("...");
    }
    (s, smaller)
}

/// Horizontal alignment of text on its x.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Anchor {
    Start,
    Middle,
    End,
}

/// A drawing primitive, in pixels from the top-left corner.
#[derive(Clone, Debug)]
pub enum Prim {
    /// An open polyline with round joins and caps.
    Polyline { points: Vec<(f64, f64)>, color: Rgb, width: f64 },
    /// A filled polygon (non-zero winding), blended at `opacity`.
    Polygon { points: Vec<(f64, f64)>, color: Rgb, opacity: f64 },
    /// An axis-aligned rectangle, filled and/or outlined with a 1-pixel line.
    Rect { x: f64, y: f64, w: f64, h: f64, fill: Option<Rgb>, stroke: Option<Rgb> },
    /// A line of text whose capitals are centred vertically on `y` (horizontally on `x` when
    /// `vertical`: the text then reads bottom to top).
    Text { x: f64, y: f64, text: String, size: f64, anchor: Anchor, color: Rgb, vertical: bool },
}

/// A figure: its size in pixels and its primitives, painted in order.
#[derive(Clone, Debug)]
pub struct Figure {
    pub width: u32,
    pub height: u32,
    pub prims: Vec<Prim>,
}

/// One panel: the curves of each estimator (colour, band), its y-axis title and scale.
pub struct Panel<'a> {
    pub y_title: &'a str,
    pub log: bool,
    pub bands: Vec<(Rgb, &'a Band)>,
}

/// One legend entry.
pub struct LegendEntry {
    pub label: String,
    pub color: Rgb,
}

fn text(x: f64, y: f64, s: &str, size: f64, anchor: Anchor) -> Prim {
    Prim::Text { x, y, text: s.to_string(), size, anchor, color: INK, vertical: false }
}

fn segment(a: (f64, f64), b: (f64, f64), color: Rgb) -> Prim {
    Prim::Polyline { points: vec![a, b], color, width: 1.0 }
}

/// The centre of the pixel `v` falls in, so that 1-pixel lines are crisp.
fn snap(v: f64) -> f64 {
    v.floor() + 0.5
}

/// Packs legend entries into rows no wider than `width`.
fn legend_rows<'a>(legend: &'a [LegendEntry], width: f64, st: &Style) -> Vec<Vec<&'a LegendEntry>> {
    let mut rows: Vec<Vec<&LegendEntry>> = Vec::new();
    let mut used = 0.0;
    for e in legend {
        match rows.last_mut() {
            Some(row) if used + st.legend_gap + st.entry_width(e) <= width => {
                used += st.legend_gap + st.entry_width(e);
                row.push(e);
            }
            _ => {
                used = st.entry_width(e);
                rows.push(vec![e]);
            }
        }
    }
    rows
}

/// Smallest and largest value over the bands (means, lows, highs), if there is any.
fn value_range(bands: &[(Rgb, &Band)]) -> Option<(f64, f64)> {
    let vals = bands.iter().flat_map(|(_, b)| b.lo.iter().chain(&b.hi).chain(&b.mean));
    vals.fold(None, |r, &v| Some(r.map_or((v, v), |(lo, hi): (f64, f64)| (lo.min(v), hi.max(v)))))
}

fn y_axis(panel: &Panel, len_px: f64, tick: f64) -> Axis {
    let range = value_range(&panel.bands);
    if panel.log {
        let (lo, hi) = range.unwrap_or((0.1, 10.0));
        axis::log(lo, hi, 0.04, len_px)
    } else {
        let (lo, hi) = range.unwrap_or((0.0, 1.0));
        axis::linear(lo, hi, 0.04, false, len_px, false, Labels::Plain, tick)
    }
}

/// Lays out the figure: `title` on top, the legend under it (wrapped into rows), then the
/// panels side by side, all against the steps axis titled `x_title`.
pub fn build(width: u32, height: u32, title: &str, legend: &[LegendEntry], x_title: &str, panels: &[Panel]) -> Figure {
    let (w, h) = (width as f64, height as f64);
    let st = Style::for_size(w, h);
    let m = st.margin;
    let mut prims = vec![Prim::Rect { x: 0.0, y: 0.0, w, h, fill: Some(WHITE), stroke: None }];
    let title_cap = font::cap_height(st.title);
    let (title, title_size) = fit(title, st.title, st.label, w - 2.0 * m);
    prims.push(text(w / 2.0, m + title_cap / 2.0, &title, title_size, Anchor::Middle));

    let legend_top = m + title_cap + 12.0 * st.legend_row / 26.0;
    let rows = legend_rows(legend, w - 2.0 * m, &st);
    for (r, row) in rows.iter().enumerate() {
        let cy = (legend_top + (r as f64 + 0.5) * st.legend_row).round();
        let total = row.iter().map(|e| st.entry_width(e)).sum::<f64>() + st.legend_gap * (row.len() as f64 - 1.0);
        let mut x = ((w - total) / 2.0).round();
        let half_h = (font::cap_height(st.legend) / 2.0).round();
        for e in row {
            let (x0, x1, y0, y1) = (x, x + st.swatch, cy - half_h, cy + half_h);
            let points = vec![(x0, y0), (x1, y0), (x1, y1), (x0, y1)];
            prims.push(Prim::Polygon { points, color: e.color, opacity: BAND_OPACITY });
            prims.push(Prim::Polyline { points: vec![(x0, cy), (x1, cy)], color: e.color, width: 3.0 });
            prims.push(text(x1 + 8.0, cy, &e.label, st.legend, Anchor::Start));
            x += st.entry_width(e) + st.legend_gap;
        }
    }

    let tick_cap = font::cap_height(st.tick);
    let label_cap = font::cap_height(st.label);
    let descent = (label_cap * 2.0 / 7.0).ceil();
    let y0 = snap(legend_top + rows.len() as f64 * st.legend_row + m);
    let y1 = snap(h - m - descent - label_cap - 8.0 - tick_cap - TICK_LEN - 4.0).max(y0 + 20.0);
    let y_axes: Vec<Axis> = panels.iter().map(|p| y_axis(p, y1 - y0, st.tick)).collect();
    let half = w / panels.len().max(1) as f64;
    let columns: Vec<(f64, f64)> = y_axes
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let widest = a.major.iter().map(|(_, s)| font::text_width(s, st.tick)).fold(0.0, f64::max);
            let x0 = i as f64 * half + m + label_cap + descent + 8.0 + widest + TICK_LEN + 4.0;
            (snap(x0), snap((i + 1) as f64 * half - 2.0 * m))
        })
        .collect();
    let narrowest = columns.iter().map(|(a, b)| b - a).fold(f64::INFINITY, f64::min);
    let xs = panels.iter().flat_map(|p| p.bands.iter().flat_map(|(_, b)| b.x.iter().copied()));
    let (xmin, xmax) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (xmin, xmax) = if xmin <= xmax { (xmin, xmax) } else { (0.0, 1.0) };
    let x_axis = axis::linear(xmin, xmax, 0.02, true, narrowest, true, Labels::Steps, st.tick);

    for (i, panel) in panels.iter().enumerate() {
        let (x0, x1) = columns[i];
        let area = Area { x0, y0, x1, y1 };
        draw_panel(&mut prims, panel, &x_axis, &y_axes[i], &area, st.tick);
        let ticks_bottom = y1 + TICK_LEN + 4.0 + tick_cap;
        prims.push(text((x0 + x1) / 2.0, ticks_bottom + 8.0 + label_cap / 2.0, x_title, st.label, Anchor::Middle));
        let x = i as f64 * half + m + label_cap / 2.0;
        let (y_title, size) = fit(panel.y_title, st.label, st.tick.min(8.0), y1 - y0);
        prims.push(Prim::Text { x, y: (y0 + y1) / 2.0, text: y_title, size, anchor: Anchor::Middle, color: INK, vertical: true });
    }
    Figure { width, height, prims }
}

/// The plotting area of a panel, in pixels.
struct Area {
    x0: f64,
    y0: f64,
    x1: f64,
    y1: f64,
}

fn draw_panel(prims: &mut Vec<Prim>, panel: &Panel, xa: &Axis, ya: &Axis, a: &Area, tick: f64) {
    let (x0, y0, x1, y1) = (a.x0, a.y0, a.x1, a.y1);
    let tick_x = |t: f64| snap(x0 + xa.frac_of_tick(t) * (x1 - x0));
    let tick_y = |t: f64| snap(y1 - ya.frac_of_tick(t) * (y1 - y0));
    for &(t, _) in &xa.major {
        prims.push(segment((tick_x(t), y0), (tick_x(t), y1), GRID));
    }
    for &(t, _) in &ya.major {
        prims.push(segment((x0, tick_y(t)), (x1, tick_y(t)), GRID));
    }

    let point = |x: f64, y: f64| (x0 + xa.frac(x) * (x1 - x0), y1 - ya.frac(y) * (y1 - y0));
    for &(color, band) in &panel.bands {
        if band.lo.iter().zip(&band.hi).any(|(lo, hi)| hi > lo) {
            let upper = band.x.iter().zip(&band.hi).map(|(&x, &y)| point(x, y));
            let lower = band.x.iter().zip(&band.lo).rev().map(|(&x, &y)| point(x, y));
            prims.push(Prim::Polygon { points: upper.chain(lower).collect(), color, opacity: BAND_OPACITY });
        }
    }
    for &(color, band) in &panel.bands {
        let mut points: Vec<(f64, f64)> = band.x.iter().zip(&band.mean).map(|(&x, &y)| point(x, y)).collect();
        // A lone point is drawn as a dot big enough to see.
        let width = if points.len() == 1 { 3.0 * LINE_WIDTH } else { LINE_WIDTH };
        if points.len() == 1 {
            points.push(points[0]);
        }
        if !points.is_empty() {
            prims.push(Prim::Polyline { points, color, width });
        }
    }

    prims.push(Prim::Rect { x: x0, y: y0, w: x1 - x0, h: y1 - y0, fill: None, stroke: Some(FRAME) });
    let tick_cap = font::cap_height(tick);
    for (t, label) in &xa.major {
        let x = tick_x(*t);
        prims.push(segment((x, y1), (x, y1 + TICK_LEN), FRAME));
        prims.push(text(x, y1 + TICK_LEN + 4.0 + tick_cap / 2.0, label, tick, Anchor::Middle));
    }
    for (t, label) in &ya.major {
        let y = tick_y(*t);
        prims.push(segment((x0 - TICK_LEN, y), (x0, y), FRAME));
        prims.push(text(x0 - TICK_LEN - 4.0, y, label, tick, Anchor::End));
    }
    for &t in &ya.minor {
        let y = tick_y(t);
        prims.push(segment((x0 - 3.0, y), (x0, y), FRAME));
    }
}
