#!/usr/bin/env python3
"""Check OpenWrt packages of tether-agent the way their package managers read them.

  .ipk: opkg's rules: a gzip'd tar (ustar or GNU headers; opkg's libarchive-less reader does
        not take PAX) holding debian-binary "2.0", control.tar.gz and data.tar.gz; control
        fields; conffiles; the scripts.
  .apk: APKv2: gzip streams (control "cut" tar with .PKGINFO and scripts, then the data tar);
        .PKGINFO fields; datahash is the SHA-256 of the data stream; every file's
        APK-TOOLS.checksum.SHA1 matches.

Both: the files (static binary for the named arch, init script, run wrapper, UCI defaults and
their mapping to the agent's environment variables), modes and owners.

usage: check.py PACKAGE...     exit 0 when every package passes, 1 otherwise
"""

import gzip
import hashlib
import io
import re
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path

NAME = "tether-agent"
CONFFILE = "/etc/config/tether"
# OpenWrt arch -> (ELF e_machine, little endian)
ARCHES = {
    "x86_64": (62, True),
    "aarch64_cortex-a53": (183, True),
    "aarch64_generic": (183, True),
    "mips_24kc": (8, False),
    "mipsel_24kc": (8, True),
}
# UCI option -> environment variable the init script must hand to the agent
UCI_ENV = {
    "url": "SUPPORT_URL",
    "key": "SYSTEM_KEY",
    "secret": "SYSTEM_SECRET",
    "node_id": "NODE_ID",
    "static_service": "STATIC_SERVICES",
    "exclude": "EXCLUDE_PATTERNS",
    "tls_insecure": "TLS_INSECURE",
    "reconnect_delay": "RECONNECT_DELAY",
    "max_reconnect_delay": "MAX_RECONNECT_DELAY",
    "diagnostics_dir": "DIAGNOSTICS_DIR",
    "ca_file": "TETHER_CA_FILE",
    "relay_pin": "TETHER_RELAY_PIN",
    "no_terminal": "TETHER_NO_TERMINAL",
    "platform": "TETHER_PLATFORM",
    "redis_addr": "REDIS_ADDR",
    "discovery_interval": "DISCOVERY_INTERVAL",
    "services_file": "TETHER_SERVICES_FILE",
    "no_support_users": "TETHER_NO_SUPPORT_USERS",
}
# Options that must be in the shipped /etc/config/tether (lists are shown commented out)
UCI_DEFAULTS = {
    "enabled": "1",
    "url": "",
    "key": "",
    "secret": "",
    "platform": "auto",
    "tls_insecure": "0",
    "no_terminal": "0",
    "reconnect_delay": "5s",
    "max_reconnect_delay": "5m",
}
FILES = {
    # path: mode
    "usr/bin/tether-agent": 0o755,
    "usr/libexec/tether-agent-run": 0o755,
    "etc/init.d/tether-agent": 0o755,
    "etc/config/tether": 0o600,
    f"lib/apk/packages/{NAME}.conffiles": 0o644,
}


class Failed(Exception):
    pass


def need(cond: bool, what: str) -> None:
    if not cond:
        raise Failed(what)


def read_tar(data: bytes, what: str, allow_pax: bool) -> dict[str, tuple[tarfile.TarInfo, bytes]]:
    """Members by name (leading "./" dropped), after checking the raw headers."""
    check_headers(data, what, allow_pax)
    out = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        for ti in tar:
            name = ti.name[2:] if ti.name.startswith("./") else ti.name
            content = tar.extractfile(ti).read() if ti.isfile() else b""
            out[name.rstrip("/")] = (ti, content)
    return out


