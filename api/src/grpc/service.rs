//! `salve.v1.Salve`: each call becomes a job on the engine's thread, run between two messages
//! (see [`salve_connectors::control`]), so it never races an event and needs no lock.
//!
//! Who may call is decided before a call gets here, by [`super::auth`].

use super::convert;
use crate::proto::{self, salve_server::Salve};
use salve_connectors::control::ControlError as JobError;
use salve_connectors::{ControlHandle, JobContext};
use salve_engine::{ControlError, Decision, Engine, EntityFilter, IncidentFilter};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

/// How long a call waits for the engine's thread to get to it. The engine runs jobs between
/// messages, so only a stalled engine (or one blocked on the broker) takes this long.
const ENGINE_TIMEOUT: Duration = Duration::from_secs(10);

/// Decisions queued for one watcher's connection before the forwarder waits for it.
const WATCH_QUEUE: usize = 256;

/// The `salve.v1.Salve` service.
#[derive(Debug, Clone)]
pub(crate) struct SalveService {
    control: ControlHandle,
    /// Turns true when the server begins to shut down: open watch streams end then, or a
    /// graceful shutdown would wait on them forever.
    stopping: watch::Receiver<bool>,
}

impl SalveService {
    pub(crate) fn new(control: ControlHandle, stopping: watch::Receiver<bool>) -> Self {
        Self { control, stopping }
    }

    /// Runs `job` on the engine's thread.
    async fn on_engine<R: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Engine, &mut JobContext<'_>) -> R + Send + 'static,
    ) -> Result<R, Status> {
        self.control
            .call(ENGINE_TIMEOUT, job)
            .await
            .map_err(job_status)
    }
}

fn job_status(error: JobError) -> Status {
    match error {
        JobError::Stopped | JobError::Timeout(_) => Status::unavailable(error.to_string()),
        JobError::NoRuleSource => Status::failed_precondition(error.to_string()),
    }
}

fn refused(error: ControlError) -> Status {
    match error {
        ControlError::NotFound(message) => Status::not_found(message),
        ControlError::FailedPrecondition(message) => Status::failed_precondition(message),
    }
}

fn required(field: &str, value: &str) -> Result<(), Status> {
    if value.is_empty() {
        Err(Status::invalid_argument(format!("`{field}` is required")))
    } else {
        Ok(())
    }
}

fn limit(value: u32) -> usize {
    usize::try_from(value).unwrap_or(usize::MAX)
}

/// Which decisions a watcher wants.
struct WatchFilter {
    rule: String,
    entity: String,
    kinds: Vec<proto::DecisionKind>,
}

impl WatchFilter {
    fn matches(&self, decision: &Decision) -> bool {
        (self.rule.is_empty() || decision.rule == self.rule)
            && (self.entity.is_empty() || decision.entity == self.entity)
            && (self.kinds.is_empty() || self.kinds.contains(&convert::kind(decision.kind)))
    }
}

/// What the watch stream carries.
type WatchItem = Result<proto::WatchDecisionsResponse, Status>;

