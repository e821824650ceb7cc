//! The names and cells a zip shows: each copy's entry name, and the rows
//! of `manifest.csv` and `errors.csv`, whose cells from the import are
//! neutralised so that a spreadsheet does not run them.

use std::collections::HashSet;

use anyhow::Context as _;

use super::Failure;
use crate::db::render::CopyRow;

/// A zip entry name `<numero>_<NOM>_<Prenom>.pdf` in safe ASCII: letters
/// transliterated, anything else but letters and digits turned into `-`,
/// never a path, never `..`, never a reserved device name.
pub fn entry_name(numero: &str, nom: &str, prenom: &str) -> String {
    fn clean(s: &str) -> String {
        let ascii = deunicode::deunicode(s);
        let mut out = String::with_capacity(ascii.len());
        for c in ascii.chars() {
            if c.is_ascii_alphanumeric() {
                out.push(c);
            } else if !out.ends_with('-') {
                out.push('-');
            }
        }
        out.trim_matches('-').chars().take(40).collect()
    }
    let numero = clean(numero);
    let nom = clean(nom).to_ascii_uppercase();
    let prenom = {
        let p = clean(prenom).to_ascii_lowercase();
        let mut capital = true;
        p.chars()
            .map(|c| {
                let c = if capital { c.to_ascii_uppercase() } else { c };
                capital = c == '-';
                c
            })
            .collect::<String>()
    };
    let mut stem = [numero, nom, prenom]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("_");
    if stem.is_empty() {
        stem = "copie".into();
    }
    const RESERVED: [&str; 22] = [
        "CON", "PRN", "AUX", "NUL", "COM1", "COM2", "COM3", "COM4", "COM5", "COM6", "COM7", "COM8",
        "COM9", "LPT1", "LPT2", "LPT3", "LPT4", "LPT5", "LPT6", "LPT7", "LPT8", "LPT9",
    ];
    if RESERVED.contains(&stem.to_ascii_uppercase().as_str()) {
        stem.insert(0, '_');
    }
    format!("{stem}.pdf")
}

/// A text cell of `manifest.csv` or `errors.csv` made from user data,
/// neutralised as OWASP recommends for CSV exports: a cell beginning with
/// `=`, `+`, `-`, `@`, a tab or a carriage return gets a leading `'`, so
/// that a spreadsheet shows it as text instead of running it as a formula.
pub fn csv_text(cell: &str) -> std::borrow::Cow<'_, str> {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        std::borrow::Cow::Owned(format!("'{cell}"))
    } else {
        std::borrow::Cow::Borrowed(cell)
    }
}

/// `name`, or `name` with `_2`, `_3`… before the extension, whichever is
/// not taken yet; records it as taken.
pub(super) fn unique(name: String, taken: &mut HashSet<String>) -> String {
    if taken.insert(name.to_ascii_lowercase()) {
        return name;
    }
    let stem = name.trim_end_matches(".pdf");
    (2..)
        .map(|n| format!("{stem}_{n}.pdf"))
        .find(|candidate| taken.insert(candidate.to_ascii_lowercase()))
        .unwrap_or(name)
}

/// The row of `manifest.csv` of `row`, written as `entry`. Grades and
/// page counts are written by copiste; the other cells come from the
/// import.
pub(super) fn manifest_row(row: &CopyRow, entry: &str) -> Vec<String> {
    let grade = match (row.absent, row.grade) {
        (true, _) => "absent".to_owned(),
        (false, Some(g)) => g.to_string(),
        (false, None) => String::new(),
    };
    vec![
        csv_text(&row.numero).into_owned(),
        csv_text(&row.nom).into_owned(),
        csv_text(&row.prenom).into_owned(),
        grade,
        row.page_keys.len().to_string(),
        csv_text(entry).into_owned(),
    ]
}

/// `manifest.csv`: its header, then `rows`.
pub(super) fn manifest_csv(rows: &[Vec<String>]) -> anyhow::Result<Vec<u8>> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record(["numero", "nom", "prenom", "grade", "pages", "entry"])?;
    for row in rows {
        writer.write_record(row)?;
    }
    writer.into_inner().context("finishing manifest.csv")
}

/// `errors.csv`: its header, then a row per copy left out.
pub(super) fn errors_csv(failures: &[Failure]) -> anyhow::Result<Vec<u8>> {
    let mut errors = csv::Writer::from_writer(Vec::new());
    errors.write_record(["numero", "nom", "prenom", "reason"])?;
    for f in failures {
        errors.write_record([
            &*csv_text(&f.numero),
            &*csv_text(&f.nom),
            &*csv_text(&f.prenom),
            &*csv_text(&f.reason),
        ])?;
    }
    errors.into_inner().context("finishing errors.csv")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_that_a_spreadsheet_would_run_are_neutralised() {
        for cell in [
            "=HYPERLINK(\"http://evil.example/\",\"x\")",
            "+1+1",
            "-2+3",
            "@SUM(A1)",
            "\tx",
            "\rx",
        ] {
            assert_eq!(csv_text(cell), format!("'{cell}"));
        }
        for cell in ["Martin", "2026001", "N'Diaye", "", "a=b"] {
            assert_eq!(csv_text(cell), cell);
        }
    }

    #[test]
    fn entry_names_are_safe_ascii_and_unique() {
        assert_eq!(
            entry_name("2026001", "N'Diaye", "Hélène"),
            "2026001_N-DIAYE_Helene.pdf"
        );
        assert_eq!(
            entry_name("2026002", "Nguyễn", "Linh"),
            "2026002_NGUYEN_Linh.pdf"
        );
        assert_eq!(
            entry_name("2026003", "Kowalski", "Łukasz"),
            "2026003_KOWALSKI_Lukasz.pdf"
        );
        assert_eq!(
            entry_name("2026004", "Dupont-Aignan", "jean-baptiste"),
            "2026004_DUPONT-AIGNAN_Jean-Baptiste.pdf"
        );
        let hostile = entry_name("../../etc", "/passwd", "..");
        assert!(
            !hostile.contains('/') && !hostile.contains(".."),
            "{hostile}"
        );
        assert_eq!(entry_name("CON", "", ""), "_CON.pdf");
        let emoji = entry_name("7", "😀 Smile", "🎓");
        assert!(emoji.is_ascii() && !emoji.contains('/'), "{emoji}");
        let mut taken = HashSet::new();
        let a = unique(entry_name("1", "Martin", "Léa"), &mut taken);
        let b = unique(entry_name("1", "Martin", "Léa"), &mut taken);
        let c = unique(entry_name("1", "MARTIN", "lea"), &mut taken);
        assert_eq!(a, "1_MARTIN_Lea.pdf");
        assert_eq!(b, "1_MARTIN_Lea_2.pdf");
        assert_eq!(c, "1_MARTIN_Lea_3.pdf");
    }
}
