//! The command line: `nodedns [--config PATH]`, `nodedns check-config PATH`,
//! `nodedns print-default-config`, `nodedns doctor`, `nodedns probe ready|live`,
//! `nodedns top`.
//!
//! This module owns argument parsing, exit codes and the tracing subscriber. Running the
//! daemon is [`crate::app`]'s job.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;

use crate::config::{self, Config, LogFormat};

/// Exit code for a configuration file that does not validate (BSD `EX_USAGE`, as hickory-dns
/// and many daemons use for bad input).
pub const EXIT_BAD_CONFIG: u8 = 64;
/// `nodedns probe`: the process answered, but not 200 (e.g. not ready yet, or draining).
pub const EXIT_PROBE_FAILED: u8 = 1;
/// `nodedns probe`: no answer at all (no socket, nobody listening, timeout, garbage).
pub const EXIT_PROBE_UNREACHABLE: u8 = 2;
/// How long `nodedns probe` waits for the whole exchange; below the kubelet's timeout.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

#[derive(Debug, Parser)]
#[command(name = "nodedns", version, about = "Node-level DNS caching forwarder")]
struct Cli {
    /// Config file (TOML). Without it, the embedded default runs: 127.0.0.1:5353, upstreams
    /// from /etc/resolv.conf.
    #[arg(long, short = 'c', global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon (the default).
    Run,
    /// Validate a config file without binding anything; exit 0 or 64 with file:line:col.
    CheckConfig {
        /// The file to check.
        path: PathBuf,
    },
    /// Print the embedded default config (commented TOML).
    PrintDefaultConfig,
    /// Check, layer by layer, why a pod may fail to resolve: config, listeners, upstreams,
    /// a name through the cache, a pod's resolv.conf, the running daemon. Exit 0 when every
    /// check passes, 1 when one fails, 64 for a bad config file.
    Doctor {
        /// A name to resolve via each upstream and via nodedns (repeatable).
        #[arg(long = "name", value_name = "NAME")]
        names: Vec<String>,
        /// A pod's resolv.conf to analyse (e.g. copied out of a job pod); `-` reads it from
        /// standard input, piped from `kubectl exec POD -- cat /etc/resolv.conf`.
        #[arg(long, value_name = "PATH")]
        resolv_conf: Option<PathBuf>,
        /// Print the verdicts as one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Ask the nodedns of this pod, over its admin unix socket, whether it is ready or live:
    /// exit 0 and print the answer on 200, 1 on any other answer, 2 when nothing answers
    /// within 2 s. For the kubelet's exec probes.
    Probe {
        /// `ready` asks `/ready`, `live` asks `/health`.
        what: ProbeKind,
        /// The admin socket; default: `[admin] socket` of `--config` if given, else
        /// /run/nodedns/admin.sock.
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
    },
    /// Print the heaviest clients (by queries, by misses) and names (by NXDOMAIN, by
    /// SERVFAIL, search-list expansions) of the last seconds, as the running daemon counted
    /// them. Exit 1 when the daemon answers with an error, 2 when nothing answers.
    Top {
        /// The window, in seconds (resolution 10 s, at most 300).
        #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=300))]
        seconds: u64,
        /// Entries per table (at most 64).
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=64))]
        limit: u64,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// The admin TCP address; default: `[admin] address` of `--config` if given, else the
        /// admin socket /run/nodedns/admin.sock if it exists, else 127.0.0.1:9253.
        #[arg(long, value_name = "ADDR", conflicts_with = "socket")]
        admin: Option<std::net::SocketAddr>,
        /// The admin unix socket.
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ProbeKind {
    Ready,
    Live,
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Run) {
        Command::PrintDefaultConfig => {
            print!("{}", config::DEFAULT_TOML);
            ExitCode::SUCCESS
        }
        Command::CheckConfig { path } => check_config(&path),
        Command::Run => run(cli.config),
        Command::Doctor {
            names,
            resolv_conf,
            json,
        } => doctor(
            cli.config,
            &crate::doctor::Options { names, resolv_conf },
            json,
        ),
        Command::Probe { what, socket } => probe(cli.config.as_deref(), what, socket),
        Command::Top {
            seconds,
            limit,
            json,
            admin,
            socket,
        } => {
            let endpoint = match (admin, socket) {
                (Some(addr), _) => TopEndpoint::Tcp(addr),
                (None, Some(path)) => TopEndpoint::Unix(path),
                (None, None) => match top_endpoint(cli.config.as_deref()) {
                    Ok(e) => e,
                    Err(e) => {
                        eprintln!("{e}");
                        return ExitCode::from(EXIT_BAD_CONFIG);
                    }
                },
            };
            top(&endpoint, seconds, limit, json)
        }
    }
}

/// Where `nodedns top` asks.
enum TopEndpoint {
    Tcp(std::net::SocketAddr),
    Unix(PathBuf),
}

/// How long `nodedns top` waits for the report.
const TOP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The admin endpoint of `--config`, or of this pod (its socket), or the default address.
fn top_endpoint(config: Option<&std::path::Path>) -> Result<TopEndpoint, config::ConfigError> {
    let default_socket = std::path::Path::new(crate::admin::client::DEFAULT_SOCKET);
    let cfg = match config {
        Some(path) => config::load_file(path)?,
        None if default_socket.exists() => return Ok(TopEndpoint::Unix(default_socket.into())),
        None => config::embedded_default()?,
    };
    Ok(match (cfg.admin.address, cfg.admin.socket) {
        (Some(addr), _) => TopEndpoint::Tcp(addr),
        (None, Some(path)) => TopEndpoint::Unix(path),
        (None, None) => TopEndpoint::Unix(default_socket.into()),
    })
}

