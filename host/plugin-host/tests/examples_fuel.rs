//! The default CPU budget (`limits.hook_fuel`) is generous for the example policy in every
//! language built by `examples/build.sh` (missing builds are skipped and said so): the most
//! fuel any hook uses, on a fresh and on a pooled instance, stays under a tenth of the default.

mod common;

use common::*;
use corvid_plugin_host::{
    Capability, InstanceMode, Manifest, PluginHost, Services, DEFAULT_HOOK_FUEL,
};
use corvid_types::{MessageView, Policy};
use std::path::Path;

#[tokio::test(flavor = "multi_thread")]
async fn the_examples_use_a_tenth_of_the_default_budget_at_most() {
    for lang in ["rust", "c", "python", "javascript"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../target/examples")
            .join(format!("greylist-{lang}.wasm"));
        if !path.exists() {
            eprintln!("{lang}: {} not built, skipped", path.display());
            continue;
        }
        for mode in [InstanceMode::Transaction, InstanceMode::Pool] {
            let mut m = Manifest::new("greylist", &path);
            m.capabilities.push(Capability::Kv);
            m.instance = mode;
            m.limits.memory_mb = 256;
            m.config
                .insert("delay_seconds".into(), toml::Value::Integer(0));
            let host = PluginHost::new(&engine(), Services::in_memory(), Some(cache_dir()));
            host.reload(vec![m]).await.expect("loads");
            let c = conn(1);
            for _ in 0..3 {
                let mut s = host.session(&c);
                s.connect(&c).await;
                s.helo(&c).await;
                s.mail(&c, &envelope()).await;
                s.rcpt(&c, &envelope(), &rcpt()).await;
                s.data(&c, &envelope(), MessageView { content: MESSAGE })
                    .await;
                s.end_transaction();
            }
            let stats = host.stats();
            let failures: u64 = stats
                .iter()
                .map(|s| s.traps + s.timeouts + s.cpu_budget + s.out_of_memory + s.invalid)
                .sum();
            let fuel = stats.iter().map(|s| s.fuel_max).max().unwrap_or(0);
            println!("{lang} {mode:?}: most fuel in one hook {fuel}");
            assert_eq!(failures, 0, "{lang} {mode:?}: {stats:?}");
            assert!(fuel > 0, "{lang}: fuel is measured");
            assert!(fuel * 10 <= DEFAULT_HOOK_FUEL, "{lang} {mode:?}: {fuel}");
        }
    }
}
