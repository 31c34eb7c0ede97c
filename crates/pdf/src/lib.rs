//! Annotated copies (加注件) of licences as printable A4 PDF.
//!
//! [`render`] lays out a licence's face like a certificate (title, a bordered
//! box of label/value rows that wraps long values and continues on new pages),
//! then, on the last page, the annotation block (who used the licence, for what
//! cause, until when the copy is good for) and a QR code of the verification URL,
//! and finally a light grey diagonal watermark naming the user and the cause on
//! every page. All text is real text in one embedded, subsetted CJK font
//! ([`CopyFont`]), so it can be searched and extracted.

pub mod qr;

use std::fmt;
use std::path::{Path, PathBuf};

use krilla::Document;
use krilla::color::rgb::Color;
use krilla::geom::{PathBuilder, Point, Rect, Transform};
use krilla::metadata::Metadata;
use krilla::num::NormalizedF32;
use krilla::page::PageSettings;
use krilla::paint::{Fill, Stroke};
use krilla::surface::Surface;
use krilla::text::{Font, TextDirection};
use qrcode::{EcLevel, QrCode};

/// The usual CJK font locations [`CopyFont::find_default`] tries, in order,
/// with the face to use. The `.ttc` collections of Debian's `fonts-noto-cjk`
/// hold the faces JP, KR, SC, TC, HK (then the Mono ones) in that order, so
/// index 2 is "Noto Sans CJK SC" / "Noto Serif CJK SC" (checked with
/// `fc-query`).
pub const DEFAULT_FONTS: [(&str, u32); 3] = [
    ("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc", 2),
    ("/usr/share/fonts/opentype/noto/NotoSerifCJK-Regular.ttc", 2),
    ("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc", 0),
];

/// A font for copies, loaded once and shared: cloning is cheap (the font data
/// is reference-counted).
#[derive(Clone)]
pub struct CopyFont {
    path: PathBuf,
    index: u32,
    font: Font,
}

impl fmt::Debug for CopyFont {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CopyFont").field("path", &self.path).field("index", &self.index).finish_non_exhaustive()
    }
}

impl CopyFont {
    /// Loads a TrueType/OpenType font or a face of a collection (`index`; 0
    /// for a single font).
    pub fn load(path: &Path, index: u32) -> Result<Self, PdfError> {
        let err = |reason: String| PdfError::Font { path: path.to_path_buf(), reason };
        let data = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        let font = Font::new(data.into(), index)
            .ok_or_else(|| err(format!("not a TrueType/OpenType font, or it has no face {index}")))?;
        Ok(CopyFont { path: path.to_path_buf(), index, font })
    }

    /// The first of the usual CJK font locations that exists ([`DEFAULT_FONTS`]:
    /// Noto Sans CJK SC from `fonts-noto-cjk`, then Noto Serif CJK SC, then
    /// WenQuanYi Micro Hei), or [`PdfError::NoFont`] listing the paths tried.
    pub fn find_default() -> Result<Self, PdfError> {
        match DEFAULT_FONTS.iter().find(|(p, _)| Path::new(p).is_file()) {
            Some((p, index)) => Self::load(Path::new(p), *index),
            None => Err(PdfError::NoFont { tried: DEFAULT_FONTS.iter().map(|(p, _)| PathBuf::from(p)).collect() }),
        }
    }

    /// The file the font was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The face of the file (its index in a collection, else 0).
    pub fn index(&self) -> u32 {
        self.index
    }
}

/// What the copy shows. Values are plain Unicode; control characters
/// (newlines, tabs…) are printed as spaces.
#[derive(Debug, Clone, Default)]
pub struct CopyFace {
    /// The licence type's name (e.g. 食品经营许可证), printed big at the top.
    pub title: String,
    /// 证照标识.
    pub identifier: String,
    /// 证照编号.
    pub licence_number: String,
    /// 持证主体.
    pub holder_name: String,
    /// The holder's ID number as shown (the caller masks it).
    pub holder_id: String,
    /// 发证机关.
    pub issuer_name: String,
    /// 发证日期, YYYY-MM-DD.
    pub issue_date: String,
    /// Start of validity, YYYY-MM-DD.
    pub valid_from: String,
    /// End of validity, YYYY-MM-DD; empty means 长期 (no end).
    pub valid_until: String,
    /// The face fields (label, value) in template order; long values wrap.
    pub fields: Vec<(String, String)>,
    /// How many face fields were withheld (a line says so when > 0).
    pub withheld: usize,
    /// The (label, value) lines of the 加注 block: 用证单位, 用证事由, 办件编号…
    pub annotation: Vec<(String, String)>,
    /// The watermark, e.g. "仅供 某某局 用于 办理食品经营许可 使用".
    pub watermark: String,
    /// The verification URL, encoded in the QR code and printed under it.
    pub verify_url: String,
}

