//! `copiste demo-data`: the generated dataset is deterministic, has the
//! awkward names and cases the rest of copiste must handle, and its scans
//! are real greyscale A4 JPEGs of the expected size.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use copiste::domain::ExamKind;
use copiste::import::manifest::{AnnotationKind, Manifest};
use copiste_tools::demo_data::{self, DemoDataOptions, build_manifest, generate, scan_jpeg};

fn opts(establishments: u32, candidates: u32, pages: u32, seed: u64) -> DemoDataOptions {
    DemoDataOptions {
        establishments,
        candidates,
        pages,
        seed,
    }
}

fn json(m: &Manifest) -> String {
    serde_json::to_string_pretty(m).expect("serialise")
}

const ACCENTED: &str = "àâäçéèêëîïôöùûüÿœæÀÂÄÇÉÈÊËÎÏÔÖÙÛÜ";

fn all_names(m: &Manifest) -> Vec<String> {
    m.candidates
        .iter()
        .map(|c| format!("{} {}", c.nom, c.prenom))
        .collect()
}

/// The features every dataset of ten candidates or more must have.
fn assert_name_features(m: &Manifest) {
    let names = all_names(m);
    assert!(
        names
            .iter()
            .any(|n| n.chars().any(|c| ACCENTED.contains(c))),
        "an accented name: {names:?}"
    );
    assert!(
        names.iter().any(|n| n.contains('\'')),
        "an apostrophe: {names:?}"
    );
    assert!(names.iter().any(|n| n.contains('-')), "a hyphen: {names:?}");
    assert!(
        names.iter().any(|n| n.chars().any(|c| u32::from(c) > 0xFF)),
        "a name outside Latin-1: {names:?}"
    );
}

/// Establishments holding at least two "Martin Léa".
fn establishments_with_duplicates(m: &Manifest) -> usize {
    let mut count: HashMap<&str, usize> = HashMap::new();
    for c in &m.candidates {
        if c.nom == "Martin" && c.prenom == "Léa" {
            *count.entry(c.establishment.as_str()).or_default() += 1;
        }
    }
    count.values().filter(|&&n| n >= 2).count()
}

#[test]
fn the_manifest_depends_only_on_the_seed() {
    let a = build_manifest(&opts(3, 12, 2, 42)).expect("manifest");
    let b = build_manifest(&opts(3, 12, 2, 42)).expect("manifest");
    let c = build_manifest(&opts(3, 12, 2, 43)).expect("manifest");
    assert_eq!(json(&a), json(&b));
    assert_ne!(json(&a), json(&c));
}

#[test]
fn scans_are_deterministic_and_differ_from_page_to_page() {
    let p1 = scan_jpeg(7, 0, 1);
    assert_eq!(p1, scan_jpeg(7, 0, 1), "same seed, same bytes");
    assert_ne!(p1, scan_jpeg(8, 0, 1), "another seed, another page");
    assert_ne!(p1, scan_jpeg(7, 0, 2), "pages of one copy differ");
    assert_ne!(p1, scan_jpeg(7, 1, 1), "copies differ");
}

#[test]
fn scans_are_greyscale_a4_jpegs_at_150_dpi_of_150_to_250_kb() {
    for (copy, page) in [(0, 1), (0, 2), (5, 3), (11, 1)] {
        let bytes = scan_jpeg(3, copy, page);
        assert!(
            (150_000..=250_000).contains(&bytes.len()),
            "copy {copy} page {page}: {} bytes",
            bytes.len()
        );
        // JFIF header with the density in dots per inch (units 1, 150×150).
        assert_eq!(&bytes[..4], &[0xFF, 0xD8, 0xFF, 0xE0]);
        assert_eq!(&bytes[6..11], b"JFIF\0");
        assert_eq!(&bytes[13..18], &[1, 0, 150, 0, 150]);
        let img =
            image::load_from_memory_with_format(&bytes, image::ImageFormat::Jpeg).expect("decodes");
        assert_eq!(img.color(), image::ColorType::L8);
        assert_eq!((img.width(), img.height()), (1240, 1754));
        assert_eq!((demo_data::WIDTH, demo_data::HEIGHT), (1240, 1754));
        // Mostly paper, with ink on it.
        let luma = img.to_luma8();
        let dark = luma.as_raw().iter().filter(|&&p| p < 128).count();
        let light = luma.as_raw().iter().filter(|&&p| p > 200).count();
        assert!(light > luma.as_raw().len() * 3 / 4, "mostly paper");
        assert!(dark > 10_000, "handwriting: {dark} dark pixels");
    }
}

