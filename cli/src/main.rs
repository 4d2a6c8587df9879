//! The `salve` command line.
#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};
use salve::config::{Config, LogFormat};
use salve::replay::{replay, Actuator, SimulatedOutcome};
use salve_connectors::file_source::LineReader;
use salve_connectors::Shutdown;
use salve_engine::Engine;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Parser)]
#[command(
    name = "salve",
    version,
    about = "A self-healing engine: telemetry on Kafka in, verified remediations out"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the engine on Kafka (an embedded broker when no brokers are configured).
    Run {
        /// A TOML config file; every key has a default.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Run the engine over a JSON-lines file of events, with event time as the clock.
    Replay {
        /// A directory of .rhai rules (default: the shipped rules, or the config's rules.dir).
        #[arg(long)]
        rules: Option<PathBuf>,
        /// A TOML config file, for the [engine] settings.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// How the simulated actuator answers: succeeded, failed, rejected, or none.
        #[arg(long, default_value = "none")]
        ack: SimulatedOutcome,
        /// Per-action answers as JSON, e.g. '{"restart":"succeeded"}'; overrides --ack.
        #[arg(long)]
        ack_map: Option<String>,
        /// Event time from a command to its simulated ack, e.g. 2s.
        #[arg(long, default_value = "1s")]
        ack_delay: String,
        /// The events file, one JSON event per line; `-` reads standard input. Read as it
        /// is replayed, so a file of any size fits.
        events: PathBuf,
    },
    /// Check rule files and report every problem with file:line:column.
    Check {
        /// A TOML config file, for the [engine] settings the rules run under.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// The rules directory.
        dir: PathBuf,
    },
    /// Run an actuator that carries out salve's commands.
    Actuate {
        #[command(subcommand)]
        actuator: ActuateCommand,
    },
    /// Operate a running salve over its gRPC API: status, incidents, modes, reload, ...
    Ctl(salve::ctl::CtlArgs),
    /// Show the whole loop in one process: a simulated fleet, salve with the shipped rules and
    /// an actuator on an embedded broker; inject seven faults and check what salve does.
    Demo {
        /// Run only this scenario; repeat for more. One of: crash-loop, latency-spike,
        /// latency-rise, primary-failure, checksum-mismatch, flapping, storm.
        #[arg(long = "scenario", value_name = "NAME")]
        scenarios: Vec<salve::demo::scenarios::ScenarioKind>,
        /// How many times faster than the wall clock the fleet's event time runs, from 1 to 4.
        #[arg(long, default_value_t = 2.0)]
        speed: f64,
        /// Seconds between one injection and the next.
        #[arg(long, default_value_t = 3.0)]
        stagger: f64,
    },
    /// Run the rule test cases in DIR/tests/ against the rules in DIR.
    Test {
        /// A TOML config file, for the [engine] settings the rules run under.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// The rules directory; its cases are in DIR/tests/<case>/.
        dir: PathBuf,
        /// Write each case's expected.jsonl from what the rules do now, instead of comparing.
        #[arg(long)]
        update: bool,
    },
}

#[derive(Subcommand)]
enum ActuateCommand {
    /// Run a program per action, from a map of argv templates (no shell involved).
    Exec {
        /// The action map: `[actions]` with `restart = ["systemctl", "restart", "{entity}"]`.
        #[arg(long)]
        map: PathBuf,
        /// A TOML config file: [kafka] brokers and [topics], as salve run reads it.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// The actuator's name: in its acks, its consumer group and its dedup topic.
        #[arg(long, default_value = "exec")]
        name: String,
        /// How many programs may run at once.
        #[arg(long, default_value_t = 4)]
        max_in_flight: usize,
    },
    /// Restart pods, scale deployments and replace nodes on Kubernetes (kube-rs).
    #[cfg(feature = "k8s")]
    K8s {
        /// A TOML config file: [kafka] brokers and [topics], as salve run reads it.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// The namespace for commands that name none (default: the kubeconfig context's).
        #[arg(long)]
        namespace: Option<String>,
        /// The actuator's name: in its acks, its consumer group and its dedup topic.
        #[arg(long, default_value = "k8s")]
        name: String,
        /// How many commands may run at once.
        #[arg(long, default_value_t = 4)]
        max_in_flight: usize,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => run(config),
        Command::Replay {
            rules,
            config,
            ack,
            ack_map,
            ack_delay,
            events,
        } => replay_command(rules, config, ack, ack_map, &ack_delay, &events),
        Command::Actuate {
            actuator:
                ActuateCommand::Exec {
                    map,
                    config,
                    name,
                    max_in_flight,
                },
        } => actuate_exec(&map, config.as_deref(), name, max_in_flight),
        #[cfg(feature = "k8s")]
        Command::Actuate {
            actuator:
                ActuateCommand::K8s {
                    config,
                    namespace,
                    name,
                    max_in_flight,
                },
        } => actuate_k8s(config.as_deref(), namespace, name, max_in_flight),
        Command::Check { config, dir } => check(config.as_deref(), &dir),
        Command::Ctl(args) => salve::ctl::main(args),
        Command::Demo {
            scenarios,
            speed,
            stagger,
        } => demo(scenarios, speed, stagger),
        Command::Test {
            config,
            dir,
            update,
        } => test(config.as_deref(), &dir, update),
    }
}