/// Why a copy cannot be printed.
#[derive(Debug, thiserror::Error)]
pub enum PdfError {
    /// None of the usual font locations exists.
    #[error(
        "no CJK font found (tried {}): install fonts-noto-cjk or configure the path of a font file",
        tried.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    NoFont {
        /// The paths tried.
        tried: Vec<PathBuf>,
    },
    /// The font file cannot be read or is no usable font.
    #[error("cannot load font {}: {reason}", path.display())]
    Font {
        /// The font file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The PDF cannot be produced (e.g. a URL too long for a QR code).
    #[error("cannot render the copy: {0}")]
    Render(String),
}

// A4 in points, y downwards (krilla's convention).
const W: f32 = 595.28;
const H: f32 = 841.89;
const MARGIN: f32 = 56.0;
const TOP_NEXT: f32 = 78.0; // where content starts on continuation pages
const BOTTOM: f32 = H - 54.0; // content never goes below this
const FS: f32 = 10.5; // box text size
const LH: f32 = 15.5; // box line height
const PAD: f32 = 5.5;
const LABEL_W: f32 = 120.0;
const QR_SIDE: f32 = 112.0; // ≈ 39.5 mm, quiet zone included

/// A filled and/or stroked rectangle.
fn rect_op((x, y, w, h): (f32, f32, f32, f32), fill: Option<Color>, stroke: Option<(Color, f32)>) -> Option<Op> {
    let mut pb = PathBuilder::new();
    pb.push_rect(Rect::from_xywh(x, y, w, h)?);
    Some(Op::Path { path: pb.finish()?, fill, stroke })
}

/// One thing drawn on a page.
enum Op {
    Text { x: f32, y: f32, size: f32, text: String, color: Color },
    Path { path: krilla::geom::Path, fill: Option<Color>, stroke: Option<(Color, f32)> },
    Watermark { cx: f32, cy: f32, size: f32, text: String },
}

/// Pages being laid out, and the vertical position on the last one.
struct Layout {
    pages: Vec<Vec<Op>>,
    y: f32,
    header: String,
}

impl Layout {
    fn ops(&mut self) -> &mut Vec<Op> {
        if self.pages.is_empty() {
            self.pages.push(Vec::new());
        }
        let last = self.pages.len() - 1;
        &mut self.pages[last]
    }

    fn new_page(&mut self) {
        self.pages.push(Vec::new());
        let header = self.header.clone();
        self.text(MARGIN, TOP_NEXT - 16.0, 9.0, header, Color::new(110, 110, 110));
        self.y = TOP_NEXT;
    }

    fn text(&mut self, x: f32, y: f32, size: f32, text: String, color: Color) {
        if !text.trim().is_empty() {
            self.ops().push(Op::Text { x, y, size, text, color });
        }
    }

    fn rect(&mut self, xywh: (f32, f32, f32, f32), fill: Option<Color>, stroke: Option<(Color, f32)>) {
        if let Some(op) = rect_op(xywh, fill, stroke) {
            self.ops().push(op);
        }
    }

    fn line(&mut self, (x1, y1): (f32, f32), (x2, y2): (f32, f32), color: Color, width: f32) {
        let mut pb = PathBuilder::new();
        pb.move_to(x1, y1);
        pb.line_to(x2, y2);
        if let Some(path) = pb.finish() {
            self.ops().push(Op::Path { path, fill: None, stroke: Some((color, width)) });
        }
    }

