use super::exec::{truncate, ExecActuator, MAX_DETAIL_BYTES};
use super::map::{ActionMap, MapError};
use salve_connectors::actuator::{Actuator, Command, CommandContext, Outcome};
use std::path::Path;

fn command(action: &str, entity: &str, params: serde_json::Value) -> Command {
    Command {
        v: 1,
        id: format!("r/{entity}@0:0:1#1"),
        incident: format!("r/{entity}@0:0:1"),
        entity: entity.to_owned(),
        action: action.to_owned(),
        params: params.as_object().cloned().unwrap_or_default(),
        rule: "r".into(),
        reason: "test".into(),
        attempt: 1,
        issued_at: 0,
        expires_at: i64::MAX,
    }
}

fn context() -> CommandContext {
    CommandContext {
        actuator: "exec".into(),
        topic: "commands".into(),
        partition: 0,
        offset: 0,
        started_at: 0,
    }
}

async fn handle(map: &str, command: &Command) -> Outcome {
    let map = ActionMap::parse(map).expect("map parses");
    ExecActuator::new(map).handle(command, &context()).await
}

/// Hostile entity names: each must reach the program as one literal argument, and none may
/// run anything.
#[tokio::test]
async fn an_entity_name_cannot_inject_a_command() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pwned = dir.path().join("pwned");
    let p = pwned.display();
    let hostile = [
        format!("a;touch {p}"),
        format!("$(touch {p})"),
        format!("`touch {p}`"),
        format!("a && touch {p} || touch {p}"),
        format!("a | touch {p}"),
        format!("' ; touch {p}; echo '"),
        format!("\" ; touch {p}; echo \""),
        "a b  c".to_owned(),
    ];
    // The same program written both ways: as one line (split at load) and as an argv array.
    let maps = [
        r#"[actions]
restart = "printf '<%s>\\n' {entity} {params.extra}""#,
        r#"[actions]
restart = ["printf", "<%s>\n", "{entity}", "{params.extra}"]"#,
    ];
    for map in maps {
        for entity in &hostile {
            let outcome = handle(
                map,
                &command("restart", entity, serde_json::json!({"extra": entity})),
            )
            .await;
            assert_eq!(
                outcome,
                Outcome::Succeeded(format!("<{entity}>\n<{entity}>")),
                "two arguments, each exactly the entity, for {entity:?} with {map}"
            );
            assert!(!pwned.exists(), "{entity:?} ran a command");
        }
    }
}

