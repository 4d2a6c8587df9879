//! Shared pieces of salve's benchmarks: a deterministic, realistic telemetry workload, the
//! engine with the shipped rules, and readings of the process's memory and CPU time.
//!
//! The targets are `benches/micro.rs` (criterion), and the `throughput`, `memory`,
//! `latency` and `scaling` binaries. `BENCHMARKS.md` at the repository root gives the commands and the figures.
#![forbid(unsafe_code)]

pub mod kafka;
pub mod relay;
pub mod rulegen;

use salve_engine::{Engine, EngineConfig, Output, PartitionId, RecordPosition};
use std::fmt::Write as _;
use std::time::Duration;

/// Event time of the first generated event, ms since the epoch. Fixed, so runs are comparable.
pub const BASE_TS_MS: i64 = 1_795_514_400_000;

/// How many digits a generated `ts` has; [`patch_ts`] rewrites them in place.
pub const TS_DIGITS: usize = 13;

/// The five series every generated entity reports.
pub const SERIES: [Series; 5] = [
    Series::Metric("latency_ms"),
    Series::Metric("cpu_pct"),
    Series::Metric("mem_rss_mb"),
    Series::Metric("http_5xx"),
    Series::Health("liveness"),
];

const SERVICES: [&str; 12] = [
    "checkout",
    "payments",
    "catalog",
    "search",
    "cart",
    "auth",
    "orders",
    "shipping",
    "pricing",
    "reviews",
    "inventory",
    "gateway",
];
const ZONES: [&str; 6] = [
    "eu-west-1a",
    "eu-west-1b",
    "eu-west-1c",
    "us-east-1a",
    "us-east-1b",
    "us-east-1c",
];

/// One kind of generated event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Series {
    /// A metric sample of this name.
    Metric(&'static str),
    /// A health check of this name.
    Health(&'static str),
    /// A `process_exit` event, which the shipped `crash_loop` rule selects.
    ProcessExit,
}

/// The entity id of entity number `index`, e.g. `checkout/pod-000012`.
pub fn entity_name(index: usize) -> String {
    format!("{}/pod-{index:06}", SERVICES[index % SERVICES.len()])
}

/// A small deterministic generator (splitmix64), so every run sees the same workload.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A float in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1_u64 << 53) as f64
    }
}

