//! `corvid queue ...`: through the running server's admin socket, or on the stopped queue.

use crate::admin::{self, Request};
use crate::cli::QueueAction;
use crate::config::Config;
use anyhow::{Context, Result};
use serde_json::Value;
use std::path::Path;

pub fn run(config: Option<&Path>, action: QueueAction) -> Result<()> {
    let config = Config::load(config)?;
    let req = match action.clone() {
        QueueAction::List => Request::QueueList,
        QueueAction::Show { id } => Request::QueueShow { id },
        QueueAction::Delete { id } => Request::QueueDelete { id },
        QueueAction::Flush => Request::QueueFlush,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let online = rt.block_on(admin::request(&config.admin_socket(), &req))?;
    let running = online.is_some();
    let data = match online {
        Some(data) => data,
        None => {
            let dir = config.queue_dir();
            let spool = corvid_queue::SledSpool::open(&dir).with_context(|| {
                format!(
                    "opening the queue in {} (is a server running elsewhere?)",
                    dir.display()
                )
            })?;
            admin::handle(spool.as_ref(), req)?
        }
    };
    print(&action, &data, running);
    Ok(())
}

fn print(action: &QueueAction, data: &Value, running: bool) {
    match action {
        QueueAction::List => print_list(data),
        QueueAction::Show { .. } => {
            println!(
                "{}",
                serde_json::to_string_pretty(&data["message"]).unwrap_or_default()
            );
            println!(
                "--- headers ---\n{}",
                data["headers"].as_str().unwrap_or("").replace("\r\n", "\n")
            );
        }
        QueueAction::Delete { id } => println!("deleted {id}"),
        QueueAction::Flush => {
            let n = data["scheduled"].as_u64().unwrap_or(0);
            let when = if running {
                "now"
            } else {
                "at the next server start"
            };
            println!("{n} message(s) scheduled for delivery {when}");
        }
    }
}

fn print_list(data: &Value) {
    let empty = Vec::new();
    let msgs = data.as_array().unwrap_or(&empty);
    if msgs.is_empty() {
        println!("queue is empty");
        return;
    }
    println!("{:<18} {:>10} {:<30} recipients", "id", "size", "sender");
    for m in msgs {
        let sender = m["envelope"]["sender"]
            .as_object()
            .map(|s| {
                format!(
                    "{}@{}",
                    s["local"].as_str().unwrap_or(""),
                    s["domain"].as_str().unwrap_or("")
                )
            })
            .unwrap_or_else(|| "<>".into());
        let rcpts: Vec<String> = m["recipients"]
            .as_array()
            .unwrap_or(&empty)
            .iter()
            .map(|r| {
                let a = &r["recipient"]["address"];
                let status = r["status"].as_str().unwrap_or("?");
                format!(
                    "{}@{} ({status}, {} attempts)",
                    a["local"].as_str().unwrap_or(""),
                    a["domain"].as_str().unwrap_or(""),
                    r["attempts"]
                )
            })
            .collect();
        println!(
            "{:<18} {:>10} {:<30} {}",
            m["id"].as_str().unwrap_or("?"),
            m["size"],
            sender,
            rcpts.join(", ")
        );
    }
    println!("{} message(s)", msgs.len());
}
