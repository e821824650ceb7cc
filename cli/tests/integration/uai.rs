//! UAI parsing: 7 digits and a mod-23 check letter.

use copiste::domain::{Uai, UaiError};

#[test]
fn valid_uais_parse() {
    // Lycée Louis-le-Grand, Paris.
    assert_eq!(Uai::parse("0750655E").expect("valid").as_str(), "0750655E");
    // Lower case and spaces are tolerated at the edge, normalised inside.
    assert_eq!(
        Uai::parse(" 0750655e ").expect("valid").as_str(),
        "0750655E"
    );
    // 0000000 % 23 = 0 -> A; 22 -> Z (the letters skip I, O and Q).
    assert_eq!(Uai::parse("0000000A").expect("valid").as_str(), "0000000A");
    assert_eq!(Uai::parse("0000022Z").expect("valid").as_str(), "0000022Z");
    assert_eq!(Uai::parse("0000008J").expect("valid").as_str(), "0000008J");
}

#[test]
fn a_wrong_check_letter_names_the_right_one() {
    let e = Uai::parse("0750655F").expect_err("bad letter accepted");
    assert_eq!(
        e,
        UaiError::CheckLetter {
            uai: "0750655F".into(),
            expected: 'E'
        }
    );
    assert!(e.to_string().contains("should be E"));
}

#[test]
fn malformed_uais_are_rejected() {
    assert_eq!(Uai::parse("075065E"), Err(UaiError::Length(7)));
    assert_eq!(Uai::parse("0750655EE"), Err(UaiError::Length(9)));
    assert_eq!(Uai::parse("07506X5E"), Err(UaiError::Digits));
    assert!(Uai::parse("").is_err());
    // I, O and Q are never check letters.
    for n in 0..23u32 {
        let uai = Uai::from_number(n);
        assert!(!uai.as_str().ends_with(['I', 'O', 'Q']), "{uai}");
        assert_eq!(Uai::parse(uai.as_str()).expect("round trip"), uai);
    }
}
