//! tokend: a gRPC service that issues, verifies, lists, revokes and rotates
//! API tokens.
//!
//! Layout, from the wire inwards:
//!
//! * [`server`] wires everything together and owns start-up and shutdown;
//!   [`config`] turns flags into its [`server::Config`]; [`health`] reports
//!   gRPC health from before start-up to shutdown. The front door: [`conn`]
//!   caps connections and times their handshake, [`limits`] holds every
//!   limit, `service::admission` sheds and times admin calls.
//! * [`service`] is the gRPC layer: validation, protobuf conversion, error
//!   mapping. [`auth`] authenticates the admin plane; [`access`] says what
//!   each admin token may do there.
//! * The domain: [`verify`] (the hot path), [`registry`] (the admin rules),
//!   [`index`] (the in-memory token set), [`token`] (the token format and
//!   the only code that sees secrets), [`record`], [`change`], [`spec`],
//!   [`id`], [`clock`], [`error`]; [`audit`] is the hash-chained trail of
//!   admin calls. [`feed`] keeps the index current with a
//!   shared store and fails closed when it cannot; [`watch`] numbers the
//!   changes the index applies, for siblings' caches.
//! * [`store`] is the storage layer, one backend per file or folder (sled in
//!   `store/sled.rs`, PostgreSQL in `store/postgres/`); [`commit`] shares
//!   flushes among concurrent writers; [`last_used`] persists last-used
//!   times in the background.
//! * [`loadgen`] (`tokend bench`) and [`seed`] measure all of the above.
//!
//! Dependencies point one way: service → domain → store. Protobuf types stay
//! in `service`/`pb`; sled and PostgreSQL types stay in `store`.

#![forbid(unsafe_code)]

pub mod access;
pub mod audit;
pub mod auth;
pub mod change;
pub mod cidr;
pub mod cli;
pub mod clock;
pub mod commit;
pub mod config;
pub mod conn;
pub mod error;
pub mod feed;
pub mod health;
pub mod id;
pub mod index;
pub mod intern;
pub mod last_used;
pub mod limits;
pub mod load;
pub mod loadgen;
pub mod metrics;
pub mod pb;
pub mod progress;
pub mod record;
pub mod registry;
pub mod sealer;
pub mod seed;
pub mod server;
pub mod service;
pub mod spec;
pub mod store;
pub mod telemetry;
pub mod token;
pub mod verify;
pub mod watch;

pub use server::{Config, Tokend};
