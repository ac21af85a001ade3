package node

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/difftrain/difftrain/cluster"
	"github.com/difftrain/difftrain/dataset"
)

// TestServedNoPaths: what a node serves without authentication (/metrics,
// /healthz, /readyz) and what its status reports carry no file paths: no
// run, checkpoint or data directory.
func TestServedNoPaths(t *testing.T) {
	dir := t.TempDir()
	runDir := filepath.Join(dir, "private-run-dir")
	dataDir := filepath.Join(dir, "private-data-dir")
	if err := os.MkdirAll(runDir, 0o755); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	cl, err := cluster.New(cluster.Config{Name: "obs", BindAddr: "127.0.0.1", GRPCAddr: "127.0.0.1:1", Data: dataDir,
		Timing: cluster.FastTiming()})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		cl.Close(ctx)
	}()
	o := &Options{RunDir: runDir, CheckpointDir: filepath.Join(runDir, "checkpoints"), MetricsAddr: addr,
		Data: dataset.Options{Dir: dataDir}, Progress: "none"}
	ob, err := newObserver(o, cl)
	if err != nil {
		t.Fatal(err)
	}
	defer ob.close()
	ob.generation(cluster.Generation{ID: 1})
	ob.step(Record{Step: 1, Loss: 2, Elbo: 3, Members: 1, Generation: 1}, cl, 10)

	var served strings.Builder
	for _, path := range []string{"/metrics", "/healthz", "/readyz"} {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s: %s", path, resp.Status)
		}
		served.Write(b)
	}
	st := cl.Status()
	for _, m := range st.Members {
		served.WriteString(m.Name + " " + m.Gossip + " " + m.GRPCAddr + " " + m.Backend + " " + m.Data + " " + m.Version + "\n")
	}
	if !strings.Contains(served.String(), "difftrain_step 1") {
		t.Fatalf("metrics not served:\n%s", served.String())
	}
	for _, p := range []string{"private-run-dir", "private-data-dir", dir} {
		if strings.Contains(served.String(), p) {
			t.Errorf("served output contains the path %q", p)
		}
	}
}
