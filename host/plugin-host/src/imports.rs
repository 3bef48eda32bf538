//! Host side of the plugin's imports. Each checks its capability first: a plugin without it
//! gets a refusal (`denied`, an empty table, a dropped line), never a trap. Every call costs
//! fuel, and those copying values (kv, the config table) also per byte ([`crate::charge`]).

use crate::bindings::corvid::plugin::{clock, config, dns, kv, lifecycle, log, metrics, types};
use crate::dns::DnsError;
use crate::kv::KvError;
use crate::manifest::Capability;
use crate::record;
use crate::state::HostState;
use std::net::IpAddr;
use std::time::Duration;

const MAX_KEY: usize = 512;
const MAX_VALUE: usize = 64 * 1024;
const MAX_LOG: usize = 4096;

type R<T> = wasmtime::Result<T>;

impl types::Host for HostState {}

impl log::Host for HostState {
    fn log(&mut self, level: log::Level, message: String) -> R<()> {
        if !self.env.grants(Capability::Log) {
            return Ok(());
        }
        let mut text: String = message.chars().take(MAX_LOG).collect();
        if text.chars().any(char::is_control) {
            text = text.escape_debug().to_string();
        }
        let (plugin, session) = (self.env.name.as_str(), self.session_id);
        match level {
            log::Level::Trace => tracing::trace!(plugin, session, "{text}"),
            log::Level::Debug => tracing::debug!(plugin, session, "{text}"),
            log::Level::Info => tracing::info!(plugin, session, "{text}"),
            log::Level::Warn => tracing::warn!(plugin, session, "{text}"),
            log::Level::Error => tracing::error!(plugin, session, "{text}"),
        }
        Ok(())
    }
}

impl config::Host for HostState {
    fn get(&mut self, key: String) -> R<Option<String>> {
        if !self.env.grants(Capability::Config) {
            return Ok(None);
        }
        Ok(self
            .env
            .config
            .entries
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.clone()))
    }

    fn table(&mut self) -> R<types::ConfigTable> {
        if !self.env.grants(Capability::Config) {
            return Ok(types::ConfigTable {
                entries: Vec::new(),
                json: "{}".into(),
            });
        }
        let c = self.env.config.clone();
        let entries: usize = c.entries.iter().map(|(k, v)| k.len() + v.len()).sum();
        self.charge_copy(entries + c.json.len());
        Ok(c)
    }
}

fn kv_err(e: KvError) -> kv::Error {
    match e {
        KvError::NotANumber => kv::Error::NotANumber,
        // The WIT variant cannot gain a case without breaking every compiled plugin (the
        // component model checks variant cases exactly), so a quota refusal is `too-large`.
        KvError::Quota(_) => kv::Error::TooLarge,
        KvError::Storage(s) => kv::Error::Storage(s),
    }
}

fn ttl(seconds: Option<u32>) -> Option<Duration> {
    seconds.map(|s| Duration::from_secs(u64::from(s)))
}

impl HostState {
    fn kv_check(&self, key: &str, value: Option<&[u8]>) -> Result<(), kv::Error> {
        if !self.env.grants(Capability::Kv) {
            return Err(kv::Error::Denied);
        }
        if key.len() > MAX_KEY || value.is_some_and(|v| v.len() > MAX_VALUE) {
            return Err(kv::Error::TooLarge);
        }
        Ok(())
    }
}

impl kv::Host for HostState {
    fn get(&mut self, key: String) -> R<Result<Option<Vec<u8>>, kv::Error>> {
        if let Err(e) = self.kv_check(&key, None) {
            return Ok(Err(e));
        }
        let store = &self.env.services.kv;
        let got = store.get(&self.env.name, key.as_bytes());
        if let Ok(v) = &got {
            record::kv_read(
                self.session_id,
                &**store,
                &self.env.name,
                &key,
                v.as_deref(),
            );
        }
        let read = got.as_ref().map_or(0, |v| v.as_ref().map_or(0, Vec::len));
        self.charge_copy(key.len() + read);
        Ok(got.map_err(kv_err))
    }

    fn set(&mut self, key: String, value: Vec<u8>, ttl_s: Option<u32>) -> R<Result<(), kv::Error>> {
        self.charge_copy(key.len() + value.len());
        if let Err(e) = self.kv_check(&key, Some(&value)) {
            return Ok(Err(e));
        }
        record::note(self.session_id, |a| a.kv_write(&self.env.name, &key));
        let store = &self.env.services.kv;
        Ok(store
            .set(&self.env.name, key.as_bytes(), &value, ttl(ttl_s))
            .map_err(kv_err))
    }

    fn delete(&mut self, key: String) -> R<Result<bool, kv::Error>> {
        if let Err(e) = self.kv_check(&key, None) {
            return Ok(Err(e));
        }
        record::note(self.session_id, |a| a.kv_write(&self.env.name, &key));
        let store = &self.env.services.kv;
        Ok(store.delete(&self.env.name, key.as_bytes()).map_err(kv_err))
    }

    fn increment(
        &mut self,
        key: String,
        delta: i64,
        ttl_s: Option<u32>,
    ) -> R<Result<i64, kv::Error>> {
        if let Err(e) = self.kv_check(&key, None) {
            return Ok(Err(e));
        }
        let store = &self.env.services.kv;
        let got = store.increment(&self.env.name, key.as_bytes(), delta, ttl(ttl_s));
        if let Ok(n) = got {
            record::kv_increment(self.session_id, &**store, &self.env.name, &key, delta, n);
        }
        Ok(got.map_err(kv_err))
    }