/// Values that the program could misread are refused when the command comes: a leading `-`
/// (an option: `ssh {entity} ...` with `-oProxyCommand=...`), and control characters.
#[tokio::test]
async fn a_value_that_would_be_an_option_or_holds_a_control_character_is_rejected() {
    let map = r#"[actions]
restart = ["printf", "<%s>", "{entity}"]
scale = ["printf", "<%s>", "--by={params.by}"]"#;
    for entity in [
        "-v",
        "--help",
        "-oProxyCommand=touch /tmp/pwned",
        "a\nb",
        "a\rb",
        "\u{1b}[2J",
    ] {
        let outcome = handle(map, &command("restart", entity, serde_json::json!({}))).await;
        assert!(
            matches!(&outcome, Outcome::Rejected(d) if d.starts_with("{entity} = ")),
            "{entity:?}: {outcome:?}"
        );
    }
    // The host of USER@HOST, which rsync and scp pass to ssh as an argument of its own; and a
    // `..` that climbs out of the template's directory.
    let map_with_host = r#"[actions]
restart = ["printf", "<%s>", "backup@{entity}:/srv/data/"]
clean = ["printf", "<%s>", "/srv/cache/{entity}"]"#;
    for (action, entity) in [
        ("restart", "-oProxyCommand=sh -c id"),
        ("clean", ".."),
        ("clean", "../../etc"),
        ("clean", "a/../../etc"),
        ("clean", ""),
    ] {
        let outcome = handle(
            map_with_host,
            &command(action, entity, serde_json::json!({})),
        )
        .await;
        assert!(
            matches!(&outcome, Outcome::Rejected(d) if d.starts_with("{entity} = ")),
            "{entity:?}: {outcome:?}"
        );
    }
    // A value that makes a whole argument find's `-exec` terminator.
    let map_with_find = r#"[actions]
restart = ["printf", "<%s>", "{entity}", "{params.extra}"]"#;
    for value in [";", "+"] {
        for (entity, extra, refused) in [
            (value, "x", "{entity} would make argument 2 exactly"),
            ("pod", value, "{params.extra} would make argument 3 exactly"),
        ] {
            let params = serde_json::json!({ "extra": extra });
            let outcome = handle(map_with_find, &command("restart", entity, params)).await;
            assert!(
                matches!(&outcome, Outcome::Rejected(d) if d.starts_with(refused)),
                "{value:?}: {outcome:?}"
            );
        }
    }
    let outcome = handle(
        map_with_find,
        &command("restart", "a;b", serde_json::json!({"extra": "c+"})),
    )
    .await;
    assert_eq!(outcome, Outcome::Succeeded("<a;b><c+>".into()));
    let outcome = handle(
        map_with_host,
        &command("clean", "a..b/c...", serde_json::json!({})),
    )
    .await;
    assert_eq!(outcome, Outcome::Succeeded("</srv/cache/a..b/c...>".into()));
    // A dash inside an argument, or after a literal prefix, is no option.
    let outcome = handle(map, &command("restart", "pod-1", serde_json::json!({}))).await;
    assert_eq!(outcome, Outcome::Succeeded("<pod-1>".into()));
    let outcome = handle(map, &command("scale", "x", serde_json::json!({"by": -2}))).await;
    assert_eq!(outcome, Outcome::Succeeded("<--by=-2>".into()));
}

