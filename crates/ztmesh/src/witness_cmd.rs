//! `ztmesh witness`: run a C2SP tlog-witness that cosigns the membership log's checkpoints
//! (`init`, `key`, `add-log`, `serve`). The logic lives in `ztmesh_witness::witness_service`;
//! this module only parses arguments, reads the passphrase and prints.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};
use ztmesh_witness::witness_service::{self, Witness, WitnessDir, WitnessService};

#[derive(Subcommand, Debug)]
pub enum WitnessCommand {
    /// Create a witness: cosigning key (encrypted), witness.toml and its state database.
    Init(WitnessInitArgs),
    /// Print the witness's public key (a cosignature/v1 vkey) for logs and policies to trust.
    Key(WitnessDirArgs),
    /// Trust a log's checkpoints: add its origin and key to witness.toml (read at serve).
    AddLog(WitnessAddLogArgs),
    /// Serve POST /add-checkpoint over HTTP until SIGTERM or Ctrl-C.
    Serve(WitnessServeArgs),
}

#[derive(Args, Debug)]
pub struct WitnessDirArgs {
    /// Directory created by `ztmesh witness init`.
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
}

#[derive(Args, Debug)]
pub struct WitnessInitArgs {
    /// Directory for the witness's files.
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
    /// Witness name, the key name of its cosignatures (e.g. witness.example.org/w1). It is part
    /// of the key ID and cannot change later.
    #[arg(long)]
    name: String,
    #[command(flatten)]
    passphrase: crate::PassphraseArgs,
}

#[derive(Args, Debug)]
pub struct WitnessAddLogArgs {
    #[command(flatten)]
    dir: WitnessDirArgs,
    /// The log's Ed25519 note verifier key: name+hex key ID+base64.
    #[arg(long)]
    vkey: String,
    /// The log's checkpoint origin line, when it differs from the vkey's key name.
    #[arg(long)]
    origin: Option<String>,
}

#[derive(Args, Debug)]
pub struct WitnessServeArgs {
    #[command(flatten)]
    dir: WitnessDirArgs,
    /// Address to listen on (default: `listen` in witness.toml, itself 127.0.0.1:0).
    #[arg(long)]
    listen: Option<SocketAddr>,
    #[command(flatten)]
    passphrase: crate::PassphraseArgs,
}

/// Runs one `ztmesh witness` subcommand.
pub async fn run(command: WitnessCommand) -> Result<()> {
    match command {
        WitnessCommand::Init(args) => init(args),
        WitnessCommand::Key(args) => key(args),
        WitnessCommand::AddLog(args) => add_log(args),
        WitnessCommand::Serve(args) => serve(args).await,
    }
}

fn init(args: WitnessInitArgs) -> Result<()> {
    let secret = crate::new_key_passphrase(&args.passphrase)?;
    let report = witness_service::init_witness(
        &WitnessDir(args.data_dir.clone()),
        &args.name,
        &crate::protection(&secret),
    )?;
    out!("witness created in {}", args.data_dir.display());
    out!("  name:   {}", args.name);
    out!("  vkey:   {}", report.vkey);
    out!("  config: {}", report.config_path.display());
    out!(
        "Next: ztmesh witness add-log --data-dir {} --vkey <log vkey>, then ztmesh witness serve",
        args.data_dir.display()
    );
    Ok(())
}

fn key(args: WitnessDirArgs) -> Result<()> {
    let vkey = witness_service::witness_vkey(&WitnessDir(args.data_dir))?;
    out!("{vkey}");
    Ok(())
}

fn add_log(args: WitnessAddLogArgs) -> Result<()> {
    let entry = witness_service::add_log(
        &WitnessDir(args.dir.data_dir),
        &args.vkey,
        args.origin.as_deref(),
    )?;
    out!("trusting log {} with key {}", entry.origin, entry.vkey);
    if !entry.vkey.starts_with(&format!("{}+", entry.origin)) {
        // Allowed by the checkpoint spec, but usually a typo worth a second look.
        out!(
            "note: the origin differs from the key name; the checkpoint spec recommends they match"
        );
    }
    out!("A running witness picks it up when restarted.");
    Ok(())
}

async fn serve(args: WitnessServeArgs) -> Result<()> {
    let dir = WitnessDir(args.dir.data_dir);
    let secret = crate::passphrase(&args.passphrase)?;
    let (witness, config) = Witness::open(
        &dir,
        &crate::protection(&secret),
        args.passphrase.insecure_plaintext_key,
    )?;
    let service = WitnessService::bind(witness, args.listen.unwrap_or(config.listen)).await?;
    let addr = service.local_addr()?;
    ztmesh_runtime::private_files::write_private_file(
        &dir.addr_file(),
        addr.to_string().as_bytes(),
    )?;
    eprintln!(
        "witness {} serving on http://{addr}/add-checkpoint",
        config.name
    );
    service.run(crate::shutdown_signal()).await;
    Ok(())
}
