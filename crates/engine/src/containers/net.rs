//! How a container joins the network. Until the bridge driver lands, `bridge` containers get a
//! private network namespace with loopback only; `host` shares the host's; `container:<id>`
//! joins another container's.

use std::sync::Arc;

use super::fs::NetConfig;
use super::spec::Namespace;
use super::{Container, ContainerService};
use crate::error::{EngineError, Result};

impl ContainerService {
    pub(crate) async fn net_setup(&self, c: &Arc<Container>) -> Result<NetConfig> {
        let mode = c
            .rec
            .read()
            .await
            .host_config
            .network_mode
            .clone()
            .unwrap_or_default();
        let netns = match mode.as_str() {
            "host" => Namespace::Host,
            m if m.starts_with("container:") => {
                let other = self.get(&m["container:".len()..]).await?;
                let r = other.rec.read().await;
                if !r.state.status.is_alive() {
                    return Err(EngineError::Conflict(format!(
                        "cannot join network of a non running container: {}",
                        r.id
                    )));
                }
                Namespace::Path(format!("/proc/{}/ns/net", r.state.pid).into())
            }
            _ => Namespace::New,
        };
        Ok(NetConfig {
            netns,
            ..Default::default()
        })
    }

    pub(crate) async fn net_teardown(&self, _id: &str) {}
}
