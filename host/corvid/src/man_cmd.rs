//! `corvid man DIR` (hidden): manual pages generated from the clap definitions, one for
//! `corvid` and one per subcommand (`corvid-queue-list.1`, ...), for the Debian package.

use anyhow::{Context, Result};
use clap::CommandFactory;
use std::path::Path;

pub fn run(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    clap_mangen::generate_to(crate::cli::Cli::command(), dir)
        .with_context(|| format!("writing manual pages into {}", dir.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_page_for_corvid_and_each_subcommand() {
        let dir = tempfile::tempdir().unwrap();
        super::run(dir.path()).unwrap();
        let page = std::fs::read_to_string(dir.path().join("corvid.1")).unwrap();
        assert!(
            page.starts_with(".ie") || page.contains(".TH corvid 1"),
            "{page}"
        );
        assert!(page.contains("check\\-config"), "subcommands listed");
        for sub in [
            "corvid-serve.1",
            "corvid-queue.1",
            "corvid-queue-list.1",
            "corvid-user-add.1",
        ] {
            let text = std::fs::read_to_string(dir.path().join(sub)).unwrap();
            assert!(text.contains(".TH"), "{sub}");
        }
        let serve = std::fs::read_to_string(dir.path().join("corvid-serve.1")).unwrap();
        assert!(
            serve.contains("shutdown_grace"),
            "the long help is the description"
        );
        // The hidden command itself has no page.
        assert!(!dir.path().join("corvid-man.1").exists());
    }
}
