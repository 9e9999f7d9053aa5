"""Checks deploy/kubernetes/ (run by scripts/test-deploy.sh, in a
virtualenv with a pinned kubernetes-validate):

1. every manifest of a core kind against Kubernetes' own OpenAPI schemas,
   strictly (unknown fields are errors), for each Kubernetes version
   named on the command line;
2. the KEDA ScaledObject, which those schemas do not describe, against a
   JSON schema of the part of KEDA's ScaledObject CRD (keda.sh/v1alpha1,
   KEDA 2.x) that it uses, written out below with unknown fields refused;
   its HPA `behavior`, a core type, against the core schema (put in a
   HorizontalPodAutoscaler); and against the other manifests (it scales
   the Deployment, like the HPA, within the same bounds, on
   pynbox_queue_depth and CPU);
3. what the deployment promises: probes on /healthz and /readyz,
   requests and limits, a non-root user, a read-only root filesystem
   with an emptyDir at /tmp, every capability dropped, no privilege
   escalation, the RuntimeDefault seccomp profile, the tokens file and
   the session store's configuration from Secrets, and a Service and a
   PodDisruptionBudget that select the Deployment's pods.

Exit status 0 when all hold; every failure is printed.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
failures: list[str] = []


def check(ok: bool, what: str) -> None:
    if not ok:
        failures.append(what)


def load(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


# KEDA's ScaledObject, the fields this deployment may use (from the CRD's
# openAPIV3Schema, keda.sh_scaledobjects.yaml of KEDA 2.x); the CRD's
# trigger metadata is a map of strings.
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
SCALED_OBJECT = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "ScaledObject"},
        "metadata": {
            "type": "object",
            "required": ["name"],
            "properties": {"name": {"type": "string"}, "labels": STRING_MAP},
        },
        "spec": {
            "type": "object",
            "required": ["scaleTargetRef", "triggers"],
            "additionalProperties": False,
            "properties": {
                "scaleTargetRef": {
                    "type": "object",
                    "required": ["name"],
                    "additionalProperties": False,
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "name": {"type": "string"},
                        "envSourceContainerName": {"type": "string"},
                    },
                },
                "minReplicaCount": {"type": "integer", "minimum": 0},
                "maxReplicaCount": {"type": "integer", "minimum": 1},
                "idleReplicaCount": {"type": "integer", "minimum": 0},
                "pollingInterval": {"type": "integer", "minimum": 1},
                "cooldownPeriod": {"type": "integer", "minimum": 0},
                "initialCooldownPeriod": {"type": "integer", "minimum": 0},
                "advanced": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "restoreToOriginalReplicaCount": {"type": "boolean"},
                        "horizontalPodAutoscalerConfig": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "name": {"type": "string"},
                                # A core type: checked against Kubernetes' schema below.
                                "behavior": {"type": "object"},
                            },
                        },
                    },
                },
                "triggers": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["type", "metadata"],
                        "additionalProperties": False,
                        "properties": {
                            "type": {"type": "string"},
                            "name": {"type": "string"},
                            "metadata": STRING_MAP,
                            "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                            "useCachedMetrics": {"type": "boolean"},
                            "authenticationRef": {
                                "type": "object",
                                "required": ["name"],
                                "additionalProperties": False,
                                "properties": {
                                    "name": {"type": "string"},
                                    "kind": {"enum": ["TriggerAuthentication", "ClusterTriggerAuthentication"]},
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}


def core(versions: list[str]) -> dict[str, dict[str, Any]]:
    """Validates the core manifests; returns them by kind."""
    by_kind: dict[str, dict[str, Any]] = {}
    for path in sorted(ROOT.glob("*.yaml")):
        for doc in load(path):
            by_kind[doc["kind"]] = doc
            for v in versions:
                try:
                    kubernetes_validate.validate(doc, v, strict=True)
                except kubernetes_validate.ValidationError as e:
                    check(False, f"{path.name}: {doc['kind']} against Kubernetes {v}: {e.message}")
                except kubernetes_validate.SchemaNotFoundError as e:
                    check(False, f"{path.name}: {doc['kind']} has no Kubernetes {v} schema: {e}")
            print(f"{path.name}: {doc['kind']} checked against Kubernetes {', '.join(versions)} (strict)")
    return by_kind


def deployment_promises(d: dict[str, Any], kinds: dict[str, dict[str, Any]]) -> None:
    pod = d["spec"]["template"]["spec"]
    labels = d["spec"]["template"]["metadata"]["labels"]
    (c,) = pod["containers"]
    psc, csc = pod.get("securityContext", {}), c.get("securityContext", {})
    check(c["readinessProbe"]["httpGet"]["path"] == "/readyz", "readiness probe on /readyz")
    check(c["livenessProbe"]["httpGet"]["path"] == "/healthz", "liveness probe on /healthz")
    res = c.get("resources", {})
    for k in ("requests", "limits"):
        check({"cpu", "memory"} <= set(res.get(k, {})), f"resources.{k} has cpu and memory")
    check(psc.get("runAsNonRoot") is True and csc.get("runAsNonRoot") is True, "runAsNonRoot")
    check(psc.get("runAsUser", 0) != 0, "a non-zero runAsUser")
    check(csc.get("readOnlyRootFilesystem") is True, "readOnlyRootFilesystem: true")
    check(csc.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation: false")
    check(csc.get("capabilities", {}).get("drop") == ["ALL"], "capabilities: drop ALL")
    check(csc.get("capabilities", {}).get("add") is None, "no capability added")
    check(psc.get("seccompProfile", {}).get("type") == "RuntimeDefault"
          and csc.get("seccompProfile", {}).get("type") == "RuntimeDefault", "seccompProfile RuntimeDefault")
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    check("emptyDir" in volumes.get(mounts.get("/tmp", ""), {}), "an emptyDir at /tmp")
    check(volumes.get(mounts.get("/tmp", ""), {}).get("emptyDir", {}).get("sizeLimit") is not None,
          "the /tmp emptyDir has a sizeLimit (guests' files are not bounded by pynbox)")
    secrets = {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    env_secrets = {e["valueFrom"]["secretKeyRef"]["name"] for e in c.get("env", []) if "valueFrom" in e}
    args = " ".join(c["args"])
    check("pynbox-tokens" in secrets and "--tokens=/etc/pynbox/tokens/tokens.toml" in args,
          "the tokens file from the pynbox-tokens Secret")
    check("pynbox-session-store" in env_secrets and "--session-store=$(PYNBOX_SESSION_STORE)" in args,
          "the session store's configuration from the pynbox-session-store Secret")
    check(int(pod["terminationGracePeriodSeconds"]) > int(next(
        a.split("=")[1] for a in c["args"] if a.startswith("--grace="))),
        "terminationGracePeriodSeconds longer than --grace")
    for kind in ("Service", "PodDisruptionBudget"):
        sel = kinds[kind]["spec"]["selector"]
        sel = sel.get("matchLabels", sel)
        check(sel.items() <= labels.items(), f"the {kind} selects the Deployment's pods")
    hpa = kinds["HorizontalPodAutoscaler"]["spec"]
    check(hpa["scaleTargetRef"]["name"] == d["metadata"]["name"], "the HPA scales the Deployment")
    check(hpa["metrics"][0]["resource"]["name"] == "cpu", "the HPA scales on CPU")
    if not failures:
        print("deployment.yaml: probes, resources, security context, volumes, Secrets: as promised")


def keda(d: dict[str, Any], hpa: dict[str, Any], versions: list[str]) -> None:
    before = len(failures)
    path = ROOT / "keda" / "scaledobject.yaml"
    (so,) = load(path)
    for e in jsonschema.Draft202012Validator(SCALED_OBJECT).iter_errors(so):
        check(False, f"{path.name}: {'.'.join(map(str, e.absolute_path))}: {e.message}")
    behavior = so["spec"].get("advanced", {}).get("horizontalPodAutoscalerConfig", {}).get("behavior")
    if behavior is not None:
        probe = {**hpa, "spec": {**hpa["spec"], "behavior": behavior}}
        for v in versions:
            try:
                kubernetes_validate.validate(probe, v, strict=True)
            except kubernetes_validate.ValidationError as e:
                check(False, f"{path.name}: advanced.horizontalPodAutoscalerConfig.behavior: {e.message}")
    spec = so["spec"]
    check(spec["scaleTargetRef"]["name"] == d["metadata"]["name"], "the ScaledObject scales the Deployment")
    check((spec.get("minReplicaCount"), spec.get("maxReplicaCount"))
          == (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]), "the ScaledObject keeps the HPA's bounds")
    triggers = {t["type"]: t for t in spec["triggers"]}
    prom = triggers.get("prometheus", {}).get("metadata", {})
    check("pynbox_queue_depth" in prom.get("query", ""), "a prometheus trigger on pynbox_queue_depth")
    check(prom.get("serverAddress", "").startswith("http"), "the prometheus trigger names a server")
    try:
        check(float(prom.get("threshold", "")) > 0, "a positive threshold")
    except ValueError:
        check(False, "the threshold is a number")
    cpu = triggers.get("cpu", {})
    check(cpu.get("metricType") == "Utilization" and cpu.get("metadata", {}).get("value", "").isdigit(),
          "a cpu trigger (Utilization), so that KEDA in place of the HPA still scales on CPU")
    if len(failures) == before:
        print(f"keda/{path.name}: ScaledObject matches the CRD's schema (as written here) and the Deployment")


def main() -> int:
    versions = sys.argv[1:] or ["1.37.0"]
    kinds = core(versions)
    missing = {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"} - set(kinds)
    check(not missing, f"manifests missing: {missing}")
    if not missing:
        deployment_promises(kinds["Deployment"], kinds)
        keda(kinds["Deployment"], kinds["HorizontalPodAutoscaler"], versions)
    for f in failures:
        print(f"FAIL: {f}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
