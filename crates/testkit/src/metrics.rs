//! Reading a `/metrics` answer with a Prometheus text-format parser (`prometheus-parse`), so
//! tests assert on names, types, label sets and values rather than on the text's layout.

use std::collections::BTreeSet;

use prometheus_parse::{Sample, Value};

/// One parsed scrape.
pub struct Scrape {
    parsed: prometheus_parse::Scrape,
}

/// The type a sample was declared with (`# TYPE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
    Untyped,
}

impl Scrape {
    /// Parses `text`; panics on an unreadable line (a test failure).
    pub fn parse(text: &str) -> Self {
        let lines = text.lines().map(|line| Ok(line.to_owned()));
        Self {
            parsed: prometheus_parse::Scrape::parse(lines).expect("a Prometheus text scrape"),
        }
    }

    /// The samples of metric `name` whose labels include every `(label, value)` of `labels`.
    pub fn samples<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.parsed.samples.iter().filter(move |s| {
            s.metric == name
                && labels
                    .iter()
                    .all(|(label, value)| s.labels.get(label) == Some(*value))
        })
    }

    /// The declared type of metric `name` (from its first sample); `None` when it has none.
    pub fn kind(&self, name: &str) -> Option<Kind> {
        self.samples(name, &[]).next().map(|s| match s.value {
            Value::Counter(_) => Kind::Counter,
            Value::Gauge(_) => Kind::Gauge,
            Value::Histogram(_) => Kind::Histogram,
            _ => Kind::Untyped,
        })
    }

    /// The label names the samples of `name` carry (`le` of histograms left out).
    pub fn label_names(&self, name: &str) -> BTreeSet<String> {
        self.samples(name, &[])
            .flat_map(|s| s.labels.keys().cloned())
            .collect()
    }

    /// The value of the one counter or gauge sample of `name` matching `labels`; panics when
    /// there is none or several.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let matching: Vec<&Sample> = self.samples(name, labels).collect();
        assert_eq!(
            matching.len(),
            1,
            "one sample of {name} {labels:?}: {matching:?}"
        );
        match matching[0].value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
            ref other => panic!("{name} is not a counter or gauge: {other:?}"),
        }
    }

    /// The values of every gauge sample of `name` matching `labels`; panics on a sample of
    /// another type.
    pub fn gauges(&self, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
        self.samples(name, labels)
            .map(|s| match s.value {
                Value::Gauge(v) => v,
                ref other => panic!("{name} is not a gauge: {other:?}"),
            })
            .collect()
    }

    /// Observations of the histogram `name` matching `labels` (its `+Inf` bucket), summed over
    /// the series that match; 0 when there is none.
    pub fn observations(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples(name, labels)
            .map(|s| match &s.value {
                Value::Histogram(buckets) => buckets
                    .iter()
                    .find(|b| b.less_than.is_infinite())
                    .map_or(0.0, |b| b.count),
                other => panic!("{name} is not a histogram: {other:?}"),
            })
            .sum()
    }

    /// Whether the scrape documents metric `name` (`# HELP`), samples or not.
    pub fn documents(&self, name: &str) -> bool {
        self.parsed.docs.contains_key(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_labels_and_values_are_read() {
        let scrape = Scrape::parse(
            "# HELP c_total C.\n# TYPE c_total counter\nc_total{service=\"a\",kind=\"x\"} 3\n\
             # HELP h_seconds H.\n# TYPE h_seconds histogram\n\
             h_seconds_bucket{service=\"a\",le=\"0.1\"} 1\nh_seconds_bucket{service=\"a\",le=\"+Inf\"} 2\n\
             h_seconds_sum{service=\"a\"} 0.3\nh_seconds_count{service=\"a\"} 2\n\
             # HELP g G.\n# TYPE g gauge\n",
        );
        assert_eq!(scrape.kind("c_total"), Some(Kind::Counter));
        assert_eq!(scrape.value("c_total", &[("kind", "x")]), 3.0);
        assert_eq!(scrape.kind("h_seconds"), Some(Kind::Histogram));
        assert_eq!(scrape.observations("h_seconds", &[("service", "a")]), 2.0);
        assert_eq!(
            scrape.label_names("c_total"),
            BTreeSet::from(["kind".to_owned(), "service".to_owned()])
        );
        assert!(scrape.documents("g"));
        assert_eq!(scrape.kind("g"), None);
    }
}
