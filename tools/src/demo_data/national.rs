//! A national-shaped session in the pieced export format (format 2 of
//! `docs/import-format.md`), for `copiste bench national`.
//!
//! At scale 1.0 the session has the real national shape: 4 600
//! establishments in 30 academies (one much larger than the others),
//! 700 000 candidates, ten exams of the three kinds and 3.5 million graded
//! copies with graders, grading details, appreciations and annotations.
//! Every candidate sits five exams (one of each pair). Establishment sizes
//! are skewed as in reality, from about 20 to 600 candidates.
//!
//! The rows are national but the bytes are not: every copy has one small
//! scanned page (a few KB) taken from a pool of distinct JPEGs, so that a
//! full-size session fits this kind of machine. The export is written one
//! establishment at a time (one piece file each), so the generator's memory
//! does not grow with the session.

use std::{
    fs::File,
    io::{BufWriter, Write as _},
    path::Path,
};

use anyhow::{Context as _, ensure};
use rand::{Rng as _, SeedableRng as _, seq::IndexedRandom as _};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::{SESSION_CODE, names};
use copiste::{
    domain::{ExamKind, Uai},
    import::manifest::{
        Academy, Annotation, AnnotationKind, Candidate, Copy, Establishment, Exam, Grader,
        QuestionMark, Session,
    },
};

/// The national session's figures at scale 1.0.
pub const NATIONAL_ESTABLISHMENTS: f64 = 4_600.0;
/// Candidates of the national session.
pub const NATIONAL_CANDIDATES: f64 = 700_000.0;
/// Academies, at every scale.
pub const ACADEMIES: usize = 30;
/// Exams each candidate sits (one of each pair of [`EXAMS`]).
pub const EXAMS_PER_CANDIDATE: usize = 5;
/// The version of the pieced format written here.
pub const PIECED_FORMAT: u32 = 2;
/// The smallest and largest establishment, in candidates.
const SIZES: (f64, f64) = (20.0, 600.0);
/// The large academy weighs this many ordinary ones.
const LARGE_ACADEMY_WEIGHT: f64 = 5.0;
/// Copies graded by one grader, roughly (one lot).
const COPIES_PER_GRADER: usize = 200;

/// The ten exams: pairs of which every candidate sits one.
pub const EXAMS: [(&str, &str, ExamKind); 10] = [
    (
        "NAT26-PHILO-G",
        "Philosophie (voie générale)",
        ExamKind::Ponctuel,
    ),
    (
        "NAT26-PHILO-T",
        "Philosophie (voie technologique)",
        ExamKind::Ponctuel,
    ),
    ("NAT26-FR-ECRIT", "Français, écrit", ExamKind::Ponctuel),
    ("NAT26-FR-ORAL", "Français, oral", ExamKind::Ponctuel),
    (
        "NAT26-SPE-MATHS",
        "Spécialité mathématiques",
        ExamKind::Ponctuel,
    ),
    ("NAT26-SPE-SES", "Spécialité SES", ExamKind::Ponctuel),
    (
        "NAT26-SPE-PC",
        "Spécialité physique-chimie",
        ExamKind::Harmonised,
    ),
    ("NAT26-SPE-SVT", "Spécialité SVT", ExamKind::Harmonised),
    ("NAT26-E3C-HG", "Histoire-géographie (E3C)", ExamKind::E3c),
    ("NAT26-E3C-LVA", "Langue vivante A (E3C)", ExamKind::E3c),
];

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct NationalOptions {
    /// 1.0 is the national session; 0.01 a hundredth of it.
    pub scale: f64,
    /// Distinct JPEGs the copies' pages are drawn from.
    pub scan_pool: u32,
    /// Seed of every random choice.
    pub seed: u64,
}

/// The session's shape, drawn before anything is written.
#[derive(Debug, Clone)]
pub struct NationalShape {
    /// Per establishment: its academy's index and its candidates.
    pub establishments: Vec<(usize, u32)>,
}

