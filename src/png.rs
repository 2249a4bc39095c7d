//! A minimal PNG encoder: 8-bit grey or RGB, no interlacing, one IDAT chunk compressed with
//! zlib (flate2), filter type 0 (none) on every scanline.

use std::io::Write;

/// The pixel layout of [`encode_png`]'s input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PngColor {
    /// One byte per pixel.
    Gray8,
    /// Three bytes per pixel: red, green, blue.
    Rgb8,
}

impl PngColor {
    pub fn bytes_per_pixel(self) -> usize {
        match self {
            PngColor::Gray8 => 1,
            PngColor::Rgb8 => 3,
        }
    }

    /// The IHDR colour type.
    fn code(self) -> u8 {
        match self {
            PngColor::Gray8 => 0,
            PngColor::Rgb8 => 2,
        }
    }
}

/// The eight bytes every PNG file starts with.
pub const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n'];

/// Encodes `pixels` (row-major, top row first, [`PngColor::bytes_per_pixel`] bytes per pixel) as
/// a PNG file.
///
/// `pixels` must hold exactly `width * height * bytes_per_pixel` bytes (checked in debug builds);
/// in release builds a shorter buffer is padded with zeros and a longer one is cut, so this never
/// panics on the length.
pub fn encode_png(width: u32, height: u32, color: PngColor, pixels: &[u8]) -> Vec<u8> {
    let row_len = width as usize * color.bytes_per_pixel();
    debug_assert_eq!(pixels.len(), row_len * height as usize, "pixel buffer length for {width}x{height} {color:?}");

    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    // Bit depth 8, the colour type, compression 0, filter method 0, no interlace.
    ihdr.extend_from_slice(&[8, color.code(), 0, 0, 0]);

    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    let zero_row = vec![0u8; row_len];
    for y in 0..height as usize {
        let start = (y * row_len).min(pixels.len());
        let end = (start + row_len).min(pixels.len());
        let row = &pixels[start..end];
        // Writing into a Vec cannot fail.
        let _ = z.write_all(&[0]);
        let _ = z.write_all(row);
        let _ = z.write_all(&zero_row[row.len()..]);
    }
    let idat = z.finish().unwrap_or_default();

    let mut out = Vec::with_capacity(idat.len() + 64);
    out.extend_from_slice(&PNG_SIGNATURE);
    write_chunk(&mut out, b"IHDR", &ihdr);
    write_chunk(&mut out, b"IDAT", &idat);
    write_chunk(&mut out, b"IEND", &[]);
    out
}

/// Appends one chunk: length, type, data, and the CRC-32 of type and data.
fn write_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let mut crc = flate2::Crc::new();
    crc.update(kind);
    crc.update(data);
    out.extend_from_slice(&crc.sum().to_be_bytes());
}

/// Splits a PNG file into its chunks (type, data), checking the signature, the lengths and every
/// CRC; `None` if any of those is wrong. For tests and for reading back what [`encode_png`] wrote.
pub fn chunks(png: &[u8]) -> Option<Vec<([u8; 4], &[u8])>> {
    let mut rest = png.strip_prefix(&PNG_SIGNATURE[..])?;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let len = u32::from_be_bytes(rest.get(0..4)?.try_into().ok()?) as usize;
        let kind: [u8; 4] = rest.get(4..8)?.try_into().ok()?;
        let data = rest.get(8..8 + len)?;
        let stored = u32::from_be_bytes(rest.get(8 + len..12 + len)?.try_into().ok()?);
        let mut crc = flate2::Crc::new();
        crc.update(&kind);
        crc.update(data);
        if crc.sum() != stored {
            return None;
        }
        out.push((kind, data));
        rest = &rest[12 + len..];
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn inflate(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::ZlibDecoder::new(data).read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn rgb_image_has_valid_chunks_and_its_idat_inflates_to_the_filtered_scanlines() {
        let (w, h) = (5u32, 3u32);
        let pixels: Vec<u8> = (0..w * h * 3).map(|i| (i * 7 % 256) as u8).collect();
        let png = encode_png(w, h, PngColor::Rgb8, &pixels);
        let chunks = chunks(&png).expect("signature, lengths and CRCs are valid");
        let kinds: Vec<&[u8]> = chunks.iter().map(|(k, _)| &k[..]).collect();
        assert_eq!(kinds, [&b"IHDR"[..], b"IDAT", b"IEND"]);
        assert_eq!(chunks[0].1, [0, 0, 0, 5, 0, 0, 0, 3, 8, 2, 0, 0, 0]);
        assert!(chunks[2].1.is_empty());
        let mut expected = Vec::new();
        for row in pixels.chunks(15) {
            expected.push(0);
            expected.extend_from_slice(row);
        }
        assert_eq!(inflate(chunks[1].1), expected);
    }

    #[test]
    fn gray_image_header_and_scanlines() {
        let pixels = [0u8, 255, 128, 64];
        let png = encode_png(2, 2, PngColor::Gray8, &pixels);
        let chunks = chunks(&png).unwrap();
        assert_eq!(chunks[0].1, [0, 0, 0, 2, 0, 0, 0, 2, 8, 0, 0, 0, 0]);
        assert_eq!(inflate(chunks[1].1), [0, 0, 255, 0, 128, 64]);
    }

    #[test]
    fn the_iend_crc_is_the_well_known_constant_and_a_flipped_byte_is_caught() {
        let mut png = encode_png(1, 1, PngColor::Gray8, &[7]);
        assert_eq!(png[png.len() - 4..], [0xAE, 0x42, 0x60, 0x82]);
        let n = png.len();
        png[n - 20] ^= 1;
        assert!(chunks(&png).is_none());
    }
}
