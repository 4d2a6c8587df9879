use super::*;

fn params() -> Map {
    let mut map = Map::new();
    map.insert("window".into(), "10s".into());
    map.insert("limit".into(), Dynamic::from_float(250.0));
    map.insert("exits".into(), Dynamic::from_int(3));
    map.insert("on".into(), Dynamic::from_bool(true));
    map.insert(
        "list".into(),
        Dynamic::from_array(vec![Dynamic::from_int(1)]),
    );
    map
}

fn body(text: &str) -> Option<Expr> {
    let source = format!("// a rule\nfn condition(p) {{\n  {text}\n}}\n#{{}}");
    compile(&source, "condition", &params(), &["helper"])
}

fn call(function: &str, args: Vec<Const>) -> Box<Expr> {
    Box::new(Expr::Call {
        function: function.to_owned(),
        args,
    })
}

#[test]
fn a_comparison_of_a_host_call_with_a_parameter_compiles_with_the_values_in_place() {
    let expr = body("p99(\"latency_ms\", p.window) > p.limit").expect("compiles");
    assert_eq!(
        expr,
        Expr::Binary(
            BinaryOp::Gt,
            call(
                "p99",
                vec![Const::Str("latency_ms".into()), Const::Str("10s".into())]
            ),
            Box::new(Expr::Const(Const::Float(250.0))),
        )
    );
}

#[test]
fn precedence_follows_rhai() {
    // `&&` binds tighter than `||`; comparisons tighter than both; `*` tighter than `+`.
    let expr = body("count(\"x\", 60) >= p.exits || !p.on && 1 + 2 * 3 == 7").expect("compiles");
    let Expr::Or(left, right) = expr else {
        panic!("an or at the top: {expr:?}");
    };
    assert!(matches!(*left, Expr::Binary(BinaryOp::Ge, _, _)));
    let Expr::And(not, equality) = *right else {
        panic!("an and on the right");
    };
    assert!(matches!(*not, Expr::Not(_)));
    let Expr::Binary(BinaryOp::Eq, sum, _) = *equality else {
        panic!("an equality");
    };
    let Expr::Binary(BinaryOp::Add, one, product) = *sum else {
        panic!("a sum");
    };
    assert_eq!(*one, Expr::Const(Const::Int(1)));
    assert!(matches!(*product, Expr::Binary(BinaryOp::Mul, _, _)));
    // Parentheses and unary minus.
    assert!(body("-(last(\"x\") - 1.5e1) < 0").is_some());
    assert!(
        body("failing_for(\"liveness\") >= 30.0 || consecutive_fails(\"liveness\") >= 3").is_some()
    );
}

#[test]
fn anything_else_is_left_to_rhai() {
    for text in [
        // Statements, variables, blocks.
        "let x = 1; x > 0",
        "count(\"x\", 60) > 0;",
        "if true { true } else { false }",
        "y > 1",
        // Calls with computed arguments, methods, indexing, the script's own functions.
        "count(p.window, last(\"x\")) > 0",
        "\"latency_ms\".p99(\"10s\") > 1",
        "p.list[0] > 0",
        "helper(1) > 0",
        "p.missing > 1",
        "p.list == 1",
        // Operators the compiled form does not have.
        "2 ** 3 > 1",
        "5 % 2 == 1",
        "1 < 2 < 3",
        "1 == 1 == true",
        "true | false",
        "\"a\" in \"abc\"",
        "0x10 > 1",
    ] {
        assert_eq!(body(text), None, "{text}");
    }
}

#[test]
fn other_functions_of_the_file_are_compiled_by_name() {
    let source =
        "fn clear(p) { p99(\"x\", p.window) <= p.limit }\nfn condition(p) { let a = 1; a > 0 }";
    assert!(compile(source, "clear", &params(), &[]).is_some());
    assert!(compile(source, "condition", &params(), &[]).is_none());
    assert!(compile(source, "verify", &params(), &[]).is_none());
}