impl NationalShape {
    /// Draws the establishments' academies and sizes for `opts`.
    pub fn draw(opts: &NationalOptions) -> anyhow::Result<Self> {
        ensure!(
            opts.scale > 0.0 && opts.scale <= 2.0,
            "the scale must be above 0 and at most 2 (1.0 is the national session), not {}",
            opts.scale
        );
        ensure!(
            opts.scan_pool >= 1,
            "the scan pool must hold at least 1 scan"
        );
        let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
        let count = ((NATIONAL_ESTABLISHMENTS * opts.scale).round() as usize).max(ACADEMIES);
        let target = (NATIONAL_CANDIDATES * opts.scale)
            .round()
            .max(count as f64 * SIZES.0);
        // Skewed sizes: most establishments small, a few large.
        let raw: Vec<f64> = (0..count)
            .map(|_| {
                let u: f64 = rng.random();
                SIZES.0 + (SIZES.1 - SIZES.0) * u * u * u
            })
            .collect();
        let factor = target / raw.iter().sum::<f64>();
        let mut sizes: Vec<u32> = raw
            .iter()
            .map(|s| (s * factor).clamp(SIZES.0, SIZES.1).round() as u32)
            .collect();
        // Bring the total to the target exactly, one candidate at a time
        // on establishments with room.
        let mut total: i64 = sizes.iter().map(|&s| i64::from(s)).sum();
        let mut i = 0;
        while total != target as i64 && i < 100 * count {
            let k = i % count;
            if total < target as i64 && f64::from(sizes[k]) < SIZES.1 {
                sizes[k] += 1;
                total += 1;
            } else if total > target as i64 && f64::from(sizes[k]) > SIZES.0 {
                sizes[k] -= 1;
                total -= 1;
            }
            i += 1;
        }
        // Academies by weight: the first weighs LARGE_ACADEMY_WEIGHT; every
        // academy gets at least one establishment.
        let weights: Vec<f64> = (0..ACADEMIES)
            .map(|a| if a == 0 { LARGE_ACADEMY_WEIGHT } else { 1.0 })
            .collect();
        let sum: f64 = weights.iter().sum();
        let establishments = sizes
            .into_iter()
            .enumerate()
            .map(|(e, size)| {
                let academy = if e < ACADEMIES {
                    e
                } else {
                    let mut x = rng.random::<f64>() * sum;
                    weights
                        .iter()
                        .position(|w| {
                            x -= w;
                            x < 0.0
                        })
                        .unwrap_or(0)
                };
                (academy, size)
            })
            .collect();
        Ok(Self { establishments })
    }

    /// Candidates of the whole session.
    pub fn candidates(&self) -> u64 {
        self.establishments.iter().map(|&(_, s)| u64::from(s)).sum()
    }

    /// Copies of the whole session.
    pub fn copies(&self) -> u64 {
        self.candidates() * EXAMS_PER_CANDIDATE as u64
    }

    /// The academy with the most establishments.
    pub fn largest_academy(&self) -> String {
        let mut counts = [0usize; ACADEMIES];
        for &(a, _) in &self.establishments {
            counts[a] += 1;
        }
        let largest = (0..ACADEMIES).max_by_key(|&a| counts[a]).unwrap_or(0);
        academy_code(largest)
    }
}

/// The code of the `a`-th academy.
pub fn academy_code(a: usize) -> String {
    format!("ACA{a:02}")
}

/// The UAI of the `e`-th establishment.
pub fn establishment_uai(e: usize) -> Uai {
    Uai::from_number(1_000_000 + e as u32)
}

/// The first part of a pieced export: the session and its reference data.
#[derive(Serialize)]
struct SessionFile<'a> {
    format: u32,
    session: Session,
    academies: Vec<Academy>,
    establishments: &'a [Establishment],
    exams: Vec<Exam>,
    graders: &'a [Grader],
}

