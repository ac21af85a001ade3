package main

// The contract between the Kubernetes manifests (k8s/) and this binary: the
// container scripts are run with a stub `trainer` that records its command
// line, and every recorded command line must parse with the real
// subcommand's flags; ports, addresses, names, paths and the config file
// must agree between the Job, the Service, the probes and the flag defaults.

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/difftrain/difftrain/cluster"
	"github.com/difftrain/difftrain/dataset"
	"github.com/difftrain/difftrain/k8s"
	"github.com/difftrain/difftrain/train"
)

const podIP = "10.1.2.3" // what the downward API gives POD_IP in these tests

// call is one recorded invocation of the stub trainer.
type call struct {
	sub  string
	args []string
}

func TestManifestContract(t *testing.T) {
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Fatalf("the container scripts need /bin/sh: %v", err)
	}
	for _, k := range k8s.Kustomizations {
		t.Run(k, func(t *testing.T) {
			o, err := k8s.Render(filepath.Join(k8s.Dir(), k))
			if err != nil {
				t.Fatal(err)
			}
			checkContract(t, o)
		})
	}
}

func checkContract(t *testing.T, o *k8s.Objects) {
	job, prep := o.Job("difftrain"), o.Job("difftrain-prepare")
	if job == nil || prep == nil {
		t.Fatal("want Jobs difftrain and difftrain-prepare")
	}
	spec := job.Spec.Template.Spec
	svc := o.Service(spec.Subdomain)
	if svc == nil {
		t.Fatalf("the pods' subdomain %q names no Service", spec.Subdomain)
	}
	c := container(t, job, "trainer")

	// What each pod runs: pods 1..N-1 join pod 0; pod 0 trains with the
	// Service as --peer, so that a replacement pod 0 joins a ring still
	// training instead of seeding a second one (node.TestRestartedSeedRejoins
	// covers what train does with it).
	gossip := "7946"
	seed0 := fmt.Sprintf("%s-0.%s:%s", job.Name, svc.Name, gossip)
	anySeed := svc.Name + ":" + gossip
	cases := []struct {
		name, index, status string
		want                []string // subcommands called, in order
		seed                string   // the final call's --seed
	}{
		{"pod 1 joins pod 0", "1", "", []string{"join"}, seed0},
		{"pod 0 trains, or joins a ring found through the Service", "0", "", []string{"train"}, ""},
	}
	var trainArgs *pflag.FlagSet
	for _, tc := range cases {
		calls := runScript(t, c, map[string]string{"JOB_COMPLETION_INDEX": tc.index}, tc.status)
		var subs []string
		for _, cl := range calls {
			subs = append(subs, cl.sub)
		}
		if !slices.Equal(subs, tc.want) {
			t.Fatalf("%s: trainer called as %v, want %v", tc.name, subs, tc.want)
		}
		for _, cl := range calls {
			fs := parseCall(t, cl)
			switch cl.sub {
			case "status":
				if s, _ := fs.GetString("seed"); s != anySeed {
					t.Errorf("%s: status --seed %q, want the Service %q", tc.name, s, anySeed)
				}
			case "join":
				seeds, _ := fs.GetStringSlice("seed")
				if !slices.Equal(seeds, []string{tc.seed}) {
					t.Errorf("%s: join --seed %v, want %s", tc.name, seeds, tc.seed)
				}
				checkRunFlags(t, tc.name, fs, job, svc)
			case "train":
				checkRunFlags(t, tc.name, fs, job, svc)
				if peers, _ := fs.GetStringSlice("peer"); !slices.Equal(peers, []string{anySeed}) {
					t.Errorf("%s: train --peer %v, want the Service %s", tc.name, peers, anySeed)
				}
				trainArgs = fs
			}
			if rd, _ := fs.GetString("run-dir"); cl.sub != "status" && rd != "/data/runs/node-"+tc.index {
				t.Errorf("%s: --run-dir %q: want one per completion index", tc.name, rd)
			}
		}
	}
	if trainArgs == nil {
		t.Fatal("no case ran `trainer train`")
	}

	// The dataset: prepare writes where the trainers read, on the shared
	// volume, with the sequence length the config leaves to the dataset.
	pc := container(t, prep, "prepare")
	calls := runScript(t, pc, nil, "")
	if len(calls) != 1 || calls[0].sub != "prepare" {
		t.Fatalf("prepare Job calls %v, want one `trainer prepare`", calls)
	}
	pfs := parseCall(t, calls[0])
	out, _ := pfs.GetString("out")
	data, _ := trainArgs.GetString("data")
	if path.Clean(out) != path.Clean(data) {
		t.Errorf("prepare --out %q but train --data %q", out, data)
	}
	checkOnClaim(t, prep, pc, "prepare --out", out, o)
	checkOnClaim(t, job, c, "--data", data, o)
	ckpt, _ := trainArgs.GetString("checkpoint-dir")
	checkOnClaim(t, job, c, "--checkpoint-dir", ckpt, o)
	seqLen, _ := pfs.GetInt("seq-len")
	checkConfig(t, trainArgs, job, c, o, seqLen)

	// The cluster key: the env var the code reads, from a Secret whose
	// shipped placeholder the code refuses.
	if cluster.EnvKey != "DIFFTRAIN_CLUSTER_KEY" {
		t.Errorf("cluster.EnvKey is %q; the manifests and docs set DIFFTRAIN_CLUSTER_KEY", cluster.EnvKey)
	}
	i := slices.IndexFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == cluster.EnvKey })
	if i < 0 || c.Env[i].ValueFrom == nil || c.Env[i].ValueFrom.SecretKeyRef == nil {
		t.Fatalf("trainer container does not set %s from a Secret", cluster.EnvKey)
	}
	ref := c.Env[i].ValueFrom.SecretKeyRef
	sec := o.Secret(ref.Name)
	if sec == nil {
		t.Fatalf("no Secret %s", ref.Name)
	}
	if _, err := cluster.LoadSecret(string(sec.Data[ref.Key]), ""); err == nil {
		t.Errorf("the shipped cluster key placeholder is accepted by trainer; it must be refused so nobody runs with a published key")
	}
}