fn load_config(path: Option<&std::path::Path>) -> Result<Config, ExitCode> {
    Config::load(path, std::env::vars()).map_err(|error| {
        eprintln!("salve: config: {error}");
        ExitCode::from(2)
    })
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&config.log.level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match config.log.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

fn run(config_path: Option<PathBuf>) -> ExitCode {
    let config = match load_config(config_path.as_deref()) {
        Ok(config) => config,
        Err(code) => return code,
    };
    init_logging(&config);
    let runtime = match async_runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let (control, inbox) =
        salve_connectors::control_channel(Some(salve::serve::rule_loader(&config)));
    let operator = match runtime.block_on(salve::serve::Operator::start(&config, control)) {
        Ok(operator) => operator,
        Err(error) => {
            eprintln!("salve: {error}");
            return ExitCode::from(2);
        }
    };
    let endpoints = salve::run::Endpoints {
        api: operator.api,
        metrics: operator.metrics,
    };
    let worker = supervise_on(&runtime, "salve-engine", move |shutdown| {
        salve::run::run(&config, shutdown, Some(&inbox), |ready| {
            println!("{}", salve::run::banner(&config, ready, endpoints));
            let _ = std::io::stdout().flush();
        })
    });
    runtime.block_on(operator.stop());
    let worker = match worker {
        Ok(worker) => worker,
        Err(code) => return code,
    };
    match worker {
        Ok(Ok(report)) if report.aborted => {
            eprintln!(
                "salve: aborted without committing; events since the last commit will be processed again on the next run"
            );
            // 128 + SIGINT, as shells report an interrupted command.
            ExitCode::from(130)
        }
        Ok(Ok(report)) => {
            let stats = &report.engine;
            tracing::info!(
                events = stats.events_in,
                commands = stats.commands,
                dead_lettered = report.dead_lettered,
                decode_errors = stats.decode_errors,
                late = stats.late_events,
                future = stats.future_events,
                transients = stats.verdicts_transient,
                rule_errors = stats.rule_errors,
                entities_expired = stats.entities_expired,
                commits = report.commits,
                "salve stopped"
            );
            ExitCode::SUCCESS
        }
        Ok(Err(error)) => {
            eprintln!("salve: {error}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("salve: the engine thread panicked");
            ExitCode::FAILURE
        }
    }
}

/// Runs `work` on its own thread with a [`Shutdown`] that the first SIGINT or SIGTERM makes
/// graceful and a second one aborts; returns what `work` returned, or `Err` if it panicked.
fn supervise<T: Send + 'static>(
    thread_name: &str,
    work: impl FnOnce(&Shutdown) -> T + Send + 'static,
) -> Result<std::thread::Result<T>, ExitCode> {
    let runtime = async_runtime()?;
    supervise_on(&runtime, thread_name, work)
}

/// The runtime that waits for signals and serves the operator surface.
fn async_runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| {
            eprintln!("salve: cannot start the async runtime: {error}");
            ExitCode::FAILURE
        })
}

/// [`supervise`] on a runtime the caller also uses for other tasks.
fn supervise_on<T: Send + 'static>(
    runtime: &tokio::runtime::Runtime,
    thread_name: &str,
    work: impl FnOnce(&Shutdown) -> T + Send + 'static,
) -> Result<std::thread::Result<T>, ExitCode> {
    let shutdown = Arc::new(Shutdown::default());
    let worker_shutdown = Arc::clone(&shutdown);
    let worker = std::thread::Builder::new()
        .name(thread_name.into())
        .spawn(move || work(&worker_shutdown));
    let worker = match worker {
        Ok(worker) => worker,
        Err(error) => {
            eprintln!("salve: cannot start the {thread_name} thread: {error}");
            return Err(ExitCode::FAILURE);
        }
    };
    runtime.block_on(async {
        let signal_shutdown = Arc::clone(&shutdown);
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!(
                "signal received: stopping, flushing and committing (again to abort at once)"
            );
            signal_shutdown.graceful();
            wait_for_signal().await;
            tracing::warn!("second signal: aborting without committing");
            signal_shutdown.abort();
        });
        while !worker.is_finished() {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    });
    Ok(worker.join())
}

