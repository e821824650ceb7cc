//! The PDFs of varied copies: faces, bytes pinned by digest, sizes.

use sha2::{Digest as _, Sha256};

use super::{
    document::SCAN_SLOT,
    fonts::{Face, face_for, full_font, latin_font, texts},
    *,
};
use crate::{
    domain::ExamKind,
    render::{RenderOptions, RequestedOptions},
};

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
/// characters the fonts lack or that share a glyph. Long on purpose: one
/// case after another, read as a table.
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
