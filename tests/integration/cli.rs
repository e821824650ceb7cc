//! The command line and configuration surface.

use clap::CommandFactory as _;
use copiste::{cli::Cli, config::Config};
use serde_json::json;

#[test]
fn the_cli_definition_is_consistent() {
    Cli::command().debug_assert();
}

#[test]
fn defaults_load_and_are_safe() {
    let config = Config::load_with_overrides(json!({})).expect("defaults load");
    assert_eq!(config.queue.window, 200);
    assert_eq!(
        config.storage.root,
        std::path::PathBuf::from("./data/objects")
    );
    let printed = Config::load_with_overrides(json!({"downloads": {"signing_key": "s3cr3t"}}))
        .expect("loads")
        .to_redacted_toml();
    assert!(!printed.contains("s3cr3t"), "secret printed: {printed}");
    assert!(printed.contains("<redacted>"));
}

fn error_of(overrides: serde_json::Value) -> String {
    Config::load_with_overrides(overrides)
        .expect_err("invalid configuration accepted")
        .to_string()
}

#[test]
fn a_negative_window_is_refused_with_the_setting_name() {
    let e = error_of(json!({"queue": {"window": -5}}));
    assert!(e.contains("queue.window"), "{e}");
    let e = error_of(json!({"queue": {"window": 0}}));
    assert!(e.contains("queue.window"), "{e}");
}

#[test]
fn an_unknown_exporter_kind_is_refused_with_the_setting_name() {
    let e = error_of(json!({"exporters": {"cyclades": {"kind": "carrier-pigeon"}}}));
    assert!(e.contains("exporters.cyclades.kind"), "{e}");
}

#[test]
fn export_settings_are_checked() {
    let e = error_of(json!({"exports": {"batch_size": 0}}));
    assert!(e.contains("exports.batch_size"), "{e}");
    let e = error_of(json!({"exporters": {"imagin": {"concurrency": 0}}}));
    assert!(e.contains("exporters.imagin.concurrency"), "{e}");
}

#[test]
fn closure_commands_parse_their_arguments_at_the_edge() {
    use clap::Parser as _;
    let parse = |args: &[&str]| {
        Cli::try_parse_from(std::iter::once("copiste").chain(args.iter().copied()))
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    parse(&["closure", "run", "--exam", "BAC26-PHILO"]).expect("all establishments");
    let e = parse(&[
        "closure",
        "run",
        "--exam",
        "X",
        "--establishment",
        "0750001B",
    ])
    .expect_err("bad check letter");
    assert!(e.contains("check letter"), "{e}");
    let e = parse(&["harmonisation", "validate", "--exam", "X"]).expect_err("no selection");
    assert!(e.contains("--all") && e.contains("--copies"), "{e}");
    parse(&["harmonisation", "validate", "--exam", "X", "--all"]).expect("all");
    parse(&["publish", "--exam", "X", "--by", "rectorat"]).expect("publish");
}

#[test]
fn an_unparseable_url_is_refused_with_the_setting_name() {
    let e = error_of(json!({"database": {"url": "not a url"}}));
    assert!(e.contains("database.url"), "{e}");
    let e = error_of(json!({"redis": {"url": "http://127.0.0.1"}}));
    assert!(e.contains("redis.url"), "{e}");
}

#[test]
fn a_secret_in_a_file_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("c.toml");
    std::fs::write(&file, "[downloads]\nsigning_key = \"oops\"\n").expect("write");
    let e = Config::load(Some(&file))
        .expect_err("secret in file accepted")
        .to_string();
    assert!(
        e.contains("downloads.signing_key") && e.contains("COPISTE_DOWNLOADS__SIGNING_KEY"),
        "{e}"
    );
}