/// One piece of a pieced export: one establishment's candidates and copies.
#[derive(Serialize)]
struct PieceFile<'a> {
    format: u32,
    candidates: &'a [Candidate],
    copies: &'a [Copy],
}

/// What [`write_pieced`] wrote.
#[derive(Debug, Clone, Default)]
pub struct NationalSummary {
    pub establishments: u64,
    pub candidates: u64,
    pub copies: u64,
    pub graders: u64,
    /// Bytes of the export directory (JSON and scans).
    pub bytes: u64,
}

/// Writes the session of `shape` in the pieced format into `dir` (created;
/// it must not exist or be empty): `session.json`, one `pieces/<UAI>.json`
/// per establishment and the scan pool under `scans/`.
pub fn write_pieced(
    dir: &Path,
    opts: &NationalOptions,
    shape: &NationalShape,
) -> anyhow::Result<NationalSummary> {
    std::fs::create_dir_all(dir.join("pieces"))
        .with_context(|| format!("creating {}", dir.display()))?;
    std::fs::create_dir_all(dir.join("scans")).context("creating the scans folder")?;
    let mut summary = NationalSummary::default();
    let pool = write_scan_pool(dir, opts, &mut summary)?;
    let (graders, academy_graders) = graders(opts, shape);
    let establishments: Vec<Establishment> = shape
        .establishments
        .iter()
        .enumerate()
        .map(|(e, &(a, _))| Establishment {
            uai: establishment_uai(e),
            name: format!("Lycée national n° {} ({})", e + 1, academy_code(a)),
            academy: academy_code(a),
            abroad: e % 97 == 96,
        })
        .collect();
    let session = SessionFile {
        format: PIECED_FORMAT,
        session: Session {
            code: SESSION_CODE.to_owned(),
            name: "Baccalauréat, session nationale 2026".to_owned(),
        },
        academies: (0..ACADEMIES)
            .map(|a| Academy {
                code: academy_code(a),
                name: format!("Académie n° {}", a + 1),
            })
            .collect(),
        establishments: &establishments,
        exams: EXAMS
            .iter()
            .map(|&(code, subject, kind)| Exam {
                code: code.to_owned(),
                subject: subject.to_owned(),
                kind,
            })
            .collect(),
        graders: &graders,
    };
    summary.bytes += write_json(&dir.join("session.json"), &session)?;
    summary.graders = graders.len() as u64;

    write_pieces(dir, opts, shape, &pool, &academy_graders, &mut summary)?;
    Ok(summary)
}

/// Writes the pool of `opts.scan_pool` small scans under `scans/`, that
/// the copies' pages draw from; returns their paths.
fn write_scan_pool(
    dir: &Path,
    opts: &NationalOptions,
    summary: &mut NationalSummary,
) -> anyhow::Result<Vec<String>> {
    let pool: Vec<String> = (0..opts.scan_pool)
        .map(|i| format!("scans/pool-{i:05}.jpg"))
        .collect();
    for (i, path) in pool.iter().enumerate() {
        let jpeg = small_scan(opts.seed, i as u64);
        summary.bytes += jpeg.len() as u64;
        std::fs::write(dir.join(path), jpeg).with_context(|| format!("writing {path}"))?;
    }
    Ok(pool)
}

