//! The Kubernetes actuator against a stand-in API server over HTTP: each test declares the
//! answers, and checks the requests the actuator made.

use super::K8sActuator;
use salve_connectors::actuator::{Actuator, Command, CommandContext, Outcome};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, PartialEq, Eq)]
struct Request {
    method: String,
    /// Path and query.
    target: String,
    body: String,
}

/// An answer for requests with this method and path (query ignored).
struct Route {
    method: &'static str,
    path: &'static str,
    status: u16,
    body: String,
}

fn route(method: &'static str, path: &'static str, status: u16, body: serde_json::Value) -> Route {
    Route {
        method,
        path,
        status,
        body: body.to_string(),
    }
}

/// A stand-in Kubernetes API server on a loopback port. Unknown requests get a 404 Status.
struct StubApi {
    url: String,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl StubApi {
    fn start(routes: Vec<Route>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let routes = Arc::new(routes);
        let seen = Arc::clone(&requests);
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let (routes, seen) = (Arc::clone(&routes), Arc::clone(&seen));
                std::thread::spawn(move || serve(stream, &routes, &seen));
            }
        });
        Self { url, requests }
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().expect("lock").clone()
    }

    fn actuator(&self) -> K8sActuator {
        let mut config = kube::Config::new(self.url.parse().expect("url"));
        config.default_namespace = "shop".into();
        K8sActuator::new(config)
    }
}

/// Answers HTTP/1.1 requests on one connection until the client closes it.
fn serve(stream: TcpStream, routes: &[Route], seen: &Mutex<Vec<Request>>) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut writer = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = request_line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_owned();
        let target = parts.next().unwrap_or_default().to_owned();
        let mut length = 0;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let path = target.split('?').next().unwrap_or_default();
        let (status, answer) = routes
            .iter()
            .find(|r| r.method == method && r.path == path)
            .map(|r| (r.status, r.body.clone()))
            .unwrap_or_else(|| (404, not_found(path)));
        seen.lock().expect("lock").push(Request {
            method,
            target,
            body: String::from_utf8_lossy(&body).into_owned(),
        });
        let response = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{answer}",
            answer.len()
        );
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

fn not_found(path: &str) -> String {
    serde_json::json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "reason": "NotFound", "code": 404, "message": format!("{path} not found")})
    .to_string()
}

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
        actuator: "k8s".into(),
        topic: "commands".into(),
        partition: 0,
        offset: 0,
        started_at: 0,
    }
}

fn pod(namespace: &str, name: &str, owner_kind: &str) -> serde_json::Value {
    serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": name, "namespace": namespace,
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": owner_kind, "name": "owner", "uid": "u"}]}})
}

#[tokio::test]
async fn restart_deletes_the_pod_and_a_missing_pod_counts_as_restarted() {
    let api = StubApi::start(vec![route(
        "DELETE",
        "/api/v1/namespaces/shop/pods/pod-1",
        200,
        pod("shop", "pod-1", "ReplicaSet"),
    )]);
    let actuator = api.actuator();
    let outcome = actuator
        .handle(
            &command("restart", "checkout/pod-1", serde_json::json!({})),
            &context(),
        )
        .await;
    assert_eq!(outcome, Outcome::Succeeded("pod shop/pod-1 deleted".into()));
    let outcome = actuator
        .handle(
            &command(
                "restart",
                "x",
                serde_json::json!({"namespace": "other", "pod": "gone"}),
            ),
            &context(),
        )
        .await;
    assert_eq!(
        outcome,
        Outcome::Succeeded("pod other/gone was already gone".into())
    );
    let requests = api.requests();
    assert_eq!(requests[0].method, "DELETE");
    assert_eq!(requests[0].target, "/api/v1/namespaces/shop/pods/pod-1?");
    assert_eq!(requests[1].target, "/api/v1/namespaces/other/pods/gone?");
}

