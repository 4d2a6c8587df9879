//! SIGHUP reloads the rules. In a file of its own: the signal reaches the whole test process,
//! and would reload every other test's rules too.

mod support;

use std::time::Duration;
use support::{hot_rule as rule, RunningSalve, TestBroker};

#[test]
fn sighup_reloads_the_rules_even_when_the_directory_is_not_watched() {
    let broker = TestBroker::new("hangup");
    let (rules, mut config) = broker.hot_rules();
    config.rules.watch = false;
    let salve = RunningSalve::start_operated(config);
    std::fs::write(&rules.file, rule("v2")).expect("write");
    // Not watched: the edit alone changes nothing.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(salve.ask(|engine, _| engine.rules_version()), 1);
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    salve.wait_for("SIGHUP to reload", |engine| engine.rules_version() == 2);
    let trigger = salve.ask(|engine, _| engine.last_reload().map(|r| r.trigger.clone()));
    assert_eq!(trigger.as_deref(), Some("signal"));
    salve.stop();
}
