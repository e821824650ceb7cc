//! `copiste demo`, the README's first command, end to end.

use crate::support::{TestApp, fast_queue};

#[tokio::test]
async fn the_demo_runs_end_to_end_and_twice() {
    let app = TestApp::with(fast_queue()).await;
    copiste_cli::demo::run(app.config.clone(), 50, 4)
        .await
        .expect("demo runs");
    // 50 noop jobs, a closure per establishment of the ponctuel and E3C
    // exams (2 x 3), one harmonisation pass and a zip per exam and
    // establishment (3 x 3).
    let counts = app.counts().await;
    assert_eq!(counts.get("succeeded"), Some(&66), "{counts:?}");
    for exam in ["BAC26-PHILO", "BAC26-E3C-HG", "BAC26-MATHS-H"] {
        let status = crate::ops::exam_status(&app, exam)
            .await
            .expect("status")
            .expect("exam");
        assert_eq!(
            status.count(copiste::closure::UnitState::Closed),
            3,
            "{status}"
        );
    }
    let copies = copiste::db::catalog::count_copies(&app.db)
        .await
        .expect("copies");
    assert_eq!(
        copies,
        3 * 4 * 3,
        "3 establishments x 4 candidates x 3 exams"
    );
    // A second run re-imports the same dataset (a no-op), runs its own
    // jobs, and closes again: 6 closures with nothing to send, no
    // harmonisation pass since every copy is validated, and no zip since
    // the first run's are still valid.
    copiste_cli::demo::run(app.config.clone(), 20, 4)
        .await
        .expect("demo runs again");
    assert_eq!(app.counts().await.get("succeeded"), Some(&(66 + 26)));
    assert_eq!(
        copiste::db::catalog::count_copies(&app.db)
            .await
            .expect("copies"),
        copies
    );
}
