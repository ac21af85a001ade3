package k8s

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/yaml"
)

// render builds every kustomization once per test binary.
func render(t *testing.T) map[string]*Objects {
	t.Helper()
	out := map[string]*Objects{}
	for _, k := range Kustomizations {
		o, err := Render(filepath.Join(Dir(), k))
		if err != nil {
			t.Fatalf("%s: %v", k, err)
		}
		out[k] = o
	}
	return out
}

// TestFilesDecodeStrictly decodes every YAML file under k8s/ into its type,
// refusing unknown fields: kustomizations, manifests and patches into the
// kustomize and Kubernetes API types, the Prometheus snippet into its
// schema. (base/train.yaml is a train.Config; cmd/trainer's contract test
// decodes it.)
func TestFilesDecodeStrictly(t *testing.T) {
	n := 0
	err := filepath.WalkDir(Dir(), func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !(strings.HasSuffix(path, ".yaml") || strings.HasSuffix(path, ".yml")) {
			return err
		}
		rel, _ := filepath.Rel(Dir(), path)
		raw, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		n++
		switch {
		case filepath.Base(rel) == "kustomization.yaml":
			var k types.Kustomization
			if err := yaml.UnmarshalStrict(raw, &k); err != nil {
				t.Errorf("%s: %v", rel, err)
			}
		case rel == "prometheus-scrape.yaml":
			var p promConfig
			if err := yaml.UnmarshalStrict(raw, &p); err != nil {
				t.Errorf("%s: %v", rel, err)
			}
		case rel == filepath.Join("base", "train.yaml"):
		default:
			if _, err := Decode(raw); err != nil {
				t.Errorf("%s: %v", rel, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 10 {
		t.Fatalf("found only %d YAML files under %s", n, Dir())
	}
}

// TestDecodeRejects checks that the strict decoding this package relies on
// does refuse what it should.
func TestDecodeRejects(t *testing.T) {
	for _, tc := range []struct{ name, doc string }{
		{"unknown field", "apiVersion: batch/v1\nkind: Job\nspec:\n  parallelizm: 3\n"},
		{"misplaced field", "apiVersion: v1\nkind: Service\nspec:\n  publishNotReady: true\n"},
		{"wrong type", "apiVersion: batch/v1\nkind: Job\nspec:\n  completions: three\n"},
		{"duplicate field", "apiVersion: v1\nkind: Service\nspec:\n  clusterIP: None\n  clusterIP: None\n"},
		{"unknown kind", "apiVersion: v1\nkind: Pod\n"},
		{"no kind", "metadata:\n  name: x\n"},
	} {
		if _, err := Decode([]byte(tc.doc)); err == nil {
			t.Errorf("%s: decoded without error", tc.name)
		}
	}
	if _, err := Decode([]byte("apiVersion: batch/v1\nkind: Job\nspec:\n  parallelism: 3\n")); err != nil {
		t.Errorf("valid Job: %v", err)
	}
}

// TestRendered checks the invariants of the rendered base and overlays that
// need no knowledge of the trainer's flags (cmd/trainer's contract test
// checks those).
func TestRendered(t *testing.T) {
	for k, o := range render(t) {
		t.Run(k, func(t *testing.T) {
			job := o.Job("difftrain")
			if job == nil {
				t.Fatal("no Job difftrain")
			}
			checkJob(t, o, job)
			checkService(t, o, job)
			checkRefs(t, o, job)
			checkRefs(t, o, o.Job("difftrain-prepare"))
			c := trainer(t, job)
			gpu := c.Resources.Limits[corev1.ResourceName("nvidia.com/gpu")]
			if want := k == "overlays/gpu"; !gpu.IsZero() != want {
				t.Errorf("nvidia.com/gpu limit %s, want one: %v", gpu.String(), want)
			}
			if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() {
				t.Errorf("trainer requests %v: want cpu and memory", c.Resources.Requests)
			}
		})
	}
}

func trainer(t *testing.T, job *batchv1.Job) *corev1.Container {
	t.Helper()
	for i, c := range job.Spec.Template.Spec.Containers {
		if c.Name == "trainer" {
			return &job.Spec.Template.Spec.Containers[i]
		}
	}
	t.Fatalf("Job %s has no container named trainer", job.Name)
	return nil
}

func checkJob(t *testing.T, o *Objects, job *batchv1.Job) {
	s := job.Spec
	if s.CompletionMode == nil || *s.CompletionMode != batchv1.IndexedCompletion {
		t.Errorf("completionMode %v, want Indexed", s.CompletionMode)
	}
	if s.Completions == nil || s.Parallelism == nil || *s.Completions != *s.Parallelism || *s.Parallelism < 1 {
		t.Errorf("completions %v, parallelism %v: want equal and positive", s.Completions, s.Parallelism)
	}
	// A new ring needs a majority of the previous one's members: a ring of
	// two that loses one never recovers.
	if s.Parallelism != nil && *s.Parallelism < 3 {
		t.Errorf("parallelism %d: a ring of fewer than 3 cannot survive the loss of a pod", *s.Parallelism)
	}
	if s.Template.Spec.RestartPolicy != corev1.RestartPolicyNever {
		t.Errorf("restartPolicy %q: podFailurePolicy needs Never", s.Template.Spec.RestartPolicy)
	}
	// Losing every pod once (a crash each) must not fail the run.
	if s.BackoffLimit == nil || s.Parallelism != nil && *s.BackoffLimit < *s.Parallelism {
		t.Errorf("backoffLimit %v below parallelism %v", s.BackoffLimit, s.Parallelism)
	}
	ignores := false
	if p := s.PodFailurePolicy; p != nil {
		for _, r := range p.Rules {
			for _, c := range r.OnPodConditions {
				if c.Type == corev1.DisruptionTarget && r.Action == batchv1.PodFailurePolicyActionIgnore {
					ignores = true
				}
			}
			if e := r.OnExitCodes; e != nil && e.ContainerName != nil && *e.ContainerName != "trainer" {
				t.Errorf("podFailurePolicy names container %q, which the pod lacks", *e.ContainerName)
			}
		}
	}
	if !ignores {
		t.Error("podFailurePolicy does not ignore DisruptionTarget: evictions would use up backoffLimit")
	}
	c := trainer(t, job)
	for _, p := range []*corev1.Probe{c.ReadinessProbe, c.LivenessProbe} {
		if p == nil || p.HTTPGet == nil {
			t.Fatalf("trainer lacks an HTTP readiness or liveness probe")
		}
	}
	if c.ReadinessProbe.HTTPGet.Path != "/readyz" || c.LivenessProbe.HTTPGet.Path != "/healthz" {
		t.Errorf("probe paths %q, %q: want /readyz and /healthz", c.ReadinessProbe.HTTPGet.Path, c.LivenessProbe.HTTPGet.Path)
	}
	env := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		env[e.Name] = e
	}
	if e := env["POD_IP"]; e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != "status.podIP" {
		t.Errorf("POD_IP is not the downward API's status.podIP: %+v", e)
	}
	if e := env["DIFFTRAIN_CLUSTER_KEY"]; e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
		t.Errorf("DIFFTRAIN_CLUSTER_KEY does not come from a Secret: %+v", e)
	}
	for _, a := range c.Args {
		if strings.Contains(a, "$(") && !strings.Contains(a, "$(POD_IP)") {
			t.Errorf("arg %q refers to a variable the container does not define", a)
		}
	}
}

func checkService(t *testing.T, o *Objects, job *batchv1.Job) {
	tmpl := job.Spec.Template
	svc := o.Service(tmpl.Spec.Subdomain)
	if svc == nil {
		t.Fatalf("no Service named after the pod subdomain %q", tmpl.Spec.Subdomain)
	}
	if svc.Spec.ClusterIP != corev1.ClusterIPNone {
		t.Errorf("Service %s clusterIP %q: want None (headless)", svc.Name, svc.Spec.ClusterIP)
	}
	if !svc.Spec.PublishNotReadyAddresses {
		t.Errorf("Service %s does not publish not-ready addresses: pods could not find pod 0 before a ring forms", svc.Name)
	}
	if len(svc.Spec.Selector) == 0 {
		t.Errorf("Service %s has no selector", svc.Name)
	}
	for k, v := range svc.Spec.Selector {
		if tmpl.Labels[k] != v {
			t.Errorf("Service %s selects %s=%s, which the trainer pods lack", svc.Name, k, v)
		}
	}
	c := trainer(t, job)
	for _, sp := range svc.Spec.Ports {
		i := slices.IndexFunc(c.Ports, func(p corev1.ContainerPort) bool { return p.Name == sp.TargetPort.String() })
		if i < 0 {
			t.Errorf("Service port %s targets %q, which the trainer container lacks", sp.Name, sp.TargetPort.String())
			continue
		}
		cp := c.Ports[i]
		if cp.ContainerPort != sp.Port || cp.Protocol != sp.Protocol {
			t.Errorf("Service port %s is %d/%s, container port %s is %d/%s", sp.Name, sp.Port, sp.Protocol, cp.Name, cp.ContainerPort, cp.Protocol)
		}
	}
}

// checkRefs checks that every Secret, ConfigMap and claim the pods use is
// rendered, and that the claims are ReadWriteMany.
func checkRefs(t *testing.T, o *Objects, job *batchv1.Job) {
	if job == nil {
		t.Fatal("missing Job")
	}
	spec := job.Spec.Template.Spec
	for _, v := range spec.Volumes {
		switch {
		case v.PersistentVolumeClaim != nil:
			pvc := o.Claim(v.PersistentVolumeClaim.ClaimName)
			if pvc == nil {
				t.Errorf("%s: volume %s: no claim %s", job.Name, v.Name, v.PersistentVolumeClaim.ClaimName)
			} else if !slices.Contains(pvc.Spec.AccessModes, corev1.ReadWriteMany) {
				t.Errorf("claim %s access modes %v: every pod mounts it, want ReadWriteMany", pvc.Name, pvc.Spec.AccessModes)
			}
		case v.ConfigMap != nil:
			if o.ConfigMap(v.ConfigMap.Name) == nil {
				t.Errorf("%s: volume %s: no ConfigMap %s", job.Name, v.Name, v.ConfigMap.Name)
			}
		}
	}
	for _, c := range slices.Concat(spec.InitContainers, spec.Containers) {
		for _, m := range c.VolumeMounts {
			if !slices.ContainsFunc(spec.Volumes, func(v corev1.Volume) bool { return v.Name == m.Name }) {
				t.Errorf("%s: container %s mounts unknown volume %s", job.Name, c.Name, m.Name)
			}
		}
		for _, e := range c.Env {
			if e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
				continue
			}
			r := e.ValueFrom.SecretKeyRef
			s := o.Secret(r.Name)
			if s == nil {
				t.Errorf("%s: env %s: no Secret %s", job.Name, e.Name, r.Name)
			} else if _, ok := s.Data[r.Key]; !ok {
				t.Errorf("%s: env %s: Secret %s has no key %q", job.Name, e.Name, r.Name, r.Key)
			}
		}
	}
}

// promConfig is the part of Prometheus' configuration schema that
// prometheus-scrape.yaml uses.
type promConfig struct {
	ScrapeConfigs []struct {
		JobName        string `json:"job_name"`
		ScrapeInterval string `json:"scrape_interval"`
		KubernetesSD   []struct {
			Role       string `json:"role"`
			Namespaces struct {
				Names []string `json:"names"`
			} `json:"namespaces"`
		} `json:"kubernetes_sd_configs"`
		Relabel []relabel `json:"relabel_configs"`
	} `json:"scrape_configs"`
}

type relabel struct {
	SourceLabels []string `json:"source_labels"`
	Separator    *string  `json:"separator"`
	Action       string   `json:"action"`
	Regex        string   `json:"regex"`
	Replacement  *string  `json:"replacement"`
	TargetLabel  string   `json:"target_label"`
}

// apply runs Prometheus' keep and replace relabel actions on labels; false:
// the target is dropped.
func (r relabel) apply(t *testing.T, labels map[string]string) bool {
	sep := ";"
	if r.Separator != nil {
		sep = *r.Separator
	}
	vals := make([]string, len(r.SourceLabels))
	for i, l := range r.SourceLabels {
		vals[i] = labels[l]
	}
	src := strings.Join(vals, sep)
	expr := r.Regex
	if expr == "" {
		expr = "(.*)"
	}
	re, err := regexp.Compile("^(?:" + expr + ")$")
	if err != nil {
		t.Fatalf("relabel regex %q: %v", r.Regex, err)
	}
	switch r.Action {
	case "keep":
		return re.MatchString(src)
	case "replace", "":
		m := re.FindStringSubmatchIndex(src)
		if m == nil {
			return true
		}
		repl := "$1"
		if r.Replacement != nil {
			repl = *r.Replacement
		}
		labels[r.TargetLabel] = string(re.ExpandString(nil, repl, src, m))
		return true
	}
	t.Fatalf("relabel action %q not modelled by this test", r.Action)
	return false
}

// promName is Prometheus' sanitising of a Kubernetes label or annotation
// name into a meta label suffix.
func promName(s string) string {
	return regexp.MustCompile(`[^a-zA-Z0-9_]`).ReplaceAllString(s, "_")
}

// TestPrometheusScrape runs the scrape config's relabelling over the targets
// Prometheus' pod discovery makes of a trainer pod (one per container port)
// and expects exactly one: POD_IP:<metrics port>/metrics.
func TestPrometheusScrape(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(Dir(), "prometheus-scrape.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg promConfig
	if err := yaml.UnmarshalStrict(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	if len(cfg.ScrapeConfigs) != 1 || len(cfg.ScrapeConfigs[0].KubernetesSD) != 1 || cfg.ScrapeConfigs[0].KubernetesSD[0].Role != "pod" {
		t.Fatalf("want one scrape job with pod discovery, got %+v", cfg)
	}
	sc := cfg.ScrapeConfigs[0]
	for k, o := range render(t) {
		for _, job := range o.Jobs {
			tmpl := job.Spec.Template
			var kept []map[string]string
			for _, c := range tmpl.Spec.Containers {
				for _, p := range c.Ports {
					l := map[string]string{
						"__address__":                               "10.1.2.3:" + strconv.Itoa(int(p.ContainerPort)),
						"__metrics_path__":                          "/metrics",
						"__meta_kubernetes_namespace":               "default",
						"__meta_kubernetes_pod_name":                job.Name + "-0-abcde",
						"__meta_kubernetes_pod_container_name":      c.Name,
						"__meta_kubernetes_pod_container_port_name": p.Name,
						"__meta_kubernetes_pod_annotation_batch_kubernetes_io_job_completion_index": "0",
					}
					for n, v := range tmpl.Labels {
						l["__meta_kubernetes_pod_label_"+promName(n)] = v
					}
					for n, v := range tmpl.Annotations {
						l["__meta_kubernetes_pod_annotation_"+promName(n)] = v
					}
					keep := true
					for _, r := range sc.Relabel {
						if keep = r.apply(t, l); !keep {
							break
						}
					}
					if keep {
						kept = append(kept, l)
					}
				}
			}
			if job.Name != "difftrain" {
				if len(kept) != 0 {
					t.Errorf("%s: Job %s: %d targets scraped, want none", k, job.Name, len(kept))
				}
				continue
			}
			if len(kept) != 1 {
				t.Fatalf("%s: %d targets per trainer pod, want 1: %v", k, len(kept), kept)
			}
			c := trainer(t, job)
			port := c.ReadinessProbe.HTTPGet.Port.String()
			if got := kept[0]["__address__"]; got != "10.1.2.3:"+port {
				t.Errorf("%s: scrape address %s, want the probes' port %s", k, got, port)
			}
			if got := kept[0]["__metrics_path__"]; got != "/metrics" {
				t.Errorf("%s: scrape path %s, want /metrics", k, got)
			}
			if kept[0]["completion_index"] != "0" || kept[0]["pod"] == "" {
				t.Errorf("%s: target labels %v lack pod and completion_index", k, kept[0])
			}
		}
	}
}
