//! QR codes of presentations and other text: PNG, SVG and the terminal.
//!
//! Byte mode, error correction M (a presentation of about 1.5 KB fits a
//! version-30-odd symbol that phone cameras and counter scanners read), a
//! quiet zone of four modules.

use qrcode::render::{svg, unicode};
use qrcode::{EcLevel, QrCode};

/// Why a QR code could not be made (the text is too long for any symbol).
#[derive(Debug, thiserror::Error)]
#[error("cannot make a QR code: {0}")]
pub struct QrError(String);

fn code(text: &str) -> Result<QrCode, QrError> {
    QrCode::with_error_correction_level(text.as_bytes(), EcLevel::M)
        .or_else(|_| QrCode::with_error_correction_level(text.as_bytes(), EcLevel::L))
        .map_err(|e| QrError(e.to_string()))
}

/// A PNG of `text`'s QR code, `scale` pixels per module (grey-scale, 1 bit).
pub fn png(text: &str, scale: u32) -> Result<Vec<u8>, QrError> {
    let code = code(text)?;
    let modules = u32::try_from(code.width()).map_err(|e| QrError(e.to_string()))?;
    let quiet = 4;
    let scale = scale.clamp(1, 32);
    let side = (modules + 2 * quiet) * scale;
    let colors = code.to_colors();
    let mut pixels = vec![255u8; (side * side) as usize];
    for (i, c) in colors.iter().enumerate() {
        if *c != qrcode::Color::Dark {
            continue;
        }
        let (x, y) = (i as u32 % modules, i as u32 / modules);
        for dy in 0..scale {
            let row = ((y + quiet) * scale + dy) * side;
            let start = (row + (x + quiet) * scale) as usize;
            pixels[start..start + scale as usize].fill(0);
        }
    }
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, side, side);
        enc.set_color(png::ColorType::Grayscale);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header().map_err(|e| QrError(e.to_string()))?;
        w.write_image_data(&pixels).map_err(|e| QrError(e.to_string()))?;
    }
    Ok(out)
}

/// An SVG of `text`'s QR code.
pub fn svg(text: &str) -> Result<String, QrError> {
    Ok(code(text)?.render::<svg::Color<'_>>().min_dimensions(400, 400).quiet_zone(true).build())
}

/// `text`'s QR code drawn with Unicode half blocks, for a terminal.
pub fn terminal(text: &str) -> Result<String, QrError> {
    Ok(code(text)?
        .render::<unicode::Dense1x2>()
        .dark_color(unicode::Dense1x2::Light)
        .light_color(unicode::Dense1x2::Dark)
        .quiet_zone(true)
        .build())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_long_presentation_fits() {
        let text = "x".repeat(2000);
        let png = super::png(&text, 4).unwrap();
        assert_eq!(&png[1..4], b"PNG");
        assert!(super::svg(&text).unwrap().starts_with("<?xml"));
        assert!(super::png(&"y".repeat(5000), 4).is_err());
    }
}
