//! Feeds arbitrary bytes, with and without a key, to the telemetry and ack decoders and to an
//! engine that keeps its state across inputs, as it would on a partition. None of it may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use salve_engine::{Ack, Engine, EngineConfig, RecordPosition};
use std::cell::RefCell;

thread_local! {
    static ENGINE: RefCell<Option<Engine>> = RefCell::new(
        Engine::new(EngineConfig::default(), |rt| {
            salve_rules::RuleSet::load_sources(
                rt,
                salve_rules::SHIPPED_RULES.iter().map(|(f, s)| ((*f).to_owned(), (*s).to_owned())),
            )
        })
        .ok(),
    );
}

fuzz_target!(|data: &[u8]| {
    let (key, payload) = match data.split_first() {
        Some((&n, rest)) if (n as usize) < rest.len() => {
            let (key, payload) = rest.split_at(n as usize);
            (Some(key), payload)
        }
        _ => (None, data),
    };
    let _ = salve_engine::decode(payload, key, 1 << 20);
    let _ = Ack::decode(payload);
    ENGINE.with(|engine| {
        if let Some(engine) = engine.borrow_mut().as_mut() {
            let mut out = Vec::new();
            let _ = engine.on_message(RecordPosition::default(), key, payload, Some(0), 0, &mut out);
            let _ = engine.on_ack_message(payload, 0, &mut out);
            engine.tick(i64::MAX, &mut out);
        }
    });
});
