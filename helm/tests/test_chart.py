"""Chart and Dockerfile tests: lint and render helm/tokend with Helm's own Go
SDK (helm-python-sdk, no helm binary, no cluster) and assert on the manifests.

Run: python3 -m unittest discover -s helm/tests -v
"""

import re
import unittest
from pathlib import Path

import helm_python as helm
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "tokend"


def render(values=None):
    """All rendered objects, keyed by (kind, name)."""
    chart = helm.Chart.load(str(CHART))
    manifests = chart.render(values or {}, name="rel", namespace="tokens", is_install=True)
    objects = {}
    for path, text in manifests.items():
        if path.endswith("NOTES.txt"):
            objects[("NOTES", "")] = text
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                objects[(doc["kind"], doc["metadata"]["name"])] = doc
    return objects


def container(objects):
    """The workload (StatefulSet on sled, Deployment on PostgreSQL) and its container."""
    workload = objects.get(("StatefulSet", "rel-tokend")) or objects[("Deployment", "rel-tokend")]
    return workload, workload["spec"]["template"]["spec"]["containers"][0]


POSTGRES = {"store": {"postgres": {"existingSecret": "tokend-pg", "existingSecretKey": "dsn"}}}


class Defaults(unittest.TestCase):
    def setUp(self):
        self.objects = render()
        self.sts, self.c = container(self.objects)

    def test_lint_is_clean(self):
        report = helm.lint(str(CHART), strict=True)
        problems = [m for m in report["messages"] if m["severity"] >= 2]
        self.assertEqual(problems, [])
        self.assertEqual(report["errors"], [])

    def test_one_replica_with_a_volume_claim(self):
        self.assertEqual(self.sts["spec"]["replicas"], 1)
        claim = self.sts["spec"]["volumeClaimTemplates"][0]
        self.assertEqual(claim["spec"]["accessModes"], ["ReadWriteOnce"])
        self.assertEqual(claim["spec"]["resources"]["requests"]["storage"], "1Gi")
        mounts = {m["name"]: m["mountPath"] for m in self.c["volumeMounts"]}
        self.assertEqual(mounts["data"], "/var/lib/tokend")

    def test_probes_are_native_grpc_on_the_health_port(self):
        self.assertIn("--health-listen=0.0.0.0:50053", self.c["args"])
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            self.assertEqual(self.c[probe]["grpc"]["port"], 50053, probe)
        self.assertEqual(self.c["readinessProbe"]["grpc"]["service"], "tokend.v1.VerifyService")
        self.assertEqual(self.c["livenessProbe"]["grpc"]["service"], "")

    def test_security_context_is_restrictive(self):
        pod = self.sts["spec"]["template"]["spec"]
        self.assertTrue(pod["securityContext"]["runAsNonRoot"])
        self.assertEqual(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault")
        self.assertFalse(pod["automountServiceAccountToken"])
        sc = self.c["securityContext"]
        self.assertTrue(sc["readOnlyRootFilesystem"])
        self.assertFalse(sc["allowPrivilegeEscalation"])
        self.assertEqual(sc["capabilities"]["drop"], ["ALL"])
        self.assertIn("limits", self.c["resources"])

    def test_flags_carry_the_values(self):
        args = self.c["args"]
        for flag in (
            "--listen=0.0.0.0:50051",
            "--data-dir=/var/lib/tokend",
            "--log-format=json",
            "--token-prefix=tk",
            "--shutdown-grace=10s",
            "--metrics-listen=0.0.0.0:9090",
            "--bootstrap-token-seed-file=/etc/tokend/bootstrap/seed",
        ):
            self.assertIn(flag, args)
        self.assertFalse(any(a.startswith("--admin-listen") for a in args))
        self.assertFalse(any(a.startswith("--tls") for a in args))
        # Room for the drain and the final flush.
        self.assertEqual(self.sts["spec"]["template"]["spec"]["terminationGracePeriodSeconds"], 15)

    def test_policy_and_audit_flags(self):
        args = self.c["args"]
        self.assertIn("--max-ttl=0", args)
        self.assertIn("--default-ttl=0", args)
        self.assertFalse(any(a.startswith("--audit-log-file") for a in args))
        values = {"config": {"maxTtl": "90d", "defaultTtl": "30d", "auditLogFile": "/dev/stdout"}}
        _, c = container(render(values))
        for flag in ("--max-ttl=90d", "--default-ttl=30d", "--audit-log-file=/dev/stdout"):
            self.assertIn(flag, c["args"])
        with self.assertRaises(Exception):
            render({"config": {"maxTtl": "ninety days"}})

    def test_front_door_limits_are_flags(self):
        args = self.c["args"]
        for flag in (
            "--handshake-timeout=10s",
            "--max-connections=10000",
            "--keepalive-interval=30s",
            "--keepalive-timeout=10s",
            "--max-concurrent-streams=1000",
            "--max-header-bytes=16384",
            "--admin-timeout=30s",
            "--max-admin-inflight=256",
            "--abuse-cooldown=10s",
        ):
            self.assertIn(flag, args)
        _, c = container(render({"limits": {"maxConnections": 500, "abuseCooldown": "0"}}))
        self.assertIn("--max-connections=500", c["args"])
        self.assertIn("--abuse-cooldown=0", c["args"])
        for bad in ({"maxConnections": 0}, {"handshakeTimeout": "0s"}, {"maxHeaderBytes": 10}, {"maxConns": 1}):
            with self.subTest(bad=bad), self.assertRaises(helm.HelmError):
                render({"limits": bad})

    def test_the_bootstrap_seed_secret_is_created_and_kept(self):
        secret = self.objects[("Secret", "rel-tokend-bootstrap")]
        self.assertEqual(secret["metadata"]["annotations"]["helm.sh/resource-policy"], "keep")
        import base64

        seed = base64.b64decode(secret["data"]["seed"]).decode()
        self.assertRegex(seed, r"^[A-Za-z0-9]{43}$")
        self.assertIn("tokend token from-seed", self.objects[("NOTES", "")])

    def test_service_exposes_grpc_and_metrics(self):
        ports = {p["name"]: p["port"] for p in self.objects[("Service", "rel-tokend")]["spec"]["ports"]}
        self.assertEqual(ports, {"grpc": 50051, "metrics": 9090})
        self.assertNotIn(("NetworkPolicy", "rel-tokend"), self.objects)
        self.assertNotIn(("PodDisruptionBudget", "rel-tokend"), self.objects)

    def test_notes_warn_about_replicas(self):
        self.assertIn("ONE REPLICA", self.objects[("NOTES", "")])


class Variants(unittest.TestCase):
    def test_tls_on(self):
        objects = render({"tls": {"enabled": True, "secretName": "tokend-tls", "clientCASecretName": "mesh-ca"}})
        sts, c = container(objects)
        self.assertIn("--tls-cert=/etc/tokend/tls/tls.crt", c["args"])
        self.assertIn("--tls-key=/etc/tokend/tls/tls.key", c["args"])
        self.assertIn("--tls-client-ca=/etc/tokend/client-ca/ca.crt", c["args"])
        volumes = {v["name"]: v["secret"]["secretName"] for v in sts["spec"]["template"]["spec"]["volumes"]}
        self.assertEqual(volumes["tls"], "tokend-tls")
        self.assertEqual(volumes["client-ca"], "mesh-ca")
        # Kubernetes' gRPC probes cannot speak TLS: they use the plaintext
        # health port, so readiness still reports the service's health.
        self.assertEqual(c["readinessProbe"]["grpc"], {"port": 50053, "service": "tokend.v1.VerifyService"})

    def test_tls_without_a_secret_fails_to_render(self):
        with self.assertRaises(helm.HelmError):
            render({"tls": {"enabled": True}})

    def test_admin_port_split_with_network_policy(self):
        peer = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ops"}}}
        objects = render({"adminListener": {"enabled": True}, "networkPolicy": {"enabled": True, "adminFrom": [peer]}})
        _, c = container(objects)
        self.assertIn("--admin-listen=0.0.0.0:50052", c["args"])
        ports = {p["name"]: p["port"] for p in objects[("Service", "rel-tokend")]["spec"]["ports"]}
        self.assertEqual(ports["admin"], 50052)
        rules = objects[("NetworkPolicy", "rel-tokend")]["spec"]["ingress"]
        admin = [r for r in rules if r["ports"][0]["port"] == "admin"]
        self.assertEqual(admin, [{"ports": [{"port": "admin"}], "from": [peer]}])
        grpc = [r for r in rules if r["ports"][0]["port"] == "grpc"][0]
        self.assertNotIn("from", grpc, "any pod may verify")

    def test_existing_bootstrap_secret(self):
        objects = render({"bootstrap": {"existingSecret": "my-admin", "existingSecretKey": "admin-token"}})
        sts, c = container(objects)
        self.assertNotIn(("Secret", "rel-tokend-bootstrap"), objects)
        self.assertIn("--bootstrap-token-file=/etc/tokend/bootstrap/admin-token", c["args"])
        volumes = {v["name"]: v["secret"]["secretName"] for v in sts["spec"]["template"]["spec"]["volumes"]}
        self.assertEqual(volumes["bootstrap"], "my-admin")

    def test_optional_pdb_and_service_monitor(self):
        objects = render({"podDisruptionBudget": {"enabled": True}, "metrics": {"serviceMonitor": {"enabled": True}}})
        self.assertEqual(objects[("PodDisruptionBudget", "rel-tokend")]["spec"]["minAvailable"], 1)
        monitor = objects[("ServiceMonitor", "rel-tokend")]
        self.assertEqual(monitor["spec"]["endpoints"][0]["port"], "metrics")

    def test_metrics_off(self):
        _, c = container(render({"metrics": {"enabled": False}}))
        self.assertFalse(any(a.startswith("--metrics-listen") for a in c["args"]))

    def test_postgres_runs_a_deployment_of_replicas_without_volumes(self):
        objects = render(POSTGRES)
        self.assertNotIn(("StatefulSet", "rel-tokend"), objects)
        self.assertNotIn(("Service", "rel-tokend-headless"), objects)
        deploy, c = container(objects)
        self.assertEqual(deploy["spec"]["replicas"], 2)
        self.assertEqual(deploy["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"], 0)
        self.assertNotIn("volumeClaimTemplates", deploy["spec"])
        self.assertNotIn("data", {m["name"] for m in c["volumeMounts"]})
        self.assertFalse(any(a.startswith("--data-dir") for a in c["args"]))
        self.assertIn("--max-staleness=10s", c["args"])
        store = [e for e in c["env"] if e["name"] == "TOKEND_STORE"][0]
        self.assertEqual(store["valueFrom"]["secretKeyRef"], {"name": "tokend-pg", "key": "dsn"})
        self.assertFalse(any("postgres://" in a for a in c["args"]), "the URL stays out of the args")
        anti = deploy["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
        term = anti["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
        self.assertEqual(term["topologyKey"], "kubernetes.io/hostname")
        self.assertEqual(objects[("PodDisruptionBudget", "rel-tokend")]["spec"]["minAvailable"], 1)
        self.assertEqual(c["readinessProbe"]["grpc"]["port"], 50053)
        self.assertIn("replicas on PostgreSQL", objects[("NOTES", "")])

    def test_postgres_takes_a_replica_count(self):
        deploy, _ = container(render({**POSTGRES, "replicaCount": 5}))
        self.assertEqual(deploy["spec"]["replicas"], 5)

    def test_typos_and_replicas_are_rejected_by_the_schema(self):
        for bad in ({"replicaCount": 2}, {"confg": {}}, {"config": {"tokenPrefix": "Bad"}}, {"service": {"grpcPort": 0}}):
            with self.subTest(bad=bad), self.assertRaises(helm.HelmError):
                render(bad)


class Packaging(unittest.TestCase):
    def test_rendered_args_start_the_real_binary(self):
        """The flags the chart writes are flags tokend accepts."""
        binary = ROOT / "target" / "debug" / "tokend"
        if not binary.exists():
            self.skipTest("build tokend first (cargo build); .ci/run does")
        import signal
        import subprocess
        import tempfile

        _, c = container(render({"adminListener": {"enabled": True}}))
        with tempfile.TemporaryDirectory() as tmp:
            seed = Path(tmp) / "seed"
            seed.write_text("A" * 43 + "\n")
            args = [
                a.replace("/var/lib/tokend", f"{tmp}/data")
                .replace("/etc/tokend/bootstrap/seed", str(seed))
                .replace("0.0.0.0:50051", "127.0.0.1:0")
                .replace("0.0.0.0:50052", "127.0.0.1:0")
                .replace("0.0.0.0:9090", "127.0.0.1:0")
                .replace("0.0.0.0:50053", "127.0.0.1:0")
                for a in c["args"]
            ]
            proc = subprocess.Popen([str(binary), "serve", *args], stderr=subprocess.PIPE, text=True)
            try:
                for line in proc.stderr:
                    if "shut down" in line or "error" in line.lower():
                        self.fail(line)
                    if "serving metrics" in line:
                        break
                proc.send_signal(signal.SIGTERM)
                self.assertEqual(proc.wait(timeout=30), 0)
            finally:
                proc.kill()
                proc.stderr.close()

    def test_app_version_is_the_crate_version(self):
        chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
        cargo = (ROOT / "Cargo.toml").read_text()
        version = re.search(r'^version = "([^"]+)"', cargo, re.M).group(1)
        self.assertEqual(chart["apiVersion"], "v2")
        self.assertEqual(chart["appVersion"], version)

    def test_dockerfile_structure(self):
        lines = [l.strip() for l in (ROOT / "Dockerfile").read_text().splitlines() if l.strip() and not l.startswith("#")]
        froms = [l for l in lines if l.startswith("FROM ")]
        self.assertEqual(len(froms), 2, "a build stage and a runtime stage")
        self.assertRegex(froms[0], r"AS build$")
        self.assertIn("--from=build", " ".join(lines))
        self.assertIn("cargo build --release --locked", " ".join(lines))
        self.assertIn("USER 65532:65532", lines)
        self.assertTrue(any(l.startswith("EXPOSE") and "50051" in l for l in lines))
        self.assertIn('ENTRYPOINT ["/usr/local/bin/tokend", "serve"]', lines)
        self.assertIn("TOKEND_DATA_DIR=/var/lib/tokend", " ".join(lines))


if __name__ == "__main__":
    unittest.main()
