//! What a rule's source asks of the engine's state, found by reading the source.
//!
//! The engine keeps a series' history only as far back as some rule's window reaches, and
//! percentile samples only for the series that some rule asks a percentile of. It learns both
//! from the windowed calls written in the rules: `p99("latency_ms", "10s")`, or
//! `count(p.series, p.window)` with the values taken from the rule's parameters. A window it
//! cannot read this way counts as the longest allowed. A percentile call whose series it cannot
//! read is refused at load time, since the engine would otherwise have no samples to answer it.

use crate::duration::duration_ms;
use rhai::Map;

/// The host functions that need percentile state, and so must name their series plainly.
pub const PERCENTILE_FUNCTIONS: &[&str] = &["p50", "p90", "p95", "p99", "p999", "percentile"];

/// The other host functions that take `(series, window)`.
pub const WINDOWED_FUNCTIONS: &[&str] = &["count", "sum", "mean", "min", "max", "rate"];

/// The host functions over a group: `(label, series, window)` for the aggregates,
/// `(label, series, filter)` for the picks, `(label)` or `(label, rule)` for the others.
pub const GROUP_FUNCTIONS: &[&str] = &[
    "group_count",
    "group_sum",
    "group_mean",
    "group_min",
    "group_max",
    "members",
    "failing",
    "pick_min",
    "pick_max",
];

/// Where a host function takes its label, series and window, by argument position.
struct Signature {
    label: Option<usize>,
    series: Option<usize>,
    window: Option<usize>,
}

fn signature(function: &str) -> Option<Signature> {
    let (label, series, window) =
        if PERCENTILE_FUNCTIONS.contains(&function) || WINDOWED_FUNCTIONS.contains(&function) {
            (None, Some(0), Some(1))
        } else if function.starts_with("group_") {
            (Some(0), Some(1), Some(2))
        } else if function.starts_with("pick_") {
            (Some(0), Some(1), None)
        } else if GROUP_FUNCTIONS.contains(&function) {
            (Some(0), None, None)
        } else if PLAIN_FUNCTIONS.contains(&function) {
            (None, Some(0), None)
        } else {
            return None;
        };
    Some(Signature {
        label,
        series,
        window,
    })
}

/// What a rule's calls ask of the engine's state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    /// Calls that read a series over a window.
    pub windows: Vec<WindowUse>,
    /// Labels that group functions group by, so the engine indexes entities by them.
    pub group_labels: Vec<String>,
    /// Every series named in a host call, with the call's line, for `salve check`.
    pub series_read: Vec<(String, usize)>,
    /// The first place the rule names something whose result is not a function of what the
    /// engine passes in (the clock, the log), by line; `None` when there is none. Only a rule
    /// without one may have a call skipped because its host reads came out as last time.
    pub impure_at: Option<usize>,
}

/// Names whose calls do not depend only on their arguments and the host's reads, or that do
/// something besides return a value: Rhai's clock, and its print and debug hooks. Named
/// anywhere, even in a string (as `Fn("timestamp")` would), they make a rule impure.
pub const IMPURE_NAMES: &[&str] = &["timestamp", "print", "debug"];

/// The host functions that take a series and no window.
pub const PLAIN_FUNCTIONS: &[&str] = &[
    "last",
    "since_last",
    "consecutive_fails",
    "consecutive_passes",
    "failing_for",
];

/// One windowed call found in a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowUse {
    /// The host function, e.g. `p99`.
    pub function: &'static str,
    /// The series it reads; `None` when it is computed, which means "could be any".
    pub series: Option<String>,
    /// Its window, when written as a literal or a parameter; `None` means "could be any", and
    /// the engine then keeps samples for its longest window.
    pub window_ms: Option<i64>,
    /// 1-based line of the call.
    pub line: usize,
}

/// A percentile call whose series is neither a string literal nor a parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError {
    /// 1-based line of the call.
    pub line: usize,
    /// 1-based column of the function name.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

