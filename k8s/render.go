// Package k8s holds difftrain's Kubernetes manifests: a kustomize base (an
// Indexed Job of trainer pods, a headless Service, a ReadWriteMany volume, the
// cluster-key Secret and the training-config ConfigMap) and overlays for CPU
// and GPU nodes. See README.md in this directory.
//
// The Go code here only renders those manifests and decodes them strictly
// into the Kubernetes API types, so that tests (this package's and the CLI's
// contract test) can check them; the trainer binary does not import it.
package k8s

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// Kustomizations are the deployable roots, relative to Dir.
var Kustomizations = []string{"base", "overlays/cpu", "overlays/gpu"}

// Dir returns the directory of the manifests: this package's source
// directory, or (in a -trimpath build) k8s/ under the module root above the
// working directory.
func Dir() string {
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		return filepath.Dir(file)
	}
	dir, err := os.Getwd()
	if err != nil {
		return "k8s"
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, "k8s")
		}
		up := filepath.Dir(dir)
		if up == dir {
			return "k8s"
		}
		dir = up
	}
}

// Objects is a rendered kustomization, decoded into the API types.
type Objects struct {
	Jobs       []*batchv1.Job
	Services   []*corev1.Service
	ConfigMaps []*corev1.ConfigMap
	Secrets    []*corev1.Secret
	Claims     []*corev1.PersistentVolumeClaim
}

// Job returns the Job named name, or nil.
func (o *Objects) Job(name string) *batchv1.Job {
	for _, j := range o.Jobs {
		if j.Name == name {
			return j
		}
	}
	return nil
}

// Service returns the Service named name, or nil.
func (o *Objects) Service(name string) *corev1.Service {
	for _, s := range o.Services {
		if s.Name == name {
			return s
		}
	}
	return nil
}

// ConfigMap returns the ConfigMap named name, or nil.
func (o *Objects) ConfigMap(name string) *corev1.ConfigMap {
	for _, c := range o.ConfigMaps {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// Secret returns the Secret named name, or nil.
func (o *Objects) Secret(name string) *corev1.Secret {
	for _, s := range o.Secrets {
		if s.Name == name {
			return s
		}
	}
	return nil
}

// Claim returns the PersistentVolumeClaim named name, or nil.
func (o *Objects) Claim(name string) *corev1.PersistentVolumeClaim {
	for _, c := range o.Claims {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// Render builds the kustomization in dir, as `kubectl apply -k dir` would,
// and decodes every resource strictly: a field the API type does not have is
// an error.
func Render(dir string) (*Objects, error) {
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	m, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, fmt.Errorf("kustomize %s: %w", dir, err)
	}
	o := &Objects{}
	for _, r := range m.Resources() {
		doc, err := r.AsYAML()
		if err != nil {
			return nil, fmt.Errorf("kustomize %s: %s: %w", dir, r.CurId(), err)
		}
		if err := o.add(doc); err != nil {
			return nil, fmt.Errorf("kustomize %s: %s: %w", dir, r.CurId(), err)
		}
	}
	return o, nil
}

// Decode decodes one manifest strictly into its API type, chosen by
// apiVersion and kind.
func Decode(doc []byte) (any, error) {
	var tm struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
	}
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	var obj any
	switch tm.APIVersion + " " + tm.Kind {
	case "batch/v1 Job":
		obj = &batchv1.Job{}
	case "v1 Service":
		obj = &corev1.Service{}
	case "v1 ConfigMap":
		obj = &corev1.ConfigMap{}
	case "v1 Secret":
		obj = &corev1.Secret{}
	case "v1 PersistentVolumeClaim":
		obj = &corev1.PersistentVolumeClaim{}
	default:
		return nil, fmt.Errorf("manifest: unknown apiVersion %q kind %q", tm.APIVersion, tm.Kind)
	}
	if err := yaml.UnmarshalStrict(doc, obj); err != nil {
		return nil, fmt.Errorf("%s %s: %w", tm.APIVersion, tm.Kind, err)
	}
	return obj, nil
}

func (o *Objects) add(doc []byte) error {
	obj, err := Decode(doc)
	if err != nil {
		return err
	}
	switch v := obj.(type) {
	case *batchv1.Job:
		o.Jobs = append(o.Jobs, v)
	case *corev1.Service:
		o.Services = append(o.Services, v)
	case *corev1.ConfigMap:
		o.ConfigMaps = append(o.ConfigMaps, v)
	case *corev1.Secret:
		o.Secrets = append(o.Secrets, v)
	case *corev1.PersistentVolumeClaim:
		o.Claims = append(o.Claims, v)
	}
	return nil
}
