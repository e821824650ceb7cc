//! One graded copy as a PDF: a cover page (candidate, exam,
//! establishment, grade, and the grading details and appreciation when
//! asked), then every scanned page at its real size, with the annotations
//! drawn over it when asked.
//!
//! Scans are embedded byte for byte as `DCTDecode` image streams: nothing
//! is decoded or re-encoded, and the bytes are moved into the document
//! printpdf builds, then copied once, where the PDF is written, so
//! rendering costs little more than that copy.
//!
//! Text is set in Helvetica, built into every viewer, when it is all in
//! WinAnsi (nearly every French name and comment): nothing to embed.
//! Other copies embed DejaVu Sans, subset to the glyphs they use, so
//! that every name renders (Łukasz, Nguyễn, Şahin, Дмитриев) for some
//! 30 KB a PDF.

use std::{
    collections::{BTreeMap, BTreeSet},
    ops::RangeInclusive,
    sync::OnceLock,
};

use allsorts::{
    binary::read::ReadScope,
    font_data::FontData,
    subset::{CmapTarget, SubsetProfile},
    tables::{FontTableProvider as _, NameTable},
    tag,
};
use printpdf::{
    BuiltinFont, Color, ExternalStream, ExternalXObject, FontId, Line, LinePoint, Mm, Op,
    ParsedFont, PdfDocument, PdfFont, PdfFontHandle, PdfPage, PdfSaveOptions, Point, Pt, Px, Rgb,
    TextItem, XObject, XObjectId, XObjectTransform, xobject::DictItem,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

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
    /// When the copy was last imported or changed: the PDF's creation and
    /// modification dates, so that the same copy always gives the same
    /// bytes.
    pub modified: chrono::DateTime<chrono::Utc>,
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
    #[error("the PDF could not be assembled")]
    Serialise,
}

/// Assumed density of a scan whose JPEG does not say (the usual scanner
/// setting for exam copies).
const DEFAULT_DPI: f32 = 150.0;
const A4: (f32, f32) = (210.0, 297.0);
const MARGIN: f32 = 20.0;

/// A typeface copiste embeds: the font as printpdf's own reader parses it
/// (its cmap, advances and metrics), and its PostScript name.
///
/// The fonts are cut down here, through allsorts (the subsetter printpdf
/// itself is built on), rather than by printpdf: its subsetting sits behind
/// its `text_layout` feature, which compiles a whole layout engine
/// (`azul-layout`, `azul-css`, `rust-fontconfig`) that the covers do not
/// use. The cut is the one printpdf made, glyph for glyph, so the PDFs are
/// the same bytes.
struct Font {
    parsed: ParsedFont,
    name: Option<String>,
}

impl Font {
    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let mut warnings = Vec::new();
        let parsed = ParsedFont::from_bytes(bytes, 0, &mut warnings)?;
        Some(Self {
            parsed,
            name: postscript_name(bytes),
        })
    }

    /// The glyph showing the character `cp`, if the font has one.
    fn glyph(&self, cp: u32) -> Option<u16> {
        self.parsed.lookup_glyph_index(cp)
    }

    /// The font cut down to `glyphs` (sorted, without duplicates), which
    /// are renumbered in that order after `.notdef`, glyph 0, as allsorts
    /// requires.
    fn cut(&self, glyphs: &BTreeSet<u16>) -> Option<Subset> {
        let ids: Vec<u16> = std::iter::once(0)
            .chain(glyphs.iter().copied().filter(|g| *g != 0))
            .collect();
        let data = ReadScope::new(&self.parsed.original_bytes)
            .read::<FontData<'_>>()
            .ok()?;
        let provider = data.table_provider(0).ok()?;
        let bytes =
            allsorts::subset::subset(&provider, &ids, &SubsetProfile::Pdf, CmapTarget::Unicode)
                .ok()?;
        Some(Subset { bytes, ids })
    }

    /// The font to embed in a PDF whose texts use `glyphs`: cut down to
    /// them, each character mapped to its glyph's new number, and named
    /// and measured as printpdf names and measures a subset (the tag, then
    /// the source's name; the source's bounding box and style).
    fn embedded(&self, glyphs: &BTreeSet<u16>) -> Option<ParsedFont> {
        let subset = self.cut(glyphs)?;
        let mut warnings = Vec::new();
        let mut font = ParsedFont::from_bytes(&subset.bytes, 0, &mut warnings)?;
        let renumbered: BTreeMap<u16, u16> = subset
            .ids
            .iter()
            .enumerate()
            .filter(|(_, old)| glyphs.contains(old))
            .filter_map(|(new, old)| Some((*old, u16::try_from(new).ok()?)))
            .collect();
        font.codepoint_to_glyph = self
            .parsed
            .codepoint_to_glyph
            .iter()
            .filter_map(|(cp, old)| Some((*cp, *renumbered.get(old)?)))
            .collect();
        font.pdf_font_metrics = self.parsed.pdf_font_metrics.clone();
        font.font_name = Some(format!(
            "{FONT_TAG}+{}",
            self.name.as_deref().unwrap_or(FONT_TAG)
        ));
        Some(font)
    }
}

