//! # `nestling` — a command-line client for NestJS microservices
//!
//! What `grpcurl` is for gRPC, `nestling` is for `@nestjs/microservices` over
//! `Transport.TCP`, `Transport.NATS` and `Transport.RMQ`: it speaks Nest's wire (over TCP,
//! `<len>#<json>` frames, `len` in UTF-16 units) through the [`nestling`] crate, so it works
//! against NestJS services and nestling services alike.
//!
//! | command | what it does | Nest equivalent |
//! |---|---|---|
//! | `nestling call <addr> <pattern> [json]` | sends a request, prints the reply | `lastValueFrom(client.send(pattern, data))` |
//! | `nestling call … --stream` | prints every item of a streamed reply as it arrives | `client.send(…).subscribe(next)` |
//! | `nestling call … --repeat N --concurrency C` | N calls, C in flight on one connection, latency summary | — |
//! | `nestling emit <addr> <pattern> [json]` | sends an event | `client.emit(pattern, data)` |
//! | `nestling listen <addr>` | prints every packet it receives (`--echo` answers requests) | — |
//! | `nestling new <name>` | creates a service crate that builds, runs and passes its tests | `nest new <name>` |
//!
//! ## Arguments
//!
//! * `addr`: `host:port` (Nest TCP; a bare port, `8888` or `:8888`, means
//!   `127.0.0.1:<port>`), `nats://host:4222` (NATS), or
//!   `amqp://user:pass@host:5672/vhost?queue=NAME` (RabbitMQ: the queue the service consumes,
//!   with Nest's `ClientRMQ` options `durable`, `no_assert`, `persistent`, `exchange`,
//!   `wildcards` as further query parameters).
//! * `pattern`: a plain string (`sum`), or — when it starts with `{` or `[` — a JSON object or
//!   array (`'{"cmd":"sum"}'`), sent as that JSON value like `@MessagePattern({ cmd: 'sum' })`
//!   expects. An argument starting with `{`/`[` that is not valid JSON is a usage error.
//! * `json`: the payload. It is parsed as JSON (`[1,2,3]`, `42`, `"text"`, `{"a":1}`); an
//!   argument that is **not** valid JSON is sent as a JSON string, so `求和1111` and
//!   `'"求和1111"'` send the same thing. Omitted: `null`. `--data-file PATH` reads it from a
//!   file instead (`-` for standard input).
//!
//! ## Output and exit status
//!
//! Replies go to standard output as JSON: pretty-printed by default, one compact line with
//! `--json`, strings without quotes with `--raw`. A service error (Nest's `err`, e.g.
//! `{"status":"error","message":"bad thing"}`) is printed as JSON on standard error (pretty or
//! compact like replies). Other failures print one `nestling: error: …` line on standard error.
//!
//! | exit | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | the service answered with an error (or a reply that could not be used) |
//! | 2 | connection refused / closed (service or broker), TLS handshake failed, connect or reply timeout, no NATS subscriber, `listen` address in use |
//! | 3 | usage: bad arguments, a malformed address (`amqp://` without `queue=`), an invalid JSON pattern or payload file, unreadable TLS files |
//!
//! ## TLS
//!
//! `--tls --ca <PEM>` connects to a service started with Nest's `tlsOptions` (or nestling's
//! `ServerTls`), trusting the given CA or self-signed certificate; `--server-name` overrides the
//! name verified (default: the host of the address); `--insecure` skips verification.
//!
//! ## Examples
//!
//! ```text
//! $ nestling call 127.0.0.1:8888 sum '[1,2,3]'
//! 6
//! $ nestling call 8888 '{"cmd":"sum"}' '[4,5]' --json
//! 9
//! $ nestling call 8888 fail
//! {
//!   "status": "error",
//!   "message": "bad thing"
//! }                                            (on stderr; exit status 1)
//! $ nestling emit 8888 log 求和1111
//! $ nestling call 8888 count 3 --stream
//! 1
//! 2
//! 3
//! $ nestling call 8888 sum '[1,2]' --repeat 10000 --concurrency 64
//! $ nestling call 8888 sum '[1,2,3]' --tls --ca cert.pem
//! $ nestling listen 127.0.0.1:8888 --json --echo
//! $ nestling call nats://127.0.0.1:4222 sum '[1,2,3]'
//! $ nestling emit 'amqp://127.0.0.1:5672?queue=user_service' log hi
//! $ nestling listen nats://127.0.0.1:4222 --subject 'sum'
//! $ nestling listen 'amqp://127.0.0.1:5672?queue=user_service' --echo
//! ```

#![deny(unsafe_code)]

mod address;
mod call;
mod emit;
mod input;
mod listen;
mod new;
mod output;
mod tls;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use output::{Failure, USAGE};

