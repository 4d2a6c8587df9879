use super::*;
use crate::wire::AckStatus;

fn ack(id: &str, status: AckStatus) -> Ack {
    Ack {
        v: Some(1),
        command_id: id.to_owned(),
        status,
        detail: None,
        ts: None,
        actuator: None,
    }
}

#[test]
fn known_acks_are_taken_in_arrival_order_and_the_rest_stay() {
    let mut early = EarlyAcks::default();
    early.keep(0, &ack("a#1", AckStatus::Received));
    early.keep(1, &ack("b#1", AckStatus::Received));
    early.keep(2, &ack("a#1", AckStatus::Succeeded));
    let taken = early.take_awaited(3, |id| id == "a#1");
    let statuses: Vec<_> = taken.iter().map(|a| a.status).collect();
    assert_eq!(statuses, vec![AckStatus::Received, AckStatus::Succeeded]);
    assert_eq!(early.len(), 1);
    assert!(
        early.take_awaited(4, |id| id == "a#1").is_empty(),
        "taken once"
    );
}

#[test]
fn unknown_acks_are_kept_within_their_limits() {
    let mut early = EarlyAcks::default();
    early.keep(0, &ack("old#1", AckStatus::Succeeded));
    early.keep(KEPT_FOR_MS, &ack("new#1", AckStatus::Succeeded));
    assert_eq!(early.len(), 2, "an ack as old as the limit is kept");
    let taken = early.take_awaited(KEPT_FOR_MS + 1, |_| true);
    let ids: Vec<_> = taken.iter().map(|a| a.command_id.as_str()).collect();
    assert_eq!(ids, vec!["new#1"], "an older one is forgotten");

    for i in 0..KEPT + 5 {
        early.keep(0, &ack(&format!("c{i}#1"), AckStatus::Received));
    }
    assert_eq!(early.len(), KEPT);
    let taken = early.take_awaited(0, |id| id == "c0#1" || id == "c5#1");
    assert_eq!(taken.len(), 1, "the oldest went first: {taken:?}");
    assert_eq!(taken[0].command_id, "c5#1");
}
