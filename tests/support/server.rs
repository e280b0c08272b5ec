//! An in-process nestling server on an ephemeral loopback port.

use std::net::SocketAddr;
use std::time::Duration;

/// A nestling server serving on a background task. Shut down on drop.
pub struct RunningServer {
    /// Where it listens.
    pub addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), nestling::ServerError>>>,
}

impl RunningServer {
    /// Binds `server` to an ephemeral port on 127.0.0.1 and serves it until dropped or
    /// [`stop`](Self::stop)ped.
    pub async fn start(server: nestling::Server) -> Self {
        let listening = server
            .listen("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listening.local_addr();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(listening.serve_with_shutdown(async move {
            let _ = rx.await;
        }));
        Self {
            addr,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Shuts down gracefully and checks that serving ended without an error.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            match tokio::time::timeout(Duration::from_secs(30), task).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => panic!("server ended with an error: {e}"),
                Ok(Err(e)) => panic!("server task failed: {e}"),
                Err(_) => panic!("server did not shut down within 30 s"),
            }
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