/// Call, emit to, load-test and eavesdrop on NestJS microservices (TCP, NATS, RabbitMQ).
///
/// Works with NestJS (`@nestjs/microservices`) and nestling services alike. Addresses:
/// `host:port` (Transport.TCP), `nats://host:4222` (Transport.NATS),
/// `amqp://host:5672/vhost?queue=NAME` (Transport.RMQ).
/// Exit status: 0 ok, 1 the service answered with an error, 2 connection or timeout error,
/// 3 usage error.
#[derive(Debug, Parser)]
#[command(
    name = "nestling",
    version,
    propagate_version = true,
    after_help = "\
Examples (`nestling <command> --help` for more):
  nestling call 127.0.0.1:8888 sum '[1,2,3]'
  nestling emit nats://127.0.0.1:4222 log hello
  nestling listen 'amqp://127.0.0.1:5672?queue=user_service'
  nestling new user-service"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Send a request and print the reply (Nest's `client.send(pattern, data)`).
    ///
    /// The reply is printed as JSON on stdout; a service error is printed as JSON on stderr
    /// and the exit status is 1.
    #[command(after_help = "\
Examples:
  nestling call 127.0.0.1:8888 sum '[1,2,3]'
  nestling call 8888 '{\"cmd\":\"sum\"}' '[1,2,3]' --json
  nestling call 8888 echo 求和1111 --raw
  nestling call 8888 count 3 --stream
  nestling call 8888 sum '[1,2]' --repeat 10000 --concurrency 64 --json
  nestling call nats://127.0.0.1:4222 sum '[1,2,3]'
  nestling call 'amqp://guest:guest@127.0.0.1:5672/?queue=user_service' sum '[1,2,3]'")]
    Call(CallArgs),
    /// Send an event (Nest's `client.emit(pattern, data)`); no reply is awaited.
    #[command(after_help = "\
Examples:
  nestling emit 127.0.0.1:8888 log 求和1111
  nestling emit 8888 '{\"ev\":\"audit\"}' '{\"user\":1}'
  nestling emit nats://127.0.0.1:4222 log 求和1111
  nestling emit 'amqp://127.0.0.1:5672?queue=user_service' log 求和1111")]
    Emit(EmitArgs),
    /// Print every packet received: a debugging sink for Nest TCP, NATS or RabbitMQ.
    ///
    /// `host:port`: accepts Nest TCP connections. `nats://…`: subscribes to `--subject`.
    /// `amqp://…?queue=NAME`: consumes that queue (declared durable, as Nest does). Prints
    /// the peer (or subject, or queue), kind (request / event / undefined), pattern, data and
    /// id of every packet, plus `reply` and `headers` (NATS) or `correlationId`, `replyTo` and
    /// `headers` (RabbitMQ). Answers nothing unless `--echo` is given. Stops on Ctrl-C.
    #[command(after_help = "\
Examples:
  nestling listen 127.0.0.1:8888
  nestling listen 8888 --json --echo
  nestling listen nats://127.0.0.1:4222 --subject '>'
  nestling listen 'amqp://127.0.0.1:5672?queue=user_service' --echo")]
    Listen(ListenArgs),
    /// Create a new service crate (Nest's `nest new`): a controller with one message and one
    /// event pattern, its in-process tests, and a `main.rs` serving it with graceful shutdown.
    ///
    /// The last component of PATH names the crate; PATH must not exist or be empty. The
    /// crate depends on the nestling release matching this CLI, or on a checkout with
    /// `--path`. It builds, runs (`cargo run`, address from `ADDR`) and passes `cargo test`
    /// as generated.
    #[command(after_help = "\
Examples:
  nestling new user-service
  nestling new services/billing --path ~/src/nestling
  cd user-service && cargo test && cargo run")]
    New(NewArgs),
}

/// Options shared by `call` and `emit`.
#[derive(Debug, Args)]
struct Target {
    /// Service address: `host:port` (or just a port, for 127.0.0.1), `nats://host:4222`, or
    /// `amqp://host:5672/vhost?queue=NAME`.
    addr: String,
    /// Message pattern: a string (`sum`), or a JSON object/array (`'{"cmd":"sum"}'`).
    pattern: String,
    /// Payload as JSON (`'[1,2,3]'`); text that is not valid JSON is sent as a JSON string.
    /// Default: null.
    #[arg(value_name = "JSON")]
    data: Option<String>,
    /// Read the payload JSON from a file (`-`: standard input) instead of the argument.
    #[arg(long, value_name = "PATH", conflicts_with = "data")]
    data_file: Option<PathBuf>,
    /// Time limit in milliseconds for connecting, then for the reply (`call`; with
    /// `--stream`, for each item) or for writing the event (`emit`). 0: no reply limit.
    #[arg(long, value_name = "MS", default_value_t = 10_000)]
    timeout: u64,
    /// Connect over TLS (a TCP service with Nest's `tlsOptions`); needs --ca or --insecure.
    #[arg(long)]
    tls: bool,
    /// With --tls: PEM file of the CA or self-signed certificate(s) to trust (Nest's
    /// `tlsOptions.ca`).
    #[arg(long, value_name = "PEM", requires = "tls")]
    ca: Option<PathBuf>,
    /// With --tls: accept any server certificate (encrypted, but not authenticated).
    #[arg(long, requires = "tls", conflicts_with = "ca")]
    insecure: bool,
    /// With --tls: the name to verify in the server's certificate (default: the host part
    /// of the address).
    #[arg(long, value_name = "NAME", requires = "tls")]
    server_name: Option<String>,
}

