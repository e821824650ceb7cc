//! One graded copy as a PDF: a cover page (candidate, exam,
//! establishment, grade, and the grading details and appreciation when
//! asked), then every scanned page at its real size, with the annotations
//! drawn over it when asked.
//!
//! Scans are embedded byte for byte as `DCTDecode` image streams: nothing
//! is decoded or re-encoded, so rendering costs little more than copying
//! the bytes. Text uses DejaVu Sans, embedded and subset to the glyphs
//! used, so that every name renders (Łukasz, Nguyễn, Şahin) for a few
//! kilobytes per PDF.

use std::{collections::BTreeMap, sync::OnceLock};

use printpdf::{
    Color, ExternalStream, ExternalXObject, Line, LinePoint, Mm, Op, ParsedFont, PdfDocument,
    PdfFontHandle, PdfPage, PdfSaveOptions, Point, Pt, Px, Rgb, TextItem, XObjectTransform,
    xobject::DictItem,
};
use serde::{Deserialize, Serialize};

use super::{RenderOptions, jpeg};

/// A question's mark in the grading details.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuestionMark {
    pub question: String,
    pub mark: f64,
    pub max: f64,
}

/// A mark or comment placed on a page; `x` and `y` are fractions of the
/// page's width and height from its top-left corner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Annotation {
    pub page: u32,
    pub x: f64,
    pub y: f64,
    pub kind: String,
    #[serde(default)]
    pub text: Option<String>,
}

/// Everything a copy's PDF shows.
#[derive(Debug, Clone)]
pub struct CopyDocument {
    pub numero: String,
    pub nom: String,
    pub prenom: String,
    pub exam_code: String,
    pub exam_subject: String,
    pub session: String,
    pub establishment_uai: String,
    pub establishment_name: String,
    pub grade: Option<f64>,
    pub absent: bool,
    pub details: Vec<QuestionMark>,
    pub appreciation: Option<String>,
    pub annotations: Vec<Annotation>,
    /// The scanned pages, in order, as stored (JPEG).
    pub pages: Vec<bytes::Bytes>,
}

/// Why a copy could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("page {page}: {source}")]
    Scan {
        page: usize,
        #[source]
        source: jpeg::JpegError,
    },
    #[error("the embedded font cannot be read")]
    Font,
}

/// Assumed density of a scan whose JPEG does not say (the usual scanner
/// setting for exam copies).
const DEFAULT_DPI: f32 = 150.0;
const A4: (f32, f32) = (210.0, 297.0);
const MARGIN: f32 = 20.0;

fn font_bytes() -> &'static [u8] {
    dejavu::sans::regular()
}

/// The parsed font, shared by every render of the process.
fn font() -> Option<&'static ParsedFont> {
    static FONT: OnceLock<Option<ParsedFont>> = OnceLock::new();
    FONT.get_or_init(|| {
        let mut warnings = Vec::new();
        ParsedFont::from_bytes(font_bytes(), 0, &mut warnings)
    })
    .as_ref()
}

