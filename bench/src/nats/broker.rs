//! A throw-away `nats-server` for the NATS scenarios: on a free loopback port, no
//! persistence, killed when the handle drops.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Broker {
    pub port: u16,
    child: Child,
}

impl Broker {
    /// Starts `nats-server` on `127.0.0.1:<free port>`. `cores` (e.g. `0,1`) undoes the
    /// bench's own pinning for it: it runs beside both the server under test and the load
    /// generator, as nothing else is free on a 2-core machine.
    pub fn start(cores: Option<&str>) -> Result<Broker, String> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(|e| format!("no free port: {e}"))?;
        let port_text = port.to_string();
        let server_args = ["-a", "127.0.0.1", "-p", &port_text];
        let mut cmd = match cores {
            Some(cores) => {
                let mut c = Command::new("taskset");
                c.args(["-c", cores, "nats-server"]);
                c
            }
            None => Command::new("nats-server"),
        };
        let child = cmd
            .args(server_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start nats-server ({e}); apt-get install nats-server"))?;
        let mut broker = Broker { port, child };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = broker.child.try_wait() {
                return Err(format!("nats-server exited with {status} while starting"));
            }
            if started.elapsed() > Duration::from_secs(10) {
                return Err(format!("nats-server did not listen on {port} within 10 s"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(broker)
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
