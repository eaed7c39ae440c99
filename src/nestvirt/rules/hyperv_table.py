"""Which Windows lifted which limit: one table for every Hyper-V rule (issue 12).

Each row says, for one rule, the host builds and VM configuration versions it
judges, what it says there, and where that comes from. The rules read their
thresholds from here, and `nestvirt explain CODE` shows the rows (the
`## Versions` section `versioned()` adds to a rule's docstring), so the text and
the code cannot drift apart.

Eras (which build lifted which preview limit; `nestvirt explain` shows the rows):

* before 10565: no nested virtualization at all;
* preview, 10565 ≤ build < 14361: the 2015 preview page's limits, kept
  exactly (VBS blocks, dynamic memory blocks, checkpoints and save/restore
  fail);
* 14361 and later, VM configuration version ≥ 8.0 (GA in build 14393,
  Windows 10 1607 / Windows Server 2016): today's behaviour.

docs/hyperv-facts.md states each fact the rows rest on, the builds and VM
configuration versions it holds for, and its source (docs/hyperv-facts.md#builds-and-eras).

Standard library only, and cheap to import: rules/operations.py (which the
libvirt hook imports) reads it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from nestvirt.model import Unknown

PREVIEW_BUILD = 10565  # Windows Insider build 10565 (Oct 2015): the first with nesting
LIFTED_BUILD = 14361  # Insider build 14361 (June 2016): VBS, checkpoints, save/start work
GA_BUILD = 14393  # Windows 10 1607 / Windows Server 2016: nesting generally available
LIFTED_VERSION = (8, 0)  # VM configuration version of build 14361+ (required from then on)
AMD_BUILD = 20348  # Windows Server 2022 (Windows 11: 22000): first with AMD nesting
AMD_VERSION = (9, 3)  # VM configuration version AMD nesting needs
WS2019_BUILD = 17763  # Windows Server 2019 / Windows 10 1809
L1_VCPU_LIMIT = 225  # "When using Windows Server 2019 as the first level VM … 225 or less"


@dataclass(frozen=True, slots=True)
class Source:
    title: str
    url: str

    def __str__(self) -> str:
        return f'"{self.title}", {self.url}'


PREVIEW_PAGE = Source(
    "Windows Insider Preview: Nested Virtualization (build 10565, October 2015)",
    "https://techcommunity.microsoft.com/t5/virtualization/"
    "windows-insider-preview-nested-virtualization/ba-p/382256",
)
NOTES_14361 = Source(
    "Nested Virtualization Preview for Windows Insiders: Builds 14361+ (June 2016; "
    "MicrosoftDocs/Virtualization-Documentation, nesting.md)",
    "https://github.com/MicrosoftDocs/Virtualization-Documentation/blob/"
    "c64de82d3a7119ee84de4fbec4a9b3873259d444/virtualization/hyperv_on_windows/user_guide/"
    "nesting.md",
)
WHAT_IS = Source(
    "What is Nested Virtualization for Hyper-V? (Dynamic Memory and Runtime Memory Resize; "
    "Networking options)",
    "https://learn.microsoft.com/virtualization/hyper-v-on-windows/user-guide/nested-virtualization",
)
ENABLE_PAGE = Source(
    "Run Hyper-V in a Virtual Machine with Nested Virtualization (prerequisites; Azure: "
    'Security Type "Standard"; Windows Server 2019 L1: 225 vCPUs or less)',
    "https://learn.microsoft.com/virtualization/hyper-v-on-windows/user-guide/"
    "enable-nested-virtualization",
)
INSTALL_PAGE = Source(
    "Install Hyper-V on Windows (Enable-WindowsOptionalFeature -Online -FeatureName "
    "Microsoft-Hyper-V -All) / Install the Hyper-V role on Windows Server "
    "(Install-WindowsFeature -Name Hyper-V -IncludeManagementTools)",
    "https://learn.microsoft.com/virtualization/hyper-v-on-windows/quick-start/enable-hyper-v",
)
SCALABILITY = Source(
    "Plan for Hyper-V scalability in Windows Server (maximums per VM)",
    "https://learn.microsoft.com/windows-server/virtualization/hyper-v/plan/"
    "plan-for-hyper-v-scalability-in-windows-server",
)
STATUS_SCRIPT = Source(
    "Get-NestedVirtStatus.ps1 / Enable-NestedVm.ps1 (Microsoft's status and enable scripts)",
    "https://github.com/MicrosoftDocs/Virtualization-Documentation/tree/main/hyperv-tools/Nested",
)
WMI_PROCESSOR = Source(
    "Win32_Processor / Win32_ComputerSystem (WMI class documentation)",
    "https://learn.microsoft.com/windows/win32/cimwin32prov/win32-processor",
)

Version = tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Applies:
    """One rule in one range: host builds [build_from, build_below), config versions likewise."""

    code: str
    says: str  # what the rule does there, with its severity
    sources: tuple[Source, ...]
    build_from: int | None = None
    build_below: int | None = None
    version_from: Version | None = None
    version_below: Version | None = None

    @property
    def builds(self) -> str:
        return _range(self.build_from, self.build_below)

    @property
    def versions(self) -> str:
        low = None if self.version_from is None else _v(self.version_from)
        high = None if self.version_below is None else _v(self.version_below)
        return _range(low, high)


def _v(version: Version) -> str:
    return ".".join(map(str, version))


def _range(low: object, high: object) -> str:
    if low is None and high is None:
        return "any"
    if low is None:
        return f"< {high}"
    if high is None:
        return f">= {low}"
    return f"{low} to < {high}"


# The table. Rows of one code are in order of the builds they cover.
TABLE: tuple[Applies, ...] = (
    Applies(
        "NV-H20",
        "error: no nested virtualization before the preview",
        (PREVIEW_PAGE, STATUS_SCRIPT),
        build_below=PREVIEW_BUILD,
    ),
    Applies(
        "NV-H20",
        "warning: a preview build; nesting works with the preview's limits",
        (PREVIEW_PAGE, NOTES_14361),
        build_from=PREVIEW_BUILD,
        build_below=LIFTED_BUILD,
    ),
    Applies(
        "NV-H20",
        "nothing: builds 14361+ (GA 14393) nest without the preview's limits",
        (NOTES_14361, ENABLE_PAGE),
        build_from=LIFTED_BUILD,
    ),
    Applies(
        "NV-H21",
        "error on AMD: AMD nesting needs Windows Server 2022 / Windows 11",
        (ENABLE_PAGE,),
        build_below=AMD_BUILD,
    ),
    Applies("NV-H22", "error: the Hyper-V hypervisor is not running", (PREVIEW_PAGE, WHAT_IS)),
    Applies(
        "NV-H23",
        "error: a host running VBS / Device Guard cannot expose VT-x (the 2015 preview)",
        (PREVIEW_PAGE,),
        build_below=LIFTED_BUILD,
    ),
    Applies(
        "NV-H23",
        "nothing: nesting works with VBS, Device Guard and Credential Guard",
        (NOTES_14361, WHAT_IS),
        build_from=LIFTED_BUILD,
    ),
    Applies("NV-H24", "error: OFFERNESTEDVIRT=FALSE switches nesting off", (STATUS_SCRIPT,)),
    Applies("NV-H25", "error: no EPT/RVI while no hypervisor runs", (ENABLE_PAGE, WMI_PROCESSOR)),
    Applies(
        "NV-H26", "error: VT-x/AMD-V off in firmware while no hypervisor runs", (WMI_PROCESSOR,)
    ),
    Applies(
        "NV-H27",
        "warning: a Windows Server 2019-or-earlier L1 with more than 225 vCPUs",
        (ENABLE_PAGE, SCALABILITY),
        build_below=WS2019_BUILD + 1,
    ),
    Applies(
        "NV-H28",
        'error: an Azure VM with Trusted Launch; nesting needs Security Type "Standard"',
        (ENABLE_PAGE,),
    ),
    Applies(
        "NV-H29",
        "warning: the VMs could not be listed (rights, service, platform)",
        (STATUS_SCRIPT,),
    ),
    Applies("NV-V01", "error: ExposeVirtualizationExtensions is false", (PREVIEW_PAGE, WHAT_IS)),
    Applies(
        "NV-V02",
        "error: dynamic memory on, the VM will not start (the 2015 preview)",
        (PREVIEW_PAGE,),
        build_below=LIFTED_BUILD,
    ),
    Applies(
        "NV-V02",
        "warning: the memory stays at Startup and does not fluctuate",
        (WHAT_IS,),
        build_from=LIFTED_BUILD,
    ),
    Applies("NV-V03", "warning: Startup below 4 GiB", (PREVIEW_PAGE, STATUS_SCRIPT)),
    Applies(
        "NV-V04",
        "warning: MAC spoofing off (info when the guest uses NAT)",
        (PREVIEW_PAGE, WHAT_IS),
    ),
    Applies(
        "NV-V05",
        "warning: saving a nesting VM fails (the 2015 preview)",
        (PREVIEW_PAGE,),
        build_below=LIFTED_BUILD,
        version_below=LIFTED_VERSION,
    ),
    Applies(
        "NV-V05",
        "info: Save and Start work; enable discards the state",
        (NOTES_14361,),
        build_from=LIFTED_BUILD,
        version_from=LIFTED_VERSION,
    ),
    Applies(
        "NV-V06",
        "warning: applying a checkpoint to the running VM fails (the 2015 preview)",
        (PREVIEW_PAGE, STATUS_SCRIPT),
        build_below=LIFTED_BUILD,
        version_below=LIFTED_VERSION,
    ),
    Applies(
        "NV-V06",
        "info: creating and applying checkpoints work",
        (NOTES_14361,),
        build_from=LIFTED_BUILD,
        version_from=LIFTED_VERSION,
    ),
    Applies("NV-V07", "info: changes need the VM off", (WHAT_IS, STATUS_SCRIPT)),
    Applies(
        "NV-V08",
        "error: configuration version below 8.0 (Intel) / 9.3 (AMD)",
        (NOTES_14361, ENABLE_PAGE),
        version_below=AMD_VERSION,
    ),
    Applies("NV-O01", "error: live migration of a VM hosting VMs", (PREVIEW_PAGE, NOTES_14361)),
    Applies(
        "NV-O02",
        "error: save/restore of a nesting VM fails (the 2015 preview)",
        (PREVIEW_PAGE,),
        build_below=LIFTED_BUILD,
        version_below=LIFTED_VERSION,
    ),
    Applies(
        "NV-O02",
        "warning (safe): You can now Save and Start nested-enabled VMs",
        (NOTES_14361,),
        build_from=LIFTED_BUILD,
        version_from=LIFTED_VERSION,
    ),
    Applies(
        "NV-O03",
        "error: applying a checkpoint to a running nesting VM fails (the 2015 preview)",
        (PREVIEW_PAGE,),
        build_below=LIFTED_BUILD,
        version_below=LIFTED_VERSION,
    ),
    Applies(
        "NV-O03",
        "warning (safe): creating and applying checkpoints work",
        (NOTES_14361,),
        build_from=LIFTED_BUILD,
        version_from=LIFTED_VERSION,
    ),
    Applies(
        "NV-O04",
        "error: runtime memory resize fails while Hyper-V runs inside",
        (PREVIEW_PAGE, WHAT_IS),
    ),
)


def rows(code: str) -> tuple[Applies, ...]:
    return tuple(r for r in TABLE if r.code == code)


def render(code: str) -> str:
    """The `## Versions` section of a rule: its rows of the table, then the sources."""
    lines = [
        "## Versions",
        "Hyper-V (host build / VM configuration version; one table in "
        "nestvirt.rules.hyperv_table):",
        "",
        "| host build | VM version | says |",
        "|---|---|---|",
    ]
    sources: list[Source] = []
    for r in rows(code):
        both = r.builds != "any" and r.versions != "any"
        joined = ("or " if r.build_below and r.version_below else "and ") if both else ""
        lines.append(f"| {r.builds} | {joined}{r.versions} | {r.says} |")
        sources.extend(s for s in r.sources if s not in sources)
    lines.append("")
    lines.extend(f"- {s}" for s in sources)
    return "\n".join(lines)


F = TypeVar("F", bound=Callable[..., object])


def versioned(code: str) -> Callable[[F], F]:
    """Append the rule's `## Versions` section (its table rows) to its docstring."""

    def add(check: F) -> F:
        if not rows(code):
            raise ValueError(f"{code}: no row in the Hyper-V version table")
        doc = inspect.cleandoc(check.__doc__ or "")
        check.__doc__ = f"{doc}\n\n{render(code)}\n"
        return check

    return add


