"""Check a Population's ``spec.template`` pass-through before its first Job, by a server-side dry-run.

The template's Kubernetes pieces (env, resources, tolerations, affinity, serviceAccountName...) are passed
to the genome Jobs as given; only the apiserver knows all their rules. Before the first real create, the
operator asks it to validate one Job (``dryRun=All``: nothing is created) and reports what it refuses as
``spec.template.<field>``, so a broken template is an ``InvalidSpec`` naming the field, not a stream of
failed creates.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from nora.operator.cluster import Cluster
from nora.operator.jobs import JobRequest, build_job

_POD_PATH = re.compile(r"^spec\.template\.spec\.(containers\[0\]\.)?")
_ENV_INDEX = re.compile(r"^env\[(\d+)\]")
_CAUSE_LIMIT = 5


def template_path(job_field: str, env_offset: int = 0) -> str:
    """The Population field behind a Job field the apiserver refused.

    ``spec.template.spec.containers[0].env[1].name`` is ``spec.template.env[1 - env_offset].name`` (the
    operator's own variables come first); ``spec.template.spec.tolerations[0]`` is
    ``spec.template.tolerations[0]``; anything else is ``spec.template``.
    """
    match = _POD_PATH.match(job_field)
    rest = job_field[match.end() :] if match else ""
    env = _ENV_INDEX.match(rest)
    if env and int(env.group(1)) >= env_offset:
        rest = f"env[{int(env.group(1)) - env_offset}]{rest[env.end() :]}"
    return f"spec.template.{rest}" if rest else "spec.template"


def problems_of(causes: Sequence[tuple[str, str]], env_offset: int = 0) -> list[str]:
    """``spec.template.<field>: <the apiserver's reason>`` for each refused field (a few, deduplicated)."""
    lines = dict.fromkeys(f"{template_path(field, env_offset)}: {message}" for field, message in causes)
    return list(lines)[:_CAUSE_LIMIT]


def template_problems(
    cluster: Cluster, request: JobRequest, endpoint: str | None, region: str | None
) -> list[str]:
    """What the apiserver would refuse in the Job of ``request`` (nothing is created)."""
    job = build_job(request, endpoint, region)
    container = job["spec"]["template"]["spec"]["containers"][0]
    offset = len(container.get("env", [])) - len(request.spec.template.env)
    return problems_of(cluster.dry_run_job(job), offset)