    /// One label/value row of the box; a row taller than what is left of the
    /// page moves to the next one, or is split if it is taller than a page.
    fn row(&mut self, label: &str, value: &str) {
        let (x, w) = (MARGIN, W - 2.0 * MARGIN);
        let labels = wrap(label, FS, LABEL_W - 2.0 * PAD);
        let values = wrap(value, FS, w - LABEL_W - 2.0 * PAD);
        let n = labels.len().max(values.len());
        let fits = |y: f32| ((BOTTOM - y - 2.0 * PAD) / LH).floor().max(0.0) as usize;
        let mut i = 0;
        while i < n {
            let cap = fits(self.y);
            if cap == 0 || (i == 0 && cap < n && n <= fits(TOP_NEXT)) {
                self.new_page();
                continue;
            }
            let k = cap.min(n - i);
            let h = k as f32 * LH + 2.0 * PAD;
            let y = self.y;
            self.rect((x, y, LABEL_W, h), Some(Color::new(242, 242, 242)), None);
            self.rect((x, y, w, h), None, Some((Color::black(), 0.6)));
            self.line((x + LABEL_W, y), (x + LABEL_W, y + h), Color::black(), 0.6);
            for j in i..i + k {
                let base = y + PAD + (j - i) as f32 * LH + LH * 0.72;
                let label = match labels.get(j) {
                    Some(l) => l.clone(),
                    None if j == i => "（续）".to_string(),
                    None => String::new(),
                };
                self.text(x + PAD, base, FS, label, Color::new(60, 60, 60));
                if let Some(v) = values.get(j) {
                    self.text(x + LABEL_W + PAD, base, FS, v.clone(), Color::black());
                }
            }
            self.y += h;
            i += k;
        }
    }
}

/// Renders the copy: the PDF bytes. A character the font lacks is drawn as
/// the font's .notdef glyph rather than failing.
pub fn render(font: &CopyFont, face: &CopyFace) -> Result<Vec<u8>, PdfError> {
    let title = clean(&face.title);
    let mut lay = Layout { pages: Vec::new(), y: MARGIN + 8.0, header: format!("{title}（加注件，续）") };

    // Title, centred, wrapped if very long; then the subtitle.
    for line in capped(wrap(&title, 22.0, W - 2.0 * MARGIN), 3) {
        lay.y += 28.0;
        lay.text((W - width(&line, 22.0)) / 2.0, lay.y, 22.0, line, Color::black());
    }
    lay.y += 22.0;
    let sub = "（加 注 件）".to_string();
    lay.text((W - width(&sub, 11.0)) / 2.0, lay.y, 11.0, sub, Color::new(90, 90, 90));
    lay.y += 14.0;

    // The box: fixed rows (empty ones left out), then the face fields.
    let validity = match (face.valid_from.trim(), face.valid_until.trim()) {
        ("", "") => "长期".to_string(),
        (from, "") => format!("{from} 至 长期"),
        ("", until) => format!("至 {until}"),
        (from, until) => format!("{from} 至 {until}"),
    };
    let fixed = [
        ("证照标识", face.identifier.as_str()),
        ("证照编号", &face.licence_number),
        ("持证主体", &face.holder_name),
        ("持证主体证件号码", &face.holder_id),
        ("发证机关", &face.issuer_name),
        ("发证日期", &face.issue_date),
        ("有效期限", &validity),
    ];
    for (label, value) in fixed.iter().filter(|(_, v)| !v.trim().is_empty()) {
        lay.row(label, value);
    }
    for (label, value) in &face.fields {
        lay.row(label, value);
    }
    if face.withheld > 0 {
        if lay.y + 22.0 > BOTTOM {
            lay.new_page();
        }
        lay.y += 16.0;
        let note = format!("另有 {} 项内容按用证清单不予显示", face.withheld);
        lay.text(MARGIN, lay.y, 9.5, note, Color::new(90, 90, 90));
    }

    footer(&mut lay, face)?;

    // Page numbers and watermarks on every page, the watermark last.
    let n = lay.pages.len();
    let mark = clean(&face.watermark);
    let size = (470.0 / width(&mark, 1.0).max(1.0)).clamp(9.0, 30.0);
    for (i, ops) in lay.pages.iter_mut().enumerate() {
        for (inset, w) in [(24.0, 1.6), (28.5, 0.5)] {
            let stroke = Some((Color::new(120, 40, 40), w));
            ops.extend(rect_op((inset, inset, W - 2.0 * inset, H - 2.0 * inset), None, stroke));
        }
        let number = format!("第 {} 页 / 共 {n} 页", i + 1);
        ops.push(Op::Text {
            x: (W - width(&number, 8.0)) / 2.0,
            y: H - 34.0,
            size: 8.0,
            text: number,
            color: Color::black(),
        });
        if !mark.trim().is_empty() {
            for cy in [H * 0.24, H * 0.5, H * 0.76] {
                ops.push(Op::Watermark { cx: W / 2.0, cy, size, text: mark.clone() });
            }
        }
    }

    let mut doc = Document::new();
    doc.set_metadata(
        Metadata::new()
            .title(format!("{title}（加注件）"))
            .creator("Zhengzhao".to_string())
            .language("zh-CN".to_string()),
    );
    let settings = PageSettings::from_wh(W, H).ok_or_else(|| PdfError::Render("bad page size".into()))?;
    for ops in &lay.pages {
        let mut page = doc.start_page_with(settings.clone());
        let mut surface = page.surface();
        for op in ops {
            draw(&mut surface, &font.font, op);
        }
        surface.finish();
        page.finish();
    }
    doc.finish().map_err(|e| PdfError::Render(e.to_string()))
}

/// The annotation block (bottom-left) and the QR code with the URL under it
/// (bottom-right), on a new page if they do not fit under the box.
fn footer(lay: &mut Layout, face: &CopyFace) -> Result<(), PdfError> {
    let qr = QrCode::with_error_correction_level(face.verify_url.as_bytes(), EcLevel::M)
        .map_err(|e| PdfError::Render(format!("the verify URL cannot be put in a QR code: {e}")))?;
    let url_lines = capped(wrap(&face.verify_url, 6.5, QR_SIDE), 8);
    let qr_h = 16.0 + QR_SIDE + 4.0 + url_lines.len() as f32 * 8.5;

    let (ann_lh, ann_fs) = (14.5, 10.0);
    let ann_x = MARGIN;
    let ann_w = W - 2.0 * MARGIN - QR_SIDE - 16.0;
    let lines: Vec<String> = face
        .annotation
        .iter()
        .flat_map(|(l, v)| wrap(&format!("{}：{}", clean(l), clean(v)), ann_fs, ann_w - 2.0 * PAD - 8.0))
        .collect();
    let lines = capped(lines, ((BOTTOM - TOP_NEXT - 2.0 * PAD - 24.0) / ann_lh) as usize);
    let ann_h = 2.0 * PAD + 24.0 + lines.len() as f32 * ann_lh;
    if lay.y + 18.0 + ann_h.max(qr_h) > BOTTOM {
        lay.new_page();
    }

    // Annotation: a dark red frame, as a stamp would be.
    let red = Color::new(170, 30, 30);
    let top = BOTTOM - ann_h;
    lay.rect((ann_x, top, ann_w, ann_h), None, Some((red, 1.2)));
    lay.text(ann_x + PAD + 4.0, top + PAD + 15.0, 12.0, "加注说明".into(), red);
    for (i, line) in lines.into_iter().enumerate() {
        lay.text(ann_x + PAD + 4.0, top + PAD + 24.0 + (i as f32 + 0.75) * ann_lh, ann_fs, line, Color::black());
    }

    // QR code: a white square (quiet zone of 4 modules), dark modules as runs.
    let (qx, top) = (W - MARGIN - QR_SIDE, BOTTOM - qr_h);
    let caption = "扫码核验".to_string();
    lay.text(qx + (QR_SIDE - width(&caption, 9.0)) / 2.0, top + 10.0, 9.0, caption, Color::black());
    let qy = top + 16.0;
    lay.rect((qx, qy, QR_SIDE, QR_SIDE), Some(Color::white()), None);
    let n = qr.width();
    let m = QR_SIDE / (n + 8) as f32;
    let colors = qr.to_colors();
    let mut pb = PathBuilder::new();
    for (r, row) in colors.chunks(n).enumerate() {
        let mut c = 0;
        while c < n {
            let run = row[c..].iter().take_while(|&&k| k == qrcode::Color::Dark).count();
            if run == 0 {
                c += 1;
                continue;
            }
            let (x, y) = (qx + (4 + c) as f32 * m, qy + (4 + r) as f32 * m);
            if let Some(rect) = Rect::from_xywh(x, y, run as f32 * m, m) {
                pb.push_rect(rect);
            }
            c += run;
        }
    }
    if let Some(path) = pb.finish() {
        lay.ops().push(Op::Path { path, fill: Some(Color::black()), stroke: None });
    }
    for (i, line) in url_lines.into_iter().enumerate() {
        lay.text(qx, qy + QR_SIDE + 4.0 + (i as f32 + 0.8) * 8.5, 6.5, line, Color::new(60, 60, 60));
    }
    Ok(())
}

fn draw(surface: &mut Surface<'_>, font: &Font, op: &Op) {
    let fill = |color: Color, opacity: f32| Fill {
        paint: color.into(),
        opacity: NormalizedF32::new(opacity).unwrap_or(NormalizedF32::ONE),
        rule: Default::default(),
    };
    match op {
        Op::Text { x, y, size, text, color } => {
            surface.set_stroke(None);
            surface.set_fill(Some(fill(*color, 1.0)));
            let p = Point::from_xy(*x, *y);
            surface.draw_text(p, font.clone(), *size, text, false, TextDirection::LeftToRight);
        }
        Op::Path { path, fill: f, stroke } => {
            surface.set_fill(f.map(|c| fill(c, 1.0)));
            surface.set_stroke(stroke.map(|(c, width)| Stroke { paint: c.into(), width, ..Default::default() }));
            surface.draw_path(path);
        }
        Op::Watermark { cx, cy, size, text } => {
            surface.set_stroke(None);
            surface.set_fill(Some(fill(Color::new(150, 150, 150), 0.35)));
            surface.push_transform(&Transform::from_translate(*cx, *cy));
            surface.push_transform(&Transform::from_rotate(-30.0));
            let p = Point::from_xy(-width(text, *size) / 2.0, *size * 0.35);
            surface.draw_text(p, font.clone(), *size, text, false, TextDirection::LeftToRight);
            surface.pop();
            surface.pop();
        }
    }
}

/// Control characters (newlines, tabs…) become spaces.
fn clean(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

/// A conservative estimate of a character's advance in ems, measured on
/// Noto Sans CJK: ideographs and full-width forms are 1 em, its proportional
/// Latin narrower.
fn em(c: char) -> f32 {
    match c {
        ' ' | 'i' | 'j' | 'l' | 'I' | '.' | ',' | ':' | ';' | '\'' | '|' | '!' => 0.34,
        'm' | 'W' | '@' | '%' => 0.96,
        'M' | 'w' => 0.85,
        'A'..='Z' | '&' => 0.76,
        '0'..='9' | '-' | '+' | '=' | '<' | '>' | '#' | '$' | '^' | '~' | '_' => 0.57,
        c if c.is_ascii() => 0.64,
        _ => 1.0,
    }
}

fn width(s: &str, size: f32) -> f32 {
    s.chars().map(em).sum::<f32>() * size
}

/// Splits `text` into lines no wider than `max`: anywhere in CJK, but a
/// Latin word or URL moves whole to the next line (if it is short enough),
/// cut after a space or punctuation. Always at least one line.
fn wrap(text: &str, size: f32, max: f32) -> Vec<String> {
    let mut lines = Vec::new();
    let mut cur = String::new();
    for c in clean(text).chars() {
        if !cur.is_empty() && width(&cur, size) + em(c) * size > max {
            let cut = if c.is_ascii_graphic() { latin_break(&cur) } else { None };
            let tail = match cut {
                Some(i) if width(&cur[i..], size) < max / 2.0 => cur.split_off(i),
                _ => String::new(),
            };
            lines.push(cur.trim_end().to_string());
            cur = tail;
            if c == ' ' && cur.is_empty() {
                continue;
            }
        }
        cur.push(c);
    }
    if !cur.is_empty() || lines.is_empty() {
        lines.push(cur);
    }
    lines
}

/// At most `max` lines, the last one ending with "…" when some were cut
/// (for the few things that must fit on one page).
fn capped(mut lines: Vec<String>, max: usize) -> Vec<String> {
    if lines.len() > max {
        lines.truncate(max);
        if let Some(last) = lines.last_mut() {
            last.push('…');
        }
    }
    lines
}

/// Where the Latin run ending `s` can be cut: after its last space or
/// punctuation, not at the very start.
fn latin_break(s: &str) -> Option<usize> {
    for (i, c) in s.char_indices().rev() {
        match c {
            ' ' | '.' | '/' | '-' | '_' | ',' | ';' | '?' | '&' | '=' if i > 0 => return Some(i + 1),
            c if c.is_ascii_graphic() => {}
            _ => return None,
        }
    }
    None
}
