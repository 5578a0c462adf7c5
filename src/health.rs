//! gRPC health (`grpc.health.v1.Health`) for the whole life of the process.
//!
//! One [`Health`] is made before anything else: `tokend serve` answers
//! health checks on `--health-listen` while the store opens and the index
//! loads (every service NOT_SERVING; a PostgreSQL replica may wait there for
//! its database), and the same statuses turn SERVING when serving starts,
//! then NOT_SERVING again at shutdown or while a replica is stale.

use tokio::net::TcpListener;
use tonic_health::{
    ServingStatus,
    pb::health_server::HealthServer,
    server::{HealthReporter, HealthService},
};

use crate::{
    conn::{Gate, Incoming, Protocol, abuse::Cooldown},
    limits::Limits,
};

/// The services whose health is reported: the whole server, and each API.
pub const SERVICES: [&str; 3] = ["", "tokend.v1.TokenService", "tokend.v1.VerifyService"];

/// The health statuses; clones share them.
#[derive(Clone, Debug)]
pub struct Health(HealthReporter);

impl Health {
    /// Every service NOT_SERVING, until start-up is over.
    pub async fn starting() -> Health {
        let health = Health(HealthReporter::new());
        health.set(&SERVICES, ServingStatus::NotServing).await;
        health
    }

    /// Sets the status of `services`.
    pub async fn set(&self, services: &[&str], status: ServingStatus) {
        for name in services {
            self.0.set_service_status(*name, status).await;
        }
    }

    /// A gRPC service answering from these statuses.
    pub fn service(&self) -> HealthServer<HealthService> {
        HealthServer::new(HealthService::from_health_reporter(self.0.clone()))
    }

    /// Serves health checks alone on `listener`, in plaintext (for
    /// Kubernetes' gRPC probes, which cannot speak TLS), until `stop`.
    /// The port has its own small connection budget
    /// (`limits::SIDE_PORT_MAX_CONNECTIONS`), so a flood of the gRPC port
    /// cannot fail the probes, and the same handshake deadline.
    pub async fn serve_alone(
        &self,
        listener: TcpListener,
        limits: &Limits,
        stop: impl Future<Output = ()>,
    ) -> Result<(), tonic::transport::Error> {
        // Counted apart from the gRPC ports' metrics: this port is for probes.
        let cooldown = Cooldown::new(limits.abuse_cooldown, Default::default(), Default::default());
        let http2 = Protocol::Http2 { cooldown: std::sync::Arc::new(cooldown) };
        let incoming = Incoming::new(listener, Gate::side_port("health"), limits.handshake_timeout, http2);
        limits.server().add_service(self.service()).serve_with_incoming_shutdown(incoming, stop).await
    }
}