def check_headers(data: bytes, what: str, allow_pax: bool) -> None:
    """Every header block is ustar/GNU with a valid checksum; PAX only where allowed."""
    off = 0
    while off + 512 <= len(data):
        block = data[off : off + 512]
        if block == b"\0" * 512:
            break
        magic = block[257:265]
        need(magic in (b"ustar\x0000", b"ustar  \x00"), f"{what}: header at {off} is not ustar/GNU ({magic!r})")
        stored = int(block[148:156].split(b"\0")[0].strip() or b"0", 8)
        computed = sum(block[:148]) + 8 * 32 + sum(block[156:])
        need(stored == computed, f"{what}: bad header checksum at {off}")
        kind = block[156:157]
        need(allow_pax or kind not in (b"x", b"g"), f"{what}: PAX header at {off} (opkg reads ustar/GNU only)")
        size = int(block[124:136].split(b"\0")[0].strip() or b"0", 8)
        off += 512 + (size + 511) // 512 * 512


def gzip_streams(data: bytes) -> list[bytes]:
    """The raw bytes of each concatenated gzip stream."""
    streams, off = [], 0
    while off < len(data):
        need(data[off : off + 2] == b"\x1f\x8b", f"no gzip stream at byte {off}")
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        d.decompress(data[off:])
        need(d.eof, "truncated gzip stream")
        end = len(data) - len(d.unused_data)
        streams.append(data[off:end])
        off = end
    return streams


def check_elf(binary: bytes, arch: str) -> None:
    machine, little = ARCHES[arch]
    need(binary[:4] == b"\x7fELF", "usr/bin/tether-agent is not ELF")
    order = "little" if binary[5] == 1 else "big"
    need((order == "little") == little, f"usr/bin/tether-agent is {order} endian, {arch} is not")
    need(int.from_bytes(binary[18:20], order) == machine, f"usr/bin/tether-agent is not built for {arch}")
    # static: no PT_INTERP program header
    is64 = binary[4] == 2
    phoff = int.from_bytes(binary[32:40] if is64 else binary[28:32], order)
    phentsize = int.from_bytes(binary[54:56] if is64 else binary[42:44], order)
    phnum = int.from_bytes(binary[56:58] if is64 else binary[44:46], order)
    for i in range(phnum):
        p_type = int.from_bytes(binary[phoff + i * phentsize : phoff + i * phentsize + 4], order)
        need(p_type != 3, "usr/bin/tether-agent is dynamically linked (PT_INTERP)")


def parse_uci(text: str) -> dict[str, dict[str, str]]:
    sections, cur = {}, None
    for line in text.splitlines():
        words = line.strip().split(None, 2)
        if not words or words[0].startswith("#"):
            continue
        if words[0] == "config":
            cur = words[2].strip("'\"") if len(words) > 2 else words[1]
            sections[cur] = {".type": words[1]}
        elif words[0] in ("option", "list") and cur is not None:
            sections[cur][words[1]] = words[2].strip("'\"") if len(words) > 2 else ""
    return sections


def sh_syntax(script: bytes, what: str) -> None:
    r = subprocess.run(["sh", "-n"], input=script, capture_output=True)
    need(r.returncode == 0, f"{what}: sh -n: {r.stderr.decode().strip()}")


