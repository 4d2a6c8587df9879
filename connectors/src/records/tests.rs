use super::*;

#[test]
fn a_barrier_passes_once_every_record_before_it_is_reported_whatever_the_order() {
    let sequenced = Sequenced::default();
    let (a, b) = (sequenced.sent(), sequenced.sent());
    let barrier = sequenced.barrier();
    let after = sequenced.sent();
    assert!(!sequenced.passed(barrier));
    // Reports come back per partition, so out of order across them.
    sequenced.reported(b);
    sequenced.reported(after);
    assert!(!sequenced.passed(barrier), "record a is still out");
    sequenced.reported(a);
    assert!(sequenced.passed(barrier));
    assert!(sequenced.passed(sequenced.barrier()));
}

#[test]
fn a_record_sent_after_the_barrier_does_not_hold_the_commit_back() {
    let sequenced = Sequenced::default();
    let first = sequenced.sent();
    let barrier = sequenced.barrier();
    sequenced.sent();
    sequenced.reported(first);
    assert!(sequenced.passed(barrier));
}

#[test]
fn commits_are_released_in_order_and_merged() {
    let sequenced = Sequenced::default();
    let awaiting = AwaitingCommits::default();
    let first = sequenced.sent();
    awaiting.push(
        Offsets::from([((0, 1), 10), ((0, 2), 5)]),
        sequenced.barrier(),
    );
    let second = sequenced.sent();
    awaiting.push(Offsets::from([((0, 1), 20)]), sequenced.barrier());
    // The second's records are in, the first's are not: nothing is released, not even the
    // second, whose offsets come after the first's events.
    sequenced.reported(second);
    assert!(awaiting.take_passed(&sequenced).is_empty());
    sequenced.reported(first);
    assert_eq!(
        awaiting.take_passed(&sequenced),
        Offsets::from([((0, 1), 20), ((0, 2), 5)])
    );
    assert!(awaiting.is_empty());
}

#[test]
fn a_hand_over_takes_only_the_revoked_partitions_offsets() {
    let awaiting = AwaitingCommits::default();
    awaiting.push(Offsets::from([((0, 1), 10), ((0, 2), 5)]), 1);
    awaiting.push(Offsets::from([((0, 1), 12), ((0, 3), 7)]), 2);
    assert_eq!(
        awaiting.take_partitions(&[(0, 1)]),
        Offsets::from([((0, 1), 12)])
    );
    assert_eq!(
        awaiting.take_all(),
        Offsets::from([((0, 2), 5), ((0, 3), 7)])
    );
    assert!(awaiting.is_empty());
}