fn top(endpoint: &TopEndpoint, seconds: u64, limit: u64, json: bool) -> ExitCode {
    use crate::admin::client::{Endpoint, get_from};
    let endpoint = match endpoint {
        TopEndpoint::Tcp(addr) => Endpoint::Tcp(*addr),
        TopEndpoint::Unix(path) => Endpoint::Unix(path),
    };
    let route = format!("/top?seconds={seconds}&n={limit}");
    let answer = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
        .and_then(|rt| {
            rt.block_on(get_from(endpoint, &route, TOP_TIMEOUT))
                .map_err(|e| e.to_string())
        });
    let report = match answer {
        Ok(a) if a.status == 200 => serde_json::from_str::<crate::top::Report>(&a.body)
            .map_err(|e| format!("{endpoint}: the answer to {route} is no report: {e}")),
        Ok(a) => {
            eprintln!(
                "nodedns top: {endpoint} answered {}: {}",
                a.status,
                a.body.trim()
            );
            return ExitCode::from(EXIT_PROBE_FAILED);
        }
        Err(e) => Err(e),
    };
    match report {
        Ok(r) if json => {
            println!("{}", r.to_json());
            ExitCode::SUCCESS
        }
        Ok(r) => {
            print!("{}", r.to_text());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("nodedns top: {e}");
            ExitCode::from(EXIT_PROBE_UNREACHABLE)
        }
    }
}

fn probe(config: Option<&std::path::Path>, what: ProbeKind, socket: Option<PathBuf>) -> ExitCode {
    let socket = match (socket, config) {
        (Some(path), _) => path,
        (None, Some(config)) => match config::load_file(config) {
            Ok(cfg) => cfg
                .admin
                .socket
                .unwrap_or_else(|| crate::admin::client::DEFAULT_SOCKET.into()),
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(EXIT_BAD_CONFIG);
            }
        },
        (None, None) => crate::admin::client::DEFAULT_SOCKET.into(),
    };
    let (name, route) = match what {
        ProbeKind::Ready => ("ready", "/ready"),
        ProbeKind::Live => ("live", "/health"),
    };
    let answer = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
        .and_then(|rt| {
            rt.block_on(crate::admin::client::get(&socket, route, PROBE_TIMEOUT))
                .map_err(|e| e.to_string())
        });
    match answer {
        Ok(a) if a.status == 200 => {
            print!("{}", a.body);
            ExitCode::SUCCESS
        }
        Ok(a) => {
            let body = a.body.trim();
            eprintln!(
                "nodedns probe {name}: {} answered {}: {body}",
                socket.display(),
                a.status
            );
            ExitCode::from(EXIT_PROBE_FAILED)
        }
        Err(e) => {
            eprintln!("nodedns probe {name}: {e}");
            ExitCode::from(EXIT_PROBE_UNREACHABLE)
        }
    }
}

fn load(path: Option<&std::path::Path>) -> Result<Config, config::ConfigError> {
    match path {
        Some(p) => config::load_file(p),
        None => config::embedded_default(),
    }
}

fn doctor(path: Option<PathBuf>, opts: &crate::doctor::Options, json: bool) -> ExitCode {
    let cfg = match load(path.as_deref()) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    let source = path.map_or_else(
        || "(embedded default)".to_owned(),
        |p| p.display().to_string(),
    );
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("nodedns doctor: {e}");
            return ExitCode::FAILURE;
        }
    };
    let report = runtime.block_on(crate::doctor::run(&cfg, &source, opts));
    if json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_text());
    }
    if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn check_config(path: &std::path::Path) -> ExitCode {
    match config::load_file(path) {
        Ok(cfg) => {
            let zones: Vec<&str> = cfg.zones.iter().map(|z| z.name.as_str()).collect();
            println!(
                "{}: ok ({} listen address(es), zones: {})",
                path.display(),
                cfg.listen.addresses.len(),
                zones.join(" ")
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(EXIT_BAD_CONFIG)
        }
    }
}

fn run(path: Option<PathBuf>) -> ExitCode {
    let cfg = match load(path.as_deref()) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    init_tracing(&cfg);
    let source = match path {
        Some(p) => crate::reload::ConfigSource::File(p),
        None => crate::reload::ConfigSource::Embedded,
    };
    match crate::app::run_blocking(cfg, source) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("nodedns: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Sets up logging: `RUST_LOG` wins over `[log] level`, so an operator can raise verbosity
/// for one run without editing the ConfigMap.
fn init_tracing(cfg: &Config) {
    // A RUST_LOG that `log.level` would refuse is passed over, for the same reasons (see
    // `config::is_plain_log_filter`).
    let filter = std::env::var(EnvFilter::DEFAULT_ENV)
        .ok()
        .filter(|v| crate::config::is_plain_log_filter(v))
        .and_then(|v| EnvFilter::try_new(v).ok())
        .or_else(|| EnvFilter::try_new(&cfg.log.level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cfg.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
