package main

import (
	"bytes"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
)

// TestBenchOverlap runs `trainer bench overlap` end to end at a tiny size:
// two worker processes of the built binary, a gRPC ring between them, and
// the JSON report with the three modes. It checks the report's shape, never
// the ratios of wall-clock times.
func TestBenchOverlap(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the trainer and runs two processes")
	}
	bin := trainerBin(t)
	const steps = 2
	cmd := exec.Command(bin, "--log-level", "warn", "bench", "overlap", "--world", "2", "--threads", "1",
		"--layers", "1", "--dim", "32", "--heads", "2", "--seq", "16", "--batch", "4",
		"--steps", "2", "--warmup", "1", "--bucket-mib", "0.02", "--codec", "bf16", "--json")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("bench overlap: %v\n%s", err, stderr.String())
	}
	var r benchOverlapResult
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("output is not one JSON object: %v\n%s", err, out)
	}
	if r.World != 2 || r.Codec != "bf16" || r.Steps != steps {
		t.Errorf("world %d, codec %q, steps %d; want 2, bf16, %d", r.World, r.Codec, r.Steps, steps)
	}
	if r.GradMiB <= 0 || r.Buckets < 2 {
		t.Errorf("gradient %.3f MiB in %d buckets; want a gradient split into several 0.02 MiB buckets", r.GradMiB, r.Buckets)
	}
	if r.GOMAXPROCS != 1 || r.Threads != 1 || !strings.Contains(r.Backend, "cpu") {
		t.Errorf("members ran %s with %d threads and GOMAXPROCS %d; want the cpu backend, 1 and 1", r.Backend, r.Threads, r.GOMAXPROCS)
	}
	want := []string{"compute", "serial", "overlap"}
	if len(r.Modes) != len(want) {
		t.Fatalf("%d modes, want %v", len(r.Modes), want)
	}
	for i, m := range r.Modes {
		if m.Mode != want[i] {
			t.Errorf("mode %d is %q, want %q", i, m.Mode, want[i])
		}
		if !(m.MedianMS > 0) || !(m.ComputeMS > 0) || len(m.StepsMS) != steps {
			t.Errorf("%s: median %v ms, compute %v ms, %d steps; want positive times for %d steps", m.Mode, m.MedianMS, m.ComputeMS, len(m.StepsMS), steps)
		}
		for _, s := range m.StepsMS {
			if !(s > 0) {
				t.Errorf("%s: step of %v ms", m.Mode, s)
			}
		}
		// Only the modes that communicate send gradient bytes.
		if comm := m.Mode != "compute"; comm != (m.WireMiB > 0) {
			t.Errorf("%s: %.3f MiB on the wire per step", m.Mode, m.WireMiB)
		}
	}
	if r.Hidden != nil && (*r.Hidden < 0 || *r.Hidden > 1) {
		t.Errorf("hidden share %v outside [0, 1]", *r.Hidden)
	}

	// PowerSGD gets the model's tensor shapes: its matrices go over the wire
	// as rank-2 factors, under half of the fp32 bytes. (The embedding and
	// the head go uncompressed: a small vocabulary keeps them a small part.)
	cmd = exec.Command(bin, "--log-level", "warn", "bench", "overlap", "--world", "2", "--threads", "1",
		"--layers", "1", "--dim", "32", "--heads", "2", "--seq", "16", "--batch", "4", "--vocab", "16",
		"--steps", "1", "--warmup", "1", "--codec", "powersgd", "--powersgd-rank", "2", "--json")
	stderr.Reset()
	cmd.Stderr = &stderr
	if out, err = cmd.Output(); err != nil {
		t.Fatalf("bench overlap --codec powersgd: %v\n%s", err, stderr.String())
	}
	r = benchOverlapResult{}
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("output is not one JSON object: %v\n%s", err, out)
	}
	if r.Codec != "powersgd" || r.PSGDRank != 2 || len(r.Modes) != 3 {
		t.Fatalf("codec %q rank %d, %d modes; want powersgd rank 2 and three modes", r.Codec, r.PSGDRank, len(r.Modes))
	}
	if w := r.Modes[2].WireMiB; !(w > 0 && w < 0.5*r.GradMiB) {
		t.Errorf("powersgd sent %.4f MiB per step for a %.4f MiB gradient", w, r.GradMiB)
	}
}

// TestBenchOverlapFlags checks that bad flags fail before any process
// starts, with a message naming the flag.
func TestBenchOverlapFlags(t *testing.T) {
	// Every case starts from valid flags (cobra keeps flag values between
	// runs of the same root) and breaks one.
	base := []string{"bench", "overlap", "--world", "2", "--codec", "none", "--steps", "1", "--warmup", "0",
		"--batch", "4", "--micro-batch", "0", "--bucket-mib", "1", "--threads", "0", "--vocab", "260"}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--world", "1"}, "--world 1"},
		{[]string{"--world", "0"}, "--world 0"},
		{[]string{"--codec", "gzip"}, `--codec "gzip"`},
		{[]string{"--steps", "0"}, "--steps 0"},
		{[]string{"--warmup", "-1"}, "--warmup -1"},
		{[]string{"--bucket-mib", "-1"}, "--bucket-mib -1"},
		{[]string{"--threads", "-2"}, "--threads -2"},
		{[]string{"--batch", "5"}, "not a multiple of the world size"},
		{[]string{"--micro-batch", "3"}, "micro-batch 3"},
		{[]string{"--vocab", "4"}, "vocabulary 4"},
		{[]string{"--powersgd-rank", "0"}, "--powersgd-rank 0"},
	} {
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetErr(&out)
		root.SetArgs(append(append([]string{}, base...), c.args...))
		err := root.Execute()
		root.SetArgs(nil)
		root.SetOut(nil)
		root.SetErr(nil)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: error %v, want one containing %q", c.args, err, c.want)
		}
	}
}
