//! The engine's own background tasks that act through its facade: the schedule runner
//! (`scheduler`), the config file's hot reload (`watch`) and, with a store many processes share,
//! taking in config changes other processes applied (`follow`). They sit above the [`Engine`]
//! they drive; the engine starts them and nothing below calls them.
//!
//! [`Engine`]: crate::Engine

pub(crate) mod follow;
pub(crate) mod scheduler;
pub(crate) mod watch;
