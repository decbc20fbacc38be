//! nodedns in-process for tests: built from a TOML string, bound on 127.0.0.1 port 0 (the
//! admin endpoint too, when the config asks for one).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use nodedns::Resolver;
use nodedns::Server;
use nodedns::Stats;
use nodedns::{ConfigSource, Control};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running nodedns. Dropping it stops the server.
pub struct Nodedns {
    pub addr: SocketAddr,
    /// The admin endpoint's address, when the config enables it.
    pub admin: Option<SocketAddr>,
    pub handler: Arc<Resolver>,
    /// Asks for a reload; works when started with [`Nodedns::start_file`].
    pub control: Control,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

/// The config every test starts from: one worker on 127.0.0.1:0, no admin listener, and
/// `zones` appended (TOML `[[zones]]` tables).
pub fn config(extra: &str) -> String {
    format!(
        "[listen]\naddresses = [\"127.0.0.1:0\"]\nworkers = 1\ndrain_timeout = \"2s\"\n\
         [admin]\naddress = \"\"\n{extra}\n"
    )
}

/// Like [`config`], with the admin endpoint on 127.0.0.1 port 0.
pub fn config_with_admin(extra: &str) -> String {
    config(extra).replace(
        "[admin]\naddress = \"\"",
        "[admin]\naddress = \"127.0.0.1:0\"",
    )
}

/// A zone table forwarding `name` to `upstreams`.
pub fn zone(name: &str, upstreams: &[SocketAddr], extra: &str) -> String {
    let list: Vec<String> = upstreams.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        "[[zones]]\nname = \"{name}\"\nupstreams = [{}]\n{extra}\n",
        list.join(", ")
    )
}

impl Nodedns {
    /// Parses `toml` and serves it on the current runtime.
    pub async fn start(toml: &str) -> Nodedns {
        let cfg = nodedns::config::parse_str(toml, "test.toml").unwrap();
        Nodedns::serve(Server::bind(&cfg).unwrap())
    }

    /// Serves the config file at `path`, reloading it on request and checking it (and the
    /// resolv.conf files it names) for changes every `watch`.
    pub async fn start_file(path: &Path, watch: Duration) -> Nodedns {
        let cfg = nodedns::config::load_file(path).unwrap();
        let server = Server::bind(&cfg)
            .unwrap()
            .with_source(ConfigSource::File(path.to_path_buf()), watch);
        Nodedns::serve(server)
    }

    fn serve(server: Server) -> Nodedns {
        let addr = server.local_addrs()[0];
        let admin = server.admin_addr();
        let control = server.control();
        let handler = server.resolver().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move {
            let _ = stopped.await;
        }));
        Nodedns {
            addr,
            admin,
            handler,
            control,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// A nodedns forwarding everything to `upstreams` with `extra` appended to the zone.
    pub async fn forwarding_to(upstreams: &[SocketAddr], extra: &str) -> Nodedns {
        Nodedns::start(&config(&zone(".", upstreams, extra))).await
    }

    /// Waits (up to 10 s of real time) until every zone has an upstream that answered its
    /// start-up probe, so a test that counts upstream traffic or connections starts after it.
    pub async fn probed(&self) {
        let until = std::time::Instant::now() + Duration::from_secs(10);
        while self.handler.unanswered_zone().is_some() {
            assert!(
                std::time::Instant::now() < until,
                "start-up probes unanswered: {:?}",
                self.handler.unanswered_zone()
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    pub fn stats(&self) -> &Stats {
        self.handler.stats()
    }

    /// Signals shutdown without waiting for the drain (see [`Nodedns::shutdown`]).
    pub fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Stops serving and waits for the drain to finish.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Nodedns {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
