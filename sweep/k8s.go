package sweep

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/difftrain/difftrain/k8s"
)

// RunLabel marks a sweep's Jobs and pods with their run's name.
const RunLabel = "difftrain.io/sweep-run"

// RenderK8s writes, for every run of the sweep in dir that is not done, a
// ConfigMap with its train config and a one-pod Indexed Job built from the
// trainer Job of the kustomization base (e.g. k8s/overlays/cpu) into
// out/NAME.yaml, and out/kustomization.yaml listing them, so that
// `kubectl apply -k out` runs the grid. Runs write under
// /data/sweeps/SWEEP/NAME on the base's volume; the dataset and the volume
// come from the base deployment. It returns the files written.
func RenderK8s(dir, base, out string) ([]string, error) {
	m, err := Load(dir)
	if err != nil {
		return nil, err
	}
	objs, err := k8s.Render(base)
	if err != nil {
		return nil, fmt.Errorf("sweep --k8s: %w", err)
	}
	var tmpl = objs.Job("difftrain")
	if tmpl == nil {
		for _, j := range objs.Jobs {
			if j.Spec.CompletionMode != nil && len(j.Spec.Template.Spec.Containers) > 0 && j.Spec.Template.Spec.Containers[0].Name == "trainer" {
				tmpl = j
			}
		}
	}
	if tmpl == nil {
		return nil, fmt.Errorf("sweep --k8s: %s renders no trainer Job", base)
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return nil, fmt.Errorf("sweep --k8s: %w", err)
	}
	sweepName := k8sName(filepath.Base(filepath.Clean(dir)))
	var files, resources []string
	for _, r := range m.Runs {
		if Done(dir, r) {
			continue
		}
		raw, err := os.ReadFile(ConfigPath(dir, r.Name))
		if err != nil {
			return files, fmt.Errorf("sweep run %s: %w", r.Name, err)
		}
		name := k8sName("sweep-" + sweepName + "-" + r.Name)
		if len(name) > 60 {
			return files, fmt.Errorf("sweep --k8s: object name %s is over 60 characters; use a shorter sweep directory name", name)
		}
		cm := corev1.ConfigMap{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{RunLabel: r.Name}},
			Data:       map[string]string{"train.yaml": string(raw)}}
		job := tmpl.DeepCopy()
		job.TypeMeta = metav1.TypeMeta{APIVersion: "batch/v1", Kind: "Job"}
		job.ObjectMeta = metav1.ObjectMeta{Name: name, Namespace: tmpl.Namespace, Labels: map[string]string{RunLabel: r.Name}}
		for k, v := range tmpl.Labels {
			job.Labels[k] = v
		}
		one := int32(1)
		job.Spec.Completions, job.Spec.Parallelism = &one, &one
		job.Spec.Selector, job.Spec.ManualSelector = nil, nil
		pod := &job.Spec.Template
		// Not a pod of the base's ring: its own label, no shared subdomain.
		pod.Labels = map[string]string{RunLabel: r.Name, "app.kubernetes.io/component": "sweep"}
		pod.Spec.Subdomain = ""
		c := &pod.Spec.Containers[0]
		runDir := "/data/sweeps/" + sweepName + "/" + r.Name
		c.Command = []string{"trainer", "train", "--config", "/etc/difftrain/train.yaml"}
		// Later flags win: these override the base's run and checkpoint paths.
		c.Args = append(c.Args, "--run-dir="+runDir, "--checkpoint-dir="+runDir+"/checkpoints", "--min-nodes=1", "--max-nodes=1")
		for i, v := range pod.Spec.Volumes {
			if v.ConfigMap != nil && v.Name == "config" {
				pod.Spec.Volumes[i].ConfigMap.Name = name
			}
		}
		var doc strings.Builder
		for i, obj := range []any{cm, job} {
			b, err := yaml.Marshal(obj)
			if err != nil {
				return files, fmt.Errorf("sweep --k8s %s: %w", r.Name, err)
			}
			if i > 0 {
				doc.WriteString("---\n")
			}
			doc.Write(b)
		}
		file := name + ".yaml"
		if err := writeFile(filepath.Join(out, file), []byte(doc.String())); err != nil {
			return files, err
		}
		files, resources = append(files, filepath.Join(out, file)), append(resources, file)
	}
	kz, _ := json.Marshal(map[string]any{"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "resources": resources})
	kb, err := yaml.JSONToYAML(kz)
	if err != nil {
		return files, fmt.Errorf("sweep --k8s: %w", err)
	}
	head := fmt.Sprintf("# The runs of sweep %s that were not done when rendered: one ConfigMap and\n# one single-pod Indexed Job each. Apply with `kubectl apply -k %s` next to\n# the base deployment (its volume and dataset).\n", dir, out)
	if err := writeFile(filepath.Join(out, "kustomization.yaml"), append([]byte(head), kb...)); err != nil {
		return files, err
	}
	return append(files, filepath.Join(out, "kustomization.yaml")), nil
}

var notDNS = regexp.MustCompile(`[^a-z0-9-]+`)

// k8sName lowers s to a DNS-1123 label: a-z, 0-9 and '-'; '.' becomes 'p'.
func k8sName(s string) string {
	s = strings.ReplaceAll(strings.ToLower(s), ".", "p")
	return strings.Trim(notDNS.ReplaceAllString(s, "-"), "-")
}
