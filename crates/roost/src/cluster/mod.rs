//! Several Roost nodes on one database (`docs/scale-out.md`): what one node commits reaches the
//! others' dashboards and the node running the alert engine (`feed`, PostgreSQL LISTEN/NOTIFY),
//! and jobs that must run once run on one node at a time (`lease`).

pub mod feed;
pub mod lease;
