//! The command line and configuration surface.

use clap::CommandFactory as _;
use copiste::config::Config;
use copiste_cli::Cli;
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

/// The built `copiste` binary, on `app`'s database and store, with no
/// configuration file and no colour forced.
fn copiste(app: &crate::support::TestApp) -> std::process::Command {
    let mut cmd = bare_copiste();
    cmd.env("COPISTE_DATABASE__URL", app.config.database_url().as_str())
        .env("COPISTE_STORAGE__ROOT", app.dir.path().join("objects"))
        .env("COPISTE_REDIS__NAMESPACE", &app.config.redis.namespace);
    cmd
}

/// The built `copiste` binary without any `COPISTE_…` setting of this
/// process's environment.
fn bare_copiste() -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_copiste"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("COPISTE_") {
            cmd.env_remove(k);
        }
    }
    cmd.env_remove("RUST_LOG");
    cmd
}

/// Runs `cmd` to the end: (success, stdout, stderr).
fn output(cmd: &mut std::process::Command) -> (bool, String, String) {
    let out = cmd.output().expect("run copiste");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn job_count(app: &crate::support::TestApp) -> i64 {
    app.counts().await.values().sum()
}

#[tokio::test]
async fn jobs_enqueue_checks_the_payload_against_its_kind_and_names_the_field() {
    let app = crate::support::TestApp::new().await;
    let refused = |args: &[&str], wanted: &[&str]| {
        let (ok, _, err) = output(copiste(&app).args(["jobs", "enqueue"]).args(args));
        assert!(!ok, "accepted: {args:?}");
        for w in wanted {
            assert!(err.contains(w), "{args:?}: {w:?} not in {err}");
        }
    };
    refused(&["nope", "--payload", "{}"], &["unknown job kind \"nope\""]);
    refused(
        &["export-retry", "--payload", r#"{"exam":"BAC26-PHILO"}"#],
        &["export-retry", "missing field `establishment`"],
    );
    refused(
        &[
            "export-retry",
            "--payload",
            r#"{"exam":"BAC26-PHILO","establishment":"0750001B"}"#,
        ],
        &["establishment:", "check letter"],
    );
    refused(
        &[
            "export-retry",
            "--payload",
            r#"{"exam":"BAC26-PHILO","establishment":"0750001U","extra":1}"#,
        ],
        &["unknown field `extra`"],
    );
    refused(
        &[
            "closure",
            "--payload",
            r#"{"exam":"","establishment":"0750001U"}"#,
        ],
        &["exam: must not be empty"],
    );
    refused(
        &[
            "harmonisation-validation",
            "--payload",
            r#"{"exam":"BAC26-MATHS-H","academy":null,"pass":"one"}"#,
        ],
        &["harmonisation-validation", "pass:"],
    );
    refused(
        &[
            "harmonisation-validation",
            "--payload",
            r#"{"exam":"BAC26-MATHS-H","academy":null,"pass":0}"#,
        ],
        &["pass: 0"],
    );
    refused(
        &[
            "bulk-render",
            "--payload",
            r#"{"exam":"BAC26-PHILO","establishment":"0750001U","options":{"details":"yes","appreciation":true,"annotations":true}}"#,
        ],
        &["bulk-render", "options.details:"],
    );
    assert_eq!(job_count(&app).await, 0, "nothing enqueued");

    let (ok, out, err) = output(copiste(&app).args([
        "jobs",
        "enqueue",
        "export-retry",
        "--payload",
        r#"{"exam":"BAC26-PHILO","establishment":"0750001U"}"#,
    ]));
    assert!(ok, "{err}");
    let id: uuid::Uuid = out.trim().parse().expect("the job id");
    assert_eq!(app.job(id).await.kind, "export-retry");
}

#[tokio::test]
async fn jobs_enqueue_payloads_checks_every_line_then_writes_all_or_nothing() {
    let app = crate::support::TestApp::new().await;
    let file = app.dir.path().join("payloads.jsonl");
    std::fs::write(
        &file,
        "{\"sleep_ms\": 1}\n{\"sleep_ms\": \"slow\"}\n\n{\"fail\": \"never\"}\n",
    )
    .expect("write");
    let (ok, _, err) = output(
        copiste(&app)
            .args(["jobs", "enqueue", "noop", "--payloads"])
            .arg(&file),
    );
    assert!(!ok);
    assert!(
        err.contains("line 2: invalid noop payload: sleep_ms:")
            && err.contains("line 4: invalid noop payload: fail:")
            && !err.contains("line 1"),
        "{err}"
    );
    assert_eq!(job_count(&app).await, 0, "nothing enqueued");

    std::fs::write(&file, "{\"sleep_ms\": 1}\n{}\n\n{\"fail\": \"none\"}\n").expect("write");
    let (ok, out, err) = output(
        copiste(&app)
            .args(["jobs", "enqueue", "noop", "--payloads"])
            .arg(&file),
    );
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "enqueued 3 noop jobs");
    assert_eq!(job_count(&app).await, 3);

    // From standard input.
    let mut child = copiste(&app)
        .args(["jobs", "enqueue", "noop", "--payloads", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().expect("stdin");
        for _ in 0..100 {
            writeln!(stdin, "{{}}").expect("write payload");
        }
    }
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "enqueued 100 noop jobs"
    );
    assert_eq!(job_count(&app).await, 103);
    let (ok, _, err) =
        output(copiste(&app).args(["jobs", "enqueue", "noop", "--payloads", "-", "--key", "k"]));
    assert!(!ok && err.contains("--key"), "{err}");
}

#[tokio::test]
async fn jobs_list_counts_jobs_per_status_in_text_and_json() {
    let app = crate::support::TestApp::new().await;
    let mut tx = app.db.begin().await.expect("begin");
    copiste::jobs::enqueue_many(
        &mut tx,
        &vec![copiste::jobs::noop::Noop::default(); 3],
        copiste::jobs::EnqueueOptions::by("test"),
    )
    .await
    .expect("enqueue");
    tx.commit().await.expect("commit");

    let (ok, out, err) = output(copiste(&app).args(["jobs", "list", "--json", "--limit", "1"]));
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["jobs"].as_array().expect("jobs").len(), 1, "{v}");
    assert_eq!(v["counts"]["queued"], json!(3), "{v}");
    assert_eq!(v["counts"]["dead"], json!(0), "{v}");
    let (ok, out, err) = output(copiste(&app).args(["jobs", "list"]));
    assert!(ok, "{err}");
    assert!(
        out.lines()
            .any(|l| l.split_whitespace().eq(["queued", "3"])),
        "{out}"
    );
}

