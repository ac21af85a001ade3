package main

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/difftrain/difftrain/train"
)

// No flag's usage string holds a backquote: pflag reads a back-quoted word
// as the flag's type name, so `--help` printed "--data trainer prepare".
func TestNoBackquoteInFlagUsage(t *testing.T) {
	var walk func(c *cobra.Command)
	n := 0
	walk = func(c *cobra.Command) {
		for _, fs := range []*pflag.FlagSet{c.Flags(), c.PersistentFlags()} {
			fs.VisitAll(func(f *pflag.Flag) {
				n++
				if strings.Contains(f.Usage, "`") {
					t.Errorf("%s --%s: usage has a backquote: %q", c.CommandPath(), f.Name, f.Usage)
				}
			})
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
	if n < 50 {
		t.Fatalf("visited only %d flags", n)
	}
}

// trainCmd is a fresh `trainer train` (or join) command for in-process runs.
func trainCmd(join bool) *cobra.Command {
	f := &runFlags{}
	c := &cobra.Command{Use: "train", Args: cobra.NoArgs, SilenceUsage: true, SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error { return runNode(cmd, f, join) }}
	f.register(c.Flags(), join)
	return c
}

// Bad flags and configs are reported before any port is bound or the run
// directory is made. The test holds the node's ports itself: a node that
// tried to bind first would fail with "address already in use" instead.
// Before, a bad codec or keep count was reported after the ports were bound
// and gossip joined, leaving an empty run directory.
func TestBadFlagsBindNothing(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, "manifest.json"), []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	badCfg := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(badCfg, []byte("lr: 0.1\nlearning_rate: 3\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var held []string
	for range 3 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		held = append(held, l.Addr().String())
	}
	for _, tc := range []struct {
		name string
		join bool
		args []string
		want string
	}{
		{"codec", false, []string{"--codec", "gzip"}, "--codec"},
		{"keep", false, []string{"--keep", "1"}, "--keep 1"},
		{"progress", false, []string{"--progress", "fancy"}, "--progress"},
		{"max bad steps", false, []string{"--max-bad-steps", "-2"}, "--max-bad-steps"},
		{"ring size", false, []string{"--min-nodes", "3", "--max-nodes", "2"}, "--max-nodes"},
		{"heads", false, []string{"--heads", "3"}, "num_heads"},
		{"unknown config field", false, []string{"--config", badCfg}, "learning_rate"},
		{"missing config", false, []string{"--config", filepath.Join(dir, "none.yaml")}, "--config"},
		{"missing data", false, []string{"--data", filepath.Join(dir, "nodata")}, "--data"},
		{"resume path", false, []string{"--resume", filepath.Join(dir, "step-00000007")}, "--resume"},
		{"join codec", true, []string{"--seed", "127.0.0.1:1", "--codec", "gzip"}, "--codec"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			runDir := filepath.Join(t.TempDir(), "run")
			args := []string{"--run-dir", runDir, "--device", "cpu", "--bind", held[0], "--grpc", held[1], "--metrics-addr", held[2]}
			if !tc.join && !strings.Contains(strings.Join(tc.args, " "), "--data") {
				args = append(args, "--data", data)
			}
			c := trainCmd(tc.join)
			c.SetArgs(append(args, tc.args...))
			err := c.Execute()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want one naming %s", err, tc.want)
			}
			if _, serr := os.Stat(runDir); !os.IsNotExist(serr) {
				t.Errorf("run directory exists after %v", err)
			}
		})
	}
}

// A --config file that names a few fields keeps the defaults for the rest,
// and explicit flags override both. Before, every field the file did not
// name was 0 (lr, betas, epsilon, warmup, seed, ...).
func TestConfigFileOnDefaults(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "run.yaml")
	if err := os.WriteFile(file, []byte("model:\n  num_layers: 2\nmax_training_steps: 500\nbatch_size: 32\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	f := &runFlags{}
	c := &cobra.Command{Use: "train"}
	f.register(c.Flags(), false)
	if err := c.Flags().Parse([]string{"--config", file, "--lr", "0.25"}); err != nil {
		t.Fatal(err)
	}
	got, err := f.trainConfig(c)
	if err != nil {
		t.Fatal(err)
	}
	want := train.Defaults()
	want.Model.Layers, want.Steps, want.Batch, want.LR = 2, 500, 32, 0.25
	want.Resolve()
	if got != want {
		t.Fatalf("config\n%+v\nwant\n%+v", got, want)
	}
}

// The flag defaults are train.Defaults: no flags and no file give exactly
// the defaults (resolved), so flags, files and the ConfigMap share one set.
func TestFlagDefaultsAreTrainDefaults(t *testing.T) {
	f := &runFlags{}
	c := &cobra.Command{Use: "train"}
	f.register(c.Flags(), false)
	if err := c.Flags().Parse(nil); err != nil {
		t.Fatal(err)
	}
	got, err := f.trainConfig(c)
	if err != nil {
		t.Fatal(err)
	}
	want := train.Defaults()
	want.Resolve()
	if got != want {
		t.Fatalf("flag defaults give\n%+v\nwant train.Defaults\n%+v", got, want)
	}
}
