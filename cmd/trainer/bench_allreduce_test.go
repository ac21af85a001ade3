package main

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"
)

// TestBenchAllreduce runs `trainer bench allreduce` end to end at a tiny
// size: two worker processes of the built binary per codec, the raw TCP
// ceilings, and a table whose every row passed its sum check. It checks the
// table's shape, never the ratios of wall-clock times.
func TestBenchAllreduce(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the trainer and runs worker processes")
	}
	bin := trainerBin(t)
	cmd := exec.Command(bin, "bench", "allreduce", "--world", "2", "--sizes", "1", "--codecs", "none,int8",
		"--reps", "2", "--tcp-mib", "8", "--checksum")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("bench allreduce: %v\n%s%s", err, out, stderr.String())
	}
	text := string(out)
	for _, want := range []string{"raw TCP, one connection", "raw TCP ring of 2 processes", "checksum true"} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q:\n%s", want, text)
		}
	}
	rows := map[string]bool{}
	for l := range strings.SplitSeq(text, "\n") {
		fs := strings.Fields(l)
		if len(fs) != 15 || fs[0] != "2" {
			continue
		}
		if fs[len(fs)-1] != "ok" {
			t.Errorf("row failed its sum check: %s", l)
		}
		rows[fs[2]] = true
	}
	if !rows["none"] || !rows["int8"] || !rows["grpc-pipe"] {
		t.Errorf("missing codec rows in:\n%s", text)
	}
	if !strings.Contains(text, "codec none reaches") {
		t.Errorf("no comparison of none with the gRPC pipe in:\n%s", text)
	}

	// A model's gradient: powersgd gets its tensor shapes, and the run
	// reports how many fewer bytes it sent than none.
	cmd = exec.Command(bin, "bench", "allreduce", "--world", "2", "--layers", "1", "--dim", "64", "--heads", "2",
		"--codecs", "none,powersgd", "--reps", "2", "--tcp-mib", "8")
	stderr.Reset()
	cmd.Stderr = &stderr
	if out, err = cmd.Output(); err != nil {
		t.Fatalf("bench allreduce --layers: %v\n%s%s", err, out, stderr.String())
	}
	text = string(out)
	if !strings.Contains(text, "fewer bytes on the wire than none") {
		t.Errorf("no bytes comparison in:\n%s", text)
	}
	n := 0
	for l := range strings.SplitSeq(text, "\n") {
		if fs := strings.Fields(l); len(fs) == 15 && fs[0] == "2" {
			n++
			if !strings.HasPrefix(fs[1], "L1-d64=") || fs[len(fs)-1] != "ok" {
				t.Errorf("row: %s", l)
			}
		}
	}
	if n != 3 {
		t.Errorf("%d rows, want none, powersgd and grpc-pipe:\n%s", n, text)
	}

	bad := exec.Command(bin, "bench", "allreduce", "--codecs", "zip")
	if out, err := bad.CombinedOutput(); err == nil || !strings.Contains(string(out), `unknown codec "zip"`) {
		t.Errorf("unknown codec: err %v, output %s", err, out)
	}
}
