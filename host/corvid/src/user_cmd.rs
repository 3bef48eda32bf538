//! `corvid user ...`: the users file. Passwords are read without echo and never printed.

use crate::cli::UserAction;
use crate::config::Config;
use anyhow::{bail, Context, Result};
use corvid_server::auth::{hash_password, UsersFile};
use std::io::{BufRead, IsTerminal};
use std::path::Path;

pub fn run(config: Option<&Path>, action: UserAction) -> Result<()> {
    let config = Config::load(config)?;
    crate::queue_cmd::ensure_data_dir(&config)?;
    let path = config.users_file();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let users = UsersFile::load(&path, config.local.recipient_delimiter.unwrap_or('+'))?;
    match action {
        UserAction::Add {
            name,
            addresses,
            password_stdin,
        } => {
            let hash = hash_password(&read_password(password_stdin)?)?;
            users.set(&name, hash, Some(addresses))?;
            println!("user {name} saved in {}", path.display());
        }
        UserAction::Passwd {
            name,
            password_stdin,
        } => {
            if !users.list().iter().any(|(n, _)| n == &name) {
                bail!("no user {name} in {}", path.display());
            }
            let hash = hash_password(&read_password(password_stdin)?)?;
            users.set(&name, hash, None)?;
            println!("password of {name} changed");
        }
        UserAction::Del { name } => {
            if !users.remove(&name)? {
                bail!("no user {name} in {}", path.display());
            }
            println!("user {name} removed");
        }
        UserAction::List => {
            for (name, addresses) in users.list() {
                println!("{name}\t{}", addresses.join(","));
            }
        }
    }
    Ok(())
}

fn read_password(from_stdin: bool) -> Result<String> {
    let password = if from_stdin || !std::io::stdin().is_terminal() {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        line.trim_end_matches(['\r', '\n']).to_string()
    } else {
        let first = rpassword::prompt_password("Password: ")?;
        let again = rpassword::prompt_password("Again: ")?;
        if first != again {
            bail!("the passwords differ");
        }
        first
    };
    if password.is_empty() {
        bail!("empty password");
    }
    Ok(password)
}