    fn compare_and_swap(
        &mut self,
        key: String,
        expected: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
        ttl_s: Option<u32>,
    ) -> R<Result<bool, kv::Error>> {
        let len = |v: &Option<Vec<u8>>| v.as_ref().map_or(0, Vec::len);
        self.charge_copy(key.len() + len(&expected) + len(&new));
        let too_big = expected.as_ref().is_some_and(|v| v.len() > MAX_VALUE);
        if let Err(e) = self.kv_check(&key, new.as_deref()) {
            return Ok(Err(e));
        }
        if too_big {
            return Ok(Err(kv::Error::TooLarge));
        }
        let store = &self.env.services.kv;
        let got = store.compare_and_swap(
            &self.env.name,
            key.as_bytes(),
            expected.as_deref(),
            new.as_deref(),
            ttl(ttl_s),
        );
        // A swap that took place says what the key held; one that did not says nothing.
        let held = match got {
            Ok(true) => Some(expected.as_deref()),
            _ => None,
        };
        record::note(self.session_id, |a| match held {
            Some(v) => a.kv_read(&self.env.name, &key, v, None),
            None => a.kv_write(&self.env.name, &key),
        });
        Ok(got.map_err(kv_err))
    }
}

fn dns_err(e: DnsError) -> dns::Error {
    match e {
        DnsError::NotFound => dns::Error::NotFound,
        DnsError::Timeout => dns::Error::Timeout,
        DnsError::Failed(s) => dns::Error::Failed(s),
    }
}

impl HostState {
    async fn ips(&mut self, name: String, v6: bool) -> R<Result<Vec<String>, dns::Error>> {
        if !self.env.grants(Capability::Dns) {
            return Ok(Err(dns::Error::Denied));
        }
        let resolver = self.env.services.dns.clone();
        let got = resolver
            .ip(&name, v6)
            .await
            .map(|v| v.iter().map(IpAddr::to_string).collect());
        let kind = if v6 { "AAAA" } else { "A" };
        record::note(self.session_id, |a| a.dns(kind, &name, &got));
        Ok(got.map_err(dns_err))
    }
}

impl dns::Host for HostState {
    async fn lookup_a(&mut self, name: String) -> R<Result<Vec<String>, dns::Error>> {
        self.ips(name, false).await
    }

    async fn lookup_aaaa(&mut self, name: String) -> R<Result<Vec<String>, dns::Error>> {
        self.ips(name, true).await
    }

    async fn lookup_mx(&mut self, name: String) -> R<Result<Vec<dns::Mx>, dns::Error>> {
        if !self.env.grants(Capability::Dns) {
            return Ok(Err(dns::Error::Denied));
        }
        let resolver = self.env.services.dns.clone();
        let got = resolver.mx(&name).await;
        record::note(self.session_id, |a| {
            let text = got
                .as_ref()
                .map_err(Clone::clone)
                .map(|v| v.iter().map(|(p, x)| format!("{p} {x}")).collect());
            a.dns("MX", &name, &text)
        });
        Ok(got
            .map(|v| {
                v.into_iter()
                    .map(|(preference, exchange)| dns::Mx {
                        preference,
                        exchange,
                    })
                    .collect()
            })
            .map_err(dns_err))
    }

    async fn lookup_txt(&mut self, name: String) -> R<Result<Vec<String>, dns::Error>> {
        if !self.env.grants(Capability::Dns) {
            return Ok(Err(dns::Error::Denied));
        }
        let resolver = self.env.services.dns.clone();
        let got = resolver.txt(&name).await;
        record::note(self.session_id, |a| a.dns("TXT", &name, &got));
        Ok(got.map_err(dns_err))
    }

    async fn lookup_ptr(&mut self, ip: String) -> R<Result<Vec<String>, dns::Error>> {
        if !self.env.grants(Capability::Dns) {
            return Ok(Err(dns::Error::Denied));
        }
        let Ok(addr) = ip.parse::<IpAddr>() else {
            return Ok(Err(dns::Error::Failed(format!(
                "not an IP address: {ip:?}"
            ))));
        };
        let resolver = self.env.services.dns.clone();
        let got = resolver.ptr(addr).await;
        record::note(self.session_id, |a| a.dns("PTR", &addr.to_string(), &got));
        Ok(got.map_err(dns_err))
    }
}

impl clock::Host for HostState {
    fn now_ms(&mut self) -> R<u64> {
        if !self.env.grants(Capability::Clock) {
            return Ok(0);
        }
        Ok(crate::clock::now_ms())
    }
}

impl lifecycle::Host for HostState {
    fn lease(&mut self) -> R<u64> {
        Ok(self.lease)
    }

    fn quarantined(&mut self) -> R<Option<String>> {
        Ok(self.quarantined.clone())
    }
}

impl metrics::Host for HostState {
    fn counter_add(&mut self, name: String, value: u64, labels: Vec<(String, String)>) -> R<()> {
        if self.env.grants(Capability::Metrics) {
            self.env
                .metrics
                .counter_add(&self.env.name, name, value, labels);
        }
        Ok(())
    }

    fn histogram_record(
        &mut self,
        name: String,
        value: f64,
        labels: Vec<(String, String)>,
    ) -> R<()> {
        if self.env.grants(Capability::Metrics) {
            self.env
                .metrics
                .histogram_record(&self.env.name, name, value, labels);
        }
        Ok(())
    }
}
