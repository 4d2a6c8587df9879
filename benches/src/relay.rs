//! The floor of detection latency on a broker: a bare rdkafka consumer and producer that turn
//! the third message of a key into a command for that key, with no decoding, no windows and no
//! rules. Whatever latency it shows, the transport (clients, broker, machine) costs any
//! detector; what salve adds is the difference.

use crate::kafka::{send_waiting, Failure};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message as _;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// The relay, running on a thread of its own.
pub struct Relay {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Result<u64, String>>,
}

impl Relay {
    /// Starts relaying every partition of `telemetry`, from the beginning, to `commands`:
    /// the third message of each key whose key starts with one of `prefixes` is answered with
    /// a command keyed the same. `consumer` and `producer` properties go on top of the
    /// latency-sensitive ones (`fetch.wait.max.ms=1`, `linger.ms=0`).
    pub fn start(
        bootstrap: &str,
        telemetry: &[String],
        commands: &str,
        prefixes: &'static [&'static str],
    ) -> Result<Self, Failure> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", "bench.relay")
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", "1")
            .set("fetch.queue.backoff.ms", "10")
            .create()?;
        let mut list = TopicPartitionList::new();
        for topic in telemetry {
            let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
            for partition in metadata.topics().iter().flat_map(|t| t.partitions()) {
                list.add_partition_offset(topic, partition.id(), Offset::Beginning)?;
            }
        }
        consumer.assign(&list)?;
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("linger.ms", "0")
            .create()?;
        let stop = Arc::new(AtomicBool::new(false));
        let commands = commands.to_owned();
        let handle = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("relay".into())
                .spawn(move || relay(&consumer, &producer, &commands, prefixes, &stop))?
        };
        Ok(Self { stop, handle })
    }

    /// Stops the relay; returns how many messages it read.
    pub fn stop(self) -> Result<u64, Failure> {
        self.stop.store(true, Ordering::Relaxed);
        let read = self
            .handle
            .join()
            .map_err(|_| "the relay thread panicked")??;
        Ok(read)
    }
}

fn relay(
    consumer: &BaseConsumer,
    producer: &BaseProducer,
    commands: &str,
    prefixes: &[&str],
    stop: &AtomicBool,
) -> Result<u64, String> {
    let mut seen: HashMap<Vec<u8>, u8> = HashMap::new();
    let mut read = 0_u64;
    while !stop.load(Ordering::Relaxed) {
        producer.poll(Duration::ZERO);
        let Some(polled) = consumer.poll(Duration::from_millis(20)) else {
            continue;
        };
        let Ok(message) = polled else {
            continue;
        };
        read += 1;
        let key = message.key().unwrap_or_default();
        if !prefixes.iter().any(|p| key.starts_with(p.as_bytes())) {
            continue;
        }
        let count = seen.entry(key.to_vec()).or_default();
        *count += 1;
        if *count == 3 {
            let key = std::str::from_utf8(key).map_err(|e| e.to_string())?;
            send_waiting(
                producer,
                BaseRecord::to(commands)
                    .key(key)
                    .payload(br#"{"action":"restart"}"#.as_slice()),
            )
            .map_err(|e| e.to_string())?;
        }
    }
    producer
        .flush(Duration::from_secs(10))
        .map_err(|e| e.to_string())?;
    Ok(read)
}
