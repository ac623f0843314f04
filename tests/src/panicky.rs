//! The `panicky` fixture plugin (`tests/fixtures/panic-plugin`): a server running it on a
//! port of its own, and a client of its line protocol (`hello` → `hi`, `version` → its crate
//! version, `boom` → a panic inside the plugin).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::{built_library, config_with, loopback, plugin_dir, standard_points, Ferrocast};
use tempfile::TempDir;

/// The name the fixture is installed under in a plugin directory.
pub const PANICKY: &str = "libferrocast_panicky.so";

/// A server with the HTTP plugin and `panicky` 0.1.0 listening on a port of its own, with
/// `settings` (TOML lines) in `[plugins.panicky]`. The plugin directory must outlive the
/// server, so it is returned too, with the fixture's address.
pub fn panicky_server_with(settings: &str) -> (Ferrocast, TempDir, SocketAddr) {
    let plugins = plugin_dir(&[
        (
            "libferrocast_http.so",
            &built_library("libferrocast_http.so"),
        ),
        (PANICKY, &built_library("libfixture_panic.so")),
    ]);
    let http = loopback();
    let panicky = loopback();
    let config = format!(
        "{}\n[plugins.panicky]\nlisten = [\"{panicky}\"]\n{settings}",
        config_with(http, &standard_points())
    );
    let server = Ferrocast::start(&config, plugins.path(), http);
    server.wait_for(
        &format!("panicky    listening on {panicky}"),
        Duration::from_secs(10),
    );
    (server, plugins, panicky)
}

/// [`panicky_server_with`] without settings.
pub fn panicky_server() -> (Ferrocast, TempDir, SocketAddr) {
    panicky_server_with("")
}

/// A client of the `panicky` line protocol; reads wait 5 s at most.
pub struct LineClient {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl LineClient {
    pub fn connect(address: SocketAddr) -> Self {
        let stream = TcpStream::connect_timeout(&address, Duration::from_secs(5)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        Self { stream, reader }
    }

    /// Send `command` as one line.
    pub fn send(&mut self, command: &str) {
        self.stream
            .write_all(format!("{command}\n").as_bytes())
            .expect("send a line");
    }

    /// The next line, with its newline (empty at the end of the stream).
    pub fn read_line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("read the answer");
        line
    }

    /// Everything until the server closes the connection.
    pub fn read_to_end(&mut self) -> std::io::Result<Vec<u8>> {
        let mut rest = Vec::new();
        self.reader.read_to_end(&mut rest).map(|_| rest)
    }

    /// Send `command` and return the answer line, without its newline.
    pub fn ask(&mut self, command: &str) -> String {
        self.send(command);
        let line = self.read_line();
        assert!(line.ends_with('\n'), "no answer to {command:?}: {line:?}");
        line.trim_end().to_owned()
    }

    pub fn version(&mut self) -> String {
        self.ask("version")
    }
}