/// A font's bytes cut down to some glyphs, and the old number of each new
/// glyph, in order.
struct Subset {
    bytes: Vec<u8>,
    ids: Vec<u16>,
}

/// The font's PostScript name (`name` table, id 6), if it has one.
fn postscript_name(bytes: &[u8]) -> Option<String> {
    let data = ReadScope::new(bytes).read::<FontData<'_>>().ok()?;
    let provider = data.table_provider(0).ok()?;
    let table = provider.table_data(tag::NAME).ok()??;
    ReadScope::new(&table)
        .read::<NameTable<'_>>()
        .ok()?
        .string_for_id(NameTable::POSTSCRIPT_NAME)
}

/// The embedded font's resource name, also its subset tag (six capital
/// letters, ISO 32000-1, 9.6.4).
const FONT_TAG: &str = "CPSTDJ";

/// DejaVu Sans, parsed once per process.
fn full_font() -> Option<&'static Font> {
    static FONT: OnceLock<Option<Font>> = OnceLock::new();
    FONT.get_or_init(|| Font::from_bytes(dejavu::sans::regular()))
        .as_ref()
}

/// Whether `c` is in WinAnsiEncoding, the only encoding of the PDF
/// viewers' built-in fonts: ASCII, Latin-1 (every French letter, `°`,
/// `«»`) and 27 typographic signs (`€ … – — ’ “ ” Œ œ Ÿ Š š Ž ž`…).
fn win_ansi(c: char) -> bool {
    matches!(u32::from(c), 0x20..=0x7E | 0xA0..=0xFF) || "€‚ƒ„…†‡ˆ‰Š‹ŒŽ‘’“”•–—˜™š›œžŸ".contains(c)
}

/// Characters of [`LATIN`]: Latin with all its extensions (Polish,
/// Turkish, Vietnamese…), combining marks, punctuation, the euro.
const LATIN: &[RangeInclusive<u32>] = &[
    0x20..=0x7E,
    0xA0..=0x24F,
    0x300..=0x36F,
    0x1E00..=0x1EFF,
    0x2000..=0x206F,
    0x20AC..=0x20AC,
];

/// DejaVu Sans cut down, once per process, to [`LATIN`].
///
/// Each PDF embeds only the glyphs it uses, and cutting that subset is
/// most of a PDF's CPU cost, in proportion to the font it is cut from:
/// ~1 000 glyphs here instead of ~6 000.
fn latin_font() -> Option<&'static Font> {
    static FONT: OnceLock<Option<Font>> = OnceLock::new();
    FONT.get_or_init(|| {
        let full = full_font()?;
        let glyphs: BTreeSet<u16> = LATIN
            .iter()
            .flat_map(|r| r.clone())
            .filter(|cp| char::from_u32(*cp).is_some())
            .filter_map(|cp| full.glyph(cp))
            .collect();
        Font::from_bytes(&full.cut(&glyphs)?.bytes)
    })
    .as_ref()
}

/// The typeface of a copy's texts.
#[derive(Clone, Copy)]
enum Face {
    /// Helvetica, built into every PDF viewer: nothing to embed or cut,
    /// for texts all in WinAnsi (nearly every French name and comment).
    Builtin,
    /// A DejaVu Sans subset, embedded, for the others.
    Embedded(&'static Font),
}

/// The cheapest face that shows every character of `texts`: Helvetica,
/// else DejaVu cut from [`latin_font`], else from the full font.
fn face_for<'a>(texts: impl Iterator<Item = &'a str>) -> Option<Face> {
    let in_latin = |c: char| LATIN.iter().any(|r| r.contains(&u32::from(c)));
    let mut tier = 0;
    for c in texts.flat_map(str::chars).filter(|c| !c.is_whitespace()) {
        if tier == 0 && !win_ansi(c) {
            tier = 1;
        }
        if tier == 1 && !in_latin(c) {
            tier = 2;
            break;
        }
    }
    match tier {
        0 => Some(Face::Builtin),
        1 => latin_font().or_else(full_font).map(Face::Embedded),
        _ => full_font().map(Face::Embedded),
    }
}

