//! What the PDF needs to know of a scan without decoding it: its size in
//! pixels, its colour components and its density.
//!
//! Hand-written because no well-kept crate returns the JFIF density along
//! with the frame header (`image` and `jpeg-decoder` report the size only,
//! and decode to get it); reading two marker segments is all it takes.

/// A scan's frame header and density.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JpegInfo {
    pub width: u32,
    pub height: u32,
    /// 1 (greyscale), 3 (YCbCr) or 4 (CMYK).
    pub components: u8,
    /// Pixels per inch, from the JFIF header; `None` when absent.
    pub dpi: Option<(f32, f32)>,
}

/// Why bytes are not a JPEG the PDF can embed as they are.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JpegError {
    #[error("not a JPEG (no SOI marker)")]
    NotJpeg,
    #[error("truncated JPEG header")]
    Truncated,
    #[error("unsupported JPEG: {0}")]
    Unsupported(String),
}

/// Reads the header of a baseline or progressive JPEG.
pub fn info(bytes: &[u8]) -> Result<JpegInfo, JpegError> {
    if bytes.len() < 4 || bytes[0] != 0xFF || bytes[1] != 0xD8 {
        return Err(JpegError::NotJpeg);
    }
    let mut dpi = None;
    let mut i = 2;
    loop {
        // Markers may be padded with 0xFF bytes.
        while i < bytes.len() && bytes[i] == 0xFF {
            i += 1;
        }
        let marker = *bytes.get(i).ok_or(JpegError::Truncated)?;
        i += 1;
        if marker == 0xD9 || marker == 0xDA {
            // End of image or start of scan before any frame header.
            return Err(JpegError::Truncated);
        }
        if (0xD0..=0xD7).contains(&marker) || marker == 0x01 {
            continue;
        }
        let len = u16::from_be_bytes([
            *bytes.get(i).ok_or(JpegError::Truncated)?,
            *bytes.get(i + 1).ok_or(JpegError::Truncated)?,
        ]) as usize;
        if len < 2 || i + len > bytes.len() {
            return Err(JpegError::Truncated);
        }
        let segment = &bytes[i + 2..i + len];
        match marker {
            0xE0 if segment.len() >= 12 && &segment[..5] == b"JFIF\0" => {
                let units = segment[7];
                let x = f32::from(u16::from_be_bytes([segment[8], segment[9]]));
                let y = f32::from(u16::from_be_bytes([segment[10], segment[11]]));
                dpi = match units {
                    1 if x > 0.0 && y > 0.0 => Some((x, y)),
                    2 if x > 0.0 && y > 0.0 => Some((x * 2.54, y * 2.54)),
                    _ => None,
                };
            }
            0xC0..=0xCF if !matches!(marker, 0xC4 | 0xC8 | 0xCC) => {
                if !matches!(marker, 0xC0..=0xC2) {
                    return Err(JpegError::Unsupported(format!(
                        "frame type 0x{marker:02X} (only baseline and progressive Huffman JPEGs)"
                    )));
                }
                if segment.len() < 6 {
                    return Err(JpegError::Truncated);
                }
                if segment[0] != 8 {
                    return Err(JpegError::Unsupported(format!(
                        "{}-bit samples",
                        segment[0]
                    )));
                }
                let height = u32::from(u16::from_be_bytes([segment[1], segment[2]]));
                let width = u32::from(u16::from_be_bytes([segment[3], segment[4]]));
                let components = segment[5];
                if width == 0 || height == 0 {
                    return Err(JpegError::Unsupported("zero width or height".into()));
                }
                if !matches!(components, 1 | 3 | 4) {
                    return Err(JpegError::Unsupported(format!("{components} components")));
                }
                return Ok(JpegInfo {
                    width,
                    height,
                    components,
                    dpi,
                });
            }
            _ => {}
        }
        i += len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A grey A4 page at 150 dpi, as the demo's scans are.
    fn a4_scan() -> Vec<u8> {
        let mut out = Vec::new();
        let mut encoder = jpeg_encoder::Encoder::new(&mut out, 80);
        encoder.set_density(jpeg_encoder::PixelDensity {
            density: (150, 150),
            unit: jpeg_encoder::PixelDensityUnit::Inches,
        });
        encoder
            .encode(
                &vec![200u8; 1240 * 1754],
                1240,
                1754,
                jpeg_encoder::ColorType::Luma,
            )
            .expect("encoding a page");
        out
    }

    #[test]
    fn a4_scans_at_150_dpi_are_read() {
        let scan = a4_scan();
        let info = info(&scan).expect("header");
        assert_eq!((info.width, info.height, info.components), (1240, 1754, 1));
        assert_eq!(info.dpi, Some((150.0, 150.0)));
    }

    #[test]
    fn garbage_is_refused() {
        assert_eq!(info(b"not a jpeg"), Err(JpegError::NotJpeg));
        let scan = a4_scan();
        assert_eq!(info(&scan[..12]), Err(JpegError::Truncated));
    }
}