/// Renders `copy` with `options` into PDF bytes. CPU work: call it from
/// a blocking thread.
pub fn render(copy: &CopyDocument, options: RenderOptions) -> Result<Vec<u8>, RenderError> {
    let infos = copy
        .pages
        .iter()
        .enumerate()
        .map(|(i, bytes)| {
            jpeg::info(bytes).map_err(|source| RenderError::Scan {
                page: i + 1,
                source,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let title = format!(
        "{} {} {} - {}",
        copy.numero, copy.nom, copy.prenom, copy.exam_code
    );
    let mut doc = PdfDocument::new(&title);
    let font = doc.add_font(font().ok_or(RenderError::Font)?);
    let font = PdfFontHandle::External(font);

    let mut pages = vec![cover(copy, options, &font)];
    for (index, (bytes, info)) in copy.pages.iter().zip(&infos).enumerate() {
        let (dpi_x, dpi_y) = info.dpi.unwrap_or((DEFAULT_DPI, DEFAULT_DPI));
        let w_pt = info.width as f32 * 72.0 / dpi_x;
        let h_pt = info.height as f32 * 72.0 / dpi_y;
        let image = doc.add_xobject(&image_xobject(bytes, info));
        let mut ops = vec![Op::UseXobject {
            id: image,
            transform: XObjectTransform {
                scale_x: Some(w_pt),
                scale_y: Some(h_pt),
                no_auto_scale: true,
                ..XObjectTransform::default()
            },
        }];
        if options.annotations() {
            let page_no = index as u32 + 1;
            for a in copy.annotations.iter().filter(|a| a.page == page_no) {
                annotation_ops(&mut ops, a, w_pt, h_pt, &font);
            }
        }
        pages.push(PdfPage::new(
            Mm(w_pt * 25.4 / 72.0),
            Mm(h_pt * 25.4 / 72.0),
            ops,
        ));
    }
    doc.with_pages(pages);
    let mut warnings = Vec::new();
    let opts = PdfSaveOptions {
        optimize: false,
        subset_fonts: true,
        secure: true,
        image_optimization: None,
    };
    Ok(doc.save(&opts, &mut warnings))
}

/// The scan as an image XObject whose stream is the JPEG itself.
fn image_xobject(bytes: &[u8], info: &jpeg::JpegInfo) -> ExternalXObject {
    let colour = match info.components {
        1 => "DeviceGray",
        4 => "DeviceCMYK",
        _ => "DeviceRGB",
    };
    let mut dict = BTreeMap::new();
    dict.insert("Type".into(), DictItem::Name(b"XObject".to_vec()));
    dict.insert("Subtype".into(), DictItem::Name(b"Image".to_vec()));
    dict.insert("Width".into(), DictItem::Int(i64::from(info.width)));
    dict.insert("Height".into(), DictItem::Int(i64::from(info.height)));
    dict.insert(
        "ColorSpace".into(),
        DictItem::Name(colour.as_bytes().to_vec()),
    );
    dict.insert("BitsPerComponent".into(), DictItem::Int(8));
    dict.insert("Filter".into(), DictItem::Name(b"DCTDecode".to_vec()));
    if info.components == 4 {
        // Adobe's CMYK JPEGs are stored inverted.
        dict.insert(
            "Decode".into(),
            DictItem::Array([1, 0, 1, 0, 1, 0, 1, 0].map(DictItem::Int).to_vec()),
        );
    }
    ExternalXObject {
        stream: ExternalStream {
            dict,
            content: bytes.to_vec(),
            compress: false,
        },
        width: Some(Px(info.width as usize)),
        height: Some(Px(info.height as usize)),
        dpi: info.dpi.map(|(x, _)| x),
    }
}

fn text(ops: &mut Vec<Op>, font: &PdfFontHandle, size: f32, x: f32, y: f32, s: &str) {
    ops.push(Op::StartTextSection);
    ops.push(Op::SetFont {
        font: font.clone(),
        size: Pt(size),
    });
    ops.push(Op::SetTextCursor {
        pos: Point { x: Pt(x), y: Pt(y) },
    });
    ops.push(Op::ShowText {
        items: vec![TextItem::Text(s.to_owned())],
    });
    ops.push(Op::EndTextSection);
}

fn colour(r: f32, g: f32, b: f32) -> Color {
    Color::Rgb(Rgb {
        r,
        g,
        b,
        icc_profile: None,
    })
}

/// Splits `s` into lines of at most `width` points at `size` (DejaVu Sans
/// averages about 0.55 em a character).
fn wrap(s: &str, size: f32, width: f32) -> Vec<String> {
    let max_chars = ((width / (size * 0.55)) as usize).max(10);
    let mut lines = Vec::new();
    for paragraph in s.lines() {
        let mut line = String::new();
        for word in paragraph.split_whitespace() {
            if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > max_chars {
                lines.push(std::mem::take(&mut line));
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
        lines.push(line);
    }
    lines
}

fn mm(v: f32) -> f32 {
    v * 72.0 / 25.4
}

fn format_mark(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0')
        .trim_end_matches('.')
        .replace('.', ",")
}

/// The cover page: who, what, where, the grade, and what the options ask.
fn cover(copy: &CopyDocument, options: RenderOptions, font: &PdfFontHandle) -> PdfPage {
    let mut ops = vec![Op::SetFillColor {
        col: colour(0.0, 0.0, 0.0),
    }];
    let left = mm(MARGIN);
    let width = mm(A4.0 - 2.0 * MARGIN);
    let mut y = mm(A4.1 - MARGIN);
    let mut line = |ops: &mut Vec<Op>, size: f32, gap: f32, s: &str| {
        y -= size + gap;
        text(ops, font, size, left, y, s);
    };
    line(
        &mut ops,
        18.0,
        0.0,
        &format!("{} {}", copy.nom, copy.prenom),
    );
    line(&mut ops, 11.0, 6.0, &format!("Candidat n° {}", copy.numero));
    line(
        &mut ops,
        11.0,
        4.0,
        &format!(
            "Épreuve {} — {} (session {})",
            copy.exam_code, copy.exam_subject, copy.session
        ),
    );
    line(
        &mut ops,
        11.0,
        4.0,
        &format!(
            "Établissement {} — {}",
            copy.establishment_uai, copy.establishment_name
        ),
    );
    let grade = match (copy.absent, copy.grade) {
        (true, _) => "Absent".to_owned(),
        (false, Some(g)) => format!("Note : {} / 20", format_mark(g)),
        (false, None) => "Non notée".to_owned(),
    };
    line(&mut ops, 16.0, 14.0, &grade);
    if options.details() && !copy.details.is_empty() {
        line(&mut ops, 13.0, 14.0, "Détail de la notation");
        for q in &copy.details {
            line(
                &mut ops,
                11.0,
                4.0,
                &format!(
                    "Question {} : {} / {}",
                    q.question,
                    format_mark(q.mark),
                    format_mark(q.max)
                ),
            );
        }
    }
    if options.appreciation()
        && let Some(appreciation) = copy
            .appreciation
            .as_deref()
            .filter(|a| !a.trim().is_empty())
    {
        line(&mut ops, 13.0, 14.0, "Appréciation");
        for l in wrap(appreciation, 11.0, width) {
            line(&mut ops, 11.0, 4.0, &l);
        }
    }
    line(
        &mut ops,
        9.0,
        18.0,
        &format!("{} page(s) numérisée(s)", copy.pages.len()),
    );
    PdfPage::new(Mm(A4.0), Mm(A4.1), ops)
}

/// A mark (a red tick) or a comment (red text) at its position.
fn annotation_ops(ops: &mut Vec<Op>, a: &Annotation, w: f32, h: f32, font: &PdfFontHandle) {
    let x = (a.x.clamp(0.0, 1.0) as f32) * w;
    let y = (1.0 - a.y.clamp(0.0, 1.0) as f32) * h;
    let red = colour(0.85, 0.1, 0.1);
    ops.push(Op::SaveGraphicsState);
    ops.push(Op::SetOutlineColor { col: red.clone() });
    ops.push(Op::SetFillColor { col: red });
    ops.push(Op::SetOutlineThickness { pt: Pt(1.5) });
    let point = |dx: f32, dy: f32| LinePoint {
        p: Point {
            x: Pt(x + dx),
            y: Pt(y + dy),
        },
        bezier: false,
    };
    ops.push(Op::DrawLine {
        line: Line {
            points: vec![point(-6.0, 0.0), point(-2.0, -5.0), point(8.0, 8.0)],
            is_closed: false,
        },
    });
    if let Some(t) = a.text.as_deref().filter(|t| !t.is_empty()) {
        text(ops, font, 10.0, x + 10.0, y - 4.0, t);
    }
    ops.push(Op::RestoreGraphicsState);
}