/// Templates that hand a placeholder to code, through a wrapper, an option cluster, an
/// interpreter or a remote shell. The guard before this one refused only `INTERPRETER -c|-e`
/// as separate, exact arguments, and loaded every one of these.
#[test]
fn placeholders_that_would_reach_code_are_refused_at_load() {
    let code = "would be parsed as code";
    let cases: &[(&[&str], &str)] = &[
        (&["bash", "-lc", "systemctl restart {entity}"], code),
        (&["sh", "-ec", "systemctl restart {entity}"], code),
        (&["/bin/sh", "-xec", "systemctl restart {entity}"], code),
        (&["bash", "-o", "pipefail", "-c", "restart {entity}"], code),
        (&["zsh", "-c", "restart {entity}"], code),
        (&["fish", "--command=restart {entity}"], code),
        (&["sh", "{entity}"], code),
        (&["sudo", "sh", "-c", "restart {entity}"], code),
        (
            &["sudo", "-u", "root", "--", "bash", "-c", "restart {entity}"],
            code,
        ),
        (
            &["sudo", "-s", "systemctl", "restart", "{entity}"],
            "through a shell",
        ),
        (&["sudo", "{entity}"], "is the program that `sudo` runs"),
        (&["doas", "sh", "-c", "restart {entity}"], code),
        (&["env", "bash", "-c", "restart {entity}"], code),
        (
            &[
                "env",
                "-i",
                "PATH=/usr/bin",
                "A=b",
                "bash",
                "-c",
                "restart {entity}",
            ],
            code,
        ),
        (&["env", "-S", "sh -c {entity}"], code),
        (
            &["env", "A=b", "{entity}"],
            "is the program that `env` runs",
        ),
        (&["nice", "sh", "-c", "restart {entity}"], code),
        (
            &[
                "nice",
                "-n",
                "5",
                "ionice",
                "-c",
                "2",
                "sh",
                "-c",
                "restart {entity}",
            ],
            code,
        ),
        (&["nohup", "sh", "-c", "restart {entity}"], code),
        (&["timeout", "5", "sh", "-c", "restart {entity}"], code),
        (
            &["timeout", "-s", "KILL", "5", "{entity}"],
            "is the program that `timeout` runs",
        ),
        (&["stdbuf", "-oL", "sh", "-c", "restart {entity}"], code),
        (&["setsid", "-f", "sh", "-c", "restart {entity}"], code),
        (&["time", "sh", "-c", "restart {entity}"], code),
        (&["chroot", "/", "sh", "-c", "restart {entity}"], code),
        (
            &["chroot", "{entity}", "/bin/restart"],
            "is the program that `chroot` runs",
        ),
        (&["xargs", "sh", "-c", "restart {entity}"], code),
        (
            &["xargs", "-I", "X", "sh", "-c", "restart {entity} X"],
            code,
        ),
        (
            &["flock", "/run/lock/a", "sh", "-c", "restart {entity}"],
            code,
        ),
        (
            &["flock", "/run/lock/a", "-c", "restart {entity}"],
            "through a shell",
        ),
        (
            &["runuser", "-u", "app", "--", "sh", "-c", "restart {entity}"],
            code,
        ),
        (&["runuser", "app", "-c", "restart {entity}"], "to a shell"),
        (&["su", "-c", "systemctl restart {entity}"], "to a shell"),
        (
            &["su", "root", "-c", "systemctl restart {entity}"],
            "to a shell",
        ),
        (
            &["ssh", "host", "systemctl restart {entity}"],
            "remote shell",
        ),
        (
            &[
                "ssh",
                "-p",
                "22",
                "host",
                "systemctl",
                "restart",
                "{entity}",
            ],
            "remote shell",
        ),
        (
            &["ssh", "-o", "ProxyCommand={entity}", "host", "true"],
            code,
        ),
        (&["watch", "-n1", "systemctl status {entity}"], "to a shell"),
        (&["busybox", "sh", "-c", "restart {entity}"], code),
        (
            &["docker", "exec", "app", "sh", "-c", "restart {entity}"],
            code,
        ),
        (
            &[
                "docker",
                "exec",
                "-it",
                "app",
                "bash",
                "-lc",
                "restart {entity}",
            ],
            code,
        ),
        (
            &["docker", "exec", "app", "{entity}"],
            "is the program that `docker` runs",
        ),
        (
            &[
                "docker",
                "--context",
                "prod",
                "container",
                "exec",
                "app",
                "{entity}",
            ],
            "is the program that `docker` runs",
        ),
        (
            &[
                "kubectl",
                "exec",
                "pod",
                "--",
                "sh",
                "-c",
                "restart {entity}",
            ],
            code,
        ),
        (
            &[
                "kubectl", "-n", "shop", "exec", "pod", "-c", "main", "--", "{entity}",
            ],
            "is the program that `kubectl` runs",
        ),
        (
            // After `--`, `kubectl run` runs a command in the new pod.
            &[
                "kubectl",
                "run",
                "probe",
                "--image=busybox",
                "--",
                "sh",
                "-c",
                "restart {entity}",
            ],
            code,
        ),
        (
            &["find", "/srv", "-exec", "sh", "-c", "restart {entity}", ";"],
            code,
        ),
        (&["python3", "-c", "import os; os.system('{entity}')"], code),
        (
            &[
                "/usr/bin/python3.11",
                "-W",
                "ignore",
                "-c",
                "print('{entity}')",
            ],
            code,
        ),
        (&["python3", "-Bc", "print('{entity}')"], code),
        (&["python3", "-m", "{entity}"], code),
        (&["python3", "{entity}"], code),
        (&["perl", "-e", "system '{entity}'"], code),
        (&["perl", "-E", "say '{entity}'"], code),
        (&["perl", "-le", "print '{entity}'"], code),
        (
            &["perl", "-l", "-e", "print 1", "-e", "system '{entity}'"],
            code,
        ),
        (&["perl", "-M{entity}", "-e", "1"], code),
        (&["ruby", "-e", "system '{entity}'"], code),
        (
            &[
                "node",
                "-e",
                "require('child_process').execSync('{entity}')",
            ],
            code,
        ),
        (&["node", "-p", "'{entity}'"], code),
        (&["node", "--eval=x('{entity}')"], code),
        (&["awk", "BEGIN {{ system(\"{entity}\") }}"], code),
        (&["gawk", "-e", "BEGIN {{ print \"{entity}\" }}"], code),
        (&["sed", "s/x/{entity}/e"], code),
        (&["sed", "-n", "-e", "s/x/{entity}/w /etc/passwd"], code),
        // GNU getopt takes options after operands too.
        (&["sed", "/etc/hosts", "-e", "s/x/{entity}/e"], code),
        (
            &["sudo", "--frobnicate", "sh", "x", "{entity}"],
            "does not know option `--frobnicate`",
        ),
        // find runs the program after -exec, and its expression is code.
        (
            &[
                "find",
                "/var/log",
                "-name",
                "x",
                "-exec",
                "sh",
                "-c",
                "rm {entity}",
                ";",
            ],
            code,
        ),
        (
            &["find", "/tmp", "-execdir", "{entity}", ";"],
            "is the program that `find` runs",
        ),
        (
            &["find", "{entity}"],
            "a starting point that begins with a value",
        ),
        (
            &["find", "/tmp", "-name", "x", "{entity}"],
            "part of the expression of `find`",
        ),
        (&["find", "-O{entity}", "/tmp"], "an option of `find`"),
        // rsync runs the remote shell's command line and a remote rsync path.
        (&["rsync", "-e", "ssh {entity}", "a", "b"], code),
        (&["rsync", "-ae", "ssh {entity}", "a", "b"], code),
        (&["rsync", "-a", "--rsync-path={entity}", "a", "b:c"], code),
        // Options after operands, as rsync's parser allows.
        (
            &[
                "rsync",
                "-a",
                "src/",
                "host:/dst/",
                "--rsh",
                "ssh -oProxyCommand={entity}",
            ],
            code,
        ),
        (
            &["rsync", "--frobnicate", "a", "{entity}:/b"],
            "does not know option `--frobnicate`",
        ),
        (
            &["rsync", "-az", "/srv/data/", "backup@{entity}:/srv/data/"],
            "unless `-s`/`--protect-args` is given",
        ),
        (
            &["rsync", "-az", "/srv/data/", "/mnt/{entity}"],
            "unless `-s`/`--protect-args` is given",
        ),
        // make expands an operand that is `NAME=VALUE`, and reads makefiles where told.
        (
            &["make", "-C", "/srv/app", "deploy", "SERVICE={entity}"],
            "make expands a variable's value",
        ),
        (
            &["make", "restart-{entity}"],
            "make expands a variable's value",
        ),
        (
            &["make", "-k", "{entity}", "-j4"],
            "make expands a variable's value",
        ),
        (&["make", "-f", "/srv/{entity}/Makefile", "deploy"], code),
        (&["make", "-C", "/srv/{entity}", "deploy"], code),
        (&["gmake", "--eval={entity}", "deploy"], code),
        (
            &[
                "make",
                "--frobnicate",
                "-o",
                "/srv/{entity}.stamp",
                "deploy",
            ],
            "does not know option `--frobnicate`",
        ),
        // tar: options that run their value, old-style letters, remote archive names.
        (&["tar", "--to-command={entity}", "-xf", "/srv/a.tar"], code),
        (
            &["tar", "-xf", "/srv/a.tar", "--to-command", "{entity}"],
            code,
        ),
        (
            &[
                "tar",
                "-I",
                "{params.compressor}",
                "-cf",
                "/srv/a.tar",
                "/srv/data",
            ],
            code,
        ),
        (
            &[
                "tar",
                "--checkpoint-action=exec={entity}",
                "-cf",
                "/srv/a.tar",
                "/srv/data",
            ],
            code,
        ),
        (&["tar", "xIf", "{entity}", "/srv/a.tar"], code),
        (
            &["tar", "{params.mode}", "/srv/a.tar"],
            "tar reads as option letters",
        ),
        (
            &["tar", "czf", "{entity}.tgz", "/srv/data"],
            "through a remote shell",
        ),
        (
            &["tar", "-czf", "backups-{entity}.tgz", "/srv/data"],
            "through a remote shell",
        ),
        (&["tar", "-x", "--file={entity}"], "through a remote shell"),
        (
            &["tar", "-xf", "/srv/a.tar", "{entity}", "--frobnicate"],
            "does not know option `--frobnicate`",
        ),
        (
            &["tar", "cqf", "/srv/a.tar", "{entity}"],
            "does not know option `q`",
        ),
        // git: configuration that names programs, subcommands that run their arguments.
        (
            &["git", "-c", "core.sshCommand={entity}", "fetch"],
            "configuration setting",
        ),
        (&["git", "-c", "{entity}", "pull"], "configuration setting"),
        (
            &["git", "-C", "/srv/app", "{entity}"],
            "is the program that `git` runs",
        ),
        (
            &["git", "-C", "/srv/app", "submodule", "foreach", "{entity}"],
            "runs commands given in the arguments",
        ),
        (
            &["git", "config", "core.pager", "{entity}"],
            "runs commands given in the arguments",
        ),
        (
            &["git", "clone", "--upload-pack={entity}", "https://git/repo"],
            "does not know to take data",
        ),
        (
            &["git", "clone", "-u", "{entity}", "https://git/repo"],
            "does not know to take data",
        ),
        (
            &["git", "--frobnicate", "pull", "{entity}"],
            "does not know option `--frobnicate`",
        ),
        // git takes attached values, clusters and prefixes of long options.
        (
            &["git", "clone", "-u{entity}", "/srv/r.git", "/tmp/x"],
            "does not know to take data",
        ),
        (
            &["git", "clone", "--upload={entity}", "/srv/r.git"],
            "does not know to take data",
        ),
        (
            &[
                "git",
                "clone",
                "--template=/srv/tpl/{entity}",
                "https://git/r",
                "/srv/app",
            ],
            "does not know to take data",
        ),
        (
            &["git", "-C", "/srv/app", "hook", "run", "{entity}"],
            "runs commands given in the arguments",
        ),
        (
            &[
                "git",
                "-c",
                "protocol.ext.allow=always",
                "-C",
                "/srv/app",
                "fetch",
                "{entity}",
            ],
            "after `-c` settings",
        ),
        (
            &["git", "--git-dir", "{entity}", "fetch"],
            "repository path that begins with a value",
        ),
        // An option salve does not know may undo -s after the operands.
        (
            &[
                "rsync",
                "-as",
                "/srv/data/",
                "backup@host:/srv/{entity}/",
                "--no-protect-args",
            ],
            "does not know option `--no-protect-args`",
        ),
        // find runs, or splices into code, a file that a value may have chosen.
        (
            &[
                "find",
                "/srv/jobs/{entity}",
                "-type",
                "f",
                "-exec",
                "{{}}",
                ";",
            ],
            "a found file run as a program",
        ),
        (
            &["find", "/srv/{entity}", "-exec", "sh", "-c", "rm {{}}", ";"],
            "spliced into code",
        ),
        // Environment variables that programs run or load code from.
        (
            &["env", "GIT_SSH_COMMAND={entity}", "git", "fetch"],
            "environment variable that programs load or run code from",
        ),
        (
            &["env", "LD_PRELOAD=/tmp/{entity}.so", "/opt/restart"],
            "environment variable that programs load or run code from",
        ),
        (
            &[
                "env",
                "TAR_OPTIONS={entity}",
                "tar",
                "-cf",
                "/srv/a.tar",
                "/srv/data",
            ],
            "environment variable that programs load or run code from",
        ),
    ];
    for (argv, expected) in cases {
        let items: Vec<String> = argv.iter().map(|a| format!("{a:?}")).collect();
        let map = format!("[actions]\nrestart = [{}]", items.join(", "));
        let message = load_error(&map);
        assert!(
            message.contains("`actions.restart`") && message.contains(expected),
            "{argv:?}: {message}"
        );
    }
}

