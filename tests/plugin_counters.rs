//! Plugin counters: the HTTP plugin counts its responses by status, and `ferrocast status`
//! shows the counts under the plugin's name.

use std::time::{Duration, Instant};

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
