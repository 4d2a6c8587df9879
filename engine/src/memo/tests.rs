use super::*;

fn noted(reads: &[(&'static str, f64)]) -> Vec<Noted> {
    reads
        .iter()
        .map(|&(function, value)| Noted {
            read: Read::plain_for_test(function, "s"),
            value,
        })
        .collect()
}

#[test]
fn a_memo_is_recalled_with_its_shape_answer_and_values() {
    let mut book = MemoBook::default();
    let mut memos = Memos::default();
    let mut values = Vec::new();
    assert_eq!(memos.recall(slot(0, RuleFn::Condition), &mut values), None);

    let reads = noted(&[("last", 1.5), ("since_last", 2.0)]);
    memos.remember(&mut book, slot(0, RuleFn::Condition), &reads, true);
    let (shape, answer) = memos
        .recall(slot(0, RuleFn::Condition), &mut values)
        .expect("remembered");
    assert!(answer);
    assert_eq!(values, [1.5_f64.to_bits(), 2.0_f64.to_bits()]);
    assert_eq!(book.reads(shape).len(), 2);
    // Another function of the same rule has a memo of its own.
    assert_eq!(memos.recall(slot(0, RuleFn::Clear), &mut values), None);
}

#[test]
fn a_new_call_replaces_the_memo_of_its_slot_and_keeps_the_others() {
    let mut book = MemoBook::default();
    let mut memos = Memos::default();
    let mut values = Vec::new();
    let (a, b) = (slot(0, RuleFn::Condition), slot(1, RuleFn::Condition));
    memos.remember(&mut book, a, &noted(&[("last", 1.0)]), false);
    memos.remember(
        &mut book,
        b,
        &noted(&[("last", 7.0), ("since_last", 8.0)]),
        true,
    );

    // Same path: rewritten in place.
    memos.remember(&mut book, a, &noted(&[("last", 3.0)]), true);
    assert_eq!(memos.recall(a, &mut values).map(|(_, x)| x), Some(true));
    assert_eq!(values, [3.0_f64.to_bits()]);
    // Another path, with more reads: a new shape, the other slot untouched.
    memos.remember(
        &mut book,
        a,
        &noted(&[("last", 4.0), ("since_last", 5.0)]),
        false,
    );
    let (shape, answer) = memos.recall(a, &mut values).expect("remembered");
    assert!(!answer);
    assert_eq!(values, [4.0_f64.to_bits(), 5.0_f64.to_bits()]);
    assert_eq!(book.reads(shape).len(), 2);
    assert_eq!(memos.recall(b, &mut values).map(|(_, x)| x), Some(true));
    assert_eq!(values, [7.0_f64.to_bits(), 8.0_f64.to_bits()]);
    // A call with no reads at all is remembered too: its answer is a constant.
    memos.remember(&mut book, b, &[], false);
    assert_eq!(memos.recall(b, &mut values).map(|(_, x)| x), Some(false));
    assert!(values.is_empty());
}

#[test]
fn shapes_are_shared_by_slot_and_reset_with_the_rule_set() {
    let mut book = MemoBook::default();
    let (mut one, mut two) = (Memos::default(), Memos::default());
    let mut values = Vec::new();
    let a = slot(2, RuleFn::Verify);
    one.remember(&mut book, a, &noted(&[("last", 1.0)]), true);
    two.remember(&mut book, a, &noted(&[("last", 9.0)]), false);
    let shape_one = one.recall(a, &mut values).map(|(s, _)| s);
    assert_eq!(shape_one, two.recall(a, &mut values).map(|(s, _)| s));
    assert_eq!(book.shapes.len(), 1);
    book.reset();
    assert!(book.reads(shape_one.expect("a shape")).is_empty());
}

#[test]
fn a_call_with_more_reads_than_a_header_counts_is_forgotten() {
    let mut book = MemoBook::default();
    let mut memos = Memos::default();
    let mut values = Vec::new();
    let a = slot(0, RuleFn::Condition);
    memos.remember(&mut book, a, &noted(&[("last", 1.0)]), true);
    let many: Vec<Noted> = (0..300)
        .map(|i| Noted {
            read: Read::plain_for_test("last", "s"),
            value: f64::from(i),
        })
        .collect();
    memos.remember(&mut book, a, &many, true);
    assert_eq!(memos.recall(a, &mut values), None);
}