/// The glyphs of `font` that the texts of `pages` show.
fn used_glyphs(pages: &[PdfPage], font: &Font) -> BTreeSet<u16> {
    pages
        .iter()
        .flat_map(|page| &page.ops)
        .filter_map(|op| match op {
            Op::ShowText { items } => Some(items),
            _ => None,
        })
        .flatten()
        .filter_map(|item| match item {
            TextItem::Text(s) => Some(s),
            _ => None,
        })
        .flat_map(|s| s.chars())
        .filter_map(|c| font.glyph(u32::from(c)))
        .collect()
}

/// Every text a copy's PDF may show.
fn texts(copy: &CopyDocument) -> impl Iterator<Item = &str> {
    [
        copy.numero.as_str(),
        &copy.nom,
        &copy.prenom,
        &copy.exam_code,
        &copy.exam_subject,
        &copy.session,
        &copy.establishment_uai,
        &copy.establishment_name,
        copy.appreciation.as_deref().unwrap_or(""),
        // The cover's own words.
        "Candidat n° Épreuve — Établissement Note : / Absent Non notée Détail de la notation Question Appréciation page(s) numérisée(s) ,",
    ]
    .into_iter()
    .chain(copy.details.iter().map(|q| q.question.as_str()))
    .chain(copy.annotations.iter().filter_map(|a| a.text.as_deref()))
}

/// Key marking an image stream whose content is filled in after printpdf
/// built the document (the scan's index); removed before writing.
const SCAN_SLOT: &str = "CopisteScan";

/// A copy's PDF, built but not yet written: its scans are moved into the
/// document, never copied, and are copied once, by [`PreparedPdf::write_to`],
/// into wherever the PDF goes.
pub struct PreparedPdf {
    doc: lopdf::Document,
}

impl PreparedPdf {
    /// The exact number of bytes [`PreparedPdf::write_to`] writes. Cheap:
    /// the scans are counted, not copied.
    pub fn size(&mut self) -> u64 {
        let mut counter = Counter(0);
        // Writing into a counter cannot fail.
        let _ = self.doc.save_to(&mut counter);
        counter.0
    }

    /// Writes the PDF into `out`.
    pub fn write_to(mut self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        // lopdf writes many small tokens: buffer them; the scans (larger
        // than the buffer) go straight through.
        let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
        self.doc.save_to(&mut out)?;
        std::io::Write::flush(&mut out)
    }
}

/// A `Write` that only counts.
struct Counter(u64);

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Renders `copy` with `options` into PDF bytes. CPU work: call it from
/// a blocking thread.
pub fn render(copy: CopyDocument, options: RenderOptions) -> Result<Vec<u8>, RenderError> {
    let mut pdf = prepare(copy, options)?;
    let mut bytes = Vec::with_capacity(usize::try_from(pdf.size()).unwrap_or(0));
    pdf.write_to(&mut bytes)
        .map_err(|_| RenderError::Serialise)?;
    Ok(bytes)
}

