//! The Docker engine as a source of containers: connect (`DOCKER_HOST` or the local socket) with
//! API version negotiation, list and inspect containers into the [`Container`] model, and follow
//! the lifecycle events that change what should be registered.
//!
//! Owns every use of bollard. Version negotiation lowers bollard's default API version to the
//! engine's, so the same binary talks to Docker 20.10 (API 1.41) and to engines that refuse old
//! versions (Docker 29: minimum 1.44) alike.

use std::collections::{BTreeMap, HashMap};

use bollard::models::{ContainerInspectResponse, EventMessage};
use bollard::query_parameters::{EventsOptions, InspectContainerOptions, ListContainersOptions};
use bollard::Docker;
use futures_util::{Stream, StreamExt};

use crate::convention::{Container, Port};
use crate::Error;

/// The container actions that can change what should be registered.
pub const ACTIONS: [&str; 7] = ["start", "die", "stop", "kill", "destroy", "pause", "unpause"];

/// What a container currently is, as far as registration goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    /// Running and not paused: it should be registered.
    Serving(Box<Container>),
    /// Paused: it cannot serve.
    Paused,
    /// Stopped, with its exit code.
    Exited(i64),
    /// Removed (or never existed).
    Gone,
}

/// A connected Docker engine.
#[derive(Clone, Debug)]
pub struct Engine {
    docker: Docker,
    network: Option<String>,
}

impl Engine {
    /// Connects and negotiates the API version. `network` picks which network's IP a container is
    /// registered with (`--network`); without it the container's own network mode decides.
    pub async fn connect(network: Option<String>) -> Result<Self, Error> {
        let docker = Docker::connect_with_defaults().map_err(|e| Error::docker("connect", e))?;
        let docker = docker.negotiate_version().await.map_err(|e| Error::docker("negotiate API version", e))?;
        Ok(Self { docker, network })
    }

    /// The negotiated API version, e.g. `1.41`.
    pub fn api_version(&self) -> String {
        self.docker.client_version().to_string()
    }

    /// The engine host's name (`docker info` Name): stable across registrator restarts.
    pub async fn host_name(&self) -> Result<String, Error> {
        let info = self.docker.info().await.map_err(|e| Error::docker("info", e))?;
        Ok(info.name.unwrap_or_default())
    }

    /// Lifecycle events of containers since `since` (Unix seconds), then live ones.
    pub fn events(&self, since: u64) -> impl Stream<Item = Result<(String, String), Error>> + Unpin {
        let mut filters = HashMap::new();
        filters.insert("type".to_string(), vec!["container".to_string()]);
        filters.insert("event".to_string(), ACTIONS.iter().map(|a| a.to_string()).collect());
        let options = EventsOptions { since: Some(since.to_string()), filters: Some(filters), ..Default::default() };
        Box::pin(self.docker.events(Some(options)).filter_map(|ev| async move {
            match ev {
                Ok(ev) => event_target(&ev).map(Ok),
                Err(e) => Some(Err(Error::docker("events", e))),
            }
        }))
    }

    /// IDs of the running (including paused) containers.
    pub async fn running_ids(&self) -> Result<Vec<String>, Error> {
        let list = self
            .docker
            .list_containers(None::<ListContainersOptions>)
            .await
            .map_err(|e| Error::docker("list containers", e))?;
        Ok(list.into_iter().filter_map(|c| c.id).collect())
    }

    /// The current state of one container.
    pub async fn state(&self, id: &str) -> Result<State, Error> {
        match self.docker.inspect_container(id, None::<InspectContainerOptions>).await {
            Ok(resp) => Ok(state_of(resp, self.network.as_deref())),
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(State::Gone),
            Err(e) => Err(Error::docker(format!("inspect {}", short(id)), e)),
        }
    }
}

/// `(container id, action)` of a container event, e.g. `("3f2a…", "die")`.
fn event_target(ev: &EventMessage) -> Option<(String, String)> {
    let id = ev.actor.as_ref()?.id.clone()?;
    Some((id, ev.action.clone().unwrap_or_default()))
}

/// The first 12 characters of an ID.
pub fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// Converts an inspect response into a [`State`].
pub fn state_of(resp: ContainerInspectResponse, network: Option<&str>) -> State {
    let st = resp.state.clone().unwrap_or_default();
    if st.paused == Some(true) {
        return State::Paused;
    }
    if st.running != Some(true) {
        return State::Exited(st.exit_code.unwrap_or(0));
    }
    State::Serving(Box::new(container_of(resp, network)))
}

fn container_of(resp: ContainerInspectResponse, network: Option<&str>) -> Container {
    let config = resp.config.unwrap_or_default();
    let settings = resp.network_settings.unwrap_or_default();
    let mode = resp.host_config.and_then(|h| h.network_mode).unwrap_or_default();
    let networks = settings.networks.unwrap_or_default();
    let ip_on = |name: &str| networks.get(name).and_then(|n| n.ip_address.clone()).filter(|ip| !ip.is_empty());
    let ip = match network {
        Some(net) => ip_on(net),
        None => settings.ip_address.filter(|ip| !ip.is_empty()).or_else(|| ip_on(&mode)).or_else(|| {
            let mut names: Vec<&String> = networks.keys().collect();
            names.sort();
            names.into_iter().find_map(|n| ip_on(n))
        }),
    };
    // Exposed ports, then the runtime port map (which adds host bindings).
    let mut ports: BTreeMap<(u16, String), Port> = BTreeMap::new();
    let keys = config.exposed_ports.unwrap_or_default().into_keys();
    for key in keys {
        if let Some((port, proto)) = parse_port_key(&key) {
            ports.insert((port, proto.clone()), Port { port, proto, host_ip: None, host_port: None });
        }
    }
    for (key, bindings) in settings.ports.unwrap_or_default() {
        let Some((port, proto)) = parse_port_key(&key) else {
            continue;
        };
        let first = bindings.unwrap_or_default().into_iter().find_map(|b| {
            let hp = b.host_port.as_deref()?.parse::<u16>().ok()?;
            Some((b.host_ip.unwrap_or_default(), hp))
        });
        ports.insert(
            (port, proto.clone()),
            Port { port, proto, host_ip: first.as_ref().map(|(ip, _)| ip.clone()), host_port: first.map(|(_, p)| p) },
        );
    }
    Container {
        id: resp.id.unwrap_or_default(),
        name: resp.name.unwrap_or_default().trim_start_matches('/').to_string(),
        image: config.image.unwrap_or_default(),
        env: config.env.unwrap_or_default(),
        labels: config.labels.unwrap_or_default().into_iter().collect(),
        ip,
        ports: ports.into_values().collect(),
    }
}

/// `"3000/tcp"` → `(3000, "tcp")`; a bare number is TCP.
fn parse_port_key(key: &str) -> Option<(u16, String)> {
    let (port, proto) = key.split_once('/').unwrap_or((key, "tcp"));
    Some((port.parse().ok()?, proto.to_ascii_lowercase()))
}

#[cfg(test)]
#[path = "docker_tests.rs"]
mod tests;
