//! `ztmesh key export`: a ztmesh key file (node TLS key, identity key, witness, release or CA
//! key; encrypted or not) as an unencrypted PKCS#8 v1 PEM that OpenSSL 3.0 (`openssl s_client
//! -key`, `openssl pkey`) and Python `cryptography` read. The output holds the secret key in
//! the clear: it is written 0600 and never over an existing file.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use ztmesh_pki::keyfile;

#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// Decrypt a ztmesh key file and write it as an unencrypted PKCS#8 v1 PEM for OpenSSL.
    Export(ExportArgs),
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// The ztmesh key file (e.g. DATA_DIR/node.key with DATA_DIR/node.pem for TLS).
    #[arg(long = "in", value_name = "FILE")]
    input: PathBuf,
    /// Where to write the PEM (mode 0600; must not exist yet).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    #[command(flatten)]
    passphrase: crate::PassphraseArgs,
}

pub fn run(command: KeyCommand) -> Result<()> {
    match command {
        KeyCommand::Export(args) => export(args),
    }
}

fn export(args: ExportArgs) -> Result<()> {
    if args.out.exists() {
        bail!("{} already exists; give a new file", args.out.display());
    }
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(&args.input)
            .with_context(|| format!("reading {}", args.input.display()))?,
    );
    let secret = crate::passphrase(&args.passphrase)?;
    let pem = keyfile::export_pkcs8_v1_pem(
        &text,
        &crate::protection(&secret),
        args.passphrase.insecure_plaintext_key,
    )
    .with_context(|| format!("opening {}", args.input.display()))?;
    ztmesh_runtime::private_files::write_private_file(&args.out, pem.as_bytes())
        .with_context(|| format!("writing {}", args.out.display()))?;
    out!(
        "{} written (unencrypted PKCS#8; keep it private, delete it after use)",
        args.out.display()
    );
    Ok(())
}
