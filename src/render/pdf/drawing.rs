//! What the pages draw: the cover page (who, what, where, the grade, the
//! details and appreciation when asked) and the annotations over a scan.

use printpdf::{Color, Line, LinePoint, Mm, Op, PdfFontHandle, PdfPage, Point, Pt, Rgb, TextItem};

use super::{Annotation, CopyDocument};
use crate::render::RenderOptions;

const A4: (f32, f32) = (210.0, 297.0);
const MARGIN: f32 = 20.0;

pub(super) fn text(ops: &mut Vec<Op>, font: &PdfFontHandle, size: f32, x: f32, y: f32, s: &str) {
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

pub(super) fn colour(r: f32, g: f32, b: f32) -> Color {
    Color::Rgb(Rgb {
        r,
        g,
        b,
        icc_profile: None,
    })
}

/// Splits `s` into lines of at most `width` points at `size` (DejaVu Sans
/// averages about 0.55 em a character).
pub(super) fn wrap(s: &str, size: f32, width: f32) -> Vec<String> {
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

pub(super) fn mm(v: f32) -> f32 {
    v * 72.0 / 25.4
}

pub(super) fn format_mark(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0')
        .trim_end_matches('.')
        .replace('.', ",")
}

/// The cover page: who, what, where, the grade, and what the options ask.
pub(super) fn cover(copy: &CopyDocument, options: RenderOptions, font: &PdfFontHandle) -> PdfPage {
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
pub(super) fn annotation_ops(
    ops: &mut Vec<Op>,
    a: &Annotation,
    w: f32,
    h: f32,
    font: &PdfFontHandle,
) {
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