fn demo(
    scenarios: Vec<salve::demo::scenarios::ScenarioKind>,
    speed: f64,
    stagger: f64,
) -> ExitCode {
    let mut config = Config::default();
    // The live view is the demo's output; the components' own logs would drown it.
    config.log.level = "warn".into();
    init_logging(&config);
    let Ok(stagger) = std::time::Duration::try_from_secs_f64(stagger) else {
        eprintln!("salve: --stagger must be a number of seconds, not {stagger}");
        return ExitCode::from(2);
    };
    let stdout_is_terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let options = salve::demo::DemoOptions {
        scenarios: if scenarios.is_empty() {
            salve::demo::scenarios::ScenarioKind::ALL.to_vec()
        } else {
            scenarios
        },
        speed,
        stagger,
        colour: stdout_is_terminal && std::env::var_os("NO_COLOR").is_none(),
        ..salve::demo::DemoOptions::default()
    };
    let worker = supervise("salve-demo", move |shutdown| {
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        salve::demo::run_demo(&options, shutdown, &mut out)
    });
    match worker {
        Err(code) => code,
        Ok(Ok(Ok(report))) if report.interrupted => ExitCode::from(130),
        Ok(Ok(Ok(report))) if report.passed() => ExitCode::SUCCESS,
        Ok(Ok(Ok(_))) => ExitCode::FAILURE,
        Ok(Ok(Err(error @ salve::demo::DemoError::Speed(_)))) => {
            eprintln!("salve: {error}");
            ExitCode::from(2)
        }
        Ok(Ok(Err(error))) => {
            eprintln!("salve: demo: {error}");
            ExitCode::FAILURE
        }
        Ok(Err(_)) => {
            eprintln!("salve: the demo thread panicked");
            ExitCode::FAILURE
        }
    }
}

fn actuate_exec(
    map_path: &std::path::Path,
    config_path: Option<&std::path::Path>,
    name: String,
    max_in_flight: usize,
) -> ExitCode {
    let config = match load_config(config_path) {
        Ok(config) => config,
        Err(code) => return code,
    };
    init_logging(&config);
    let map = match salve::actuate::map::ActionMap::load(map_path) {
        Ok(map) => map,
        Err(error) => {
            eprintln!("salve: {error}");
            return ExitCode::from(2);
        }
    };
    let options = salve::actuate::ActuatorOptions {
        name,
        max_in_flight,
    };
    let worker = supervise("salve-actuator", move |shutdown| {
        let stats = Arc::new(salve_connectors::actuator::ActuatorStats::default());
        salve::actuate::run_exec(
            &config,
            map,
            &options,
            shutdown,
            stats,
            print_actuator_banner,
        )
    });
    actuator_exit(worker)
}

#[cfg(feature = "k8s")]
fn actuate_k8s(
    config_path: Option<&std::path::Path>,
    namespace: Option<String>,
    name: String,
    max_in_flight: usize,
) -> ExitCode {
    let config = match load_config(config_path) {
        Ok(config) => config,
        Err(code) => return code,
    };
    init_logging(&config);
    let options = salve::actuate::ActuatorOptions {
        name,
        max_in_flight,
    };
    let worker = supervise("salve-actuator", move |shutdown| {
        let stats = Arc::new(salve_connectors::actuator::ActuatorStats::default());
        salve::actuate::run_k8s(
            &config,
            namespace.as_deref(),
            &options,
            shutdown,
            stats,
            print_actuator_banner,
        )
    });
    actuator_exit(worker)
}

fn print_actuator_banner(settings: &salve_connectors::actuator::ActuatorSettings) {
    println!(
        "salve actuator `{}` is running\n  consumes   {}\n  acks       {}\n  dedup      {}\n  group      {}\nStop with Ctrl-C: running commands finish, their acks are sent, offsets are committed.",
        settings.name,
        settings.command_topics.join(", "),
        settings.acks_topic,
        settings.dedup_topic,
        settings.group_id,
    );
    let _ = std::io::stdout().flush();
}

