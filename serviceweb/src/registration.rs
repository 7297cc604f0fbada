//! Self-registration in Consul with a TTL check the instance keeps passing (the keep-alive lease
//! pattern). If Consul forgets the registration (restart, or the check expired), the next
//! keep-alive notices and registers again; on shutdown the instance deregisters itself.

use std::time::Duration;

use consul::{AgentCheck, AgentRegistration, Client};
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// One instance's registration.
#[derive(Clone, Debug)]
pub struct Registration {
    client: Client,
    reg: AgentRegistration,
    check_id: String,
    ttl: Duration,
}

/// A running keep-alive; deregister with [`Running::deregister`].
pub struct Running {
    reg: Registration,
    task: JoinHandle<()>,
}

impl Registration {
    /// A registration of `name` at `address:port`, identified by host and port.
    pub fn new(client: Client, name: &str, hostname: &str, address: String, port: u16, ttl: Duration) -> Self {
        let id = format!("{name}-{hostname}-{port}");
        let check_id = format!("service:{id}");
        let reg = AgentRegistration {
            id,
            name: name.to_string(),
            address,
            port,
            check: Some(AgentCheck {
                check_id: check_id.clone(),
                ttl: Some(format!("{}ms", ttl.as_millis())),
                status: Some("passing".into()),
                deregister_critical_service_after: Some("1m".into()),
                ..AgentCheck::default()
            }),
            ..AgentRegistration::default()
        };
        Self { client, reg, check_id, ttl }
    }

    /// The same registration with these tags.
    pub fn with_tags(mut self, tags: Vec<String>) -> Self {
        self.reg.tags = tags;
        self
    }

    /// Registers (again) with the agent.
    pub async fn register(&self) -> Result<(), consul::Error> {
        self.client.register(&self.reg).await?;
        info!(id = %self.reg.id, address = %self.reg.address, port = self.reg.port, consul = %self.client.addr(), "registered in Consul");
        Ok(())
    }

    /// Starts the keep-alive loop.
    pub fn spawn_keepalive(self) -> Running {
        let me = self.clone();
        let task = tokio::spawn(async move { me.keepalive().await });
        Running { reg: self, task }
    }

    async fn keepalive(&self) {
        let mut tick = tokio::time::interval(self.ttl / 3);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match self.client.pass_check(&self.check_id).await {
                Ok(()) => {}
                // Consul does not know the check (it restarted, or reaped us): register again.
                Err(e) if matches!(e.status(), Some(404 | 500)) => {
                    warn!(error = %e, "Consul lost this registration; registering again");
                    if let Err(e) = self.register().await {
                        warn!(error = %e, "cannot register again");
                    }
                }
                Err(e) => warn!(error = %e, "cannot report the TTL check"),
            }
        }
    }
}

impl Running {
    /// Stops the keep-alive and removes the registration.
    pub async fn deregister(self) {
        self.task.abort();
        match self.reg.client.deregister(&self.reg.reg.id).await {
            Ok(()) => info!(id = %self.reg.reg.id, "deregistered from Consul"),
            Err(e) => warn!(id = %self.reg.reg.id, error = %e, "cannot deregister from Consul"),
        }
    }
}
