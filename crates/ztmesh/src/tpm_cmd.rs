//! `ztmesh tpm ek` and `ztmesh tpm pcrs`: what an operator reads from a node's TPM before it
//! enrolls. The EK public area goes to the CA (`ca serve --tpm2-endorsement-key`) to allow
//! that TPM; the PCR values go into the release manifest (`manifest sign --measurement`).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use ztmesh_node::tpm_device::{self, TpmDevice};

#[derive(Subcommand, Debug)]
pub enum TpmCommand {
    /// Persist the TPM's RSA 2048 endorsement key at 0x81010001 (reusing it when it is there)
    /// and write its public area (TPM2B_PUBLIC) for the CA's --tpm2-endorsement-key.
    Ek(EkArgs),
    /// Print the sha256 PCRs 0, 1, 2 and 7 as `tpm2:pcrN=HEX`, the form `manifest sign
    /// --measurement` takes.
    Pcrs(PcrsArgs),
}

#[derive(Args, Debug)]
pub struct EkArgs {
    /// The TPM, as a tpm2-tools TCTI: e.g. device:/dev/tpmrm0 or swtpm:host=127.0.0.1,port=2321.
    #[arg(long, value_name = "TCTI")]
    tpm: String,
    /// Where to write the EK public area.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
}

#[derive(Args, Debug)]
pub struct PcrsArgs {
    /// The TPM, as a tpm2-tools TCTI.
    #[arg(long, value_name = "TCTI")]
    tpm: String,
}

/// The TPM at `tcti`, with its work directories in the system's temporary directory.
fn device(tcti: &str) -> Result<TpmDevice> {
    TpmDevice::new(tcti, std::env::temp_dir()).context("--tpm")
}

pub async fn run(command: TpmCommand) -> Result<()> {
    match command {
        TpmCommand::Ek(args) => {
            let device = device(&args.tpm)?;
            let public = tpm_device::run_blocking(move || device.endorsement_key())
                .await
                .context("reading the endorsement key")?;
            let key = tpm_device::parse_endorsement_key(&public)?;
            std::fs::write(&args.out, &public)
                .with_context(|| format!("writing {}", args.out.display()))?;
            out!(
                "endorsement key {} at {}",
                key.public_area().name().to_hex(),
                tpm_device::ENDORSEMENT_KEY_HANDLE
            );
            out!("  public area  {}", args.out.display());
            out!(
                "Allow this TPM with: ztmesh ca serve ... --tpm2-endorsement-key {}",
                args.out.display()
            );
        }
        TpmCommand::Pcrs(args) => {
            let device = device(&args.tpm)?;
            let pcrs = tpm_device::run_blocking(move || device.read_pcrs())
                .await
                .context("reading the PCRs")?;
            for (index, value) in pcrs {
                out!("tpm2:pcr{index}={}", hex::encode(value));
            }
        }
    }
    Ok(())
}
