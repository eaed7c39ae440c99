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
    hyperv_ps.local_script(hyperv_ps.RESTART_GUEST_SCRIPT): "restart_guest",
    hyperv_ps.local_script(hyperv_ps.GUEST_CHECK_SCRIPT): "guest_check",
}


# What a real powershell.exe -EncodedCommand adds around a script's own output:
# a warning line on stdout (Enable-WindowsOptionalFeature -NoRestart), and on
# stderr the CLIXML records of progress bars (Get-CimInstance, Get-VM…).
WARNING_LINE = "WARNING: Restart is suppressed because NoRestart is specified.\r\n"
CLIXML_PROGRESS = (
    "#< CLIXML\r\n"
    '<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04">'
    '<Obj S="progress" RefId="0"><TN RefId="0"><T>System.Management.Automation.PSCustomObject'
    '</T><T>System.Object</T></TN><MS><I64 N="SourceId">1</I64><PR N="Record">'
    "<AV>Preparing modules for first use.</AV><AI>0</AI><Nil /><PI>-1</PI><PC>-1</PC>"
    "<T>Completed</T><SR>-1</SR><SD> </SD></PR></MS></Obj></Objs>"
)
CLIXML_ERROR = (
    "#< CLIXML\r\n"
    '<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04">'
    '<S S="Error">Get-VM : You do not have the required permission to complete this task._x000D__x000A_</S>'
    "</Objs>"
)
# PowerShell Direct's answers while the guest boots, and for a wrong password
GUEST_BOOTING = (
    "An error has occurred which Windows PowerShell cannot handle. A remote session might "
    "have ended."
)
BAD_CREDENTIAL = "The credential is invalid."


class FakePowerShell:
    def __init__(
        self,
        doc: dict[str, Any],
        fail: dict[str, str] | None = None,
        *,
        noise: bool = False,
        guest: list[str] | None = None,
    ) -> None:
        self.doc = doc
        self.fail = fail or {}  # cmdlet → error message
        self.noise = noise  # a warning line on stdout, CLIXML progress on stderr
        # PowerShell Direct: one answer per attempt ("" = the guest answers)
        self.guest = list(guest or [])
        self.guest_feature = "Disabled"
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
        pre_out = WARNING_LINE if self.noise else ""
        pre_err = CLIXML_PROGRESS if self.noise else ""
        try:
            out = getattr(self, kind)(args)
        except RuntimeError as exc:
            err = {
                "error": str(exc),
                "command": args.get("cmdlet", ""),
                "category": "InvalidOperation",
            }
            framed = hyperv_ps.JSON_BEGIN + json.dumps(err) + hyperv_ps.JSON_END
            return subprocess.CompletedProcess(argv, 1, pre_out, f"{pre_err}\n{framed}")
        framed = hyperv_ps.JSON_BEGIN + json.dumps(out, ensure_ascii=True) + hyperv_ps.JSON_END
        return subprocess.CompletedProcess(argv, 0, f"{pre_out}{framed}\r\n", pre_err)

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

    def install(self, args: dict[str, Any]) -> dict[str, Any]:
        """One attempt over PowerShell Direct, as INSTALL_HYPERVISOR_SCRIPT makes it."""
        self.vm(args["vm_id"])["Get-VM"]["State"] = "Running"
        answer = self.guest.pop(0) if self.guest else ""
        if answer:
            return {"ok": False, "error": answer, "error_id": "PSSessionStateBroken"}
        self.guest_feature = "EnablePending"
        return {"ok": True, "RestartNeeded": True, "Method": "Enable-WindowsOptionalFeature"}

    def restart_guest(self, args: dict[str, Any]) -> dict[str, Any]:
        self.vm(args["vm_id"])
        if self.guest_feature == "EnablePending":
            self.guest_feature = "Enabled"
        return {"ok": True}

    def guest_check(self, args: dict[str, Any]) -> dict[str, Any]:
        self.vm(args["vm_id"])
        return {
            "ok": True,
            "HyperVFeatureState": self.guest_feature,
            "HypervisorRunning": self.guest_feature == "Enabled",
        }