// checkRunFlags checks the flags shared by train and join against the Job,
// the Service, the probes and the flag defaults.
func checkRunFlags(t *testing.T, name string, fs *pflag.FlagSet, job *batchv1.Job, svc *corev1.Service) {
	t.Helper()
	c := container(t, job, "trainer")
	def := func(flag string) string { return fs.Lookup(flag).DefValue }
	get := func(flag string) string { v, _ := fs.GetString(flag); return v }
	for _, p := range []struct {
		flag, advertise, portName string
		probe                     bool
	}{
		{"bind", "advertise", "gossip-tcp", false},
		{"grpc", "grpc-advertise", "grpc", false},
		{"metrics-addr", "", "metrics", true},
	} {
		port := hostPort(t, get(p.flag))
		if dp := hostPort(t, def(p.flag)); port != dp {
			t.Errorf("%s: --%s port %s differs from the flag default's %s", name, p.flag, port, dp)
		}
		if cp := containerPort(c, p.portName); cp != port {
			t.Errorf("%s: --%s port %s, container port %s is %q", name, p.flag, port, p.portName, cp)
		}
		if sp := servicePort(svc, p.portName); sp != port {
			t.Errorf("%s: --%s port %s, Service port for %s is %q", name, p.flag, port, p.portName, sp)
		}
		if p.advertise != "" {
			if want := net.JoinHostPort(podIP, port); get(p.advertise) != want {
				t.Errorf("%s: --%s %q, want the pod IP with port %s (%s)", name, p.advertise, get(p.advertise), port, want)
			}
		}
		if p.probe {
			for _, pr := range []*corev1.Probe{c.StartupProbe, c.ReadinessProbe, c.LivenessProbe} {
				if pr != nil && pr.HTTPGet != nil && pr.HTTPGet.Port.String() != port {
					t.Errorf("%s: probe %s on port %s, --%s on %s", name, pr.HTTPGet.Path, pr.HTTPGet.Port.String(), p.flag, port)
				}
			}
		}
	}
	if p := servicePort(svc, "gossip-udp"); p != hostPort(t, get("bind")) {
		t.Errorf("%s: gossip UDP port %q differs from --bind", name, p)
	}

	// Ring size limits against the number of pods.
	n := int(*job.Spec.Parallelism)
	minN, _ := fs.GetInt("min-nodes")
	maxN, _ := fs.GetInt("max-nodes")
	if minN > n {
		t.Errorf("%s: --min-nodes %d above parallelism %d: no ring could form", name, minN, n)
	}
	if maxN != 0 && maxN < n {
		t.Errorf("%s: --max-nodes %d below parallelism %d: pods would sit idle", name, maxN, n)
	}
	// BLAS and kernel threads match the CPU limit when both are set.
	threads, _ := fs.GetInt("threads")
	if lim := c.Resources.Limits.Cpu(); threads > 0 && !lim.IsZero() && lim.Value() != int64(threads) {
		t.Errorf("%s: --threads %d but CPU limit %s", name, threads, lim.String())
	}
}

