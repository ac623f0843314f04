//! Plugin counters: the HTTP plugin counts its responses by status, and `ferrocast status`
//! and the admin listener's `/metrics` show the counts under the plugin's name.

use std::time::{Duration, Instant};

use ferrocast_tests::admin::{config_with_admin, metric_sample, promtool_findings, scrape_metrics};
use ferrocast_tests::*;

#[test]
fn http_responses_by_status_show_in_status() {
    let (server, _plugins) = start_with_points(&standard_points());
    let address = server.http;
    assert_eq!(http_get(address, "/vod", 188).status, 200);
    for _ in 0..2 {
        assert_eq!(http_get(address, "/nope", 4096).status, 404);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = server.command(&["status"]);
        assert_eq!(status.code, Some(0), "{}", status.text);
        let lines: Vec<&str> = status.text.lines().collect();
        if lines.contains(&"counter http responses_200 1")
            && lines.contains(&"counter http responses_404 2")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "counters missing from status:\n{}",
            status.text
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn http_responses_by_status_show_in_metrics_under_the_plugin() {
    let plugins = standard_plugin_dir();
    let (http, admin) = (loopback(), loopback());
    // No tokens: allowed on loopback, and /metrics is then open.
    let config = config_with_admin(http, admin, &[], &standard_points());
    let server = Ferrocast::start(&config, plugins.path(), http);
    server.wait_for("admin API ready", Duration::from_secs(10));
    let scrape = || scrape_metrics(admin, None);
    let ok = "ferrocast_plugin_events_total{plugin=\"http\",name=\"responses_200\"}";
    let missing = "ferrocast_plugin_events_total{plugin=\"http\",name=\"responses_404\"}";
    let before = scrape();
    assert_eq!(metric_sample(&before, missing), None, "{before}");
    assert!(
        before.contains("# TYPE ferrocast_plugin_events_total counter\n"),
        "{before}"
    );

    assert_eq!(http_get(http, "/vod", 188).status, 200);
    for _ in 0..3 {
        assert_eq!(http_get(http, "/nope", 4096).status, 404);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        let text = scrape();
        if metric_sample(&text, ok) == Some(1.0) && metric_sample(&text, missing) == Some(3.0) {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "plugin counters missing from /metrics:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(promtool_findings(&after), "", "{after}");
}
