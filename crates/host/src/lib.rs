//! berth-host: the desktop side of Berth.
//!
//! - [`Host`]: one connection to the engine (bollard over the same socket the
//!   docker CLI uses: the setting, `DOCKER_HOST`, or `/run/berth/docker.sock`),
//!   the engine's state and a shared `/events` subscription, streams for the UI;
//! - [`launcher`]: starting berthd when it is not running;
//! - [`settings`]: the app's settings file; [`autostart`]: start at login;
//! - [`commands`]: the command set of the UI ([`Host::call`]);
//! - [`serve`]: the same commands over HTTP/WebSocket on 127.0.0.1 so `ui/`
//!   runs in a browser against a real engine (e2e tests, development).

pub mod autostart;
pub mod commands;
pub mod error;
pub mod host;
pub mod launcher;
#[cfg(feature = "serve")]
pub mod serve;
pub mod settings;
pub mod stats;
pub mod streams;
pub mod vm;

pub use error::{ErrorKind, HostError, Result};
pub use host::{EngineState, Host, Sink};
pub use settings::Settings;