/// Forwards the runner's decisions that `filter` matches to one watcher, until the watcher
/// goes away, the runner stops, or the server shuts down.
async fn forward_decisions(
    mut decisions: broadcast::Receiver<Arc<Decision>>,
    filter: WatchFilter,
    watcher: mpsc::Sender<WatchItem>,
    mut stopping: watch::Receiver<bool>,
) {
    use proto::watch_decisions_response::Event;
    loop {
        let received = tokio::select! {
            received = decisions.recv() => received,
            () = watcher.closed() => return,
            _ = stopping.wait_for(|stopping| *stopping) => return,
        };
        let event = match received {
            Ok(decision) if filter.matches(&decision) => {
                Event::Decision(convert::decision(&decision))
            }
            Ok(_) => continue,
            Err(broadcast::error::RecvError::Lagged(missed)) => Event::Missed(missed),
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let item = proto::WatchDecisionsResponse { event: Some(event) };
        if watcher.send(Ok(item)).await.is_err() {
            return;
        }
    }
}

#[tonic::async_trait]
impl Salve for SalveService {
    async fn get_status(
        &self,
        _request: Request<proto::GetStatusRequest>,
    ) -> Result<Response<proto::EngineStatus>, Status> {
        let status = self.on_engine(|engine, _| engine.status()).await?;
        Ok(Response::new(convert::status(
            status,
            self.control.runner(),
        )))
    }

    async fn list_entities(
        &self,
        request: Request<proto::ListEntitiesRequest>,
    ) -> Result<Response<proto::ListEntitiesResponse>, Status> {
        let request = request.into_inner();
        let filter = EntityFilter {
            labels: request.labels.into_iter().collect(),
            health: convert::health_from(request.health)?,
            after: Some(request.page_token).filter(|token| !token.is_empty()),
            limit: limit(request.page_size),
        };
        let page = self
            .on_engine(move |engine, _| engine.entities(&filter))
            .await?;
        Ok(Response::new(proto::ListEntitiesResponse {
            total: u64::try_from(page.total).unwrap_or(u64::MAX),
            next_page_token: page.next.unwrap_or_default(),
            entities: page.items.into_iter().map(convert::entity).collect(),
        }))
    }

    async fn get_entity(
        &self,
        request: Request<proto::GetEntityRequest>,
    ) -> Result<Response<proto::Entity>, Status> {
        let id = request.into_inner().id;
        required("id", &id)?;
        let view = self
            .on_engine({
                let id = id.clone();
                move |engine, _| engine.entity(&id)
            })
            .await?
            .ok_or_else(|| {
                Status::not_found(format!(
                    "no entity {id} on the partitions this process owns"
                ))
            })?;
        Ok(Response::new(convert::entity(view)))
    }

    async fn get_series_window(
        &self,
        request: Request<proto::GetSeriesWindowRequest>,
    ) -> Result<Response<proto::SeriesWindow>, Status> {
        let request = request.into_inner();
        required("entity", &request.entity)?;
        required("series", &request.series)?;
        if request.window_ms < 0 {
            return Err(Status::invalid_argument("`window_ms` must not be negative"));
        }
        let (entity, series) = (request.entity.clone(), request.series.clone());
        let view = self
            .on_engine(move |engine, _| {
                let view = engine.series(&entity, &series, request.window_ms);
                // Tell a missing entity from a series it does not report.
                (view, engine.entity(&entity).is_some())
            })
            .await?;
        match view {
            (Some(view), _) => Ok(Response::new(convert::series(view))),
            (None, true) => Err(Status::not_found(format!(
                "entity {} reports no series {}",
                request.entity, request.series
            ))),
            (None, false) => Err(Status::not_found(format!(
                "no entity {} on the partitions this process owns",
                request.entity
            ))),
        }
    }

    async fn list_incidents(
        &self,
        request: Request<proto::ListIncidentsRequest>,
    ) -> Result<Response<proto::ListIncidentsResponse>, Status> {
        let request = request.into_inner();
        let filter = IncidentFilter {
            rule: Some(request.rule).filter(|r| !r.is_empty()),
            subject: Some(request.subject).filter(|s| !s.is_empty()),
            states: request
                .states
                .into_iter()
                .map(convert::state_from)
                .collect::<Result<_, _>>()?,
            include_closed: request.include_closed,
            limit: limit(request.limit),
        };
        let incidents = self
            .on_engine(move |engine, _| engine.incidents(&filter))
            .await?;
        Ok(Response::new(proto::ListIncidentsResponse {
            incidents: incidents.into_iter().map(convert::incident).collect(),
        }))
    }

    async fn get_incident(
        &self,
        request: Request<proto::GetIncidentRequest>,
    ) -> Result<Response<proto::Incident>, Status> {
        let id = request.into_inner().id;
        required("id", &id)?;
        let view = self
            .on_engine({
                let id = id.clone();
                move |engine, _| engine.incident(&id)
            })
            .await?
            .ok_or_else(|| {
                Status::not_found(format!(
                    "no incident {id}, open or recently closed, on the partitions this process owns"
                ))
            })?;
        Ok(Response::new(convert::incident(view)))
    }

    async fn list_rules(
        &self,
        _request: Request<proto::ListRulesRequest>,
    ) -> Result<Response<proto::ListRulesResponse>, Status> {
        let (rules, version, last_reload) = self
            .on_engine(|engine, _| {
                (
                    engine.rule_views(),
                    engine.rules_version(),
                    engine.last_reload().cloned(),
                )
            })
            .await?;
        Ok(Response::new(proto::ListRulesResponse {
            rules: rules.into_iter().map(convert::rule).collect(),
            rules_version: version,
            last_reload: last_reload.map(convert::reload),
        }))
    }

    type WatchDecisionsStream =
        Pin<Box<dyn tokio_stream::Stream<Item = WatchItem> + Send + 'static>>;

    async fn watch_decisions(
        &self,
        request: Request<proto::WatchDecisionsRequest>,
    ) -> Result<Response<Self::WatchDecisionsStream>, Status> {
        let request = request.into_inner();
        let filter = WatchFilter {
            rule: request.rule,
            entity: request.entity,
            kinds: request
                .kinds
                .into_iter()
                .map(convert::kind_from)
                .collect::<Result<_, _>>()?,
        };
        // Subscribed before the response goes out: a client that has its stream open sees
        // every decision published after that.
        let decisions = self.control.runner().watch_decisions();
        let (sender, receiver) = mpsc::channel(WATCH_QUEUE);
        tokio::spawn(forward_decisions(
            decisions,
            filter,
            sender,
            self.stopping.clone(),
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    async fn resolve_incident(
        &self,
        request: Request<proto::ResolveIncidentRequest>,
    ) -> Result<Response<proto::ResolveIncidentResponse>, Status> {
        let request = request.into_inner();
        required("id", &request.id)?;
        let incident = self
            .on_engine(move |engine, context| {
                engine
                    .resolve_incident(&request.id, &request.note, context.now_ms, context.out)
                    .map(|()| engine.incident(&request.id))
            })
            .await?
            .map_err(refused)?;
        Ok(Response::new(proto::ResolveIncidentResponse {
            incident: incident.map(convert::incident),
        }))
    }

    async fn approve_incident(
        &self,
        request: Request<proto::ApproveIncidentRequest>,
    ) -> Result<Response<proto::ApproveIncidentResponse>, Status> {
        let request = request.into_inner();
        required("id", &request.id)?;
        let incident = self
            .on_engine(move |engine, context| {
                engine
                    .approve_incident(&request.id, &request.note, context.now_ms, context.out)
                    .map(|()| engine.incident(&request.id))
            })
            .await?
            .map_err(refused)?;
        Ok(Response::new(proto::ApproveIncidentResponse {
            incident: incident.map(convert::incident),
        }))
    }

    async fn deny_incident(
        &self,
        request: Request<proto::DenyIncidentRequest>,
    ) -> Result<Response<proto::DenyIncidentResponse>, Status> {
        let request = request.into_inner();
        required("id", &request.id)?;
        let incident = self
            .on_engine(move |engine, context| {
                engine
                    .deny_incident(&request.id, &request.note, context.now_ms, context.out)
                    .map(|()| engine.incident(&request.id))
            })
            .await?
            .map_err(refused)?;
        Ok(Response::new(proto::DenyIncidentResponse {
            incident: incident.map(convert::incident),
        }))
    }

    async fn lift_quarantine(
        &self,
        request: Request<proto::LiftQuarantineRequest>,
    ) -> Result<Response<proto::LiftQuarantineResponse>, Status> {
        let request = request.into_inner();
        required("subject", &request.subject)?;
        required("rule", &request.rule)?;
        let incident_id = self
            .on_engine(move |engine, context| {
                engine.lift_quarantine(
                    &request.subject,
                    &request.rule,
                    &request.note,
                    context.now_ms,
                    context.out,
                )
            })
            .await?
            .map_err(refused)?;
        Ok(Response::new(proto::LiftQuarantineResponse { incident_id }))
    }

    async fn set_mode(
        &self,
        request: Request<proto::SetModeRequest>,
    ) -> Result<Response<proto::SetModeResponse>, Status> {
        let request = request.into_inner();
        let mode = convert::mode_from(request.mode)?;
        let rule = Some(request.rule).filter(|r| !r.is_empty());
        if rule.is_none() && mode.is_none() {
            return Err(Status::invalid_argument(
                "the global mode cannot be unset; give active, dry_run or paused",
            ));
        }
        let modes = self
            .on_engine(move |engine, _| {
                engine
                    .set_mode(rule.as_deref(), mode)
                    .map(|()| engine.modes().clone())
            })
            .await?
            .map_err(refused)?;
        Ok(Response::new(proto::SetModeResponse {
            global_mode: convert::mode(modes.global),
            rule_modes: modes
                .rules
                .iter()
                .map(|(rule, mode)| (rule.clone(), convert::mode(*mode)))
                .collect(),
        }))
    }

    async fn reload(
        &self,
        _request: Request<proto::ReloadRequest>,
    ) -> Result<Response<proto::ReloadOutcome>, Status> {
        let outcome = self.control.reload("api").await.map_err(job_status)?;
        Ok(Response::new(convert::reload(outcome)))
    }
}
