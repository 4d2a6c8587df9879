use super::super::snapshot::{EngineSnapshot, ReloadSummary, RunnerSnapshot};
use super::*;
use salve_engine::{Engine, EngineConfig};
use salve_rules::{RuleSet, SHIPPED_RULES};

const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

#[test]
fn openmetrics_only_for_a_scraper_that_prefers_it() {
    assert_eq!(Format::negotiate([]), Format::Prometheus);
    assert_eq!(Format::negotiate(["*/*"]), Format::Prometheus);
    assert_eq!(Format::negotiate([PROMETHEUS_ACCEPT]), Format::OpenMetrics);
    assert_eq!(
        Format::negotiate(["Application/OpenMetrics-Text; version=1.0.0"]),
        Format::OpenMetrics
    );
    assert_eq!(
        Format::negotiate([
            "text/plain;version=0.0.4",
            "application/openmetrics-text;q=0.5"
        ]),
        Format::Prometheus
    );
    assert_eq!(
        Format::negotiate(["application/openmetrics-text;q=0"]),
        Format::Prometheus,
        "q=0 means not acceptable"
    );
    assert_eq!(
        Format::negotiate(["application/openmetrics-text;q=banana"]),
        Format::Prometheus
    );
    assert_eq!(
        Format::negotiate(["application/openmetrics-text;q=NaN"]),
        Format::Prometheus
    );
}

#[test]
fn the_text_format_names_counters_by_their_samples_and_has_no_openmetrics_markers() {
    let openmetrics = "# HELP a_seconds A.\n# TYPE a_seconds histogram\n# UNIT a_seconds seconds\na_seconds_sum 0.0\n# HELP b B, with b in it.\n# TYPE b counter\nb_total{x=\"b counter\"} 1\n# HELP c C.\n# TYPE c gauge\nc 2\n# EOF\n";
    assert_eq!(
        to_prometheus(openmetrics),
        "# HELP a_seconds A.\n# TYPE a_seconds histogram\na_seconds_sum 0.0\n# HELP b_total B, with b in it.\n# TYPE b_total counter\nb_total{x=\"b counter\"} 1\n# HELP c C.\n# TYPE c gauge\nc 2\n"
    );
}

fn engine() -> Engine {
    Engine::new(EngineConfig::default(), |runtime| {
        RuleSet::load_sources(
            runtime,
            SHIPPED_RULES
                .iter()
                .map(|(f, s)| ((*f).to_owned(), (*s).to_owned())),
        )
    })
    .expect("the shipped rules load")
}

/// What only the runner knows, which the HTTP test (an engine with no Kafka) cannot show.
#[test]
fn the_runners_topics_partitions_and_latency_are_rendered() {
    let snapshot = EngineSnapshot::take(&mut engine());
    let mut latency = LatencyHistogram::default();
    latency.record_ms(3);
    latency.record_ms(20_000);
    let runner = RunnerSnapshot {
        events_in: [("salve.telemetry".to_owned(), 7)].into(),
        published: [
            ("salve.commands".to_owned(), 1),
            ("salve.deadletter".to_owned(), 2),
        ]
        .into(),
        lag: [(("salve.telemetry".to_owned(), 0), 3)].into(),
        assigned: vec![("salve.telemetry".into(), 0), ("salve.telemetry".into(), 1)],
        latency,
    };
    let page = render(&snapshot, &runner, Format::Prometheus).expect("renders");
    for line in [
        "# TYPE salve_events_in_total counter\n",
        "salve_events_in_total{topic=\"salve.telemetry\"} 7\n",
        "salve_messages_out_total{topic=\"salve.commands\"} 1\n",
        "salve_messages_out_total{topic=\"salve.deadletter\"} 2\n",
        "# TYPE salve_consumer_lag_messages gauge\n",
        "salve_consumer_lag_messages{topic=\"salve.telemetry\",partition=\"0\"} 3\n",
        "salve_partitions_assigned{topic=\"salve.telemetry\"} 2\n",
        "salve_event_to_command_latency_seconds_sum 20.003\n",
        "salve_event_to_command_latency_seconds_count 2\n",
        "salve_event_to_command_latency_seconds_bucket{le=\"0.002\"} 0\n",
        "salve_event_to_command_latency_seconds_bucket{le=\"0.005\"} 1\n",
        "salve_event_to_command_latency_seconds_bucket{le=\"10.0\"} 1\n",
        "salve_event_to_command_latency_seconds_bucket{le=\"+Inf\"} 2\n",
    ] {
        assert!(page.contains(line), "no {line:?} in\n{page}");
    }
}

