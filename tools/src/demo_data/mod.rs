//! Synthetic session exports for demos, tests and benchmarks
//! (`copiste demo-data`).
//!
//! [`build_manifest`] draws a whole session in the import format (two
//! academies, their establishments, three exams of the three kinds,
//! graders, candidates and graded copies) from a seed; [`generate`] writes
//! it to a directory with a JPEG scan for every page it names, rendered by
//! [`scan_jpeg`]. The same seed always gives the same manifest and the same
//! bytes in every scan.

mod names;
pub mod national;
mod progress;
mod scan;

use std::collections::HashSet;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use anyhow::{Context, bail, ensure};
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use copiste::domain::{ExamKind, Uai};
use copiste::import::manifest::{
    self, Academy, Annotation, AnnotationKind, Candidate, Copy, Establishment, Exam, Grader,
    Manifest, QuestionMark, Session,
};

pub use progress::{LINE_INTERVAL, Progress};
pub use scan::{DPI, HEIGHT, WIDTH};

/// The most establishments a dataset may have (the peak session has about
/// 4 600 centres).
pub const MAX_ESTABLISHMENTS: u32 = 5_000;
/// The most candidates per establishment.
pub const MAX_CANDIDATES: u32 = 2_000;
/// The most pages per copy.
pub const MAX_PAGES: u32 = 40;
/// The most candidates in a whole dataset (the peak session has about
/// 700 000).
pub const MAX_TOTAL_CANDIDATES: u64 = 1_000_000;

/// The session every dataset belongs to.
pub const SESSION_CODE: &str = "BAC-2026";

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoDataOptions {
    /// Number of establishments, spread over the two academies.
    pub establishments: u32,
    /// Candidates per establishment.
    pub candidates: u32,
    /// Scanned pages per copy (absent candidates' copies have none).
    pub pages: u32,
    /// Seed of every random choice: the same seed gives the same dataset,
    /// byte for byte.
    pub seed: u64,
}

/// What [`generate`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoDataSummary {
    pub establishments: u32,
    /// Candidates in total.
    pub candidates: u32,
    /// Copies in total, absent candidates' included.
    pub copies: u32,
    /// Scan files written.
    pub scans: u32,
    /// Bytes written: every scan plus `manifest.json`.
    pub bytes: u64,
}

/// One exam of the demo session, with its marking scheme.
struct ExamDef {
    code: &'static str,
    subject: &'static str,
    kind: ExamKind,
    /// Mean grade out of 20.
    mean: f64,
    /// Questions and their maximum marks, summing to 20.
    scheme: &'static [(&'static str, f64)],
}

const EXAMS: [ExamDef; 3] = [
    ExamDef {
        code: "BAC26-PHILO",
        subject: "Philosophie",
        kind: ExamKind::Ponctuel,
        mean: 9.5,
        scheme: &[("1", 4.0), ("2a", 5.0), ("2b", 5.0), ("3", 4.0), ("4", 2.0)],
    },
    ExamDef {
        code: "BAC26-MATHS-H",
        subject: "Mathématiques",
        kind: ExamKind::Harmonised,
        mean: 11.0,
        scheme: &[
            ("1", 4.0),
            ("2a", 3.0),
            ("2b", 3.0),
            ("3", 5.0),
            ("4a", 2.0),
            ("4b", 3.0),
        ],
    },
    ExamDef {
        code: "BAC26-E3C-HG",
        subject: "Histoire-géographie",
        kind: ExamKind::E3c,
        mean: 11.5,
        scheme: &[("1", 6.0), ("2", 4.0), ("3a", 5.0), ("3b", 5.0)],
    },
];

/// Copies of one establishment and exam given to the same grader in a row.
const LOT_SIZE: usize = 40;

/// Checks the options, with a message naming the first wrong one.
pub fn validate(opts: &DemoDataOptions) -> anyhow::Result<()> {
    let check = |name: &str, value: u32, max: u32| {
        ensure!(
            (1..=max).contains(&value),
            "{name} must be between 1 and {max}, got {value}"
        );
        Ok(())
    };
    check("establishments", opts.establishments, MAX_ESTABLISHMENTS)?;
    check(
        "candidates per establishment",
        opts.candidates,
        MAX_CANDIDATES,
    )?;
    check("pages per copy", opts.pages, MAX_PAGES)?;
    let total = u64::from(opts.establishments) * u64::from(opts.candidates);
    ensure!(
        total <= MAX_TOTAL_CANDIDATES,
        "{} establishments of {} candidates make {total} candidates; at most {MAX_TOTAL_CANDIDATES} are allowed",
        opts.establishments,
        opts.candidates
    );
    Ok(())
}