/// An argument as written, as far as this scan cares.
#[derive(Debug, PartialEq)]
enum Arg<'a> {
    Text(&'a str),
    Param(&'a str),
    Number(&'a str),
    Other,
}

/// Finds every windowed call in `source`, resolving `<name>.<param>` arguments in `params`.
#[cfg(test)]
pub fn window_uses(source: &str, params: &Map) -> Result<Vec<WindowUse>, UsageError> {
    usage(source, params).map(|usage| usage.windows)
}

/// Reads the host calls in `source`, resolving `<name>.<param>` arguments in `params`.
pub fn usage(source: &str, params: &Map) -> Result<Usage, UsageError> {
    let tokens = tokenize(source);
    let mut usage = Usage {
        impure_at: tokens
            .iter()
            .find(|t| {
                IMPURE_NAMES.iter().any(|name| match t.kind {
                    TokenKind::Ident => t.text == *name,
                    TokenKind::Str | TokenKind::OpaqueStr => t.text.contains(name),
                    TokenKind::Number | TokenKind::Punct => false,
                })
            })
            .map(|t| t.line),
        ..Usage::default()
    };
    for (i, token) in tokens.iter().enumerate() {
        let function = PERCENTILE_FUNCTIONS
            .iter()
            .chain(WINDOWED_FUNCTIONS)
            .chain(GROUP_FUNCTIONS)
            .chain(PLAIN_FUNCTIONS)
            .find(|f| **f == token.text);
        let previous = i.checked_sub(1).map(|p| tokens[p].text);
        let (Some(function), TokenKind::Ident, Some("(")) =
            (function, token.kind, tokens.get(i + 1).map(|t| t.text))
        else {
            continue;
        };
        // `fn p99(...)` defines a function of the rule's own; it is not the host's.
        let Some(signature) = signature(function).filter(|_| previous != Some("fn")) else {
            continue;
        };
        // Arguments may hold calls too; the scan goes on inside them.
        let (mut args, _) = arguments(&tokens, i + 2);
        // `"latency_ms".p99("10s")`: the first argument is the receiver, which this scan does
        // not read.
        if previous == Some(".") {
            args.insert(0, Arg::Other);
        }
        let refuse = |message: String| UsageError {
            line: token.line,
            column: token.column,
            message,
        };
        let text_of = |index: Option<usize>| match index.and_then(|i| args.get(i)) {
            Some(Arg::Text(text)) => Some((*text).to_owned()),
            Some(Arg::Param(name)) => params
                .get(*name)
                .and_then(|v| v.clone().into_immutable_string().ok())
                .map(|text| text.to_string()),
            _ => None,
        };
        if signature.label.is_some() {
            let Some(label) = text_of(signature.label) else {
                return Err(refuse(format!(
                    "{function}'s label must be a string literal or a string parameter such as p.label: salve indexes entities by the labels that rules group by"
                )));
            };
            if !usage.group_labels.contains(&label) {
                usage.group_labels.push(label);
            }
        }
        if let Some(series) = text_of(signature.series) {
            usage.series_read.push((series, token.line));
        }
        // A pick reads the latest value, which every series keeps: no window to plan for.
        let (Some(series_at), Some(_)) = (signature.series, signature.window) else {
            continue;
        };
        let series = text_of(Some(series_at));
        // Rhai has min(a, b) and max(a, b) of its own. Unless the series is a string, or the
        // window is written as a string ("10s"), the call is taken for one of those; so a
        // computed series needs its window written as a string to be planned for.
        let window_text = matches!(
            signature.window.and_then(|w| args.get(w)),
            Some(Arg::Text(_))
        );
        if matches!(*function, "min" | "max") && series.is_none() && !window_text {
            continue;
        }
        if series.is_none() && PERCENTILE_FUNCTIONS.contains(function) {
            return Err(refuse(format!(
                "{function}'s series must be a string literal or a string parameter such as p.series, in a call {function}(series, window): salve keeps percentile samples only for the series that rules name"
            )));
        }
        let window_ms = match signature.window.and_then(|w| args.get(w)) {
            Some(Arg::Text(text)) => duration_ms(&rhai::Dynamic::from(text.to_string())).ok(),
            Some(Arg::Number(text)) => text
                .parse::<f64>()
                .ok()
                .and_then(|s| duration_ms(&rhai::Dynamic::from_float(s)).ok()),
            Some(Arg::Param(name)) => params.get(*name).and_then(|v| duration_ms(v).ok()),
            _ => None,
        };
        usage.windows.push(WindowUse {
            function,
            series,
            window_ms,
            line: token.line,
        });
    }
    Ok(usage)
}

/// Reads the arguments of a call whose `(` was just passed, up to its matching `)`.
fn arguments<'a>(tokens: &[Token<'a>], mut i: usize) -> (Vec<Arg<'a>>, usize) {
    let mut args = Vec::new();
    let mut current: Vec<&Token<'a>> = Vec::new();
    let mut depth = 0usize;
    while let Some(token) = tokens.get(i) {
        i += 1;
        match token.text {
            "(" | "[" | "{" => depth += 1,
            ")" | "]" | "}" if depth > 0 => depth -= 1,
            ")" => {
                args.push(classify(&current));
                return (args, i);
            }
            "," if depth == 0 => {
                args.push(classify(&current));
                current.clear();
                continue;
            }
            _ => {}
        }
        current.push(token);
    }
    (args, i)
}

