package sweep

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/difftrain/difftrain/k8s"
	"github.com/difftrain/difftrain/train"
)

// TestRenderK8s: `sweep run --k8s` renders one single-pod Indexed Job and
// one ConfigMap per run that is not done, which kustomize builds and the
// Kubernetes types decode strictly; each Job reads its own run's config.
func TestRenderK8s(t *testing.T) {
	dir, m := tinySweep(t)
	os.WriteFile(filepath.Join(RunDir(dir, m.Runs[0].Name), DoneFile), []byte("1000000\n"), 0o644)
	out := filepath.Join(t.TempDir(), "k8s")
	if _, err := RenderK8s(dir, filepath.Join(k8s.Dir(), "overlays", "cpu"), out); err != nil {
		t.Fatal(err)
	}
	objs, err := k8s.Render(out)
	if err != nil {
		t.Fatal(err)
	}
	if len(objs.Jobs) != len(m.Runs)-1 || len(objs.ConfigMaps) != len(m.Runs)-1 {
		t.Fatalf("%d Jobs and %d ConfigMaps for %d runs not done", len(objs.Jobs), len(objs.ConfigMaps), len(m.Runs)-1)
	}
	steps := map[string]int{}
	for _, r := range m.Runs {
		steps[r.Name] = r.Steps
	}
	for _, j := range objs.Jobs {
		run := j.Labels[RunLabel]
		if run == "" || run == m.Runs[0].Name || *j.Spec.Completions != 1 || *j.Spec.CompletionMode != "Indexed" {
			t.Errorf("job %s: run %q, completions %d, mode %s", j.Name, run, *j.Spec.Completions, *j.Spec.CompletionMode)
		}
		pod := j.Spec.Template.Spec
		c := pod.Containers[0]
		if !slices.Contains(c.Args, "--device=cpu") || !strings.Contains(strings.Join(c.Args, " "), "--run-dir=/data/sweeps/sweep/"+run) {
			t.Errorf("job %s args %v", j.Name, c.Args)
		}
		var cmName string
		for _, v := range pod.Volumes {
			if v.Name == "config" {
				cmName = v.ConfigMap.Name
			}
		}
		cm := objs.ConfigMap(cmName)
		if cm == nil {
			t.Fatalf("job %s mounts ConfigMap %q, which is not rendered", j.Name, cmName)
		}
		var c2 train.Config
		if err := yaml.UnmarshalStrict([]byte(cm.Data["train.yaml"]), &c2); err != nil || c2.Steps != steps[run] {
			t.Errorf("job %s: config %v, steps %d, want %d", j.Name, err, c2.Steps, steps[run])
		}
	}
}
