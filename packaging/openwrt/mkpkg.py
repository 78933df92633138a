#!/usr/bin/env python3
"""Build the OpenWrt packages of tether-agent from a binary in dist/, with the standard library
only (no OpenWrt SDK, no opkg, no apk-tools on the build host).

  .ipk (opkg, OpenWrt <= 24.10): a gzip'd tar (GNU headers, not PAX) of ./debian-binary,
       ./data.tar.gz and ./control.tar.gz, as OpenWrt's ipkg-build writes it.
  .apk (apk-tools, OpenWrt >= 25.12): APKv2, i.e. two concatenated gzip streams: the control
       tar (.PKGINFO and the scripts, without end-of-archive blocks) and the data tar (each
       file preceded by a PAX header APK-TOOLS.checksum.SHA1); .PKGINFO's datahash is the
       SHA-256 of the data stream. Unsigned: install with `apk add --allow-untrusted`.

Both hold the same files; packaging/openwrt/check.py verifies them.

usage: mkpkg.py --binary FILE --arch mips_24kc --version 0.1.0 --out dist/
"""

import argparse
import gzip
import hashlib
import os
import sys
import tarfile
from pathlib import Path

NAME = "tether-agent"
RELEASE = "r1"
MAINTAINER = "Tether maintainers <tether@example.invalid>"
LICENSE = "Apache-2.0"
URL = "https://example.invalid/tether"
SUMMARY = "Tether remote-support agent"
DESCRIPTION = (
    "One outbound WebSocket to a Tether relay, so that support can reach this device's web UIs,\n"
    " services and (optionally) a terminal although the site accepts no inbound connections.\n"
    " Configure it in /etc/config/tether."
)
# procd runs the init script; uci (and /lib/functions.sh from base-files) read the config.
DEPENDS = ["procd", "uci"]
CONFFILES = ["/etc/config/tether"]
FILES = Path(__file__).resolve().parent / "files"

# The scripts are the same for both formats: enable the init script, and (re)start it on a
# running device; the init script logs and starts nothing while url/key/secret are unset.
# IPKG_INSTROOT is set when an image builder installs into a root that is not running.
POSTINST = """#!/bin/sh
[ "${IPKG_NO_SCRIPT}" = "1" ] && exit 0
if [ -n "${IPKG_INSTROOT}" ]; then
	IPKG_INSTROOT="${IPKG_INSTROOT}" /bin/sh "${IPKG_INSTROOT}/etc/rc.common" \\
		"${IPKG_INSTROOT}/etc/init.d/tether-agent" enable
	exit 0
fi
/etc/init.d/tether-agent enable
/etc/init.d/tether-agent restart || true
exit 0
"""
PRERM = """#!/bin/sh
[ "${IPKG_NO_SCRIPT}" = "1" ] && exit 0
[ -n "${IPKG_INSTROOT}" ] && exit 0
[ "${PKG_UPGRADE}" = "1" ] && exit 0
/etc/init.d/tether-agent stop || true
/etc/init.d/tether-agent disable || true
exit 0
"""
POSTUPGRADE = """#!/bin/sh
[ "${IPKG_NO_SCRIPT}" = "1" ] && exit 0
[ -n "${IPKG_INSTROOT}" ] && exit 0
/etc/init.d/tether-agent restart || true
exit 0
"""


def data_files(binary: Path) -> list[tuple[str, bytes, int]]:
    """(path without leading slash, content, mode) of every installed file."""
    conffiles = "".join(f"{c}\n" for c in CONFFILES).encode()
    return [
        ("usr/bin/tether-agent", binary.read_bytes(), 0o755),
        ("usr/libexec/tether-agent-run", (FILES / "tether-agent-run").read_bytes(), 0o755),
        ("etc/init.d/tether-agent", (FILES / "tether-agent.init").read_bytes(), 0o755),
        # holds the system secret: root only
        ("etc/config/tether", (FILES / "tether.config").read_bytes(), 0o600),
        # OpenWrt's apk keeps the conffile list here (sysupgrade keeps these files too)
        (f"lib/apk/packages/{NAME}.conffiles", conffiles, 0o644),
    ]


def tarinfo(name: str, size: int, mode: int, mtime: int, kind=tarfile.REGTYPE) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.size, ti.mode, ti.mtime, ti.type = size, mode, mtime, kind
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = "root"
    return ti


def parent_dirs(paths: list[str]) -> list[str]:
    dirs = set()
    for p in paths:
        parts = p.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            dirs.add("/".join(parts[:i]))
    return sorted(dirs)


def member_bytes(ti: tarfile.TarInfo, content: bytes, fmt: int) -> bytes:
    """One tar member (header, content, padding to 512) without end-of-archive blocks."""
    buf = ti.tobuf(format=fmt, encoding="utf-8", errors="strict")
    pad = (-len(content)) % tarfile.BLOCKSIZE
    return buf + content + b"\0" * pad


def tar_bytes(members: list[tuple[tarfile.TarInfo, bytes]], fmt: int, end: bool = True) -> bytes:
    out = b"".join(member_bytes(ti, c, fmt) for ti, c in members)
    if end:
        out += b"\0" * (2 * tarfile.BLOCKSIZE)
    return out