def check_data(files: dict[str, tuple[tarfile.TarInfo, bytes]], arch: str) -> None:
    for path, mode in FILES.items():
        need(path in files, f"data: {path} missing")
        ti, _ = files[path]
        need(ti.isfile(), f"data: {path} is not a regular file")
        need(ti.mode & 0o7777 == mode, f"data: {path} has mode {ti.mode:o}, want {mode:o}")
        need(ti.uid == 0 and ti.gid == 0, f"data: {path} is not owned by root")
    check_elf(files["usr/bin/tether-agent"][1], arch)

    init = files["etc/init.d/tether-agent"][1].decode()
    need(init.startswith("#!/bin/sh /etc/rc.common\n"), "init: not an rc.common script")
    for pattern, what in [
        (r"(?m)^START=\d+$", "START="),
        (r"(?m)^STOP=\d+$", "STOP="),
        (r"(?m)^USE_PROCD=1$", "USE_PROCD=1"),
        (r"(?m)^start_service\(\)", "start_service()"),
        (r"procd_open_instance", "procd_open_instance"),
        (r"procd_set_param respawn", "procd_set_param respawn"),
        (r"procd_close_instance", "procd_close_instance"),
        (r"config_load tether\b", "config_load tether"),
        (r"procd_add_reload_trigger tether\b", "reload trigger on /etc/config/tether"),
        (r"/usr/libexec/tether-agent-run", "the run wrapper (exit 3 is not respawned)"),
        (r"not configured", "a log line when not configured"),
    ]:
        need(re.search(pattern, init) is not None, f"init: no {what}")
    for option, env in UCI_ENV.items():
        need(
            re.search(rf"\b{env}\b.*\b{option}\b", init) is not None,
            f"init: UCI option {option} is not mapped to {env}",
        )
    sh_syntax(files["etc/init.d/tether-agent"][1], "init")

    run = files["usr/libexec/tether-agent-run"][1].decode()
    need('"$rc" = 3' in run and '/etc/init.d/tether-agent}" stop' in run, "run wrapper: exit 3 does not stop the service")
    sh_syntax(files["usr/libexec/tether-agent-run"][1], "run wrapper")

    uci = parse_uci(files["etc/config/tether"][1].decode())
    need(uci.get("agent", {}).get(".type") == "agent", "uci: no `config agent 'agent'` section")
    for option, value in UCI_DEFAULTS.items():
        need(uci["agent"].get(option) == value, f"uci: option {option} is {uci['agent'].get(option)!r}, want {value!r}")
    raw = files["etc/config/tether"][1].decode()
    for option in UCI_ENV:
        need(re.search(rf"(?m)^\s*#?\s*(option|list) {option} ", raw) is not None, f"uci: option {option} not documented")

    conffiles = files[f"lib/apk/packages/{NAME}.conffiles"][1].decode().split()
    need(CONFFILE in conffiles, f"lib/apk/packages/{NAME}.conffiles does not list {CONFFILE}")


def control_fields(text: str) -> dict[str, str]:
    fields, last = {}, None
    for line in text.splitlines():
        if line.startswith((" ", "\t")) and last:
            fields[last] += "\n" + line
        elif ":" in line:
            last, value = line.split(":", 1)
            fields[last] = value.strip()
    return fields


def check_ipk(path: Path) -> str:
    raw = path.read_bytes()
    need(raw[:2] == b"\x1f\x8b", "not gzip (opkg on OpenWrt <= 24.10 wants a gzip'd tar, not ar)")
    outer = read_tar(gzip.decompress(raw), "outer tar", allow_pax=False)
    need(set(outer) == {"debian-binary", "control.tar.gz", "data.tar.gz"}, f"outer members: {sorted(outer)}")
    need(outer["debian-binary"][1] == b"2.0\n", "debian-binary is not 2.0")
    control = read_tar(gzip.decompress(outer["control.tar.gz"][1]), "control.tar.gz", allow_pax=False)
    data = read_tar(gzip.decompress(outer["data.tar.gz"][1]), "data.tar.gz", allow_pax=False)

    fields = control_fields(control["control"][1].decode())
    for f in ("Package", "Version", "Architecture", "Depends", "Maintainer", "Description", "Installed-Size"):
        need(fields.get(f), f"control: no {f}")
    need(fields["Package"] == NAME, f"control: Package is {fields['Package']}")
    arch = fields["Architecture"]
    need(arch in ARCHES, f"control: unknown Architecture {arch}")
    need(path.name.endswith(f"_{arch}.ipk"), f"file name does not end in _{arch}.ipk")
    need(re.fullmatch(r"\d+\.\d+\.\d+-r\d+", fields["Version"]) is not None, f"control: Version {fields['Version']}")
    need("procd" in fields["Depends"], "control: Depends lacks procd")
    need(int(fields["Installed-Size"]) == sum(len(c) for _, c in data.values()), "control: Installed-Size is wrong")
    need(control["conffiles"][1].decode().split() == [CONFFILE], "conffiles must list /etc/config/tether")
    for script in ("postinst", "prerm"):
        ti, body = control[script]
        need(ti.mode & 0o111 != 0, f"control: {script} is not executable")
        sh_syntax(body, script)
    post = control["postinst"][1].decode()
    need("enable" in post and "IPKG_INSTROOT" in post, "postinst: does not enable the init script")
    prerm = control["prerm"][1].decode()
    need("stop" in prerm and "disable" in prerm, "prerm: does not stop and disable")
    check_data(data, arch)
    return f"{fields['Package']} {fields['Version']} {arch}"


