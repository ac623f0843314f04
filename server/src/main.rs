//! The `ferrocast` command: run the server, check a configuration file, talk to a running
//! server (reload, status, drain) through its admin API (with a token) or its control socket,
//! or make password hashes and signed URLs for the access rules.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ferrocast::access::cli as access;
use ferrocast::admin::client::{AdminClient, AdminClientError};
use ferrocast::config::{self, Config, LogFormat};

use ferrocast::plugins::PluginRegistry;
use ferrocast::reload::control::{self, DrainTarget, Request};
use ferrocast::scaffold;
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
    /// Control socket of the running server; overrides [server] control_socket (and then the
    /// admin API is not used).
    #[arg(long, value_name = "PATH", global = true)]
    control_socket: Option<PathBuf>,
    /// Token for the running server's admin API ([admin] listen of --config); default: the
    /// FERROCAST_ADMIN_TOKEN environment variable. Without one, commands use the control
    /// socket.
    #[arg(long, value_name = "TOKEN", global = true)]
    admin_token: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

/// Commands for a running server (reached through its admin API when one is configured and a
/// token is given, else through its control socket).
#[derive(Subcommand, Debug)]
enum Command {
    /// Reload the configuration file and pick up new plugin builds, while clients keep
    /// playing. Exits 1 if anything was refused (the reasons are printed).
    Reload {
        /// Only look for new plugin builds in the plugin directory.
        #[arg(long)]
        plugins_only: bool,
    },
    /// Print points, plugin generations with their session counts, and listeners.
    Status,
    /// Deny new sessions on a point or a plugin; existing sessions continue.
    Drain {
        #[arg(value_enum)]
        target: Target,
        name: String,
    },
    /// Work with the configuration file.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Read a token on standard input and print its argon2 hash, for `[admin] tokens`.
    HashToken,
    /// Accept new sessions again after `drain`.
    Undrain {
        #[arg(value_enum)]
        target: Target,
        name: String,
    },
    #[command(flatten)]
    Offline(Offline),
    /// Work on plugins; needs no server and no configuration file.
    Plugin {
        #[command(subcommand)]
        action: PluginAction,
    },
}

#[derive(Subcommand, Debug)]
enum PluginAction {
    /// Write a new out-of-tree plugin crate (settings, a line-protocol session, a test with
    /// MockHost, a README) that builds with `cargo build --release`.
    New {
        /// Plugin name: lowercase letters, digits and `_`; the library is
        /// `libferrocast_<NAME>.so`.
        name: String,
        /// Directory to create for the crate; default: ./ferrocast-<NAME>.
        #[arg(long, value_name = "D")]
        dir: Option<PathBuf>,
        /// Depend on this `plugin-api` checkout instead of the crates.io release.
        #[arg(long, value_name = "P")]
        api_path: Option<PathBuf>,
    },
}

