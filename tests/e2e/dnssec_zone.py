"""A DNSSEC-signed zone served by a real authoritative server on loopback: NSD (Debian `nsd`)
with a zone signed by `ldns-signzone` (Debian `ldnsutils`), one ECDSA P-256 key that is both
KSK and ZSK. That key's DNSKEY record is the trust anchor a validating resolver is given
(`delivery.dane.trust_anchor`): with every DNSKEY of the zone anchored, no DS lookup in a
parent zone is needed, so the authoritative server is all the DNS there is.

Unsigned child zones can be served next to it, delegated without a DS record: an insecure
delegation (RFC 4035 5.2), which the signed zone's NSEC record at the cut proves. NSD answers
a DS query at the cut from the parent, as RFC 4035 3.1.4.1 asks."""

from __future__ import annotations

import base64
import shutil
import subprocess
import time
from pathlib import Path

from outbound_support import free_port, shared_tmpdir

NSD = shutil.which("nsd") or "/usr/sbin/nsd"


def available() -> bool:
    return Path(NSD).exists() and shutil.which("ldns-signzone") is not None and \
        shutil.which("ldns-keygen") is not None


def make_key(directory: Path, zone: str) -> tuple[str, Path]:
    """A new signing key for `zone`: (the key's file base name, its `.key` file with the
    DNSKEY record)."""
    out = subprocess.run(["ldns-keygen", "-a", "ECDSAP256SHA256", "-k", zone], cwd=directory,
                         check=True, capture_output=True, text=True).stdout.strip()
    return out, directory / f"{out}.key"


class SignedZone:
    """`zone` with `records` (zone-file lines, names relative to the zone), signed and
    served by NSD on 127.0.0.1:<port> over UDP and TCP; `children` maps a label to the
    records of an unsigned child zone `<label>.<zone>`, delegated without DS."""

    def __init__(self, zone: str, records: list[str],
                 children: dict[str, list[str]] | None = None) -> None:
        self.zone = zone.rstrip(".")
        self.dir = shared_tmpdir("dnssec")
        self.key_base, self.anchor = make_key(self.dir, self.zone)
        self.children = dict(children or {})
        self.records = list(records)
        for label in self.children:
            # The delegation and its glue; no DS: the child is insecure.
            self.records += [f"{label} IN NS ns.{label}", f"ns.{label} IN A 127.0.0.1"]
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.sign()
        self.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @staticmethod
    def zone_text(z: str, records: list[str]) -> str:
        return "\n".join([
            f"$ORIGIN {z}.", "$TTL 300",
            f"@ IN SOA ns.{z}. hostmaster.{z}. 1 3600 600 86400 60",
            f"@ IN NS ns.{z}.", "ns IN A 127.0.0.1", *records, ""])

    def sign(self, corrupt: list[str] = ()) -> None:
        """Signs the zone; each name in `corrupt` (relative, `name` for its TLSA RRset or
        `name/TYPE`) gets that RRset's RRSIG damaged. The child zones are written unsigned."""
        z = self.zone
        (self.dir / "zone").write_text(self.zone_text(z, self.records))
        for label, records in self.children.items():
            (self.dir / f"child.{label}").write_text(self.zone_text(f"{label}.{z}", records))
        targets = {(n.split("/")[0].lower(), (n.split("/") + ["TLSA"])[1].upper()) for n in corrupt}
        subprocess.run(["ldns-signzone", "-f", "zone.signed", "zone", self.key_base],
                       cwd=self.dir, check=True, capture_output=True)
        if corrupt:
            signed = (self.dir / "zone.signed").read_text().splitlines()
            for i, line in enumerate(signed):
                f = line.split()
                if len(f) > 5 and f[3] == "RRSIG" and \
                        any(f[0].lower() == f"{n}.{z}.".lower() and f[4] == t for n, t in targets):
                    # Flip bits in the signature (the last field), keeping it valid base64.
                    sig = bytearray(base64.b64decode("".join(f[12:])))
                    sig[10] ^= 0xff
                    signed[i] = "\t".join(f[:12] + [base64.b64encode(bytes(sig)).decode()])
            (self.dir / "zone.signed").write_text("\n".join(signed) + "\n")

    def start(self) -> None:
        conf = self.dir / "nsd.conf"
        conf.write_text(f"""server:
  ip-address: 127.0.0.1
  port: {self.port}
  username: ""
  chroot: ""
  zonesdir: "{self.dir}"
  database: ""
  zonelistfile: "{self.dir}/zone.list"
  xfrdfile: "{self.dir}/xfrd.state"
  xfrdir: "{self.dir}"
  pidfile: "{self.dir}/nsd.pid"
  logfile: "{self.dir}/nsd.log"
  server-count: 1
  verbosity: 1
remote-control:
  control-enable: no
zone:
  name: "{self.zone}"
  zonefile: "{self.dir}/zone.signed"
""" + "".join(f"""zone:
  name: "{label}.{self.zone}"
  zonefile: "{self.dir}/child.{label}"
""" for label in self.children))
        self.proc = subprocess.Popen([NSD, "-d", "-c", str(conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._answers():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"nsd did not start: {self.log()}")

    def _answers(self) -> bool:
        """Whether NSD answers the SOA query over UDP."""
        import socket
        import struct
        q = struct.pack(">HHHHHH", 0x1234, 0, 1, 0, 0, 0)
        for label in (self.zone + ".").split(".")[:-1]:
            q += bytes([len(label)]) + label.encode()
        q += b"\x00" + struct.pack(">HH", 6, 1)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(0.3)
        try:
            s.sendto(q, ("127.0.0.1", self.port))
            data, _ = s.recvfrom(4096)
            return data[:2] == b"\x12\x34" and (data[3] & 0x0f) == 0
        except OSError:
            return False
        finally:
            s.close()

    def log(self) -> str:
        p = self.dir / "nsd.log"
        return p.read_text() if p.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def spki_sha256(cert: Path) -> str:
    """The hex SHA-256 of a PEM certificate's SubjectPublicKeyInfo: the data of a
    `3 1 1` TLSA record."""
    pub = subprocess.run(["openssl", "x509", "-in", str(cert), "-pubkey", "-noout"],
                         check=True, capture_output=True).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "DER"], input=pub,
                         check=True, capture_output=True).stdout
    import hashlib
    return hashlib.sha256(der).hexdigest()

