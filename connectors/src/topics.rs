//! Creating salve's topics on an external broker.

use crate::config::TopicsConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use std::time::Duration;

/// A topic could not be created.
#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    /// The admin client could not be built or reached the broker.
    #[error("cannot reach the broker to create topics: {0}")]
    Client(#[from] KafkaError),
    /// The broker refused one topic.
    #[error("cannot create topic {topic}: {code}")]
    Refused {
        /// The topic.
        topic: String,
        /// What the broker said.
        code: RDKafkaErrorCode,
    },
}

/// Creates every configured topic that does not exist yet.
pub fn ensure_topics(
    bootstrap: &str,
    client: &std::collections::BTreeMap<String, String>,
    topics: &TopicsConfig,
) -> Result<(), TopicError> {
    let names = topics.all();
    let new_topics: Vec<NewTopic<'_>> = names
        .iter()
        .map(|name| {
            let topic = NewTopic::new(
                name,
                topics.partitions,
                TopicReplication::Fixed(topics.replication),
            );
            // The changelog keeps the latest state per subject, forever: compaction, not age.
            if *name == topics.changelog {
                topic.set("cleanup.policy", "compact")
            } else {
                topic
            }
        })
        .collect();
    create(bootstrap, client, &new_topics, &options())
}

/// Creates one topic with its own partition count, with the broker's default cleanup policy,
/// unless a topic of that name exists (whatever its partitions): a telemetry topic sized for
/// its load, say.
pub fn ensure_topic(
    bootstrap: &str,
    client: &std::collections::BTreeMap<String, String>,
    name: &str,
    partitions: i32,
    replication: i32,
) -> Result<(), TopicError> {
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(replication));
    create(bootstrap, client, &[topic], &options())
}

/// How long the broker may take to create a topic.
pub(crate) fn options() -> AdminOptions {
    AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)))
}

/// Sends one CreateTopics request; a topic that exists already is not an error.
pub(crate) fn create(
    bootstrap: &str,
    client: &std::collections::BTreeMap<String, String>,
    new_topics: &[NewTopic<'_>],
    options: &AdminOptions,
) -> Result<(), TopicError> {
    let admin: AdminClient<DefaultClientContext> =
        crate::config::client_config(bootstrap, &[], client).create()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| TopicError::Client(KafkaError::AdminOpCreation(e.to_string())))?;
    let results = runtime.block_on(admin.create_topics(new_topics, options))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(TopicError::Refused { topic, code }),
        }
    }
    Ok(())
}
