//! `copiste demo`, the README's first command, end to end.

use crate::support::{TestApp, fast_queue};

#[tokio::test]
async fn the_demo_runs_end_to_end_and_twice() {
    let app = TestApp::with(fast_queue()).await;
    copiste::demo::run(app.config.clone(), 50, 4)
        .await
        .expect("demo runs");
    let counts = app.counts().await;
    assert_eq!(counts.get("succeeded"), Some(&50), "{counts:?}");
    let copies = copiste::db::catalog::count_copies(&app.db)
        .await
        .expect("copies");
    assert_eq!(
        copies,
        3 * 4 * 3,
        "3 establishments x 4 candidates x 3 exams"
    );
    // A second run re-imports the same dataset (a no-op) and runs its own jobs.
    copiste::demo::run(app.config.clone(), 20, 4)
        .await
        .expect("demo runs again");
    assert_eq!(app.counts().await.get("succeeded"), Some(&70));
    assert_eq!(
        copiste::db::catalog::count_copies(&app.db)
            .await
            .expect("copies"),
        copies
    );
}