/// What the guard must not refuse: values as plain arguments, through wrappers, to the
/// destination of ssh, to a shell script or interpreter after its code.
#[test]
fn placeholders_as_data_still_load() {
    let cases: &[&[&str]] = &[
        &["systemctl", "restart", "app@{entity}.service"],
        &["sudo", "-u", "app", "systemctl", "restart", "{entity}"],
        &["sudo", "-u", "{params.user}", "/opt/restart", "{entity}"],
        &["timeout", "5", "systemctl", "restart", "{entity}"],
        &["env", "POD={entity}", "/opt/restart"],
        &[
            "nice",
            "-n",
            "5",
            "ionice",
            "-c",
            "2",
            "/opt/restart",
            "{entity}",
        ],
        &["flock", "/run/lock/{entity}", "/opt/restart", "{entity}"],
        &["xargs", "-0", "/opt/restart", "{entity}"],
        &["ssh", "{entity}", "sudo", "systemctl", "restart", "app"],
        // tar: member names, directories, and archives under a fixed directory.
        &[
            "tar",
            "-czf",
            "/srv/backups/{entity}.tgz",
            "-C",
            "/srv/data",
            "{entity}",
        ],
        &[
            "tar",
            "czf",
            "/srv/backups/{entity}.tgz",
            "/srv/data/{entity}",
        ],
        &["tar", "--force-local", "-cf", "{entity}.tar", "/srv/data"],
        &[
            "tar",
            "-xf",
            "/srv/a.tar",
            "-C",
            "/srv/restore/{entity}",
            "--strip-components=1",
        ],
        // A file make only looks at the time of, as the value of its option.
        &[
            "make",
            "-C",
            "/srv/app",
            "-o",
            "/srv/{entity}.stamp",
            "deploy",
        ],
        &["ssh", "-p", "2222", "admin@{entity}", "uptime"],
        &["sh", "-c", "systemctl restart \"app@$1\"", "sh", "{entity}"],
        &[
            "sudo",
            "bash",
            "-lc",
            "restart \"$1\"",
            "bash",
            "{entity}",
            "{reason}",
        ],
        &["busybox", "sh", "-c", "echo \"$1\"", "sh", "{entity}"],
        &["python3", "/opt/restart.py", "--pod", "{entity}"],
        &[
            "python3",
            "-c",
            "import sys; print(sys.argv[1])",
            "{entity}",
        ],
        &["perl", "-e", "print $ARGV[0]", "{entity}"],
        &["awk", "BEGIN {{ print ARGV[1] }}", "{entity}"],
        &["docker", "exec", "{entity}", "nginx", "-s", "reload"],
        &[
            "kubectl", "exec", "{entity}", "-n", "shop", "--", "nginx", "-s", "reload",
        ],
        &[
            "kubectl",
            "scale",
            "deployment/{params.deployment}",
            "--replicas={params.replicas}",
        ],
        // `node` here is a Kubernetes node, not Node.js.
        &[
            "kubectl",
            "label",
            "node",
            "{entity}",
            "salve/quarantined=true",
        ],
        &[
            "kubectl",
            "taint",
            "node",
            "{entity}",
            "salve=drain:NoSchedule",
        ],
        &["sudo", "kubectl", "cordon", "node", "{entity}"],
        &[
            "find",
            "/var/lib/app/{entity}",
            "-name",
            "*.lock",
            "-delete",
        ],
        &[
            "find",
            "/srv",
            "-maxdepth",
            "1",
            "-name",
            "{entity}.pid",
            "-exec",
            "rm",
            "{{}}",
            ";",
        ],
        &[
            "rsync",
            "-azs",
            "--delete",
            "-e",
            "ssh -p 2222",
            "/srv/data/",
            "backup@{entity}:/srv/data/",
        ],
        &["git", "-C", "/srv/repos/{entity}", "pull", "--ff-only"],
        &[
            "git",
            "-C",
            "/srv/app",
            "reset",
            "--hard",
            "{params.revision}",
        ],
        &[
            "find",
            "/srv/{entity}",
            "-exec",
            "sh",
            "-c",
            "rm \"$1\"",
            "sh",
            "{{}}",
            ";",
        ],
        &["git", "-C", "/srv/app", "checkout", "{params.revision}"],
        &["git", "--git-dir=/srv/{entity}/.git", "fetch", "origin"],
        // `python` here is a file name that find looks for.
        &[
            "find",
            "/srv",
            "-name",
            "python",
            "-exec",
            "rm",
            "/srv/{entity}",
            ";",
        ],
        // `ssh` here is rsync's remote shell, not a program that gets the operands.
        &[
            "rsync",
            "-as",
            "-e",
            "ssh",
            "/srv/data/",
            "{entity}:/srv/data/",
        ],
    ];
    for argv in cases {
        let items: Vec<String> = argv.iter().map(|a| format!("{a:?}")).collect();
        let map = format!("[actions]\nrestart = [{}]", items.join(", "));
        let parsed = ActionMap::parse(&map);
        assert!(parsed.is_ok(), "{argv:?}: {parsed:?}");
    }
}

