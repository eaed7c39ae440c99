"""A stand-in for `powershell.exe` at the process boundary: it gets the real argv and stdin.

It decodes -EncodedCommand, checks that the script is one of nestvirt's fixed
scripts (so no user value can have been formatted into it), reads the JSON
argument from stdin and plays Hyper-V against an in-memory snapshot document.
"""

from __future__ import annotations

import base64
import json
import subprocess
from typing import Any

from nestvirt.backends import hyperv_ps

SCRIPTS = {
    hyperv_ps.local_script(hyperv_ps.COLLECT_SCRIPT): "collect",
    hyperv_ps.local_script(hyperv_ps.INVOKE_SCRIPT): "invoke",
    hyperv_ps.local_script(hyperv_ps.ADAPTER_SPOOFING_SCRIPT): "adapters",
    hyperv_ps.local_script(hyperv_ps.INSTALL_HYPERVISOR_SCRIPT): "install",
}


class FakePowerShell:
    def __init__(self, doc: dict[str, Any], fail: dict[str, str] | None = None) -> None:
        self.doc = doc
        self.fail = fail or {}  # cmdlet → error message
        self.calls: list[dict[str, Any]] = []  # {"argv", "script", "args"}

    def vm(self, vm_id: str) -> dict[str, Any]:
        for vm in self.doc["vms"]:
            if vm["Get-VM"]["Id"] == vm_id:
                return vm  # type: ignore[no-any-return]
        raise KeyError(vm_id)

    def __call__(self, argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        assert argv[1:4] == ["-NoProfile", "-NonInteractive", "-EncodedCommand"]
        assert len(argv) == 5
        script = base64.b64decode(argv[4]).decode("utf-16-le")
        kind = SCRIPTS[script]  # KeyError: not a fixed script
        stdin = kw["input"]
        assert stdin.isascii()
        args = json.loads(stdin)
        self.calls.append({"argv": argv, "script": kind, "args": args})
        try:
            out = getattr(self, kind)(args)
        except RuntimeError as exc:
            err = {
                "error": str(exc),
                "command": args.get("cmdlet", ""),
                "category": "InvalidOperation",
            }
            return subprocess.CompletedProcess(argv, 1, "", json.dumps(err))
        return subprocess.CompletedProcess(argv, 0, json.dumps(out, ensure_ascii=True), "")

    def collect(self, args: dict[str, Any]) -> Any:
        doc = json.loads(json.dumps(self.doc))
        wanted = [n.casefold() for n in args["vm_names"]]
        if wanted:
            doc["vms"] = [v for v in doc["vms"] if v["Get-VM"]["Name"].casefold() in wanted]
        return doc

    def invoke(self, args: dict[str, Any]) -> None:
        cmdlet, params = args["cmdlet"], args["parameters"]
        assert cmdlet in hyperv_ps.WRITE_CMDLETS
        if cmdlet in self.fail:
            raise RuntimeError(self.fail[cmdlet])
        vm = self.vm(args["vm_id"])
        state = vm["Get-VM"]["State"]
        if cmdlet == "Remove-VMSavedState":
            assert state == "Saved"
            vm["Get-VM"]["State"] = "Off"
        elif cmdlet == "Stop-VM":
            vm["Get-VM"]["State"] = "Off"
        elif cmdlet in ("Start-VM", "Restart-VM"):
            vm["Get-VM"]["State"] = "Running"
        elif cmdlet == "Set-VMProcessor":
            if state != "Off":
                raise RuntimeError("Failed to modify device 'Processor'. The VM is running.")
            vm["Get-VMProcessor"].update(params)
        elif cmdlet == "Set-VMMemory":
            if state != "Off":
                raise RuntimeError("Failed to modify device 'Memory'.")
            if "DynamicMemoryEnabled" in params:
                vm["Get-VMMemory"]["DynamicMemoryEnabled"] = params["DynamicMemoryEnabled"]
            if "StartupBytes" in params:
                vm["Get-VMMemory"]["Startup"] = params["StartupBytes"]
        elif cmdlet == "Set-VMNetworkAdapter":
            for a in vm["Get-VMNetworkAdapter"]:
                a["MacAddressSpoofing"] = params["MacAddressSpoofing"]

    def adapters(self, args: dict[str, Any]) -> None:
        vm = self.vm(args["vm_id"])
        for a in vm["Get-VMNetworkAdapter"]:
            if a["Id"] in args["adapter_ids"]:
                a["MacAddressSpoofing"] = args["value"]

    def install(self, args: dict[str, Any]) -> dict[str, bool]:
        self.vm(args["vm_id"])["Get-VM"]["State"] = "Running"
        return {"RestartNeeded": True}
