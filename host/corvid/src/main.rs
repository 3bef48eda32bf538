//! The `corvid` command: CLI, configuration and wiring of the server, queue and delivery.
//!
//! Owns: argument parsing, reading the config into each crate's settings, logging set-up,
//! signals, and the admin socket that lets `corvid queue ...` talk to a running server.
//! Must not: hold mail logic; everything it runs lives in the library crates.

mod admin;
mod check_cmd;
mod cli;
mod config;
mod dkim_cmd;
mod kv_backend;
mod kv_cmd;
mod mail_auth;
mod man_cmd;
mod metrics;
mod plugin_new;
mod plugin_test;
mod plugins;
mod plugins_cmd;
mod privdrop;
mod queue_cmd;
mod record;
mod reload;
mod replay;
mod sd_notify;
mod serve;
mod tls_setup;
mod user_cmd;

use clap::Parser;
use cli::{Cli, Command};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::CheckConfig { file } => check_cmd::run(&file),
        Command::Queue { config, action } => queue_cmd::run(config.as_deref(), action),
        Command::Kv { config, action } => kv_cmd::run(config.as_deref(), action),
        Command::User { config, action } => user_cmd::run(config.as_deref(), action),
        Command::Plugins { config, action } => plugins_cmd::run(config.as_deref(), action),
        Command::Plugin {
            action:
                cli::PluginAction::Test {
                    component,
                    script,
                    format,
                    cache,
                },
        } => plugin_test::run(&component, &script, format, cache),
        Command::Plugin {
            action:
                cli::PluginAction::Replay {
                    capture,
                    config,
                    plugins,
                    format,
                    cache,
                },
        } => replay::run(&capture, config.as_deref(), &plugins, format, cache),
        Command::Plugin {
            action:
                cli::PluginAction::New {
                    name,
                    lang,
                    stages,
                    dir,
                    sdk,
                },
        } => plugin_new::run(&name, lang, &stages, dir.as_deref(), sdk.as_deref()),
        Command::Dkim { action } => dkim_cmd::run(action),
        Command::Man { dir } => man_cmd::run(&dir),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("corvid: {e:#}");
            ExitCode::FAILURE
        }
    }
}
