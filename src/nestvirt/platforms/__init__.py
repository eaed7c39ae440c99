"""Platform adapters: what plugs a platform into status, preflight and the enable flow.

Each module here is one platform's adapter, named by its line in `nestvirt.registry`
and loaded only when a command reaches that platform. An adapter is a module with:

    status(where, vm_names, *, host_only, timeout) -> model.StatusReport
    preflight(where, vm, operation, *, assume_no_nested_guests, timeout) -> PreflightReport
    subject(where, vm, request, *, dry_run, progress, timeout) -> enable.Subject
    claims_snapshot(path) -> bool          # only with `snapshots=True` in its registration

`where` is the `nestvirt.endpoint` the options named; `request` the user's
`enable.ChangeRequest`, which the adapter turns into its plan's options (refusing,
as a UsageError, what its platform cannot do). The adapter glues the slots together:
its backend reads and writes, its rules judge, its plan decides; the generic flows in
`status`, `preflight` and `enable` do the rest (docs/architecture.md).
"""
