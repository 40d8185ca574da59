//! The device simulator behind `roost simulate` and `roost serve --demo`: virtual NodeMCU
//! boards (`board`) and the MQTT clients that carry their readings (`fleet`).

pub mod board;
pub mod fleet;

pub use board::{Board, Sample, CATEGORIES};
pub use fleet::{run, FleetConfig};
