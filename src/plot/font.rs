//! A small built-in bitmap font: 5×9 glyphs (7 rows above the baseline, 2 for descenders) for
//! printable ASCII, drawn at an integer scale.

/// Glyph columns.
pub const GLYPH_W: u32 = 5;
/// Glyph rows: rows 0..7 from the cap line down to the baseline, then two descender rows.
pub const GLYPH_H: u32 = 9;
/// Rows from the cap line to the baseline.
pub const CAP_H: u32 = 7;
/// Horizontal advance per character, in glyph pixels (one column of space).
pub const ADVANCE: u32 = 6;

/// One glyph per character 32..=126: bit `row * 5 + col` is set where the pixel is ink (row 0 at
/// the top, column 0 at the left).
#[rustfmt::skip]
const GLYPHS: [u64; 95] = [
    0x000000000000, 0x000100421084, 0x00000000294A, 0x000295F57D4A, 0x00011F4717C4, 0x000632222263, //  !"#$%
    0x000593511526, 0x000000000884, 0x000208210888, 0x000088842082, 0x000009575480, 0x0000084F9080, // &'()*+
    0x00110C000000, 0x000000070000, 0x00018C000000, 0x000002222200, 0x0003A33AE62E, 0x0003884210C4, // ,-./01
    0x0007C444422E, 0x0003A304111F, 0x000211F4A988, 0x0003A3083C3F, 0x0003A317844C, 0x00008422221F, // 234567
    0x0003A317462E, 0x0001910F462E, 0x00000C6018C0, 0x00110C031800, 0x000208208888, 0x000001F07C00, // 89:;<=
    0x000088882082, 0x00010044422E, 0x0003AB5B422E, 0x0004631FC62E, 0x0003E317C62F, 0x0003A210862E, // >?@ABC
    0x0001D318C527, 0x0007C217843F, 0x00004217843F, 0x0007A31E862E, 0x0004631FC631, 0x00038842108E, // DEFGHI
    0x00019284211C, 0x000452519531, 0x0007C2108421, 0x0004631AD771, 0x0004639ACE31, 0x0003A318C62E, // JKLMNO
    0x00004217C62F, 0x00059358C62E, 0x00045257C62F, 0x0003E107043E, 0x00010842109F, 0x0003A318C631, // PQRSTU
    0x000108A54631, 0x0002AB5AC631, 0x000462A22A31, 0x000108454631, 0x0007C222221F, 0x00038421084E, // VWXYZ[
    0x000020820820, 0x00039084210E, 0x000000004544, 0x00F800000000, 0x000000002082, 0x0007A3E83800, // \]^_`a
    0x0003E319B421, 0x0003A210B800, 0x0007A31CDA10, 0x000383F8B800, 0x000084238A4C, 0x0E85B318F800, // bcdefg
    0x00046319B421, 0x000388421804, 0x064A10843008, 0x00024A32A421, 0x000388421086, 0x00056B5AAC00, // hijklm
    0x00046319B400, 0x0003A318B800, 0x010BE318BC00, 0x1087A318F800, 0x00004219B400, 0x0003E0E0F800, // nopqrs
    0x000324211C42, 0x0005B318C400, 0x00011518C400, 0x0002AB58C400, 0x000454454400, 0x0E85B318C400, // tuvwxy
    0x0007C4447C00, 0x000608411098, 0x000108421084, 0x0000C8441083, 0x0000008A8800, // z{|}~
];

/// The glyph bits of `c`; characters outside printable ASCII are drawn as `?`.
pub fn glyph(c: char) -> u64 {
    let code = if (' '..='~').contains(&c) { c as usize } else { '?' as usize };
    GLYPHS[code - 32]
}

/// Whether the glyph pixel at (`col`, `row`) is ink.
pub fn ink(bits: u64, col: u32, row: u32) -> bool {
    col < GLYPH_W && row < GLYPH_H && bits >> (row * GLYPH_W + col) & 1 == 1
}

/// The integer scale the raster renderer draws text of font size `size` (in pixels) at.
pub fn scale(size: f64) -> u32 {
    (size / 8.0).round().max(1.0) as u32
}

/// Width in pixels of `text` at `size` as the raster renderer draws it. Layout uses it for both
/// renderers: a sans-serif font at the same size is narrower, so SVG text fits too.
pub fn text_width(text: &str, size: f64) -> f64 {
    let n = text.chars().count() as u32;
    (n * ADVANCE).saturating_sub(1) as f64 * scale(size) as f64
}

/// Height in pixels of capitals at `size` as the raster renderer draws them.
pub fn cap_height(size: f64) -> f64 {
    (CAP_H * scale(size)) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glyphs_fit_their_cell_and_only_space_is_blank() {
        for c in ' '..='~' {
            let bits = glyph(c);
            assert_eq!(bits >> (GLYPH_W * GLYPH_H), 0, "{c:?}");
            assert_eq!(bits == 0, c == ' ', "{c:?}");
        }
        assert_eq!(glyph('é'), glyph('?'));
    }

    #[test]
    fn only_descenders_use_the_rows_below_the_baseline() {
        let below = |c: char| glyph(c) >> (CAP_H * GLYPH_W) != 0;
        let with: String = (' '..='~').filter(|&c| below(c)).collect();
        assert_eq!(with, ",;_gjpqy");
    }
}
