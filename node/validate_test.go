package node

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/difftrain/difftrain/train"
)

// Bad options are reported before Run creates the run directory or binds a
// port. Before, a bad codec or keep count surfaced only after the gRPC and
// gossip ports were bound and the cluster joined, leaving an empty run
// directory behind.
func TestBadOptionsFailBeforeAnythingIsCreated(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(o *Options)
		want string
	}{
		{"codec", func(o *Options) { o.Codec = "gzip" }, "--codec"},
		{"keep", func(o *Options) { o.Keep = 1 }, "--keep 1"},
		{"progress", func(o *Options) { o.Progress = "fancy" }, "--progress"},
		{"max nodes", func(o *Options) { o.Cluster.MinNodes, o.Cluster.MaxNodes = 3, 2 }, "--max-nodes 2"},
		{"checksum every", func(o *Options) { o.ChecksumEvery = -1 }, "--checksum-every"},
		{"max bad steps", func(o *Options) { o.MaxBadSteps = -1 }, "--max-bad-steps"},
		{"resume path", func(o *Options) { o.Resume = "/nonexistent/step-00000010" }, "--resume"},
		{"config", func(o *Options) { o.Train.Model.Heads = 3 }, "training config"},
		{"config lr", func(o *Options) { o.Train.Beta1 = 2 }, "training config"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			runDir := filepath.Join(t.TempDir(), "run")
			var grpcAddr, gossip string
			err := runAlone(t, runDir, 10, func(o *Options) {
				tc.edit(o)
				grpcAddr, gossip = o.GRPCListen, net.JoinHostPort(o.Cluster.BindAddr, strconv.Itoa(o.Cluster.BindPort))
			})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want one naming %s", err, tc.want)
			}
			if _, err := os.Stat(runDir); !os.IsNotExist(err) {
				t.Errorf("the run directory exists after a bad option (%v)", err)
			}
			for _, a := range []string{grpcAddr, gossip} {
				l, err := net.Listen("tcp", a)
				if err != nil {
					t.Errorf("%s is taken after a bad option: %v", a, err)
					continue
				}
				l.Close()
			}
		})
	}
}

// Every node writes the configuration it trains with to RUN_DIR/config.json,
// with what the dataset filled in, readable by --config.
func TestEffectiveConfigIsWritten(t *testing.T) {
	dir := t.TempDir()
	var want train.Config
	if err := runAlone(t, dir, 6, func(o *Options) {
		o.Train.Model.Vocab, o.Train.Model.SeqLen = 0, 0
		want = o.Train
	}); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, EffectiveConfigFile))
	if err != nil {
		t.Fatal(err)
	}
	got, err := train.ParseConfig(raw, train.Config{})
	if err != nil {
		t.Fatal(err)
	}
	want.Model.Vocab, want.Model.SeqLen = got.Model.Vocab, got.Model.SeqLen
	if got != want || got.Model.Vocab == 0 || got.Model.SeqLen != 32 {
		t.Fatalf("config.json holds\n%+v\nwant\n%+v with the dataset's vocabulary and sequence length", got, want)
	}
}
