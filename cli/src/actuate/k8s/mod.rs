//! The Kubernetes actuator (`salve actuate k8s`, cargo feature `k8s`), on kube-rs.
//!
//! | action | what it does | target |
//! | --- | --- | --- |
//! | `restart` | deletes the pod; its controller makes a new one | pod `params.pod`, else the entity's last `/` segment |
//! | `scale_out` | adds `params.by` (default 1) to the deployment's replicas, up to `params.max_replicas` | deployment `params.deployment`, else the entity's first `/` segment |
//! | `replace` | cordons the node and evicts its pods (`params.mode = "drain"`, the default), or deletes the node object (`"delete"`) | node `params.node`, else the entity |
//!
//! The namespace is `params.namespace`, else the actuator's default namespace. Deleting a pod
//! that is already gone counts as success, so a restart is idempotent.

use kube::api::{Api, DeleteParams, EvictParams, ListParams, Patch, PatchParams};
use kube::Client;
use salve_connectors::actuator::{Actuator, Command, CommandContext, Outcome};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};

/// The actions this actuator carries out.
pub const ACTIONS: [&str; 3] = ["restart", "scale_out", "replace"];

/// Carries out `restart`, `scale_out` and `replace` against a Kubernetes API server.
pub struct K8sActuator {
    config: kube::Config,
    /// Made on first use, on the runner's runtime: a kube client runs a task on the runtime
    /// that made it, and must not outlive it.
    client: tokio::sync::OnceCell<Client>,
}

impl K8sActuator {
    /// An actuator for the cluster in `config`, acting in its default namespace unless a
    /// command names another.
    pub fn new(config: kube::Config) -> Self {
        Self {
            config,
            client: tokio::sync::OnceCell::new(),
        }
    }

    fn namespace(&self, command: &Command) -> String {
        param_str(command, "namespace").unwrap_or_else(|| self.config.default_namespace.clone())
    }

    async fn client(&self) -> Result<Client, String> {
        self.client
            .get_or_try_init(|| async { Client::try_from(self.config.clone()) })
            .await
            .cloned()
            .map_err(|error| format!("cannot make a Kubernetes client: {error}"))
    }

    async fn restart(&self, client: Client, command: &Command) -> Outcome {
        let namespace = self.namespace(command);
        let pod = param_str(command, "pod").unwrap_or_else(|| last_segment(&command.entity));
        let pods: Api<Pod> = Api::namespaced(client, &namespace);
        match pods.delete(&pod, &DeleteParams::default()).await {
            Ok(_) => Outcome::Succeeded(format!("pod {namespace}/{pod} deleted")),
            Err(kube::Error::Api(response)) if response.code == 404 => {
                Outcome::Succeeded(format!("pod {namespace}/{pod} was already gone"))
            }
            Err(error) => Outcome::Failed(format!("deleting pod {namespace}/{pod}: {error}")),
        }
    }

    async fn scale_out(&self, client: Client, command: &Command) -> Outcome {
        let namespace = self.namespace(command);
        let name =
            param_str(command, "deployment").unwrap_or_else(|| first_segment(&command.entity));
        let by = match param_int(command, "by") {
            Ok(by) => by.unwrap_or(1),
            Err(reason) => return Outcome::Rejected(reason),
        };
        let max = match param_int(command, "max_replicas") {
            Ok(max) => max,
            Err(reason) => return Outcome::Rejected(reason),
        };
        let deployments: Api<Deployment> = Api::namespaced(client, &namespace);
        let scale = match deployments.get_scale(&name).await {
            Ok(scale) => scale,
            Err(error) => {
                return Outcome::Failed(format!(
                    "reading the scale of deployment {namespace}/{name}: {error}"
                ))
            }
        };
        let current = i64::from(scale.spec.and_then(|s| s.replicas).unwrap_or(0));
        let wanted = max.map_or(current + by, |max| (current + by).min(max));
        if wanted <= current {
            return Outcome::Failed(format!(
                "deployment {namespace}/{name} has {current} replicas, already at max_replicas"
            ));
        }
        let patch = Patch::Merge(serde_json::json!({ "spec": { "replicas": wanted } }));
        match deployments
            .patch_scale(&name, &PatchParams::default(), &patch)
            .await
        {
            Ok(_) => Outcome::Succeeded(format!(
                "deployment {namespace}/{name} scaled from {current} to {wanted} replicas"
            )),
            Err(error) => Outcome::Failed(format!(
                "scaling deployment {namespace}/{name} to {wanted}: {error}"
            )),
        }
    }