// checkConfig checks that --config names a file of a mounted ConfigMap that
// decodes strictly, on top of train.Defaults as the trainer reads it, into a
// valid train.Config once the dataset's vocabulary and sequence length are
// filled in.
func checkConfig(t *testing.T, fs *pflag.FlagSet, job *batchv1.Job, c *corev1.Container, o *k8s.Objects, seqLen int) {
	t.Helper()
	file, _ := fs.GetString("config")
	vol, rel := mountOf(c, file)
	var cm *corev1.ConfigMap
	for _, v := range job.Spec.Template.Spec.Volumes {
		if v.Name == vol && v.ConfigMap != nil {
			cm = o.ConfigMap(v.ConfigMap.Name)
		}
	}
	if cm == nil {
		t.Fatalf("--config %s is not on a mounted ConfigMap", file)
	}
	raw, ok := cm.Data[rel]
	if !ok {
		t.Fatalf("--config %s: ConfigMap %s has no key %q", file, cm.Name, rel)
	}
	cfg, err := train.ParseConfig([]byte(raw), train.Defaults()) // as the trainer reads it
	if err != nil {
		t.Fatalf("--config %s: %v", file, err)
	}
	cfg.Resolve()
	if cfg.Model.Vocab == 0 {
		cfg.Model.Vocab = dataset.BytesVocab
	}
	if cfg.Model.SeqLen == 0 {
		cfg.Model.SeqLen = seqLen
	}
	if err := cfg.Validate(); err != nil {
		t.Errorf("--config %s: %v", file, err)
	}
}

// checkOnClaim checks that dir lies on a volume from a PersistentVolumeClaim.
func checkOnClaim(t *testing.T, job *batchv1.Job, c *corev1.Container, what, dir string, o *k8s.Objects) {
	t.Helper()
	vol, _ := mountOf(c, dir)
	for _, v := range job.Spec.Template.Spec.Volumes {
		if v.Name == vol && v.PersistentVolumeClaim != nil && o.Claim(v.PersistentVolumeClaim.ClaimName) != nil {
			return
		}
	}
	t.Errorf("%s %s: not on the shared volume claim in %s", what, dir, job.Name)
}

// mountOf returns the volume that holds file in c and file's path in it.
func mountOf(c *corev1.Container, file string) (vol, rel string) {
	best := ""
	for _, m := range c.VolumeMounts {
		mp := path.Clean(m.MountPath)
		if strings.HasPrefix(file, mp+"/") && len(mp) > len(best) {
			best, vol, rel = mp, m.Name, strings.TrimPrefix(file, mp+"/")
		}
	}
	return vol, rel
}

func container(t *testing.T, job *batchv1.Job, name string) *corev1.Container {
	t.Helper()
	for i := range job.Spec.Template.Spec.Containers {
		if job.Spec.Template.Spec.Containers[i].Name == name {
			return &job.Spec.Template.Spec.Containers[i]
		}
	}
	t.Fatalf("Job %s has no container %s", job.Name, name)
	return nil
}

func containerPort(c *corev1.Container, name string) string {
	for _, p := range c.Ports {
		if p.Name == name {
			return strconv.Itoa(int(p.ContainerPort))
		}
	}
	return ""
}

func servicePort(s *corev1.Service, target string) string {
	for _, p := range s.Spec.Ports {
		if p.TargetPort.String() == target {
			return strconv.Itoa(int(p.Port))
		}
	}
	return ""
}

func hostPort(t *testing.T, addr string) string {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	return port
}

// stubTrainer records each call as one line per argument and a blank line
// after the call; `status` prints $STUB_STATUS, or fails for FAIL.
const stubTrainer = `#!/bin/sh
for a in "$@"; do printf '%s\n' "$a" >> "$STUB_LOG"; done
printf '\n' >> "$STUB_LOG"
if [ "$1" = status ]; then
  [ "$STUB_STATUS" = FAIL ] && { echo "status: no members reachable" >&2; exit 1; }
  printf '%s' "$STUB_STATUS"
fi
exit 0
`