#[tokio::test]
async fn a_closed_pipe_ends_a_command_quietly_and_logs_to_a_file_are_not_coloured() {
    use std::io::Read as _;
    let app = crate::support::TestApp::new().await;
    let mut tx = app.db.begin().await.expect("begin");
    copiste::jobs::enqueue_many(
        &mut tx,
        &vec![copiste::jobs::noop::Noop::default(); 2000],
        copiste::jobs::EnqueueOptions::by("test"),
    )
    .await
    .expect("enqueue");
    tx.commit().await.expect("commit");

    // `copiste jobs list --json --limit 2000 | head -c 1`
    let mut child = copiste(&app)
        .args(["jobs", "list", "--json", "--limit", "2000"])
        .env("RUST_LOG", "debug")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut first = [0u8; 1];
    stdout.read_exact(&mut first).expect("a first byte");
    drop(stdout);
    let out = child.wait_with_output().expect("wait");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert!(!err.contains("Broken pipe"), "{err}");
    assert_ne!(out.status.code(), Some(101), "a panic's exit code");
    // RUST_LOG=debug makes the database client log; standard error is a
    // pipe, not a terminal.
    assert!(!err.is_empty(), "no log line to check");
    assert!(
        !err.contains('\u{1b}'),
        "colour codes in a log file: {err:?}"
    );
}

#[test]
fn schedules_are_read_from_the_setting_scheduler_dir_wherever_the_command_runs() {
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let (ok, _, err) = output(
        bare_copiste()
            .current_dir(elsewhere.path())
            .args(["schedules", "list"]),
    );
    assert!(!ok);
    assert!(
        err.contains("scheduler.dir")
            && err.contains("COPISTE_SCHEDULER__DIR")
            && err.contains(&elsewhere.path().join("jobs").display().to_string()),
        "{err}"
    );
    let jobs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../jobs");
    let (ok, out, err) = output(
        bare_copiste()
            .current_dir(elsewhere.path())
            .env("COPISTE_SCHEDULER__DIR", &jobs)
            .args(["schedules", "list"]),
    );
    assert!(ok, "{err}");
    assert!(out.contains("housekeeping (housekeeping"), "{out}");
    // --dir still wins.
    let (ok, _, err) = output(
        bare_copiste()
            .current_dir(elsewhere.path())
            .env("COPISTE_SCHEDULER__DIR", &jobs)
            .args(["schedules", "list", "--dir", "nowhere"]),
    );
    assert!(
        !ok && err.contains("--dir") && err.contains("nowhere"),
        "{err}"
    );
}

