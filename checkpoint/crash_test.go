package checkpoint

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const crashEnv = "CHECKPOINT_TEST_CRASH_DIR"

// TestCrashHelper is the child process of TestCrashDuringSave: it starts
// saving step 2 and stops between files until it is killed.
func TestCrashHelper(t *testing.T) {
	dir := os.Getenv(crashEnv)
	if dir == "" {
		t.Skip("runs only as the child of TestCrashDuringSave")
	}
	w, err := NewWriter(dir, Options{afterFile: func(name string) {
		if name != ModelFile {
			return
		}
		if err := os.WriteFile(dir+".ready", nil, 0o644); err != nil {
			panic(err)
		}
		time.Sleep(time.Hour) // killed here, with state.json and the weights written
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Save(testState(9, 2)); err != nil {
		t.Fatal(err)
	}
	w.Wait()
	t.Fatal("the save was not interrupted")
}

func TestCrashDuringSave(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ckpt")
	first := testState(9, 1)
	save(t, dir, first, Options{})

	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashHelper$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashEnv+"="+dir)
	out := &logBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(dir + ".ready"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("the child never reached the hook; its output:\n%s", out)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := cmd.Process.Kill(); err != nil { // SIGKILL
		t.Fatal(err)
	}
	var exit *exec.ExitError
	if err := cmd.Wait(); !errors.As(err, &exit) {
		t.Fatalf("child: %v", err)
	}

	partial := leftovers(t, dir)
	if len(partial) != 1 || !strings.HasPrefix(partial[0], tmpPrefix+StepDir(2)) {
		t.Fatalf("after the crash the directory holds %v, want one partial save of step 2", entries(t, dir))
	}
	if _, err := os.Stat(filepath.Join(dir, partial[0], ModelFile)); err != nil {
		t.Fatalf("the partial save has no weights, so the crash came too early: %v", err)
	}
	cps, err := List(dir)
	if err != nil || len(cps) != 1 || cps[0].Step != 1 {
		t.Fatalf("List = %v, %v; want only step 1", cps, err)
	}

	log, logs := newLog()
	got, err := Resolve(dir, ResumeAuto, false, log)
	if err != nil {
		t.Fatal(err)
	}
	equalStates(t, got, first)
	if l := leftovers(t, dir); len(l) > 0 {
		t.Errorf("the partial save is still there after the restart: %v", l)
	}
	if !strings.Contains(logs.String(), partial[0]) {
		t.Errorf("the cleanup was not logged:\n%s", logs)
	}
}
