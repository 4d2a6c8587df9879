use super::done::{DoneRecord, DoneSet};
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

fn done_record(expires_at: i64, detail: &str) -> DoneRecord {
    DoneRecord {
        v: 1,
        expires_at,
        ack: super::Ack {
            v: Some(1),
            command_id: "x".into(),
            status: AckStatus::Succeeded,
            detail: Some(detail.into()),
            ts: None,
            actuator: None,
        },
    }
}

#[test]
fn a_finished_command_is_remembered_until_its_retention_after_expiry() {
    let retention = 1_000;
    let mut done = DoneSet::new(retention);
    done.remember("a#1".into(), done_record(10_000, "first"));
    done.remember("b#1".into(), done_record(20_000, "second"));
    assert_eq!(
        done.lookup("a#1").and_then(|a| a.detail.as_deref()),
        Some("first")
    );
    assert!(
        done.expire(10_000 + retention).is_empty(),
        "not past it yet"
    );
    assert_eq!(done.expire(10_000 + retention + 1), vec!["a#1".to_owned()]);
    assert!(done.lookup("a#1").is_none());
    assert!(done.lookup("b#1").is_some());
    assert_eq!(done.len(), 1);
}

#[test]
fn records_read_from_the_topic_honour_tombstones_and_staleness() {
    let mut done = DoneSet::new(1_000);
    let now = 50_000;
    done.apply("live#1".into(), Some(done_record(now, "kept")), now);
    done.apply("old#1".into(), Some(done_record(now - 5_000, "stale")), now);
    assert!(done.lookup("live#1").is_some());
    assert!(
        done.lookup("old#1").is_none(),
        "past its retention when read"
    );
    done.apply("live#1".into(), None, now);
    assert!(done.lookup("live#1").is_none(), "a tombstone forgets it");
    assert_eq!(
        done.expire(now),
        vec!["old#1".to_owned()],
        "the stale record gets its tombstone"
    );
}