/// The manifest of the dataset `opts` describes, with every scan path filled
/// in but no file written. Pure and fast: no rendering happens here.
pub fn build_manifest(opts: &DemoDataOptions) -> anyhow::Result<Manifest> {
    validate(opts)?;
    let mut rng = ChaCha8Rng::from_seed(stream_key(opts.seed, b"manifest"));

    let academies: Vec<Academy> = names::ACADEMIES
        .iter()
        .map(|a| Academy {
            code: a.code.to_owned(),
            name: a.name.to_owned(),
        })
        .collect();

    let (establishments, est_academy) = establishments(opts, &mut rng);
    let (graders, academy_graders) = graders(&mut rng);
    let candidates = candidates(opts, &establishments, &mut rng);
    let copies = copies(opts, &candidates, &est_academy, &academy_graders, &mut rng);

    Ok(Manifest {
        format: manifest::FORMAT_VERSION,
        session: Session {
            code: SESSION_CODE.to_owned(),
            name: "Baccalauréat général, session 2026".to_owned(),
        },
        academies,
        establishments,
        exams: EXAMS
            .iter()
            .map(|x| Exam {
                code: x.code.to_owned(),
                subject: x.subject.to_owned(),
                kind: x.kind,
            })
            .collect(),
        graders,
        candidates,
        copies,
    })
}

/// The establishments of the dataset, with the index of each one's
/// academy in [`names::ACADEMIES`]: academies alternate; the last one is
/// abroad once there are three or more.
fn establishments(
    opts: &DemoDataOptions,
    rng: &mut ChaCha8Rng,
) -> (Vec<Establishment>, Vec<usize>) {
    let n_est = opts.establishments as usize;
    let mut used_uai = HashSet::new();
    let mut per_academy = [0usize; 2];
    let mut establishments = Vec::with_capacity(n_est);
    let mut est_academy = Vec::with_capacity(n_est);
    for i in 0..n_est {
        let abroad = n_est >= 3 && i == n_est - 1;
        let academy = if abroad { 0 } else { i % 2 };
        let def = &names::ACADEMIES[academy];
        let (name, department) = if abroad {
            (names::ABROAD.to_owned(), 99)
        } else {
            let j = per_academy[academy];
            per_academy[academy] += 1;
            establishment_name(def.cities, j, academy)
        };
        let uai = loop {
            let number = department * 10_000 + rng.random_range(1..10_000);
            if used_uai.insert(number) {
                break Uai::from_number(number);
            }
        };
        establishments.push(Establishment {
            uai,
            name,
            academy: def.code.to_owned(),
            abroad,
        });
        est_academy.push(academy);
    }
    (establishments, est_academy)
}

/// The graders, two to four per academy, with the codes of each
/// academy's.
fn graders(rng: &mut ChaCha8Rng) -> (Vec<Grader>, [Vec<String>; 2]) {
    let mut graders = Vec::new();
    let mut academy_graders: [Vec<String>; 2] = [Vec::new(), Vec::new()];
    for (a, def) in names::ACADEMIES.iter().enumerate() {
        let n = rng.random_range(2..=4);
        for k in 1..=n {
            let code = format!("COR-{}-{k:03}", def.code);
            graders.push(Grader {
                code: code.clone(),
                nom: pick(rng, names::GRADER_NOMS).to_owned(),
                prenom: pick(rng, names::GRADER_PRENOMS).to_owned(),
                academy: def.code.to_owned(),
            });
            academy_graders[a].push(code);
        }
    }
    (graders, academy_graders)
}

