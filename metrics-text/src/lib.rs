//! What the agent's and the gateway's Prometheus endpoints share: a
//! per-scrape [`Collector`] rendered to OpenMetrics text ([`render`]), and
//! [`Emit`], thin helpers that write one metric family of constant values
//! through a [`DescriptorEncoder`] (each endpoint builds its values from a
//! snapshot at scrape time, so nothing is registered or updated between
//! scrapes). No I/O: the endpoints own their sockets.

#![forbid(unsafe_code)]

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeGaugeValue, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

/// Label pairs of one sample.
pub type Labels = Vec<(&'static str, String)>;

/// Renders `collector` (built for this scrape) as OpenMetrics text, ending
/// with `# EOF`.
pub fn render(collector: impl Collector) -> Result<String, fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(collector));
    let mut out = String::with_capacity(16 * 1024);
    prometheus_client::encoding::text::encode(&mut out, &registry)?;
    Ok(out)
}

/// Writes metric families of constant values.
#[derive(Debug)]
pub struct Emit<'a, 'b>(pub &'a mut DescriptorEncoder<'b>);

impl Emit<'_, '_> {
    /// A labelled counter family (`name` without `_total`; the samples get
    /// the suffix). Unlabelled counters use [`Emit::counter`].
    pub fn counters(&mut self, name: &str, help: &str, samples: &[(Labels, u64)]) -> fmt::Result {
        let mut m = self
            .0
            .encode_descriptor(name, help, None, MetricType::Counter)?;
        for (labels, v) in samples {
            ConstCounter::new(*v).encode(m.encode_family(labels)?)?;
        }
        Ok(())
    }

    pub fn counter(&mut self, name: &str, help: &str, v: u64) -> fmt::Result {
        let m = self
            .0
            .encode_descriptor(name, help, None, MetricType::Counter)?;
        ConstCounter::new(v).encode(m)
    }

    /// A labelled gauge family.
    pub fn gauges<N: EncodeGaugeValue + Copy>(
        &mut self,
        name: &str,
        help: &str,
        samples: &[(Labels, N)],
    ) -> fmt::Result {
        let mut m = self
            .0
            .encode_descriptor(name, help, None, MetricType::Gauge)?;
        for (labels, v) in samples {
            ConstGauge::new(*v).encode(m.encode_family(labels)?)?;
        }
        Ok(())
    }

    pub fn gauge<N: EncodeGaugeValue>(&mut self, name: &str, help: &str, v: N) -> fmt::Result {
        let m = self
            .0
            .encode_descriptor(name, help, None, MetricType::Gauge)?;
        ConstGauge::new(v).encode(m)
    }

    /// An info family (one sample of value 1 carrying `labels`).
    pub fn info(&mut self, name: &str, help: &str, labels: &Labels) -> fmt::Result {
        let mut m = self
            .0
            .encode_descriptor(name, help, None, MetricType::Info)?;
        m.encode_info(labels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct One;

    impl Collector for One {
        fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
            let mut e = Emit(&mut enc);
            e.counters("x_packets", "Packets.", &[(vec![("dir", "rx".into())], 3)])?;
            e.gauge("x_up", "Up.", 1u64)?;
            e.info("x_build", "Build.", &vec![("version", "1".into())])
        }
    }

    #[test]
    fn renders_openmetrics() {
        let text = render(One).expect("render");
        assert!(text.contains("# TYPE x_packets counter\n"), "{text}");
        assert!(text.contains("x_packets_total{dir=\"rx\"} 3\n"), "{text}");
        assert!(text.contains("x_up 1\n"), "{text}");
        assert!(text.contains("x_build_info{version=\"1\"} 1\n"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