#[tokio::test]
async fn scale_out_patches_the_replica_count_up_to_the_maximum() {
    let scale = |replicas: i64| {
        serde_json::json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
            "metadata": {"name": "checkout", "namespace": "shop"},
            "spec": {"replicas": replicas}, "status": {"replicas": replicas}})
    };
    let path = "/apis/apps/v1/namespaces/shop/deployments/checkout/scale";
    let api = StubApi::start(vec![
        route("GET", path, 200, scale(3)),
        route("PATCH", path, 200, scale(5)),
    ]);
    let actuator = api.actuator();
    let outcome = actuator
        .handle(
            &command("scale_out", "checkout/pod-1", serde_json::json!({"by": 2})),
            &context(),
        )
        .await;
    assert_eq!(
        outcome,
        Outcome::Succeeded("deployment shop/checkout scaled from 3 to 5 replicas".into())
    );
    let patch = api
        .requests()
        .into_iter()
        .find(|r| r.method == "PATCH")
        .expect("a patch");
    let body: serde_json::Value = serde_json::from_str(&patch.body).expect("JSON patch");
    assert_eq!(body, serde_json::json!({"spec": {"replicas": 5}}));

    let capped = actuator
        .handle(
            &command(
                "scale_out",
                "checkout/pod-1",
                serde_json::json!({"max_replicas": 3}),
            ),
            &context(),
        )
        .await;
    assert!(
        matches!(&capped, Outcome::Failed(d) if d.contains("already at max_replicas")),
        "{capped:?}"
    );
    let bad = actuator
        .handle(
            &command(
                "scale_out",
                "checkout/pod-1",
                serde_json::json!({"by": "two"}),
            ),
            &context(),
        )
        .await;
    assert!(matches!(bad, Outcome::Rejected(_)), "{bad:?}");
}

#[tokio::test]
async fn replace_cordons_the_node_and_evicts_all_but_daemon_set_pods() {
    let api = StubApi::start(vec![
        route(
            "PATCH",
            "/api/v1/nodes/node-7",
            200,
            serde_json::json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-7"},
                "spec": {"unschedulable": true}}),
        ),
        route(
            "GET",
            "/api/v1/pods",
            200,
            serde_json::json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [
                pod("shop", "web-1", "ReplicaSet"), pod("kube-system", "agent-x", "DaemonSet")]}),
        ),
        route(
            "POST",
            "/api/v1/namespaces/shop/pods/web-1/eviction",
            201,
            serde_json::json!({"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Success", "code": 201}),
        ),
    ]);
    let outcome = api
        .actuator()
        .handle(
            &command("replace", "node-7", serde_json::json!({})),
            &context(),
        )
        .await;
    assert_eq!(
        outcome,
        Outcome::Succeeded("node node-7 cordoned, 1 pod(s) evicted".into())
    );
    let requests = api.requests();
    let cordon: serde_json::Value = serde_json::from_str(&requests[0].body).expect("patch");
    assert_eq!(cordon, serde_json::json!({"spec": {"unschedulable": true}}));
    assert!(
        requests[1]
            .target
            .contains("fieldSelector=spec.nodeName%3Dnode-7"),
        "{:?}",
        requests[1]
    );
    let evictions: Vec<&str> = requests
        .iter()
        .filter(|r| r.method == "POST")
        .map(|r| r.target.as_str())
        .collect();
    assert_eq!(
        evictions,
        vec!["/api/v1/namespaces/shop/pods/web-1/eviction?"],
        "the DaemonSet pod stays"
    );
}

#[tokio::test]
async fn replace_with_mode_delete_deletes_the_node_object() {
    let api = StubApi::start(vec![route(
        "DELETE",
        "/api/v1/nodes/node-7",
        200,
        serde_json::json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-7"}}),
    )]);
    let outcome = api
        .actuator()
        .handle(
            &command(
                "replace",
                "db/node-7",
                serde_json::json!({"node": "node-7", "mode": "delete"}),
            ),
            &context(),
        )
        .await;
    assert_eq!(outcome, Outcome::Succeeded("node node-7 deleted".into()));
    assert_eq!(api.requests().len(), 1);
}

#[tokio::test]
async fn other_actions_are_rejected_without_calling_the_api() {
    let api = StubApi::start(vec![]);
    let outcome = api
        .actuator()
        .handle(
            &command("promote", "db/replica-1", serde_json::json!({})),
            &context(),
        )
        .await;
    assert!(matches!(outcome, Outcome::Rejected(_)), "{outcome:?}");
    assert!(api.requests().is_empty());
}
