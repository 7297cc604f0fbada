//! Reconciles what Consul's agent holds with what the containers want.
//!
//! Owns: which registrations are ours (meta [`META_OWNER`] equals this host's name — anything else
//! is never touched), the plan (register what is missing or changed, deregister what is ours but
//! no longer wanted), the deregistration policy for stopped containers, and applying a plan with
//! one log line per change. It does not know where the desired set comes from ([`crate::run`]).
//!
//! Consul is the state: nothing is remembered between calls, so a registrator restart, a Consul
//! restart or a missed Docker event are all repaired by the next reconcile.

use std::collections::{BTreeSet, HashMap};

use consul::model::AgentService;
use consul::{AgentRegistration, Client};
use tracing::{info, warn};

use crate::desired::{META_CONTAINER, META_OWNER, META_SPEC};
use crate::Error;

/// When a stopped container's services are removed (`--deregister`, as in gliderlabs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Deregister {
    /// Whenever the container stops.
    #[default]
    Always,
    /// Only when it exited with 0 or was stopped by a signal; a crashed container stays registered
    /// (its health check reports it) until it is removed.
    OnSuccess,
}

impl Deregister {
    /// Whether a container that exited with `exit_code` keeps its registrations.
    pub fn keeps(self, exit_code: i64) -> bool {
        const SIGNALED: i64 = 128;
        self == Deregister::OnSuccess && exit_code != 0 && exit_code & SIGNALED == 0
    }
}

/// A registration on the agent that this registrator owns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owned {
    /// Service ID.
    pub id: String,
    /// The container it was made for.
    pub container: String,
    /// The spec hash it was registered with.
    pub spec: Option<String>,
}

/// Which registrations a reconcile may remove.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope<'a> {
    /// All of ours (periodic resync).
    All,
    /// Only those of one container (a Docker event).
    Container(&'a str),
}

/// The changes that bring the agent to the desired state.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// Registrations to send (missing or changed).
    pub register: Vec<AgentRegistration>,
    /// IDs of our registrations to remove.
    pub deregister: Vec<String>,
}

/// The registrations on the agent that carry our owner mark.
pub fn owned(services: &HashMap<String, AgentService>, owner: &str) -> Vec<Owned> {
    let mut out: Vec<Owned> = services
        .values()
        .filter_map(|s| {
            let meta = s.meta.as_ref()?;
            (meta.get(META_OWNER)? == owner).then(|| Owned {
                id: s.id.clone(),
                container: meta.get(META_CONTAINER).cloned().unwrap_or_default(),
                spec: meta.get(META_SPEC).cloned(),
            })
        })
        .collect();
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

/// Plans the changes. `desired` is everything wanted within `scope`; `keep` names containers
/// whose registrations stay even though they are not desired (see [`Deregister::OnSuccess`]).
pub fn plan(desired: Vec<AgentRegistration>, owned: &[Owned], scope: Scope<'_>, keep: &BTreeSet<String>) -> Plan {
    let current: HashMap<&str, &Owned> = owned.iter().map(|o| (o.id.as_str(), o)).collect();
    let mut wanted = BTreeSet::new();
    let mut register = Vec::new();
    for reg in desired {
        if !wanted.insert(reg.id.clone()) {
            warn!(id = %reg.id, "two ports want the same service ID (SERVICE_ID?); registering the first");
            continue;
        }
        let same = current.get(reg.id.as_str()).is_some_and(|o| o.spec.as_ref() == reg.meta.get(META_SPEC));
        if !same {
            register.push(reg);
        }
    }
    let deregister = owned
        .iter()
        .filter(|o| match scope {
            Scope::All => true,
            Scope::Container(id) => o.container == id,
        })
        .filter(|o| !wanted.contains(&o.id) && !keep.contains(&o.container))
        .map(|o| o.id.clone())
        .collect();
    Plan { register, deregister }
}

/// Applies plans to one Consul agent on behalf of one owner.
#[derive(Clone, Debug)]
pub struct Syncer {
    consul: Client,
    owner: String,
}

impl Syncer {
    /// A syncer writing to `consul` as `owner` (the host name in the registrations' meta).
    pub fn new(consul: Client, owner: String) -> Self {
        Self { consul, owner }
    }

    /// Our registrations currently on the agent.
    pub async fn owned(&self) -> Result<Vec<Owned>, Error> {
        let services = self.consul.agent_services().await.map_err(|e| Error::consul("list agent services", e))?;
        Ok(owned(&services, &self.owner))
    }

    /// Brings the agent to `desired` within `scope`. Every change is attempted; the first error
    /// is returned after the others were tried, so one bad registration does not block the rest.
    pub async fn reconcile(
        &self,
        desired: Vec<AgentRegistration>,
        owned: &[Owned],
        scope: Scope<'_>,
        keep: &BTreeSet<String>,
    ) -> Result<usize, Error> {
        let plan = plan(desired, owned, scope, keep);
        let mut first_error = None;
        let changes = plan.register.len() + plan.deregister.len();
        for reg in &plan.register {
            match self.consul.register(reg).await {
                Ok(()) => info!("registered {}", describe(reg)),
                Err(e) => {
                    let e = Error::consul(format!("register {}", reg.id), e);
                    warn!("{e}");
                    first_error.get_or_insert(e);
                }
            }
        }
        for id in &plan.deregister {
            match self.consul.deregister(id).await {
                Ok(()) => info!("deregistered {id} (its container is no longer running)"),
                Err(e) => {
                    let e = Error::consul(format!("deregister {id}"), e);
                    warn!("{e}");
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(changes), Err)
    }
}

/// `id as name at addr:port [tags] check ...`, for the log.
fn describe(reg: &AgentRegistration) -> String {
    let mut s = format!("{} as {} at {}:{}", reg.id, reg.name, reg.address, reg.port);
    if !reg.tags.is_empty() {
        s.push_str(&format!(" tags [{}]", reg.tags.join(",")));
    }
    if let Some(c) = &reg.check {
        let what = c
            .http
            .as_deref()
            .map(|u| format!("http {u}"))
            .or_else(|| c.tcp.as_deref().map(|t| format!("tcp {t}")))
            .or_else(|| c.ttl.as_deref().map(|t| format!("ttl {t}")))
            .unwrap_or_default();
        s.push_str(&format!(" check {what}"));
        if let Some(i) = &c.interval {
            s.push_str(&format!(" every {i}"));
        }
    }
    s
}

#[cfg(test)]
#[path = "sync_tests.rs"]
mod tests;
