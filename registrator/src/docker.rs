//! The Docker engine as a source of containers: connect (`DOCKER_HOST` or the local socket) with
//! API version negotiation, list and inspect containers into the [`Container`] model, and follow
//! the lifecycle events that change what should be registered.
//!
//! Reports each container's network mode with its addresses as facts ([`Network`]); which of
//! them is registered is [`crate::address`]'s decision. The one exception is `container:<id>`:
//! the owner of the shared namespace is inspected here and its network and port bindings stand in
//! for the joining container's ([`join`]).
//!
//! Owns every use of bollard. Version negotiation lowers bollard's default API version to the
//! engine's, so the same binary talks to Docker 20.10 (API 1.41) and to engines that refuse old
//! versions (Docker 29: minimum 1.44) alike.

use std::collections::{BTreeMap, HashMap};

use bollard::models::{ContainerInspectResponse, EventMessage};
use bollard::query_parameters::{EventsOptions, InspectContainerOptions, ListContainersOptions};
use bollard::Docker;
use futures_util::{Stream, StreamExt};

use crate::convention::{Container, Network, Port};
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
}

impl Engine {
    /// Connects and negotiates the API version.
    ///
    /// # Errors
    /// [`Error::Docker`] when the engine cannot be reached.
    pub async fn connect() -> Result<Self, Error> {
        let docker = Docker::connect_with_defaults().map_err(|e| Error::docker("connect", e))?;
        let docker = docker.negotiate_version().await.map_err(|e| Error::docker("negotiate API version", e))?;
        Ok(Self { docker })
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

    /// The current state of one container; `container:<id>` networking is resolved through `<id>`.
    ///
    /// # Errors
    /// [`Error::Docker`] when an inspect fails for another reason than "no such container".
    pub async fn state(&self, id: &str) -> Result<State, Error> {
        let Some(resp) = self.inspect(id).await? else {
            return Ok(State::Gone);
        };
        let mut state = state_of(resp);
        if let State::Serving(c) = &mut state {
            if let Network::Joined(owner) = &c.network {
                let owner = owner.clone();
                join(c, &owner, self.inspect(&owner).await?);
            }
        }
        Ok(state)
    }

    async fn inspect(&self, id: &str) -> Result<Option<ContainerInspectResponse>, Error> {
        match self.docker.inspect_container(id, None::<InspectContainerOptions>).await {
            Ok(resp) => Ok(Some(resp)),
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(None),
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

/// Converts an inspect response into a [`State`]. A `container:<id>` network is left
/// [`Network::Joined`] for [`join`].
pub fn state_of(resp: ContainerInspectResponse) -> State {
    let st = resp.state.clone().unwrap_or_default();
    if st.paused == Some(true) {
        return State::Paused;
    }
    if st.running != Some(true) {
        return State::Exited(st.exit_code.unwrap_or(0));
    }
    State::Serving(Box::new(container_of(resp)))
}

/// Gives `joiner` (in `container:<owner_ref>` mode) the network of the namespace's owner, as
/// inspected (`None`: gone): the owner's network mode and addresses, and for each of the joiner's
/// ports the owner's host binding of that port, since only the owner can publish ports.
pub fn join(joiner: &mut Container, owner_ref: &str, owner: Option<ContainerInspectResponse>) {
    let Some(resp) = owner else {
        let why = format!("shares the network of container {}, which no longer exists", short(owner_ref));
        joiner.network = Network::Unusable(why);
        return;
    };
    let running = resp.state.as_ref().and_then(|s| s.running) == Some(true);
    let owner = container_of(resp);
    joiner.network = match owner.network {
        _ if !running => {
            Network::Unusable(format!("shares the network of container {}, which is not running", owner.name))
        }
        Network::Joined(_) => {
            Network::Unusable(format!("shares the network of container {}, which shares another's", owner.name))
        }
        network => network,
    };
    for port in &mut joiner.ports {
        let bound = owner.ports.iter().find(|o| o.port == port.port && o.proto == port.proto);
        port.host_ip = bound.and_then(|o| o.host_ip.clone());
        port.host_port = bound.and_then(|o| o.host_port);
    }
    joiner.via = Some(owner.name);
}

fn container_of(resp: ContainerInspectResponse) -> Container {
    let config = resp.config.unwrap_or_default();
    let settings = resp.network_settings.unwrap_or_default();
    let host = resp.host_config.unwrap_or_default();
    let mode = host.network_mode.unwrap_or_default();
    let network = match mode.as_str() {
        "host" => Network::Host,
        "none" => Network::None,
        m => match m.strip_prefix("container:") {
            Some(owner) => Network::Joined(owner.to_string()),
            None => {
                let mut ips: BTreeMap<String, String> = settings
                    .networks
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|(name, n)| Some((name, n.ip_address.filter(|ip| !ip.is_empty())?)))
                    .collect();
                // Engines that predate per-network settings report the default bridge only here.
                if let Some(ip) = settings.ip_address.filter(|ip| !ip.is_empty()) {
                    ips.entry("bridge".into()).or_insert(ip);
                }
                let primary = if matches!(m, "" | "default") { "bridge" } else { m };
                Network::Attached { primary: primary.to_string(), ips }
            }
        },
    };
    // Exposed ports; then the configured bindings, which are all a host-network container has
    // (Docker ignores them there but keeps them); then the runtime port map, which is the truth
    // for a container with its own namespace.
    let mut ports: BTreeMap<(u16, String), Port> = BTreeMap::new();
    for key in config.exposed_ports.unwrap_or_default().into_keys() {
        if let Some((port, proto)) = parse_port_key(&key) {
            ports.insert((port, proto.clone()), Port { port, proto, host_ip: None, host_port: None });
        }
    }
    let configured = host.port_bindings.unwrap_or_default();
    for (key, bindings) in configured.into_iter().chain(settings.ports.unwrap_or_default()) {
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
        network,
        via: None,
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