/// The copies, exam by exam. A few candidates missed everything; a few
/// more missed one exam; at least one is absent in any dataset of twenty
/// candidates or more.
fn copies(
    opts: &DemoDataOptions,
    candidates: &[Candidate],
    est_academy: &[usize],
    academy_graders: &[Vec<String>; 2],
    rng: &mut ChaCha8Rng,
) -> Vec<Copy> {
    let dropped_out: Vec<bool> = candidates.iter().map(|_| rng.random_bool(0.01)).collect();
    let per_est = opts.candidates as usize;
    let mut copies = Vec::with_capacity(candidates.len() * EXAMS.len());
    for (e, exam) in EXAMS.iter().enumerate() {
        for (c, candidate) in candidates.iter().enumerate() {
            let est = c / per_est;
            let graders = &academy_graders[est_academy[est]];
            let lot = (c % per_est) / LOT_SIZE;
            let grader = graders[(est + e + lot) % graders.len()].clone();
            let absent = dropped_out[c] || rng.random_bool(0.02);
            copies.push(if absent {
                absent_copy(exam, candidate, grader)
            } else {
                graded_copy(exam, candidate, grader, opts.pages, rng)
            });
        }
    }
    if candidates.len() >= 20 && !copies.iter().any(|c| c.absent) {
        let i = rng.random_range(0..copies.len());
        let copy = &copies[i];
        let exam = EXAMS
            .iter()
            .find(|x| x.code == copy.exam)
            .unwrap_or(&EXAMS[0]);
        let candidate = &candidates[i % candidates.len()];
        copies[i] = absent_copy(exam, candidate, copy.grader.clone().unwrap_or_default());
    }
    copies
}

/// The name and department of the `j`-th establishment of the `academy`-th
/// academy: every (lycée, city) pair once, then the same with a number.
fn establishment_name(cities: &[(&str, u32)], j: usize, academy: usize) -> (String, u32) {
    let (c, l) = (cities.len(), names::LYCEES.len());
    let (city, department) = cities[j % c];
    let lycee = names::LYCEES[(j / c + 7 * (j % c) + 13 * academy) % l];
    let round = j / (c * l);
    let name = if round == 0 {
        format!("{lycee} ({city})")
    } else {
        format!("{lycee} {} ({city})", round + 1)
    };
    (name, department)
}

/// Candidates, establishment by establishment, with unique opaque numéros,
/// two "Martin Léa" per establishment of two or more candidates, and the
/// [`names::FEATURED`] names spread over the dataset.
fn candidates(
    opts: &DemoDataOptions,
    establishments: &[Establishment],
    rng: &mut ChaCha8Rng,
) -> Vec<Candidate> {
    let per_est = opts.candidates as usize;
    let total = per_est * establishments.len();

    // Which establishments get the duplicated pair: all that can, except
    // that the last ones give theirs up when the featured names would
    // otherwise find no room (tiny establishments).
    let featured_needed = if total >= 10 { 4 } else { 0 };
    let mut with_pair = vec![per_est >= 2; establishments.len()];
    let mut free = total - 2 * with_pair.iter().filter(|&&p| p).count();
    for e in (1..establishments.len()).rev() {
        if free >= featured_needed {
            break;
        }
        if with_pair[e] {
            with_pair[e] = false;
            free += 2;
        }
    }

    // Slot assignment: None for a random name.
    let mut fixed: Vec<Option<(&str, &str)>> = vec![None; total];
    for (e, &pair) in with_pair.iter().enumerate() {
        if pair {
            let picks = rand::seq::index::sample(rng, per_est, 2);
            for i in picks {
                fixed[e * per_est + i] = Some(names::DUPLICATE);
            }
        }
    }
    let free_slots: Vec<usize> = (0..total).filter(|&i| fixed[i].is_none()).collect();
    let featured = names::FEATURED.len().min(free_slots.len());
    for (k, name) in names::FEATURED.iter().take(featured).enumerate() {
        fixed[free_slots[k * free_slots.len() / featured]] = Some(*name);
    }

    let origin_total: u32 = names::ORIGINS.iter().map(|o| o.weight).sum();
    let mut numeros = HashSet::with_capacity(total);
    let mut out = Vec::with_capacity(total);
    for (i, slot) in fixed.into_iter().enumerate() {
        let (nom, prenom) = match slot {
            Some(name) => name,
            None => {
                let mut roll = rng.random_range(0..origin_total);
                let origin = names::ORIGINS
                    .iter()
                    .find(|o| {
                        if roll < o.weight {
                            true
                        } else {
                            roll -= o.weight;
                            false
                        }
                    })
                    .unwrap_or(&names::ORIGINS[0]);
                (pick(rng, origin.noms), pick(rng, origin.prenoms))
            }
        };
        let numero = loop {
            let n: u32 = rng.random_range(0..100_000_000);
            if numeros.insert(n) {
                break n;
            }
        };
        out.push(Candidate {
            numero: format!("2026{numero:08}"),
            nom: nom.to_owned(),
            prenom: prenom.to_owned(),
            establishment: establishments[i / per_est].uai.clone(),
        });
    }
    out
}