#[tokio::test]
async fn the_output_and_exit_status_go_into_the_detail_and_are_truncated() {
    let outcome = handle(
        r#"[actions]
restart = ["ls", "/no/such/dir/{entity}"]"#,
        &command("restart", "x", serde_json::json!({})),
    )
    .await;
    let Outcome::Failed(detail) = outcome else {
        panic!("a non-zero exit fails: {outcome:?}");
    };
    assert!(detail.contains("exit status"), "{detail}");
    assert!(
        detail.contains("/no/such/dir/x"),
        "stderr is kept: {detail}"
    );

    let outcome = handle(
        r#"[actions]
restart = "seq 1 5000""#,
        &command("restart", "x", serde_json::json!({})),
    )
    .await;
    let Outcome::Succeeded(detail) = outcome else {
        panic!("seq succeeds: {outcome:?}");
    };
    assert!(detail.len() <= MAX_DETAIL_BYTES, "{} bytes", detail.len());
    assert!(detail.starts_with("1\n2\n3\n"));
    assert!(detail.ends_with("[truncated]"));
}

#[test]
fn truncation_cuts_on_a_character_boundary() {
    let text = "é".repeat(600);
    let cut = truncate(&text, 100);
    assert!(cut.len() <= 100);
    assert!(cut.ends_with("[truncated]"));
    assert_eq!(truncate("short", 100), "short");
}

