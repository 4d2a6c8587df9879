use super::offsets::OffsetTracker;
use super::runner::decode_for_tests as decode;
use super::{AckStatus, ActuatorSettings, Outcome};
use crate::config::TopicsConfig;

#[test]
fn the_commit_point_waits_for_the_lowest_unfinished_offset() {
    let mut offsets = OffsetTracker::default();
    for offset in 10..13 {
        offsets.start("commands", 0, offset);
    }
    offsets.finish("commands", 0, 11);
    offsets.finish("commands", 0, 12);
    assert!(
        offsets.committable(|_| true).is_empty(),
        "10 still runs: committing past it would lose it in a crash"
    );
    offsets.finish("commands", 0, 10);
    let points = offsets.committable(|_| true);
    assert_eq!(points, vec![(("commands".to_owned(), 0), 13)]);
    offsets.mark_committed(&points);
    assert!(offsets.committable(|_| true).is_empty(), "nothing new");
}

#[test]
fn commit_points_are_per_partition_and_filtered() {
    let mut offsets = OffsetTracker::default();
    offsets.start("commands", 0, 5);
    offsets.start("commands", 1, 7);
    offsets.finish("commands", 0, 5);
    offsets.finish("commands", 1, 7);
    let only_one = offsets.committable(|(_, partition)| *partition == 1);
    assert_eq!(only_one, vec![(("commands".to_owned(), 1), 8)]);
    offsets.forget(&("commands".to_owned(), 0));
    assert_eq!(offsets.committable(|_| true), only_one);
}

fn command_json(id: &str, v: u32) -> String {
    format!(
        r#"{{"v":{v},"id":"{id}","incident":"i","entity":"e/1","action":"restart","params":{{}},"rule":"r","reason":"x","attempt":1,"issued_at":1,"expires_at":2}}"#
    )
}

#[test]
fn a_command_decodes_and_an_unreadable_one_keeps_its_id_for_the_rejection() {
    let command = decode(command_json("c#1", 1).as_bytes()).expect("decodes");
    assert_eq!(command.id, "c#1");
    assert_eq!(command.entity, "e/1");

    let future_version = decode(command_json("c#2", 2).as_bytes()).expect_err("refused");
    assert_eq!(future_version.0.as_deref(), Some("c#2"));
    assert!(
        future_version.2.contains("version 2"),
        "{}",
        future_version.2
    );

    let missing_field = decode(br#"{"v":1,"id":"c#3","entity":"e/1"}"#).expect_err("refused");
    assert_eq!(missing_field.0.as_deref(), Some("c#3"));
    assert_eq!(missing_field.1.as_deref(), Some("e/1"));

    let garbage = decode(b"\xff not json").expect_err("refused");
    assert_eq!(garbage.0, None, "nothing to reject");
}

#[test]
fn outcomes_map_to_ack_statuses() {
    assert_eq!(
        Outcome::Succeeded("ok".into()).status(),
        AckStatus::Succeeded
    );
    assert_eq!(Outcome::Failed("no".into()).status(), AckStatus::Failed);
    let rejected = Outcome::Rejected("unknown action".into());
    assert_eq!(rejected.status(), AckStatus::Rejected);
    assert_eq!(rejected.detail(), "unknown action");
}

#[test]
fn settings_refuse_what_cannot_work() {
    let topics = TopicsConfig::default();
    let good = ActuatorSettings::new("exec", &topics, vec![topics.commands.clone()]);
    assert_eq!(good.validate(), Ok(()));
    assert_eq!(good.acks_topic, "salve.acks");

    let no_room = ActuatorSettings {
        max_in_flight: 0,
        ..good.clone()
    };
    assert_eq!(no_room.validate().map_err(|e| e.key), Err("max_in_flight"));

    let reads_its_acks = ActuatorSettings {
        command_topics: vec![topics.acks.clone()],
        ..good.clone()
    };
    assert!(reads_its_acks.validate().is_err());

    let no_topics = ActuatorSettings {
        command_topics: vec![],
        ..good
    };
    assert!(no_topics.validate().is_err());
}
