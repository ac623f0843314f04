//! Benchmark: what HTTPS costs the server next to plain HTTP, for the same live stream and
//! the same number of clients.
//!
//! `cargo bench -p ferrocast-tests --bench tls_fanout` (`FANOUT_CLIENTS=n` for other than 100
//! clients). It starts the real server (release build) with one plain and one TLS listener of
//! the HTTP plugin, pushes the shipped sample to `live` in real time, and attaches the same
//! number of `curl` clients first over `http://`, then over `https://` (certificates made at
//! run time, ECDSA P-256). For each, after the clients settle, it reads the server's CPU time
//! (user + system, from /proc) over a fixed window: the figure is CPU seconds per wall second
//! (1.0 is one core busy), and what one client costs.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ferrocast_tests::bench;
use ferrocast_tests::*;

const DEFAULT_CLIENTS: usize = 100;
const SETTLE: Duration = Duration::from_secs(3);
const WINDOW: Duration = Duration::from_secs(10);

/// The server's CPU time so far (user + system), from /proc.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc stat");
    // Fields after the command name (which may hold spaces), from field 3 on.
    let after = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf only reads a constant of the system.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_millis(ticks * 1000 / per_second)
}

fn start_clients(url: &str, count: usize, ca: &Path) -> Vec<Child> {
    (0..count)
        .map(|_| {
            Command::new("curl")
                .args(["-s", "-o", "/dev/null", "--max-time", "60", "--cacert"])
                .arg(ca)
                .arg(url)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start curl")
        })
        .collect()
}

/// CPU seconds per wall second of the server while `count` clients play `url`.
fn measure(server: &Ferrocast, url: &str, count: usize, ca: &Path) -> f64 {
    let mut clients = start_clients(url, count, ca);
    std::thread::sleep(SETTLE);
    let (cpu_before, started) = (cpu_time(server.pid()), Instant::now());
    std::thread::sleep(WINDOW);
    let used = cpu_time(server.pid()) - cpu_before;
    let load = used.as_secs_f64() / started.elapsed().as_secs_f64();
    let still_playing = clients
        .iter_mut()
        .map(|client| client.try_wait())
        .filter(|status| matches!(status, Ok(None)))
        .count();
    for client in &mut clients {
        let _ = client.kill();
        let _ = client.wait();
    }
    if still_playing < count {
        println!(
            "  ({} of {count} clients ended early)",
            count - still_playing
        );
    }
    std::thread::sleep(Duration::from_secs(1));
    load
}

fn write_certificates(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    // Distinct names: a certificate whose issuer and subject match reads as self-signed.
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "fan-out CA");
    let ca = ca_params.self_signed(&ca_key).expect("CA");
    let key = rcgen::KeyPair::generate().expect("server key");
    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "fan-out server");
    let cert = params
        .signed_by(&key, &ca, &ca_key)
        .expect("server certificate");
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("server.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
    (dir.join("server.pem"), dir.join("server.key"))
}

fn main() {
    if !bench::requested("tls_fanout") {
        return;
    }
    let clients = bench::runs("FANOUT_CLIENTS", DEFAULT_CLIENTS, 2000);
    bench::ensure_fd_limit("tls_fanout", clients * 2 + 64, 65_536, "FANOUT_FD_RAISED");
    bench::build_release_server();

    let certs = tempfile::tempdir().expect("temp dir");
    let (cert, key) = write_certificates(certs.path());
    let ca = certs.path().join("ca.pem");
    let plugins = standard_plugin_dir();
    let (plain, https) = (loopback(), loopback());
    let config = format!(
        "[tls.main]\ncert = \"{}\"\nkey = \"{}\"\n\n[plugins.http]\nlisten = [\"{plain}\", {{ address = \"{https}\", tls = \"main\" }}]\n\n{}",
        cert.display(),
        key.display(),
        bench::long_grace_points()
    );
    let server = Ferrocast::start(&config, plugins.path(), plain);
    let feed = bench::Feed::load();
    let _encoder = feed.start(server.http);
    wait_until_live(server.http, "/live", Duration::from_secs(15));

    let idle = measure(&server, &format!("http://{plain}/live"), 0, &ca);
    let http = measure(&server, &format!("http://{plain}/live"), clients, &ca);
    let tls = measure(
        &server,
        &format!("https://127.0.0.1:{}/live", https.port()),
        clients,
        &ca,
    );
    let per_client = |load: f64| (load - idle) / clients as f64 * 1000.0;
    println!(
        "\nfan-out of one live stream to {clients} curl clients, server CPU (1.0 = one core)\n"
    );
    println!("{:>8} {:>10} {:>22}", "", "CPU", "per client (m-cores)");
    println!("{:>8} {:>10.3} {:>22}", "idle", idle, "");
    println!("{:>8} {:>10.3} {:>22.3}", "http", http, per_client(http));
    println!("{:>8} {:>10.3} {:>22.3}", "https", tls, per_client(tls));
    if http > idle {
        println!(
            "\nHTTPS costs {:.2}× plain HTTP per client.",
            per_client(tls) / per_client(http)
        );
    }
}
