//! A listener that cannot bind is reported as PORT_IN_USE, naming the plugin and the address,
//! saying that another service holds it and how to fix it; the server then exits non-zero.

use std::net::TcpListener;
use std::time::Duration;

use ferrocast_tests::*;

#[test]
fn occupied_port_is_reported_with_the_fix_and_startup_fails() {
    let squatter = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = squatter.local_addr().unwrap();
    let plugins = standard_plugin_dir();
    let mut server = Ferrocast::spawn(
        &config_with(address, &standard_points()),
        plugins.path(),
        address,
    );
    let status = server.wait_exit(Duration::from_secs(15));
    assert!(!status.success(), "server must exit non-zero");
    let logs = server.logs();
    let event = logs
        .lines()
        .find(|l| l.contains("PORT_IN_USE"))
        .unwrap_or_else(|| panic!("no PORT_IN_USE event:\n{logs}"));
    for part in [
        "plugin=http".to_owned(),
        address.to_string(),
        "another service is already using this port".to_owned(),
        "choose another port".to_owned(),
        "bind a specific IP address".to_owned(),
    ] {
        assert!(event.contains(&part), "{part:?} missing from: {event}");
    }
    drop(squatter);
}
