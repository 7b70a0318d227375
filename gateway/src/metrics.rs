//! `GET /metrics` in the Prometheus text format (0.0.4, which every Prometheus and `promtool check metrics`
//! read), from one `prometheus-client` registry that the parts of Vane register into at start-up.

use prometheus_client::encoding::prometheus_text;
use prometheus_client::registry::Registry;

/// The server's metrics registry.
#[derive(Debug, Default)]
pub struct Metrics {
    registry: Registry,
}

impl Metrics {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The registry, for registering series at start-up.
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// Every series, as Prometheus text.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_text::encode(&mut text, &self.registry);
        text
    }

    /// The `Content-Type` of [`Metrics::render`]'s output.
    pub const CONTENT_TYPE: &'static str = prometheus_text::CONTENT_TYPE;
}
