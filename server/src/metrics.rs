//! Prometheus metrics: counters bumped where things happen (never per packet), and gauges
//! read from the running tables when `/metrics` is scraped.
//!
//! The counters live in one process-wide [`Counters`], so the connection code reaches them
//! without threading a handle through every call; [`render`] builds a registry per scrape
//! from them and from a [`Snapshot`] of the tables, in the Prometheus text format.

use std::sync::atomic::AtomicU64;
use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::state::CountersSnapshot;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PointProtocol {
    pub point: String,
    pub protocol: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginCode {
    pub plugin: String,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginLabel {
    pub plugin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PointLabel {
    pub point: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

/// What happened since start, counted where it happens.
pub struct Counters {
    refusals: Family<PluginCode, Counter>,
    plugin_faults: Family<PluginLabel, Counter>,
    slow_skipped: Family<PointLabel, Counter>,
    slow_dropped: Family<PointLabel, Counter>,
    reloads: Family<ResultLabel, Counter>,
    first_media: Histogram,
    access_log_dropped: Counter,
    recording_dropped: Family<PointLabel, Counter>,
}

static COUNTERS: LazyLock<Counters> = LazyLock::new(|| Counters {
    refusals: Family::default(),
    plugin_faults: Family::default(),
    slow_skipped: Family::default(),
    slow_dropped: Family::default(),
    reloads: Family::default(),
    first_media: Histogram::new([
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ]),
    access_log_dropped: Counter::default(),
    recording_dropped: Family::default(),
});

/// The host refused a request of `plugin`'s session with `code`.
pub fn refused(plugin: &str, code: &str) {
    COUNTERS
        .refusals
        .get_or_create(&PluginCode {
            plugin: plugin.to_owned(),
            code: code.to_owned(),
        })
        .inc();
}

pub fn plugin_fault(plugin: &str) {
    COUNTERS
        .plugin_faults
        .get_or_create(&PluginLabel {
            plugin: plugin.to_owned(),
        })
        .inc();
}

/// A live client fell behind on `point`: skipped ahead, or (`dropped`) disconnected.
pub fn slow_client(point: &str, dropped: bool) {
    let family = if dropped {
        &COUNTERS.slow_dropped
    } else {
        &COUNTERS.slow_skipped
    };
    family
        .get_or_create(&PointLabel {
            point: point.to_owned(),
        })
        .inc();
}

/// A configuration reload ended: `applied`, `partial`, `unchanged` or `invalid`.
pub fn reload(result: &str) {
    COUNTERS
        .reloads
        .get_or_create(&ResultLabel {
            result: result.to_owned(),
        })
        .inc();
}

/// Time from a play being accepted to its first media byte handed to the connection.
pub fn first_media(waited: Duration) {
    COUNTERS.first_media.observe(waited.as_secs_f64());
}

pub fn access_log_dropped() {
    COUNTERS.access_log_dropped.inc();
}

/// `bytes` of `point`'s recording were dropped (a slow or failed disk).
pub fn recording_dropped(point: &str, bytes: u64) {
    COUNTERS
        .recording_dropped
        .get_or_create(&PointLabel {
            point: point.to_owned(),
        })
        .inc_by(bytes);
}

/// The running state at scrape time.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    /// Sessions by point and protocol.
    pub clients: Vec<(PointProtocol, i64)>,
    /// Bytes sent since start by point and protocol, live sessions included.
    pub sent_bytes: Vec<(PointProtocol, u64)>,
    /// Each live point's source state (`waiting`, `live`, `source lost`, `ended`).
    pub source_states: Vec<(String, &'static str)>,
    /// Each live point's encoder reconnects within the grace since start.
    pub reconnects: Vec<(String, u64)>,
    /// Each live point's source bitrate, in bits per second.
    pub ingest_rates: Vec<(String, u64)>,
    /// Each live point's time without a source while holding clients, in seconds.
    pub source_lost: Vec<(String, f64)>,
    /// Each generation worth showing: plugin, generation number, role, sessions.
    pub generations: Vec<(String, u64, String, i64)>,
    /// The counters and gauges each plugin published, by plugin name.
    pub plugin_metrics: Vec<(String, CountersSnapshot)>,
}

const SOURCE_STATES: &[&str] = &["waiting", "live", "source lost", "ended"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PointState {
    point: String,
    state: String,
}

/// One metric a plugin published: the plugin and the metric's sanitised name.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginMetricLabels {
    plugin: String,
    name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GenerationLabels {
    plugin: String,
    generation: String,
    role: String,
}

/// The text exposition of every metric.
pub fn render(snapshot: &Snapshot) -> String {
    let mut registry = Registry::with_prefix("ferrocast");
    register_counters(&mut registry);
    let clients = Family::<PointProtocol, Gauge>::default();
    for (labels, count) in &snapshot.clients {
        clients.get_or_create(labels).set(*count);
    }
    registry.register("clients", "Sessions on a point, by protocol", clients);
    let sent = Family::<PointProtocol, Counter>::default();
    for (labels, bytes) in &snapshot.sent_bytes {
        sent.get_or_create(labels).inc_by(*bytes);
    }
    registry.register(
        "sent_bytes",
        "Bytes sent to clients, by point and protocol (sessions still playing included)",
        sent,
    );
    let states = Family::<PointState, Gauge>::default();
    for (point, current) in &snapshot.source_states {
        for state in SOURCE_STATES {
            let labels = PointState {
                point: point.clone(),
                state: (*state).to_owned(),
            };
            states
                .get_or_create(&labels)
                .set(i64::from(state == current));
        }
    }
    registry.register(
        "point_source_state",
        "1 for the current source state of each live point",
        states,
    );
    let reconnects = Family::<PointLabel, Gauge>::default();
    for (point, count) in &snapshot.reconnects {
        let labels = PointLabel {
            point: point.clone(),
        };
        reconnects.get_or_create(&labels).set(*count as i64);
    }
    registry.register(
        "point_encoder_reconnects",
        "Encoder reconnects within the grace, per live point",
        reconnects,
    );
    let rates = Family::<PointLabel, Gauge>::default();
    for (point, rate) in &snapshot.ingest_rates {
        let labels = PointLabel {
            point: point.clone(),
        };
        rates.get_or_create(&labels).set((*rate / 8) as i64);
    }
    registry.register(
        "point_ingest_bytes_per_second",
        "Bytes per second from each live point's source over the last second",
        rates,
    );
    let lost = Family::<PointLabel, Gauge<f64, AtomicU64>>::default();
    for (point, seconds) in &snapshot.source_lost {
        let labels = PointLabel {
            point: point.clone(),
        };
        lost.get_or_create(&labels).set(*seconds);
    }
    registry.register(
        "point_source_lost_seconds",
        "Time each live point held its clients without a source, since start",
        lost,
    );
    register_generations(&mut registry, &snapshot.generations);
    register_plugin_metrics(&mut registry, &snapshot.plugin_metrics);
    register_tls_expiries(&mut registry, std::time::SystemTime::now());
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
    to_prometheus_text(&text)
}

/// The classic Prometheus text format (0.0.4) from OpenMetrics text: a counter's HELP and
/// TYPE name its `_total` series, and there is no `# EOF`. Every Prometheus version and
/// `promtool check metrics` read it.
fn to_prometheus_text(open_metrics: &str) -> String {
    let counters: Vec<&str> = open_metrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut text = String::with_capacity(open_metrics.len());
    for line in open_metrics.lines().filter(|line| *line != "# EOF") {
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(&name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        text.push_str(renamed.as_deref().unwrap_or(line));
        text.push('\n');
    }
    text
}

/// Every TLS certificate serving now: (`[tls.<name>]`, its first DNS name, its expiry).
static TLS_EXPIRIES: std::sync::Mutex<Vec<(String, String, std::time::SystemTime)>> =
    std::sync::Mutex::new(Vec::new());

/// Replace the TLS certificates the expiry gauge reports.
pub fn set_tls_expiries(expiries: Vec<(String, String, std::time::SystemTime)>) {
    *TLS_EXPIRIES
        .lock()
        .unwrap_or_else(|poison| poison.into_inner()) = expiries;
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TlsCertLabels {
    set: String,
    name: String,
}

fn register_tls_expiries(registry: &mut Registry, now: std::time::SystemTime) {
    let expiries = TLS_EXPIRIES
        .lock()
        .unwrap_or_else(|poison| poison.into_inner())
        .clone();
    if expiries.is_empty() {
        return;
    }
    let gauge = Family::<TlsCertLabels, Gauge>::default();
    for (set, name, not_after) in expiries {
        let seconds = match not_after.duration_since(now) {
            Ok(left) => left.as_secs() as i64,
            Err(past) => -(past.duration().as_secs() as i64),
        };
        gauge
            .get_or_create(&TlsCertLabels { set, name })
            .set(seconds);
    }
    registry.register(
        "tls_cert_expiry_seconds",
        "Seconds until each TLS certificate expires (negative once expired)",
        gauge,
    );
}

fn register_counters(registry: &mut Registry) {
    let c = &*COUNTERS;
    registry.register(
        "refusals",
        "Requests the host refused, by plugin and error code",
        c.refusals.clone(),
    );
    registry.register(
        "plugin_faults",
        "Plugin panics (PLUGIN_FAULT)",
        c.plugin_faults.clone(),
    );
    registry.register(
        "slow_clients_skipped",
        "Live clients skipped ahead to a keyframe after falling behind",
        c.slow_skipped.clone(),
    );
    registry.register(
        "slow_clients_dropped",
        "Live clients disconnected for falling behind repeatedly",
        c.slow_dropped.clone(),
    );
    registry.register(
        "reloads",
        "Configuration reloads by result",
        c.reloads.clone(),
    );
    registry.register(
        "first_media_seconds",
        "Time from an accepted play to its first media byte",
        c.first_media.clone(),
    );
    registry.register(
        "access_log_dropped_lines",
        "Access log lines dropped because the writer fell behind",
        c.access_log_dropped.clone(),
    );
    registry.register(
        "recording_dropped_bytes",
        "Recording bytes dropped because the disk was too slow or failing, by point",
        c.recording_dropped.clone(),
    );
}

fn register_generations(registry: &mut Registry, generations: &[(String, u64, String, i64)]) {
    let sessions = Family::<GenerationLabels, Gauge>::default();
    let per_plugin = Family::<PluginLabel, Gauge>::default();
    for (plugin, generation, role, count) in generations {
        let labels = GenerationLabels {
            plugin: plugin.clone(),
            generation: generation.to_string(),
            role: role.clone(),
        };
        sessions.get_or_create(&labels).set(*count);
        let plugin = PluginLabel {
            plugin: plugin.clone(),
        };
        per_plugin.get_or_create(&plugin).inc();
    }
    registry.register(
        "plugin_sessions",
        "Sessions per plugin generation",
        sessions,
    );
    registry.register(
        "plugin_generations",
        "Loaded generations per plugin",
        per_plugin,
    );
}

/// A plugin's own name for a counter or gauge as a label value that any tool takes: ASCII
/// letters, digits and `_`; every other byte becomes `_`. (The host already refuses names that
/// are empty, too long or not printable ASCII.)
fn sanitised_metric_name(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// The counters and gauges plugins published, under the plugin's name. Two names that
/// sanitise alike share a series: counters add up, the last gauge wins.
fn register_plugin_metrics(registry: &mut Registry, plugins: &[(String, CountersSnapshot)]) {
    let counters = Family::<PluginMetricLabels, Counter>::default();
    let gauges = Family::<PluginMetricLabels, Gauge>::default();
    for (plugin, (counted, gauged)) in plugins {
        let labels = |name: &str| PluginMetricLabels {
            plugin: plugin.clone(),
            name: sanitised_metric_name(name),
        };
        for (name, value) in counted {
            counters.get_or_create(&labels(name)).inc_by(*value);
        }
        for (name, value) in gauged {
            gauges.get_or_create(&labels(name)).set(*value);
        }
    }
    // promtool refuses a type's name ("counter", "gauge") inside a metric name.
    registry.register(
        "plugin_events",
        "Counters a plugin publishes (host.count), by plugin and the plugin's name for it",
        counters,
    );
    registry.register(
        "plugin_value",
        "Gauges a plugin publishes (host.gauge), by plugin and the plugin's name for it",
        gauges,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_names_follow_the_conventions() {
        reload("applied");
        let live_http = PointProtocol {
            point: "live".into(),
            protocol: "http".into(),
        };
        let snapshot = Snapshot {
            clients: vec![(live_http.clone(), 2)],
            sent_bytes: vec![(live_http, 1000)],
            source_states: vec![("live".into(), "live")],
            reconnects: vec![("live".into(), 1)],
            ingest_rates: vec![("live".into(), 500_000)],
            source_lost: vec![("live".into(), 1.5)],
            generations: vec![("http".into(), 1, "current".into(), 2)],
            plugin_metrics: vec![(
                "http".into(),
                (
                    vec![("responses_200".into(), 3), ("a.b-c\"d".into(), 1)],
                    vec![("open".into(), -2)],
                ),
            )],
        };
        let text = render(&snapshot);
        assert!(
            text.contains("ferrocast_sent_bytes_total{point=\"live\",protocol=\"http\"} 1000\n"),
            "{text}"
        );
        assert!(
            text.contains("ferrocast_clients{point=\"live\",protocol=\"http\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("ferrocast_point_source_state{point=\"live\",state=\"live\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("ferrocast_point_source_state{point=\"live\",state=\"waiting\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("ferrocast_reloads_total{result=\"applied\"}"),
            "{text}"
        );
        assert!(
            text.contains("ferrocast_point_ingest_bytes_per_second{point=\"live\"} 62500"),
            "{text}"
        );
        assert!(
            text.contains("ferrocast_point_source_lost_seconds{point=\"live\"} 1.5"),
            "{text}"
        );
        assert!(
            text.contains("ferrocast_first_media_seconds_bucket"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE ferrocast_reloads_total counter\n"),
            "{text}"
        );
        assert!(!text.contains("# EOF"), "{text}");
        for line in [
            "ferrocast_plugin_events_total{plugin=\"http\",name=\"responses_200\"} 3\n",
            "ferrocast_plugin_events_total{plugin=\"http\",name=\"a_b_c_d\"} 1\n",
            "ferrocast_plugin_value{plugin=\"http\",name=\"open\"} -2\n",
            "# TYPE ferrocast_plugin_events_total counter\n",
            "# TYPE ferrocast_plugin_value gauge\n",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }

    #[test]
    fn plugin_metric_names_are_sanitised() {
        assert_eq!(sanitised_metric_name("responses_200"), "responses_200");
        assert_eq!(sanitised_metric_name("GET /a{b}=\"c\""), "GET__a_b___c_");
    }
}
