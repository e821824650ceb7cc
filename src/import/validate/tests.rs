//! Tests of the structural validation of export files.

use serde_json::json;

use super::*;

fn valid() -> Value {
    json!({
        "format": 1,
        "session": {"code": "BAC2026", "name": "Baccalauréat 2026"},
        "academies": [{"code": "01", "name": "Paris"}],
        "establishments": [
            {"uai": Uai::from_number(751234).as_str(), "name": "Lycée A", "academy": "01"},
            {"uai": Uai::from_number(751235).as_str(), "name": "Lycée B", "academy": "01", "abroad": true}
        ],
        "exams": [{"code": "BAC2026-PHILO", "subject": "Philosophie", "kind": "ponctuel"}],
        "graders": [{"code": "G1", "nom": "Martin", "prenom": "Anne", "academy": "01"}],
        "candidates": [{"numero": "1", "nom": "Durand", "prenom": "Hélène",
                        "establishment": Uai::from_number(751234).as_str()}],
        "copies": [{
            "exam": "BAC2026-PHILO", "candidate": "1", "grader": "G1", "grade": 12.5,
            "grading_details": [{"question": "1", "mark": 2.5, "max": 4}],
            "appreciation": null,
            "annotations": [{"page": 1, "x": 0.5, "y": 0.25, "kind": "comment", "text": "Bien"}],
            "pages": ["scans/a.jpg", "./scans/b.jpg"]
        }]
    })
}

#[test]
fn reads_what_serde_reads() {
    let value = valid();
    let by_serde: Manifest = serde_json::from_value(value.clone()).expect("serde");
    let checked = check(value);
    assert!(checked.problems.is_empty(), "{:?}", checked.problems);
    let ours = checked.value.expect("manifest");
    assert_eq!(
        serde_json::to_value(&ours).expect("ours"),
        serde_json::to_value(&by_serde).expect("theirs")
    );
    assert_eq!(checked.scans.len(), 2);
}

#[test]
fn reports_exact_paths() {
    let mut value = valid();
    value["copies"][0]["grade"] = json!("twelve");
    value["establishments"][1]["extra"] = json!(1);
    value["graders"][0]
        .as_object_mut()
        .expect("grader")
        .remove("nom");
    let checked = check(value);
    let lines: Vec<String> = checked.problems.iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        [
            "$.establishments[1].extra: unknown field",
            "$.graders[0].nom: required field is missing",
            "$.copies[0].grade: invalid type: string \"twelve\", expected f64",
        ]
    );
    assert!(checked.value.is_none());
}

/// `valid()` split into a `session.json` and a piece.
fn pieced() -> (Value, Value) {
    let mut whole = valid();
    let root = whole.as_object_mut().expect("object");
    let candidates = root.remove("candidates").expect("candidates");
    let copies = root.remove("copies").expect("copies");
    root.insert("format".to_owned(), json!(2));
    let piece = json!({"format": 2, "candidates": candidates, "copies": copies});
    (whole, piece)
}

#[test]
fn pieces_reference_their_session() {
    let (session, piece) = pieced();
    let (checked, keys) = check_session(session);
    assert!(checked.problems.is_empty(), "{:?}", checked.problems);
    assert!(checked.value.is_some());
    let keys = Arc::new(keys);
    let checked = check_piece(piece.clone(), Arc::clone(&keys));
    assert!(checked.problems.is_empty(), "{:?}", checked.problems);
    assert_eq!(checked.value.expect("piece").copies.len(), 1);
    assert_eq!(checked.scans.len(), 2);

    let mut bad = piece;
    bad["candidates"][0]["establishment"] = json!(Uai::from_number(751236).as_str());
    bad["copies"][0]["exam"] = json!("BAC2026-MATHS");
    bad["copies"][0]["grader"] = json!("G2");
    bad["academies"] = json!([]);
    let checked = check_piece(bad, keys);
    let lines: Vec<String> = checked.problems.iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        [
            format!(
                "$.candidates[0].establishment: unknown establishment {}",
                Uai::from_number(751236)
            ),
            "$.copies[0].exam: unknown exam BAC2026-MATHS".to_owned(),
            "$.copies[0].grader: unknown grader G2".to_owned(),
            "$.academies: unknown field".to_owned(),
        ]
    );
    assert!(checked.value.is_none());
}

#[test]
fn rejects_escaping_paths() {
    assert!(check_relative("scans/a.jpg").is_ok());
    assert!(check_relative("../a.jpg").is_err());
    assert!(check_relative("scans/../../a.jpg").is_err());
    assert!(check_relative("/etc/passwd").is_err());
    assert!(check_relative("").is_err());
}

#[test]
fn codes_are_safe_ascii() {
    for good in [
        "BAC26-PHILO",
        "BAC-2026",
        "COR-PARIS-001",
        "202600000001",
        "A_1.b",
        &"X".repeat(32),
    ] {
        assert_eq!(check_code(good), Ok(()), "{good}");
    }
    for bad in [
        "",
        ".",
        "..",
        ".hidden",
        "EVIL/../x",
        "a b",
        "a:b",
        "é",
        "a\u{0}",
        &"X".repeat(33),
    ] {
        assert!(check_code(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn control_characters_are_found() {
    assert_eq!(control_char("Martin", &[]), None);
    assert_eq!(control_char("a\u{0}b", &[]), Some((1, '\u{0}')));
    assert_eq!(control_char("a\nb\tc", FREE_TEXT_CONTROLS), None);
    assert_eq!(control_char("a\nb", &[]), Some((1, '\n')));
    assert_eq!(
        control_char("a\u{7f}", FREE_TEXT_CONTROLS),
        Some((1, '\u{7f}'))
    );
    assert_eq!(
        control_char("\u{9f}", FREE_TEXT_CONTROLS),
        Some((0, '\u{9f}'))
    );
    assert!(check_relative("scans/a\u{0}.jpg").is_err());
}

#[test]
fn grades_have_two_decimals_at_most() {
    assert!(at_most_two_decimals(12.35));
    assert!(at_most_two_decimals(20.0));
    assert!(at_most_two_decimals(0.01));
    assert!(!at_most_two_decimals(12.345));
}