/// Builds `copy`'s PDF with `options`, taking its scans without copying
/// them. CPU work: call it from a blocking thread.
pub fn prepare(copy: CopyDocument, options: RenderOptions) -> Result<PreparedPdf, RenderError> {
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
    // Dates from the copy, never the clock.
    let modified = printpdf::OffsetDateTime::from_unix_timestamp(copy.modified.timestamp())
        .map_err(|_| RenderError::Serialise)?;
    doc.metadata.info.creation_date = modified;
    doc.metadata.info.modification_date = modified;
    doc.metadata.info.metadata_date = modified;
    // Resource names are fixed here rather than drawn by printpdf from a
    // process-wide sequence (`add_font`, `add_xobject`), whose numbers
    // depend on what other threads rendered before: the same copy gives
    // the same bytes.
    let face = face_for(texts(&copy)).ok_or(RenderError::Font)?;
    let font = match face {
        Face::Builtin => PdfFontHandle::Builtin(BuiltinFont::Helvetica),
        Face::Embedded(_) => PdfFontHandle::External(FontId(FONT_TAG.into())),
    };

    let mut pages = vec![cover(&copy, options, &font)];
    for (index, info) in infos.iter().enumerate() {
        let (dpi_x, dpi_y) = info.dpi.unwrap_or((DEFAULT_DPI, DEFAULT_DPI));
        let w_pt = info.width as f32 * 72.0 / dpi_x;
        let h_pt = info.height as f32 * 72.0 / dpi_y;
        let image = XObjectId(format!("Scan{index:05}"));
        doc.resources
            .xobjects
            .map
            .insert(image.clone(), XObject::External(image_slot(index, info)));
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
    if let Face::Embedded(source) = face {
        let embedded = source
            .embedded(&used_glyphs(&pages, source))
            .ok_or(RenderError::Font)?;
        doc.resources
            .fonts
            .map
            .insert(FontId(FONT_TAG.into()), PdfFont::new(embedded));
    }
    doc.with_pages(pages);
    let mut warnings = Vec::new();
    let opts = PdfSaveOptions {
        optimize: false,
        subset_fonts: true,
        secure: true,
        image_optimization: None,
    };
    let mut doc = doc.to_lopdf_document(&opts, &mut warnings);
    // printpdf draws the trailer's file identifiers at random: they are
    // derived from the copy instead (ISO 32000-1, 14.4: the same for the
    // same document).
    let id = document_id(&title, &copy, options);
    doc.trailer.set(
        "ID",
        lopdf::Object::Array(vec![
            lopdf::Object::String(id.clone(), lopdf::StringFormat::Hexadecimal),
            lopdf::Object::String(id, lopdf::StringFormat::Hexadecimal),
        ]),
    );
    // Move each scan into its slot.
    let mut scans: Vec<Option<Vec<u8>>> = copy.pages.into_iter().map(|b| Some(b.into())).collect();
    let mut filled = 0;
    for object in doc.objects.values_mut() {
        let lopdf::Object::Stream(stream) = object else {
            continue;
        };
        let Ok(slot) = stream
            .dict
            .get(SCAN_SLOT.as_bytes())
            .and_then(lopdf::Object::as_i64)
        else {
            continue;
        };
        let content = usize::try_from(slot)
            .ok()
            .and_then(|i| scans.get_mut(i))
            .and_then(Option::take)
            .ok_or(RenderError::Serialise)?;
        stream.dict.remove(SCAN_SLOT.as_bytes());
        stream.set_content(content);
        filled += 1;
    }
    if filled != scans.len() {
        return Err(RenderError::Serialise);
    }
    Ok(PreparedPdf { doc })
}

/// The file identifier of a copy's PDF: 16 bytes of a SHA-256 of what
/// it shows (the cover's texts, the options, the date) and of its scans'
/// sizes, which are cheap to know (hashing the scans themselves would cost
/// as much as the rest of the render).
fn document_id(title: &str, copy: &CopyDocument, options: RenderOptions) -> Vec<u8> {
    let mut hash = Sha256::new();
    for text in texts(copy) {
        hash.update(text.as_bytes());
        hash.update([0]);
    }
    hash.update(title.as_bytes());
    hash.update(options.tag().as_bytes());
    hash.update(copy.modified.timestamp().to_be_bytes());
    hash.update(format!("{:?}{}", copy.grade, copy.absent).as_bytes());
    for q in &copy.details {
        hash.update(format!("{}:{}/{}", q.question, q.mark, q.max).as_bytes());
    }
    for a in &copy.annotations {
        hash.update(format!("{}:{}:{}:{}", a.page, a.x, a.y, a.kind).as_bytes());
    }
    for page in &copy.pages {
        hash.update((page.len() as u64).to_be_bytes());
    }
    hash.finalize()[..16].to_vec()
}

/// The scan's image XObject, its stream left empty (the scan goes in
/// after printpdf is done, see [`prepare`]).
fn image_slot(index: usize, info: &jpeg::JpegInfo) -> ExternalXObject {
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
    dict.insert(SCAN_SLOT.into(), DictItem::Int(index as i64));
    ExternalXObject {
        stream: ExternalStream {
            dict,
            content: Vec::new(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{domain::ExamKind, render::RequestedOptions};

    fn scan() -> bytes::Bytes {
        let mut out = Vec::new();
        jpeg_encoder::Encoder::new(&mut out, 80)
            .encode(&[200u8; 64 * 64], 64, 64, jpeg_encoder::ColorType::Luma)
            .expect("encode");
        out.into()
    }

    fn copy(nom: &str) -> CopyDocument {
        CopyDocument {
            numero: "2026001".into(),
            nom: nom.into(),
            prenom: "Léa".into(),
            exam_code: "BAC26-PHILO".into(),
            exam_subject: "Philosophie".into(),
            session: "2026".into(),
            establishment_uai: "0750001A".into(),
            establishment_name: "Lycée test".into(),
            grade: Some(12.5),
            absent: false,
            details: vec![],
            appreciation: Some("Bien.".into()),
            annotations: vec![],
            pages: vec![scan(), scan()],
            modified: chrono::DateTime::from_timestamp(1_780_000_000, 0).expect("date"),
        }
    }

    #[test]
    fn each_copy_gets_the_cheapest_face_with_all_its_characters() {
        let latin = latin_font().expect("the Latin subset parses");
        let full = full_font().expect("DejaVu parses");
        for c in ['A', 'é', 'Ł', 'ễ', 'ş', '—', '°'] {
            assert!(
                latin.glyph(u32::from(c)).is_some(),
                "{c} is in the Latin subset"
            );
        }
        let face = |nom: &str| face_for(texts(&copy(nom))).expect("a face");
        assert!(matches!(face("N'Diaye-Lefèvre Œdipe"), Face::Builtin));
        assert!(matches!(face("Nguyễn"), Face::Embedded(f) if std::ptr::eq(f, latin)));
        assert!(matches!(face("Şahin"), Face::Embedded(f) if std::ptr::eq(f, latin)));
        assert!(matches!(face("Дмитриев"), Face::Embedded(f) if std::ptr::eq(f, full)));
    }

    /// The same copy with the same options gives the same bytes, whatever
    /// else the process renders meanwhile and on whichever thread.
    #[test]
    fn the_same_copy_renders_to_the_same_bytes_across_threads() {
        let options = RenderOptions::for_exam(
            "BAC26-PHILO",
            ExamKind::Ponctuel,
            RequestedOptions::default(),
        )
        .expect("options");
        for nom in ["Lefèvre", "Şahin"] {
            let first = render(copy(nom), options).expect("rendered");
            // Other renders in between, on other threads, take whatever
            // process-wide numbering printpdf keeps.
            let others: Vec<Vec<u8>> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..4)
                    .map(|_| s.spawn(|| render(copy(nom), options).expect("rendered")))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("thread"))
                    .collect()
            });
            for other in &others {
                assert!(other == &first, "{nom}: a render on another thread differs");
            }
            let again = render(copy(nom), options).expect("rendered");
            assert!(again == first, "{nom}: a second render differs");
        }
    }

    /// Copies that between them reach every branch of the cover and of
    /// the three faces: Helvetica, the Latin subset and the full font,
    /// with annotations, details, appreciation, absence and no grade, and
    /// characters the fonts lack or that share a glyph.
    fn varied_copies() -> Vec<(String, CopyDocument, RenderOptions)> {
        let all = RenderOptions::for_exam(
            "BAC26-PHILO",
            ExamKind::Ponctuel,
            RequestedOptions::default(),
        )
        .expect("options");
        let none = RenderOptions::for_exam(
            "BAC26-PHILO",
            ExamKind::Ponctuel,
            RequestedOptions {
                details: false,
                appreciation: false,
                annotations: false,
            },
        )
        .expect("options");
        let full = |nom: &str, appreciation: &str, note: &str| {
            let mut c = copy(nom);
            c.details = vec![
                QuestionMark {
                    question: "1".into(),
                    mark: 4.5,
                    max: 6.0,
                },
                QuestionMark {
                    question: "2 b)".into(),
                    mark: 8.0,
                    max: 14.0,
                },
            ];
            c.appreciation = Some(appreciation.into());
            c.annotations = vec![
                Annotation {
                    page: 1,
                    x: 0.25,
                    y: 0.5,
                    kind: "tick".into(),
                    text: None,
                },
                Annotation {
                    page: 2,
                    x: 0.8,
                    y: 0.1,
                    kind: "comment".into(),
                    text: Some(note.into()),
                },
            ];
            c
        };
        let long = "Un devoir solide, bien construit ; la deuxième partie manque d'exemples \
                    précis et la conclusion reste un peu rapide. Continuez ainsi.\nSecond paragraphe.";
        let mut absent = copy("Martin");
        absent.absent = true;
        absent.grade = None;
        let mut ungraded = copy("Œdipe-Ÿvon");
        ungraded.grade = None;
        ungraded.appreciation = None;
        vec![
            (
                "builtin-all".into(),
                full("Lefèvre", long, "Très « bien » — 3€"),
                all,
            ),
            (
                "builtin-none".into(),
                full("Lefèvre", long, "Très bien"),
                none,
            ),
            ("builtin-absent".into(), absent, all),
            ("builtin-ungraded".into(), ungraded, all),
            (
                "latin-all".into(),
                full("Şahin", long, "Nguyễn\u{a0}: bien\tvu"),
                all,
            ),
            ("latin-none".into(), full("Łukasz", "Bien.", "ok"), none),
            (
                "full-all".into(),
                full("Дмитриев", "Хорошо, Дмитрий.", "Верно ✓ 😀"),
                all,
            ),
            (
                "full-none".into(),
                full("Дмитриев", "Хорошо.", "Верно"),
                none,
            ),
        ]
    }

    /// SHA-256 of each of [`varied_copies`]' PDFs, as printpdf rendered
    /// them with its `text_layout` feature (feb464c), before copiste cut
    /// the fonts itself: the same bytes since.
    const VARIED_COPIES_SHA256: &[(&str, &str)] = &[
        (
            "builtin-all",
            "71ab7b5d5234c4eb98175a5c3d7fccb17ec03c62ea559b830ac7a73ca6457328",
        ),
        (
            "builtin-none",
            "06fa862884826295d0b0ec092215b4da8704be378ec4cded3176349e994b8c1a",
        ),
        (
            "builtin-absent",
            "fe54d6eb96c673334b6524cd69b877fc3246fc1fe2a5574f1ec680109773be2c",
        ),
        (
            "builtin-ungraded",
            "6579769b8a0cd732c80ceadb8328995c72163b23fa74e11ba73435f0cb14b411",
        ),
        (
            "latin-all",
            "237bfc6738d85b7e9f03447f02ec77586e7d1b6186355b93b86acaa15dcf280d",
        ),
        (
            "latin-none",
            "674ef4c8ecb04cd93e8d3fadb46350d62a364d262ea69e5ade0d9e7bd0e61eab",
        ),
        (
            "full-all",
            "494dbc89f3a47c358661b431c6943929fe6f7d76ed7f139bc16c14c7ba1d5f1d",
        ),
        (
            "full-none",
            "bd5854eda25b3b57814594a0b217a0a07eed9f308e9bae531adc31efaabad8e3",
        ),
    ];

    /// Renders [`varied_copies`] and checks each PDF's bytes against
    /// [`VARIED_COPIES_SHA256`]. When `COPISTE_PDF_DUMP` names a folder,
    /// the PDFs are also written there, to compare two builds with `cmp`
    /// when a change is meant to alter them (and then to record the new
    /// digests).
    #[test]
    fn varied_copies_render_to_the_recorded_bytes() {
        let dump = std::env::var_os("COPISTE_PDF_DUMP").map(std::path::PathBuf::from);
        let copies = varied_copies();
        assert_eq!(copies.len(), VARIED_COPIES_SHA256.len());
        for (name, copy, options) in copies {
            let bytes = render(copy, options).expect("rendered");
            if let Some(dir) = &dump {
                std::fs::write(dir.join(format!("{name}.pdf")), &bytes).expect("written");
            }
            let read = lopdf::Document::load_mem(&bytes).expect("lopdf reads it");
            assert_eq!(read.get_pages().len(), 3, "{name}");
            let recorded = VARIED_COPIES_SHA256
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, digest)| *digest);
            assert_eq!(
                Some(hex::encode(Sha256::digest(&bytes)).as_str()),
                recorded,
                "{name}: the PDF's bytes changed"
            );
        }
    }

    #[test]
    fn a_prepared_pdf_knows_its_length_and_reads_back() {
        let options = RenderOptions::for_exam(
            "BAC26-PHILO",
            ExamKind::Ponctuel,
            RequestedOptions::default(),
        )
        .expect("options");
        for nom in ["Lefèvre", "Şahin", "Дмитриев"] {
            let mut pdf = prepare(copy(nom), options).expect("prepared");
            let len = pdf.size();
            let mut bytes = Vec::new();
            pdf.write_to(&mut bytes).expect("written");
            assert_eq!(bytes.len() as u64, len);
            let read = lopdf::Document::load_mem(&bytes).expect("lopdf reads it");
            assert_eq!(read.get_pages().len(), 3);
            let cover = read.extract_text(&[1]).expect("text");
            assert!(cover.contains(nom), "{cover}");
            for object in read.objects.values() {
                if let Ok(stream) = object.as_stream() {
                    assert!(stream.dict.get(SCAN_SLOT.as_bytes()).is_err());
                }
            }
        }
    }
}
