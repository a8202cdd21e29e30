//! What the agent's and the gateway's Prometheus endpoints share: a
//! per-scrape [`Collector`] rendered to OpenMetrics text ([`render`]),
//! [`Emit`], thin helpers that write one metric family of constant values
//! through a [`DescriptorEncoder`] (each endpoint builds its values from a
//! snapshot at scrape time, so nothing is registered or updated between
//! scrapes), and label sets: [`label_set!`] declares an enum whose values
//! are the fixed values of one label (`ALL`, `index`, `label`, and
//! [`LabelSet`]), and [`by_label`] / [`by_labels`] turn a row or table of
//! counts indexed by such enums into samples, every value zeros included.
//! No I/O: the endpoints own their sockets.

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

/// An enum whose values are the fixed values of a metric label; declare
/// one with [`label_set!`].
pub trait LabelSet: Copy + 'static {
    /// Every value, in label order (`VALUES[v.index()] == v`).
    const VALUES: &'static [Self];
    /// The label's value.
    fn label(self) -> &'static str;
}

/// Declares a [`LabelSet`] enum: each variant with its label,
/// `Variant = "label"`, in label order. The enum gets `Debug, Clone, Copy,
/// PartialEq, Eq, Hash` (attributes given before it are kept, other
/// derives too), and inherent `ALL` (an array, usable for the length of
/// a table of counters), `index` (position in `ALL`) and `label`.
#[macro_export]
macro_rules! label_set {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $label:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        $vis enum $name {
            $( $(#[$vmeta])* $variant ),+
        }

        impl $name {
            /// Every value, in label order (`ALL[v.index()] == v`).
            pub const ALL: [$name; [$(stringify!($variant)),+].len()] = [$($name::$variant),+];

            /// Position in `ALL`.
            pub fn index(self) -> usize {
                self as usize
            }

            /// The label's value.
            pub fn label(self) -> &'static str {
                match self {
                    $( $name::$variant => $label ),+
                }
            }
        }

        impl $crate::LabelSet for $name {
            const VALUES: &'static [Self] = &$name::ALL;

            fn label(self) -> &'static str {
                $name::label(self)
            }
        }
    };
}

/// The samples of a family with one label: `values[i]` is labelled
/// `key` = `L::VALUES[i]`, one sample per value.
pub fn by_label<L: LabelSet, N: Copy>(key: &'static str, values: &[N]) -> Vec<(Labels, N)> {
    L::VALUES
        .iter()
        .zip(values)
        .map(|(l, n)| (vec![(key, l.label().to_string())], *n))
        .collect()
}

/// The samples of a family with two labels: `values[i][j]` is labelled
/// `keys.0` = `R::VALUES[i]`, `keys.1` = `C::VALUES[j]`; every pair, rows
/// first.
pub fn by_labels<R: LabelSet, C: LabelSet, N: Copy>(
    keys: (&'static str, &'static str),
    values: &[impl AsRef<[N]>],
) -> Vec<(Labels, N)> {
    let mut out = Vec::with_capacity(R::VALUES.len().saturating_mul(C::VALUES.len()));
    for (r, row) in R::VALUES.iter().zip(values) {
        for (c, n) in C::VALUES.iter().zip(row.as_ref()) {
            out.push((
                vec![
                    (keys.0, r.label().to_string()),
                    (keys.1, c.label().to_string()),
                ],
                *n,
            ));
        }
    }
    out
}

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

    label_set! {
        /// A test set.
        enum Dir {
            /// In.
            Rx = "rx",
            Tx = "tx",
        }
    }

    label_set! {
        enum Why {
            Full = "full",
            Late = "late",
            Bad = "bad",
        }
    }

    /// `ALL` lists the variants in order, `index` is the position there,
    /// labels are the given ones.
    #[test]
    fn a_label_set_knows_its_values() {
        assert_eq!(Dir::ALL, [Dir::Rx, Dir::Tx]);
        assert_eq!(Why::ALL.len(), 3);
        for (i, w) in Why::ALL.into_iter().enumerate() {
            assert_eq!(w.index(), i);
            assert_eq!(Why::VALUES[i], w);
        }
        assert_eq!(Why::ALL.map(Why::label), ["full", "late", "bad"]);
        assert_eq!(LabelSet::label(Dir::Tx), "tx");
        assert_eq!(Dir::Tx.index(), 1);
    }

    /// Every value or pair gets its sample, zeros included, rows first.
    #[test]
    fn samples_by_label_sets() {
        let one = by_label::<Dir, u64>("dir", &[0, 7]);
        assert_eq!(
            one,
            vec![
                (vec![("dir", "rx".to_string())], 0),
                (vec![("dir", "tx".to_string())], 7)
            ]
        );
        let table = [[1u64, 0, 2], [0, 3, 0]];
        let two = by_labels::<Dir, Why, u64>(("dir", "why"), &table);
        let flat: Vec<(String, String, u64)> = two
            .into_iter()
            .map(|(l, n)| (l[0].1.clone(), l[1].1.clone(), n))
            .collect();
        let want = [
            ("rx", "full", 1),
            ("rx", "late", 0),
            ("rx", "bad", 2),
            ("tx", "full", 0),
            ("tx", "late", 3),
            ("tx", "bad", 0),
        ];
        assert_eq!(flat.len(), want.len());
        for ((d, w, n), (wd, ww, wn)) in flat.iter().zip(want) {
            assert_eq!((d.as_str(), w.as_str(), *n), (wd, ww, wn));
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