#[test]
fn the_configuration_file_named_by_copiste_config_is_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("copiste.toml");
    std::fs::write(&file, "[exports]\nbatch_size = 123\n").expect("write");
    let (ok, out, err) = output(
        bare_copiste()
            .env("COPISTE_CONFIG", &file)
            .env("COPISTE_SCHEDULER__DIR", "/etc/copiste/jobs")
            .arg("config"),
    );
    assert!(ok, "{err}");
    assert!(out.contains("batch_size = 123"), "{out}");
    assert!(out.contains("dir = \"/etc/copiste/jobs\""), "{out}");
}

#[test]
fn the_help_of_by_agrees_with_its_default() {
    for (user, shown) in [
        (None, "[default: cli]"),
        (Some("alice"), "[default: alice]"),
    ] {
        let mut cmd = bare_copiste();
        match user {
            Some(u) => cmd.env("USER", u),
            None => cmd.env_remove("USER"),
        };
        let (ok, out, err) = output(cmd.args(["closure", "run", "--help"]));
        assert!(ok, "{err}");
        let by: String = out
            .split("--by <BY>")
            .nth(1)
            .expect("--by documented")
            .split("\n  -")
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            by.contains("$USER when set, else \"cli\"") && by.contains(shown),
            "{by}"
        );
    }
}