#[tokio::test]
async fn a_program_past_its_time_limit_is_killed_and_fails() {
    let outcome = handle(
        r#"timeout = "200ms"
[actions]
restart = ["sleep", "30"]"#,
        &command("restart", "x", serde_json::json!({})),
    )
    .await;
    let Outcome::Failed(detail) = outcome else {
        panic!("a timeout fails: {outcome:?}");
    };
    assert!(detail.contains("did not finish within 200ms"), "{detail}");
}

#[tokio::test]
async fn unknown_actions_and_missing_params_are_rejected() {
    let map = r#"[actions]
scale_out = ["echo", "{params.replicas}"]"#;
    let outcome = handle(map, &command("restart", "x", serde_json::json!({}))).await;
    assert!(
        matches!(&outcome, Outcome::Rejected(d) if d.contains("no program for action `restart`")),
        "{outcome:?}"
    );
    let outcome = handle(map, &command("scale_out", "x", serde_json::json!({}))).await;
    assert!(
        matches!(&outcome, Outcome::Rejected(d) if d.contains("parameter `replicas`")),
        "{outcome:?}"
    );
    let outcome = handle(
        map,
        &command("scale_out", "x", serde_json::json!({"replicas": 3})),
    )
    .await;
    assert_eq!(outcome, Outcome::Succeeded("3".into()), "numbers as text");
}