#[test]
fn the_dataset_has_every_awkward_case() {
    let m = build_manifest(&opts(3, 10, 2, 1)).expect("manifest");

    assert_eq!(m.session.code, "BAC-2026");
    assert_eq!(m.academies.len(), 2);
    assert_eq!(m.establishments.len(), 3);
    assert_eq!(m.establishments.iter().filter(|e| e.abroad).count(), 1);
    let uais: HashSet<_> = m.establishments.iter().map(|e| e.uai.clone()).collect();
    assert_eq!(uais.len(), 3, "unique UAIs");
    let academies: HashSet<_> = m
        .establishments
        .iter()
        .map(|e| e.academy.as_str())
        .collect();
    assert_eq!(academies.len(), 2, "establishments in both academies");

    let kinds: HashSet<_> = m.exams.iter().map(|x| x.kind).collect();
    assert_eq!(
        kinds,
        HashSet::from([ExamKind::Ponctuel, ExamKind::Harmonised, ExamKind::E3c])
    );

    assert_eq!(m.candidates.len(), 30);
    assert_name_features(&m);
    assert!(
        establishments_with_duplicates(&m) >= 1,
        "two Martin Léa in one establishment"
    );
    let numeros: HashSet<_> = m.candidates.iter().map(|c| c.numero.as_str()).collect();
    assert_eq!(numeros.len(), 30, "unique numéros");
    for n in &numeros {
        assert!(
            n.len() == 12 && n.starts_with("2026") && n.bytes().all(|b| b.is_ascii_digit()),
            "{n}"
        );
    }

    // Graders: two to four per academy, always from the candidate's.
    for a in &m.academies {
        let n = m.graders.iter().filter(|g| g.academy == a.code).count();
        assert!((2..=4).contains(&n), "{n} graders in {}", a.code);
    }
    let grader_academy: HashMap<_, _> = m
        .graders
        .iter()
        .map(|g| (g.code.as_str(), g.academy.as_str()))
        .collect();
    let est_academy: HashMap<_, _> = m
        .establishments
        .iter()
        .map(|e| (e.uai.clone(), e.academy.as_str()))
        .collect();
    let candidate_academy: HashMap<_, _> = m
        .candidates
        .iter()
        .map(|c| (c.numero.as_str(), est_academy[&c.establishment]))
        .collect();

    // One copy per candidate and exam.
    assert_eq!(m.copies.len(), 90);
    let pairs: HashSet<_> = m
        .copies
        .iter()
        .map(|c| (c.exam.as_str(), c.candidate.as_str()))
        .collect();
    assert_eq!(pairs.len(), 90);

    assert!(m.copies.iter().any(|c| c.absent), "some absent candidates");
    for copy in &m.copies {
        let grader = copy.grader.as_deref().expect("a grader");
        assert_eq!(
            grader_academy[grader],
            candidate_academy[copy.candidate.as_str()]
        );
        if copy.absent {
            assert_eq!(copy.grade, None);
            assert!(copy.pages.is_empty());
            continue;
        }
        let grade = copy.grade.expect("graded");
        assert!(
            (0.0..=20.0).contains(&grade) && (grade * 4.0).fract() == 0.0,
            "{grade}"
        );
        let sum: f64 = copy.grading_details.iter().map(|q| q.mark).sum();
        assert_eq!(sum, grade, "details sum to the grade");
        assert_eq!(
            copy.grading_details.iter().map(|q| q.max).sum::<f64>(),
            20.0
        );
        for q in &copy.grading_details {
            assert!(q.mark >= 0.0 && q.mark <= q.max, "{q:?}");
        }
        assert!(!copy.appreciation.as_deref().unwrap_or("").is_empty());
        assert!((1..=4).contains(&copy.annotations.len()));
        for a in &copy.annotations {
            assert!((1..=2).contains(&a.page));
            assert!((0.05..=0.95).contains(&a.x) && (0.05..=0.95).contains(&a.y));
            if a.kind == AnnotationKind::Comment {
                assert!(!a.text.is_empty());
            }
        }
        let expected: Vec<String> = (1..=2)
            .map(|p| format!("scans/{}/{}/p{p:02}.jpg", copy.exam, copy.candidate))
            .collect();
        assert_eq!(copy.pages, expected);
    }
}

#[test]
fn every_dataset_of_ten_candidates_or_more_has_the_features() {
    for (e, c) in [
        (1, 10),
        (10, 1),
        (5, 2),
        (2, 5),
        (4, 3),
        (3, 4),
        (7, 2),
        (40, 25),
    ] {
        for seed in 0..3 {
            let m = build_manifest(&opts(e, c, 1, seed)).expect("manifest");
            assert_name_features(&m);
            if c >= 2 {
                assert!(establishments_with_duplicates(&m) >= 1, "{e}×{c}");
            }
            if c >= 10 {
                assert_eq!(
                    establishments_with_duplicates(&m),
                    e as usize,
                    "{e}×{c}: every establishment"
                );
            }
            let est_names: HashSet<_> = m.establishments.iter().map(|x| x.name.as_str()).collect();
            assert_eq!(est_names.len(), e as usize, "unique establishment names");
            if e * c >= 20 {
                assert!(
                    m.copies.iter().any(|x| x.absent),
                    "{e}×{c}: an absent candidate"
                );
            }
        }
    }
}