/// The graders, one per lot of copies of each academy, with the codes of
/// each academy's.
fn graders(opts: &NationalOptions, shape: &NationalShape) -> (Vec<Grader>, Vec<Vec<String>>) {
    let mut academy_copies = [0usize; ACADEMIES];
    for &(a, size) in &shape.establishments {
        academy_copies[a] += size as usize * EXAMS_PER_CANDIDATE;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed ^ 0x6772_6164);
    let mut graders = Vec::new();
    let mut academy_graders: Vec<Vec<String>> = vec![Vec::new(); ACADEMIES];
    for (a, &copies) in academy_copies.iter().enumerate() {
        for k in 0..copies.div_ceil(COPIES_PER_GRADER).max(1) {
            let code = format!("COR-{}-{k:05}", academy_code(a));
            graders.push(Grader {
                code: code.clone(),
                nom: pick(&mut rng, names::GRADER_NOMS).to_owned(),
                prenom: pick(&mut rng, names::GRADER_PRENOMS).to_owned(),
                academy: academy_code(a),
            });
            academy_graders[a].push(code);
        }
    }
    (graders, academy_graders)
}

/// Writes one `pieces/<UAI>.json` per establishment: its candidates and
/// their copies, each page drawn from `pool`, the graders taken in turn by
/// lots; adds them to `summary`.
fn write_pieces(
    dir: &Path,
    opts: &NationalOptions,
    shape: &NationalShape,
    pool: &[String],
    academy_graders: &[Vec<String>],
    summary: &mut NationalSummary,
) -> anyhow::Result<()> {
    let mut numero = 0u64;
    let mut lots = vec![0usize; ACADEMIES];
    for (e, &(a, size)) in shape.establishments.iter().enumerate() {
        let uai = establishment_uai(e);
        let mut piece_rng = ChaCha8Rng::seed_from_u64(opts.seed.wrapping_add(e as u64 + 1));
        let mut candidates = Vec::with_capacity(size as usize);
        let mut copies = Vec::with_capacity(size as usize * EXAMS_PER_CANDIDATE);
        for c in 0..size {
            numero += 1;
            let (nom, prenom) = person(&mut piece_rng);
            let candidate = Candidate {
                numero: format!("26{numero:010}"),
                nom,
                prenom,
                establishment: uai.clone(),
            };
            for pair in 0..EXAMS_PER_CANDIDATE {
                let exam = EXAMS[2 * pair + ((c as usize + pair) % 2)].0;
                let graders = &academy_graders[a];
                let grader = graders[(lots[a] / COPIES_PER_GRADER) % graders.len()].clone();
                lots[a] += 1;
                let page = &pool[piece_rng.random_range(0..pool.len())];
                copies.push(copy(&mut piece_rng, exam, &candidate.numero, grader, page));
            }
            candidates.push(candidate);
        }
        let piece = PieceFile {
            format: PIECED_FORMAT,
            candidates: &candidates,
            copies: &copies,
        };
        summary.bytes += write_json(&dir.join(format!("pieces/{uai}.json")), &piece)?;
        summary.establishments += 1;
        summary.candidates += candidates.len() as u64;
        summary.copies += copies.len() as u64;
    }
    Ok(())
}

/// One graded copy (2 % absent) with one page.
fn copy(rng: &mut ChaCha8Rng, exam: &str, numero: &str, grader: String, page: &str) -> Copy {
    if rng.random_bool(0.02) {
        return Copy {
            exam: exam.to_owned(),
            candidate: numero.to_owned(),
            grader: Some(grader),
            absent: true,
            grade: None,
            grading_details: Vec::new(),
            appreciation: None,
            annotations: Vec::new(),
            pages: Vec::new(),
        };
    }
    let marks: Vec<f64> = (0..3)
        .map(|_| f64::from(rng.random_range(0..=14u8)) / 2.0)
        .collect();
    let grade = marks.iter().sum::<f64>().min(20.0);
    Copy {
        exam: exam.to_owned(),
        candidate: numero.to_owned(),
        grader: Some(grader),
        absent: false,
        grade: Some(grade),
        grading_details: ["I", "II", "III"]
            .iter()
            .zip(&marks)
            .map(|(q, &mark)| QuestionMark {
                question: (*q).to_owned(),
                mark,
                max: 7.0,
            })
            .collect(),
        appreciation: Some(
            if grade >= 10.0 {
                "Copie solide, argumentation claire."
            } else {
                "Des efforts, mais l'argumentation reste à construire."
            }
            .to_owned(),
        ),
        annotations: vec![
            Annotation {
                page: 1,
                x: 0.2,
                y: 0.3,
                kind: AnnotationKind::Mark,
                text: String::new(),
            },
            Annotation {
                page: 1,
                x: 0.6,
                y: 0.7,
                kind: AnnotationKind::Comment,
                text: "Bien vu".to_owned(),
            },
        ],
        pages: vec![page.to_owned()],
    }
}