/// The copy of a candidate who did not sit the exam.
fn absent_copy(exam: &ExamDef, candidate: &Candidate, grader: String) -> Copy {
    Copy {
        exam: exam.code.to_owned(),
        candidate: candidate.numero.clone(),
        grader: Some(grader),
        absent: true,
        grade: None,
        grading_details: Vec::new(),
        appreciation: None,
        annotations: Vec::new(),
        pages: Vec::new(),
    }
}

/// A graded copy of `pages` scanned pages.
fn graded_copy(
    exam: &ExamDef,
    candidate: &Candidate,
    grader: String,
    pages: u32,
    rng: &mut ChaCha8Rng,
) -> Copy {
    // A bell-shaped grade (Irwin–Hall), in quarter points.
    let z: f64 = (0..12).map(|_| rng.random::<f64>()).sum::<f64>() - 6.0;
    let quarters = ((exam.mean + 3.8 * z).clamp(0.0, 20.0) * 4.0).round() as u32;
    let grade = f64::from(quarters) / 4.0;

    let grading_details = split_marks(exam.scheme, quarters, rng);

    let band = match grade {
        g if g < 6.0 => 0,
        g if g < 10.0 => 1,
        g if g < 14.0 => 2,
        g if g < 17.0 => 3,
        _ => 4,
    };
    let appreciation = format!(
        "{} {}",
        pick(rng, names::APPRECIATION_OPENINGS[band]),
        pick(rng, names::APPRECIATION_REMARKS[band])
    );

    let n_annotations = rng.random_range(1..=4);
    let mut annotations: Vec<Annotation> = (0..n_annotations)
        .map(|_| {
            let kind = if rng.random_bool(0.4) {
                AnnotationKind::Mark
            } else {
                AnnotationKind::Comment
            };
            Annotation {
                page: rng.random_range(1..=pages),
                x: round3(rng.random_range(0.05..=0.95)),
                y: round3(rng.random_range(0.05..=0.95)),
                kind,
                text: match kind {
                    AnnotationKind::Mark => String::new(),
                    AnnotationKind::Comment => pick(rng, names::COMMENTS).to_owned(),
                },
            }
        })
        .collect();
    annotations.sort_by(|a, b| {
        (a.page, a.y)
            .partial_cmp(&(b.page, b.y))
            .unwrap_or(std::cmp::Ordering::Equal)
    });

    Copy {
        exam: exam.code.to_owned(),
        candidate: candidate.numero.clone(),
        grader: Some(grader),
        absent: false,
        grade: Some(grade),
        grading_details,
        appreciation: Some(appreciation),
        annotations,
        pages: (1..=pages)
            .map(|p| format!("scans/{}/{}/p{p:02}.jpg", exam.code, candidate.numero))
            .collect(),
    }
}

/// Splits `quarters` quarter points over the questions of `scheme`, each
/// within its maximum, roughly in proportion to the maxima with some luck
/// either way. The marks are exact multiples of 0.25, so they sum to the
/// grade exactly.
fn split_marks(scheme: &[(&str, f64)], quarters: u32, rng: &mut ChaCha8Rng) -> Vec<QuestionMark> {
    let caps: Vec<u32> = scheme.iter().map(|&(_, max)| (max * 4.0) as u32).collect();
    let weights: Vec<f64> = caps
        .iter()
        .map(|&c| f64::from(c) * rng.random_range(0.4..1.6))
        .collect();
    let total_weight: f64 = weights.iter().sum();
    let mut marks: Vec<u32> = caps
        .iter()
        .zip(&weights)
        .map(|(&cap, &w)| ((f64::from(quarters) * w / total_weight).floor() as u32).min(cap))
        .collect();
    let mut left = quarters.saturating_sub(marks.iter().sum());
    while left > 0 {
        let open: Vec<usize> = (0..caps.len()).filter(|&i| marks[i] < caps[i]).collect();
        let Some(&i) = open.choose(rng) else { break };
        marks[i] += 1;
        left -= 1;
    }
    scheme
        .iter()
        .zip(marks)
        .map(|(&(question, max), m)| QuestionMark {
            question: question.to_owned(),
            mark: f64::from(m) / 4.0,
            max,
        })
        .collect()
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn pick<'a>(rng: &mut ChaCha8Rng, items: &[&'a str]) -> &'a str {
    items.choose(rng).copied().unwrap_or("")
}