#[test]
fn options_are_validated() {
    for (o, word) in [
        (opts(0, 10, 2, 1), "establishments"),
        (opts(2, 0, 2, 1), "candidates"),
        (opts(2, 10, 0, 1), "pages"),
        (opts(2, 10, 500, 1), "pages"),
        (opts(100_000, 10, 2, 1), "establishments"),
        (opts(5_000, 2_000, 2, 1), "candidates"),
    ] {
        let err = build_manifest(&o).expect_err("rejected").to_string();
        assert!(err.contains(word), "{err}");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let err =
        generate(&dir.path().join("out"), &opts(0, 1, 1, 1), &|_, _| {}).expect_err("rejected");
    assert!(err.to_string().contains("establishments"));
    assert!(
        !dir.path().join("out").exists(),
        "nothing created for invalid options"
    );
}

#[test]
fn generate_writes_the_manifest_and_every_scan_it_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("dataset");
    let o = opts(1, 2, 1, 5);
    let calls = Mutex::new(Vec::new());
    let summary = generate(&out, &o, &|done, total| {
        calls.lock().expect("lock").push((done, total))
    })
    .expect("generate");

    let text = std::fs::read_to_string(out.join("manifest.json")).expect("manifest.json");
    let written: Manifest = serde_json::from_str(&text).expect("manifest in the import format");
    let built = build_manifest(&o).expect("manifest");
    assert_eq!(
        json(&written),
        json(&built),
        "generate agrees with build_manifest"
    );
    assert_eq!(text, json(&built), "pretty JSON");

    let scans: u32 = built.copies.iter().map(|c| c.pages.len() as u32).sum();
    assert_eq!(summary.establishments, 1);
    assert_eq!(summary.candidates, 2);
    assert_eq!(summary.copies, 6);
    assert_eq!(summary.scans, scans);
    let mut bytes = text.len() as u64;
    for (i, copy) in built.copies.iter().enumerate() {
        for (p, rel) in copy.pages.iter().enumerate() {
            let file = std::fs::read(out.join(rel)).expect("scan written");
            assert_eq!(file, scan_jpeg(o.seed, i as u64, p as u32 + 1), "{rel}");
            bytes += file.len() as u64;
        }
    }
    assert_eq!(summary.bytes, bytes);

    let mut calls = calls.into_inner().expect("lock");
    calls.sort();
    let expected: Vec<_> = (1..=u64::from(scans))
        .map(|d| (d, u64::from(scans)))
        .collect();
    assert_eq!(calls, expected, "progress once per scan");

    // A second run into the same directory is refused, naming it.
    let err = generate(&out, &o, &|_, _| {})
        .expect_err("refused")
        .to_string();
    assert!(
        err.contains("dataset") && err.contains("not empty"),
        "{err}"
    );
}

#[test]
fn generate_accepts_an_empty_directory_and_refuses_a_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").expect("write");
    let err = generate(&file, &opts(1, 1, 1, 1), &|_, _| {})
        .expect_err("refused")
        .to_string();
    assert!(err.contains("file"), "{err}");

    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).expect("mkdir");
    let summary = generate(&empty, &opts(1, 1, 1, 1), &|_, _| {}).expect("generate");
    assert!(empty.join("manifest.json").exists());
    assert_eq!(summary.copies, 3);
}

/// Without a terminal (a pipe, a log), `copiste demo-data` still says how
/// far it got: a line now and then, and one when every scan is written.
#[test]
fn demo_data_reports_progress_on_stderr_without_a_terminal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("session");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_copiste"))
        .arg("demo-data")
        .arg(&out)
        .args(["--establishments", "1", "--candidates", "2", "--pages", "1"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run copiste demo-data");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let manifest: Manifest =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).expect("manifest"))
            .expect("parse manifest");
    let scans: usize = manifest.copies.iter().map(|c| c.pages.len()).sum();
    let last = format!("demo-data: {scans}/{scans} scans written (100%), ");
    assert!(
        stderr.lines().any(|line| line.starts_with(&last)),
        "no {last:?} line in stderr:\n{stderr}"
    );
}

/// Size and speed figures of the scans (it prints them and checks
/// nothing): run by hand, when the generator's scans change, with
/// `cargo test --test integration demo_data::scan_figures -- --ignored --nocapture`.
#[test]
#[ignore = "figures, not a check: run by hand when the scans change (see its comment)"]
fn scan_figures() {
    let n = 60u64;
    let start = std::time::Instant::now();
    let sizes: Vec<usize> = (0..n)
        .map(|i| scan_jpeg(99, i / 4, (i % 4) as u32 + 1).len())
        .collect();
    let elapsed = start.elapsed();
    let min = sizes.iter().min().copied().unwrap_or(0);
    let max = sizes.iter().max().copied().unwrap_or(0);
    let mean = sizes.iter().sum::<usize>() / sizes.len();
    println!(
        "{n} pages on one thread: {:.1} ms per page; size min {:.0} KB, mean {:.0} KB, max {:.0} KB",
        elapsed.as_secs_f64() * 1000.0 / n as f64,
        min as f64 / 1000.0,
        mean as f64 / 1000.0,
        max as f64 / 1000.0
    );
}