def gz(data: bytes, mtime: int) -> bytes:
    return gzip.compress(data, compresslevel=9, mtime=mtime)


def installed_size(files) -> int:
    return sum(len(c) for _, c, _ in files)


def build_ipk(binary: Path, arch: str, version: str, mtime: int) -> bytes:
    files = data_files(binary)
    paths = [p for p, _, _ in files]
    data = [(tarinfo(f"./{d}/", 0, 0o755, mtime, tarfile.DIRTYPE), b"") for d in parent_dirs(paths)]
    data += [(tarinfo(f"./{p}", len(c), m, mtime), c) for p, c, m in files]
    control = "".join(
        f"{k}: {v}\n"
        for k, v in [
            ("Package", NAME),
            ("Version", f"{version}-{RELEASE}"),
            ("Depends", ", ".join(DEPENDS)),
            ("Source", "packaging/openwrt"),
            ("SourceName", NAME),
            ("License", LICENSE),
            ("Section", "net"),
            ("SourceDateEpoch", str(mtime)),
            ("URL", URL),
            ("Maintainer", MAINTAINER),
            ("Architecture", arch),
            ("Installed-Size", str(installed_size(files))),
            ("Description", f"{SUMMARY}\n {DESCRIPTION}"),
        ]
    )
    scripts = [("postinst", POSTINST), ("prerm", PRERM)]
    ctl = [(tarinfo("./", 0, 0o755, mtime, tarfile.DIRTYPE), b"")]
    ctl.append((tarinfo("./control", len(control), 0o644, mtime), control.encode()))
    conffiles = "".join(f"{c}\n" for c in CONFFILES).encode()
    ctl.append((tarinfo("./conffiles", len(conffiles), 0o644, mtime), conffiles))
    ctl += [(tarinfo(f"./{n}", len(s), 0o755, mtime), s.encode()) for n, s in scripts]
    outer = [
        (tarinfo("./debian-binary", 4, 0o644, mtime), b"2.0\n"),
        (None, gz(tar_bytes(data, tarfile.GNU_FORMAT), mtime)),
        (None, gz(tar_bytes(ctl, tarfile.GNU_FORMAT), mtime)),
    ]
    outer[1] = (tarinfo("./data.tar.gz", len(outer[1][1]), 0o644, mtime), outer[1][1])
    outer[2] = (tarinfo("./control.tar.gz", len(outer[2][1]), 0o644, mtime), outer[2][1])
    return gz(tar_bytes(outer, tarfile.GNU_FORMAT), mtime)


def build_apk(binary: Path, arch: str, version: str, mtime: int) -> bytes:
    files = data_files(binary)
    paths = [p for p, _, _ in files]
    data = [(tarinfo(d, 0, 0o755, mtime, tarfile.DIRTYPE), b"") for d in parent_dirs(paths)]
    for p, c, m in files:
        ti = tarinfo(p, len(c), m, mtime)
        ti.pax_headers = {"APK-TOOLS.checksum.SHA1": hashlib.sha1(c).hexdigest()}
        data.append((ti, c))
    data_gz = gz(tar_bytes(data, tarfile.PAX_FORMAT), mtime)
    info = [
        "# Generated by tether packaging/openwrt/mkpkg.py",
        f"pkgname = {NAME}",
        f"pkgver = {version}-{RELEASE}",
        f"pkgdesc = {SUMMARY}",
        f"url = {URL}",
        f"builddate = {mtime}",
        f"packager = {MAINTAINER}",
        f"size = {installed_size(files)}",
        f"arch = {arch}",
        f"origin = {NAME}",
        f"maintainer = {MAINTAINER}",
        f"license = {LICENSE}",
        *[f"depend = {d}" for d in DEPENDS],
        f"datahash = {hashlib.sha256(data_gz).hexdigest()}",
    ]
    pkginfo = ("\n".join(info) + "\n").encode()
    scripts = [(".post-install", POSTINST), (".post-upgrade", POSTUPGRADE), (".pre-deinstall", PRERM)]
    ctl = [(tarinfo(".PKGINFO", len(pkginfo), 0o644, mtime), pkginfo)]
    ctl += [(tarinfo(n, len(s), 0o755, mtime), s.encode()) for n, s in scripts]
    # the control segment is a "cut" tar: apk reads the data segment right after it
    control_gz = gz(tar_bytes(ctl, tarfile.USTAR_FORMAT, end=False), mtime)
    return control_gz + data_gz


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--binary", type=Path, required=True)
    ap.add_argument("--arch", required=True, help="OpenWrt arch, e.g. mips_24kc")
    ap.add_argument("--version", required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    mtime = int(os.environ.get("SOURCE_DATE_EPOCH", "0")) or 1
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"{NAME}_{args.version}-{RELEASE}_{args.arch}"
    for ext, build in (("ipk", build_ipk), ("apk", build_apk)):
        path = args.out / f"{stem}.{ext}"
        path.write_bytes(build(args.binary, args.arch, args.version, mtime))
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