#[test]
fn a_rejected_reload_shows() {
    let mut snapshot = EngineSnapshot::take(&mut engine());
    snapshot.last_reload = Some(ReloadSummary {
        at_ms: 1_700_000_000_500,
        succeeded: false,
        errors: 2,
    });
    let page = render(&snapshot, &RunnerSnapshot::default(), Format::Prometheus).expect("renders");
    for line in [
        "salve_rules_last_reload_success 0\n",
        "salve_rules_last_reload_errors 2\n",
        "salve_rules_last_reload_timestamp_seconds 1700000000.5\n",
        "salve_rules_version 1\n",
    ] {
        assert!(page.contains(line), "no {line:?} in\n{page}");
    }
}

/// Rule names, actions and topics come from operators' files and config: whatever they hold
/// must not break the page.
#[test]
fn label_values_are_escaped() {
    let mut snapshot = EngineSnapshot::take(&mut engine());
    snapshot
        .commands_by_action
        .insert("say \"hi\"\\\nthen go".into(), 1);
    for format in [Format::Prometheus, Format::OpenMetrics] {
        let page = render(&snapshot, &RunnerSnapshot::default(), format).expect("renders");
        assert!(
            page.contains("salve_commands_total{action=\"say \\\"hi\\\"\\\\\\nthen go\"} 1\n"),
            "{page}"
        );
    }
}

/// HELP text is not escaped by the encoder; it is ours, so it must need none.
#[test]
fn help_texts_need_no_escaping() {
    let page = render(
        &EngineSnapshot::take(&mut engine()),
        &RunnerSnapshot::default(),
        Format::Prometheus,
    )
    .expect("renders");
    for line in page.lines().filter(|l| l.starts_with("# HELP ")) {
        assert!(!line.contains('\\'), "{line}");
    }
}

/// The README's "Metrics" table lists every family, with its type.
#[test]
fn the_readme_lists_every_metric() {
    const README: &str = include_str!("../../../../README.md");
    let mut snapshot = EngineSnapshot::take(&mut engine());
    snapshot.last_reload = Some(ReloadSummary {
        at_ms: 0,
        succeeded: true,
        errors: 0,
    });
    let mut record = salve_engine::ledger::RuleRecord::default();
    record.actions.insert("restart".into(), Default::default());
    snapshot.effectiveness.insert("crash_loop".into(), record);
    snapshot.commands_by_action.insert("restart".into(), 1);
    let runner = RunnerSnapshot {
        events_in: [("t".to_owned(), 1)].into(),
        published: [("t".to_owned(), 1)].into(),
        lag: [(("t".to_owned(), 0), 1)].into(),
        assigned: vec![("t".into(), 0)],
        latency: LatencyHistogram::default(),
    };
    let page = render(&snapshot, &runner, Format::Prometheus).expect("renders");
    let mut families = 0;
    for line in page.lines() {
        let Some((name, kind)) = line.strip_prefix("# TYPE ").and_then(|l| l.split_once(' '))
        else {
            continue;
        };
        families += 1;
        let row = format!("| `{name}` | {kind} | ");
        let labels = README
            .lines()
            .find_map(|line| line.strip_prefix(&row))
            .and_then(|rest| rest.split(" | ").next())
            .unwrap_or_else(|| panic!("the README has no row {row}"));
        // A closed set of label values reads `label`: `a`, `b`: every value served, no other.
        if let Some((label, values)) = labels.split_once("`: ") {
            let label = label.trim_start_matches('`');
            let listed: std::collections::BTreeSet<&str> =
                values.split(", ").map(|v| v.trim_matches('`')).collect();
            let served = label_values(&page, name, label);
            assert_eq!(
                listed,
                served.iter().map(String::as_str).collect(),
                "the README's {label} values of {name}"
            );
        }
    }
    assert_eq!(
        families,
        README.matches("\n| `salve_").count(),
        "every row of the README's table is a metric served"
    );
}

/// The values of `label` in the samples of the family `name` on a text-format page.
fn label_values(page: &str, name: &str, label: &str) -> std::collections::BTreeSet<String> {
    let sample = format!("{name}{{");
    let key = format!("{label}=\"");
    page.lines()
        .filter_map(|line| line.strip_prefix(&sample))
        .filter_map(|labels| {
            let value = &labels[labels.find(&key)? + key.len()..];
            Some(value[..value.find('"')?].to_owned())
        })
        .collect()
}