fn classify<'a>(tokens: &[&Token<'a>]) -> Arg<'a> {
    match tokens {
        [t] if t.kind == TokenKind::Str => Arg::Text(t.text),
        [t] if t.kind == TokenKind::Number => Arg::Number(t.text),
        [object, dot, field]
            if object.kind == TokenKind::Ident
                && dot.text == "."
                && field.kind == TokenKind::Ident =>
        {
            Arg::Param(field.text)
        }
        _ => Arg::Other,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenKind {
    Ident,
    Number,
    /// A plain string literal without escapes; the text excludes the quotes.
    Str,
    /// A string with escapes or interpolation, which this scan does not read.
    OpaqueStr,
    Punct,
}

#[derive(Debug)]
pub(crate) struct Token<'a> {
    pub(crate) kind: TokenKind,
    pub(crate) text: &'a str,
    pub(crate) line: usize,
    pub(crate) column: usize,
}

/// A tokenizer just good enough to skip comments and strings and find calls and their
/// arguments. Rhai itself has already parsed the file, so the input is valid Rhai.
pub(crate) fn tokenize(source: &str) -> Vec<Token<'_>> {
    let bytes = source.as_bytes();
    let mut tokens = Vec::new();
    let (mut i, mut line, mut line_start) = (0, 1, 0);
    while i < bytes.len() {
        let b = bytes[i];
        let column = i - line_start + 1;
        if b == b'\n' {
            line += 1;
            line_start = i + 1;
            i += 1;
        } else if b.is_ascii_whitespace() {
            i += 1;
        } else if source[i..].starts_with("//") {
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
        } else if source[i..].starts_with("/*") {
            // Rhai's block comments nest.
            let mut depth = 0;
            while i < bytes.len() {
                if source[i..].starts_with("/*") {
                    depth += 1;
                    i += 2;
                } else if source[i..].starts_with("*/") {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if bytes[i] == b'\n' {
                        line += 1;
                        line_start = i + 1;
                    }
                    i += 1;
                }
            }
        } else if b == b'"' || b == b'`' || b == b'\'' {
            let start = i + 1;
            let mut plain = b == b'"';
            i += 1;
            while i < bytes.len() && bytes[i] != b {
                if bytes[i] == b'\\' {
                    plain = false;
                    i += 1;
                } else if bytes[i] == b'\n' {
                    line += 1;
                    line_start = i + 1;
                }
                i += 1;
            }
            let end = i.min(bytes.len());
            i += 1;
            tokens.push(Token {
                kind: if plain {
                    TokenKind::Str
                } else {
                    TokenKind::OpaqueStr
                },
                text: &source[start..end],
                line,
                column,
            });
        } else if b.is_ascii_alphabetic() || b == b'_' {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            tokens.push(Token {
                kind: TokenKind::Ident,
                text: &source[start..i],
                line,
                column,
            });
        } else if b.is_ascii_digit() {
            let start = i;
            while i < bytes.len()
                && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'.' || bytes[i] == b'_')
            {
                i += 1;
            }
            tokens.push(Token {
                kind: TokenKind::Number,
                text: &source[start..i],
                line,
                column,
            });
        } else {
            let width = source[i..].chars().next().map_or(1, char::len_utf8);
            tokens.push(Token {
                kind: TokenKind::Punct,
                text: &source[i..i + width],
                line,
                column,
            });
            i += width;
        }
    }
    tokens
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> Map {
        let mut map = Map::new();
        map.insert("series".into(), "queue_ms".into());
        map.insert("window".into(), "30s".into());
        map.insert("limit".into(), rhai::Dynamic::from_int(3));
        map
    }

    #[test]
    fn literal_and_parameter_calls_are_found_with_their_windows() {
        let source = r#"
            fn condition(p) {
                p99("latency_ms", "10s") > 250 && p50(p.series, p.window) > 1
                    && percentile("db_ms", 60, 0.9) > 5 && p90("x", some_window()) > 1
                    && count(series_of(p), "5m") > 0 && "cpu".mean(2.5) > 1
            }"#;
        let uses = window_uses(source, &params()).expect("scans");
        let found: Vec<_> = uses
            .iter()
            .map(|u| (u.function, u.series.as_deref(), u.window_ms, u.line))
            .collect();
        assert_eq!(
            found,
            [
                ("p99", Some("latency_ms"), Some(10_000), 3),
                ("p50", Some("queue_ms"), Some(30_000), 3),
                ("percentile", Some("db_ms"), Some(60_000), 4),
                ("p90", Some("x"), None, 4),
                ("count", None, Some(300_000), 5),
                ("mean", None, Some(2_500), 5),
            ]
        );
    }

    #[test]
    fn group_calls_name_their_label_and_calls_inside_arguments_are_found() {
        let source = r#"
            fn condition(p) {
                max(p99("a", "10s"), 1.0) > 2 && group_mean("service", "cpu_util", "2m") > 0.9
                    && failing(p.label) > 0 && pick_min("cluster", "lag_s", #{ role: "replica" }) != ()
            }"#;
        let mut params = params();
        params.insert("label".into(), "zone".into());
        let found = usage(source, &params).expect("scans");
        assert_eq!(found.group_labels, ["service", "zone", "cluster"]);
        let windows: Vec<_> = found
            .windows
            .iter()
            .map(|u| (u.function, u.series.as_deref(), u.window_ms))
            .collect();
        assert_eq!(
            windows,
            [
                // Rhai's own max(a, b) is not a window call.
                ("p99", Some("a"), Some(10_000)),
                ("group_mean", Some("cpu_util"), Some(120_000)),
            ]
        );
        let builtins = usage(
            "fn c(p) { max(last(\"x\"), 0.5) > min(p.limit, 3000) }",
            &params,
        )
        .expect("scans");
        assert!(builtins.windows.is_empty(), "{:?}", builtins.windows);
        let err = usage("fn c(p) { members(label(\"x\")) }", &params).expect_err("refused");
        assert!(err.message.contains("members's label"), "{}", err.message);
    }

    #[test]
    fn comments_strings_and_own_functions_are_not_calls() {
        let source = r#"
            // p99("in_a_comment", "1s")
            /* p99("in /* a nested */ block", "1s") */
            fn p99(a, b) { "p99(\"in_a_string\", 1)" }
            fn condition(p) { true }"#;
        assert_eq!(window_uses(source, &params()), Ok(vec![]));
    }

    #[test]
    fn a_series_that_cannot_be_read_is_refused_with_its_position() {
        let err = window_uses("fn c(p) {\n  let s = \"a\";\n  p99(s, 10) }", &params())
            .expect_err("refused");
        assert_eq!((err.line, err.column), (3, 3));
        assert!(
            err.message.contains("string literal or a string parameter"),
            "{}",
            err.message
        );
        let err = window_uses("fn c(p) { p99(p.limit, 10) }", &params()).expect_err("refused");
        assert!(err.message.contains("string parameter"), "{}", err.message);
        let err2 = window_uses("fn c(p) { \"x\".p99(10) }", &params()).expect_err("refused");
        assert!(
            err2.message.contains("p99(series, window)"),
            "{}",
            err2.message
        );
    }
}
