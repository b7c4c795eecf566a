"""Machine identity (issue 13): CPUs with the same model string but another family/model/
stepping (x86) or MIDR part/variant (aarch64), or other cache sizes, are other machines to the
plan cache; cache_sizes() reads sysfs and falls back when it is absent."""
from __future__ import annotations

import shutil

import pytest

import im2row
from im2row import hwinfo, wisdom

X86 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: {family}
model\t\t: {model}
model name\t: AMD EPYC
stepping\t: 1
flags\t\t: fpu avx2

processor\t: 1
vendor_id\t: AuthenticAMD
cpu family\t: {family}
model\t\t: {model}
model name\t: AMD EPYC
stepping\t: 1
"""

ARM = """processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x0
CPU part\t: {part0}
CPU revision\t: 3

processor\t: 1
BogoMIPS\t: 50.00
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x1
CPU part\t: {part1}
CPU revision\t: 0
"""


@pytest.fixture
def fake(monkeypatch, tmp_path):
    """Point hwinfo at a fake /proc/cpuinfo and cache sysfs folder; returns a writer."""
    cpuinfo = tmp_path / "cpuinfo"
    sysfs = tmp_path / "cache"
    monkeypatch.setattr(hwinfo, "CPUINFO", str(cpuinfo))
    monkeypatch.setattr(hwinfo, "CACHE_SYSFS", str(sysfs))
    hwinfo._cache_sizes.cache_clear()

    def write(text=None, caches=None):
        if text is not None:
            cpuinfo.write_text(text)
        shutil.rmtree(sysfs, ignore_errors=True)
        for index, (level, kind, size, line) in enumerate(caches or []):
            folder = sysfs / f"index{index}"
            folder.mkdir(parents=True)
            for name, value in (("level", level), ("type", kind), ("size", size),
                                ("coherency_line_size", line)):
                (folder / name).write_text(f"{value}\n")
        hwinfo._cache_sizes.cache_clear()

    yield write
    hwinfo._cache_sizes.cache_clear()


def identity_now() -> dict:
    """What machine_identity() computes, without its per-process cache."""
    return wisdom.machine_identity.__wrapped__()


def test_x86_family_model_stepping(fake):
    fake(X86.format(family=25, model=17))
    assert hwinfo.cpu_identity() == {"vendor": "AuthenticAMD", "family": "25", "model": "17",
                                     "stepping": "1"}
    assert hwinfo.cpu_model() == "AMD EPYC"


def test_aarch64_midr_per_core_type(fake):
    fake(ARM.format(part0="0xd08", part1="0xd03"))
    cores = hwinfo.cpu_identity()["cores"]
    assert {(c["implementer"], c["part"], c["variant"]) for c in cores} == {
        ("0x41", "0xd08", "0x0"), ("0x41", "0xd03", "0x1")}
    fake(ARM.format(part0="0xd08", part1="0xd08").replace("0x1\n", "0x0\n").replace(
        "revision\t: 0", "revision\t: 3"))
    assert len(hwinfo.cpu_identity()["cores"]) == 1          # one core type


def test_same_model_string_other_generation_is_another_machine(fake):
    fake(X86.format(family=25, model=17))
    zen4 = identity_now()
    fake(X86.format(family=23, model=49))
    zen2 = identity_now()
    assert zen4["cpu"] == zen2["cpu"] == "AMD EPYC"
    assert wisdom._identity_id(zen4) != wisdom._identity_id(zen2)


def test_arm_part_changes_the_identity(fake):
    fake(ARM.format(part0="0xd08", part1="0xd08"))
    a72 = identity_now()
    fake(ARM.format(part0="0xd0c", part1="0xd0c"))
    n1 = identity_now()
    assert wisdom._identity_id(a72) != wisdom._identity_id(n1)


def test_cache_sizes_from_sysfs(fake):
    fake(caches=[(1, "Data", "48K", 64), (1, "Instruction", "32K", 64),
                 (2, "Unified", "2048K", 64), (3, "Unified", "96M", 64)])
    assert hwinfo.cache_sizes() == {"l1d": 48 << 10, "l2": 2 << 20, "l3": 96 << 20, "line": 64}


def test_cache_sizes_change_the_identity(fake):
    fake(caches=[(1, "Data", "32K", 64), (2, "Unified", "1024K", 64), (3, "Unified", "32M", 64)])
    small = identity_now()
    fake(caches=[(1, "Data", "32K", 64), (2, "Unified", "1024K", 64), (3, "Unified", "256M", 64)])
    big = identity_now()
    assert big["caches"]["l3"] == 256 << 20 and small["caches"]["l3"] == 32 << 20
    assert wisdom._identity_id(small) != wisdom._identity_id(big)


def test_cache_sizes_fall_back_without_sysfs_or_cpuinfo(fake):
    # nothing written: neither file exists
    sizes = hwinfo.cache_sizes()
    assert set(sizes) == {"l1d", "l2", "l3", "line"}
    assert all(isinstance(v, int) and v >= 0 for v in sizes.values())
    assert sizes["l1d"] > 0 and sizes["l2"] > 0 and sizes["line"] > 0
    assert hwinfo.cpu_identity() == {}
    assert hwinfo.cpu_model()                                # platform's answer


def test_garbled_sysfs_is_ignored(fake):
    fake(caches=[(1, "Data", "lots", "x"), (2, "Unified", "-5K", 64)])
    sizes = hwinfo.cache_sizes()
    assert sizes["l1d"] > 0 and sizes["l2"] > 0 and sizes["line"] > 0


def test_info_shows_identity_and_caches(capsys, cache):
    from im2row.__main__ import main
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    sizes = hwinfo.cache_sizes()
    assert "caches" in out and "l1d" in out and "line" in out
    assert im2row.get_num_threads() >= 1
    identity = wisdom.machine_identity()
    assert identity["caches"] == sizes and identity["cpu_id"] == hwinfo.cpu_identity()