/// Each kind of failure has its exit code (README, `copiste --help`): 2
/// invalid input, 3 not found, 5 refused by a rule, 6 conflict.
#[tokio::test]
async fn each_kind_of_failure_exits_with_its_own_code() {
    let app = crate::support::TestApp::new().await;
    app.import_demo(2, 3).await;
    let code = |args: &[&str]| {
        let out = copiste(&app).args(args).output().expect("run copiste");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (c, err) = code(&["closure", "run", "--exam", "BAC26-NOPE"]);
    assert_eq!(c, Some(3), "{err}");
    assert!(err.contains("unknown exam BAC26-NOPE"), "{err}");
    let (c, err) = code(&["closure", "run", "--exam", "BAC26-MATHS-H"]);
    assert_eq!(c, Some(5), "{err}");
    assert!(err.contains("harmonised"), "{err}");
    let (c, err) = code(&["closure", "run", "--exam", " "]);
    assert_eq!(c, Some(2), "{err}");
    assert!(err.contains("invalid exam"), "{err}");
    let (c, err) = code(&["jobs", "show", &uuid::Uuid::nil().to_string()]);
    assert_eq!(c, Some(3), "{err}");
    let (c, _) = code(&[
        "jobs",
        "enqueue",
        "noop",
        "--payload",
        "{\"sleep_ms\": 60000}",
    ]);
    assert_eq!(c, Some(0));
    let queued = copiste::db::jobs::list_page(&app.db, &Default::default(), None, 1, 0)
        .await
        .expect("jobs")
        .remove(0);
    let (c, err) = code(&["jobs", "retry", &queued.id.to_string()]);
    assert_eq!(c, Some(6), "{err}");
    assert!(err.contains("only dead, failed or cancelled"), "{err}");
    let help = bare_copiste().arg("--help").output().expect("help");
    let help = String::from_utf8_lossy(&help.stdout);
    for line in [
        "2  invalid input",
        "3  not found",
        "4  forbidden",
        "5  refused",
        "6  conflict",
    ] {
        assert!(
            help.contains(line),
            "--help names exit code {line:?}:\n{help}"
        );
    }
}

/// `tokens create` prints a token once; `tokens list` never shows it;
/// `tokens revoke` makes it unusable; bad roles are named.
#[tokio::test]
async fn tokens_are_made_listed_and_revoked_from_the_command_line() {
    let app = crate::support::TestApp::new().await;
    app.import_demo(2, 2).await;
    let uai = copiste::db::catalog::exam_establishments(&app.db, "BAC26-PHILO", None)
        .await
        .expect("establishments")
        .remove(0);
    let run = |args: &[&str]| {
        let out = copiste(&app).args(args).output().expect("run copiste");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, token, err) = run(&[
        "tokens",
        "create",
        "--role",
        "establishment",
        "--uai",
        uai.as_str(),
        "--name",
        "Lycée test",
        "--expires-in",
        "90d",
    ]);
    assert_eq!(code, Some(0), "{err}");
    let token = token.trim().to_owned();
    assert!(token.starts_with("cps_"), "{token}");
    let who = copiste::access::authenticate(&app.app(), &token)
        .await
        .expect("authenticate");
    assert!(
        matches!(
            &who,
            copiste::access::Authenticated::Actor {
                actor: copiste::op::Actor::Establishment { uai: u },
                ..
            } if u == &uai
        ),
        "{who:?}"
    );
    let (code, list, _) = run(&["tokens", "list", "--json"]);
    assert_eq!(code, Some(0));
    assert!(
        !list.contains(&token[token.len() - 20..]),
        "the secret is never listed"
    );
    let listed: serde_json::Value = serde_json::from_str(&list).expect("JSON");
    let id = listed[0]["id"].as_str().expect("an id").to_owned();
    assert_eq!(listed[0]["scope"], uai.as_str());
    let (code, _, err) = run(&["tokens", "revoke", &id]);
    assert_eq!(code, Some(0), "{err}");
    let (code, _, err) = run(&["tokens", "revoke", &id]);
    assert_eq!(code, Some(6), "revoking twice is a conflict: {err}");
    assert!(matches!(
        copiste::access::authenticate(&app.app(), &token)
            .await
            .expect("authenticate"),
        copiste::access::Authenticated::Refused(copiste::access::Refused::Revoked)
    ));
    let (code, _, err) = run(&["tokens", "create", "--role", "coordinator", "--name", "x"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--academy"), "{err}");
    let (code, _, err) = run(&[
        "tokens",
        "create",
        "--role",
        "coordinator",
        "--academy",
        "NOPE",
        "--name",
        "x",
    ]);
    assert_eq!(code, Some(3), "{err}");
    // A tampered secret is refused like an unknown token.
    let mut tampered = token.clone();
    tampered.pop();
    tampered.push(if token.ends_with('0') { '1' } else { '0' });
    assert!(matches!(
        copiste::access::authenticate(&app.app(), &tampered)
            .await
            .expect("authenticate"),
        copiste::access::Authenticated::Refused(_)
    ));
}

#[test]
fn download_request_takes_one_establishment_or_all() {
    use clap::Parser as _;
    let parse = |args: &[&str]| {
        Cli::try_parse_from(std::iter::once("copiste").chain(args.iter().copied()))
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    let uai = copiste::domain::Uai::from_number(750_001).to_string();
    parse(&["download", "request", "--exam", "X", "--all", "--json"]).expect("--all");
    parse(&[
        "download",
        "request",
        "--exam",
        "X",
        "--establishment",
        &uai,
    ])
    .expect("one");
    let e = parse(&[
        "download",
        "request",
        "--exam",
        "X",
        "--all",
        "--establishment",
        &uai,
    ])
    .expect_err("both");
    assert!(e.contains("--all") && e.contains("--establishment"), "{e}");
    let e = parse(&["download", "request", "--exam", "X"]).expect_err("neither");
    assert!(e.contains("--establishment") && e.contains("--all"), "{e}");
    let e = parse(&["download", "link", "--exam", "X", "--all"]).expect_err("link takes one");
    assert!(e.contains("--all"), "{e}");
}

#[tokio::test]
async fn download_request_all_enqueues_every_zip_once_and_prints_the_counts() {
    let mut config = crate::support::fast_queue();
    config["downloads"] = json!({"signing_key": "test-signing-key"});
    let app = crate::support::TestApp::with(config).await;
    app.import_demo(3, 2).await;
    let uais = copiste::db::catalog::exam_establishments(&app.db, "BAC26-PHILO", None)
        .await
        .expect("establishments");
    crate::zips::close(&app, "BAC26-PHILO", &uais).await;
    let before = job_count(&app).await;

    let (ok, out, err) = output(copiste(&app).args([
        "download",
        "request",
        "--exam",
        "BAC26-PHILO",
        "--all",
        "--json",
    ]));
    assert!(ok, "{err}");
    let answer: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(answer["establishments"], 3, "{answer}");
    assert_eq!(answer["enqueued"], 3, "{answer}");
    assert_eq!(answer["already_building"], 0, "{answer}");
    let jobs = answer["jobs"].as_array().expect("jobs");
    assert_eq!(jobs.len(), 3);
    for (job, uai) in jobs.iter().zip(&uais) {
        assert_eq!(job["establishment"], uai.as_str());
        let id: uuid::Uuid = job["job"].as_str().expect("an id").parse().expect("a uuid");
        let row = app.job(id).await;
        assert_eq!(row.kind, "bulk-render");
        assert_eq!(row.payload["establishment"], uai.as_str());
        assert!(
            row.idempotency_key
                .as_deref()
                .is_some_and(|k| k.starts_with(&format!("bulk-render:BAC26-PHILO:{uai}:d1a1n1:"))),
            "{:?}",
            row.idempotency_key
        );
    }
    assert_eq!(job_count(&app).await, before + 3);

    let (ok, out, err) =
        output(copiste(&app).args(["download", "request", "--exam", "BAC26-PHILO", "--all"]));
    assert!(ok, "{err}");
    assert!(
        out.contains("0 zips enqueued, 3 already being built, 0 already ready"),
        "{out}"
    );
    assert_eq!(job_count(&app).await, before + 3, "nothing enqueued again");

    // Unknown exam: exit code 3.
    let out = copiste(&app)
        .args(["download", "request", "--exam", "BAC26-NOPE", "--all"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(3));
}
