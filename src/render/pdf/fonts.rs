//! The typefaces of a copy's PDF: Helvetica when every text is in
//! WinAnsi, else DejaVu Sans (its Latin cut, or the whole font) embedded
//! and subset to the glyphs the copy uses.

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
use printpdf::{Op, ParsedFont, PdfPage, TextItem};

use super::CopyDocument;

/// A typeface copiste embeds: the font as printpdf's own reader parses it
/// (its cmap, advances and metrics), and its PostScript name.
///
/// The fonts are cut down here, through allsorts (the subsetter printpdf
/// itself is built on), rather than by printpdf: its subsetting sits behind
/// its `text_layout` feature, which compiles a whole layout engine
/// (`azul-layout`, `azul-css`, `rust-fontconfig`) that the covers do not
/// use. The cut is the one printpdf made, glyph for glyph, so the PDFs are
/// the same bytes.
pub(super) struct Font {
    parsed: ParsedFont,
    name: Option<String>,
}

impl Font {
    pub(super) fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let mut warnings = Vec::new();
        let parsed = ParsedFont::from_bytes(bytes, 0, &mut warnings)?;
        Some(Self {
            parsed,
            name: postscript_name(bytes),
        })
    }

    /// The glyph showing the character `cp`, if the font has one.
    pub(super) fn glyph(&self, cp: u32) -> Option<u16> {
        self.parsed.lookup_glyph_index(cp)
    }

    /// The font cut down to `glyphs` (sorted, without duplicates), which
    /// are renumbered in that order after `.notdef`, glyph 0, as allsorts
    /// requires.
    pub(super) fn cut(&self, glyphs: &BTreeSet<u16>) -> Option<Subset> {
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
    pub(super) fn embedded(&self, glyphs: &BTreeSet<u16>) -> Option<ParsedFont> {
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
pub(super) struct Subset {
    bytes: Vec<u8>,
    ids: Vec<u16>,
}

/// The font's PostScript name (`name` table, id 6), if it has one.
pub(super) fn postscript_name(bytes: &[u8]) -> Option<String> {
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
pub(super) const FONT_TAG: &str = "CPSTDJ";

/// DejaVu Sans, parsed once per process.
pub(super) fn full_font() -> Option<&'static Font> {
    static FONT: OnceLock<Option<Font>> = OnceLock::new();
    FONT.get_or_init(|| Font::from_bytes(dejavu::sans::regular()))
        .as_ref()
}

/// Whether `c` is in WinAnsiEncoding, the only encoding of the PDF
/// viewers' built-in fonts: ASCII, Latin-1 (every French letter, `°`,
/// `«»`) and 27 typographic signs (`€ … – — ’ “ ” Œ œ Ÿ Š š Ž ž`…).
pub(super) fn win_ansi(c: char) -> bool {
    matches!(u32::from(c), 0x20..=0x7E | 0xA0..=0xFF) || "€‚ƒ„…†‡ˆ‰Š‹ŒŽ‘’“”•–—˜™š›œžŸ".contains(c)
}

/// Characters of [`LATIN`]: Latin with all its extensions (Polish,
/// Turkish, Vietnamese…), combining marks, punctuation, the euro.
pub(super) const LATIN: &[RangeInclusive<u32>] = &[
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
pub(super) fn latin_font() -> Option<&'static Font> {
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
pub(super) enum Face {
    /// Helvetica, built into every PDF viewer: nothing to embed or cut,
    /// for texts all in WinAnsi (nearly every French name and comment).
    Builtin,
    /// A DejaVu Sans subset, embedded, for the others.
    Embedded(&'static Font),
}

/// The cheapest face that shows every character of `texts`: Helvetica,
/// else DejaVu cut from [`latin_font`], else from the full font.
pub(super) fn face_for<'a>(texts: impl Iterator<Item = &'a str>) -> Option<Face> {
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
pub(super) fn used_glyphs(pages: &[PdfPage], font: &Font) -> BTreeSet<u16> {
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
pub(super) fn texts(copy: &CopyDocument) -> impl Iterator<Item = &str> {
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