# --- deciding the era ---------------------------------------------------------


def is_preview_build(build: int | Unknown | None) -> bool | None:
    """True below 14361 (the preview's limits), False from 14361, None when not known."""
    if build is None or isinstance(build, Unknown):
        return None
    return build < LIFTED_BUILD


def preview_limits(build: int | Unknown | None, version: Version | Unknown | None) -> bool | None:
    """Do the preview's save/checkpoint limits hold? (build < 14361 or VM version < 8.0).

    True when either is known to be old; False when the version is known to be
    8.0+ and the build is not known to be a preview one (a version 8.0 VM only
    runs on 14361+); None when neither is known.
    """
    if is_preview_build(build) is True:
        return True
    if isinstance(version, tuple):
        return version < LIFTED_VERSION
    if is_preview_build(build) is False:
        return None  # a current host, but the VM's version is not known
    return None


__all__ = [
    "AMD_BUILD",
    "AMD_VERSION",
    "GA_BUILD",
    "L1_VCPU_LIMIT",
    "LIFTED_BUILD",
    "LIFTED_VERSION",
    "PREVIEW_BUILD",
    "TABLE",
    "WS2019_BUILD",
    "Applies",
    "Source",
    "is_preview_build",
    "preview_limits",
    "render",
    "rows",
    "versioned",
]
