//! `ztmesh deny add|remove|list`: the operator's local deny-list of a node (see
//! `ztmesh_node::deny_list`). Through the running node's API with its `api.token`, so the
//! change applies at once; when the node is not running, `deny-list.json` is edited in place
//! and applies at its next start.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use ztmesh_node::ca_client::ClientError;
use ztmesh_node::deny_list::{self, DenyEntry, DenyListResponse, DenySet};

use crate::app::NodeArgs;

#[derive(Subcommand, Debug)]
pub enum DenyCommand {
    /// Refuse a node (every certificate naming it) or one certificate serial on this node.
    Add(DenyEntryArgs),
    /// Take an entry off the deny-list.
    Remove(DenyEntryArgs),
    /// Show the deny-list.
    List(DenyListArgs),
}

#[derive(Args, Debug)]
pub struct DenyEntryArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// A NodeId or a certificate serial (hex); prefix `node:` or `serial:` to say which.
    #[arg(value_name = "NODE|SERIAL")]
    entry: String,
}

#[derive(Args, Debug)]
pub struct DenyListArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// Print JSON (`{"nodes": [...], "serials": [...]}`).
    #[arg(long)]
    json: bool,
}

/// Runs one `ztmesh deny` subcommand.
pub async fn run(command: DenyCommand) -> Result<()> {
    match command {
        DenyCommand::Add(args) => {
            let entry = parse(&args.entry)?;
            let list = change(&args.node, &entry, true).await?;
            out!("denied {entry}");
            print(&list, false);
        }
        DenyCommand::Remove(args) => {
            let entry = parse(&args.entry)?;
            let list = change(&args.node, &entry, false).await?;
            out!("no longer denied: {entry}");
            print(&list, false);
        }
        DenyCommand::List(args) => {
            let list = match crate::app::client(&args.node) {
                Ok(client) => match client.deny_list().await {
                    Err(ClientError::Transport { .. }) => offline_list(&args.node)?,
                    other => other?,
                },
                Err(_) => offline_list(&args.node)?,
            };
            print(&list, args.json);
        }
    }
    Ok(())
}

/// Checked before anything is sent or written: garbage never reaches the node or the file.
fn parse(text: &str) -> Result<DenyEntry> {
    Ok(text.parse::<DenyEntry>()?)
}

async fn change(node: &NodeArgs, entry: &DenyEntry, add: bool) -> Result<DenyListResponse> {
    // No address file: the node never ran here, or not yet; the file is edited instead.
    if let Ok(client) = crate::app::client(node) {
        let text = match entry {
            DenyEntry::Node(node) => format!("node:{node}"),
            DenyEntry::Serial(serial) => format!("serial:{}", serial.to_hex()),
        };
        let answer = if add {
            client.deny_add(&text).await
        } else {
            client.deny_remove(&text).await
        };
        match answer {
            // The node is not running (a stale address file): edit the file instead.
            Err(ClientError::Transport { .. }) => {}
            other => return Ok(other?),
        }
    }
    let dir = &node.data_dir;
    anyhow::ensure!(
        dir.join("node.toml").exists(),
        "{} is not a node's data directory (no node.toml)",
        dir.display()
    );
    let mut set = deny_list::load(dir)?;
    if add {
        set.insert(entry.clone())?;
    } else {
        anyhow::ensure!(set.remove(entry), "{entry} is not on the deny-list");
    }
    deny_list::save(dir, &set)?;
    eprintln!(
        "the node of {} is not running: {} written, applied at its next start",
        dir.display(),
        deny_list::DENY_FILE
    );
    Ok(set.to_response())
}

fn offline_list(node: &NodeArgs) -> Result<DenyListResponse> {
    let set: DenySet = deny_list::load(&node.data_dir)
        .with_context(|| format!("reading the deny-list of {}", node.data_dir.display()))?;
    Ok(set.to_response())
}

fn print(list: &DenyListResponse, json: bool) {
    if json {
        out!("{}", serde_json::to_string_pretty(list).unwrap_or_default());
        return;
    }
    if list.nodes.is_empty() && list.serials.is_empty() {
        out!("deny-list empty");
    }
    for node in &list.nodes {
        out!("node    {node}");
    }
    for serial in &list.serials {
        out!("serial  {serial}");
    }
}