/// Commands that work offline, for the access rules.
#[derive(Subcommand, Debug)]
enum Offline {
    /// Read a password or stream key (a prompt, or the first line of standard input) and
    /// print its argon2id hash, for `keys` or `users` in the configuration.
    HashPassword,
    /// Print a signed, expiring query string (or URL, with --base-url) for a point whose
    /// players need one (`play = { signed = true }`).
    SignUrl {
        /// The point the URL plays.
        #[arg(long)]
        point: String,
        /// How long the URL works: 90s, 30m, 1h, 2d.
        #[arg(long, default_value = "1h")]
        expires_in: String,
        /// Only this client address may use the URL.
        #[arg(long)]
        ip: Option<std::net::IpAddr>,
        /// A file holding the signing key; default: [security] url_signing_key of --config.
        #[arg(long, value_name = "FILE")]
        key_file: Option<PathBuf>,
        /// e.g. http://media.example.com:8080, to print the whole URL.
        #[arg(long)]
        base_url: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum ConfigAction {
    /// Print the effective configuration: every default filled in, every path resolved.
    Show,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Target {
    Point,
    Plugin,
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
    if let Some(Command::Offline(command)) = &cli.command {
        return run_offline(&cli, command);
    }
    if let Some(Command::HashToken) = &cli.command {
        return hash_token();
    }
    if let Some(Command::Plugin { action }) = &cli.command {
        return run_plugin_action(action);
    }
    let show_config = matches!(&cli.command, Some(Command::Config { .. }));
    if let Some(command) = cli.command.as_ref().filter(|_| !show_config) {
        return send_command(&cli, command);
    }
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

    if show_config {
        let socket = config
            .server
            .control_socket
            .clone()
            .unwrap_or_else(|| control::default_socket_path(&config.path));
        print!("{}", config::effective_toml(&config, &socket));
        return Ok(ExitCode::SUCCESS);
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
    runtime.block_on(serve(config, registry, cli.control_socket.clone()))
}

fn run_offline(cli: &Cli, command: &Offline) -> anyhow::Result<ExitCode> {
    let printed = match command {
        Offline::HashPassword => access::hash_password()?,
        Offline::SignUrl {
            point,
            expires_in,
            ip,
            key_file,
            base_url,
        } => {
            let request = access::SignRequest {
                point,
                expires_in,
                ip: *ip,
                base_url: base_url.as_deref(),
            };
            access::sign_url(&request, key_file.as_deref(), &cli.config)?
        }
    };
    println!("{printed}");
    Ok(ExitCode::SUCCESS)
}

/// Send `command` to the running server and print its answer: through the admin API when
/// `[admin] listen` is configured and a token is given (unless --control-socket is), else, or
/// if the API cannot be reached, through the control socket.
fn send_command(cli: &Cli, command: &Command) -> anyhow::Result<ExitCode> {
    let request = control_request(command)?;
    let reply = match &cli.control_socket {
        Some(path) => control::request(path, &request)?,
        None => {
            let text = std::fs::read_to_string(&cli.config).with_context(|| {
                format!(
                    "cannot read configuration file {} to find the server's control socket; pass --config FILE or --control-socket PATH",
                    cli.config.display()
                )
            })?;
            let early = peek_server_section(&cli.config, &text);
            let api = early.admin_listen.zip(admin_token(cli));
            let via_api = api.and_then(|(listen, token)| {
                let client = AdminClient::new(listen, token);
                match client.request(&request) {
                    Err(error @ AdminClientError::Connect { .. }) => {
                        eprintln!("ferrocast: {error}; using the control socket");
                        None
                    }
                    answered => Some(answered),
                }
            });
            match via_api {
                Some(answered) => answered?,
                None => {
                    let socket = early
                        .control_socket
                        .unwrap_or_else(|| control::default_socket_path(&cli.config));
                    control::request(&socket, &request)?
                }
            }
        }
    };
    print!("{}", reply.text);
    Ok(if reply.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `--admin-token`, else FERROCAST_ADMIN_TOKEN; an empty token counts as none.
fn admin_token(cli: &Cli) -> Option<String> {
    cli.admin_token
        .clone()
        .or_else(|| std::env::var(ADMIN_TOKEN_VARIABLE).ok())
        .map(|token| token.trim().to_owned())
        .filter(|token| !token.is_empty())
}

/// The environment variable holding the admin API token for the control commands.
const ADMIN_TOKEN_VARIABLE: &str = "FERROCAST_ADMIN_TOKEN";

/// What a control command asks the server.
fn control_request(command: &Command) -> anyhow::Result<Request> {
    let drain = |target: &Target, name: &String, on: bool| Request::Drain {
        target: match target {
            Target::Point => DrainTarget::Point,
            Target::Plugin => DrainTarget::Plugin,
        },
        name: name.clone(),
        on,
    };
    Ok(match command {
        Command::Reload {
            plugins_only: false,
        } => Request::Reload,
        Command::Reload { plugins_only: true } => Request::ReloadPlugins,
        Command::Status => Request::Status,
        Command::Drain { target, name } => drain(target, name, true),
        Command::Undrain { target, name } => drain(target, name, false),
        Command::Offline(_)
        | Command::HashToken
        | Command::Plugin { .. }
        | Command::Config { .. } => {
            anyhow::bail!("this command does not talk to a running server")
        }
    })
}

/// `ferrocast plugin …`.
fn run_plugin_action(action: &PluginAction) -> anyhow::Result<ExitCode> {
    let PluginAction::New {
        name,
        dir,
        api_path,
    } = action;
    let dir = dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("ferrocast-{name}")));
    let api = match api_path {
        Some(path) => scaffold::ApiSource::Path(
            std::path::absolute(path)
                .with_context(|| format!("cannot resolve --api-path {}", path.display()))?,
        ),
        None => scaffold::ApiSource::Registry,
    };
    scaffold::create(name, &dir, &api)?;
    println!(
        "created plugin `{name}` in {}; build it with `cargo build --release` there and see its README.md",
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Print the hash of the token given on standard input (first line, whitespace trimmed).
fn hash_token() -> anyhow::Result<ExitCode> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("cannot read the token from standard input")?;
    let token = line.trim();
    if token.is_empty() {
        anyhow::bail!("no token on standard input; e.g. `openssl rand -hex 32 | tee token.txt | ferrocast hash-token`");
    }
    println!("{}", ferrocast::admin::auth::hash_token(token)?);
    Ok(ExitCode::SUCCESS)
}

/// Run the server until a shutdown signal; `control_socket` is `--control-socket`.
async fn serve(
    config: Config,
    registry: PluginRegistry,
    control_socket: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let points: Vec<(String, &'static str, String)> = config
        .points
        .iter()
        .map(|p| (p.name.clone(), p.kind.as_str(), p.protocols.join(", ")))
        .collect();
    let server = match Server::start_with_control(config, registry, control_socket).await {
        Ok(server) => server,
        Err(error) => {
            eprintln!("ferrocast: {error}; exiting");
            return Ok(ExitCode::FAILURE);
        }
    };
    for (plugin, address) in server.local_addresses() {
        println!("{plugin:<10} listening on {address}");
    }
    for (name, kind, protocols) in points {
        println!("point {name:<12} {kind:<10} via {protocols}");
    }
    if let Some(address) = server.admin_address() {
        println!("admin      listening on {address}");
    }
    println!("control  socket {}", server.control_socket().display());
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
    control_socket: Option<PathBuf>,
    /// `[admin] listen`, for the control commands to reach the admin API.
    admin_listen: Option<std::net::SocketAddr>,
}

fn peek_server_section(config_path: &Path, text: &str) -> EarlySettings {
    let server = text.parse::<toml_edit::DocumentMut>().ok().and_then(|doc| {
        doc.get("server").and_then(|s| s.as_table_like()).map(|t| {
            let string = |key: &str| t.get(key).and_then(|v| v.as_str()).map(str::to_owned);
            (
                string("log_format"),
                string("plugin_dir"),
                string("control_socket"),
            )
        })
    });
    let (log_format, plugin_dir, control_socket) = server.unwrap_or_default();
    // An [admin] table without `listen` listens on the default address.
    let admin_listen = text.parse::<toml_edit::DocumentMut>().ok().and_then(|doc| {
        let admin = doc.get("admin")?.as_table_like()?;
        let listen = match admin.get("listen") {
            Some(listen) => listen.as_str()?,
            None => config::DEFAULT_ADMIN_LISTEN,
        };
        listen.parse().ok()
    });
    let base = config_path.parent().unwrap_or(Path::new("."));
    EarlySettings {
        log_format: match log_format.as_deref() {
            Some("json") => LogFormat::Json,
            _ => LogFormat::Text,
        },
        plugin_dir: plugin_dir.map(|dir| base.join(dir)),
        control_socket: control_socket.map(|path| base.join(path)),
        admin_listen,
    }
}