    async fn replace(&self, client: Client, command: &Command) -> Outcome {
        let node = param_str(command, "node").unwrap_or_else(|| command.entity.clone());
        let nodes: Api<Node> = Api::all(client.clone());
        match param_str(command, "mode").as_deref() {
            Some("delete") => match nodes.delete(&node, &DeleteParams::default()).await {
                Ok(_) => Outcome::Succeeded(format!("node {node} deleted")),
                Err(kube::Error::Api(response)) if response.code == 404 => {
                    Outcome::Succeeded(format!("node {node} was already gone"))
                }
                Err(error) => Outcome::Failed(format!("deleting node {node}: {error}")),
            },
            None | Some("drain") => drain(client, &nodes, &node).await,
            Some(other) => Outcome::Rejected(format!(
                "params.mode is {other:?}; expected \"drain\" or \"delete\""
            )),
        }
    }
}

/// Cordons `node`, then evicts every pod on it that a controller will place elsewhere.
async fn drain(client: Client, nodes: &Api<Node>, node: &str) -> Outcome {
    let cordon = Patch::Merge(serde_json::json!({ "spec": { "unschedulable": true } }));
    if let Err(error) = nodes.patch(node, &PatchParams::default(), &cordon).await {
        return Outcome::Failed(format!("cordoning node {node}: {error}"));
    }
    let all_pods: Api<Pod> = Api::all(client.clone());
    let on_node = match all_pods
        .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
        .await
    {
        Ok(list) => list.items,
        Err(error) => {
            return Outcome::Failed(format!(
                "node {node} cordoned, but listing its pods failed: {error}"
            ))
        }
    };
    let mut evicted = 0;
    let mut refused = Vec::new();
    for pod in on_node.iter().filter(|pod| !stays_on_node(pod)) {
        let (Some(name), Some(namespace)) = (
            pod.metadata.name.as_deref(),
            pod.metadata.namespace.as_deref(),
        ) else {
            continue;
        };
        let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
        match pods.evict(name, &EvictParams::default()).await {
            Ok(_) => evicted += 1,
            Err(kube::Error::Api(response)) if response.code == 404 => evicted += 1,
            // 429: a disruption budget says not now.
            Err(error) => refused.push(format!("{namespace}/{name}: {error}")),
        }
    }
    if refused.is_empty() {
        Outcome::Succeeded(format!("node {node} cordoned, {evicted} pod(s) evicted"))
    } else {
        Outcome::Failed(format!(
            "node {node} cordoned, {evicted} pod(s) evicted, {} refused: {}",
            refused.len(),
            refused.join("; ")
        ))
    }
}

/// DaemonSet pods come back on the same node, and mirror pods belong to the kubelet: draining
/// leaves both, as `kubectl drain --ignore-daemonsets` does.
fn stays_on_node(pod: &Pod) -> bool {
    let daemon_set = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|owner| owner.kind == "DaemonSet");
    let mirror = pod
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key("kubernetes.io/config.mirror"));
    daemon_set || mirror
}

impl Actuator for K8sActuator {
    async fn handle(&self, command: &Command, _context: &CommandContext) -> Outcome {
        if !ACTIONS.contains(&command.action.as_str()) {
            return Outcome::Rejected(format!(
                "the Kubernetes actuator does restart, scale_out and replace, not {}",
                command.action
            ));
        }
        let client = match self.client().await {
            Ok(client) => client,
            Err(reason) => return Outcome::Failed(reason),
        };
        match command.action.as_str() {
            "restart" => self.restart(client, command).await,
            "scale_out" => self.scale_out(client, command).await,
            "replace" => self.replace(client, command).await,
            other => Outcome::Rejected(format!(
                "the Kubernetes actuator does restart, scale_out and replace, not {other}"
            )),
        }
    }
}

fn param_str(command: &Command, name: &str) -> Option<String> {
    match command.params.get(name)? {
        serde_json::Value::String(text) if !text.is_empty() => Some(text.clone()),
        _ => None,
    }
}

fn param_int(command: &Command, name: &str) -> Result<Option<i64>, String> {
    match command.params.get(name) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(value) => value
            .as_i64()
            .filter(|n| *n > 0)
            .map(Some)
            .ok_or_else(|| format!("params.{name} is {value}; expected a positive integer")),
    }
}

fn last_segment(entity: &str) -> String {
    entity.rsplit('/').next().unwrap_or(entity).to_owned()
}

fn first_segment(entity: &str) -> String {
    entity.split('/').next().unwrap_or(entity).to_owned()
}

#[cfg(test)]
mod tests;