/// Writes one telemetry event of entity `index` as JSON into `out` (cleared first), the way a
/// metrics agent would: about 200 bytes with four labels. Returns the byte offset of the
/// 13-digit `ts` value, for [`patch_ts`].
pub fn write_event(
    out: &mut String,
    index: usize,
    series: Series,
    ts_ms: i64,
    rng: &mut Rng,
) -> usize {
    out.clear();
    let service = SERVICES[index % SERVICES.len()];
    let zone = ZONES[(index / SERVICES.len()) % ZONES.len()];
    let _ = write!(out, r#"{{"v":1,"entity":"{service}/pod-{index:06}","ts":"#);
    let ts_at = out.len();
    let _ = write!(out, "{ts_ms:013}");
    let labels = format_args!(
        r#""labels":{{"service":"{service}","zone":"{zone}","cluster":"prod-{}","version":"v2.{}.3"}}"#,
        &zone[..2],
        index % 17
    );
    let _ = match series {
        Series::Metric(name) => {
            let value = match name {
                "latency_ms" => (50.0 + 4000.0 * rng.next_f64() * rng.next_f64()).round() / 10.0,
                "cpu_pct" => (1000.0 * rng.next_f64()).round() / 10.0,
                "mem_rss_mb" => (200.0 + 3000.0 * rng.next_f64()).round(),
                _ => (rng.next_u64() % 4) as f64,
            };
            write!(
                out,
                r#","kind":"metric","name":"{name}","value":{value},{labels}}}"#
            )
        }
        Series::Health(name) => {
            let status = if rng.next_u64() % 100 == 0 {
                "fail"
            } else {
                "pass"
            };
            write!(
                out,
                r#","kind":"health","name":"{name}","status":"{status}",{labels}}}"#
            )
        }
        Series::ProcessExit => write!(
            out,
            r#","kind":"event","name":"process_exit",{labels},"attrs":{{"code":137,"signal":"SIGKILL"}}}}"#
        ),
    };
    ts_at
}

/// Rewrites the 13-digit `ts` written by [`write_event`] at byte `at`, in place.
pub fn patch_ts(payload: &mut [u8], at: usize, ts_ms: i64) {
    let mut rest = ts_ms.unsigned_abs();
    for byte in payload[at..at + TS_DIGITS].iter_mut().rev() {
        *byte = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
}

/// The byte offset of the 13-digit `ts` value in a payload that [`write_event`] or
/// [`kafka::sentinel`] wrote, for [`patch_ts`].
pub fn ts_offset(payload: &[u8]) -> Option<usize> {
    let at = payload.windows(5).position(|w| w == br#""ts":"#)? + 5;
    let digits = payload.get(at..at + TS_DIGITS)?;
    digits.iter().all(u8::is_ascii_digit).then_some(at)
}

/// The partition of a key: FNV-1a, so that the Kafka run and the in-memory run agree on it.
pub fn partition_for(key: &str, partitions: i32) -> i32 {
    let mut hash: u32 = 0x811C_9DC5;
    for byte in key.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    (hash % partitions.max(1).unsigned_abs()) as i32
}

/// One telemetry message, ready to produce or to feed to an engine.
#[derive(Debug, Clone)]
pub struct Message {
    /// The Kafka key: the entity.
    pub key: String,
    /// The JSON event.
    pub payload: Vec<u8>,
    /// The partition it goes to.
    pub partition: i32,
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct WorkloadSpec {
    /// Messages in total.
    pub events: usize,
    /// Distinct entities; each reports all of [`SERIES`] once per round.
    pub entities: usize,
    /// Partitions to spread entities over.
    pub partitions: i32,
    /// Share of `process_exit` events. They come in bursts of three for one entity, which the
    /// shipped `crash_loop` rule turns into a restart command.
    pub exit_share: f64,
    /// Event time between two rounds of reports of one entity.
    pub interval_ms: i64,
    /// Seed of the generator.
    pub seed: u64,
}

impl WorkloadSpec {
    /// `events` messages over `entities` entities, 1% process exits, every 10 s.
    pub fn new(events: usize, entities: usize, partitions: i32) -> Self {
        Self {
            events,
            entities: entities.max(1),
            partitions: partitions.max(1),
            exit_share: 0.01,
            interval_ms: 10_000,
            seed: 0x5A17E,
        }
    }
}

/// A generated workload.
#[derive(Debug, Clone, Default)]
pub struct Workload {
    /// The messages, in the order a producer sends them.
    pub messages: Vec<Message>,
    /// How many are `process_exit` events.
    pub exit_events: usize,
    /// Complete bursts of three exits; each should open an incident and issue one command.
    pub bursts: usize,
    /// The largest event time generated.
    pub last_ts_ms: i64,
}

impl Workload {
    /// Bytes of payload and key, summed.
    pub fn bytes(&self) -> usize {
        self.messages
            .iter()
            .map(|m| m.payload.len() + m.key.len())
            .sum()
    }
}

/// Generates the workload: rounds in which every entity reports each of its 5 series, event
/// time advancing steadily through the round; after an entity's reports, now and then a burst
/// of three `process_exit` events for it.
pub fn generate(spec: &WorkloadSpec) -> Workload {
    let mut stream = Stream::new(spec);
    let messages: Vec<Message> = stream.by_ref().take(spec.events).collect();
    Workload {
        messages,
        exit_events: stream.exit_events,
        bursts: stream.bursts,
        last_ts_ms: stream.last_ts_ms,
    }
}

/// The workload of [`generate`] as an endless stream, for runs too long to hold in memory.
/// `spec.events` is ignored: take as many as needed.
#[derive(Debug, Clone)]
pub struct Stream {
    spec: WorkloadSpec,
    rng: Rng,
    text: String,
    step_ms: i64,
    burst_probability: f64,
    round: i64,
    index: usize,
    /// 0..5: the entity's series; 5..8: its burst of exits, if it has one this round.
    slot: usize,
    burst: bool,
    /// `process_exit` events yielded so far.
    pub exit_events: usize,
    /// Complete bursts of three exits yielded so far.
    pub bursts: usize,
    /// The largest event time yielded so far.
    pub last_ts_ms: i64,
}

impl Stream {
    /// A stream of the workload `spec` describes.
    pub fn new(spec: &WorkloadSpec) -> Self {
        // Per entity and round: 5 reports, plus 3 exits with probability p; the exit share is
        // 3p / (5 + 3p).
        let share = spec.exit_share.clamp(0.0, 0.9);
        Self {
            spec: spec.clone(),
            rng: Rng::new(spec.seed),
            text: String::with_capacity(256),
            step_ms: (spec.interval_ms / spec.entities.max(1) as i64).max(1),
            burst_probability: 5.0 * share / (3.0 * (1.0 - share)),
            round: 0,
            index: 0,
            slot: 0,
            burst: false,
            exit_events: 0,
            bursts: 0,
            last_ts_ms: 0,
        }
    }

    fn message(&mut self, series: Series, ts: i64) -> Message {
        write_event(&mut self.text, self.index, series, ts, &mut self.rng);
        let key = entity_name(self.index);
        let partition = partition_for(&key, self.spec.partitions);
        self.last_ts_ms = self.last_ts_ms.max(ts);
        Message {
            key,
            payload: self.text.as_bytes().to_vec(),
            partition,
        }
    }
}

impl Iterator for Stream {
    type Item = Message;

    fn next(&mut self) -> Option<Message> {
        loop {
            let ts =
                BASE_TS_MS + self.round * self.spec.interval_ms + self.index as i64 * self.step_ms;
            let slot = self.slot;
            self.slot += 1;
            if slot < SERIES.len() {
                if self.slot == SERIES.len() {
                    // A stream of its own, so the burst decision does not depend on how many
                    // values the events drew.
                    let seed = self.spec.seed ^ ((self.round as u64) << 32) ^ self.index as u64;
                    self.burst = Rng::new(seed).next_f64() < self.burst_probability;
                }
                return Some(self.message(SERIES[slot], ts));
            }
            let exit = slot - SERIES.len();
            if self.burst && exit < 3 {
                self.exit_events += 1;
                if exit == 2 {
                    self.bursts += 1;
                }
                return Some(self.message(Series::ProcessExit, ts + exit as i64));
            }
            self.slot = 0;
            self.index += 1;
            if self.index == self.spec.entities {
                self.index = 0;
                self.round += 1;
            }
        }
    }
}

/// An engine with the default configuration and the rules shipped with salve, except that it
/// takes events from any time: the workload's timestamps start at the fixed [`BASE_TS_MS`], so
/// that every run carries the same bytes, and that instant may be hours from the wall clock
/// that the Kafka phases use as processing time.
pub fn shipped_engine() -> Engine {
    shipped_engine_with(EngineConfig {
        max_future_ms: i64::MAX,
        ..EngineConfig::default()
    })
}

/// An engine with `config` and the rules shipped with salve.
pub fn shipped_engine_with(config: EngineConfig) -> Engine {
    match Engine::new(config, |runtime| salve::load_rules(runtime, None)) {
        Ok(engine) => engine,
        Err(errors) => panic!("the shipped rules load: {errors}"),
    }
}

/// What feeding messages to an engine produced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fed {
    /// Messages fed.
    pub events: u64,
    /// Messages the engine refused to decode.
    pub decode_errors: u64,
    /// Commands among the outputs.
    pub commands: u64,
    /// All outputs (commands and decisions).
    pub outputs: u64,
}

/// Feeds `messages` to `engine` as the Kafka runner would, without a broker: one
/// `on_message` per message, at the offset it would have in its partition, and a `tick` every
/// 4096 messages. Outputs are counted and dropped.
pub fn feed<'a>(
    engine: &mut Engine,
    messages: impl IntoIterator<Item = &'a Message>,
    now_ms: impl Fn() -> i64,
) -> Fed {
    feed_from(engine, messages, now_ms, &mut Vec::new())
}

/// [`feed`], for one batch of many: `offsets` holds each partition's next offset, and carries
/// it over from one batch to the next.
pub fn feed_from<'a>(
    engine: &mut Engine,
    messages: impl IntoIterator<Item = &'a Message>,
    now_ms: impl Fn() -> i64,
    offsets: &mut Vec<i64>,
) -> Fed {
    let mut fed = Fed::default();
    let mut out: Vec<Output> = Vec::new();
    let mut now = now_ms();
    for message in messages {
        if fed.events % 4096 == 0 {
            now = now_ms();
            engine.tick(now, &mut out);
        }
        let index = usize::try_from(message.partition).unwrap_or(0);
        if offsets.len() <= index {
            offsets.resize(index + 1, 0);
        }
        let position = RecordPosition {
            partition: PartitionId {
                topic: 0,
                partition: message.partition,
            },
            offset: offsets[index],
        };
        offsets[index] += 1;
        fed.events += 1;
        if engine
            .on_message(
                position,
                Some(message.key.as_bytes()),
                &message.payload,
                None,
                now,
                &mut out,
            )
            .is_err()
        {
            fed.decode_errors += 1;
        }
        fed.outputs += out.len() as u64;
        fed.commands += out
            .iter()
            .filter(|o| matches!(o, Output::Command(_)))
            .count() as u64;
        out.clear();
    }
    fed
}

/// Wall-clock ms since the epoch.
pub fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The process's resident set size, from `VmRSS` in `/proc/self/status`.
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|kb| kb.trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

/// CPU time (user + system) from a `/proc/.../stat` file, with Linux's 100 ticks per second.
pub fn cpu_time(stat_path: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(stat_path).ok()?;
    // The command name is in parentheses and may hold spaces; fields count from after it.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name and state.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

/// CPU time of the whole process.
pub fn process_cpu() -> Option<Duration> {
    cpu_time("/proc/self/stat")
}

/// The calling thread's kernel id, so another thread can read its CPU time.
pub fn current_tid() -> Option<u32> {
    std::fs::read_link("/proc/thread-self")
        .ok()?
        .file_name()?
        .to_str()?
        .parse()
        .ok()
}

/// CPU time of thread `tid` of this process.
pub fn thread_cpu(tid: u32) -> Option<Duration> {
    cpu_time(&format!("/proc/self/task/{tid}/stat"))
}

/// The load averages over 1, 5 and 15 minutes, as `uptime` shows them.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into())
}

/// One line about the machine: cores, CPU model, memory.
pub fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown CPU".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|m| m.trim().strip_suffix("kB"))
        .and_then(|kb| kb.trim().parse::<u64>().ok())
        .map_or("unknown memory".into(), |kb| {
            format!("{:.1} GiB", kb as f64 / 1024.0 / 1024.0)
        });
    format!("{cores} cores, {model}, {memory}")
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_events_decode_and_are_about_200_bytes() {
        let workload = generate(&WorkloadSpec::new(5_000, 500, 8));
        assert_eq!(workload.messages.len(), 5_000);
        for message in &workload.messages {
            let event = salve_engine::decode(&message.payload, Some(message.key.as_bytes()), 4096)
                .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&message.payload)));
            assert_eq!(event.labels.len(), 4);
            assert!((0..8).contains(&message.partition));
        }
        let mean = workload.bytes() as f64 / workload.messages.len() as f64;
        assert!((180.0..240.0).contains(&mean), "mean message size {mean}");
    }

    #[test]
    fn about_one_percent_are_exits_in_bursts_that_each_yield_a_command() {
        let workload = generate(&WorkloadSpec::new(60_000, 1_000, 4));
        let share = workload.exit_events as f64 / workload.messages.len() as f64;
        assert!((0.006..0.014).contains(&share), "exit share {share}");
        let mut engine = shipped_engine();
        let fed = feed(&mut engine, &workload.messages, || BASE_TS_MS);
        assert_eq!(fed.decode_errors, 0);
        assert_eq!(fed.events, 60_000);
        // A burst whose entity still has an open incident joins it instead.
        assert!(fed.commands > 0 && fed.commands <= workload.bursts as u64);
        assert!(
            fed.commands * 10 >= workload.bursts as u64 * 9,
            "{fed:?} {workload:?}"
        );
    }

    #[test]
    fn patching_ts_keeps_the_event_valid() {
        let mut text = String::new();
        let at = write_event(&mut text, 7, SERIES[0], BASE_TS_MS, &mut Rng::new(1));
        let mut payload = text.into_bytes();
        patch_ts(&mut payload, at, BASE_TS_MS + 123_456);
        let event = salve_engine::decode(&payload, None, 4096).expect("decodes");
        assert_eq!(event.ts_ms, Some(BASE_TS_MS + 123_456));
    }

    #[test]
    fn proc_readings_work_here() {
        assert!(rss_bytes().is_some_and(|b| b > 0));
        assert!(process_cpu().is_some());
        let tid = current_tid().expect("tid");
        assert!(thread_cpu(tid).is_some());
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(12), "12");
    }
}
