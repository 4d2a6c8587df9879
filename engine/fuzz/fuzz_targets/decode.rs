//! Feeds arbitrary bytes, with and without a key, to the telemetry and ack decoders, and then
//! any event they accept to a fresh engine. None of it may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use salve_engine::{Ack, Engine, EngineConfig, RecordPosition};

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
    if let Ok(mut engine) = Engine::new(EngineConfig::default(), |_| Ok(Default::default())) {
        let mut out = Vec::new();
        let _ = engine.on_message(RecordPosition::default(), key, payload, Some(0), 0, &mut out);
        let _ = engine.on_ack_message(payload, 0, &mut out);
        engine.tick(i64::MAX, &mut out);
    }
});