/// A candidate's nom and prénom from the demo's name pools.
fn person(rng: &mut ChaCha8Rng) -> (String, String) {
    let origin = &names::ORIGINS[rng.random_range(0..names::ORIGINS.len())];
    (
        pick(rng, origin.noms).to_owned(),
        pick(rng, origin.prenoms).to_owned(),
    )
}

fn pick<'a>(rng: &mut ChaCha8Rng, from: &[&'a str]) -> &'a str {
    from.choose(rng).copied().unwrap_or("Martin")
}

/// Serialises `value` to `path`; returns the bytes written.
fn write_json(path: &Path, value: &impl Serialize) -> anyhow::Result<u64> {
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut out = BufWriter::new(file);
    serde_json::to_writer(&mut out, value)
        .with_context(|| format!("writing {}", path.display()))?;
    out.flush()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(std::fs::metadata(path)?.len())
}

/// Width and height of a small scan, in pixels.
const SMALL_SCAN: (u16, u16) = (248, 351);

/// A small grey page (a few KB) whose strokes depend on `seed` and
/// `index`: distinct bytes for each index.
pub fn small_scan(seed: u64, index: u64) -> Vec<u8> {
    let (w, h) = (usize::from(SMALL_SCAN.0), usize::from(SMALL_SCAN.1));
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut pixels = vec![245u8; w * h];
    // Lines of "handwriting": short dark strokes on ruled lines.
    for line in (20..h - 20).step_by(14) {
        let mut x = 16 + rng.random_range(0..10);
        while x < w - 20 {
            let len = rng.random_range(3..14);
            for dx in 0..len.min(w - 20 - x) {
                let y = line + rng.random_range(0..3);
                pixels[y * w + x + dx] = rng.random_range(20..90);
            }
            x += len + rng.random_range(2..8);
        }
    }
    let mut out = Vec::with_capacity(8 << 10);
    let encoder = jpeg_encoder::Encoder::new(&mut out, 60);
    if encoder
        .encode(
            &pixels,
            SMALL_SCAN.0,
            SMALL_SCAN.1,
            jpeg_encoder::ColorType::Luma,
        )
        .is_err()
    {
        // Encoding into memory cannot fail for these fixed dimensions.
        return Vec::new();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shape_has_the_national_proportions() {
        let shape = NationalShape::draw(&NationalOptions {
            scale: 0.1,
            scan_pool: 8,
            seed: 1,
        })
        .unwrap();
        assert_eq!(shape.establishments.len(), 460);
        assert_eq!(shape.candidates(), 70_000);
        assert_eq!(shape.copies(), 350_000);
        let sizes: Vec<u32> = shape.establishments.iter().map(|&(_, s)| s).collect();
        assert!(sizes.iter().all(|&s| (20..=600).contains(&s)), "{sizes:?}");
        assert!(sizes.iter().any(|&s| s < 60) && sizes.iter().any(|&s| s > 300));
        assert_eq!(shape.largest_academy(), "ACA00");
    }

    #[test]
    fn small_scans_are_distinct_jpegs_of_a_few_kb() {
        let a = small_scan(1, 0);
        let b = small_scan(1, 1);
        assert_ne!(a, b);
        assert_eq!(&a[..2], &[0xFF, 0xD8]);
        assert!(a.len() > 1_000 && a.len() < 20_000, "{} bytes", a.len());
    }
}
