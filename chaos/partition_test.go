package chaos

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/difftrain/difftrain/allreduce/netns"
	"github.com/difftrain/difftrain/node"
)

// TestPartition cuts the coordinator off from the other two members (each
// member in its own network namespace, joined by a bridge): the pair forms a
// ring and trains on, the isolated member trains nothing on its own, and
// after the heal it rejoins as a joiner. The records then pass Check.
func TestPartition(t *testing.T) {
	if testing.Short() {
		t.Skip("runs trainer processes in network namespaces")
	}
	if err := netns.Check(); err != nil {
		t.Skip(err)
	}
	lab, err := netns.Setup(fmt.Sprintf("dtp%d", os.Getpid()%100000), 3, "10gbit", "")
	if err != nil {
		t.Skipf("network namespaces unavailable: %v", err)
	}
	defer lab.Close()
	bin, data := build(t)
	dir := t.TempDir()
	key := "partition-test-key-0123456789abcdef"
	procs := make([]*exec.Cmd, 3)
	done := make([]chan error, 3)
	start := func(i int, args ...string) {
		d := filepath.Join(dir, fmt.Sprintf("n%d", i))
		os.MkdirAll(d, 0o755)
		a := lab.Addrs[i]
		args = append(args, "--name", fmt.Sprintf("n%d", i), "--run-dir", d, "--bind", a+":7946", "--grpc", a+":7947",
			"--metrics-addr", "", "--threads", "1", "--progress", "log", "--log-every", "50",
			"--sample-log", filepath.Join(d, "samples.log"), "--checkpoint-local", "--allreduce-timeout", "3s")
		f, _ := os.Create(filepath.Join(d, "node.log"))
		cmd := lab.Command(i, bin, args...)
		cmd.Env = append(os.Environ(), "DIFFTRAIN_CLUSTER_KEY="+key)
		cmd.Stdout, cmd.Stderr = f, f
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		procs[i], done[i] = cmd, make(chan error, 1)
		go func() { done[i] <- cmd.Wait(); f.Close() }()
	}
	defer func() {
		for _, p := range procs {
			if p != nil {
				p.Process.Kill()
			}
		}
	}()
	start(0, append(runFlags(data), "--min-nodes", "2", "--checksum-every", "10", "--checkpoint-every", "50")...)
	time.Sleep(time.Second)
	start(1, "join", "--seed", lab.Addrs[0]+":7946")
	start(2, "join", "--seed", lab.Addrs[0]+":7946")
	dirs := []string{filepath.Join(dir, "n0"), filepath.Join(dir, "n1"), filepath.Join(dir, "n2")}
	waitAll := func(step int64, members int, since time.Time, who ...int) {
		t.Helper()
		for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			ok := true
			for _, i := range who {
				recs, _ := node.ReadRecordsFile(dirs[i])
				if len(recs) == 0 || recs[len(recs)-1].Step < step || recs[len(recs)-1].Members != members || !recs[len(recs)-1].Time.After(since) {
					ok = false
				}
			}
			if ok {
				return
			}
		}
		logTails(t, dirs)
		t.Fatalf("members %v did not reach step %d with %d members", who, step, members)
	}
	waitAll(20, 3, time.Time{}, 0, 1, 2)

	cut := time.Now()
	if err := lab.SetLink(0, false); err != nil {
		t.Fatalf("partition: %v", err)
	}
	_, at, _ := lastRecord(dirs[1])
	waitAll(at+30, 2, cut, 1, 2)
	isolated, _ := node.ReadRecordsFile(dirs[0])
	heal := time.Now()
	if err := lab.SetLink(0, true); err != nil {
		t.Fatalf("heal: %v", err)
	}
	for _, r := range isolated {
		if r.Time.After(cut.Add(time.Second)) {
			t.Errorf("the isolated member trained step %d (members %d) during the partition", r.Step, r.Members)
		}
	}
	_, at, _ = lastRecord(dirs[1])
	waitAll(at+20, 3, heal, 0, 1, 2)
	t.Logf("partition of the coordinator: the pair trained on; healed, the three trained together again (%v after the heal)",
		time.Since(heal).Round(time.Millisecond))
	for i, p := range procs {
		p.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-done[i]:
			if err != nil {
				t.Errorf("n%d: %v", i, err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("n%d did not stop", i)
		}
		procs[i] = nil
	}
	res := Check(dir, 12, nil, nil, 0, 0)
	t.Logf("checked %d steps, %d records", res.Steps, res.Records)
	for _, p := range res.Problems {
		t.Error(p)
	}
	if t.Failed() {
		logTails(t, dirs)
	}
}

func logTails(t *testing.T, dirs []string) {
	for _, d := range dirs {
		b, _ := os.ReadFile(filepath.Join(d, "node.log"))
		s := string(b)
		if len(s) > 2500 {
			s = s[len(s)-2500:]
		}
		t.Logf("%s:\n%s", d, s)
	}
}
