"""Changes by pull request: the inventory at two Git revisions -> what a merge would do.

Public surface::

    plan_change(repo, base, head, *, inventory="inventory", author=None, approvers=())
        -> ChangePlan    # changed objects, per-cluster stages, manifest diffs, waves,
                         # blast radius, policy verdicts; .exit_code 0 / 1 / 4
    markdown(plan) -> str; print_plan(console, plan)        # werft.gitops.report
    ForgeClient(ForgeTarget(...)).comment / .status / .approvers   # werft.gitops.forge

Modules, one job each: ``revisions`` (GitPython: refs, merge base, changed files, fetch),
``objects`` (changed inventory objects and fields), ``manifests`` (rendered add-on diffs,
grouped), ``impact`` (stages per cluster, blast radius), ``cel`` and ``policy`` (CEL
rules), ``change`` (the whole plan), ``report`` (markdown and tables), ``forge`` (REST
client), ``events`` (webhook payloads), ``localrepo`` (the bare repository of `make up`).
No Prefect here: flows/plan_change.py and flows/reconcile.py run these.
"""