// runScript runs c's command and args as the kubelet would (with $(VAR)
// references to the container's env expanded), with `trainer` on PATH being
// the stub, and returns the recorded calls.
func runScript(t *testing.T, c *corev1.Container, extra map[string]string, status string) []call {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "trainer"), []byte(stubTrainer), 0o755); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "status.podIP":
			env[e.Name] = podIP
		case e.ValueFrom.SecretKeyRef != nil:
			env[e.Name] = "secret-from-" + e.ValueFrom.SecretKeyRef.Name
		default:
			t.Fatalf("env %s: source not modelled by this test", e.Name)
		}
	}
	for k, v := range extra {
		env[k] = v
	}
	argv := slices.Concat(c.Command, c.Args)
	for i := range argv {
		argv[i] = expandK8s(argv[i], env)
	}
	if len(argv) == 0 {
		t.Fatalf("container %s has no command", c.Name)
	}
	log := filepath.Join(dir, "calls")
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = []string{"PATH=" + dir + ":/usr/bin:/bin", "STUB_LOG=" + log, "STUB_STATUS=" + status}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	done := make(chan error, 1)
	var outb strings.Builder
	cmd.Stdout, cmd.Stderr = &outb, &outb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("container %s script: %v\n%s", c.Name, err, outb.String())
		}
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("container %s script did not finish:\n%s", c.Name, outb.String())
	}
	raw, err := os.ReadFile(log)
	if err != nil {
		t.Fatalf("container %s never called trainer:\n%s", c.Name, outb.String())
	}
	var calls []call
	for _, block := range strings.Split(strings.TrimSuffix(string(raw), "\n\n"), "\n\n") {
		args := strings.Split(block, "\n")
		calls = append(calls, call{sub: args[0], args: args[1:]})
	}
	return calls
}

var k8sVar = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// expandK8s replaces $(NAME) for the names env defines, as the kubelet does
// in command and args, leaving other text (shell syntax) alone.
func expandK8s(s string, env map[string]string) string {
	return k8sVar.ReplaceAllStringFunc(s, func(m string) string {
		if v, ok := env[m[2:len(m)-1]]; ok {
			return v
		}
		return m
	})
}

// parseCall parses a recorded call with a copy of the real subcommand's
// flags (its own and those inherited from root), so that a misspelt flag,
// a value of the wrong type or a stray argument fails.
func parseCall(t *testing.T, cl call) *pflag.FlagSet {
	t.Helper()
	var cmd *cobra.Command
	for _, c := range root.Commands() {
		if c.Name() == cl.sub || slices.Contains(c.Aliases, cl.sub) {
			cmd = c
		}
	}
	if cmd == nil {
		t.Fatalf("the manifests run `trainer %s`, which trainer lacks", cl.sub)
	}
	fs := pflag.NewFlagSet(cl.sub, pflag.ContinueOnError)
	fs.SetOutput(new(strings.Builder))
	var err error
	cmd.InheritedFlags().VisitAll(func(f *pflag.Flag) { err = cloneFlag(fs, f, err) })
	cmd.Flags().VisitAll(func(f *pflag.Flag) { err = cloneFlag(fs, f, err) })
	if err != nil {
		t.Fatalf("trainer %s: %v", cl.sub, err)
	}
	if err := fs.Parse(cl.args); err != nil {
		t.Fatalf("trainer %s %s: %v", cl.sub, strings.Join(cl.args, " "), err)
	}
	if len(fs.Args()) > 0 {
		t.Fatalf("trainer %s: stray arguments %q", cl.sub, fs.Args())
	}
	return fs
}

// cloneFlag adds to fs a flag of f's name, type and default with a value of
// its own.
func cloneFlag(fs *pflag.FlagSet, f *pflag.Flag, err error) error {
	if err != nil || fs.Lookup(f.Name) != nil {
		return err
	}
	d := f.DefValue
	switch f.Value.Type() {
	case "string":
		fs.String(f.Name, d, "")
	case "bool":
		v, _ := strconv.ParseBool(d)
		fs.Bool(f.Name, v, "")
	case "int":
		v, _ := strconv.Atoi(d)
		fs.Int(f.Name, v, "")
	case "int64":
		v, _ := strconv.ParseInt(d, 10, 64)
		fs.Int64(f.Name, v, "")
	case "uint64":
		v, _ := strconv.ParseUint(d, 10, 64)
		fs.Uint64(f.Name, v, "")
	case "float64":
		v, _ := strconv.ParseFloat(d, 64)
		fs.Float64(f.Name, v, "")
	case "duration":
		v, _ := time.ParseDuration(d)
		fs.Duration(f.Name, v, "")
	case "stringSlice":
		fs.StringSlice(f.Name, nil, "")
	case "stringArray":
		fs.StringArray(f.Name, nil, "")
	default:
		return fmt.Errorf("flag --%s of type %s: not modelled by the contract test; add it to cloneFlag", f.Name, f.Value.Type())
	}
	fs.Lookup(f.Name).DefValue = d
	return nil
}
