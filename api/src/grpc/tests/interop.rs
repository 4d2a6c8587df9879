//! A generic client calls the API through reflection alone: Python's grpcio with
//! grpcio-reflection (grpcurl has no Debian package, and cannot be fetched here). It is skipped
//! when no Python can import them, unless `SALVE_REQUIRE_INTEROP` is set (scripts/test.sh sets
//! it after scripts/install-test-deps.sh installed them), when it fails instead.

use super::{config_with_token, Harness, TOKEN};
use std::path::PathBuf;
use std::process::{Command, Stdio};

const MODULES: &str = "import grpc, grpc_reflection, google.protobuf";

/// The first interpreter that can import grpcio, grpcio-reflection and protobuf:
/// `SALVE_TEST_GRPC_PYTHON`, else `python3` on PATH (where install-test-deps.sh puts them),
/// else the system one.
fn python_with_grpc() -> Option<String> {
    let candidates = std::env::var("SALVE_TEST_GRPC_PYTHON")
        .ok()
        .into_iter()
        .chain(["python3".to_owned(), "/usr/bin/python3".to_owned()]);
    for python in candidates {
        let imports = Command::new(&python)
            .args(["-c", MODULES])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if imports {
            return Some(python);
        }
    }
    None
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/python/reflection_client.py")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generic_client_finds_and_calls_the_api_through_reflection() {
    let Some(python) = python_with_grpc() else {
        assert!(
            std::env::var_os("SALVE_REQUIRE_INTEROP").is_none(),
            "SALVE_REQUIRE_INTEROP is set but no python3 can import grpcio and grpcio-reflection"
        );
        eprintln!(
            "skipping: no python3 with grpcio and grpcio-reflection; scripts/install-test-deps.sh installs them"
        );
        return;
    };
    let harness = Harness::start(config_with_token()).await;
    let address = harness.addr.to_string();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script())
            .args([address.as_str(), TOKEN])
            .output()
    })
    .await
    .expect("joined")
    .expect("python runs");
    assert!(
        output.status.success(),
        "the reflection client failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("the client prints JSON");

    for service in [
        "salve.v1.Salve",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(
            seen["services"]
                .as_array()
                .is_some_and(|s| s.iter().any(|n| n == service)),
            "{service} listed: {seen}"
        );
    }
    for method in ["GetStatus", "WatchDecisions", "Reload", "ResolveIncident"] {
        assert!(
            seen["methods"]
                .as_array()
                .is_some_and(|m| m.iter().any(|n| n == method)),
            "{method} resolved from the descriptors: {seen}"
        );
    }
    // The protobuf JSON mapping: int64 as a string, enums by name.
    assert_eq!(seen["status"]["rulesVersion"], "1", "{seen}");
    assert_eq!(seen["status"]["globalMode"], "MODE_ACTIVE", "{seen}");
    assert_eq!(seen["set_mode_without_token"], "UNAUTHENTICATED", "{seen}");
    assert_eq!(
        seen["set_mode_with_token"]["ruleModes"]["crash_loop"], "MODE_DRY_RUN",
        "{seen}"
    );
    harness.stop().await;
}
