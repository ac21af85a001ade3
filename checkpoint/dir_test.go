package checkpoint

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestClean(t *testing.T) {
	sleeper := exec.Command("sleep", "60")
	if err := sleeper.Start(); err != nil {
		t.Skipf("cannot start a live process: %v", err)
	}
	defer func() { sleeper.Process.Kill(); sleeper.Wait() }()
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Skipf("cannot run true: %v", err)
	}
	host := strings.Split(owner(), "-")[0]

	dir := t.TempDir()
	save(t, dir, testState(1, 1), Options{})
	names := map[string]bool{ // name -> kept
		fmt.Sprintf("%sstep-00000002-%s-%d-abcd", tmpPrefix, host, dead.Process.Pid):     false,
		fmt.Sprintf("%sstep-00000002-%s-%d-abcd", tmpPrefix, host, sleeper.Process.Pid):  true,
		fmt.Sprintf("%sstep-00000002-%s-%d-abcd", tmpPrefix, host, os.Getpid()):          false,
		fmt.Sprintf("%sstep-00000002-otherhost-%d-abcd", tmpPrefix, sleeper.Process.Pid): false,
		fmt.Sprintf("%sstep-00000001-%s-%d-abcd", trashPrefix, host, dead.Process.Pid):   false,
		"step-00000003": true, // not a leftover: no manifest, so not complete, but not ours to delete
		"notes":         true,
	}
	for n := range names {
		if err := os.MkdirAll(filepath.Join(dir, n, "sub"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	removed, err := Clean(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := entries(t, dir)
	for n, kept := range names {
		if slices.Contains(got, n) != kept {
			t.Errorf("%s: kept = %v, want %v", n, !kept, kept)
		}
		if slices.Contains(removed, n) == kept {
			t.Errorf("%s: reported removed = %v", n, !kept)
		}
	}
	if !slices.Contains(got, StepDir(1)) {
		t.Error("Clean removed a complete checkpoint")
	}
}

func TestParseStepDir(t *testing.T) {
	for name, want := range map[string]int64{"step-00000000": 0, "step-00000042": 42, "step-123456789": 123456789} {
		if got, ok := parseStepDir(name); !ok || got != want {
			t.Errorf("parseStepDir(%q) = %d, %v", name, got, ok)
		}
	}
	for _, name := range []string{"step-42", "step-0000004x", "step--0000001", "step-+0000001", ".tmp-step-00000001", "step-000000001"} {
		if _, ok := parseStepDir(name); ok {
			t.Errorf("parseStepDir(%q) accepted", name)
		}
	}
}
