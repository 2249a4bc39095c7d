//! Renders a [`Figure`] as SVG text.

use std::fmt::Write;

use super::figure::{Anchor, Figure, Prim};

/// A coordinate with at most two decimals and no trailing zeros.
fn num(v: f64) -> String {
    let s = format!("{v:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".to_string()
    } else {
        s.to_string()
    }
}

fn points(pts: &[(f64, f64)]) -> String {
    pts.iter().map(|&(x, y)| format!("{},{}", num(x), num(y))).collect::<Vec<_>>().join(" ")
}

/// Escapes text for an XML text node or attribute.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

/// The figure as a standalone SVG document.
pub fn render(fig: &Figure) -> String {
    let (w, h) = (fig.width, fig.height);
    let mut s = format!(r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}">"#);
    s.push('\n');
    for p in &fig.prims {
        // Writing to a String cannot fail.
        let _ = match p {
            Prim::Polyline { points: pts, color, width } => writeln!(
                s,
                r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="{}" stroke-linejoin="round" stroke-linecap="round"/>"#,
                points(pts),
                color.hex(),
                num(*width)
            ),
            Prim::Polygon { points: pts, color, opacity } => {
                writeln!(s, r#"<polygon points="{}" fill="{}" fill-opacity="{}" stroke="none"/>"#, points(pts), color.hex(), num(*opacity))
            }
            Prim::Rect { x, y, w, h, fill, stroke } => {
                let fill = fill.map_or("none".to_string(), |c| c.hex());
                let stroke = stroke.map_or(String::new(), |c| format!(r#" stroke="{}" stroke-width="1""#, c.hex()));
                writeln!(s, r#"<rect x="{}" y="{}" width="{}" height="{}" fill="{fill}"{stroke}/>"#, num(*x), num(*y), num(*w), num(*h))
            }
            Prim::Text { x, y, text, size, anchor, color, vertical } => {
                let anchor = match anchor {
                    Anchor::Start => "start",
                    Anchor::Middle => "middle",
                    Anchor::End => "end",
                };
                // `y` is the middle of the capitals; a sans-serif capital is about 0.7 em tall.
                let baseline = y + 0.35 * size;
                let rotate = if *vertical { format!(r#" transform="rotate(-90 {} {})""#, num(*x), num(*y)) } else { String::new() };
                writeln!(
                    s,
                    r#"<text x="{}" y="{}" font-family="sans-serif" font-size="{}" text-anchor="{anchor}" fill="{}"{rotate}>{}</text>"#,
                    num(*x),
                    num(baseline),
                    num(*size),
                    color.hex(),
                    escape(text)
                )
            }
        };
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plot::figure::Rgb;

    #[test]
    fn primitives_become_svg_elements() {
        let fig = Figure {
            width: 100,
            height: 50,
            prims: vec![
                Prim::Polyline { points: vec![(0.0, 1.5), (10.25, -0.001)], color: Rgb(255, 0, 16), width: 2.0 },
                Prim::Polygon { points: vec![(0.0, 0.0), (1.0, 0.0), (1.0, 1.0)], color: Rgb(0, 0, 0), opacity: 0.2 },
                Prim::Text {
                    x: 5.0,
                    y: 10.0,
                    text: "a<b & c".into(),
                    size: 14.0,
                    anchor: Anchor::End,
                    color: Rgb(1, 2, 3),
                    vertical: true,
                },
            ],
        };
        let s = render(&fig);
        assert!(s.starts_with("<svg ") && s.ends_with("</svg>\n"), "{s}");
        assert!(s.contains(r##"<polyline points="0,1.5 10.25,0" fill="none" stroke="#ff0010" stroke-width="2""##), "{s}");
        assert!(s.contains(r##"fill="#000000" fill-opacity="0.2""##), "{s}");
        assert!(s.contains(r#"text-anchor="end""#) && s.contains("rotate(-90 5 10)") && s.contains(">a&lt;b &amp; c</text>"), "{s}");
    }
}