#[derive(Debug, Args)]
struct CallArgs {
    #[command(flatten)]
    target: Target,
    /// Print compact JSON on one line (replies, errors and the `--repeat` summary).
    #[arg(long)]
    json: bool,
    /// Print a string reply without JSON quotes (like `jq -r`).
    #[arg(long, short = 'r')]
    raw: bool,
    /// The handler returns a stream (an Observable): print each item as it arrives,
    /// one compact JSON value per line. `--timeout` then limits the wait for each item.
    #[arg(long, conflicts_with = "repeat")]
    stream: bool,
    /// Send the request N times and print a latency summary instead of the replies.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    repeat: Option<u64>,
    /// With --repeat: calls in flight at once, all on one connection (default 1).
    #[arg(long, value_name = "C", requires = "repeat",
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    concurrency: Option<u64>,
}

#[derive(Debug, Args)]
struct EmitArgs {
    #[command(flatten)]
    target: Target,
}

#[derive(Debug, Args)]
struct ListenArgs {
    /// Where to listen: `host:port` (or just a port, for 127.0.0.1; 0: any free port), a
    /// NATS server `nats://host:4222`, or a RabbitMQ queue `amqp://host:5672/vhost?queue=NAME`.
    addr: String,
    /// With nats://: the subject to subscribe to (wildcards `*` and `>` allowed).
    /// Default: `>`, every subject (replies under `_INBOX.` are skipped).
    #[arg(long, value_name = "SUBJECT")]
    subject: Option<String>,
    /// Print one compact JSON object per packet instead of text.
    #[arg(long)]
    json: bool,
    /// Answer every request by echoing its data: `{"response":data,"isDisposed":true,"id":id}`
    /// (RabbitMQ: without `id`, to the request's `replyTo` with its `correlationId`).
    #[arg(long)]
    echo: bool,
}

#[derive(Debug, Args)]
struct NewArgs {
    /// Directory to create; its last component is the crate name (`user-service`).
    #[arg(value_name = "PATH")]
    dir: PathBuf,
    /// Depend on the nestling checkout in DIR (a path dependency) instead of the crates.io
    /// release.
    #[arg(long, value_name = "DIR")]
    path: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // `--help` and `--version` are "errors" printed on stdout with success.
            let code = if e.use_stderr() { USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("nestling: error: could not start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli));
    // Connection tasks may still be parked on sockets; do not wait for them.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            failure.report();
            ExitCode::from(failure.code)
        }
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Call(args) => call::run(args).await,
        Command::Emit(args) => emit::run(args).await,
        Command::Listen(args) => listen::run(args).await,
        Command::New(args) => new::run(args),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    /// `nestling <sub> --help` ends with examples: one per transport for the commands that
    /// take an address, and `nestling new`'s.
    #[test]
    fn every_subcommand_help_shows_examples() {
        let mut cli = Cli::command();
        let top = cli.render_long_help().to_string();
        for sub in ["call", "emit", "listen", "new"] {
            assert!(top.contains(&format!("  nestling {sub} ")), "{top}");
        }
        for sub in ["call", "emit", "listen", "new"] {
            let help = cli
                .find_subcommand_mut(sub)
                .unwrap_or_else(|| panic!("no subcommand {sub}"))
                .render_long_help()
                .to_string();
            let examples = help
                .split_once("Examples:\n")
                .unwrap_or_else(|| panic!("`{sub} --help` has no examples:\n{help}"))
                .1;
            let lines: Vec<&str> = examples.lines().map(str::trim).collect();
            assert!(
                lines
                    .iter()
                    .all(|l| l.starts_with("nestling ") || l.starts_with("cd ")),
                "{sub}: {lines:?}"
            );
            if sub == "new" {
                assert!(lines.iter().any(|l| l.starts_with("nestling new ")));
                continue;
            }
            for transport in ["127.0.0.1:8888", "nats://", "amqp://"] {
                assert!(
                    lines.iter().any(
                        |l| l.starts_with(&format!("nestling {sub} ")) && l.contains(transport)
                    ),
                    "`{sub} --help` has no {transport} example:\n{examples}"
                );
            }
        }
    }

    #[test]
    fn concurrency_needs_repeat_and_stream_excludes_repeat() {
        assert!(Cli::try_parse_from(["nestling", "call", "1", "p", "--concurrency", "2"]).is_err());
        assert!(
            Cli::try_parse_from(["nestling", "call", "1", "p", "--stream", "--repeat", "2"])
                .is_err()
        );
        assert!(Cli::try_parse_from(["nestling", "call", "1", "p", "--repeat", "0"]).is_err());
        let ok = Cli::try_parse_from([
            "nestling",
            "call",
            "1",
            "p",
            "[1]",
            "--repeat",
            "3",
            "--concurrency",
            "2",
        ])
        .unwrap();
        let Command::Call(call) = ok.command else {
            panic!("not a call")
        };
        assert_eq!((call.repeat, call.concurrency), (Some(3), Some(2)));
        assert_eq!(call.target.data.as_deref(), Some("[1]"));
    }
}
