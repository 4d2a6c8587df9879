use super::{control_channel, ControlError, RuleLoader};
use salve_engine::{Engine, EngineConfig, Mode};
use salve_rules::{RuleSet, SHIPPED_RULES};
use std::sync::Arc;
use std::time::Duration;

fn shipped(runtime: &salve_rules::Runtime) -> Result<RuleSet, salve_rules::LoadErrors> {
    RuleSet::load_sources(
        runtime,
        SHIPPED_RULES
            .iter()
            .map(|(f, s)| ((*f).to_owned(), (*s).to_owned())),
    )
}

#[test]
fn jobs_run_on_the_engine_thread_and_their_answers_come_back() {
    let loader: RuleLoader = Arc::new(shipped);
    let (handle, inbox) = control_channel(Some(loader));
    let asker = std::thread::spawn(move || {
        let set = handle.call_blocking(Duration::from_secs(10), |engine, _| {
            engine.set_mode(Some("crash_loop"), Some(Mode::Paused))
        });
        let mode = handle.call_blocking(Duration::from_secs(10), |engine, _| {
            engine.modes().for_rule("crash_loop")
        });
        (set, mode)
    });
    let mut engine = Engine::new(EngineConfig::default(), shipped).expect("rules load");
    let mut out = Vec::new();
    let mut ran = 0;
    while ran < 2 {
        ran += inbox.run_pending(&mut engine, 0, &mut out);
        std::thread::sleep(Duration::from_millis(1));
    }
    let (set, mode) = asker.join().expect("no panic");
    assert_eq!(set, Ok(Ok(())));
    assert_eq!(mode, Ok(Mode::Paused));
}

#[test]
fn a_call_to_a_stopped_engine_fails_rather_than_hangs() {
    let (handle, inbox) = control_channel(None);
    drop(inbox);
    assert_eq!(
        handle.call_blocking(Duration::from_secs(1), |engine, _| engine.rules_version()),
        Err(ControlError::Stopped)
    );
    let (handle, _inbox) = control_channel(None);
    assert_eq!(
        handle.call_blocking(Duration::from_millis(50), |engine, _| engine
            .rules_version()),
        Err(ControlError::Timeout(Duration::from_millis(50)))
    );
}

#[tokio::test]
async fn a_reload_needs_a_rule_source() {
    let (handle, _inbox) = control_channel(None);
    assert_eq!(handle.reload("api").await, Err(ControlError::NoRuleSource));
}

#[test]
fn latency_buckets_are_upper_bounds() {
    let mut histogram = super::LatencyHistogram::default();
    histogram.record_ms(1);
    histogram.record_ms(3);
    histogram.record_ms(60_000);
    assert_eq!(histogram.buckets[0], 1, "1 ms is within the 1 ms bucket");
    assert_eq!(histogram.buckets[2], 1, "3 ms is within 5 ms");
    assert_eq!(histogram.buckets[super::LATENCY_BUCKETS_S.len()], 1);
    assert_eq!(histogram.count, 3);
}