def check_apk(path: Path) -> str:
    streams = gzip_streams(path.read_bytes())
    need(len(streams) == 2, f"{len(streams)} gzip streams, want 2 (control, data; unsigned)")
    control_raw = zlib.decompress(streams[0], 16 + zlib.MAX_WBITS)
    need(not control_raw.endswith(b"\0" * 1024), "control segment has end-of-archive blocks (must be cut)")
    control = read_tar(control_raw, "control segment", allow_pax=False)
    need(list(control)[0] == ".PKGINFO", "control segment does not start with .PKGINFO")
    info: dict[str, list[str]] = {}
    for line in control[".PKGINFO"][1].decode().splitlines():
        if line.startswith("#") or " = " not in line:
            continue
        k, v = line.split(" = ", 1)
        info.setdefault(k, []).append(v)
    for f in ("pkgname", "pkgver", "arch", "size", "pkgdesc", "license", "depend", "datahash"):
        need(f in info, f".PKGINFO: no {f}")
    need(info["pkgname"] == [NAME], f".PKGINFO: pkgname {info['pkgname']}")
    arch = info["arch"][0]
    need(arch in ARCHES, f".PKGINFO: unknown arch {arch}")
    need(re.fullmatch(r"\d+\.\d+\.\d+-r\d+", info["pkgver"][0]) is not None, f".PKGINFO: pkgver {info['pkgver']}")
    need("procd" in info["depend"], ".PKGINFO: no depend = procd")
    need(info["datahash"] == [hashlib.sha256(streams[1]).hexdigest()], ".PKGINFO: datahash does not match the data stream")
    for script in (".post-install", ".pre-deinstall", ".post-upgrade"):
        need(script in control, f"control: no {script}")
        need(control[script][0].mode & 0o111 != 0, f"control: {script} is not executable")
        sh_syntax(control[script][1], script)

    data = read_tar(zlib.decompress(streams[1], 16 + zlib.MAX_WBITS), "data segment", allow_pax=True)
    need(int(info["size"][0]) == sum(len(c) for _, c in data.values()), ".PKGINFO: size is wrong")
    for name, (ti, content) in data.items():
        if ti.isfile():
            want = ti.pax_headers.get("APK-TOOLS.checksum.SHA1")
            need(want == hashlib.sha1(content).hexdigest(), f"data: {name}: APK-TOOLS.checksum.SHA1 missing or wrong")
    check_data(data, arch)
    return f"{info['pkgname'][0]} {info['pkgver'][0]} {arch}"


def main(paths: list[str]) -> int:
    if not paths:
        print(__doc__, file=sys.stderr)
        return 2
    failed = 0
    for p in map(Path, paths):
        try:
            summary = check_ipk(p) if p.suffix == ".ipk" else check_apk(p)
            print(f"ok   {p.name}: {summary}")
        except (Failed, KeyError, OSError, tarfile.TarError, zlib.error, ValueError) as e:
            failed += 1
            print(f"FAIL {p.name}: {type(e).__name__ + ': ' if not isinstance(e, Failed) else ''}{e}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
