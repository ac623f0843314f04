//! The `ferrocast` command: run the server, or check a configuration file.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use ferrocast::config::{self, Config, LogFormat};

use ferrocast::plugins::PluginRegistry;
use ferrocast::server::Server;
use tracing_subscriber::EnvFilter;

/// ferrocast: a plugin-based streaming media server (MPEG-TS over HTTP, RTSP, TCP and UDP).
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// Configuration file.
    #[arg(short, long, default_value = "config/ferrocast.toml")]
    config: PathBuf,
    /// Validate FILE (plugins included) and exit: 0 if it is valid, 1 with every error if not.
    #[arg(long, value_name = "FILE")]
    check_config: Option<PathBuf>,
    /// Directory of plugin libraries; overrides [server] plugin_dir.
    #[arg(long, value_name = "DIR")]
    plugin_dir: Option<PathBuf>,
    /// Print the plugins found in the plugin directory and exit.
    #[arg(long)]
    list_plugins: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("ferrocast: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let config_path = cli
        .check_config
        .clone()
        .unwrap_or_else(|| cli.config.clone());
    let text = std::fs::read_to_string(&config_path).with_context(|| {
        format!(
            "cannot read configuration file {}; pass --config FILE or run from the ferrocast directory",
            config_path.display()
        )
    })?;
    let early = peek_server_section(&config_path, &text);
    init_logging(early.log_format);

    let plugin_dir = cli
        .plugin_dir
        .clone()
        .or(early.plugin_dir)
        .map_or_else(default_plugin_dir, Ok)?;
    let registry = PluginRegistry::load_dir(&plugin_dir)?;

    if cli.list_plugins {
        print!("{}", registry.summary());
        return Ok(ExitCode::SUCCESS);
    }

    let config = match config::compile(&config_path, &text, &registry) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!(
                "ferrocast: {} error(s) in {}; nothing was started",
                errors.0.len(),
                config_path.display()
            );
            return Ok(ExitCode::FAILURE);
        }
    };
    for warning in &config.warnings {
        eprintln!("warning: {warning}");
    }

    if cli.check_config.is_some() {
        println!(
            "{}: OK ({} plugin(s) configured, {} publishing point(s))",
            config_path.display(),
            config.plugins.len(),
            config.points.len()
        );
        return Ok(ExitCode::SUCCESS);
    }

    print!("{}", registry.summary());
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(serve(config, registry))
}

async fn serve(config: Config, registry: PluginRegistry) -> anyhow::Result<ExitCode> {
    let server = match Server::start(&config, &registry).await {
        Ok(server) => server,
        Err(error) => {
            eprintln!("ferrocast: {error}; exiting");
            return Ok(ExitCode::FAILURE);
        }
    };
    for (plugin, address) in server.local_addresses() {
        println!("{plugin:<10} listening on {address}");
    }
    for point in &config.points {
        println!(
            "point {:<12} {:<10} via {}",
            point.name,
            point.kind.as_str(),
            point.protocols.join(", ")
        );
    }
    server.run(shutdown_signal()).await;
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}

/// Plugins are looked for next to the executable by default, where `cargo build` puts them.
fn default_plugin_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot locate the ferrocast executable")?;
    Ok(exe.parent().unwrap_or(Path::new(".")).to_owned())
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// What is needed before the configuration can be compiled: the log format, and where the
/// plugins are (compiling needs them to validate plugin names and settings). Anything invalid
/// is ignored here; the full compile reports it.
struct EarlySettings {
    log_format: LogFormat,
    plugin_dir: Option<PathBuf>,
}

fn peek_server_section(config_path: &Path, text: &str) -> EarlySettings {
    let server = text.parse::<toml_edit::DocumentMut>().ok().and_then(|doc| {
        doc.get("server").and_then(|s| s.as_table_like()).map(|t| {
            let string = |key: &str| t.get(key).and_then(|v| v.as_str()).map(str::to_owned);
            (string("log_format"), string("plugin_dir"))
        })
    });
    let (log_format, plugin_dir) = server.unwrap_or_default();
    let base = config_path.parent().unwrap_or(Path::new("."));
    EarlySettings {
        log_format: match log_format.as_deref() {
            Some("json") => LogFormat::Json,
            _ => LogFormat::Text,
        },
        plugin_dir: plugin_dir.map(|dir| base.join(dir)),
    }
}
