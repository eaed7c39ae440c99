"""The lab VM is born hiding the extension; the VM rules and the enable plan expose it."""

from __future__ import annotations

from pathlib import Path

from nestvirt.lab import domain, expose, guest, image, kmod


def spec(accel: str = "tcg") -> domain.LabSpec:
    return domain.LabSpec("nestvirt-lab-t", accel, "AMD", Path("/k/vmlinuz"), Path("/k/initrd.gz"),
                          Path("/k/console.log"))  # fmt: skip


def run(enabled: bool, accel: str = "tcg") -> expose.Exposure:
    s = spec(accel)
    return expose.expose(domain.base_xml(s), lambda x: domain.facts_of(x, s, "qemu:///system"),
                         enabled=enabled)  # fmt: skip


def test_as_built_it_hides_svm_nv_v01() -> None:
    out = run(enabled=False)
    assert [f.code for f in out.before] == ["NV-V01"] == [f.code for f in out.after]
    assert out.plan is None
    assert "-svm" in domain.qemu_args(out.xml)[domain.qemu_args(out.xml).index("-cpu") + 1]


def test_the_enable_plan_exposes_svm_under_tcg() -> None:
    out = run(enabled=True)
    assert [f.code for f in out.before] == ["NV-V01"] and out.after == ()
    assert out.plan is not None and any("NV-V01" in c.codes for c in out.plan.changes)
    assert "<feature policy='require' name='svm'/>" in out.xml
    args = domain.qemu_args(out.xml)
    assert args[args.index("-cpu") + 1] == "EPYC,+svm"
    assert args[args.index("-accel") + 1] == "tcg"
    assert "console=ttyS0" in args[args.index("-append") + 1]


def test_kvm_lab_vm_gets_the_host_extension() -> None:
    out = run(enabled=True, accel="kvm")
    assert out.after == ()
    args = domain.qemu_args(out.xml)
    assert args[args.index("-cpu") + 1] == "host,+svm"


def test_guest_cpu_facts() -> None:
    info = (
        "vendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\nflags\t\t: fpu svm hypervisor npt sse\n"
    )
    cpu = guest.cpu_facts(info)
    assert cpu == {
        "vendor": "AuthenticAMD",
        "model": "AMD EPYC",
        "flags": ["hypervisor", "npt", "svm"],
    }
    assert guest.vendor_module(cpu["vendor"], cpu["flags"]) == "kvm_amd"
    assert guest.vendor_module("GenuineIntel", ["vmx"]) == "kvm_intel"


def test_init_script_has_the_markers() -> None:
    text = image.init_script()
    assert "@@NESTVIRT-LAB-BOOTED@@" in text and "@@NESTVIRT-LAB-END" in text
    assert "nestvirt.lab.guest" in text and text.rstrip().endswith("poweroff -f")


def test_module_load_order(tmp_path: Path) -> None:
    # Minimal ELF files carrying only a .modinfo section.
    def module(name: str, depends: str) -> None:
        info = f"depends={depends}\0name={name}\0".encode()
        strtab = b"\0.modinfo\0.shstrtab\0"
        data = bytearray(0x40)
        data[:6] = b"\x7fELF\x02\x01"
        info_off, str_off = 0x40, 0x40 + len(info)
        sh_off = str_off + len(strtab)
        data += info + strtab
        sections = [bytes(64)]
        import struct

        sections.append(struct.pack("<IIQQQQIIQQ", 1, 1, 0, 0, info_off, len(info), 0, 0, 1, 0))
        sections.append(struct.pack("<IIQQQQIIQQ", 10, 3, 0, 0, str_off, len(strtab), 0, 0, 1, 0))
        struct.pack_into("<Q", data, 0x28, sh_off)
        struct.pack_into("<HHH", data, 0x3A, 64, 3, 2)
        (tmp_path / f"{name.replace('_', '-')}.ko").write_bytes(bytes(data) + b"".join(sections))

    module("kvm_amd", "kvm,ccp")
    module("kvm", "irqbypass")
    module("irqbypass", "")
    module("ccp", "")
    index = kmod.module_index(tmp_path)
    assert kmod.load_order(["kvm_amd"], index) == ["ccp", "irqbypass", "kvm", "kvm_amd"]


def test_smbios_identity_and_guestside_mode_reach_qemu_and_the_kernel() -> None:
    from nestvirt.lab import domain as lab_domain

    spec = lab_domain.LabSpec("n", "tcg", None, Path("/k"), Path("/i"), None, guestside=True)
    xml = lab_domain.base_xml(spec)
    args = lab_domain.qemu_args(
        xml, smbios=("type=1,manufacturer=VMware,, Inc.", "type=0,vendor=X")
    )
    assert args[-4:] == [
        "-smbios",
        "type=1,manufacturer=VMware,, Inc.",
        "-smbios",
        "type=0,vendor=X",
    ]
    assert "nestvirt.lab=guestside" in args[args.index("-append") + 1]
    assert "-smbios" not in lab_domain.qemu_args(xml)