/// A 32-byte ChaCha key for one purpose of one seed.
fn stream_key(seed: u64, purpose: &[u8; 8]) -> [u8; 32] {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(purpose);
    key[16..24].copy_from_slice(b"copiste/");
    key[24..].copy_from_slice(b"demodata");
    key
}

/// One page scan as JPEG bytes: a greyscale A4 page at 150 dpi
/// ([`WIDTH`] × [`HEIGHT`] pixels, density 150 dpi in the JFIF header),
/// 150–250 KB, deterministic for (seed, copy, page). `copy_index` is the
/// copy's position in the manifest's `copies` and `page` is 1-based.
pub fn scan_jpeg(seed: u64, copy_index: u64, page: u32) -> Vec<u8> {
    scan::scan_jpeg(seed, copy_index, page)
}

/// Writes the dataset `opts` describes into `out_dir`: every scan the
/// manifest names, then `OUT_DIR/manifest.json` (pretty JSON) last, so that
/// an interrupted run leaves no manifest behind. `out_dir` may exist only
/// if it is an empty directory: nothing is ever overwritten.
///
/// Scans are rendered on every core; `progress(done, total)` is called
/// after each scan is written, from any of the worker threads ([`Progress`]
/// shows it on stderr).
pub fn generate(
    out_dir: &Path,
    opts: &DemoDataOptions,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> anyhow::Result<DemoDataSummary> {
    let manifest = build_manifest(opts)?;
    prepare_out_dir(out_dir)?;

    let scans = ScanIndex::new(&manifest);
    let total = scans.total;
    let written = write_scans(out_dir, opts, &manifest, &scans, progress)?;

    let json = serde_json::to_vec_pretty(&manifest).context("cannot serialise the manifest")?;
    let manifest_path = out_dir.join("manifest.json");
    std::fs::write(&manifest_path, &json)
        .with_context(|| format!("cannot write {}", manifest_path.display()))?;

    Ok(DemoDataSummary {
        establishments: manifest.establishments.len() as u32,
        candidates: manifest.candidates.len() as u32,
        copies: manifest.copies.len() as u32,
        scans: total as u32,
        bytes: written + json.len() as u64,
    })
}

/// Where each scan of a manifest is: scans are numbered copy by copy, and
/// only present copies have pages.
struct ScanIndex {
    /// The copies with pages, by index in the manifest.
    with_pages: Vec<usize>,
    /// The number of the first scan of each of them.
    offsets: Vec<u64>,
    total: u64,
}

impl ScanIndex {
    fn new(manifest: &Manifest) -> Self {
        let with_pages: Vec<usize> = (0..manifest.copies.len())
            .filter(|&i| !manifest.copies[i].pages.is_empty())
            .collect();
        let offsets: Vec<u64> = with_pages
            .iter()
            .scan(0u64, |acc, &i| {
                let start = *acc;
                *acc += manifest.copies[i].pages.len() as u64;
                Some(start)
            })
            .collect();
        let total: u64 = with_pages
            .iter()
            .map(|&i| manifest.copies[i].pages.len() as u64)
            .sum();
        Self {
            with_pages,
            offsets,
            total,
        }
    }

    /// The copy (its index in the manifest) and page (1-based) of scan
    /// number `index`: the copy of the last offset at or before it.
    fn locate(&self, index: u64) -> (usize, u32) {
        let k = self.offsets.partition_point(|&o| o <= index) - 1;
        (self.with_pages[k], (index - self.offsets[k]) as u32 + 1)
    }
}

/// Renders and writes every scan of `manifest` on every core, in chunks
/// taken in turn; stops at the first failure and returns it. Returns the
/// bytes written.
fn write_scans(
    out_dir: &Path,
    opts: &DemoDataOptions,
    manifest: &Manifest,
    scans: &ScanIndex,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> anyhow::Result<u64> {
    const CHUNK: u64 = 8;
    let total = scans.total;
    let next = AtomicU64::new(0);
    let done = AtomicU64::new(0);
    let bytes = AtomicU64::new(0);
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(usize::try_from(total).unwrap_or(usize::MAX))
        .max(1);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                let mut writer = ScanWriter::default();
                loop {
                    if failed.load(Ordering::Relaxed) {
                        return;
                    }
                    let start = next.fetch_add(CHUNK, Ordering::Relaxed);
                    if start >= total {
                        return;
                    }
                    for index in start..(start + CHUNK).min(total) {
                        let (copy_index, page) = scans.locate(index);
                        let rel = &manifest.copies[copy_index].pages[page as usize - 1];
                        match writer.write(&out_dir.join(rel), opts.seed, copy_index, page) {
                            Ok(n) => {
                                bytes.fetch_add(n, Ordering::Relaxed);
                                let d = done.fetch_add(1, Ordering::Relaxed) + 1;
                                progress(d, total);
                            }
                            Err(e) => {
                                failed.store(true, Ordering::Relaxed);
                                if let Ok(mut slot) = first_error.lock() {
                                    slot.get_or_insert(e);
                                }
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = first_error.into_inner().ok().flatten() {
        return Err(e);
    }
    if failed.load(Ordering::Relaxed) {
        bail!("writing the scans failed");
    }
    Ok(bytes.into_inner())
}

/// One thread's scan writer: its buffers, and the last folder it made.
#[derive(Default)]
struct ScanWriter {
    pixels: Vec<u8>,
    jpeg: Vec<u8>,
    last_dir: Option<std::path::PathBuf>,
}

impl ScanWriter {
    /// Renders page `page` of copy `copy_index` and writes it at `path`;
    /// returns its size.
    fn write(
        &mut self,
        path: &Path,
        seed: u64,
        copy_index: usize,
        page: u32,
    ) -> anyhow::Result<u64> {
        let dir = path.parent().context("scan path without a directory")?;
        if self.last_dir.as_deref() != Some(dir) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            self.last_dir = Some(dir.to_path_buf());
        }
        scan::render_jpeg(
            seed,
            copy_index as u64,
            page,
            &mut self.pixels,
            &mut self.jpeg,
        );
        std::fs::write(path, &self.jpeg)
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(self.jpeg.len() as u64)
    }
}

/// Creates `out_dir`, or accepts it when it is an existing empty directory.
fn prepare_out_dir(out_dir: &Path) -> anyhow::Result<()> {
    match std::fs::metadata(out_dir) {
        Ok(meta) if !meta.is_dir() => {
            bail!("{} exists and is not a directory", out_dir.display())
        }
        Ok(_) => {
            let mut entries = std::fs::read_dir(out_dir)
                .with_context(|| format!("cannot read {}", out_dir.display()))?;
            if entries.next().is_some() {
                bail!(
                    "{} exists and is not empty; choose a new or empty directory (nothing is overwritten)",
                    out_dir.display()
                );
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::create_dir_all(out_dir)
            .with_context(|| format!("cannot create {}", out_dir.display())),
        Err(e) => Err(e).with_context(|| format!("cannot inspect {}", out_dir.display())),
    }
}

/// Writes the dataset `opts` describes with a single scan file that every
/// page names: the catalogue of [`generate`] (same candidates, copies and
/// grades) at a fraction of the cost, for closure tests and benchmarks
/// that never look at the pages.
pub fn generate_light(out_dir: &Path, opts: &DemoDataOptions) -> anyhow::Result<DemoDataSummary> {
    let mut manifest = build_manifest(opts)?;
    prepare_out_dir(out_dir)?;
    const SCAN: &str = "scans/page.jpg";
    let jpeg = scan::scan_jpeg(opts.seed, 0, 1);
    let scan_path = out_dir.join(SCAN);
    if let Some(dir) = scan_path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(&scan_path, &jpeg)
        .with_context(|| format!("cannot write {}", scan_path.display()))?;
    for copy in &mut manifest.copies {
        for page in &mut copy.pages {
            *page = SCAN.to_owned();
        }
    }
    let json = serde_json::to_vec_pretty(&manifest).context("cannot serialise the manifest")?;
    let manifest_path = out_dir.join("manifest.json");
    std::fs::write(&manifest_path, &json)
        .with_context(|| format!("cannot write {}", manifest_path.display()))?;
    Ok(DemoDataSummary {
        establishments: manifest.establishments.len() as u32,
        candidates: manifest.candidates.len() as u32,
        copies: manifest.copies.len() as u32,
        scans: 1,
        bytes: jpeg.len() as u64 + json.len() as u64,
    })
}
