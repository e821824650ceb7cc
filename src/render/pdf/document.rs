//! A copy's PDF put together: the cover, each scan on a page of its own
//! size with its annotations, the font, fixed resource names and
//! identifiers (the same copy gives the same bytes), then the scans moved
//! into their image streams.

use std::collections::BTreeMap;

use printpdf::{
    BuiltinFont, ExternalStream, ExternalXObject, FontId, Mm, Op, PdfDocument, PdfFont,
    PdfFontHandle, PdfPage, PdfSaveOptions, Px, XObject, XObjectId, XObjectTransform,
    xobject::DictItem,
};
use sha2::{Digest as _, Sha256};

use super::{
    CopyDocument, RenderError,
    drawing::{annotation_ops, cover},
    fonts::{FONT_TAG, Face, face_for, texts, used_glyphs},
    jpeg,
};
use crate::render::RenderOptions;

/// Assumed density of a scan whose JPEG does not say (the usual scanner
/// setting for exam copies).
const DEFAULT_DPI: f32 = 150.0;

/// Key marking an image stream whose content is filled in after printpdf
/// built the document (the scan's index); removed before writing.
pub(super) const SCAN_SLOT: &str = "CopisteScan";

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
pub(super) struct Counter(u64);

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
    let infos = scan_infos(&copy)?;
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
        let (image, slot) = (
            XObjectId(format!("Scan{index:05}")),
            image_slot(index, info),
        );
        doc.resources
            .xobjects
            .map
            .insert(image.clone(), XObject::External(slot));
        pages.push(scan_page(&copy, options, &font, index, info, image));
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
    fill_scans(&mut doc, copy.pages)?;
    Ok(PreparedPdf { doc })
}

/// Each scan's JPEG header (size, density, colour components); `Err`
/// names the first page that is not a JPEG copiste can embed.
fn scan_infos(copy: &CopyDocument) -> Result<Vec<jpeg::JpegInfo>, RenderError> {
    copy.pages
        .iter()
        .enumerate()
        .map(|(i, bytes)| {
            jpeg::info(bytes).map_err(|source| RenderError::Scan {
                page: i + 1,
                source,
            })
        })
        .collect()
}

/// The page of scan `index`: the image `image` at its real size, with the
/// page's annotations over it when asked.
fn scan_page(
    copy: &CopyDocument,
    options: RenderOptions,
    font: &PdfFontHandle,
    index: usize,
    info: &jpeg::JpegInfo,
    image: XObjectId,
) -> PdfPage {
    let (dpi_x, dpi_y) = info.dpi.unwrap_or((DEFAULT_DPI, DEFAULT_DPI));
    let w_pt = info.width as f32 * 72.0 / dpi_x;
    let h_pt = info.height as f32 * 72.0 / dpi_y;
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
            annotation_ops(&mut ops, a, w_pt, h_pt, font);
        }
    }
    PdfPage::new(Mm(w_pt * 25.4 / 72.0), Mm(h_pt * 25.4 / 72.0), ops)
}

/// Moves each scan into its image stream (marked with its index under
/// [`SCAN_SLOT`]), the mark removed; every scan must find its slot.
fn fill_scans(doc: &mut lopdf::Document, pages: Vec<bytes::Bytes>) -> Result<(), RenderError> {
    let mut scans: Vec<Option<Vec<u8>>> = pages.into_iter().map(|b| Some(b.into())).collect();
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
    Ok(())
}

/// The file identifier of a copy's PDF: 16 bytes of a SHA-256 of what
/// it shows (the cover's texts, the options, the date) and of its scans'
/// sizes, which are cheap to know (hashing the scans themselves would cost
/// as much as the rest of the render).
pub(super) fn document_id(title: &str, copy: &CopyDocument, options: RenderOptions) -> Vec<u8> {
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
pub(super) fn image_slot(index: usize, info: &jpeg::JpegInfo) -> ExternalXObject {
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