fn actuator_exit(
    worker: Result<
        std::thread::Result<
            Result<salve_connectors::actuator::ActuatorReport, salve::actuate::ActuateFailure>,
        >,
        ExitCode,
    >,
) -> ExitCode {
    match worker {
        Err(code) => code,
        Ok(Ok(Ok(report))) if report.aborted => {
            eprintln!("salve: aborted without committing; unacknowledged commands will be delivered again");
            ExitCode::from(130)
        }
        Ok(Ok(Ok(report))) => {
            tracing::info!(
                consumed = report.consumed,
                started = report.started,
                succeeded = report.succeeded,
                failed = report.failed,
                rejected = report.rejected,
                expired = report.expired,
                duplicates = report.duplicates,
                restored = report.restored,
                commits = report.commits,
                "actuator stopped"
            );
            ExitCode::SUCCESS
        }
        Ok(Ok(Err(error))) => {
            eprintln!("salve: {error}");
            ExitCode::FAILURE
        }
        Ok(Err(_)) => {
            eprintln!("salve: the actuator thread panicked");
            ExitCode::FAILURE
        }
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn replay_command(
    rules: Option<PathBuf>,
    config_path: Option<PathBuf>,
    ack: SimulatedOutcome,
    ack_map: Option<String>,
    ack_delay: &str,
    events: &std::path::Path,
) -> ExitCode {
    let config = match load_config(config_path.as_deref()) {
        Ok(config) => config,
        Err(code) => return code,
    };
    init_logging(&config);
    let delay_ms = match salve_rules::parse_duration_ms(ack_delay) {
        Ok(ms) => ms,
        Err(error) => {
            eprintln!("salve: --ack-delay: {error}");
            return ExitCode::from(2);
        }
    };
    let by_action = match ack_map.as_deref().map(Actuator::parse_map).transpose() {
        Ok(map) => map.unwrap_or_default(),
        Err(error) => {
            eprintln!("salve: {error}");
            return ExitCode::from(2);
        }
    };
    // `-` reads standard input, so that `salve replay` can sit at the end of a pipe; it may
    // be a live stream.
    let live = events == std::path::Path::new("-");
    let input: Box<dyn std::io::BufRead> = if live {
        Box::new(std::io::stdin().lock())
    } else {
        match std::fs::File::open(events) {
            Ok(file) => Box::new(std::io::BufReader::new(file)),
            Err(error) => {
                eprintln!("salve: cannot read {}: {error}", events.display());
                return ExitCode::from(2);
            }
        }
    };
    let rules_dir = rules.or(config.rules.dir.clone());
    let mut engine = match Engine::new(config.engine.clone(), |rt| {
        salve::load_rules_with(rt, rules_dir.as_deref(), &config.rules.params)
    }) {
        Ok(engine) => engine,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::from(1);
        }
    };
    let actuator = Actuator {
        default: ack,
        by_action,
        delay_ms,
        operator: Vec::new(),
    };
    // Buffered: standard output alone would write each line with a system call of its own.
    // From a live stream, each line goes out as it comes.
    let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
    let mut failed = None;
    let read = replay(
        &mut engine,
        &mut LineReader::new(input, config.engine.max_event_bytes),
        actuator,
        &mut |line| {
            if failed.is_none() {
                if let Err(error) =
                    line.write_to(&mut stdout)
                        .and_then(|()| if live { stdout.flush() } else { Ok(()) })
                {
                    failed = Some(error);
                }
            }
        },
    );
    if let Err(error) = failed.map_or_else(|| stdout.flush(), Err) {
        eprintln!("salve: writing output: {error}");
        return ExitCode::FAILURE;
    }
    if let Err(error) = read {
        eprintln!("salve: cannot read {}: {error}", events.display());
        return ExitCode::from(2);
    }
    ExitCode::SUCCESS
}

fn check(config_path: Option<&std::path::Path>, dir: &std::path::Path) -> ExitCode {
    let config = match load_config(config_path) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let params = &config.rules.params;
    match Engine::new(config.engine, |rt| {
        salve::load_rules_with(rt, Some(dir), params)
    }) {
        Ok(engine) => {
            for (index, rule) in engine.rules().rules().iter().enumerate() {
                let how: Vec<String> = engine
                    .verdict_functions(index)
                    .into_iter()
                    .map(|(function, native)| {
                        let runner = match (native, rule.is_pure()) {
                            (true, _) => "native",
                            (false, true) => "rhai, memoized",
                            (false, false) => "rhai",
                        };
                        format!("{function}: {runner}")
                    })
                    .collect();
                println!(
                    "ok  {}  {}  ({})",
                    rule.file,
                    rule.decl.name,
                    how.join(", ")
                );
            }
            for warning in salve::unknown_series(engine.rules()) {
                eprintln!("warning: {warning}");
            }
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            ExitCode::from(1)
        }
    }
}

fn test(config_path: Option<&std::path::Path>, dir: &std::path::Path, update: bool) -> ExitCode {
    let config = match load_config(config_path) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let summary = match salve::cases::test_rules(dir, &config.engine, &config.rules.params, update)
    {
        Ok(summary) => summary,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::from(2);
        }
    };
    for (name, problem) in &summary.failed {
        println!("FAIL {name}\n{problem}");
    }
    let verb = if update { "updated" } else { "passed" };
    println!("{} {verb}, {} failed", summary.passed, summary.failed.len());
    if summary.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