#[tokio::test]
async fn every_placeholder_is_filled_and_double_braces_are_literal() {
    let outcome = handle(
        r#"[actions]
restart = ["printf", "%s|", "{entity}", "{action}", "{id}", "{incident}", "{rule}", "{reason}", "{attempt}", "{{x}}", "pre-{entity}-post"]"#,
        &command("restart", "e", serde_json::json!({})),
    )
    .await;
    assert_eq!(
        outcome,
        Outcome::Succeeded("e|restart|r/e@0:0:1#1|r/e@0:0:1|r|test|1|{x}|pre-e-post|".into())
    );
}

fn load_error(text: &str) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("actions.toml");
    std::fs::write(&path, text).expect("write");
    let error = ActionMap::load(&path).expect_err("refused");
    assert!(matches!(error, MapError::Invalid { .. }));
    let message = error.to_string();
    assert!(
        message.contains("actions.toml"),
        "names the file: {message}"
    );
    message
}

#[test]
fn a_bad_map_is_refused_with_the_key_and_what_was_expected() {
    let cases = [
        (
            "[actions]\nrestart = 3",
            "`actions.restart`: expected a command line string or an array of strings",
        ),
        (
            "[actions]\nrestart = [\"echo\", 3]",
            "`actions.restart`: element 1: expected a string",
        ),
        (
            "[actions]\nrestart = \"echo 'unclosed\"",
            "`actions.restart`: the command line has an unclosed quote",
        ),
        (
            "[actions]\nrestart = []",
            "`actions.restart`: expected a program to run",
        ),
        (
            "[actions]\nrestart = [\"{entity}\"]",
            "`actions.restart`: the program `{entity}` contains a placeholder",
        ),
        (
            "[actions]\nrestart = [\"echo\", \"{nope}\"]",
            "unknown placeholder `{nope}`: expected one of",
        ),
        (
            "[actions]\nrestart = [\"echo\", \"{labels.service}\"]",
            "do not carry the entity's labels",
        ),
        (
            "[actions]\nrestart = [\"echo\", \"{entity\"]",
            "unclosed `{`",
        ),
        (
            "[actions]\nrestart = [\"sh\", \"-c\", \"systemctl restart {entity}\"]",
            "would be parsed as code",
        ),
        (
            "timeout = \"soon\"\n[actions]\nrestart = \"true\"",
            "`timeout`",
        ),
        (
            "restart = \"true\"",
            "unknown key `restart`: expected `timeout` and an `[actions]` table",
        ),
        ("[actions]", "no actions"),
        ("[actions\n", "TOML"),
    ];
    for (text, expected) in cases {
        let message = load_error(text);
        assert!(
            message.contains(expected) || (expected == "TOML" && message.contains("line 1")),
            "{text:?}: {message}"
        );
    }
    let missing = ActionMap::load(Path::new("/no/such/actions.toml")).expect_err("refused");
    assert!(matches!(missing, MapError::Read { .. }), "{missing}");
}

#[test]
fn a_shell_script_may_take_values_as_arguments() {
    let map = ActionMap::parse(
        r#"[actions]
restart = ["sh", "-c", "echo \"$1\"", "sh", "{entity}"]"#,
    );
    assert!(map.is_ok(), "{map:?}");
}
