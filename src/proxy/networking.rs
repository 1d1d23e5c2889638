//! The seam between the supervisor and the proxy: what the supervisor asks of the network
//! side, so that its tests can stand a recorder in for it.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;

use super::{Denied, Proxy, ProxyError, Stats};
use crate::profile::Network;

/// What the supervisor needs from the network side; [`Proxy`] is the real one.
pub trait Networking: Send + Sync + 'static {
    fn attach<'a>(
        &'a self,
        name: &'a str,
        pid: u32,
        network: &'a Network,
    ) -> Pin<Box<dyn Future<Output = Result<(), ProxyError>> + Send + 'a>>;
    fn detach(&self, name: &str);
    fn update<'a>(
        &'a self,
        name: &'a str,
        network: &'a Network,
    ) -> Pin<Box<dyn Future<Output = bool> + Send + 'a>>;
    fn stats(&self, name: &str) -> Stats;
    fn denials(&self, name: &str) -> Vec<Denied>;
    fn name_hits(&self, name: &str) -> HashMap<String, u64>;
}

impl Networking for Proxy {
    fn attach<'a>(
        &'a self,
        name: &'a str,
        pid: u32,
        network: &'a Network,
    ) -> Pin<Box<dyn Future<Output = Result<(), ProxyError>> + Send + 'a>> {
        Box::pin(Proxy::attach(self, name, pid, network))
    }

    fn detach(&self, name: &str) {
        Proxy::detach(self, name);
    }

    fn update<'a>(
        &'a self,
        name: &'a str,
        network: &'a Network,
    ) -> Pin<Box<dyn Future<Output = bool> + Send + 'a>> {
        Box::pin(Proxy::update(self, name, network))
    }

    fn stats(&self, name: &str) -> Stats {
        Proxy::stats(self, name)
    }

    fn denials(&self, name: &str) -> Vec<Denied> {
        Proxy::denials(self, name)
    }

    fn name_hits(&self, name: &str) -> HashMap<String, u64> {
        Proxy::name_hits(self, name)
    }
}
